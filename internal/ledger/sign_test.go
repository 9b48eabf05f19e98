package ledger_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/identity/identitytest"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// merkleVectors is testdata/merkle.json: the RFC 6962 test tree (copied
// from the project's published vectors).
type merkleVectors struct {
	LeafInputs  []string `json:"leaf_inputs_hex"`
	LeafHashes  []string `json:"leaf_hashes_hex"`
	RootsBySize []string `json:"roots_by_size_hex"`
	Hasher      []struct {
		Desc      string  `json:"desc"`
		InputHex  *string `json:"input_hex"`
		InputText *string `json:"input_text"`
		Left      string  `json:"left_text"`
		Right     string  `json:"right_text"`
		Want      string  `json:"want"`
	} `json:"hasher_vectors"`
	Inclusion []struct {
		Index    uint64   `json:"leaf_index"`
		Size     uint64   `json:"tree_size"`
		LeafHash string   `json:"leaf_hash"`
		Root     string   `json:"root"`
		Proof    []string `json:"proof"`
	} `json:"inclusion_proofs"`
	Consistency []struct {
		Size1 uint64   `json:"size1"`
		Size2 uint64   `json:"size2"`
		Root1 string   `json:"root1"`
		Root2 string   `json:"root2"`
		Proof []string `json:"proof"`
	} `json:"consistency_proofs"`
}

func loadMerkle(t *testing.T) merkleVectors {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "merkle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v merkleVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (v merkleVectors) leaves(t *testing.T) [][]byte {
	out := make([][]byte, len(v.LeafInputs))
	for i, s := range v.LeafInputs {
		out[i] = unhex(t, s)
	}
	return out
}

func TestHasherVectors(t *testing.T) {
	v := loadMerkle(t)
	for _, h := range v.Hasher {
		var got []byte
		switch {
		case h.InputHex != nil:
			lh := ledger.LeafHash(unhex(t, *h.InputHex))
			got = lh[:]
		case h.InputText != nil:
			lh := ledger.LeafHash([]byte(*h.InputText))
			got = lh[:]
		case h.Left != "":
			got = rfc6962.DefaultHasher.HashChildren([]byte(h.Left), []byte(h.Right))
		default:
			r := ledger.BatchRoot(nil)
			got = r[:]
		}
		if hex.EncodeToString(got) != h.Want {
			t.Errorf("%s: got %x, want %s", h.Desc, got, h.Want)
		}
	}
	for i, s := range v.LeafInputs {
		if got := ledger.LeafHash(unhex(t, s)); hex.EncodeToString(got[:]) != v.LeafHashes[i] {
			t.Errorf("leaf %d: got %x, want %s", i, got, v.LeafHashes[i])
		}
	}
}

func TestBatchRootVectors(t *testing.T) {
	v := loadMerkle(t)
	leaves := v.leaves(t)
	for n, want := range v.RootsBySize {
		if got := ledger.BatchRoot(leaves[:n]); hex.EncodeToString(got[:]) != want {
			t.Errorf("root of %d leaves: got %x, want %s", n, got, want)
		}
		// Built leaf by leaf, as a sidecar signs, from one reused buffer.
		var b ledger.RootBuilder
		var buf []byte
		for _, l := range leaves[:n] {
			buf = append(buf[:0], l...)
			b.Add(buf)
		}
		if got := b.Root(); b.Len() != uint64(n) || hex.EncodeToString(got[:]) != want {
			t.Errorf("RootBuilder over %d leaves: %d added, root %x, want %s", n, b.Len(), got, want)
		}
	}
}

// sidecar is a sidecar's identity from a real mesh CA.
type sidecar struct {
	pool  *x509.CertPool // the mesh CA
	chain [][]byte       // its SVID, DER
	key   crypto.Signer
}

func newSidecar(t testing.TB) sidecar {
	t.Helper()
	ca := identitytest.NewCA(t, identitytest.TrustDomain)
	svid := identitytest.NewSVID(t, ca, "frontend", time.Hour)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return sidecar{pool: pool, chain: [][]byte{svid.Certificates[0].Raw}, key: svid.PrivateKey}
}

