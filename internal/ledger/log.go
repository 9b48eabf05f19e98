package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
)

// Sentinel errors.
var (
	// ErrNotWriter: this Log is not the single writer (AcquireWriter has
	// not succeeded, another process holds the role, or the writer's
	// database session was lost). Nothing was written.
	ErrNotWriter = errors.New("ledger: not the writer")
	// ErrTampered: the stored ledger is not what was appended: Verify
	// found a difference, or a proof needed a node that is missing.
	ErrTampered = errors.New("ledger: tampered")
	// ErrNoCheckpoint: no checkpoint has been published yet.
	ErrNoCheckpoint = errors.New("ledger: no checkpoint yet")
	// ErrBadBatch: a batch's signature does not cover its entries.
	ErrBadBatch = errors.New("ledger: batch signature does not cover the batch")
)

// Config configures a Log. The zero value is not valid: Origin is required,
// and Dir for SQLite.
type Config struct {
	// Store selects the database: "" or "sqlite" for SQLite in
	// Dir/ledger.db; a "postgres://" or "postgresql://" URL for
	// PostgreSQL (tables in the first schema of the search_path, which
	// the URL may set: ?search_path=NAME).
	Store string
	// Dir is the data directory of the SQLite store, created 0700 if
	// missing (unless ReadOnly). Unused for PostgreSQL.
	Dir string
	// Origin is the log's name: the first line of its checkpoints and the
	// name of its key, e.g. "tally/mesh.local/ledger". A store whose key
	// has another name is refused. Empty with ReadOnly: taken from the
	// stored key.
	Origin string
	// ReadOnly opens an existing store for reading only (tally audit):
	// nothing is created, and AcquireWriter fails.
	ReadOnly bool
	// Logger receives the log's few messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock for checkpoint times; nil means time.Now.
	Now func() time.Time
}

// Batch is what one Append call stores for one upload batch.
type Batch struct {
	Entries []Entry
	// Signature, if not nil, is the uploading sidecar's signature over
	// exactly these entries' leaves (SignBatch). Append checks that it
	// covers them (count and BatchRoot), not who made it: verify the
	// signer with VerifyBatchSignature first.
	Signature *BatchSignature
	// Leaves, if set, are Entries already encoded (EncodeAll), so a caller
	// that encoded them to check the signature need not encode twice.
	Leaves [][]byte
	// LeafHashes, if set with Leaves, are their LeafHash values (from
	// LeafHashes), so that they are not hashed twice either.
	LeafHashes [][32]byte
}

// StoredEntry is a leaf as stored: its index, its bytes and its RFC 6962
// leaf hash.
type StoredEntry struct {
	Index uint64
	Data  []byte
	// LeafHash is the stored leaf hash. A Source without one leaves it
	// nil, and Verify only recomputes it.
	LeafHash []byte
}

// StoredCheckpoint is a published checkpoint: its place in the sequence of
// checkpoints (1, 2, ...), the tree size it signs, and the signed note.
type StoredCheckpoint struct {
	Seq  uint64
	Size uint64
	Note []byte
}

// StoredBatch is a batch signature and the log range [Start, End) of the
// leaves it covers.
type StoredBatch struct {
	Start, End uint64
	Signature  BatchSignature
}

// Node is the hash of the perfect subtree at Level covering the leaves
// [Index<<Level, (Index+1)<<Level).
type Node struct {
	Level uint
	Index uint64
	Hash  []byte
}

// TreeState is the stored state of the tree: its size, root, and compact
// range [0, Size) (the roots of its perfect subtrees, left to right).
type TreeState struct {
	Size  uint64
	Root  [32]byte
	Range [][32]byte
}

// Log is an append-only Merkle log of entries (RFC 6962) in SQLite or
// PostgreSQL, with signed checkpoints and proofs. One process at a time is
// the writer (AcquireWriter); any number read. A Log is safe for concurrent
// use; appends are serialized.
type Log struct {
	b        backend
	r        reader
	log      *slog.Logger
	now      func() time.Time
	origin   string
	signer   note.Signer // nil when read-only
	verifier note.Verifier
	vkey     string

	mu     sync.Mutex // guards following
	writer bool
	rng    *compact.Range // the tree, when writer && !stale
	stale  bool           // rng must be reloaded from the store
	closed bool
}

