package control

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgerhttp"
)

// ledgerHandler serves the ledger's read side, the /api/v1/ledger/
// endpoints of SPEC.md, at their full paths (mount it at
// ledgerhttp.PathPrefix, without stripping it):
//
//	GET checkpoint                    text/plain, the latest signed checkpoint; 404 before the first
//	GET key                           text/plain, the note verifier key and a newline
//	GET entries?start=&end=&cursor=   ledgerhttp.EntriesPage of [start, end), at most
//	                                  ledgerhttp.MaxPage per answer
//	GET proof/inclusion?index=&size=  ledgerhttp.InclusionProof
//	GET proof/consistency?old=&new=   ledgerhttp.ConsistencyProof
//	GET batches?start=&cursor=        ledgerhttp.BatchesPage: the batch signatures whose range
//	                                  starts at or after start (default 0), in order, at most
//	                                  ledgerhttp.MaxPage per answer
//	GET ca                            text/plain, the mesh CA certificate (PEM) batch signers
//	                                  chain to; 404 if ca is nil
//
// Sizes are checked against the stored tree size: entries start <= end <=
// size (end defaults to it), inclusion index < size <= tree size,
// consistency old <= new <= tree size; otherwise a 400 naming the
// parameter. Batches' start is not (a batch stored beyond the tree is
// served, for the auditor to see). It serves what the store holds, as it
// is: it verifies nothing, so that an auditor sees a tampered store as
// tampered. lg may be a read-only Log (a control plane that is not the
// writer). log nil discards.
func ledgerHandler(lg *ledger.Log, ca *x509.Certificate, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &ledgerAPI{lg: lg, ca: ca, log: log}
	mux := http.NewServeMux()
	for path, h := range map[string]handlerFunc{
		ledgerhttp.PathCheckpoint:  a.handleCheckpoint,
		ledgerhttp.PathKey:         a.handleKey,
		ledgerhttp.PathEntries:     a.handleEntries,
		ledgerhttp.PathInclusion:   a.handleInclusion,
		ledgerhttp.PathConsistency: a.handleConsistency,
		ledgerhttp.PathBatches:     a.handleBatches,
		ledgerhttp.PathCA:          a.handleCA,
	} {
		mux.Handle("GET "+path, a.serve(h))
		mux.Handle(path, a.serve(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", "GET, HEAD")
			return &httpError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed; allowed: GET, HEAD", r.Method)}
		}))
	}
	mux.Handle(ledgerhttp.PathPrefix, a.serve(func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no endpoint %s", r.URL.Path)}
	}))
	return mux
}

type ledgerAPI struct {
	lg  *ledger.Log
	ca  *x509.Certificate // nil: none to serve
	log *slog.Logger
}

// serve writes h's errors as Server.serve does, without HTML escaping.
func (a *ledgerAPI) serve(h handlerFunc) http.Handler { return serveErrors(a.log, writeLedgerJSON, h) }

// writeLedgerJSON is writeJSON without HTML escaping, so that an error
// reads "index: must be < size (12)" on the wire too.
func writeLedgerJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func writeText(w http.ResponseWriter, b []byte) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, err := w.Write(b)
	return err
}

func (a *ledgerAPI) handleCheckpoint(w http.ResponseWriter, r *http.Request) error {
	signed, err := a.lg.LatestCheckpoint(r.Context())
	if errors.Is(err, ledger.ErrNoCheckpoint) {
		return &httpError{status: http.StatusNotFound, msg: "no checkpoint yet"}
	}
	if err != nil {
		return err
	}
	return writeText(w, signed)
}

func (a *ledgerAPI) handleKey(w http.ResponseWriter, r *http.Request) error {
	k := a.lg.VerifierKey()
	if k == "" {
		return &httpError{status: http.StatusNotFound, msg: "this control plane has no ledger key"}
	}
	return writeText(w, []byte(k+"\n"))
}

func (a *ledgerAPI) handleEntries(w http.ResponseWriter, r *http.Request) error {
	size, _, err := a.lg.Head(r.Context())
	if err != nil {
		return err
	}
	q, err := parseEntriesQuery(r.URL.Query().Get, size)
	if err != nil {
		return badRequest("%s", err)
	}
	end := q.end
	if end-q.start > ledgerhttp.MaxPage {
		end = q.start + ledgerhttp.MaxPage
	}
	rows, err := a.lg.Entries(r.Context(), q.start, end)
	if err != nil {
		return err
	}
	out := ledgerhttp.EntriesPage{Items: make([]ledgerhttp.Entry, len(rows))}
	for i, e := range rows {
		out.Items[i] = ledgerhttp.NewEntry(e)
	}
	if end < q.end {
		out.Next = entriesCursor(end, q.end)
	}
	return writeLedgerJSON(w, http.StatusOK, out)
}

