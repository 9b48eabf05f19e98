package ledger

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
)

// Source is a ledger as Verify reads it: a Snapshot of a store, or a client
// of the REST API (GET /api/v1/ledger/entries, .../checkpoint). Each method
// returns one page; an empty page means there is no more.
type Source interface {
	// ReadEntries returns stored entries with Index >= start in
	// increasing index order, at most limit.
	ReadEntries(ctx context.Context, start uint64, limit int) ([]StoredEntry, error)
	// ReadCheckpoints returns published checkpoints with Seq >= from in
	// increasing Seq order (publication order, from 1, without gaps), at
	// most limit. A source that only knows the latest checkpoint returns it
	// alone (with any Seq).
	ReadCheckpoints(ctx context.Context, from uint64, limit int) ([]StoredCheckpoint, error)
	// ReadBatches returns batch signatures with Start >= start in
	// increasing Start order, at most limit.
	ReadBatches(ctx context.Context, start uint64, limit int) ([]StoredBatch, error)
}

// TreeSource is a Source that also has the store's own tree: its saved
// state and the hashes of its perfect subtrees. Verify checks them against
// its recomputation when the Source has them.
type TreeSource interface {
	// TreeState returns the stored size, root and compact range.
	TreeState(ctx context.Context) (TreeState, error)
	// ReadNodes returns stored node hashes of the level (>= 1) with
	// Index >= start in increasing order, at most limit.
	ReadNodes(ctx context.Context, level uint, start uint64, limit int) ([]Node, error)
	// MaxNodeLevel returns the highest level of a stored node, -1 if none.
	MaxNodeLevel(ctx context.Context) (int, error)
}

// VerifyOptions configures Verify. The zero value checks checkpoints with
// the source's own key (if it has one) and batch signatures without their
// certificate chains.
type VerifyOptions struct {
	// VerifierKey is the checkpoint verifier key (note verifier format).
	// Empty: the Source's own, if it has a VerifierKey() string method
	// (Snapshot does); with neither, Verify fails.
	VerifierKey string
	// Roots is the mesh CA pool that batch signers' certificates must
	// chain to, at the time each batch was signed. Nil: signatures are
	// checked against their certificates, but not the chains
	// (Report.ChainsChecked is false).
	Roots *x509.CertPool
	// PageSize is how many rows one read returns; 0 means 4096.
	PageSize int
}

// Report is what Verify checked.
type Report struct {
	Size          uint64   // entries, recomputed
	Root          [32]byte // root, recomputed
	Confirmations uint64   // entries of each kind
	Omissions     uint64
	Checkpoints   int    // checkpoints whose signature and root were checked
	Batches       int    // batch signatures checked
	Nodes         uint64 // stored node hashes compared (TreeSource only)
	TreeChecked   bool   // the Source was a TreeSource: state and nodes checked
	ChainsChecked bool   // batch signers' chains were checked against Roots
}

// TamperError is a problem Verify found, with a message naming the first
// bad entry (or checkpoint, batch, node). It matches ErrTampered.
type TamperError struct {
	// Index is the first bad entry's index: the entry, or the first entry
	// the bad checkpoint, batch or node covers.
	Index uint64
	Msg   string
}

func (e *TamperError) Error() string { return e.Msg }

// Is reports whether target is ErrTampered.
func (e *TamperError) Is(target error) bool { return target == ErrTampered }

func tampered(index uint64, format string, args ...any) error {
	return &TamperError{Index: index, Msg: fmt.Sprintf(format, args...)}
}

