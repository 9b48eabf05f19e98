package ledgerhttp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tally-mesh/tally/internal/ledger"
)

var (
	hasher       = rfc6962.DefaultHasher
	rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}
)

// VerifiedCheckpoint fetches the latest checkpoint and verifies it with the
// verifier key: signature, origin (the key's name) and body. It returns the
// checkpoint and the signed note. A checkpoint that does not verify is a
// *ledger.TamperError; before the first checkpoint the error wraps
// ledger.ErrNoCheckpoint.
func (c *Client) VerifiedCheckpoint(ctx context.Context, verifierKey string) (ledger.Checkpoint, []byte, error) {
	signed, err := c.Checkpoint(ctx)
	if err != nil {
		return ledger.Checkpoint{}, nil, err
	}
	cp, err := ledger.OpenCheckpoint(signed, verifierKey)
	if errors.Is(err, ledger.ErrBadCheckpoint) {
		size, _ := checkpointSize(signed)
		return ledger.Checkpoint{}, nil, &ledger.TamperError{Index: size,
			Msg: fmt.Sprintf("checkpoint from %s: %v", c.URL(PathCheckpoint, nil), err)}
	}
	if err != nil {
		return ledger.Checkpoint{}, nil, err
	}
	return cp, signed, nil
}

// AuditOptions configures Client.Audit.
type AuditOptions struct {
	// VerifierKey is the checkpoint verifier key (note verifier format).
	// Required: whether to take the server's (Client.Key) or a pinned one
	// is the caller's decision.
	VerifierKey string
	// Roots is the mesh CA pool that batch signers' certificates must
	// chain to at signing time (ledger.VerifyOptions.Roots): a pinned CA,
	// or the one Client.CA serves if the caller trusts it. Nil: each batch
	// signature is checked against its own certificate only
	// (Report.ChainsChecked is false).
	Roots *x509.CertPool
	// PageSize is how many entries (and batch signatures) one request
	// reads, 1 to MaxPage; 0 means MaxPage.
	PageSize int
}

// AuditReport is what Audit checked.
type AuditReport struct {
	// Report is ledger.Verify's, over the entries [0, First.Size).
	ledger.Report
	// First is the checkpoint seen at the start, whose root was
	// recomputed from the entries.
	First ledger.Checkpoint
	// Last is the checkpoint seen at the end, proved consistent with
	// First (or equal to it).
	Last ledger.Checkpoint
}

// Audit checks the served log against its checkpoints in bounded memory:
// it fetches and verifies the latest checkpoint, streams the entries up to
// its size and the batch signatures of those entries (GET batches) through
// ledger.Verify (leaf hashes, decoding, indices without gaps, the root
// recomputed with a compact range against the checkpoint's; each batch
// signature covering exactly its entries, verifying against its
// certificate, the certificate chaining to opts.Roots at signing time),
// then fetches the latest checkpoint again and verifies the consistency
// proof between the two. When the recomputed root differs, or a batch
// signature does not hold, it looks for the first entry that is not in the
// checkpointed tree, with consistency proofs at each page and then
// inclusion proofs within the first bad page: entries that differ from the
// signed log are named before the batch problem they cause.
//
// A problem is a *ledger.TamperError naming the first bad entry (or the
// checkpoint, or the batch: "batch [100,150): signature does not verify:
// ..."); before the first checkpoint the error wraps ledger.ErrNoCheckpoint;
// other errors are the server's or the network's.
func (c *Client) Audit(ctx context.Context, opts AuditOptions) (AuditReport, error) {
	page := opts.PageSize
	if page <= 0 || page > MaxPage {
		page = MaxPage
	}
	first, signed, err := c.VerifiedCheckpoint(ctx, opts.VerifierKey)
	if err != nil {
		return AuditReport{}, err
	}
	v, err := c.View(signed)
	if err != nil {
		return AuditReport{}, err
	}
	rep, err := ledger.Verify(ctx, v, ledger.VerifyOptions{VerifierKey: opts.VerifierKey, Roots: opts.Roots, PageSize: page})
	var te *ledger.TamperError
	if errors.As(err, &te) && first.Size > 0 && (te.Index == first.Size || isBatchProblem(te)) {
		// The entries hash to another root, or a batch signature fails,
		// which entries rewritten under it cause too: find the first entry
		// that differs from the signed log, if one does.
		if lerr := c.locate(ctx, first, page); lerr != nil {
			err = lerr
		}
	}
	if err != nil {
		return AuditReport{Report: rep, First: first}, err
	}
	last, _, err := c.VerifiedCheckpoint(ctx, opts.VerifierKey)
	if err != nil {
		return AuditReport{Report: rep, First: first}, err
	}
	out := AuditReport{Report: rep, First: first, Last: last}
	return out, c.CheckConsistent(ctx, first, last)
}

// isBatchProblem reports whether te is about a batch signature (ledger.Verify
// names it "batch [start,end): ...").
func isBatchProblem(te *ledger.TamperError) bool { return strings.HasPrefix(te.Msg, "batch [") }