func (a *ledgerAPI) handleBatches(w http.ResponseWriter, r *http.Request) error {
	q, err := parseBatchesQuery(r.URL.Query().Get)
	if err != nil {
		return badRequest("%s", err)
	}
	// One more than a page, to know whether another follows.
	rows, err := a.lg.Batches(r.Context(), q.start, ledgerhttp.MaxPage+1)
	if err != nil {
		return err
	}
	out := ledgerhttp.BatchesPage{}
	if len(rows) > ledgerhttp.MaxPage {
		rows = rows[:ledgerhttp.MaxPage]
		// A row follows the last, so its start is below maxLedgerIndex.
		out.Next = batchesCursor(rows[len(rows)-1].Start + 1)
	}
	out.Items = make([]ledgerhttp.Batch, len(rows))
	for i, b := range rows {
		out.Items[i] = ledgerhttp.NewBatch(b)
	}
	return writeLedgerJSON(w, http.StatusOK, out)
}

func (a *ledgerAPI) handleCA(w http.ResponseWriter, r *http.Request) error {
	if a.ca == nil {
		return &httpError{status: http.StatusNotFound, msg: "this control plane has no mesh CA"}
	}
	return writeText(w, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ca.Raw}))
}

func (a *ledgerAPI) handleInclusion(w http.ResponseWriter, r *http.Request) error {
	size, _, err := a.lg.Head(r.Context())
	if err != nil {
		return err
	}
	q, err := parseInclusionQuery(r.URL.Query().Get, size)
	if err != nil {
		return badRequest("%s", err)
	}
	hashes, err := a.lg.InclusionProof(r.Context(), q.index, q.size)
	if err != nil {
		return err
	}
	return writeLedgerJSON(w, http.StatusOK, ledgerhttp.InclusionProof{Index: q.index, Size: q.size, Hashes: nonNil(hashes)})
}

func (a *ledgerAPI) handleConsistency(w http.ResponseWriter, r *http.Request) error {
	size, _, err := a.lg.Head(r.Context())
	if err != nil {
		return err
	}
	q, err := parseConsistencyQuery(r.URL.Query().Get, size)
	if err != nil {
		return badRequest("%s", err)
	}
	hashes, err := a.lg.ConsistencyProof(r.Context(), q.old, q.new)
	if err != nil {
		return err
	}
	return writeLedgerJSON(w, http.StatusOK, ledgerhttp.ConsistencyProof{Old: q.old, New: q.new, Hashes: nonNil(hashes)})
}

// nonNil makes an empty proof encode as [] rather than null.
func nonNil(h [][]byte) [][]byte {
	if h == nil {
		return [][]byte{}
	}
	return h
}

// maxLedgerIndex bounds indices and sizes: the stores keep them as signed
// 64-bit integers.
const maxLedgerIndex = 1<<63 - 1

// parseLedgerUint parses the query parameter name: a decimal whole number
// (digits only) up to maxLedgerIndex. Empty is def, or an error if required.
func parseLedgerUint(name, s string, required bool, def uint64) (uint64, error) {
	if s == "" {
		if required {
			return 0, fmt.Errorf("%s: missing", name)
		}
		return def, nil
	}
	if len(s) > 19 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s: want a whole number, got %q", name, truncateParam(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > maxLedgerIndex {
		return 0, fmt.Errorf("%s: must be at most %d", name, uint64(maxLedgerIndex))
	}
	return n, nil
}