// Verify recomputes the log from src and checks it, streaming: memory stays
// bounded (a compact range and a page per stream), whatever the size.
//
// It reads every entry in order and checks that the indices run 0, 1, 2,
// ... without gap, that each stored leaf hash is SHA-256(0x00 || data), and
// that each leaf decodes; it feeds the leaf hashes to a compact range. At
// each size where a checkpoint was published it checks the checkpoint's
// signature (VerifyOptions.VerifierKey), origin and size, and that its root
// equals the recomputed root at that size. Checkpoints must come in
// publication order with non-decreasing sizes and no gap in their sequence.
// Since every checkpoint's root is checked against one recomputation of one
// append-only tree, consecutive checkpoints are consistent with each other:
// a consistency proof between them would verify (the tests check this
// with proofs). At the end of each batch it checks that the batch signature
// covers exactly that batch's leaves (count and BatchRoot), the signature
// against its certificate, and the certificate chain against
// VerifyOptions.Roots at the signing time. From a TreeSource it also
// compares every stored node hash and the stored tree state (size, root,
// compact range) with the recomputation.
//
// The first problem ends it: the error is a *TamperError (errors.Is
// ErrTampered) naming the first bad entry, such as "entry 1234: leaf hash
// does not match its data", "entry 77 missing (rows jump from 76 to 78)",
// "entries 10 and 11 out of order", "checkpoint at size 5000: root differs
// from the log" or "batch [100,200): signature does not verify". Other
// errors (reading the source) are returned as they are.
func Verify(ctx context.Context, src Source, opts VerifyOptions) (Report, error) {
	v := &verifier{src: src, opts: opts, page: opts.PageSize, rng: rangeFactory.NewEmptyRange(0)}
	if v.page <= 0 {
		v.page = 4096
	}
	return v.run(ctx)
}

type verifier struct {
	src  Source
	tree TreeSource // nil if src is not one
	opts VerifyOptions
	page int
	ver  note.Verifier
	rep  Report

	rng      *compact.Range
	size     uint64 // entries processed
	lastLeaf [2][32]byte

	ts     TreeState
	levels map[uint]*nodeCursor

	cps      []StoredCheckpoint // page of checkpoints
	cpNext   uint64             // Seq of the next page
	cpPrev   *StoredCheckpoint  // last checked
	cpDone   bool
	bs       []StoredBatch // page of batch signatures
	bsNext   uint64
	bsDone   bool
	batch    *StoredBatch // the batch being read
	batchRng *compact.Range
	prevEnd  uint64 // end of the last batch

	pending   error  // a checkpoint or batch problem, held for one more entry
	pendingAt uint64 // report it once size passes this
}

func (v *verifier) run(ctx context.Context) (Report, error) {
	key := v.opts.VerifierKey
	if key == "" {
		if k, ok := v.src.(interface{ VerifierKey() string }); ok {
			key = k.VerifierKey()
		}
	}
	if key == "" {
		return v.rep, errors.New("verifying ledger: no checkpoint verifier key")
	}
	var err error
	if v.ver, err = note.NewVerifier(key); err != nil {
		return v.rep, fmt.Errorf("verifying ledger: parsing verifier key: %w", err)
	}
	v.rep.ChainsChecked = v.opts.Roots != nil
	if t, ok := v.src.(TreeSource); ok {
		v.tree, v.rep.TreeChecked = t, true
		if v.ts, err = t.TreeState(ctx); err != nil {
			return v.rep, err
		}
		v.levels = map[uint]*nodeCursor{}
	}
	// Checkpoints of the empty tree.
	if err := v.checkpointsAt(ctx); err != nil {
		return v.rep, err
	}
	next := uint64(0)
	for {
		page, err := v.src.ReadEntries(ctx, next, v.page)
		if err != nil {
			return v.rep, err
		}
		if len(page) == 0 {
			break
		}
		for i := range page {
			e := &page[i]
			if e.Index > v.size && i+1 < len(page) && page[i+1].Index == v.size {
				return v.rep, tampered(v.size, "entries %d and %d out of order", v.size, e.Index)
			}
			if err := v.entry(ctx, e); err != nil {
				return v.rep, err
			}
		}
		next = page[len(page)-1].Index + 1
	}
	if v.pending != nil {
		return v.rep, v.pending
	}
	if err := v.end(ctx); err != nil {
		return v.rep, err
	}
	v.rep.Size, v.rep.Root = v.size, rootOf(v.rng)
	return v.rep, nil
}

