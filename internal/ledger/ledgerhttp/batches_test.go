package ledgerhttp

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tally-mesh/tally/internal/identity/identitytest"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// signedBatch returns a batch signature of entries [start, start+n) of
// ledgertest, made by a sidecar of a new CA, and that CA's pool.
func signedBatch(t *testing.T, start, n int, at time.Time) (ledger.StoredBatch, *x509.CertPool, [][]byte) {
	t.Helper()
	ca := identitytest.NewCA(t, identitytest.TrustDomain)
	svid := identitytest.NewSVID(t, ca, "frontend", time.Hour)
	leaves := ledgertest.Leaves(t, ledgertest.Entries(start, n))
	sig, err := ledger.SignBatch(svid.PrivateKey, [][]byte{svid.Certificates[0].Raw}, "frontend-7f9c", 42,
		at, leaves)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return ledger.StoredBatch{Start: uint64(start), End: uint64(start + n), Signature: *sig}, pool, leaves
}

// equalBatch reports whether a and b are the same stored batch signature.
func equalBatch(a, b ledger.StoredBatch) bool {
	x, y := &a.Signature, &b.Signature
	return a.Start == b.Start && a.End == b.End && x.InstanceID == y.InstanceID && x.BatchSeq == y.BatchSeq &&
		x.SignedAt.Equal(y.SignedAt) && x.SignedAt.UnixNano() == y.SignedAt.UnixNano() && x.Count == y.Count && x.Root == y.Root &&
		slices.EqualFunc(x.Chain, y.Chain, bytes.Equal) && bytes.Equal(x.Signature, y.Signature)
}

func TestBatchJSON(t *testing.T) {
	at := time.Now().Truncate(time.Second).Add(123456789)
	sb, pool, leaves := signedBatch(t, 7, 3, at)
	b, err := json.Marshal(NewBatch(sb))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	sig := &sb.Signature
	want := map[string]any{
		"start": float64(7), "end": float64(10), "instance_id": "frontend-7f9c", "batch_seq": float64(42),
		"signed_at": at.UTC().Format(time.RFC3339Nano),
		"root":      base64.StdEncoding.EncodeToString(sig.Root[:]),
		"chain":     []any{base64.StdEncoding.EncodeToString(sig.Chain[0])},
		"signature": base64.StdEncoding.EncodeToString(sig.Signature),
	}
	if len(raw) != len(want) {
		t.Errorf("keys: got %v, want those of %v", raw, want)
	}
	for k, v := range want {
		if got, _ := json.Marshal(raw[k]); string(got) != string(must(json.Marshal(v))) {
			t.Errorf("%s: got %s, want %v", k, got, v)
		}
	}

	// Back: the same batch, whose signature verifies over its leaves.
	var it Batch
	if err := json.Unmarshal(b, &it); err != nil {
		t.Fatal(err)
	}
	back, err := it.Stored()
	if err != nil || !equalBatch(back, sb) {
		t.Fatalf("round trip: got %+v, %v; want %+v", back, err, sb)
	}
	if _, err := ledger.VerifyBatchSignature(&back.Signature, leaves, pool); err != nil {
		t.Errorf("the batch signature after the round trip: %v", err)
	}

	// An empty chain and signature are [] and "", not null.
	b, _ = json.Marshal(NewBatch(ledger.StoredBatch{Start: 1, End: 2}))
	if !strings.Contains(string(b), `"chain":[],"signature":""`) {
		t.Errorf("empty batch signature: got %s", b)
	}
}

var batchItemTests = []struct {
	name string
	json string
	err  string // "" if Stored succeeds
}{
	{name: "zero", json: `{"start":0,"end":1,"instance_id":"","batch_seq":0,"signed_at":"1970-01-01T00:00:00Z","root":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","chain":[],"signature":""}`},
	{name: "chain", json: `{"start":5,"end":9,"instance_id":"i","batch_seq":3,"signed_at":"2026-01-02T02:54:05.000000001+01:00","root":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","chain":["AQID","BA=="],"signature":"MEUCIQ=="}`},
	{name: "short root", json: `{"start":0,"end":1,"signed_at":"2026-01-02T00:00:00Z","root":"AAAA"}`, err: "batch [0,1): root has 3 bytes, want 32"},
	{name: "backwards", json: `{"start":9,"end":1,"signed_at":"2026-01-02T00:00:00Z","root":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, err: "batch [9,1): ends before it starts"},
	{name: "year 2300", json: `{"start":0,"end":1,"signed_at":"2300-01-01T00:00:00Z","root":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, err: "batch [0,1): signed_at 2300-01-01T00:00:00Z: out of the range of unix nanoseconds"},
}

func TestBatchStored(t *testing.T) {
	for _, tc := range batchItemTests {
		var it Batch
		if err := json.Unmarshal([]byte(tc.json), &it); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, err := it.Stored()
		if got := errString(err); got != tc.err {
			t.Errorf("%s: Stored: got error %q, want %q", tc.name, got, tc.err)
		}
	}
}

func FuzzBatchStored(f *testing.F) {
	for _, tc := range batchItemTests {
		f.Add([]byte(tc.json))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var it Batch
		if json.Unmarshal(b, &it) != nil {
			return
		}
		sb, err := it.Stored()
		if err != nil {
			return
		}
		if sb.Signature.Count != sb.End-sb.Start {
			t.Fatalf("count %d of [%d,%d)", sb.Signature.Count, sb.Start, sb.End)
		}
		// What it decodes to travels back as itself.
		out, err := json.Marshal(NewBatch(sb))
		if err != nil {
			t.Fatalf("encoding %+v: %v", sb, err)
		}
		var again Batch
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("decoding %s: %v", out, err)
		}
		back, err := again.Stored()
		if err != nil || !equalBatch(back, sb) {
			t.Fatalf("%s: round trip through %s: got %+v, %v; want %+v", b, out, back, err, sb)
		}
	})
}

