package ledgerhttp

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tally-mesh/tally/internal/ledger"
)

// The server side (a real ledger behind the control plane's handler) is
// tested in internal/control (ledgerapi_test.go, ledgerapi_outside_test.go,
// ledgerapi_audit_test.go); here, what the client does with bad answers.

func TestClientErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathCheckpoint, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"no checkpoint yet"}` + "\n"))
	})
	mux.HandleFunc("GET "+PathKey, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>upstream broke</html>", http.StatusBadGateway)
	})
	mux.HandleFunc("GET "+PathEntries, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"items":[],"next":"same"}`))
	})
	mux.HandleFunc("GET "+PathInclusion, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"index":1,"size":2,"hashes":["AAAA"]}`))
	})
	mux.HandleFunc("GET "+PathConsistency, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"old":1,"new":2,"hashes":[`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	// "host:port" alone means http; a trailing slash is dropped.
	c := NewClient(strings.TrimPrefix(srv.URL, "http://")+"/", nil)
	ctx := t.Context()

	_, err := c.Checkpoint(ctx)
	var se *StatusError
	if !errors.Is(err, ledger.ErrNoCheckpoint) || !errors.As(err, &se) || se.StatusCode != 404 ||
		!strings.HasSuffix(err.Error(), "GET "+srv.URL+PathCheckpoint+": 404 Not Found: no checkpoint yet") {
		t.Errorf("Checkpoint: got %v", err)
	}
	if _, err := c.Key(ctx); err == nil || err.Error() != "GET "+srv.URL+PathKey+": 502 Bad Gateway: <html>upstream broke</html>" {
		t.Errorf("Key: got %v", err)
	}
	if _, err := c.Entries(ctx, 0, 10); err == nil || !strings.Contains(err.Error(), "the cursor does not advance") {
		t.Errorf("Entries with a stuck cursor: got %v", err)
	}
	if _, err := c.InclusionProof(ctx, 1, 2); err == nil || !strings.Contains(err.Error(), "hash 0 has 3 bytes, want 32") {
		t.Errorf("InclusionProof with a short hash: got %v", err)
	}
	if _, err := c.InclusionProof(ctx, 0, 2); err == nil || !strings.Contains(err.Error(), "the answer is the proof of index 1 in size 2") {
		t.Errorf("InclusionProof answered for another index: got %v", err)
	}
	if _, err := c.ConsistencyProof(ctx, 1, 2); err == nil || !strings.HasPrefix(err.Error(), "GET "+srv.URL+PathConsistency+"?new=2&old=1: decoding the answer") {
		t.Errorf("ConsistencyProof with broken JSON: got %v", err)
	}
	// Nothing listens: the error names the URL.
	srv.Close()
	if _, err := c.Key(ctx); err == nil || !strings.Contains(err.Error(), srv.URL+PathKey) {
		t.Errorf("Key of a closed server: got %v", err)
	}
	// A client-side ledger.Source without checkpoints yet.
	if cps, err := c.ReadCheckpoints(ctx, 0, 10); cps != nil || err == nil {
		t.Errorf("ReadCheckpoints of a closed server: got %v, %v", cps, err)
	}
}

var checkpointSizeTests = []struct {
	name string
	note string
	size uint64
	ok   bool
}{
	{name: "signed", note: "tally/mesh.local/ledger\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— tally/mesh.local/ledger abcd\n", size: 12, ok: true},
	{name: "extension", note: "o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n\n— o x\n", size: 0, ok: true},
	{name: "no signature block", note: "o\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"},
	{name: "bad size", note: "o\n012\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— o x\n"},
	{name: "short root", note: "o\n1\nAAAA\n\n— o x\n"},
	{name: "empty", note: ""},
}

func TestCheckpointSize(t *testing.T) {
	for _, tc := range checkpointSizeTests {
		size, err := checkpointSize([]byte(tc.note))
		if tc.ok != (err == nil) || size != tc.size {
			t.Errorf("%s: checkpointSize = %d, %v; want %d, ok %v", tc.name, size, err, tc.size, tc.ok)
		}
	}
}

func FuzzCheckpointSize(f *testing.F) {
	for _, tc := range checkpointSizeTests {
		f.Add([]byte(tc.note))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := checkpointSize(b)
		if err != nil {
			if !errors.Is(err, ledger.ErrBadCheckpoint) {
				t.Fatalf("error %v is not ErrBadCheckpoint", err)
			}
			return
		}
		// The body parses to the same checkpoint, which prints as itself.
		text, _, _ := strings.Cut(string(b), "\n\n")
		cp, err := ledger.ParseCheckpoint(text + "\n")
		if err != nil || cp.Size != size || cp.String() != text+"\n" {
			t.Fatalf("checkpointSize(%q) = %d; body %q parses to %v, %v", b, size, text, cp, err)
		}
	})
}

// A View reads nothing beyond its checkpoint's size.
func TestViewBounds(t *testing.T) {
	c := NewClient("http://127.0.0.1:1", nil) // nothing there: any request fails
	v, err := c.View([]byte(checkpointSizeTests[0].note))
	if err != nil {
		t.Fatal(err)
	}
	if es, err := v.ReadEntries(t.Context(), 12, 100); es != nil || err != nil {
		t.Errorf("ReadEntries at the size: got %v, %v", es, err)
	}
	cps, err := v.ReadCheckpoints(t.Context(), 0, 10)
	if err != nil || len(cps) != 1 || cps[0].Size != 12 || cps[0].Seq != 1 {
		t.Errorf("ReadCheckpoints(0): got %v, %v", cps, err)
	}
	if cps, _ := v.ReadCheckpoints(t.Context(), 2, 10); cps != nil {
		t.Errorf("ReadCheckpoints(2): got %v", cps)
	}
	if bs, err := v.ReadBatches(t.Context(), 12, 10); bs != nil || err != nil {
		t.Errorf("ReadBatches at the size: got %v, %v", bs, err)
	}
	if bs, err := v.ReadBatches(t.Context(), 0, 10); bs != nil || err == nil {
		t.Errorf("ReadBatches(0) of nothing: got %v, %v; want an error", bs, err)
	}
}