// CheckConsistent checks, with the server's consistency proof, that the
// tree of checkpoint b extends the tree of checkpoint a (both verified
// already). A failure is a *ledger.TamperError.
func (c *Client) CheckConsistent(ctx context.Context, a, b ledger.Checkpoint) error {
	switch {
	case b.Size < a.Size:
		return &ledger.TamperError{Index: b.Size, Msg: fmt.Sprintf(
			"checkpoint at size %d published after one at size %d: the log shrank", b.Size, a.Size)}
	case b.Size == a.Size && b.Root != a.Root:
		return &ledger.TamperError{Index: a.Size, Msg: fmt.Sprintf(
			"checkpoints at size %d: two different roots (a forked log)", a.Size)}
	case b.Size == a.Size:
		return nil
	}
	p, err := c.ConsistencyProof(ctx, a.Size, b.Size)
	if err != nil {
		return err
	}
	if err := proof.VerifyConsistency(hasher, a.Size, b.Size, p, a.Root[:], b.Root[:]); err != nil {
		return &ledger.TamperError{Index: a.Size, Msg: fmt.Sprintf(
			"checkpoint at size %d: not consistent with the later one at size %d: %s", a.Size, b.Size, proofError(err))}
	}
	return nil
}

// locate finds the first served entry that is not in cp's tree, when the
// served entries hash to another root. The server's proofs come from the
// store, whose rows may be the tampered ones, so a proof that verifies is
// proof (it binds the leaf to the signed root), while one that fails may
// only show a bad row elsewhere; locate relies on the former.
//
// It recomputes the prefix roots page by page (pages of even size, so the
// consistency proofs use node hashes, not leaf rows) and checks each against
// cp; in the first page whose prefix fails it checks each pair of leaves
// with the pair's inclusion proof, the sibling leaf hash being its own. In
// the first bad pair, a leaf whose proof verifies as served is good; else a
// leaf elsewhere in the log that completes the pair (a swap) shows which one
// moved; else it names the pair. It returns nil if it finds nothing.
func (c *Client) locate(ctx context.Context, cp ledger.Checkpoint, page int) error {
	page = max(2, page&^1)
	rng := rangeFactory.NewEmptyRange(0)
	var es []ledger.StoredEntry
	for start := uint64(0); start < cp.Size; {
		end := min(cp.Size, start+uint64(page))
		var err error
		if es, err = c.Leaves(ctx, start, end); err != nil {
			return err
		}
		for _, e := range es {
			h := ledger.LeafHash(e.Data)
			if err := rng.Append(h[:], nil); err != nil {
				return err
			}
		}
		if rng.End() != end {
			return nil // a gap: Verify names it
		}
		if end == cp.Size {
			break
		}
		p, err := c.ConsistencyProof(ctx, end, cp.Size)
		if err != nil {
			return err
		}
		root, _ := rng.GetRootHash(nil)
		if proof.VerifyConsistency(hasher, end, cp.Size, p, root, cp.Root[:]) != nil {
			break
		}
		start = end
	}
	return c.firstBadPair(ctx, cp, es, page)
}

// firstBadPair checks the pairs of leaves of es (a page that starts at an
// even index) against cp; see locate.
func (c *Client) firstBadPair(ctx context.Context, cp ledger.Checkpoint, es []ledger.StoredEntry, page int) error {
	included := func(index uint64, leaf [32]byte, p [][]byte) bool {
		return proof.VerifyInclusion(hasher, index, cp.Size, leaf[:], p, cp.Root[:]) == nil
	}
	bad := func(index uint64, format string, args ...any) error {
		return &ledger.TamperError{Index: index, Msg: fmt.Sprintf(format, args...)}
	}
	for i := 0; i < len(es); i += 2 {
		j := es[i].Index
		ha := ledger.LeafHash(es[i].Data)
		p, err := c.InclusionProof(ctx, j, cp.Size)
		if err != nil {
			return err
		}
		if i+1 == len(es) || j+1 >= cp.Size {
			// The last leaf, without a sibling leaf in the proof.
			if !included(j, ha, p) {
				return bad(j, "entry %d: not in the checkpointed tree of size %d (its inclusion proof fails): the served entry differs from the signed log", j, cp.Size)
			}
			continue
		}
		hb := ledger.LeafHash(es[i+1].Data)
		own := append([][]byte{hb[:]}, p[1:]...)
		switch {
		case included(j, ha, own):
			continue // the pair is in the tree
		case included(j, ha, p):
			return bad(j+1, "entry %d: not in the checkpointed tree of size %d (entry %d is): the served entry differs from the signed log", j+1, cp.Size, j)
		}
		pb, err := c.InclusionProof(ctx, j+1, cp.Size)
		if err != nil {
			return err
		}
		if included(j+1, hb, pb) {
			return bad(j, "entry %d: not in the checkpointed tree of size %d (entry %d is): the served entry differs from the signed log", j, cp.Size, j+1)
		}
		// Both rows may be bad as stored: exchanged with each other, or
		// each with a row elsewhere that belongs beside the other.
		if included(j, hb, append([][]byte{ha[:]}, p[1:]...)) {
			return bad(j, "entries %d and %d out of order", j, j+1)
		}
		moved, err := c.findPartner(ctx, cp, j, ha, hb, p[1:], page)
		if err != nil {
			return err
		}
		if moved != nil {
			return moved
		}
		return bad(j, "entries %d and %d: their pair is not in the checkpointed tree of size %d: one of them differs from the signed log", j, j+1, cp.Size)
	}
	return nil
}