// sign signs leaves as the sidecar's batch seq.
func (s sidecar) sign(t testing.TB, seq uint64, leaves [][]byte) *ledger.BatchSignature {
	t.Helper()
	sig, err := ledger.SignBatch(s.key, s.chain, "frontend-7f9c", seq, time.Now(), leaves)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestSignVerifyBatch(t *testing.T) {
	ca := identitytest.NewCA(t, identitytest.TrustDomain)
	svid := identitytest.NewSVID(t, ca, "frontend", time.Hour)
	chain := [][]byte{svid.Certificates[0].Raw}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	leaves := ledgertest.Leaves(t, ledgertest.Entries(0, 10))
	now := time.Now()

	sig, err := ledger.SignBatch(svid.PrivateKey, chain, "frontend-7f9c", 3, now, leaves)
	if err != nil {
		t.Fatal(err)
	}
	if sig.Count != 10 || sig.Root != ledger.BatchRoot(leaves) || sig.BatchSeq != 3 || sig.InstanceID != "frontend-7f9c" {
		t.Errorf("statement: %+v", sig.BatchStatement)
	}
	cert, err := ledger.VerifyBatchSignature(sig, leaves, pool)
	if err != nil {
		t.Fatalf("VerifyBatchSignature: %v", err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://mesh.local/svc/frontend" {
		t.Errorf("signer: got %v", cert.URIs)
	}

	otherCA := identitytest.NewCA(t, identitytest.TrustDomain)
	otherPool := x509.NewCertPool()
	otherPool.AddCert(otherCA.Cert)
	otherSVID := identitytest.NewSVID(t, otherCA, "frontend", time.Hour)

	tamper := []struct {
		name   string
		mod    func(s *ledger.BatchSignature, leaves [][]byte) [][]byte
		pool   *x509.CertPool
		reason string
	}{
		{name: "instance", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.InstanceID = "frontend-7f9d"; return l }, reason: "ECDSA"},
		{name: "batch seq", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.BatchSeq++; return l }, reason: "ECDSA"},
		{name: "signed at", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.SignedAt = s.SignedAt.Add(1); return l }, reason: "ECDSA"},
		{name: "root", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.Root[0] ^= 1; return l }, reason: "root"},
		{name: "one leaf", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte {
			l = append([][]byte(nil), l...)
			l[4] = append(bytes.Clone(l[4][:len(l[4])-1]), l[4][len(l[4])-1]^1)
			return l
		}, reason: "root"},
		{name: "leaves swapped", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte {
			l = append([][]byte(nil), l...)
			l[2], l[3] = l[3], l[2]
			return l
		}, reason: "root"},
		{name: "leaf dropped", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { return l[:9] }, reason: "signed 10 leaves"},
		{name: "signature bit", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte {
			s.Signature = bytes.Clone(s.Signature)
			s.Signature[len(s.Signature)-1] ^= 1
			return l
		}, reason: "ECDSA"},
		{name: "signature truncated", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.Signature = s.Signature[:10]; return l }, reason: "ECDSA"},
		{name: "other signer's certificate", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte {
			s.Chain = [][]byte{otherSVID.Certificates[0].Raw}
			return l
		}, reason: "ECDSA"},
		{name: "garbage certificate", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.Chain = [][]byte{[]byte("junk")}; return l }, reason: "certificate 0"},
		{name: "no certificate", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { s.Chain = nil; return l }, reason: "no certificate"},
		{name: "other CA", mod: func(s *ledger.BatchSignature, l [][]byte) [][]byte { return l }, pool: otherPool, reason: "signer certificate"},
	}
	for _, tt := range tamper {
		t.Run(tt.name, func(t *testing.T) {
			s := *sig
			l := tt.mod(&s, leaves)
			p := pool
			if tt.pool != nil {
				p = tt.pool
			}
			_, err := ledger.VerifyBatchSignature(&s, l, p)
			if !errors.Is(err, ledger.ErrBadBatchSignature) {
				t.Fatalf("got %v, want ErrBadBatchSignature", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
		})
	}

	t.Run("wrong key", func(t *testing.T) {
		if _, err := ledger.SignBatch(otherSVID.PrivateKey, chain, "i", 1, now, leaves); err == nil {
			t.Error("signed with a key that is not the certificate's")
		}
	})
}

// TestBatchSignatureExpiredCertificate: a signature made while the SVID was
// valid verifies after it expired; one dated after expiry does not.
func TestBatchSignatureExpiredCertificate(t *testing.T) {
	ca := identitytest.NewCA(t, identitytest.TrustDomain)
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	notBefore := time.Now().Add(-50 * time.Minute) // the CA is valid from an hour ago
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{},
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(20 * time.Minute), // expired half an hour ago
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{{Scheme: "spiffe", Host: "mesh.local", Path: "/svc/frontend"}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	leaves := ledgertest.Leaves(t, ledgertest.Entries(0, 3))

	during, err := ledger.SignBatch(key, [][]byte{der}, "i", 1, notBefore.Add(10*time.Minute), leaves)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.VerifyBatchSignature(during, leaves, pool); err != nil {
		t.Errorf("signed while valid, verified after expiry: %v", err)
	}
	after, err := ledger.SignBatch(key, [][]byte{der}, "i", 1, time.Now(), leaves)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.VerifyBatchSignature(after, leaves, pool); !errors.Is(err, ledger.ErrBadBatchSignature) {
		t.Errorf("signed after expiry: got %v, want ErrBadBatchSignature", err)
	}
}

func TestBatchMessageLayout(t *testing.T) {
	st := ledger.BatchStatement{InstanceID: "ab", BatchSeq: 2, SignedAt: time.Unix(0, 3), Count: 4, Root: [32]byte{31: 5}}
	want := []byte("tally-batch/v1\x00")
	want = append(want, 0, 2, 'a', 'b', 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4)
	want = append(want, make([]byte, 31)...)
	want = append(want, 5)
	if got := st.Message(); !bytes.Equal(got, want) {
		t.Errorf("message:\n got %x\nwant %x", got, want)
	}
}

type checkpointVectors struct {
	Derived struct {
		Origin    string `json:"origin"`
		RootHex   string `json:"root_hash_hex"`
		Signed    string `json:"signed_note"`
		SignerKey string `json:"signer_key"`
		Size      uint64 `json:"tree_size"`
		Verifier  string `json:"verifier_key"`
	} `json:"derived_checkpoint_8_leaf_tree"`
	SumDB struct {
		Origin   string `json:"origin"`
		RootHex  string `json:"root_hash_hex"`
		Signed   string `json:"signed_note"`
		Size     uint64 `json:"tree_size"`
		Verifier string `json:"verifier_key"`
		Tampered struct {
			Signed string `json:"signed_note"`
		} `json:"tampered_variant"`
	} `json:"sum_golang_org"`
	C2SP struct {
		Signed string `json:"signed_note"`
	} `json:"c2sp_spec_example"`
}

func loadCheckpoints(t *testing.T) checkpointVectors {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "checkpoint.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v checkpointVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCheckpointVectors(t *testing.T) {
	v := loadCheckpoints(t)
	m := loadMerkle(t)

	t.Run("derived 8-leaf tree", func(t *testing.T) {
		d := v.Derived
		c, err := ledger.OpenCheckpoint([]byte(d.Signed), d.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		if c.Origin != d.Origin || c.Size != d.Size || hex.EncodeToString(c.Root[:]) != d.RootHex {
			t.Errorf("got %+v", c)
		}
		if want := ledger.BatchRoot(m.leaves(t)); c.Root != want {
			t.Errorf("root %x is not the 8-leaf tree's %x", c.Root, want)
		}
		// Ed25519 is deterministic: signing the body reproduces the note.
		s, err := note.NewSigner(d.SignerKey)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := note.Sign(&note.Note{Text: c.String()}, s)
		if err != nil {
			t.Fatal(err)
		}
		if string(signed) != d.Signed {
			t.Errorf("re-signed:\n%s\nwant\n%s", signed, d.Signed)
		}
		// One changed byte anywhere in the body fails.
		for i := range len(c.String()) {
			b := []byte(d.Signed)
			b[i] ^= 1
			if _, err := ledger.OpenCheckpoint(b, d.Verifier); err == nil {
				t.Errorf("byte %d flipped: opened", i)
			}
		}
	})

	t.Run("sum.golang.org", func(t *testing.T) {
		d := v.SumDB
		// The Go checksum database's origin is not its key name, so our
		// origin rule refuses it, though the signature verifies.
		_, err := ledger.OpenCheckpoint([]byte(d.Signed), d.Verifier)
		if !errors.Is(err, ledger.ErrBadCheckpoint) || !strings.Contains(err.Error(), "origin") {
			t.Errorf("got %v, want an origin error", err)
		}
		vr, err := note.NewVerifier(d.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open([]byte(d.Signed), note.VerifierList(vr))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ledger.ParseCheckpoint(n.Text)
		if err != nil {
			t.Fatal(err)
		}
		if c.Origin != d.Origin || c.Size != d.Size || hex.EncodeToString(c.Root[:]) != d.RootHex {
			t.Errorf("got %+v", c)
		}
		if _, err := ledger.OpenCheckpoint([]byte(d.Tampered.Signed), d.Verifier); !errors.Is(err, ledger.ErrBadCheckpoint) {
			t.Errorf("tampered: got %v", err)
		}
	})

	t.Run("C2SP example", func(t *testing.T) {
		text, _, _ := strings.Cut(v.C2SP.Signed, "\n\n")
		c, err := ledger.ParseCheckpoint(text + "\n")
		if err != nil {
			t.Fatal(err)
		}
		if c.Origin != "example.com/behind-the-sofa" || c.Size != 20852163 {
			t.Errorf("got %+v", c)
		}
	})
}

func checkpointCases() []struct {
	name string
	text string
	ok   bool
} {
	root := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	return []struct {
		name string
		text string
		ok   bool
	}{
		{"plain", "tally/mesh.local/ledger\n5000\n" + root + "\n", true},
		{"size 0", "o\n0\n" + root + "\n", true},
		{"max size", "o\n18446744073709551615\n" + root + "\n", true},
		{"extension lines", "o\n1\n" + root + "\nx-ext 1\nmore\n", true},
		{"no final newline", "o\n1\n" + root, false},
		{"two lines", "o\n1\n", false},
		{"empty origin", "\n1\n" + root + "\n", false},
		{"empty extension", "o\n1\n" + root + "\n\n", false},
		{"leading zero", "o\n01\n" + root + "\n", false},
		{"plus sign", "o\n+1\n" + root + "\n", false},
		{"negative", "o\n-1\n" + root + "\n", false},
		{"hex size", "o\n0x10\n" + root + "\n", false},
		{"size overflow", "o\n18446744073709551616\n" + root + "\n", false},
		{"short root", "o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n", false},
		{"long root", "o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n", false},
		{"unpadded root", "o\n1\n" + strings.TrimRight(root, "=") + "\n", false},
		{"url base64 root", "o\n1\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) + "\n", false},
		{"non-canonical root", "o\n1\n" + root[:42] + "H=\n", false},
		{"carriage return", "o\r\n1\n" + root + "\n", false},
		{"tab", "o\t\n1\n" + root + "\n", false},
		{"invalid utf-8", "o\xff\n1\n" + root + "\n", false},
	}
}

func TestParseCheckpoint(t *testing.T) {
	for _, tt := range checkpointCases() {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ledger.ParseCheckpoint(tt.text)
			if tt.ok != (err == nil) {
				t.Fatalf("got %+v, %v; want ok=%v", c, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ledger.ErrBadCheckpoint) {
					t.Errorf("error %v is not ErrBadCheckpoint", err)
				}
				return
			}
			if got := c.String(); got != tt.text {
				t.Errorf("String:\n got %q\nwant %q", got, tt.text)
			}
		})
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	for _, c := range checkpointCases() {
		f.Add(c.text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ledger.ParseCheckpoint(text)
		if err != nil {
			if !errors.Is(err, ledger.ErrBadCheckpoint) {
				t.Fatalf("error %v is not ErrBadCheckpoint", err)
			}
			return
		}
		if got := c.String(); got != text {
			t.Fatalf("round trip:\n got %q\nwant %q", got, text)
		}
		again, err := ledger.ParseCheckpoint(c.String())
		if err != nil || again.Size != c.Size || again.Root != c.Root || again.Origin != c.Origin {
			t.Fatalf("second parse: %+v, %v", again, err)
		}
	})
}

// FuzzOpenCheckpoint: whatever the input, OpenCheckpoint fails or returns
// the checkpoint whose body the note signs.
func FuzzOpenCheckpoint(f *testing.F) {
	raw, err := os.ReadFile(filepath.Join("testdata", "checkpoint.json"))
	if err != nil {
		f.Fatal(err)
	}
	var v checkpointVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(v.Derived.Signed))
	f.Add([]byte(v.SumDB.Signed))
	f.Add([]byte(v.C2SP.Signed))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ledger.OpenCheckpoint(b, v.Derived.Verifier)
		if err != nil {
			return
		}
		body, _, _ := strings.Cut(string(b), "\n\n")
		if c.String() != body+"\n" || c.Origin != v.Derived.Origin {
			t.Fatalf("opened %+v from %q", c, b)
		}
	})
}
