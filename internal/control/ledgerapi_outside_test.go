package control_test

// The outside verifier: a program that knows only the ledger endpoints of
// SPEC.md, the standard library (net/http, encoding/json, crypto/x509,
// crypto/ecdsa), golang.org/x/mod/sumdb/note and
// github.com/transparency-dev/merkle, and no tally package, recomputes the
// root from the leaves and verifies the checkpoints, every proof and every
// batch signature (GET batches, against GET ca). This
// file must import no tally package (TestOutsideImports checks it); the
// ledger it reads is set up by outsideLedger, in ledgerapi_audit_test.go.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// outside reads the ledger API of one control plane.
type outside struct {
	t    *testing.T
	base string
}

// get fetches path and returns its content type and body; any status but
// 200 fails the test.
func (o *outside) get(path string) (string, []byte) {
	o.t.Helper()
	resp, err := http.Get(o.base + path)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		o.t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	return resp.Header.Get("Content-Type"), b
}

func (o *outside) getJSON(path string, v any) {
	o.t.Helper()
	ct, b := o.get(path)
	if ct != "application/json" {
		o.t.Fatalf("GET %s: content type %q", path, ct)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		o.t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// std decodes standard base64 (with padding), as SPEC.md says hashes are.
func (o *outside) std(what, s string) []byte {
	o.t.Helper()
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		o.t.Fatalf("%s %q: not standard base64: %v", what, s, err)
	}
	return b
}

// outsideCheckpoint is a verified checkpoint: its size and root.
type outsideCheckpoint struct {
	size uint64
	root []byte
}

// checkpoint fetches the latest checkpoint and verifies it as a C2SP
// tlog-checkpoint signed by the key v, whose name is its origin.
func (o *outside) checkpoint(v note.Verifier) outsideCheckpoint {
	o.t.Helper()
	ct, b := o.get("/api/v1/ledger/checkpoint")
	if !strings.HasPrefix(ct, "text/plain") {
		o.t.Fatalf("checkpoint content type %q", ct)
	}
	n, err := note.Open(b, note.VerifierList(v))
	if err != nil {
		o.t.Fatalf("checkpoint signature: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 || lines[0] != v.Name() {
		o.t.Fatalf("checkpoint %q: want origin %q, size, root", n.Text, v.Name())
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		o.t.Fatalf("checkpoint size %q: %v", lines[1], err)
	}
	return outsideCheckpoint{size: size, root: o.std("checkpoint root", lines[2])}
}

// outsideEntry is an item of GET entries.
type outsideEntry struct {
	Index    uint64                     `json:"index"`
	Data     string                     `json:"data"`
	LeafHash string                     `json:"leaf_hash"`
	Record   map[string]json.RawMessage `json:"record"`
}

func (o *outside) proof(path string, want [2]uint64, names [2]string) [][]byte {
	o.t.Helper()
	var raw map[string]json.RawMessage
	o.getJSON(path, &raw)
	for i, name := range names {
		if got := string(raw[name]); got != strconv.FormatUint(want[i], 10) {
			o.t.Fatalf("GET %s: %s is %s, want %d", path, name, got, want[i])
		}
	}
	var hs []string
	if err := json.Unmarshal(raw["hashes"], &hs); err != nil || hs == nil {
		o.t.Fatalf("GET %s: hashes %s: %v", path, raw["hashes"], err)
	}
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = o.std("proof hash", h)
	}
	return out
}

func (o *outside) inclusion(index, size uint64) [][]byte {
	o.t.Helper()
	return o.proof(fmt.Sprintf("/api/v1/ledger/proof/inclusion?index=%d&size=%d", index, size), [2]uint64{index, size}, [2]string{"index", "size"})
}

func (o *outside) consistency(old, new uint64) [][]byte {
	o.t.Helper()
	return o.proof(fmt.Sprintf("/api/v1/ledger/proof/consistency?old=%d&new=%d", old, new), [2]uint64{old, new}, [2]string{"old", "new"})
}

func TestOutsideVerifier(t *testing.T) {
	t.Parallel()
	base, grow := outsideLedger(t)
	o := &outside{t: t, base: base}
	h := rfc6962.DefaultHasher

	// The key, in note verifier format; its name is the log's origin.
	ct, kb := o.get("/api/v1/ledger/key")
	if !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("key content type %q", ct)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(kb)))
	if err != nil {
		t.Fatalf("key %q: %v", kb, err)
	}

	// Several checkpoints, the log growing between them.
	cps := []outsideCheckpoint{o.checkpoint(v)}
	for _, n := range []int{37, 64, 1, 55, 128, 700} {
		grow(n)
		cps = append(cps, o.checkpoint(v))
	}
	last := cps[len(cps)-1]
	if last.size != 200+37+64+1+55+128+700 {
		t.Fatalf("last checkpoint size %d", last.size)
	}

	// Every leaf, page by page, into a compact range; the root at each
	// checkpoint's size must be its root.
	sample := map[uint64][]byte{} // leaf hashes of the sampled indices
	var leafHashes [][]byte       // of every entry, for the batch signatures
	sampled := func(i uint64) bool { return i < 3 || i%37 == 0 || i >= last.size-2 }
	rf := &compact.RangeFactory{Hash: h.HashChildren}
	rng := rf.NewEmptyRange(0)
	next, pages, cpAt := "", 0, 0
	checkRoot := func() {
		for cpAt < len(cps) && cps[cpAt].size == rng.End() {
			root, err := rng.GetRootHash(nil)
			if err != nil {
				t.Fatal(err)
			}
			if root == nil {
				root = h.EmptyRoot()
			}
			if !bytes.Equal(root, cps[cpAt].root) {
				t.Fatalf("root of the first %d leaves: %x, checkpoint says %x", rng.End(), root, cps[cpAt].root)
			}
			cpAt++
		}
	}
	checkRoot()
	for {
		path := fmt.Sprintf("/api/v1/ledger/entries?start=0&end=%d", last.size)
		if next != "" {
			path = "/api/v1/ledger/entries?cursor=" + next
		}
		var page struct {
			Items []outsideEntry `json:"items"`
			Next  *string        `json:"next"`
		}
		o.getJSON(path, &page)
		if page.Next == nil {
			t.Fatalf("GET %s: no next", path)
		}
		pages++
		for _, e := range page.Items {
			if e.Index != rng.End() {
				t.Fatalf("entry %d where %d was due", e.Index, rng.End())
			}
			data := o.std("data", e.Data)
			lh := h.HashLeaf(data)
			if !bytes.Equal(lh, o.std("leaf_hash", e.LeafHash)) {
				t.Fatalf("entry %d: leaf_hash is not SHA-256(0x00 || data)", e.Index)
			}
			var kind string
			if json.Unmarshal(e.Record["kind"], &kind); kind != "confirmation" && kind != "omission" {
				t.Fatalf("entry %d: record kind %q", e.Index, kind)
			}
			if sampled(e.Index) {
				sample[e.Index] = lh
			}
			leafHashes = append(leafHashes, lh)
			if err := rng.Append(lh, nil); err != nil {
				t.Fatal(err)
			}
			checkRoot()
		}
		if *page.Next == "" {
			break
		}
		next = *page.Next
	}
	if rng.End() != last.size || cpAt != len(cps) {
		t.Fatalf("read %d entries, checked %d of %d checkpoints", rng.End(), cpAt, len(cps))
	}

	// Inclusion proofs of the sample in every checkpoint that holds them.
	proofs := 0
	for _, cp := range cps {
		for i, lh := range sample {
			if i >= cp.size {
				continue
			}
			p := o.inclusion(i, cp.size)
			if err := proof.VerifyInclusion(h, i, cp.size, lh, p, cp.root); err != nil {
				t.Errorf("inclusion of %d in %d: %v", i, cp.size, err)
			}
			if proof.VerifyInclusion(h, i, cp.size, h.HashLeaf([]byte("forged")), p, cp.root) == nil {
				t.Errorf("inclusion of %d in %d verifies for a forged leaf", i, cp.size)
			}
			proofs++
		}
	}
	// Consistency proofs between every two checkpoints.
	for i, a := range cps {
		for _, b := range cps[i:] {
			p := o.consistency(a.size, b.size)
			if err := proof.VerifyConsistency(h, a.size, b.size, p, a.root, b.root); err != nil {
				t.Errorf("consistency %d to %d: %v", a.size, b.size, err)
			}
			if a.size > 0 && a.size < b.size && proof.VerifyConsistency(h, a.size, b.size, p, h.HashLeaf(nil), b.root) == nil {
				t.Errorf("consistency %d to %d verifies from a wrong root", a.size, b.size)
			}
			proofs++
		}
	}
	batches := o.batchSignatures(leafHashes)
	if batches != 4+6 {
		t.Errorf("%d batch signatures verified, want 10 (one per batch)", batches)
	}
	t.Logf("%d entries in %d pages, %d checkpoints, %d proofs, %d batch signatures verified", last.size, pages, len(cps), proofs, batches)
}

