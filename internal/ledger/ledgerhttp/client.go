package ledgerhttp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tally-mesh/tally/internal/ledger"
)

// maxAnswer bounds the body of one answer (a page of MaxPage entries of the
// largest leaves, in base64, with their records, stays under it).
const maxAnswer = 64 << 20

// StatusError is a non-2xx answer. Msg is the API's {"error": ...} message,
// or the start of the body.
type StatusError struct {
	URL        string
	StatusCode int
	Status     string // "404 Not Found"
	Msg        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: %s: %s", e.URL, e.Status, e.Msg)
}

// Client reads a control plane's ledger endpoints. Build it with NewClient.
type Client struct {
	base string // scheme://host[:port][/path], no trailing slash
	hc   *http.Client
}

// NewClient returns a client of the control plane at baseURL (its
// --http-addr as a URL, e.g. "http://127.0.0.1:7401"; "host:port" alone
// means http). hc nil means a client with a 30-second timeout per request.
func NewClient(baseURL string, hc *http.Client) *Client {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// URL is the URL of path (one of the Path constants) with the query q.
func (c *Client) URL(path string, q url.Values) string {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// get fetches u and returns its body; a non-2xx answer is a *StatusError.
func (c *Client) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err // *url.Error names the method and URL
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %s: reading the answer: %w", u, resp.Status, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := string(bytes.TrimSpace(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		} else if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return nil, &StatusError{URL: u, StatusCode: resp.StatusCode, Status: resp.Status, Msg: msg}
	}
	if len(b) > maxAnswer {
		return nil, fmt.Errorf("GET %s: %s: answer over %d bytes", u, resp.Status, maxAnswer)
	}
	return b, nil
}

// getJSON fetches u and decodes its JSON answer into v.
func (c *Client) getJSON(ctx context.Context, u string, v any) error {
	b, err := c.get(ctx, u)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: decoding the answer: %w", u, err)
	}
	return nil
}

// Key returns the checkpoint verifier key (note verifier format), as
// served: the caller decides whether to trust it.
func (c *Client) Key(ctx context.Context) (string, error) {
	u := c.URL(PathKey, nil)
	b, err := c.get(ctx, u)
	if err != nil {
		return "", err
	}
	k := strings.TrimSpace(string(b))
	if k == "" || strings.ContainsAny(k, "\n ") {
		return "", fmt.Errorf("GET %s: not one line of verifier key", u)
	}
	return k, nil
}

// Checkpoint returns the latest signed checkpoint (a signed note), not yet
// verified: ledger.OpenCheckpoint does that. Before the first checkpoint it
// returns an error wrapping ledger.ErrNoCheckpoint.
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	b, err := c.get(ctx, c.URL(PathCheckpoint, nil))
	var se *StatusError
	if errors.As(err, &se) && se.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%w: %w", ledger.ErrNoCheckpoint, err)
	}
	return b, err
}

// Entries returns the entries [start, end), following cursors: about
// (end-start) entries in memory, so the caller bounds end-start. end must
// not exceed the log's size (the server answers 400).
func (c *Client) Entries(ctx context.Context, start, end uint64) ([]Entry, error) {
	return entryPages[Entry](ctx, c, start, end)
}

// Leaves is Entries without the records: what a verifier reads, decoded
// faster.
func (c *Client) Leaves(ctx context.Context, start, end uint64) ([]ledger.StoredEntry, error) {
	ls, err := entryPages[leaf](ctx, c, start, end)
	if err != nil {
		return nil, err
	}
	out := make([]ledger.StoredEntry, len(ls))
	for i, l := range ls {
		out[i] = ledger.StoredEntry(l)
	}
	return out, nil
}

// leaf is an Entry without its record.
type leaf struct {
	Index    uint64 `json:"index"`
	Data     []byte `json:"data"`
	LeafHash []byte `json:"leaf_hash"`
}

// entryPages reads the items [start, end) of GET entries as T, following
// cursors.
func entryPages[T any](ctx context.Context, c *Client, start, end uint64) ([]T, error) {
	q := url.Values{"start": {strconv.FormatUint(start, 10)}, "end": {strconv.FormatUint(end, 10)}}
	var out []T
	for {
		var p struct {
			Items []T    `json:"items"`
			Next  string `json:"next"`
		}
		u := c.URL(PathEntries, q)
		if err := c.getJSON(ctx, u, &p); err != nil {
			return nil, err
		}
		out = append(out, p.Items...)
		if p.Next == "" {
			return out, nil
		}
		if p.Next == q.Get("cursor") {
			return nil, fmt.Errorf("GET %s: the cursor does not advance", u)
		}
		q = url.Values{"cursor": {p.Next}}
	}
}