// Open opens (creating unless cfg.ReadOnly) the ledger store of cfg. The
// checkpoint key is created on first open: for SQLite in Dir/ledger.key
// (0600), for PostgreSQL in the database (table meta), so that every control
// plane sharing it signs as the same log. The Log is not the writer until
// AcquireWriter succeeds.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Origin == "" && !cfg.ReadOnly {
		return nil, errors.New("opening ledger: no origin")
	}
	if cfg.Origin != "" && strings.ContainsAny(cfg.Origin, "+ \n") {
		return nil, fmt.Errorf("opening ledger: origin %q has '+', a space or a newline", cfg.Origin)
	}
	var (
		b   backend
		err error
	)
	switch {
	case cfg.Store == "" || cfg.Store == "sqlite":
		b, err = openSQLite(ctx, cfg.Dir, cfg.ReadOnly)
	case isPostgresURL(cfg.Store):
		b, err = openPostgres(ctx, cfg.Store, cfg.ReadOnly)
	default:
		return nil, fmt.Errorf("opening ledger: unknown store %q (want sqlite or a postgres:// URL)", cfg.Store)
	}
	if err != nil {
		return nil, err
	}
	l := &Log{b: b, r: reader{q: b.readDB()}, log: cfg.Logger, now: cfg.Now, origin: cfg.Origin}
	if l.log == nil {
		l.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l.log = l.log.With("component", "ledger")
	if l.now == nil {
		l.now = time.Now
	}
	if err := l.loadKey(ctx, !cfg.ReadOnly); err != nil {
		b.close()
		return nil, err
	}
	return l, nil
}

func (l *Log) loadKey(ctx context.Context, create bool) error {
	skey, err := l.b.signerKey(ctx, l.origin, create)
	if errors.Is(err, fs.ErrNotExist) && !create {
		return nil // read-only without a key: Verify needs VerifyOptions.VerifierKey
	}
	if err != nil {
		return err
	}
	name := keyName(skey)
	if l.origin == "" {
		l.origin = name
	}
	if name != l.origin {
		return fmt.Errorf("opening ledger: its key is for origin %q, not %q", name, l.origin)
	}
	if l.vkey, err = verifierKeyOf(skey); err != nil {
		return fmt.Errorf("opening ledger: %w", err)
	}
	if l.verifier, err = note.NewVerifier(l.vkey); err != nil {
		return fmt.Errorf("opening ledger: %w", err)
	}
	if create {
		if l.signer, err = note.NewSigner(skey); err != nil {
			return fmt.Errorf("opening ledger: %w", err)
		}
	}
	return nil
}

// Close closes the store. A writer gives up its role: its lock is
// released (PostgreSQL: its session ends; SQLite: the file lock).
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed, l.writer = true, false
	return l.b.close()
}

// Origin is the log's origin, the name of its checkpoint key.
func (l *Log) Origin() string { return l.origin }

// VerifierKey is the checkpoint verifier key in note verifier format
// ("<origin>+<hash>+<base64 key>"), as GET /api/v1/ledger/key serves it.
// It is empty for a read-only Log whose store has no key.
func (l *Log) VerifierKey() string { return l.vkey }

// AcquireWriter makes this Log the store's single writer, or returns
// ErrNotWriter if another process is. PostgreSQL: a session-level advisory
// lock (pg_try_advisory_lock) held on the writer's own connection, released
// when that session ends, so a reader can take over from a dead writer by
// calling AcquireWriter again. SQLite: flock(2) on Dir/ledger.lock. It loads
// the tree from the store, so a new writer continues where the last stopped.
// Calling it again while the writer is a cheap check that the role is
// still held.
func (l *Log) AcquireWriter(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("acquiring writer: %w: closed", ErrNotWriter)
	}
	if l.signer == nil {
		return fmt.Errorf("acquiring writer: %w: opened read-only", ErrNotWriter)
	}
	ok, err := l.b.acquire(ctx)
	if err != nil {
		l.writer = false
		return err
	}
	if !ok {
		l.writer = false
		return fmt.Errorf("acquiring writer: %w: another process holds the writer lock", ErrNotWriter)
	}
	if !l.writer {
		l.writer, l.stale = true, true
		l.log.Info("writer acquired")
	}
	if l.stale {
		if err := l.reload(ctx); err != nil {
			return err
		}
	}
	return nil
}

// reload reads the tree state into l.rng. Called with l.mu held.
func (l *Log) reload(ctx context.Context) error {
	ts, err := l.r.treeState(ctx)
	if err != nil {
		return err
	}
	hashes := make([][]byte, len(ts.Range))
	for i := range ts.Range {
		hashes[i] = ts.Range[i][:]
	}
	rng, err := rangeFactory.NewRange(0, ts.Size, hashes)
	if err != nil {
		return fmt.Errorf("loading tree state: %w: %w", ErrTampered, err)
	}
	if root := rootOf(rng); root != ts.Root {
		return fmt.Errorf("loading tree state: %w: stored root differs from its compact range", ErrTampered)
	}
	l.rng, l.stale = rng, false
	return nil
}