// truncateParam keeps an echoed parameter short.
func truncateParam(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// entriesQuery is the range [start, end) of GET entries.
type entriesQuery struct{ start, end uint64 }

// parseEntriesQuery parses GET entries' start (default 0), end (default the
// tree size) and cursor, against the tree size: start <= end <= size. A
// cursor (the "next" of a previous page) carries both start and end and
// takes the place of the other parameters.
func parseEntriesQuery(get func(string) string, size uint64) (entriesQuery, error) {
	if c := get("cursor"); c != "" {
		start, end, err := parseEntriesCursor(c)
		if err != nil {
			return entriesQuery{}, err
		}
		if end > size {
			return entriesQuery{}, fmt.Errorf("cursor: beyond the tree size (%d)", size)
		}
		return entriesQuery{start: start, end: end}, nil
	}
	start, err := parseLedgerUint("start", get("start"), false, 0)
	if err != nil {
		return entriesQuery{}, err
	}
	end, err := parseLedgerUint("end", get("end"), false, size)
	if err != nil {
		return entriesQuery{}, err
	}
	switch {
	case end > size:
		return entriesQuery{}, fmt.Errorf("end: must be <= the tree size (%d)", size)
	case start > end && get("end") == "":
		return entriesQuery{}, fmt.Errorf("start: must be <= the tree size (%d)", size)
	case start > end:
		return entriesQuery{}, fmt.Errorf("start: must be <= end (%d)", end)
	}
	return entriesQuery{start: start, end: end}, nil
}

// cursorLedgerEntries is the list of ledger entries' cursors (see
// encodeCursor); its key is "<next start>-<end>", both decimal.
const cursorLedgerEntries = "le"

func entriesCursor(start, end uint64) string {
	return encodeCursor(cursorLedgerEntries, strconv.FormatUint(start, 10)+"-"+strconv.FormatUint(end, 10))
}

// parseEntriesCursor returns the range a cursor of entriesCursor continues:
// start < end.
func parseEntriesCursor(s string) (start, end uint64, err error) {
	key, err := parseCursor(s, cursorLedgerEntries)
	if err != nil {
		return 0, 0, err
	}
	bad := errors.New("cursor: malformed; pass the 'next' of the previous page")
	a, b, ok := strings.Cut(key, "-")
	if !ok {
		return 0, 0, bad
	}
	if start, err = parseLedgerUint("cursor", a, true, 0); err != nil {
		return 0, 0, bad
	}
	if end, err = parseLedgerUint("cursor", b, true, 0); err != nil || start >= end ||
		strconv.FormatUint(start, 10) != a || strconv.FormatUint(end, 10) != b {
		return 0, 0, bad
	}
	return start, end, nil
}

// batchesQuery is GET batches' first start.
type batchesQuery struct{ start uint64 }

// parseBatchesQuery parses GET batches' start (default 0) and cursor. A
// cursor (the "next" of a previous page) carries the start and takes the
// place of it. start is not bounded by the tree size.
func parseBatchesQuery(get func(string) string) (batchesQuery, error) {
	if c := get("cursor"); c != "" {
		start, err := parseBatchesCursor(c)
		if err != nil {
			return batchesQuery{}, err
		}
		return batchesQuery{start: start}, nil
	}
	start, err := parseLedgerUint("start", get("start"), false, 0)
	if err != nil {
		return batchesQuery{}, err
	}
	return batchesQuery{start: start}, nil
}

// cursorLedgerBatches is the list of batch signatures' cursors (see
// encodeCursor); its key is the next start, decimal.
const cursorLedgerBatches = "lb"

func batchesCursor(start uint64) string {
	return encodeCursor(cursorLedgerBatches, strconv.FormatUint(start, 10))
}

// parseBatchesCursor returns the start a cursor of batchesCursor continues
// from: a decimal up to maxLedgerIndex. A cursor has one spelling, the one
// batchesCursor writes (base64 decoding alone would skip newlines).
func parseBatchesCursor(s string) (uint64, error) {
	key, err := parseCursor(s, cursorLedgerBatches)
	if err != nil {
		return 0, err
	}
	start, err := parseLedgerUint("cursor", key, true, 0)
	if err != nil || batchesCursor(start) != s {
		return 0, errors.New("cursor: malformed; pass the 'next' of the previous page")
	}
	return start, nil
}

// inclusionQuery is GET proof/inclusion's leaf index and tree size.
type inclusionQuery struct{ index, size uint64 }

// parseInclusionQuery parses index and size (both required) against the
// tree size: index < size <= tree size.
func parseInclusionQuery(get func(string) string, treeSize uint64) (inclusionQuery, error) {
	index, err := parseLedgerUint("index", get("index"), true, 0)
	if err != nil {
		return inclusionQuery{}, err
	}
	size, err := parseLedgerUint("size", get("size"), true, 0)
	if err != nil {
		return inclusionQuery{}, err
	}
	switch {
	case size > treeSize:
		return inclusionQuery{}, fmt.Errorf("size: must be <= the tree size (%d)", treeSize)
	case index >= size:
		return inclusionQuery{}, fmt.Errorf("index: must be < size (%d)", size)
	}
	return inclusionQuery{index: index, size: size}, nil
}

// consistencyQuery is GET proof/consistency's two tree sizes.
type consistencyQuery struct{ old, new uint64 }

// parseConsistencyQuery parses old and new (both required) against the
// tree size: old <= new <= tree size.
func parseConsistencyQuery(get func(string) string, treeSize uint64) (consistencyQuery, error) {
	old, err := parseLedgerUint("old", get("old"), true, 0)
	if err != nil {
		return consistencyQuery{}, err
	}
	nw, err := parseLedgerUint("new", get("new"), true, 0)
	if err != nil {
		return consistencyQuery{}, err
	}
	switch {
	case nw > treeSize:
		return consistencyQuery{}, fmt.Errorf("new: must be <= the tree size (%d)", treeSize)
	case old > nw:
		return consistencyQuery{}, fmt.Errorf("old: must be <= new (%d)", nw)
	}
	return consistencyQuery{old: old, new: nw}, nil
}