// EntriesFrom returns one page of the entries from start to the end of the
// log (at most MaxPage); none when start is the log's size.
func (c *Client) EntriesFrom(ctx context.Context, start uint64) ([]Entry, error) {
	var p EntriesPage
	err := c.getJSON(ctx, c.URL(PathEntries, url.Values{"start": {strconv.FormatUint(start, 10)}}), &p)
	return p.Items, err
}

// InclusionProof returns the RFC 6962 inclusion proof of the leaf at index
// in the tree of size leaves, as served (verify it with
// proof.VerifyInclusion).
func (c *Client) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	u := c.URL(PathInclusion, url.Values{"index": {strconv.FormatUint(index, 10)}, "size": {strconv.FormatUint(size, 10)}})
	var p InclusionProof
	if err := c.getJSON(ctx, u, &p); err != nil {
		return nil, err
	}
	if p.Index != index || p.Size != size {
		return nil, fmt.Errorf("GET %s: the answer is the proof of index %d in size %d", u, p.Index, p.Size)
	}
	return p.Hashes, checkHashes(u, p.Hashes)
}

// ConsistencyProof returns the RFC 6962 consistency proof between the trees
// of old and new leaves, as served (verify it with proof.VerifyConsistency).
func (c *Client) ConsistencyProof(ctx context.Context, old, new uint64) ([][]byte, error) {
	u := c.URL(PathConsistency, url.Values{"old": {strconv.FormatUint(old, 10)}, "new": {strconv.FormatUint(new, 10)}})
	var p ConsistencyProof
	if err := c.getJSON(ctx, u, &p); err != nil {
		return nil, err
	}
	if p.Old != old || p.New != new {
		return nil, fmt.Errorf("GET %s: the answer is the proof between sizes %d and %d", u, p.Old, p.New)
	}
	return p.Hashes, checkHashes(u, p.Hashes)
}

func checkHashes(u string, hashes [][]byte) error {
	for i, h := range hashes {
		if len(h) != 32 {
			return fmt.Errorf("GET %s: hash %d has %d bytes, want 32", u, i, len(h))
		}
	}
	return nil
}

// ReadEntries implements ledger.Source: entries from start to the end of
// the log as it is now, at most limit (and MaxPage) per call.
func (c *Client) ReadEntries(ctx context.Context, start uint64, limit int) ([]ledger.StoredEntry, error) {
	var p struct {
		Items []leaf `json:"items"`
	}
	if err := c.getJSON(ctx, c.URL(PathEntries, url.Values{"start": {strconv.FormatUint(start, 10)}}), &p); err != nil {
		return nil, err
	}
	out := make([]ledger.StoredEntry, min(len(p.Items), max(limit, 0)))
	for i := range out {
		out[i] = ledger.StoredEntry(p.Items[i])
	}
	return out, nil
}

// ReadCheckpoints implements ledger.Source. The API serves only the latest
// checkpoint: it is returned alone, as Seq 1, when from <= 1; none before
// the first checkpoint.
func (c *Client) ReadCheckpoints(ctx context.Context, from uint64, limit int) ([]ledger.StoredCheckpoint, error) {
	if from > 1 || limit < 1 {
		return nil, nil
	}
	signed, err := c.Checkpoint(ctx)
	if errors.Is(err, ledger.ErrNoCheckpoint) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	size, err := checkpointSize(signed)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", c.URL(PathCheckpoint, nil), err)
	}
	return []ledger.StoredCheckpoint{{Seq: 1, Size: size, Note: signed}}, nil
}

// ReadBatches implements ledger.Source: one page of GET batches from start
// (batch signatures whose range starts at or after start), at most limit
// (and MaxPage).
func (c *Client) ReadBatches(ctx context.Context, start uint64, limit int) ([]ledger.StoredBatch, error) {
	if limit < 1 {
		return nil, nil
	}
	bs, _, err := c.batchPage(ctx, url.Values{"start": {strconv.FormatUint(start, 10)}}, start)
	if err != nil {
		return nil, err
	}
	return bs[:min(len(bs), limit)], nil
}