// Append stores the batches' entries at the end of the log in one
// transaction, with their batch signatures and the new tree state (size,
// root, compact range, new node hashes), and returns the index of the first
// entry: batches[0].Entries[0] gets index first, the next entry first+1,
// and so on through every batch. It returns only after the transaction is
// durably committed; on error nothing was acknowledged (and, unless the
// commit's own outcome was lost with the connection, nothing stored).
// It fails with ErrNotWriter unless this Log is the writer, with an
// EntryError for an entry that cannot be encoded, and with ErrBadBatch if a
// signature does not cover its batch.
func (l *Log) Append(ctx context.Context, batches ...Batch) (first uint64, err error) {
	n := 0
	for _, b := range batches {
		n += len(b.Entries)
	}
	data := make([][]byte, 0, n)
	hashes := make([][32]byte, 0, n)
	spans := make([]span, len(batches))
	var buf []byte
	for bi, b := range batches {
		spans[bi] = span{n: len(b.Entries), sig: b.Signature}
		if len(b.Leaves) == len(b.Entries) && len(b.Leaves) > 0 {
			data = append(data, b.Leaves...)
			if len(b.LeafHashes) == len(b.Leaves) {
				hashes = append(hashes, b.LeafHashes...)
			} else {
				hashes = appendLeafHashes(hashes, b.Leaves)
			}
			continue
		}
		start := len(data)
		for i := range b.Entries {
			at := len(buf)
			if buf, err = b.Entries[i].AppendBinary(buf); err != nil {
				return 0, fmt.Errorf("appending: encoding entry %d of batch %d: %w", i, bi, err)
			}
			// Capped, so that later appends to buf never write into it.
			data = append(data, buf[at:len(buf):len(buf)])
		}
		hashes = appendLeafHashes(hashes, data[start:])
	}
	return l.appendLeaves(ctx, data, hashes, spans)
}

// LeafHashes returns the LeafHash of each leaf.
func LeafHashes(leaves [][]byte) [][32]byte { return appendLeafHashes(nil, leaves) }

func appendLeafHashes(dst [][32]byte, leaves [][]byte) [][32]byte {
	for _, l := range leaves {
		dst = append(dst, LeafHash(l))
	}
	return dst
}

// span is one batch of appendLeaves: its number of leaves and signature.
type span struct {
	n   int
	sig *BatchSignature
}