// entry checks one stored entry, in order.
func (v *verifier) entry(ctx context.Context, e *StoredEntry) error {
	i := v.size
	switch {
	case e.Index > i && i == 0:
		return tampered(0, "entry 0 missing (rows start at %d)", e.Index)
	case e.Index > i:
		return tampered(i, "entry %d missing (rows jump from %d to %d)", i, i-1, e.Index)
	case e.Index < i:
		return tampered(e.Index, "entries %d and %d out of order", e.Index, i-1)
	}
	if v.tree != nil && i >= v.ts.Size {
		return tampered(i, "entry %d: beyond the stored tree size %d", i, v.ts.Size)
	}
	h := LeafHash(e.Data)
	if e.LeafHash != nil && !equalHash(h, e.LeafHash) {
		return tampered(i, "entry %d: leaf hash does not match its data", i)
	}
	d, err := Decode(e.Data)
	if err != nil {
		return tampered(i, "entry %d: undecodable: %v", i, err)
	}
	if d.Kind == KindConfirmation {
		v.rep.Confirmations++
	} else {
		v.rep.Omissions++
	}
	v.lastLeaf[i&1] = h
	var nodeErr error
	visit := func(id compact.NodeID, hash []byte) {
		if id.Level == 0 || v.tree == nil || nodeErr != nil {
			return
		}
		nodeErr = v.node(ctx, id, hash)
	}
	if err := v.rng.Append(h[:], visit); err != nil {
		return fmt.Errorf("verifying ledger: %w", err)
	}
	if nodeErr != nil {
		return nodeErr
	}
	v.size++
	if v.pending != nil && v.size > v.pendingAt {
		return v.pending
	}
	if err := v.batchLeaf(ctx, h); err != nil {
		return err
	}
	return v.checkpointsAt(ctx)
}

// hold keeps a checkpoint or batch problem found at the current size until
// one more entry is checked: if that entry's pair node shows which entry is
// bad, naming the entry is more useful.
func (v *verifier) hold(err error) {
	if v.pending == nil {
		v.pending, v.pendingAt = err, v.size
	}
}

// ---- checkpoints ----

func (v *verifier) nextCheckpoint(ctx context.Context) (*StoredCheckpoint, error) {
	if len(v.cps) == 0 && !v.cpDone {
		page, err := v.src.ReadCheckpoints(ctx, v.cpNext, v.page)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			v.cpDone = true
		} else {
			v.cps = page
			v.cpNext = page[len(page)-1].Seq + 1
		}
	}
	if len(v.cps) == 0 {
		return nil, nil
	}
	return &v.cps[0], nil
}

// checkpointsAt checks every checkpoint published at the current size.
func (v *verifier) checkpointsAt(ctx context.Context) error {
	for {
		c, err := v.nextCheckpoint(ctx)
		if err != nil || c == nil || c.Size > v.size {
			return err
		}
		if err := v.checkpoint(c); err != nil {
			return err
		}
		cp := *c
		v.cpPrev = &cp
		v.cps = v.cps[1:]
	}
}

func (v *verifier) checkpoint(c *StoredCheckpoint) error {
	switch p := v.cpPrev; {
	case p != nil && c.Seq != p.Seq+1:
		return tampered(p.Size, "checkpoint %d missing (sequence jumps from %d to %d)", p.Seq+1, p.Seq, c.Seq)
	case p == nil && v.tree != nil && c.Seq != 1:
		// A store keeps every checkpoint from the first.
		return tampered(0, "checkpoint 1 missing (the first stored is %d)", c.Seq)
	}
	if c.Size < v.size {
		prev := uint64(0)
		if v.cpPrev != nil {
			prev = v.cpPrev.Size
		}
		return tampered(c.Size, "checkpoint at size %d: published after one at size %d", c.Size, prev)
	}
	n, err := note.Open(c.Note, note.VerifierList(v.ver))
	if err != nil {
		return tampered(c.Size, "checkpoint at size %d: signature does not verify: %v", c.Size, err)
	}
	body, err := ParseCheckpoint(n.Text)
	if err != nil {
		return tampered(c.Size, "checkpoint at size %d: %v", c.Size, err)
	}
	if body.Origin != v.ver.Name() {
		return tampered(c.Size, "checkpoint at size %d: origin %q is not the key's %q", c.Size, body.Origin, v.ver.Name())
	}
	if body.Size != c.Size {
		return tampered(min(c.Size, body.Size), "checkpoint at size %d: it signs size %d", c.Size, body.Size)
	}
	if body.Root != rootOf(v.rng) {
		v.hold(tampered(c.Size, "checkpoint at size %d: root differs from the log", c.Size))
	}
	v.rep.Checkpoints++
	return nil
}