// outsideBatch is an item of GET batches.
type outsideBatch struct {
	Start      uint64   `json:"start"`
	End        uint64   `json:"end"`
	InstanceID string   `json:"instance_id"`
	BatchSeq   uint64   `json:"batch_seq"`
	SignedAt   string   `json:"signed_at"`
	Root       string   `json:"root"`
	Chain      []string `json:"chain"`
	Signature  string   `json:"signature"`
}

// batchSignatures fetches the mesh CA and every batch signature, and
// verifies each as docs/PROTOCOL.md and ledger.BatchStatement describe it:
// its root is the RFC 6962 root of its leaves [start, end) taken as a tree
// of their own, its ECDSA P-256 signature over the statement verifies with
// its leaf certificate, which chains to the CA at signed_at. It returns how
// many it verified.
func (o *outside) batchSignatures(leafHashes [][]byte) int {
	o.t.Helper()
	ct, b := o.get("/api/v1/ledger/ca")
	blk, _ := pem.Decode(b)
	if !strings.HasPrefix(ct, "text/plain") || blk == nil || blk.Type != "CERTIFICATE" {
		o.t.Fatalf("GET ca: %s %q", ct, b)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		o.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	h := rfc6962.DefaultHasher
	rf := &compact.RangeFactory{Hash: h.HashChildren}
	n := 0
	for path := "/api/v1/ledger/batches"; ; {
		var page struct {
			Items []outsideBatch `json:"items"`
			Next  string         `json:"next"`
		}
		o.getJSON(path, &page)
		for _, it := range page.Items {
			if it.Start >= it.End || it.End > uint64(len(leafHashes)) {
				o.t.Fatalf("batch [%d,%d) of %d entries", it.Start, it.End, len(leafHashes))
			}
			r := rf.NewEmptyRange(0)
			for _, lh := range leafHashes[it.Start:it.End] {
				r.Append(lh, nil)
			}
			root, _ := r.GetRootHash(nil)
			if !bytes.Equal(root, o.std("batch root", it.Root)) {
				o.t.Fatalf("batch [%d,%d): the root of its leaves is not the one it signs", it.Start, it.End)
			}
			at, err := time.Parse(time.RFC3339Nano, it.SignedAt)
			if err != nil || len(it.Chain) == 0 {
				o.t.Fatalf("batch [%d,%d): signed_at %q (%v), %d certificates", it.Start, it.End, it.SignedAt, err, len(it.Chain))
			}
			// The statement: "tally-batch/v1\x00", len(instance) uint16,
			// instance, batch_seq, signed_at unix ns, count (all uint64
			// big-endian), root.
			msg := []byte("tally-batch/v1\x00")
			msg = binary.BigEndian.AppendUint16(msg, uint16(len(it.InstanceID)))
			msg = append(msg, it.InstanceID...)
			msg = binary.BigEndian.AppendUint64(msg, it.BatchSeq)
			msg = binary.BigEndian.AppendUint64(msg, uint64(at.UnixNano()))
			msg = binary.BigEndian.AppendUint64(msg, it.End-it.Start)
			msg = append(msg, root...)
			cert, err := x509.ParseCertificate(o.std("certificate", it.Chain[0]))
			if err != nil {
				o.t.Fatal(err)
			}
			pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
			d := sha256.Sum256(msg)
			if !ok || !ecdsa.VerifyASN1(pub, d[:], o.std("signature", it.Signature)) {
				o.t.Fatalf("batch [%d,%d): the signature does not verify", it.Start, it.End)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				o.t.Fatalf("batch [%d,%d): signer certificate: %v", it.Start, it.End, err)
			}
			n++
		}
		if page.Next == "" {
			return n
		}
		path = "/api/v1/ledger/batches?cursor=" + page.Next
	}
}

// TestOutsideImports checks that the outside verifier uses no tally
// package: only the standard library, note and merkle.
func TestOutsideImports(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "ledgerapi_outside_test.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		first, _, _ := strings.Cut(p, "/")
		switch {
		case !strings.Contains(first, "."): // the standard library
		case p == "golang.org/x/mod/sumdb/note", strings.HasPrefix(p, "github.com/transparency-dev/merkle"):
		default:
			t.Errorf("the outside verifier imports %s", p)
		}
	}
}