// appendLeaves appends leaves (already encoded) in one transaction; spans
// split them into batches, in order.
func (l *Log) appendLeaves(ctx context.Context, data [][]byte, leafHashes [][32]byte, spans []span) (uint64, error) {
	w := &writeSet{data: data, leafHash: leafHashes}
	at := 0
	for bi, s := range spans {
		if s.sig != nil {
			if err := checkCovers(s.sig, w.leafHash[at:at+s.n]); err != nil {
				return 0, fmt.Errorf("appending batch %d: %w", bi, err)
			}
		}
		at += s.n
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.writer || l.closed {
		return 0, fmt.Errorf("appending: %w", ErrNotWriter)
	}
	if l.stale {
		if err := l.reload(ctx); err != nil {
			return 0, fmt.Errorf("appending: %w", err)
		}
	}
	w.oldSize, w.start = l.rng.End(), l.rng.End()
	if len(data) == 0 {
		return w.start, nil
	}
	rng := cloneRange(l.rng)
	w.nodes = make([]Node, 0, len(data)+8)
	visit := func(id compact.NodeID, h []byte) {
		if id.Level > 0 {
			w.nodes = append(w.nodes, Node{Level: id.Level, Index: id.Index, Hash: h})
		}
	}
	for i := range w.leafHash {
		if err := rng.Append(w.leafHash[i][:], visit); err != nil {
			return 0, fmt.Errorf("appending: %w", err)
		}
	}
	pos := w.start
	for _, s := range spans {
		if s.sig != nil && s.n > 0 {
			w.batches = append(w.batches, StoredBatch{Start: pos, End: pos + uint64(s.n), Signature: *s.sig})
		}
		pos += uint64(s.n)
	}
	w.newSize, w.root, w.rng = rng.End(), rootOf(rng), rng.Hashes()
	if err := l.b.commit(ctx, w); err != nil {
		l.stale = true
		if err := l.lost(err); err != nil {
			return 0, fmt.Errorf("appending: %w", err)
		}
		return 0, fmt.Errorf("appending: %w", err)
	}
	l.rng = rng
	return w.start, nil
}

// lost handles a failed write: if it shows the writer role is gone (its
// session lost, or another writer appended), it drops the role and returns
// an error that wraps ErrNotWriter; else nil. Called with l.mu held.
func (l *Log) lost(err error) error {
	switch {
	case errors.Is(err, ErrNotWriter):
	case errors.Is(err, errFork):
		err = fmt.Errorf("%w: %w", ErrNotWriter, err)
	default:
		return nil
	}
	l.writer = false
	l.log.Warn("writer role lost", "err", err)
	return err
}

// cloneRange copies r; compact.Range.Append reuses its hash slice's array.
func cloneRange(r *compact.Range) *compact.Range {
	c, _ := rangeFactory.NewRange(r.Begin(), r.End(), append([][]byte(nil), r.Hashes()...))
	return c
}

// checkCovers checks that sig's statement covers exactly these leaves.
func checkCovers(sig *BatchSignature, leafHashes [][32]byte) error {
	if sig.Count != uint64(len(leafHashes)) {
		return fmt.Errorf("%w: it signs %d leaves, the batch has %d", ErrBadBatch, sig.Count, len(leafHashes))
	}
	if rootOfHashes(leafHashes) != sig.Root {
		return fmt.Errorf("%w: it signs another root", ErrBadBatch)
	}
	return nil
}

// LastBatch returns the signed batch with the highest batch sequence
// number stored under instance (its seq and signer chain), seq 0 if none.
// Batches of one instance are appended in order, so a batch at or below
// it is already in the log — if the same signer made it: instance ids are
// chosen by sidecars, so the caller must check the chain.
func (l *Log) LastBatch(ctx context.Context, instance string) (seq uint64, chain [][]byte, err error) {
	return l.r.lastBatch(ctx, instance)
}

// Head returns the stored tree size and root.
func (l *Log) Head(ctx context.Context) (size uint64, root [32]byte, err error) {
	ts, err := l.r.treeState(ctx)
	return ts.Size, ts.Root, err
}

// Checkpoint signs a checkpoint of the current tree and publishes it (stores
// it in the sequence of checkpoints), unless the latest published
// checkpoint already has this size: then it returns that one. It returns
// the signed note. Only the writer signs (ErrNotWriter otherwise); readers
// serve LatestCheckpoint.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.writer || l.closed || l.signer == nil {
		return nil, fmt.Errorf("checkpointing: %w", ErrNotWriter)
	}
	if l.stale {
		if err := l.reload(ctx); err != nil {
			return nil, fmt.Errorf("checkpointing: %w", err)
		}
	}
	size := l.rng.End()
	latest, err := l.r.latestCheckpoint(ctx)
	if err == nil && latest.Size == size {
		return latest.Note, nil
	}
	if err != nil && !errors.Is(err, ErrNoCheckpoint) {
		return nil, fmt.Errorf("checkpointing: %w", err)
	}
	signed, err := signCheckpoint(Checkpoint{Origin: l.origin, Size: size, Root: rootOf(l.rng)}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("checkpointing: signing: %w", err)
	}
	if err := l.b.addCheckpoint(ctx, size, signed, l.now()); err != nil {
		l.stale = true
		if err := l.lost(err); err != nil {
			return nil, fmt.Errorf("checkpointing: %w", err)
		}
		return nil, fmt.Errorf("checkpointing: %w", err)
	}
	return signed, nil
}

// LatestCheckpoint returns the latest published checkpoint (a signed note),
// or ErrNoCheckpoint.
func (l *Log) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	c, err := l.r.latestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return c.Note, nil
}

// Entries returns the stored entries with index in [start, end), in order.
// The caller bounds end-start.
func (l *Log) Entries(ctx context.Context, start, end uint64) ([]StoredEntry, error) {
	if end <= start {
		return nil, nil
	}
	es, err := l.r.entries(ctx, start, int(min(end-start, 1<<30)))
	if err != nil {
		return nil, err
	}
	for i, e := range es {
		if e.Index >= end {
			return es[:i], nil
		}
	}
	return es, nil
}

