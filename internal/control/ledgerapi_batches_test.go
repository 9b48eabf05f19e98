package control

import (
	"bytes"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/identity/identitytest"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgerhttp"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// batchLedger is a real SQLite ledger whose batches sidecars of a mesh CA
// signed, served by ledgerHandler with that CA.
type batchLedger struct {
	dir    string
	lg     *ledger.Log
	ca     *identity.CA
	svids  []*x509svid.SVID
	pool   *x509.CertPool // the CA's
	srv    *httptest.Server
	leaves [][]byte
	signed []ledger.StoredBatch // every signed batch, in order
}

func newBatchLedger(t *testing.T) *batchLedger {
	t.Helper()
	dir := t.TempDir()
	ca := identitytest.NewCA(t, identitytest.TrustDomain)
	bl := &batchLedger{
		dir:   dir,
		lg:    ledgertest.Open(t, ledger.Config{Dir: dir, Origin: ledgertest.Origin}),
		ca:    ca,
		svids: []*x509svid.SVID{identitytest.NewSVID(t, ca, "frontend", time.Hour), identitytest.NewSVID(t, ca, "orders", time.Hour)},
		pool:  x509.NewCertPool(),
	}
	bl.pool.AddCert(ca.Cert)
	mux := http.NewServeMux()
	mux.Handle(ledgerhttp.PathPrefix, ledgerHandler(bl.lg, ca.Cert, slog.New(slog.NewTextHandler(t.Output(), nil))))
	bl.srv = httptest.NewServer(mux)
	t.Cleanup(bl.srv.Close)
	return bl
}

// append appends, in one transaction, a batch of each size in sizes; a
// negative size is an unsigned batch of -size entries, the others are
// signed, by the two sidecars in turn.
func (bl *batchLedger) append(t *testing.T, sizes ...int) {
	t.Helper()
	bs := make([]ledger.Batch, len(sizes))
	at := uint64(len(bl.leaves))
	var signed []ledger.StoredBatch
	for i, n := range sizes {
		es := ledgertest.Entries(len(bl.leaves), max(n, -n))
		leaves := ledgertest.Leaves(t, es)
		bl.leaves = append(bl.leaves, leaves...)
		bs[i] = ledger.Batch{Entries: es}
		if n > 0 {
			k := len(bl.signed) + len(signed)
			svid := bl.svids[k%2]
			sig, err := ledger.SignBatch(svid.PrivateKey, [][]byte{svid.Certificates[0].Raw}, fmt.Sprintf("sidecar-%d", k%2),
				uint64(k/2+1), time.Now(), leaves)
			if err != nil {
				t.Fatal(err)
			}
			bs[i].Signature = sig
			signed = append(signed, ledger.StoredBatch{Start: at, End: at + uint64(n), Signature: *sig})
		}
		at += uint64(max(n, -n))
	}
	if _, err := bl.lg.Append(t.Context(), bs...); err != nil {
		t.Fatal(err)
	}
	bl.signed = append(bl.signed, signed...)
}

// checkpoint publishes a checkpoint and returns it.
func (bl *batchLedger) checkpoint(t *testing.T) []byte {
	t.Helper()
	signed, err := bl.lg.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// sizes returns n batch sizes: 1, 2, 3, 1, 2, 3, ...
func sizes(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1 + i%3
	}
	return s
}

// sameBatch reports whether a and b are the same stored batch signature.
func sameBatch(a, b ledger.StoredBatch) bool {
	x, y := &a.Signature, &b.Signature
	return a.Start == b.Start && a.End == b.End && x.InstanceID == y.InstanceID && x.BatchSeq == y.BatchSeq &&
		x.SignedAt.UnixNano() == y.SignedAt.UnixNano() && x.Count == y.Count && x.Root == y.Root &&
		slices.EqualFunc(x.Chain, y.Chain, bytes.Equal) && bytes.Equal(x.Signature, y.Signature)
}

func sameBatches(t *testing.T, what string, got, want []ledger.StoredBatch) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d batches, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !sameBatch(got[i], want[i]) {
			t.Fatalf("%s: batch %d: got %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// get fetches path and returns status, content type and body.
func (bl *batchLedger) get(t *testing.T, method, path string) (int, string, []byte) {
	t.Helper()
	ls := &ledgerServer{srv: bl.srv}
	return ls.get(t, method, path)
}

func TestLedgerAPIBatches(t *testing.T) {
	t.Parallel()
	bl := newBatchLedger(t)
	// 1,500 signed batches, with unsigned ones at the start, between and
	// at the end.
	bl.append(t, -3)
	bl.append(t, sizes(700)...)
	bl.append(t, -5, 4, -1)
	bl.append(t, sizes(799)...)
	bl.append(t, -2)
	signedCP := bl.checkpoint(t)
	if len(bl.signed) != 1500 {
		t.Fatalf("%d signed batches", len(bl.signed))
	}
	ctx := t.Context()

	// page fetches GET batches?query and decodes its items.
	page := func(t *testing.T, query string) ([]ledger.StoredBatch, string) {
		t.Helper()
		code, ct, b := bl.get(t, "GET", ledgerhttp.PathBatches+"?"+query)
		if code != 200 || ct != "application/json" {
			t.Fatalf("GET batches?%s: %d %s %s", query, code, ct, b)
		}
		var p ledgerhttp.BatchesPage
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		out := make([]ledger.StoredBatch, len(p.Items))
		for i, it := range p.Items {
			var err error
			if out[i], err = it.Stored(); err != nil {
				t.Fatal(err)
			}
		}
		return out, p.Next
	}

	t.Run("pages", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			query string
			pages []int
			first int // index in bl.signed
		}{
			{name: "all", query: "", pages: []int{1000, 500}, first: 0},
			{name: "from 0", query: "start=0", pages: []int{1000, 500}, first: 0},
			{name: "from a batch's start", query: "start=" + strconv.FormatUint(bl.signed[1234].Start, 10), pages: []int{266}, first: 1234},
			{name: "exactly one page", query: "start=" + strconv.FormatUint(bl.signed[500].Start, 10), pages: []int{1000}, first: 500},
			{name: "from inside a batch", query: "start=" + strconv.FormatUint(bl.signed[499].Start+1, 10), pages: []int{1000}, first: 500},
			{name: "from the last", query: "start=" + strconv.FormatUint(bl.signed[1499].Start, 10), pages: []int{1}, first: 1499},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q, next := tc.query, tc.first
				for i, want := range tc.pages {
					got, cursor := page(t, q)
					sameBatches(t, fmt.Sprintf("page %d", i), got, bl.signed[next:next+want])
					next += want
					if last := i == len(tc.pages)-1; last != (cursor == "") {
						t.Fatalf("page %d: next %q", i, cursor)
					}
					q = "cursor=" + url.QueryEscape(cursor)
				}
			})
		}
		for _, q := range []string{"start=" + strconv.Itoa(len(bl.leaves)), "start=" + strconv.FormatUint(bl.signed[1499].Start+1, 10), "start=9223372036854775807"} {
			if got, next := page(t, q); len(got) != 0 || next != "" {
				t.Errorf("GET batches?%s: got %d, next %q; want none", q, len(got), next)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		code, _, b := bl.get(t, "GET", ledgerhttp.PathBatches+"?start=3")
		var raw struct {
			Items []map[string]json.RawMessage `json:"items"`
			Next  *string                      `json:"next"`
		}
		if err := json.Unmarshal(b, &raw); code != 200 || err != nil || len(raw.Items) != ledgerhttp.MaxPage || raw.Next == nil || *raw.Next == "" {
			t.Fatalf("GET batches: %d, %v, %d items", code, err, len(raw.Items))
		}
		it, want := raw.Items[0], bl.signed[0]
		var keys []string
		for k := range it {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if wantKeys := []string{"batch_seq", "chain", "end", "instance_id", "root", "signature", "signed_at", "start"}; !slices.Equal(keys, wantKeys) {
			t.Errorf("keys: got %v, want %v", keys, wantKeys)
		}
		std := base64.StdEncoding.EncodeToString
		for k, v := range map[string]string{
			"start":       "3",
			"end":         "4",
			"instance_id": `"sidecar-0"`,
			"batch_seq":   "1",
			"signed_at":   `"` + want.Signature.SignedAt.UTC().Format(time.RFC3339Nano) + `"`,
			"root":        `"` + std(want.Signature.Root[:]) + `"`,
			"chain":       `["` + std(bl.svids[0].Certificates[0].Raw) + `"]`,
			"signature":   `"` + std(want.Signature.Signature) + `"`,
		} {
			if string(it[k]) != v {
				t.Errorf("%s: got %s, want %s", k, it[k], v)
			}
		}
	})

	t.Run("signatures verify", func(t *testing.T) {
		for q := ""; ; {
			got, next := page(t, q)
			for _, b := range got {
				if _, err := ledger.VerifyBatchSignature(&b.Signature, bl.leaves[b.Start:b.End], bl.pool); err != nil {
					t.Fatalf("batch [%d,%d) as served: %v", b.Start, b.End, err)
				}
			}
			if next == "" {
				break
			}
			q = "cursor=" + url.QueryEscape(next)
		}
	})

	t.Run("ca", func(t *testing.T) {
		code, ct, b := bl.get(t, "GET", ledgerhttp.PathCA)
		blk, rest := pem.Decode(b)
		if code != 200 || ct != "text/plain; charset=utf-8" || blk == nil || blk.Type != "CERTIFICATE" ||
			!bytes.Equal(blk.Bytes, bl.ca.Cert.Raw) || len(rest) != 0 {
			t.Errorf("GET ca: got %d %q %q", code, ct, b)
		}
		if code, _, _ := bl.get(t, "HEAD", ledgerhttp.PathCA); code != 200 {
			t.Errorf("HEAD ca: got %d", code)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path string
			code               int
			msg                string
		}{
			{name: "start negative", path: "batches?start=-1", code: 400, msg: `start: want a whole number, got "-1"`},
			{name: "start not a number", path: "batches?start=x", code: 400, msg: `start: want a whole number, got "x"`},
			{name: "start over int64", path: "batches?start=9223372036854775808", code: 400, msg: "start: must be at most 9223372036854775807"},
			{name: "bad cursor", path: "batches?cursor=xyz", code: 400, msg: "cursor: malformed; pass the 'next' of the previous page"},
			{name: "cursor of entries", path: "batches?cursor=" + entriesCursor(1, 2), code: 400, msg: "cursor: not a cursor of this list; pass the 'next' of the previous page"},
			{name: "post batches", method: "POST", path: "batches", code: 405, msg: "method POST not allowed; allowed: GET, HEAD"},
			{name: "put ca", method: "PUT", path: "ca", code: 405, msg: "method PUT not allowed; allowed: GET, HEAD"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				method := ledgerMethod(tc.method)
				code, ct, b := bl.get(t, method, ledgerhttp.PathPrefix+tc.path)
				var e struct{ Error string }
				json.Unmarshal(b, &e)
				if code != tc.code || ct != "application/json" || e.Error != tc.msg {
					t.Errorf("%s %s: got %d %s %s, want %d %q", method, tc.path, code, ct, b, tc.code, tc.msg)
				}
			})
		}
	})

	t.Run("client", func(t *testing.T) {
		c := ledgerhttp.NewClient(bl.srv.URL, nil)
		all, err := c.Batches(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		sameBatches(t, "Batches(0)", all, bl.signed)
		from, err := c.Batches(ctx, bl.signed[1200].Start)
		if err != nil {
			t.Fatal(err)
		}
		sameBatches(t, "Batches(1200th)", from, bl.signed[1200:])
		if bs, err := c.ReadBatches(ctx, 0, 10); err != nil || len(bs) != 10 {
			t.Errorf("ReadBatches(0, 10): got %d, %v", len(bs), err)
		}
		cert, err := c.CA(ctx)
		if err != nil || !cert.Equal(bl.ca.Cert) {
			t.Errorf("CA: got %v, %v", cert, err)
		}

		// ledger.Verify over the client and a view checks every batch
		// signature, chains and all.
		v, err := c.View(signedCP)
		if err != nil {
			t.Fatal(err)
		}
		vr, err := ledger.Verify(ctx, v, ledger.VerifyOptions{VerifierKey: bl.lg.VerifierKey(), Roots: bl.pool, PageSize: 700})
		if err != nil || vr.Size != uint64(len(bl.leaves)) || vr.Batches != len(bl.signed) || !vr.ChainsChecked {
			t.Errorf("Verify over the view: got %+v, %v", vr, err)
		}
		rep, err := c.Audit(ctx, ledgerhttp.AuditOptions{VerifierKey: bl.lg.VerifierKey(), Roots: bl.pool})
		if err != nil || rep.Batches != len(bl.signed) || !rep.ChainsChecked {
			t.Errorf("Audit: got %+v, %v", rep.Report, err)
		}
		// Over the client itself, without a pool: against the
		// certificates only.
		vr, err = ledger.Verify(ctx, c, ledger.VerifyOptions{VerifierKey: bl.lg.VerifierKey(), PageSize: 300})
		if err != nil || vr.Batches != len(bl.signed) || vr.ChainsChecked {
			t.Errorf("Verify over the client without roots: got %+v, %v", vr, err)
		}
		// Another CA: no signer chains to it.
		other := x509.NewCertPool()
		other.AddCert(identitytest.NewCA(t, identitytest.TrustDomain).Cert)
		_, err = c.Audit(ctx, ledgerhttp.AuditOptions{VerifierKey: bl.lg.VerifierKey(), Roots: other})
		var te *ledger.TamperError
		if !errors.As(err, &te) || te.Index != 3 || !strings.HasPrefix(te.Msg, "batch [3,4): signature does not verify: signer certificate at ") ||
			!strings.Contains(te.Msg, "certificate signed by unknown authority") {
			t.Errorf("Audit against another CA: got %v", err)
		}
	})
}

// TestLedgerAPIBatchesGrowing: a View, and so Audit, checks the batches of
// its checkpoint, not those appended after it.
func TestLedgerAPIBatchesGrowing(t *testing.T) {
	bl := newBatchLedger(t)
	ctx := t.Context()
	bl.append(t, sizes(10)...)
	signed := bl.checkpoint(t)
	bl.append(t, sizes(5)...)
	c := ledgerhttp.NewClient(bl.srv.URL, nil)
	opts := ledgerhttp.AuditOptions{VerifierKey: bl.lg.VerifierKey(), Roots: bl.pool}
	v, err := c.View(signed)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ledger.Verify(ctx, v, ledger.VerifyOptions{VerifierKey: opts.VerifierKey, Roots: opts.Roots})
	if err != nil || rep.Batches != 10 || rep.Size != 19 {
		t.Errorf("Verify over the view: got %+v, %v; want 10 batches of 19 entries", rep, err)
	}
	ar, err := c.Audit(ctx, opts)
	if err != nil || ar.Batches != 10 {
		t.Errorf("Audit before the next checkpoint: got %+v, %v; want 10 batches", ar.Report, err)
	}
	bl.checkpoint(t)
	ar, err = c.Audit(ctx, opts)
	if err != nil || ar.Batches != 15 || ar.Size != 28 {
		t.Errorf("Audit after the next checkpoint: got %+v, %v; want 15 batches of 28 entries", ar.Report, err)
	}
}

// TestLedgerAPIBatchesTampered changes the served store: Audit names the
// batch, or the entry that was rewritten under it.
func TestLedgerAPIBatchesTampered(t *testing.T) {
	// flip flips the low bit of byte off of column of the batch [25,27).
	flip := func(column string, off int) func(t *testing.T, db *sql.DB) {
		return func(t *testing.T, db *sql.DB) {
			t.Helper()
			var b []byte
			if err := db.QueryRowContext(t.Context(), "SELECT "+column+" FROM batches WHERE start_idx = 25").Scan(&b); err != nil {
				t.Fatal(err)
			}
			b[off] ^= 1
			if _, err := db.ExecContext(t.Context(), "UPDATE batches SET "+column+" = $1 WHERE start_idx = 25", b); err != nil {
				t.Fatal(err)
			}
		}
	}
	exec := func(stmt string) func(t *testing.T, db *sql.DB) {
		return func(t *testing.T, db *sql.DB) {
			t.Helper()
			if _, err := db.ExecContext(t.Context(), stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB) // of the batch [25,27)
		index  uint64
		msg    string // its start
	}{
		{name: "signature byte", tamper: flip("signature", 20),
			index: 25, msg: "batch [25,27): signature does not verify: ECDSA signature is invalid"},
		{name: "root byte", tamper: flip("root", 3),
			index: 25, msg: "batch [25,27): signature does not cover its entries"},
		{name: "certificate byte", tamper: flip("chain", 200),
			index: 25, msg: "batch [25,27): signature does not verify: "},
		{name: "instance", tamper: exec("UPDATE batches SET instance_id = 'intruder' WHERE start_idx = 25"),
			index: 25, msg: "batch [25,27): signature does not verify: ECDSA signature is invalid"},
		{name: "batch number", tamper: exec("UPDATE batches SET batch_seq = batch_seq + 1 WHERE start_idx = 25"),
			index: 25, msg: "batch [25,27): signature does not verify: ECDSA signature is invalid"},
		{name: "signing time", tamper: exec("UPDATE batches SET signed_at = signed_at + 1 WHERE start_idx = 25"),
			index: 25, msg: "batch [25,27): signature does not verify: ECDSA signature is invalid"},
		{name: "shorter", tamper: exec("UPDATE batches SET end_idx = end_idx - 1 WHERE start_idx = 25"),
			index: 25, msg: "batch [25,26): signature does not cover its entries"},
		{name: "moved", tamper: exec("UPDATE batches SET start_idx = 26, end_idx = 28 WHERE start_idx = 25"),
			index: 26, msg: "batch [26,28): signature does not cover its entries"},
		{name: "entry rewritten under it", tamper: exec("UPDATE entries SET data = (SELECT data FROM entries WHERE idx = 40), leaf_hash = (SELECT leaf_hash FROM entries WHERE idx = 40) WHERE idx = 25"),
			index: 24, msg: "entries 24 and 25: their pair is not in the checkpointed tree of size 60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bl := newBatchLedger(t)
			bl.append(t, sizes(30)...)
			bl.checkpoint(t)
			if b := bl.signed[13]; b.Start != 25 || b.End != 27 {
				t.Fatalf("batch 13 is [%d,%d)", b.Start, b.End)
			}
			c := ledgerhttp.NewClient(bl.srv.URL, nil)
			opts := ledgerhttp.AuditOptions{VerifierKey: bl.lg.VerifierKey(), Roots: bl.pool, PageSize: 16}
			if _, err := c.Audit(t.Context(), opts); err != nil {
				t.Fatalf("Audit before: %v", err)
			}
			db, err := sql.Open("sqlite", "file:"+filepath.Join(bl.dir, ledger.DBFile))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			tc.tamper(t, db)
			_, err = c.Audit(t.Context(), opts)
			var te *ledger.TamperError
			if !errors.As(err, &te) || te.Index != tc.index || !strings.HasPrefix(te.Msg, tc.msg) {
				t.Errorf("Audit: got %v, want index %d, %s", err, tc.index, tc.msg)
			}
		})
	}
}

// ---- parameter parsers ----

var batchesQueryTests = []struct {
	name  string
	query string
	want  batchesQuery
	err   string
}{
	{name: "all", query: "", want: batchesQuery{0}},
	{name: "start", query: "start=3", want: batchesQuery{3}},
	{name: "leading zeros", query: "start=003", want: batchesQuery{3}},
	{name: "largest", query: "start=9223372036854775807", want: batchesQuery{maxLedgerIndex}},
	{name: "cursor", query: "cursor=" + batchesCursor(7) + "&start=1", want: batchesQuery{7}},
	{name: "empty cursor", query: "cursor=&start=2", want: batchesQuery{2}},
	{name: "negative", query: "start=-1", err: `start: want a whole number, got "-1"`},
	{name: "plus", query: "start=%2B1", err: `start: want a whole number, got "+1"`},
	{name: "hex", query: "start=0x1", err: `start: want a whole number, got "0x1"`},
	{name: "over int64", query: "start=9223372036854775808", err: "start: must be at most 9223372036854775807"},
	{name: "cursor garbage", query: "cursor=%25%25", err: "cursor: malformed; pass the 'next' of the previous page"},
	{name: "entries cursor", query: "cursor=" + entriesCursor(1, 5), err: "cursor: not a cursor of this list; pass the 'next' of the previous page"},
	{name: "cursor leading zero", query: "cursor=" + encodeCursor(cursorLedgerBatches, "07"), err: "cursor: malformed; pass the 'next' of the previous page"},
}

func TestParseBatchesQuery(t *testing.T) {
	for _, tc := range batchesQueryTests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBatchesQuery(ledgerQuery(tc.query))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("parseBatchesQuery(%q): got %v, %v; want error %q", tc.query, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseBatchesQuery(%q): got %v, %v; want %v", tc.query, got, err, tc.want)
			}
		})
	}
}