// findPartner looks through the served leaves for one that completes the
// pair (j, j+1) in cp's tree beside ha or hb, given the pair's proof above
// level 0: then the other row was moved there, as an exchange of rows does.
func (c *Client) findPartner(ctx context.Context, cp ledger.Checkpoint, j uint64, ha, hb [32]byte, upper [][]byte, page int) (*ledger.TamperError, error) {
	fits := func(left, right [32]byte) bool {
		return proof.VerifyInclusion(hasher, j, cp.Size, left[:], append([][]byte{right[:]}, upper...), cp.Root[:]) == nil
	}
	for start := uint64(0); start < cp.Size; {
		es, err := c.Leaves(ctx, start, min(cp.Size, start+uint64(page)))
		if err != nil || len(es) == 0 {
			return nil, err
		}
		for _, e := range es {
			if e.Index == j || e.Index == j+1 {
				continue
			}
			h := ledger.LeafHash(e.Data)
			switch {
			case fits(ha, h):
				return &ledger.TamperError{Index: j + 1, Msg: fmt.Sprintf("entries %d and %d out of order", j+1, e.Index)}, nil
			case fits(h, hb):
				return &ledger.TamperError{Index: j, Msg: fmt.Sprintf("entries %d and %d out of order", j, e.Index)}, nil
			}
		}
		start = es[len(es)-1].Index + 1
	}
	return nil, nil
}

// proofError says on one line why a proof failed.
func proofError(err error) string {
	var m proof.RootMismatchError
	if errors.As(err, &m) {
		return fmt.Sprintf("it leads to root %s, not %s",
			base64.StdEncoding.EncodeToString(m.CalculatedRoot), base64.StdEncoding.EncodeToString(m.ExpectedRoot))
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Inclusion is a verified inclusion proof: the entry at Index is in the
// tree of Size leaves, whose Root is, or is proved consistent with, the
// checkpoint's.
type Inclusion struct {
	Entry      Entry
	Index      uint64
	Size       uint64
	LeafHash   []byte   // SHA-256(0x00 || Entry.Data), recomputed
	Hashes     [][]byte // the inclusion proof
	Root       []byte   // the root of the tree of Size leaves, recomputed from the proof
	Checkpoint ledger.Checkpoint
	// Consistency is the consistency proof from Size to Checkpoint.Size,
	// when Size is smaller.
	Consistency [][]byte
}

// ProveInclusion fetches the entry at index and its inclusion proof in the
// tree of size leaves, and verifies it against the verified checkpoint cp:
// directly when size is cp.Size, else through the root the proof implies
// and a consistency proof from size to cp.Size. It needs index < size <=
// cp.Size. A proof that fails, or an entry that is missing or whose served
// leaf hash differs from its data, is a *ledger.TamperError.
func (c *Client) ProveInclusion(ctx context.Context, cp ledger.Checkpoint, index, size uint64) (*Inclusion, error) {
	if index >= size || size > cp.Size {
		return nil, fmt.Errorf("proving inclusion: need index %d < size %d <= checkpoint size %d", index, size, cp.Size)
	}
	es, err := c.Entries(ctx, index, index+1)
	if err != nil {
		return nil, err
	}
	if len(es) != 1 || es[0].Index != index {
		return nil, &ledger.TamperError{Index: index, Msg: fmt.Sprintf("entry %d: missing from %s", index, c.URL(PathEntries, nil))}
	}
	h := ledger.LeafHash(es[0].Data)
	if !bytes.Equal(h[:], es[0].LeafHash) {
		return nil, &ledger.TamperError{Index: index, Msg: fmt.Sprintf("entry %d: leaf hash does not match its data", index)}
	}
	p, err := c.InclusionProof(ctx, index, size)
	if err != nil {
		return nil, err
	}
	in := &Inclusion{Entry: es[0], Index: index, Size: size, LeafHash: h[:], Hashes: p, Checkpoint: cp}
	bad := func(err error) error {
		return &ledger.TamperError{Index: index, Msg: fmt.Sprintf(
			"entry %d: inclusion proof in size %d does not verify against the checkpoint of size %d: %s", index, size, cp.Size, proofError(err))}
	}
	if size == cp.Size {
		if err := proof.VerifyInclusion(hasher, index, size, h[:], p, cp.Root[:]); err != nil {
			return nil, bad(err)
		}
		in.Root = cp.Root[:]
		return in, nil
	}
	root, err := proof.RootFromInclusionProof(hasher, index, size, h[:], p)
	if err != nil {
		return nil, bad(err)
	}
	cons, err := c.ConsistencyProof(ctx, size, cp.Size)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyConsistency(hasher, size, cp.Size, cons, root, cp.Root[:]); err != nil {
		return nil, bad(err)
	}
	in.Root, in.Consistency = root, cons
	return in, nil
}