// Batches returns the stored batch signatures whose range starts at or
// after start, in increasing start order, at most limit (the caller bounds
// it), as stored: they are not verified (Verify does that).
func (l *Log) Batches(ctx context.Context, start uint64, limit int) ([]StoredBatch, error) {
	if limit <= 0 {
		return nil, nil
	}
	return l.r.batches(ctx, start, limit)
}

// InclusionProof returns the RFC 6962 inclusion proof of the leaf at index
// in the tree of the given size (index < size <= the log's size), built from
// stored node hashes (O(log size) lookups).
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	if err := l.checkSize(ctx, size); err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	return l.rehash(ctx, nodes)
}

// ConsistencyProof returns the RFC 6962 consistency proof between the trees
// of sizes old and new (old <= new <= the log's size).
func (l *Log) ConsistencyProof(ctx context.Context, old, new uint64) ([][]byte, error) {
	if err := l.checkSize(ctx, new); err != nil {
		return nil, fmt.Errorf("consistency proof: %w", err)
	}
	nodes, err := proof.Consistency(old, new)
	if err != nil {
		return nil, fmt.Errorf("consistency proof: %w", err)
	}
	return l.rehash(ctx, nodes)
}

// ErrBeyondSize: a proof was asked for a tree larger than the log.
var ErrBeyondSize = errors.New("ledger: size beyond the log")

func (l *Log) checkSize(ctx context.Context, size uint64) error {
	ts, err := l.r.treeState(ctx)
	if err != nil {
		return err
	}
	if size > ts.Size {
		return fmt.Errorf("%w: size %d, the log has %d", ErrBeyondSize, size, ts.Size)
	}
	return nil
}

func (l *Log) rehash(ctx context.Context, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := l.r.hash(ctx, id.Level, id.Index)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

// Snapshot is a consistent read-only view of the store (one read
// transaction), for Verify. It implements Source and TreeSource. Close it.
type Snapshot struct {
	tx   *sql.Tx
	r    reader
	vkey string
}

// Snapshot opens a read transaction: SQLite's WAL snapshot, PostgreSQL's
// REPEATABLE READ; appends that commit later are not seen.
func (l *Log) Snapshot(ctx context.Context) (*Snapshot, error) {
	tx, err := l.b.readDB().BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: l.snapshotIsolation()})
	if err != nil {
		return nil, fmt.Errorf("opening snapshot: %w", err)
	}
	return &Snapshot{tx: tx, r: reader{q: tx}, vkey: l.vkey}, nil
}

func (l *Log) snapshotIsolation() sql.IsolationLevel {
	if _, ok := l.b.(*pgStore); ok {
		return sql.LevelRepeatableRead
	}
	return sql.LevelDefault
}

// Close ends the snapshot's read transaction.
func (s *Snapshot) Close() error { return s.tx.Rollback() }

// VerifierKey is the verifier key of the store's checkpoint key.
func (s *Snapshot) VerifierKey() string { return s.vkey }

// ReadEntries implements Source.
func (s *Snapshot) ReadEntries(ctx context.Context, start uint64, limit int) ([]StoredEntry, error) {
	return s.r.entries(ctx, start, limit)
}

// ReadCheckpoints implements Source.
func (s *Snapshot) ReadCheckpoints(ctx context.Context, from uint64, limit int) ([]StoredCheckpoint, error) {
	return s.r.checkpoints(ctx, from, limit)
}

// ReadBatches implements Source.
func (s *Snapshot) ReadBatches(ctx context.Context, start uint64, limit int) ([]StoredBatch, error) {
	return s.r.batches(ctx, start, limit)
}

// TreeState implements TreeSource.
func (s *Snapshot) TreeState(ctx context.Context) (TreeState, error) { return s.r.treeState(ctx) }

// ReadNodes implements TreeSource.
func (s *Snapshot) ReadNodes(ctx context.Context, level uint, start uint64, limit int) ([]Node, error) {
	return s.r.nodes(ctx, level, start, limit)
}

// MaxNodeLevel implements TreeSource.
func (s *Snapshot) MaxNodeLevel(ctx context.Context) (int, error) { return s.r.maxLevel(ctx) }

// Verify checks the whole store in one snapshot; see the function Verify.
// Without opts.VerifierKey it uses the store's own key.
func (l *Log) Verify(ctx context.Context, opts VerifyOptions) (Report, error) {
	s, err := l.Snapshot(ctx)
	if err != nil {
		return Report{}, err
	}
	defer s.Close()
	return Verify(ctx, s, opts)
}

var (
	_ Source     = (*Snapshot)(nil)
	_ TreeSource = (*Snapshot)(nil)
)
