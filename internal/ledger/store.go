package ledger

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/mod/sumdb/note"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// Files of the SQLite store in Config.Dir.
const (
	DBFile   = "ledger.db"   // the SQLite database (and its -wal, -shm)
	KeyFile  = "ledger.key"  // the checkpoint signer key, note format, 0600
	LockFile = "ledger.lock" // flock(2)ed by the writer
)

// schemaVersion is the version of the tables below, kept in meta.
const schemaVersion = "1"

// The tables. Both dialects have the same tables and columns; integers are
// 64-bit, indices and sizes are stored as signed integers (a log never
// reaches 2^63 entries).
//
//	meta(key, value)                      schema_version, origin; signer_key (PostgreSQL)
//	tree(id = 1, size, root, range)       the tree state: size, root, and the compact
//	                                      range [0, size) as 32-byte hashes, left to right
//	entries(idx, data, leaf_hash)         leaves
//	nodes(level, idx, hash)               hashes of complete perfect subtrees, level >= 1
//	                                      (level 0 is entries.leaf_hash)
//	batches(start_idx, end_idx, instance_id, batch_seq, signed_at, root, chain, signature)
//	checkpoints(seq, size, note, created_at)  every published checkpoint, seq 1, 2, ...
func schema(blob, integer string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS tree (id INTEGER PRIMARY KEY CHECK (id = 1), size ` + integer + ` NOT NULL, root ` + blob + ` NOT NULL, range ` + blob + ` NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS entries (idx ` + integer + ` PRIMARY KEY, data ` + blob + ` NOT NULL, leaf_hash ` + blob + ` NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS nodes (level INTEGER NOT NULL, idx ` + integer + ` NOT NULL, hash ` + blob + ` NOT NULL, PRIMARY KEY (level, idx))`,
		`CREATE TABLE IF NOT EXISTS batches (start_idx ` + integer + ` PRIMARY KEY, end_idx ` + integer + ` NOT NULL, instance_id TEXT NOT NULL, batch_seq ` + integer + ` NOT NULL, signed_at ` + integer + ` NOT NULL, root ` + blob + ` NOT NULL, chain ` + blob + ` NOT NULL, signature ` + blob + ` NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS checkpoints (seq ` + integer + ` PRIMARY KEY, size ` + integer + ` NOT NULL, note ` + blob + ` NOT NULL, created_at ` + integer + ` NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS batches_by_instance ON batches (instance_id, batch_seq)`,
	}
}

// writeSet is one Append's transaction.
type writeSet struct {
	oldSize  uint64 // the tree size the writer believes the store has
	start    uint64 // == oldSize
	data     [][]byte
	leafHash [][32]byte
	nodes    []Node
	batches  []StoredBatch
	newSize  uint64
	root     [32]byte
	rng      [][]byte // compact range [0, newSize)
}

// backend is a store: SQLite or PostgreSQL. Reads go through db; writes
// through the writer connection, which only the holder of the writer lock
// uses, always under Log.mu.
type backend interface {
	readDB() *sql.DB
	// acquire tries to become the single writer; false if another is.
	acquire(ctx context.Context) (bool, error)
	// commit runs w in one transaction: it checks that the stored tree size
	// is w.oldSize (else errFork), inserts, updates the tree, commits.
	commit(ctx context.Context, w *writeSet) error
	// addCheckpoint stores a checkpoint if the stored tree size is size.
	addCheckpoint(ctx context.Context, size uint64, signed []byte, now time.Time) error
	// signerKey loads the checkpoint signer key, creating it (with
	// create) if there is none.
	signerKey(ctx context.Context, origin string, create bool) (string, error)
	close() error
}

// errFork means the stored tree is not the one the writer appended to:
// another writer appended, or an earlier commit's outcome is unknown.
var errFork = errors.New("stored tree size differs from the writer's")

// querier is *sql.DB or *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// reader reads a store; its SQL runs on both dialects ($n placeholders).
type reader struct{ q querier }

func (r reader) treeState(ctx context.Context) (TreeState, error) {
	var (
		size      int64
		root, rng []byte
	)
	err := r.q.QueryRowContext(ctx, `SELECT size, root, range FROM tree WHERE id = 1`).Scan(&size, &root, &rng)
	if errors.Is(err, sql.ErrNoRows) {
		return TreeState{Root: emptyRoot}, nil
	}
	if err != nil {
		return TreeState{}, fmt.Errorf("reading tree state: %w", err)
	}
	if len(root) != 32 || len(rng)%32 != 0 || size < 0 {
		return TreeState{}, fmt.Errorf("reading tree state: malformed row (root %d bytes, range %d bytes)", len(root), len(rng))
	}
	ts := TreeState{Size: uint64(size), Root: [32]byte(root)}
	for i := 0; i < len(rng); i += 32 {
		ts.Range = append(ts.Range, [32]byte(rng[i:i+32]))
	}
	return ts, nil
}

func (r reader) entries(ctx context.Context, start uint64, limit int) ([]StoredEntry, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT idx, data, leaf_hash FROM entries WHERE idx >= $1 ORDER BY idx LIMIT $2`, int64(start), limit)
	if err != nil {
		return nil, fmt.Errorf("reading entries from %d: %w", start, err)
	}
	defer rows.Close()
	var out []StoredEntry
	for rows.Next() {
		var (
			e  StoredEntry
			ix int64
		)
		if err := rows.Scan(&ix, &e.Data, &e.LeafHash); err != nil {
			return nil, fmt.Errorf("reading entries from %d: %w", start, err)
		}
		e.Index = uint64(ix)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading entries from %d: %w", start, err)
	}
	return out, nil
}

func (r reader) nodes(ctx context.Context, level uint, start uint64, limit int) ([]Node, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT idx, hash FROM nodes WHERE level = $1 AND idx >= $2 ORDER BY idx LIMIT $3`, int64(level), int64(start), limit)
	if err != nil {
		return nil, fmt.Errorf("reading level %d nodes from %d: %w", level, start, err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var (
			ix int64
			h  []byte
		)
		if err := rows.Scan(&ix, &h); err != nil {
			return nil, fmt.Errorf("reading level %d nodes from %d: %w", level, start, err)
		}
		out = append(out, Node{Level: level, Index: uint64(ix), Hash: h})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading level %d nodes from %d: %w", level, start, err)
	}
	return out, nil
}

// maxLevel is the highest stored node level, or -1 if none.
func (r reader) maxLevel(ctx context.Context) (int, error) {
	var l sql.NullInt64
	if err := r.q.QueryRowContext(ctx, `SELECT MAX(level) FROM nodes`).Scan(&l); err != nil {
		return 0, fmt.Errorf("reading node levels: %w", err)
	}
	if !l.Valid {
		return -1, nil
	}
	return int(l.Int64), nil
}

// hash reads one node hash: level 0 from entries, others from nodes.
func (r reader) hash(ctx context.Context, level uint, index uint64) ([]byte, error) {
	var (
		h   []byte
		err error
	)
	if level == 0 {
		err = r.q.QueryRowContext(ctx, `SELECT leaf_hash FROM entries WHERE idx = $1`, int64(index)).Scan(&h)
	} else {
		err = r.q.QueryRowContext(ctx, `SELECT hash FROM nodes WHERE level = $1 AND idx = $2`, int64(level), int64(index)).Scan(&h)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading node %d/%d: %w: not stored", level, index, ErrTampered)
	}
	if err != nil {
		return nil, fmt.Errorf("reading node %d/%d: %w", level, index, err)
	}
	if len(h) != 32 {
		return nil, fmt.Errorf("reading node %d/%d: %w: %d-byte hash", level, index, ErrTampered, len(h))
	}
	return h, nil
}

func (r reader) checkpoints(ctx context.Context, from uint64, limit int) ([]StoredCheckpoint, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT seq, size, note FROM checkpoints WHERE seq >= $1 ORDER BY seq LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("reading checkpoints: %w", err)
	}
	defer rows.Close()
	var out []StoredCheckpoint
	for rows.Next() {
		var (
			c         StoredCheckpoint
			seq, size int64
		)
		if err := rows.Scan(&seq, &size, &c.Note); err != nil {
			return nil, fmt.Errorf("reading checkpoints: %w", err)
		}
		c.Seq, c.Size = uint64(seq), uint64(size)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading checkpoints: %w", err)
	}
	return out, nil
}

func (r reader) latestCheckpoint(ctx context.Context) (StoredCheckpoint, error) {
	var (
		c         StoredCheckpoint
		seq, size int64
	)
	err := r.q.QueryRowContext(ctx, `SELECT seq, size, note FROM checkpoints ORDER BY seq DESC LIMIT 1`).Scan(&seq, &size, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNoCheckpoint
	}
	if err != nil {
		return c, fmt.Errorf("reading the latest checkpoint: %w", err)
	}
	c.Seq, c.Size = uint64(seq), uint64(size)
	return c, nil
}

// lastBatch is instance's signed batch with the highest batch_seq.
func (r reader) lastBatch(ctx context.Context, instance string) (uint64, [][]byte, error) {
	var (
		seq   int64
		chain []byte
	)
	err := r.q.QueryRowContext(ctx, `SELECT batch_seq, chain FROM batches WHERE instance_id = $1 ORDER BY batch_seq DESC LIMIT 1`, instance).Scan(&seq, &chain)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("reading batches of %s: %w", instance, err)
	}
	return uint64(seq), splitChain(chain), nil
}

func (r reader) batches(ctx context.Context, start uint64, limit int) ([]StoredBatch, error) {
	rows, err := r.q.QueryContext(ctx, `SELECT start_idx, end_idx, instance_id, batch_seq, signed_at, root, chain, signature
		FROM batches WHERE start_idx >= $1 ORDER BY start_idx LIMIT $2`, int64(start), limit)
	if err != nil {
		return nil, fmt.Errorf("reading batch signatures: %w", err)
	}
	defer rows.Close()
	var out []StoredBatch
	for rows.Next() {
		var (
			b                StoredBatch
			st, end, seq, at int64
			root, chain, sig []byte
		)
		if err := rows.Scan(&st, &end, &b.Signature.InstanceID, &seq, &at, &root, &chain, &sig); err != nil {
			return nil, fmt.Errorf("reading batch signatures: %w", err)
		}
		b.Start, b.End = uint64(st), uint64(end)
		b.Signature.BatchSeq = uint64(seq)
		b.Signature.SignedAt = time.Unix(0, at)
		b.Signature.Count = b.End - b.Start
		copy(b.Signature.Root[:], root)
		b.Signature.Chain = splitChain(chain)
		b.Signature.Signature = sig
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading batch signatures: %w", err)
	}
	return out, nil
}

// joinChain stores a certificate chain as repeated (uint32 length, DER).
func joinChain(chain [][]byte) []byte {
	var b []byte
	for _, c := range chain {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return b
}

// splitChain undoes joinChain; a malformed tail becomes one last element,
// which fails certificate parsing (and so verification) later.
func splitChain(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 4 || uint64(binary.BigEndian.Uint32(b)) > uint64(len(b)-4) {
			return append(out, b)
		}
		n := binary.BigEndian.Uint32(b)
		out = append(out, b[4:4+n])
		b = b[4+n:]
	}
	return out
}

func rangeBlob(rng [][]byte) []byte {
	b := make([]byte, 0, 32*len(rng))
	for _, h := range rng {
		b = append(b, h...)
	}
	return b
}

// ---- SQLite ----

// sqliteStore is DIR/ledger.db: WAL, synchronous=FULL, one writer
// connection; the writer holds flock(DIR/ledger.lock).
//
// synchronous=FULL syncs the WAL at every commit, so a committed Append
// survives a power loss, not only a crash of the process (NORMAL would
// lose the last commits on power loss, which breaks the rule that nothing
// is acknowledged before it is durable). One fsync per batch of records is
// cheap; see BenchmarkAppendSQLite.
type sqliteStore struct {
	dir  string
	db   *sql.DB   // readers
	wdb  *sql.DB   // pool of the writer connection; nil when read-only
	w    *sql.Conn // the one writer connection, kept for its prepared statements
	lock *os.File

	// prepared multi-row inserts by row count, on wdb
	insEntries map[int]*sql.Stmt
	insNodes   map[int]*sql.Stmt
}

const sqliteParams = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"

func openSQLite(ctx context.Context, dir string, readOnly bool) (*sqliteStore, error) {
	if dir == "" {
		return nil, errors.New("opening SQLite ledger: no data directory")
	}
	path := filepath.Join(dir, DBFile)
	if readOnly {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("opening SQLite ledger: %w", err)
		}
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("opening SQLite ledger: %w", err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening SQLite ledger: %w", err)
		}
		f.Close()
	}
	s := &sqliteStore{dir: dir, insEntries: map[int]*sql.Stmt{}, insNodes: map[int]*sql.Stmt{}}
	dsn := "file:" + path + "?" + sqliteParams
	var err error
	if s.db, err = sql.Open("sqlite", dsn+"&_pragma=query_only(1)"); err != nil {
		return nil, fmt.Errorf("opening SQLite ledger: %w", err)
	}
	s.db.SetMaxOpenConns(4)
	s.db.SetMaxIdleConns(4)
	if !readOnly {
		if s.wdb, err = sql.Open("sqlite", dsn+"&_txlock=immediate&_pragma=cache_size(-65536)&_pragma=temp_store(MEMORY)"); err != nil {
			s.db.Close()
			return nil, fmt.Errorf("opening SQLite ledger: %w", err)
		}
		s.wdb.SetMaxOpenConns(1)
		s.wdb.SetMaxIdleConns(1)
		s.wdb.SetConnMaxLifetime(0)
		s.wdb.SetConnMaxIdleTime(0)
		if s.w, err = s.wdb.Conn(ctx); err != nil {
			s.close()
			return nil, fmt.Errorf("opening SQLite ledger: %w", err)
		}
		if err := s.migrate(ctx); err != nil {
			s.close()
			return nil, err
		}
	}
	if err := checkSchema(ctx, s.db); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *sqliteStore) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	defer tx.Rollback()
	for _, q := range schema("BLOB", "INTEGER") {
		if strings.Contains(q, "TABLE IF NOT EXISTS nodes") {
			q += " WITHOUT ROWID"
		}
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating ledger tables: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING`, schemaVersion); err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	return nil
}

// checkSchema refuses a store of another schema version.
func checkSchema(ctx context.Context, db *sql.DB) error {
	var v string
	err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
	if err != nil {
		return fmt.Errorf("reading ledger schema version: %w", err)
	}
	if v != schemaVersion {
		return fmt.Errorf("ledger schema version %q, this build reads %q", v, schemaVersion)
	}
	return nil
}

func (s *sqliteStore) readDB() *sql.DB { return s.db }

func (s *sqliteStore) acquire(ctx context.Context) (bool, error) {
	if s.wdb == nil {
		return false, fmt.Errorf("acquiring writer: %w: opened read-only", ErrNotWriter)
	}
	if s.lock != nil {
		return true, nil
	}
	f, err := os.OpenFile(filepath.Join(s.dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, fmt.Errorf("acquiring writer: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("acquiring writer: locking %s: %w", LockFile, err)
	}
	s.lock = f
	return true, nil
}

// insertChunk is the most rows one multi-row INSERT takes (3 parameters
// each, far under SQLite's 32766).
const insertChunk = 256

// stmt returns the prepared multi-row INSERT of n rows into table. It
// uses "?" parameters: SQLite looks numbered ones ($n) up by name, which
// costs O(n) per parameter.
func (s *sqliteStore) stmt(ctx context.Context, cache map[int]*sql.Stmt, table string, n int) (*sql.Stmt, error) {
	if st, ok := cache[n]; ok {
		return st, nil
	}
	var b strings.Builder
	switch table {
	case "entries":
		b.WriteString("INSERT INTO entries (idx, data, leaf_hash) VALUES ")
	case "nodes":
		b.WriteString("INSERT INTO nodes (level, idx, hash) VALUES ")
	}
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?)")
	}
	st, err := s.w.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, err
	}
	cache[n] = st
	return st, nil
}

// inTx runs fn in a write transaction on the writer connection. It issues
// BEGIN IMMEDIATE and COMMIT itself rather than using sql.Tx: database/sql
// re-prepares a connection's statements in every sql.Tx, and the cached
// multi-row INSERTs are what make appends fast.
func (s *sqliteStore) inTx(ctx context.Context, fn func() error) error {
	if _, err := s.w.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := fn(); err != nil {
		s.w.ExecContext(context.Background(), "ROLLBACK")
		return err
	}
	if _, err := s.w.ExecContext(ctx, "COMMIT"); err != nil {
		s.w.ExecContext(context.Background(), "ROLLBACK") // if COMMIT left it open
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

func (s *sqliteStore) commit(ctx context.Context, w *writeSet) error {
	return s.inTx(ctx, func() error {
		if err := checkSize(s.w.QueryRowContext(ctx, `SELECT size FROM tree WHERE id = 1`), w.oldSize); err != nil {
			return err
		}
		args := make([]any, 0, 3*insertChunk)
		for i := 0; i < len(w.data); i += insertChunk {
			n := min(insertChunk, len(w.data)-i)
			st, err := s.stmt(ctx, s.insEntries, "entries", n)
			if err != nil {
				return fmt.Errorf("inserting entries: %w", err)
			}
			args = args[:0]
			for j := i; j < i+n; j++ {
				args = append(args, int64(w.start)+int64(j), w.data[j], w.leafHash[j][:])
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("inserting entries: %w", err)
			}
		}
		for i := 0; i < len(w.nodes); i += insertChunk {
			n := min(insertChunk, len(w.nodes)-i)
			st, err := s.stmt(ctx, s.insNodes, "nodes", n)
			if err != nil {
				return fmt.Errorf("inserting nodes: %w", err)
			}
			args = args[:0]
			for _, nd := range w.nodes[i : i+n] {
				args = append(args, int64(nd.Level), int64(nd.Index), nd.Hash)
			}
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return fmt.Errorf("inserting nodes: %w", err)
			}
		}
		for _, b := range w.batches {
			sig := &b.Signature
			if _, err := s.w.ExecContext(ctx, `INSERT INTO batches (start_idx, end_idx, instance_id, batch_seq, signed_at, root, chain, signature)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, int64(b.Start), int64(b.End), sig.InstanceID, int64(sig.BatchSeq),
				sig.SignedAt.UnixNano(), sig.Root[:], joinChain(sig.Chain), sig.Signature); err != nil {
				return fmt.Errorf("inserting batch signature [%d,%d): %w", b.Start, b.End, err)
			}
		}
		if _, err := s.w.ExecContext(ctx, `INSERT INTO tree (id, size, root, range) VALUES (1, $1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root, range = excluded.range`,
			int64(w.newSize), w.root[:], rangeBlob(w.rng)); err != nil {
			return fmt.Errorf("updating tree state: %w", err)
		}
		return nil
	})
}

// checkSize compares the stored tree size (no row: 0) with want.
func checkSize(row *sql.Row, want uint64) error {
	var size int64
	err := row.Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		size, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("reading tree size: %w", err)
	}
	if uint64(size) != want {
		return fmt.Errorf("%w: stored %d, writer has %d", errFork, size, want)
	}
	return nil
}

func (s *sqliteStore) addCheckpoint(ctx context.Context, size uint64, signed []byte, now time.Time) error {
	return s.inTx(ctx, func() error {
		if err := checkSize(s.w.QueryRowContext(ctx, `SELECT size FROM tree WHERE id = 1`), size); err != nil {
			return err
		}
		if _, err := s.w.ExecContext(ctx, `INSERT INTO checkpoints (seq, size, note, created_at)
			SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3 FROM checkpoints`, int64(size), signed, now.UnixNano()); err != nil {
			return fmt.Errorf("storing checkpoint: %w", err)
		}
		return nil
	})
}

// signerKey keeps the key in DIR/ledger.key (0600), apart from the
// database, so that ledger.db can be copied or published for audit without
// the key that signs checkpoints.
func (s *sqliteStore) signerKey(_ context.Context, origin string, create bool) (string, error) {
	path := filepath.Join(s.dir, KeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		skey, _, err := note.GenerateKey(rand.Reader, origin)
		if err != nil {
			return "", fmt.Errorf("generating checkpoint key: %w", err)
		}
		if err := writeNewFile(path, []byte(skey+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("writing checkpoint key: %w", err)
		}
		return skey, nil
	}
	if err != nil {
		return "", fmt.Errorf("reading checkpoint key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeNewFile creates path with b, durably (file and directory synced);
// it fails if path exists.
func writeNewFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (s *sqliteStore) close() error {
	var errs []error
	for _, m := range []map[int]*sql.Stmt{s.insEntries, s.insNodes} {
		for _, st := range m {
			errs = append(errs, st.Close())
		}
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	errs = append(errs, s.db.Close())
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the flock
		s.lock = nil
	}
	return errors.Join(errs...)
}

// ---- PostgreSQL ----

// pgStore keeps the tables in the connection's current schema (the first
// of its search_path; set it in the URL with ?search_path=NAME). Reads use a
// pool; the writer holds a session-level advisory lock on its own
// connection, and writes only through that connection, so a writer whose
// session died can write nothing more.
type pgStore struct {
	cfg     *pgx.ConnConfig
	db      *sql.DB
	w       *pgx.Conn // the writer's connection, holding the advisory lock
	lockKey int64
}

func openPostgres(ctx context.Context, url string, readOnly bool) (*pgStore, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing PostgreSQL URL: %w", err)
	}
	s := &pgStore{cfg: cfg.Copy(), db: stdlib.OpenDB(*cfg)}
	if s.cfg.RuntimeParams["application_name"] == "" {
		// The writer's session is easy to find in pg_stat_activity.
		s.cfg.RuntimeParams["application_name"] = "tally-ledger-writer"
	}
	s.db.SetMaxOpenConns(4)
	if !readOnly {
		if err := s.migrate(ctx); err != nil {
			s.db.Close()
			return nil, err
		}
	}
	var schemaName string
	if err := s.db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schemaName); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("reading current schema: %w", err)
	}
	s.lockKey = advisoryKey(schemaName)
	if err := checkSchema(ctx, s.db); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// advisoryKey is the advisory lock key of the ledger in schema.
func advisoryKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("tally-ledger-writer\x00" + schema))
	return int64(h.Sum64())
}

func (s *pgStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	defer tx.Rollback()
	// Concurrent CREATE TABLE IF NOT EXISTS can fail; serialize them.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7400740074007400)`); err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	for _, q := range schema("BYTEA", "BIGINT") {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating ledger tables: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING`, schemaVersion); err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("creating ledger tables: %w", err)
	}
	return nil
}

func (s *pgStore) readDB() *sql.DB { return s.db }

func (s *pgStore) acquire(ctx context.Context) (bool, error) {
	if s.w != nil && !s.w.IsClosed() {
		// Still ours if the session is alive.
		if err := s.w.Ping(ctx); err == nil {
			return true, nil
		}
		s.w.Close(context.Background())
		s.w = nil
	}
	c, err := pgx.ConnectConfig(ctx, s.cfg)
	if err != nil {
		return false, fmt.Errorf("acquiring writer: connecting: %w", err)
	}
	var ok bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, s.lockKey).Scan(&ok); err != nil {
		c.Close(context.Background())
		return false, fmt.Errorf("acquiring writer: %w", err)
	}
	if !ok {
		c.Close(context.Background())
		return false, nil
	}
	s.w = c
	return true, nil
}

func (s *pgStore) writer() (*pgx.Conn, error) {
	if s.w == nil || s.w.IsClosed() {
		return nil, fmt.Errorf("%w: writer session lost", ErrNotWriter)
	}
	return s.w, nil
}

func (s *pgStore) commit(ctx context.Context, w *writeSet) error {
	c, err := s.writer()
	if err != nil {
		return err
	}
	return sessionLost(c, s.commitTx(ctx, c, w))
}

// sessionLost marks an error that closed the writer's connection: the
// session, and with it the advisory lock, is gone.
func sessionLost(c *pgx.Conn, err error) error {
	if err != nil && c.IsClosed() && !errors.Is(err, ErrNotWriter) {
		return fmt.Errorf("%w: writer session lost: %w", ErrNotWriter, err)
	}
	return err
}

func (s *pgStore) commitTx(ctx context.Context, c *pgx.Conn, w *writeSet) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("beginning append: %w", err)
	}
	defer tx.Rollback(context.Background())
	var size int64
	err = tx.QueryRow(ctx, `SELECT size FROM tree WHERE id = 1 FOR UPDATE`).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		size, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("reading tree size: %w", err)
	}
	if uint64(size) != w.oldSize {
		return fmt.Errorf("%w: stored %d, writer has %d", errFork, size, w.oldSize)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"entries"}, []string{"idx", "data", "leaf_hash"},
		pgx.CopyFromSlice(len(w.data), func(i int) ([]any, error) {
			return []any{int64(w.start) + int64(i), w.data[i], w.leafHash[i][:]}, nil
		})); err != nil {
		return fmt.Errorf("inserting entries: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"nodes"}, []string{"level", "idx", "hash"},
		pgx.CopyFromSlice(len(w.nodes), func(i int) ([]any, error) {
			n := w.nodes[i]
			return []any{int32(n.Level), int64(n.Index), n.Hash}, nil
		})); err != nil {
		return fmt.Errorf("inserting nodes: %w", err)
	}
	for _, b := range w.batches {
		sig := &b.Signature
		if _, err := tx.Exec(ctx, `INSERT INTO batches (start_idx, end_idx, instance_id, batch_seq, signed_at, root, chain, signature)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, int64(b.Start), int64(b.End), sig.InstanceID, int64(sig.BatchSeq),
			sig.SignedAt.UnixNano(), sig.Root[:], joinChain(sig.Chain), sig.Signature); err != nil {
			return fmt.Errorf("inserting batch signature [%d,%d): %w", b.Start, b.End, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tree (id, size, root, range) VALUES (1, $1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root, range = excluded.range`,
		int64(w.newSize), w.root[:], rangeBlob(w.rng)); err != nil {
		return fmt.Errorf("updating tree state: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing append: %w", err)
	}
	return nil
}

func (s *pgStore) addCheckpoint(ctx context.Context, size uint64, signed []byte, now time.Time) error {
	c, err := s.writer()
	if err != nil {
		return err
	}
	return sessionLost(c, s.addCheckpointTx(ctx, c, size, signed, now))
}

func (s *pgStore) addCheckpointTx(ctx context.Context, c *pgx.Conn, size uint64, signed []byte, now time.Time) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	defer tx.Rollback(context.Background())
	var stored int64
	err = tx.QueryRow(ctx, `SELECT size FROM tree WHERE id = 1 FOR UPDATE`).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		stored, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("reading tree size: %w", err)
	}
	if uint64(stored) != size {
		return fmt.Errorf("%w: stored %d, writer has %d", errFork, stored, size)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO checkpoints (seq, size, note, created_at)
		SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3 FROM checkpoints`, int64(size), signed, now.UnixNano()); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("storing checkpoint: %w", err)
	}
	return nil
}

// signerKey keeps the key in meta (key 'signer_key'): every control plane
// sharing the database signs with it, and a reader that takes over keeps
// signing the same log. The first to start creates it.
func (s *pgStore) signerKey(ctx context.Context, origin string, create bool) (string, error) {
	if create {
		skey, _, err := note.GenerateKey(rand.Reader, origin)
		if err != nil {
			return "", fmt.Errorf("generating checkpoint key: %w", err)
		}
		if _, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('signer_key', $1) ON CONFLICT (key) DO NOTHING`, skey); err != nil {
			return "", fmt.Errorf("storing checkpoint key: %w", err)
		}
	}
	var skey string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'signer_key'`).Scan(&skey)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("reading checkpoint key: %w", fs.ErrNotExist)
	}
	if err != nil {
		return "", fmt.Errorf("reading checkpoint key: %w", err)
	}
	return skey, nil
}

func (s *pgStore) close() error {
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close(context.Background())) // ends the session: releases the lock
		s.w = nil
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}

// isPostgresURL reports whether store names PostgreSQL.
func isPostgresURL(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}