func TestClientBatchErrors(t *testing.T) {
	sb, _, _ := signedBatch(t, 4, 2, time.Now())
	item := func(start uint64) Batch {
		b := NewBatch(sb)
		b.Start, b.End = start, start+2
		return b
	}
	var caBody []byte
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathBatches, func(w http.ResponseWriter, r *http.Request) {
		var p BatchesPage
		switch q := r.URL.Query(); q.Get("start") + q.Get("cursor") {
		case "1": // out of order
			p.Items = []Batch{item(5), item(3)}
		case "2": // before the start asked
			p.Items = []Batch{item(0)}
		case "3": // a short root
			b := item(3)
			b.Root = b.Root[:3]
			p.Items = []Batch{b}
		case "4": // a cursor that does not advance
			p.Items, p.Next = []Batch{item(4)}, "stuck"
		case "stuck":
			p.Items, p.Next = []Batch{item(8)}, "stuck"
		case "5": // two pages
			p.Items, p.Next = []Batch{item(5), item(7)}, "page2"
		case "page2":
			p.Items = []Batch{item(9)}
		case "6": // a second page that goes back
			p.Items, p.Next = []Batch{item(6)}, "back"
		case "back":
			p.Items = []Batch{item(6)}
		}
		if p.Items == nil {
			p.Items = []Batch{}
		}
		json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("GET "+PathCA, func(w http.ResponseWriter, r *http.Request) { w.Write(caBody) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := NewClient(srv.URL, nil)
	ctx := t.Context()

	for _, tc := range []struct {
		start uint64
		err   string
	}{
		{1, "?start=1: batch [3,5) out of order (want a start of at least 6)"},
		{2, "?start=2: batch [0,2) out of order (want a start of at least 2)"},
		{3, "?start=3: batch [3,5): root has 3 bytes, want 32"},
		{4, "?cursor=stuck: the cursor does not advance"},
		{6, "?cursor=back: batch [6,8) out of order (want a start of at least 7)"},
	} {
		_, err := c.Batches(ctx, tc.start)
		if want := "GET " + srv.URL + PathBatches + tc.err; errString(err) != want {
			t.Errorf("Batches(%d): got %v, want %s", tc.start, err, want)
		}
	}
	bs, err := c.Batches(ctx, 5)
	if err != nil || len(bs) != 3 || bs[0].Start != 5 || bs[2].Start != 9 || !equalBatch(bs[0], ledger.StoredBatch{Start: 5, End: 7, Signature: sb.Signature}) {
		t.Errorf("Batches(5) over two pages: got %+v, %v", bs, err)
	}
	if bs, err := c.ReadBatches(ctx, 5, 1); err != nil || len(bs) != 1 || bs[0].Start != 5 {
		t.Errorf("ReadBatches(5, 1): got %+v, %v", bs, err)
	}
	if bs, err := c.ReadBatches(ctx, 0, 0); err != nil || bs != nil {
		t.Errorf("ReadBatches(0, 0): got %+v, %v", bs, err)
	}

	// A View leaves out what starts at or beyond its size (8).
	v, err := c.View([]byte("o\n8\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— o x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if bs, err := v.ReadBatches(ctx, 5, 10); err != nil || len(bs) != 2 || bs[1].Start != 7 {
		t.Errorf("View.ReadBatches(5): got %+v, %v; want [5,7) and [7,9)", bs, err)
	}

	ca := identitytest.NewCA(t, identitytest.TrustDomain)
	for _, tc := range []struct {
		name string
		body []byte
		err  string
	}{
		{name: "PEM", body: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})},
		{name: "after a key", body: append(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})...)},
		{name: "not PEM", body: []byte("hello\n"), err: "GET " + srv.URL + PathCA + ": no PEM certificate"},
		{name: "not a certificate", body: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), err: "GET " + srv.URL + PathCA + ": x509: malformed certificate"},
	} {
		caBody = tc.body
		cert, err := c.CA(ctx)
		if errString(err) != tc.err || err == nil && !cert.Equal(ca.Cert) {
			t.Errorf("CA, %s: got %v, %v; want error %q", tc.name, cert, err, tc.err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