func FuzzParseBatchesQuery(f *testing.F) {
	for _, tc := range batchesQueryTests {
		v, _ := url.ParseQuery(tc.query)
		f.Add(v.Get("start"), v.Get("cursor"))
	}
	f.Fuzz(func(t *testing.T, start, cursor string) {
		get := func(k string) string { return map[string]string{"start": start, "cursor": cursor}[k] }
		q, err := parseBatchesQuery(get)
		if err != nil {
			if !paramNamed(err, "start", "cursor") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if q.start > maxLedgerIndex {
			t.Fatalf("got %v", q)
		}
		if cursor == "" && start != "" && strings.TrimLeft(start, "0") != strings.TrimLeft(strconv.FormatUint(q.start, 10), "0") {
			t.Fatalf("start %q parsed as %d", start, q.start)
		}
		// Round trip: the cursor of a page continues from the same start.
		again, err := parseBatchesQuery(ledgerQuery("cursor=" + batchesCursor(q.start)))
		if err != nil || again != q {
			t.Fatalf("cursor of %v: got %v, %v", q, again, err)
		}
	})
}

var batchesCursorTests = []struct {
	name   string
	cursor string
	start  uint64
	ok     bool
}{
	{name: "round", cursor: batchesCursor(1000), start: 1000, ok: true},
	{name: "zero", cursor: batchesCursor(0), start: 0, ok: true},
	{name: "largest", cursor: batchesCursor(maxLedgerIndex), start: maxLedgerIndex, ok: true},
	{name: "beyond", cursor: encodeCursor(cursorLedgerBatches, "9223372036854775808")},
	{name: "leading zero", cursor: encodeCursor(cursorLedgerBatches, "05")},
	{name: "negative", cursor: encodeCursor(cursorLedgerBatches, "-1")},
	{name: "range", cursor: encodeCursor(cursorLedgerBatches, "1-3")},
	{name: "empty key", cursor: encodeCursor(cursorLedgerBatches, "")},
	{name: "entries list", cursor: entriesCursor(1, 3)},
	{name: "not base64", cursor: "!!"},
	{name: "too long", cursor: strings.Repeat("A", 600)},
	{name: "with a newline", cursor: batchesCursor(0) + "\r"},
	{name: "split by a newline", cursor: batchesCursor(123)[:3] + "\n" + batchesCursor(123)[3:]},
}

func TestParseBatchesCursor(t *testing.T) {
	for _, tc := range batchesCursorTests {
		start, err := parseBatchesCursor(tc.cursor)
		if tc.ok != (err == nil) || tc.ok && start != tc.start {
			t.Errorf("%s: parseBatchesCursor(%q) = %d, %v; want %d, ok %v", tc.name, tc.cursor, start, err, tc.start, tc.ok)
		}
		if err != nil && !paramNamed(err, "cursor") {
			t.Errorf("%s: error %q does not name the parameter", tc.name, err)
		}
	}
}

func FuzzParseBatchesCursor(f *testing.F) {
	for _, tc := range batchesCursorTests {
		f.Add(tc.cursor)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, err := parseBatchesCursor(s)
		if err != nil {
			if !paramNamed(err, "cursor") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if start > maxLedgerIndex {
			t.Fatalf("parseBatchesCursor(%q) = %d", s, start)
		}
		// A cursor has one spelling.
		if c := batchesCursor(start); c != s {
			t.Fatalf("parseBatchesCursor(%q) = %d, whose cursor is %q", s, start, c)
		}
	})
}
