package control

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgerhttp"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// ledgerServer is a real ledger served by ledgerHandler.
type ledgerServer struct {
	dir    string // of the SQLite store
	lg     *ledger.Log
	srv    *httptest.Server
	leaves [][]byte // every appended leaf, in order
	sizes  []uint64 // sizes of the published checkpoints
}

// newLedgerServer builds a SQLite ledger of n entries appended in batches
// of batch, with a checkpoint after each batch, and serves it.
func newLedgerServer(t *testing.T, n, batch int) *ledgerServer {
	t.Helper()
	return newLedgerServerWrapped(t, n, batch, nil)
}

// newLedgerServerWrapped is newLedgerServer with the handler wrapped by
// wrap, if not nil.
func newLedgerServerWrapped(t *testing.T, n, batch int, wrap func(*ledgerServer, http.Handler) http.Handler) *ledgerServer {
	t.Helper()
	dir := t.TempDir()
	ls := &ledgerServer{dir: dir, lg: ledgertest.Open(t, ledger.Config{Dir: dir, Origin: ledgertest.Origin})}
	for i := 0; i < n; i += batch {
		if err := ls.append(t.Context(), ledgertest.Entries(i, min(batch, n-i))); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	mux := http.NewServeMux()
	mux.Handle(ledgerhttp.PathPrefix, ledgerHandler(ls.lg, nil, log))
	var h http.Handler = mux
	if wrap != nil {
		h = wrap(ls, h)
	}
	ls.srv = httptest.NewServer(h)
	t.Cleanup(ls.srv.Close)
	return ls
}

// append appends es as one batch and publishes a checkpoint. Not safe for
// concurrent use.
func (ls *ledgerServer) append(ctx context.Context, es []ledger.Entry) error {
	if _, err := ls.lg.Append(ctx, ledger.Batch{Entries: es}); err != nil {
		return err
	}
	for i := range es {
		b, err := es[i].Encode()
		if err != nil {
			return err
		}
		ls.leaves = append(ls.leaves, b)
	}
	if _, err := ls.lg.Checkpoint(ctx); err != nil {
		return err
	}
	ls.sizes = append(ls.sizes, uint64(len(ls.leaves)))
	return nil
}

// rootAt is the RFC 6962 root of the first size leaves.
func (ls *ledgerServer) rootAt(size uint64) []byte {
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, l := range ls.leaves[:size] {
		h := ledger.LeafHash(l)
		r.Append(h[:], nil)
	}
	root, _ := r.GetRootHash(nil)
	if root == nil {
		return rfc6962.DefaultHasher.EmptyRoot()
	}
	return root
}

// get fetches path (with query) and returns status, content type and body.
func (ls *ledgerServer) get(t *testing.T, method, path string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ls.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func (ls *ledgerServer) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, ct, b := ls.get(t, "GET", path)
	if code != http.StatusOK || ct != "application/json" {
		t.Fatalf("GET %s: %d %s %s", path, code, ct, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: decoding %s: %v", path, b, err)
	}
}

func TestLedgerAPIEmpty(t *testing.T) {
	ls := newLedgerServer(t, 0, 1)
	for _, tc := range []struct {
		name, path string
		code       int
		body       string
	}{
		{name: "no checkpoint", path: "checkpoint", code: 404, body: `{"error":"no checkpoint yet"}`},
		{name: "no entries", path: "entries", code: 200, body: `{"items":[],"next":""}`},
		{name: "no entries from 0 to 0", path: "entries?start=0&end=0", code: 200, body: `{"items":[],"next":""}`},
		{name: "beyond", path: "entries?start=1", code: 400, body: `{"error":"start: must be <= the tree size (0)"}`},
		{name: "inclusion in nothing", path: "proof/inclusion?index=0&size=0", code: 400, body: `{"error":"index: must be < size (0)"}`},
		{name: "consistency of nothing", path: "proof/consistency?old=0&new=0", code: 200, body: `{"old":0,"new":0,"hashes":[]}`},
		{name: "no batches", path: "batches", code: 200, body: `{"items":[],"next":""}`},
		{name: "no batches beyond", path: "batches?start=7", code: 200, body: `{"items":[],"next":""}`},
		{name: "no CA", path: "ca", code: 404, body: `{"error":"this control plane has no mesh CA"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, b := ls.get(t, "GET", ledgerhttp.PathPrefix+tc.path)
			if got := strings.TrimSpace(string(b)); code != tc.code || got != tc.body {
				t.Errorf("GET %s: got %d %s, want %d %s", tc.path, code, got, tc.code, tc.body)
			}
		})
	}
}

func TestLedgerAPI(t *testing.T) {
	ls := newLedgerServer(t, 2500, 500)
	ctx := t.Context()
	size := uint64(len(ls.leaves))

	t.Run("key", func(t *testing.T) {
		code, ct, b := ls.get(t, "GET", ledgerhttp.PathKey)
		if code != 200 || ct != "text/plain; charset=utf-8" || string(b) != ls.lg.VerifierKey()+"\n" {
			t.Errorf("GET key: got %d %q %q, want 200 text/plain %q", code, ct, b, ls.lg.VerifierKey())
		}
	})

	t.Run("checkpoint", func(t *testing.T) {
		code, ct, b := ls.get(t, "GET", ledgerhttp.PathCheckpoint)
		if code != 200 || ct != "text/plain; charset=utf-8" {
			t.Fatalf("GET checkpoint: got %d %q", code, ct)
		}
		cp, err := ledger.OpenCheckpoint(b, ls.lg.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		if cp.Origin != ledgertest.Origin || cp.Size != size || string(cp.Root[:]) != string(ls.rootAt(size)) {
			t.Errorf("checkpoint: got %s, want size %d and its root", cp, size)
		}
		if code, _, _ := ls.get(t, "HEAD", ledgerhttp.PathCheckpoint); code != 200 {
			t.Errorf("HEAD checkpoint: got %d", code)
		}
	})

	t.Run("entries", func(t *testing.T) {
		var raw struct {
			Items []map[string]json.RawMessage `json:"items"`
			Next  *string                      `json:"next"`
		}
		ls.getJSON(t, ledgerhttp.PathEntries+"?start=5&end=7", &raw)
		if len(raw.Items) != 2 || raw.Next == nil || *raw.Next != "" {
			t.Fatalf("entries 5..7: got %d items, next %v", len(raw.Items), raw.Next)
		}
		for i, it := range raw.Items {
			idx := uint64(5 + i)
			var data, leafHash string
			json.Unmarshal(it["data"], &data)
			json.Unmarshal(it["leaf_hash"], &leafHash)
			h := ledger.LeafHash(ls.leaves[idx])
			if string(it["index"]) != strconv.FormatUint(idx, 10) ||
				data != base64.StdEncoding.EncodeToString(ls.leaves[idx]) ||
				leafHash != base64.StdEncoding.EncodeToString(h[:]) {
				t.Errorf("item %d: got index %s data %s leaf_hash %s", idx, it["index"], data, leafHash)
			}
		}
		// Entry 6 is an omission (ledgertest.Entry: every seventh), 5 a confirmation.
		var conf, omis map[string]any
		json.Unmarshal(raw.Items[0]["record"], &conf)
		json.Unmarshal(raw.Items[1]["record"], &omis)
		wantConf := []string{"batch_seq", "confirmed_at", "destination", "destination_identity", "instance_id", "kind", "message_id",
			"protocol", "request_bytes", "request_digest", "response_bytes", "response_digest", "seq", "source", "source_identity"}
		wantOmis := []string{"batch_seq", "destination", "destination_identity", "detail", "detected_at", "event_id", "instance_id",
			"kind", "message_id", "omission_kind", "reporter", "seq", "source", "source_identity"}
		if got := sortedKeys(conf); !slices.Equal(got, wantConf) {
			t.Errorf("confirmation record keys: got %v, want %v", got, wantConf)
		}
		if got := sortedKeys(omis); !slices.Equal(got, wantOmis) {
			t.Errorf("omission record keys: got %v, want %v", got, wantOmis)
		}
		e5 := ledgertest.Entry(5)
		at := time.Unix(0, e5.AtUnixNano).UTC().Format(time.RFC3339Nano)
		if conf["kind"] != "confirmation" || conf["request_digest"] != base64.StdEncoding.EncodeToString(e5.RequestDigest[:]) ||
			conf["confirmed_at"] != at || conf["seq"] != float64(5) || conf["message_id"] != e5.MessageID {
			t.Errorf("confirmation record: got %v", conf)
		}
		if omis["kind"] != "omission" || omis["omission_kind"] != "truncated" || omis["reporter"] != "caller" {
			t.Errorf("omission record: got %v", omis)
		}
	})

	t.Run("pages", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			query string
			pages []int
			first uint64
		}{
			{name: "to the end", query: "", pages: []int{1000, 1000, 500}, first: 0},
			{name: "from 100 to 1200", query: "start=100&end=1200", pages: []int{1000, 100}, first: 100},
			{name: "exactly one page", query: "start=1500", pages: []int{1000}, first: 1500},
			{name: "one", query: "start=2499&end=2500", pages: []int{1}, first: 2499},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q := tc.query
				next := tc.first
				for i, want := range tc.pages {
					var p ledgerhttp.EntriesPage
					ls.getJSON(t, ledgerhttp.PathEntries+"?"+q, &p)
					if len(p.Items) != want {
						t.Fatalf("page %d: got %d items, want %d", i, len(p.Items), want)
					}
					for _, e := range p.Items {
						if e.Index != next || string(e.Data) != string(ls.leaves[next]) {
							t.Fatalf("page %d: got entry %d, want %d", i, e.Index, next)
						}
						next++
					}
					if last := i == len(tc.pages)-1; last != (p.Next == "") {
						t.Fatalf("page %d: next %q", i, p.Next)
					}
					q = "cursor=" + url.QueryEscape(p.Next)
				}
			})
		}
	})

	t.Run("inclusion", func(t *testing.T) {
		for _, tc := range []struct{ index, size uint64 }{
			{0, 1}, {0, 2500}, {6, 7}, {499, 500}, {500, 1000}, {1234, 2000}, {2499, 2500}, {1023, 1024}, {1024, 1025},
		} {
			var p ledgerhttp.InclusionProof
			ls.getJSON(t, fmt.Sprintf("%s?index=%d&size=%d", ledgerhttp.PathInclusion, tc.index, tc.size), &p)
			h := ledger.LeafHash(ls.leaves[tc.index])
			if p.Index != tc.index || p.Size != tc.size {
				t.Errorf("inclusion %d in %d: got the proof of %d in %d", tc.index, tc.size, p.Index, p.Size)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, tc.index, tc.size, h[:], p.Hashes, ls.rootAt(tc.size)); err != nil {
				t.Errorf("inclusion %d in %d: %v", tc.index, tc.size, err)
			}
		}
	})

	t.Run("consistency", func(t *testing.T) {
		for _, tc := range []struct{ old, new uint64 }{
			{0, 2500}, {1, 2}, {500, 1000}, {500, 2500}, {1024, 2048}, {777, 2499}, {2500, 2500},
		} {
			var p ledgerhttp.ConsistencyProof
			ls.getJSON(t, fmt.Sprintf("%s?old=%d&new=%d", ledgerhttp.PathConsistency, tc.old, tc.new), &p)
			if p.Old != tc.old || p.New != tc.new || p.Hashes == nil {
				t.Errorf("consistency %d to %d: got %d to %d, hashes %v", tc.old, tc.new, p.Old, p.New, p.Hashes)
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, tc.old, tc.new, p.Hashes, ls.rootAt(tc.old), ls.rootAt(tc.new)); err != nil {
				t.Errorf("consistency %d to %d: %v", tc.old, tc.new, err)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path string
			code               int
			msg                string
		}{
			{name: "end beyond", path: "entries?start=0&end=2501", code: 400, msg: "end: must be <= the tree size (2500)"},
			{name: "start after end", path: "entries?start=10&end=5", code: 400, msg: "start: must be <= end (5)"},
			{name: "start not a number", path: "entries?start=-1", code: 400, msg: `start: want a whole number, got "-1"`},
			{name: "bad cursor", path: "entries?cursor=xyz", code: 400, msg: "cursor: malformed; pass the 'next' of the previous page"},
			{name: "cursor of another list", path: "entries?cursor=" + encodeCursor("t", "1-2"), code: 400, msg: "cursor: not a cursor of this list; pass the 'next' of the previous page"},
			{name: "cursor beyond", path: "entries?cursor=" + entriesCursor(3000, 4000), code: 400, msg: "cursor: beyond the tree size (2500)"},
			{name: "index missing", path: "proof/inclusion?size=12", code: 400, msg: "index: missing"},
			{name: "size missing", path: "proof/inclusion?index=1", code: 400, msg: "size: missing"},
			{name: "index not below size", path: "proof/inclusion?index=12&size=12", code: 400, msg: "index: must be < size (12)"},
			{name: "size beyond", path: "proof/inclusion?index=1&size=2501", code: 400, msg: "size: must be <= the tree size (2500)"},
			{name: "huge index", path: "proof/inclusion?index=99999999999999999999&size=2", code: 400, msg: `index: want a whole number, got "99999999999999999999"`},
			{name: "old after new", path: "proof/consistency?old=3&new=2", code: 400, msg: "old: must be <= new (2)"},
			{name: "new beyond", path: "proof/consistency?old=3&new=2501", code: 400, msg: "new: must be <= the tree size (2500)"},
			{name: "old missing", path: "proof/consistency?new=2", code: 400, msg: "old: missing"},
			{name: "post", method: "POST", path: "entries", code: 405, msg: "method POST not allowed; allowed: GET, HEAD"},
			{name: "unknown", path: "proof/everything", code: 404, msg: "no endpoint /api/v1/ledger/proof/everything"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				method := ledgerMethod(tc.method)
				code, ct, b := ls.get(t, method, ledgerhttp.PathPrefix+tc.path)
				var e struct{ Error string }
				json.Unmarshal(b, &e)
				if code != tc.code || ct != "application/json" || e.Error != tc.msg {
					t.Errorf("%s %s: got %d %s %s, want %d %q", method, tc.path, code, ct, b, tc.code, tc.msg)
				}
			})
		}
	})

	t.Run("client", func(t *testing.T) {
		c := ledgerhttp.NewClient(ls.srv.URL, nil)
		key, err := c.Key(ctx)
		if err != nil || key != ls.lg.VerifierKey() {
			t.Fatalf("Key: got %q, %v", key, err)
		}
		cp, signed, err := c.VerifiedCheckpoint(ctx, key)
		if err != nil || cp.Size != size {
			t.Fatalf("VerifiedCheckpoint: got %v, %v", cp, err)
		}
		es, err := c.Entries(ctx, 3, 2345)
		if err != nil || len(es) != 2342 || es[0].Index != 3 || es[len(es)-1].Index != 2344 {
			t.Fatalf("Entries(3, 2345): got %d entries, %v", len(es), err)
		}
		if got, want := es[3].Record.Entry, ledgertest.Entry(6); got != want {
			t.Errorf("entry 6's record: got %+v, want %+v", got, want)
		}
		p, err := c.InclusionProof(ctx, 17, 2000)
		h := ledger.LeafHash(ls.leaves[17])
		if err != nil || proof.VerifyInclusion(rfc6962.DefaultHasher, 17, 2000, h[:], p, ls.rootAt(2000)) != nil {
			t.Errorf("InclusionProof(17, 2000): %v", err)
		}
		p, err = c.ConsistencyProof(ctx, 1000, 2500)
		if err != nil || proof.VerifyConsistency(rfc6962.DefaultHasher, 1000, 2500, p, ls.rootAt(1000), cp.Root[:]) != nil {
			t.Errorf("ConsistencyProof(1000, 2500): %v", err)
		}
		in, err := c.ProveInclusion(ctx, cp, 42, 1000)
		if err != nil || len(in.Consistency) == 0 {
			t.Errorf("ProveInclusion(42, 1000): %v", err)
		}

		// ledger.Verify over the client and over a view.
		v, err := c.View(signed)
		if err != nil {
			t.Fatal(err)
		}
		for name, src := range map[string]ledger.Source{"client": c, "view": v} {
			rep, err := ledger.Verify(ctx, src, ledger.VerifyOptions{VerifierKey: key, PageSize: 700})
			if err != nil || rep.Size != size || rep.Checkpoints != 1 || string(rep.Root[:]) != string(cp.Root[:]) {
				t.Errorf("Verify over the %s: got %+v, %v", name, rep, err)
			}
		}
		rep, err := c.Audit(ctx, ledgerhttp.AuditOptions{VerifierKey: key, PageSize: 300})
		if err != nil || rep.Size != size || rep.First.Root != cp.Root || rep.Last.Size != size {
			t.Errorf("Audit: got %+v, %v", rep, err)
		}

		// Errors name the URL and the status.
		_, err = c.Entries(ctx, 0, 9999)
		var se *ledgerhttp.StatusError
		want := "GET " + ls.srv.URL + "/api/v1/ledger/entries?end=9999&start=0: 400 Bad Request: end: must be <= the tree size (2500)"
		if !errors.As(err, &se) || se.StatusCode != 400 || err.Error() != want {
			t.Errorf("Entries(0, 9999): got %v, want %s", err, want)
		}
	})
}

// TestLedgerAPIGrowing audits a log that grows during the audit: the
// checkpoint at the end is proved consistent with the one at the start.
func TestLedgerAPIGrowing(t *testing.T) {
	var grow sync.Once
	ls := newLedgerServerWrapped(t, 300, 100, func(ls *ledgerServer, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == ledgerhttp.PathEntries {
				grow.Do(func() {
					if err := ls.append(r.Context(), ledgertest.Entries(300, 123)); err != nil {
						t.Error(err)
					}
				})
			}
			h.ServeHTTP(w, r)
		})
	})
	c := ledgerhttp.NewClient(ls.srv.URL, nil)
	rep, err := c.Audit(t.Context(), ledgerhttp.AuditOptions{VerifierKey: ls.lg.VerifierKey()})
	if err != nil || rep.First.Size != 300 || rep.Last.Size != 423 || rep.Size != 300 {
		t.Errorf("Audit of a growing log: got first %d, last %d, size %d, %v; want 300, 423, 300", rep.First.Size, rep.Last.Size, rep.Size, err)
	}
}

// TestAuditLocate serves tampered ledgers: Audit names the first entry
// that is not in the checkpointed tree, wherever it is in the pages.
func TestAuditLocate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sql   []string
		index uint64
		msg   string // its start
	}{
		{name: "neighbours swapped", index: 10, sql: swapSQL(10, 11), msg: "entries 10 and 11 out of order"},
		{name: "swapped across a page", index: 127, sql: swapSQL(127, 128), msg: "entries 127 and 128 out of order"},
		{name: "swapped far apart", index: 1, sql: swapSQL(1, 699), msg: "entries 1 and 699 out of order"},
		{name: "swapped, second of a pair", index: 301, sql: swapSQL(301, 500), msg: "entries 301 and 500 out of order"},
		{name: "copied late", index: 650, sql: copySQL(20, 650), msg: "entries 650 and 651: their pair is not in the checkpointed tree of size 700"},
		{name: "last", index: 698, sql: copySQL(0, 699), msg: "entries 698 and 699: their pair is not in the checkpointed tree of size 700"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := newLedgerServer(t, 700, 100)
			db, err := sql.Open("sqlite", "file:"+filepath.Join(ls.dir, ledger.DBFile))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, s := range tc.sql {
				if _, err := db.ExecContext(t.Context(), s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			c := ledgerhttp.NewClient(ls.srv.URL, nil)
			_, err = c.Audit(t.Context(), ledgerhttp.AuditOptions{VerifierKey: ls.lg.VerifierKey(), PageSize: 64})
			var te *ledger.TamperError
			if !errors.As(err, &te) || te.Index != tc.index || !strings.HasPrefix(te.Msg, tc.msg) {
				t.Errorf("Audit: got %v, want index %d, %s", err, tc.index, tc.msg)
			}
		})
	}
}

// copySQL makes entry to a copy of entry from, leaf hash and all.
func copySQL(from, to int) []string {
	return []string{fmt.Sprintf("UPDATE entries SET data = (SELECT data FROM entries WHERE idx = %[1]d), leaf_hash = (SELECT leaf_hash FROM entries WHERE idx = %[1]d) WHERE idx = %[2]d", from, to)}
}

// swapSQL exchanges the rows of entries a and b.
func swapSQL(a, b int) []string {
	return []string{
		fmt.Sprintf("UPDATE entries SET idx = -1 WHERE idx = %d", a),
		fmt.Sprintf("UPDATE entries SET idx = %d WHERE idx = %d", a, b),
		fmt.Sprintf("UPDATE entries SET idx = %d WHERE idx = -1", b),
	}
}

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// ledgerMethod is s, or GET if s is empty.
func ledgerMethod(s string) string {
	if s == "" {
		return "GET"
	}
	return s
}

// ---- parameter parsers ----

// query makes a get func from "k=v&k=v".
func ledgerQuery(s string) func(string) string {
	v, _ := url.ParseQuery(s)
	return v.Get
}

var entriesQueryTests = []struct {
	name  string
	query string
	size  uint64
	want  entriesQuery
	err   string
}{
	{name: "all", query: "", size: 10, want: entriesQuery{0, 10}},
	{name: "empty log", query: "", size: 0, want: entriesQuery{0, 0}},
	{name: "start", query: "start=3", size: 10, want: entriesQuery{3, 10}},
	{name: "start at the end", query: "start=10", size: 10, want: entriesQuery{10, 10}},
	{name: "range", query: "start=3&end=5", size: 10, want: entriesQuery{3, 5}},
	{name: "empty range", query: "start=5&end=5", size: 10, want: entriesQuery{5, 5}},
	{name: "leading zeros", query: "start=003&end=05", size: 10, want: entriesQuery{3, 5}},
	{name: "cursor", query: "cursor=" + entriesCursor(7, 9) + "&start=1", size: 10, want: entriesQuery{7, 9}},
	{name: "start beyond", query: "start=11", size: 10, err: "start: must be <= the tree size (10)"},
	{name: "end beyond", query: "end=11", size: 10, err: "end: must be <= the tree size (10)"},
	{name: "start after end", query: "start=6&end=5", size: 10, err: "start: must be <= end (5)"},
	{name: "negative", query: "start=-1", size: 10, err: `start: want a whole number, got "-1"`},
	{name: "plus", query: "end=%2B1", size: 10, err: `end: want a whole number, got "+1"`},
	{name: "hex", query: "end=0x1", size: 10, err: `end: want a whole number, got "0x1"`},
	{name: "space", query: "start=%201", size: 10, err: `start: want a whole number, got " 1"`},
	{name: "over int64", query: "start=9223372036854775808", size: 10, err: "start: must be at most 9223372036854775807"},
	{name: "cursor beyond", query: "cursor=" + entriesCursor(7, 11), size: 10, err: "cursor: beyond the tree size (10)"},
	{name: "cursor garbage", query: "cursor=%25%25", size: 10, err: "cursor: malformed; pass the 'next' of the previous page"},
}

func TestParseEntriesQuery(t *testing.T) {
	for _, tc := range entriesQueryTests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEntriesQuery(ledgerQuery(tc.query), tc.size)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("parseEntriesQuery(%q, %d): got %v, %v; want error %q", tc.query, tc.size, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseEntriesQuery(%q, %d): got %v, %v; want %v", tc.query, tc.size, got, err, tc.want)
			}
		})
	}
}

// paramNamed reports whether err names one of the parameters.
func paramNamed(err error, names ...string) bool {
	for _, n := range names {
		if strings.HasPrefix(err.Error(), n+": ") {
			return true
		}
	}
	return false
}

func FuzzParseEntriesQuery(f *testing.F) {
	for _, tc := range entriesQueryTests {
		v, _ := url.ParseQuery(tc.query)
		f.Add(v.Get("start"), v.Get("end"), v.Get("cursor"), tc.size)
	}
	f.Fuzz(func(t *testing.T, start, end, cursor string, size uint64) {
		get := func(k string) string { return map[string]string{"start": start, "end": end, "cursor": cursor}[k] }
		q, err := parseEntriesQuery(get, size)
		if err != nil {
			if !paramNamed(err, "start", "end", "cursor") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if q.start > q.end || q.end > size {
			t.Fatalf("got %v for size %d", q, size)
		}
		if cursor == "" && start != "" && strconv.FormatUint(q.start, 10) != strings.TrimLeft(start, "0") && q.start != 0 {
			t.Fatalf("start %q parsed as %d", start, q.start)
		}
		// Round trip: the cursor of a page continues the same range.
		if q.start < q.end {
			again, err := parseEntriesQuery(ledgerQuery("cursor="+entriesCursor(q.start, q.end)), size)
			if err != nil || again != q {
				t.Fatalf("cursor of %v: got %v, %v", q, again, err)
			}
		}
	})
}

var entriesCursorTests = []struct {
	name       string
	cursor     string
	start, end uint64
	ok         bool
}{
	{name: "round", cursor: entriesCursor(1000, 2500), start: 1000, end: 2500, ok: true},
	{name: "largest", cursor: entriesCursor(1, maxLedgerIndex), start: 1, end: maxLedgerIndex, ok: true},
	{name: "empty range", cursor: encodeCursor(cursorLedgerEntries, "5-5")},
	{name: "backwards", cursor: encodeCursor(cursorLedgerEntries, "6-5")},
	{name: "leading zero", cursor: encodeCursor(cursorLedgerEntries, "05-6")},
	{name: "no dash", cursor: encodeCursor(cursorLedgerEntries, "5")},
	{name: "two dashes", cursor: encodeCursor(cursorLedgerEntries, "1-2-3")},
	{name: "negative", cursor: encodeCursor(cursorLedgerEntries, "-1-3")},
	{name: "other list", cursor: encodeCursor(cursorTokens, "1-3")},
	{name: "not base64", cursor: "!!"},
}

func TestParseEntriesCursor(t *testing.T) {
	for _, tc := range entriesCursorTests {
		start, end, err := parseEntriesCursor(tc.cursor)
		if tc.ok != (err == nil) || tc.ok && (start != tc.start || end != tc.end) {
			t.Errorf("%s: parseEntriesCursor(%q) = %d, %d, %v; want %d, %d, ok %v", tc.name, tc.cursor, start, end, err, tc.start, tc.end, tc.ok)
		}
		if err != nil && !paramNamed(err, "cursor") {
			t.Errorf("%s: error %q does not name the parameter", tc.name, err)
		}
	}
}

func FuzzParseEntriesCursor(f *testing.F) {
	for _, tc := range entriesCursorTests {
		f.Add(tc.cursor)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := parseEntriesCursor(s)
		if err != nil {
			if !paramNamed(err, "cursor") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if start >= end || end > maxLedgerIndex {
			t.Fatalf("parseEntriesCursor(%q) = %d, %d", s, start, end)
		}
		// A cursor has one spelling.
		if c := entriesCursor(start, end); c != s {
			t.Fatalf("parseEntriesCursor(%q) = %d, %d, whose cursor is %q", s, start, end, c)
		}
	})
}

var proofQueryTests = []struct {
	name     string
	query    string // index/old first, size/new second: "a=1&b=2"
	treeSize uint64
	a, b     uint64
	errIncl  string
	errCons  string
}{
	{name: "first of one", query: "a=0&b=1", treeSize: 1, a: 0, b: 1, errCons: ""},
	{name: "last", query: "a=11&b=12", treeSize: 12, a: 11, b: 12},
	{name: "same", query: "a=12&b=12", treeSize: 12, errIncl: "index: must be < size (12)", a: 12, b: 12},
	{name: "zero", query: "a=0&b=0", treeSize: 12, errIncl: "index: must be < size (0)", a: 0, b: 0},
	{name: "backwards", query: "a=5&b=3", treeSize: 12, errIncl: "index: must be < size (3)", errCons: "old: must be <= new (3)"},
	{name: "beyond", query: "a=1&b=13", treeSize: 12, errIncl: "size: must be <= the tree size (12)", errCons: "new: must be <= the tree size (12)"},
	{name: "first missing", query: "b=3", treeSize: 12, errIncl: "index: missing", errCons: "old: missing"},
	{name: "second missing", query: "a=1", treeSize: 12, errIncl: "size: missing", errCons: "new: missing"},
	{name: "not a number", query: "a=x&b=3", treeSize: 12, errIncl: `index: want a whole number, got "x"`, errCons: `old: want a whole number, got "x"`},
	{name: "fraction", query: "a=1&b=3.0", treeSize: 12, errIncl: `size: want a whole number, got "3.0"`, errCons: `new: want a whole number, got "3.0"`},
}

// proofGet maps "a" and "b" of a proofQueryTests query to the names of an
// endpoint's parameters.
func proofGet(q, a, b string) func(string) string {
	get := ledgerQuery(q)
	return func(k string) string {
		switch k {
		case a:
			return get("a")
		case b:
			return get("b")
		}
		return ""
	}
}

func TestParseProofQueries(t *testing.T) {
	for _, tc := range proofQueryTests {
		t.Run(tc.name, func(t *testing.T) {
			iq, err := parseInclusionQuery(proofGet(tc.query, "index", "size"), tc.treeSize)
			if tc.errIncl != "" {
				if err == nil || err.Error() != tc.errIncl {
					t.Errorf("parseInclusionQuery(%q): got %v, %v; want error %q", tc.query, iq, err, tc.errIncl)
				}
			} else if err != nil || iq != (inclusionQuery{tc.a, tc.b}) {
				t.Errorf("parseInclusionQuery(%q): got %v, %v; want %d, %d", tc.query, iq, err, tc.a, tc.b)
			}
			cq, err := parseConsistencyQuery(proofGet(tc.query, "old", "new"), tc.treeSize)
			if tc.errCons != "" {
				if err == nil || err.Error() != tc.errCons {
					t.Errorf("parseConsistencyQuery(%q): got %v, %v; want error %q", tc.query, cq, err, tc.errCons)
				}
			} else if err != nil || cq != (consistencyQuery{tc.a, tc.b}) {
				t.Errorf("parseConsistencyQuery(%q): got %v, %v; want %d, %d", tc.query, cq, err, tc.a, tc.b)
			}
		})
	}
}

func FuzzParseInclusionQuery(f *testing.F) {
	for _, tc := range proofQueryTests {
		g := ledgerQuery(tc.query)
		f.Add(g("a"), g("b"), tc.treeSize)
	}
	f.Fuzz(func(t *testing.T, index, size string, treeSize uint64) {
		get := func(k string) string { return map[string]string{"index": index, "size": size}[k] }
		q, err := parseInclusionQuery(get, treeSize)
		if err != nil {
			if !paramNamed(err, "index", "size") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if q.index >= q.size || q.size > treeSize {
			t.Fatalf("got %v for tree size %d", q, treeSize)
		}
		// Round trip through the canonical spelling.
		again, err := parseInclusionQuery(proofGet(fmt.Sprintf("a=%d&b=%d", q.index, q.size), "index", "size"), treeSize)
		if err != nil || again != q {
			t.Fatalf("round trip of %v: got %v, %v", q, again, err)
		}
	})
}

func FuzzParseConsistencyQuery(f *testing.F) {
	for _, tc := range proofQueryTests {
		g := ledgerQuery(tc.query)
		f.Add(g("a"), g("b"), tc.treeSize)
	}
	f.Fuzz(func(t *testing.T, old, nw string, treeSize uint64) {
		get := func(k string) string { return map[string]string{"old": old, "new": nw}[k] }
		q, err := parseConsistencyQuery(get, treeSize)
		if err != nil {
			if !paramNamed(err, "old", "new") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if q.old > q.new || q.new > treeSize {
			t.Fatalf("got %v for tree size %d", q, treeSize)
		}
		again, err := parseConsistencyQuery(proofGet(fmt.Sprintf("a=%d&b=%d", q.old, q.new), "old", "new"), treeSize)
		if err != nil || again != q {
			t.Fatalf("round trip of %v: got %v, %v", q, again, err)
		}
	})
}