// ---- batch signatures ----

func (v *verifier) nextBatch(ctx context.Context) (*StoredBatch, error) {
	if len(v.bs) == 0 && !v.bsDone {
		page, err := v.src.ReadBatches(ctx, v.bsNext, v.page)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			v.bsDone = true
		} else {
			v.bs = page
			v.bsNext = page[len(page)-1].Start + 1
		}
	}
	if len(v.bs) == 0 {
		return nil, nil
	}
	return &v.bs[0], nil
}

// batchLeaf feeds the leaf just checked (index v.size-1) to the batch that
// covers it, and checks the batch at its end.
func (v *verifier) batchLeaf(ctx context.Context, h [32]byte) error {
	i := v.size - 1
	if v.batch == nil {
		b, err := v.nextBatch(ctx)
		if err != nil || b == nil || b.Start > i {
			return err
		}
		switch {
		case b.Start < i:
			return tampered(b.Start, "batch [%d,%d): overlaps the batch before it or starts before its entry", b.Start, b.End)
		case b.End <= b.Start:
			return tampered(b.Start, "batch [%d,%d): empty", b.Start, b.End)
		}
		bb := *b
		v.batch, v.batchRng = &bb, rangeFactory.NewEmptyRange(0)
		v.bs = v.bs[1:]
	}
	_ = v.batchRng.Append(h[:], nil)
	b := v.batch
	if v.size < b.End {
		return nil
	}
	v.batch = nil
	sig := b.Signature
	sig.Count = b.End - b.Start
	if rootOf(v.batchRng) != sig.Root {
		v.hold(tampered(b.Start, "batch [%d,%d): signature does not cover its entries", b.Start, b.End))
		return nil
	}
	if err := v.checkBatchSignature(&sig); err != nil {
		return tampered(b.Start, "batch [%d,%d): %v", b.Start, b.End, err)
	}
	v.rep.Batches++
	return nil
}

func (v *verifier) checkBatchSignature(sig *BatchSignature) error {
	if v.opts.Roots != nil {
		_, err := sig.Verify(v.opts.Roots)
		return err
	}
	// No CA pool: the signature against its own certificate only.
	if len(sig.Chain) == 0 {
		return errors.New("signature does not verify: no certificate")
	}
	cert, err := x509.ParseCertificate(sig.Chain[0])
	if err != nil {
		return fmt.Errorf("signature does not verify: certificate: %w", err)
	}
	if err := checkSignedBy(sig, cert); err != nil {
		return fmt.Errorf("signature does not verify: %w", err)
	}
	return nil
}

// ---- stored tree ----

// nodeCursor pages through the stored nodes of one level.
type nodeCursor struct {
	level uint
	buf   []Node
	next  uint64
	done  bool
}

func (v *verifier) cursor(level uint) *nodeCursor {
	c := v.levels[level]
	if c == nil {
		c = &nodeCursor{level: level}
		v.levels[level] = c
	}
	return c
}

func (v *verifier) peek(ctx context.Context, c *nodeCursor) (*Node, error) {
	if len(c.buf) == 0 && !c.done {
		page, err := v.tree.ReadNodes(ctx, c.level, c.next, v.page)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			c.done = true
		} else {
			c.buf = page
			c.next = page[len(page)-1].Index + 1
		}
	}
	if len(c.buf) == 0 {
		return nil, nil
	}
	return &c.buf[0], nil
}

// node compares a perfect subtree the recomputation completed with the
// stored one.
func (v *verifier) node(ctx context.Context, id compact.NodeID, hash []byte) error {
	c := v.cursor(id.Level)
	n, err := v.peek(ctx, c)
	if err != nil {
		return err
	}
	begin, end := id.Coverage()
	switch {
	case n == nil || n.Index > id.Index:
		return tampered(begin, "entries [%d,%d): node %d/%d missing from the stored tree", begin, end, id.Level, id.Index)
	case n.Index < id.Index:
		b, e := compact.NewNodeID(n.Level, n.Index).Coverage()
		return tampered(b, "entries [%d,%d): stored node %d/%d is not in the log", b, e, n.Level, n.Index)
	}
	c.buf = c.buf[1:]
	if bytes.Equal(n.Hash, hash) {
		v.rep.Nodes++
		return nil
	}
	if id.Level > 1 {
		return tampered(begin, "entries [%d,%d): their subtree hash differs from the stored tree (node %d/%d): an entry or a node was rewritten", begin, end, id.Level, id.Index)
	}
	return v.diagnosePair(ctx, begin, n.Hash)
}