// Batches returns every batch signature whose range starts at or after
// start, following cursors, in increasing start order, as served: not
// verified (ledger.Verify over a Client or View does that, against the
// entries). They are all in memory (a few hundred bytes each).
func (c *Client) Batches(ctx context.Context, start uint64) ([]ledger.StoredBatch, error) {
	q := url.Values{"start": {strconv.FormatUint(start, 10)}}
	var out []ledger.StoredBatch
	for {
		page, next, err := c.batchPage(ctx, q, start)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		if next == q.Get("cursor") || len(page) == 0 {
			return nil, fmt.Errorf("GET %s: the cursor does not advance", c.URL(PathBatches, q))
		}
		start = page[len(page)-1].Start + 1
		q = url.Values{"cursor": {next}}
	}
}

// batchPage fetches one page of GET batches with the query q and decodes
// it; every item must start at or after start, after the one before it.
func (c *Client) batchPage(ctx context.Context, q url.Values, start uint64) ([]ledger.StoredBatch, string, error) {
	u := c.URL(PathBatches, q)
	var p BatchesPage
	if err := c.getJSON(ctx, u, &p); err != nil {
		return nil, "", err
	}
	out := make([]ledger.StoredBatch, len(p.Items))
	for i, it := range p.Items {
		b, err := it.Stored()
		if err != nil {
			return nil, "", fmt.Errorf("GET %s: %w", u, err)
		}
		if b.Start < start {
			return nil, "", fmt.Errorf("GET %s: batch [%d,%d) out of order (want a start of at least %d)", u, b.Start, b.End, start)
		}
		out[i], start = b, b.Start+1
	}
	return out, p.Next, nil
}

// CA returns the mesh CA certificate the server serves (GET ca), as
// served: whether to trust it is the caller's decision.
func (c *Client) CA(ctx context.Context) (*x509.Certificate, error) {
	u := c.URL(PathCA, nil)
	b, err := c.get(ctx, u)
	if err != nil {
		return nil, err
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return nil, fmt.Errorf("GET %s: no PEM certificate", u)
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", u, err)
		}
		return cert, nil
	}
}

// View is a ledger.Source of the log as one signed checkpoint saw it: the
// entries [0, Size) and that checkpoint, so that a Verify over it ends at
// the checkpoint however fast the log grows. Build it with Client.View.
type View struct {
	c    *Client
	note []byte
	size uint64
}

// View returns the View of the signed checkpoint (as Checkpoint returns it).
// It reads the checkpoint's size without verifying its signature: Verify
// over the View does that.
func (c *Client) View(signedCheckpoint []byte) (*View, error) {
	size, err := checkpointSize(signedCheckpoint)
	if err != nil {
		return nil, err
	}
	return &View{c: c, note: signedCheckpoint, size: size}, nil
}

// Size is the size the checkpoint signs.
func (v *View) Size() uint64 { return v.size }

// ReadEntries implements ledger.Source: entries [start, min(start+limit,
// Size)).
func (v *View) ReadEntries(ctx context.Context, start uint64, limit int) ([]ledger.StoredEntry, error) {
	if start >= v.size || limit < 1 {
		return nil, nil
	}
	return v.c.Leaves(ctx, start, min(v.size, start+uint64(min(limit, MaxPage))))
}

// ReadCheckpoints implements ledger.Source: the View's checkpoint, as Seq 1.
func (v *View) ReadCheckpoints(_ context.Context, from uint64, limit int) ([]ledger.StoredCheckpoint, error) {
	if from > 1 || limit < 1 {
		return nil, nil
	}
	return []ledger.StoredCheckpoint{{Seq: 1, Size: v.size, Note: v.note}}, nil
}

// ReadBatches implements ledger.Source: the batch signatures of
// Client.ReadBatches whose range starts before Size. Those that start at or
// after it were appended after the checkpoint; one that starts before and
// ends after it is kept (no append straddles a checkpoint, so Verify
// reports it as beyond the log).
func (v *View) ReadBatches(ctx context.Context, start uint64, limit int) ([]ledger.StoredBatch, error) {
	if start >= v.size {
		return nil, nil
	}
	bs, err := v.c.ReadBatches(ctx, start, limit)
	if err != nil {
		return nil, err
	}
	for i, b := range bs {
		if b.Start >= v.size {
			return bs[:i], nil
		}
	}
	return bs, nil
}

// checkpointSize parses the size of a signed checkpoint's body without
// checking its signature.
func checkpointSize(signed []byte) (uint64, error) {
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return 0, fmt.Errorf("%w: not a signed note", ledger.ErrBadCheckpoint)
	}
	cp, err := ledger.ParseCheckpoint(string(text) + "\n")
	if err != nil {
		return 0, err
	}
	return cp.Size, nil
}

var (
	_ ledger.Source = (*Client)(nil)
	_ ledger.Source = (*View)(nil)
)