// diagnosePair explains a level-1 mismatch: entries a and a+1 hash to
// something other than the stored node, though each matches its own stored
// leaf hash. Either two rows were exchanged, or a row was rewritten with a
// fresh leaf hash.
func (v *verifier) diagnosePair(ctx context.Context, a uint64, stored []byte) error {
	ha, hb := v.lastLeaf[0], v.lastLeaf[1]
	if bytes.Equal(hasher.HashChildren(hb[:], ha[:]), stored) {
		return tampered(a, "entries %d and %d out of order", a, a+1)
	}
	// Look for the row that belongs at a or a+1 further on.
	for next := a + 2; ; {
		page, err := v.src.ReadEntries(ctx, next, v.page)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			h := LeafHash(e.Data)
			if bytes.Equal(hasher.HashChildren(h[:], hb[:]), stored) {
				return tampered(a, "entries %d and %d out of order", a, e.Index)
			}
			if bytes.Equal(hasher.HashChildren(ha[:], h[:]), stored) {
				return tampered(a+1, "entries %d and %d out of order", a+1, e.Index)
			}
		}
		if last := page[len(page)-1].Index; last >= next {
			next = last + 1
		} else {
			break
		}
	}
	return tampered(a, "entries %d and %d: their pair's hash differs from the stored tree (node 1/%d): an entry or the node was rewritten", a, a+1, a/2)
}

// end checks what only the end shows: the stored tree state, leftover
// nodes, checkpoints and batches beyond the log.
func (v *verifier) end(ctx context.Context) error {
	n := v.size
	if v.tree != nil {
		switch {
		case v.ts.Size > n && n == 0:
			return tampered(0, "entry 0 missing (no rows, the tree has size %d)", v.ts.Size)
		case v.ts.Size > n:
			return tampered(n, "entry %d missing (rows end at %d, the tree has size %d)", n, n-1, v.ts.Size)
		}
	}
	if v.batch != nil {
		return tampered(v.batch.Start, "batch [%d,%d): beyond the log's %d entries", v.batch.Start, v.batch.End, n)
	}
	if b, err := v.nextBatch(ctx); err != nil {
		return err
	} else if b != nil {
		return tampered(b.Start, "batch [%d,%d): beyond the log's %d entries", b.Start, b.End, n)
	}
	if c, err := v.nextCheckpoint(ctx); err != nil {
		return err
	} else if c != nil {
		return tampered(n, "checkpoint at size %d: beyond the log's %d entries", c.Size, n)
	}
	if v.tree == nil {
		return nil
	}
	root := rootOf(v.rng)
	if v.ts.Root != root {
		return tampered(0, "tree state: root differs from the log")
	}
	hashes := v.rng.Hashes()
	if len(hashes) != len(v.ts.Range) {
		return tampered(0, "tree state: compact range has %d hashes, the log %d", len(v.ts.Range), len(hashes))
	}
	for i, h := range hashes {
		if !equalHash(v.ts.Range[i], h) {
			return tampered(0, "tree state: compact range differs from the log (hash %d)", i)
		}
	}
	maxLevel, err := v.tree.MaxNodeLevel(ctx)
	if err != nil {
		return err
	}
	for l := 1; l <= maxLevel; l++ {
		nd, err := v.peek(ctx, v.cursor(uint(l)))
		if err != nil {
			return err
		}
		if nd != nil {
			b, e := compact.NewNodeID(nd.Level, nd.Index).Coverage()
			return tampered(b, "entries [%d,%d): stored node %d/%d is not in the log", b, e, nd.Level, nd.Index)
		}
	}
	return nil
}
