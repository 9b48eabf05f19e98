package ledgerhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tally-mesh/tally/internal/ledger"
)

// Paths of the ledger endpoints (SPEC.md, REST API), relative to the
// control plane's HTTP address. All are GET.
//
//	checkpoint                      text/plain: the latest signed checkpoint (404 before the first)
//	key                             text/plain: the note verifier key, one line
//	entries?start=&end=&cursor=     EntriesPage of [start, end); end defaults to the tree size
//	proof/inclusion?index=&size=    InclusionProof
//	proof/consistency?old=&new=     ConsistencyProof
//	batches?start=&cursor=          BatchesPage: the batch signatures whose range starts at or after start
//	ca                              text/plain: the mesh CA certificate, PEM
const (
	PathPrefix      = "/api/v1/ledger/"
	PathCheckpoint  = PathPrefix + "checkpoint"
	PathKey         = PathPrefix + "key"
	PathEntries     = PathPrefix + "entries"
	PathInclusion   = PathPrefix + "proof/inclusion"
	PathConsistency = PathPrefix + "proof/consistency"
	PathBatches     = PathPrefix + "batches"
	PathCA          = PathPrefix + "ca"
)

// MaxPage is the most entries (or batch signatures) one answer of GET
// entries (or GET batches) holds; when more remain, its Next is a cursor
// for the rest.
const MaxPage = 1000

// Entry is one item of GET entries. Data is the exact leaf (its RFC 6962
// leaf hash is SHA-256(0x00 || Data)) and LeafHash the hash the store keeps
// beside it; both travel as standard base64. Record is the leaf decoded, for
// people; a leaf that does not decode has a null record and RecordError
// saying why. A verifier uses Data only.
type Entry struct {
	Index       uint64  `json:"index"`
	Data        []byte  `json:"data"`
	LeafHash    []byte  `json:"leaf_hash"`
	Record      *Record `json:"record"`
	RecordError string  `json:"record_error,omitempty"`
}

// NewEntry is the API item of a stored entry.
func NewEntry(e ledger.StoredEntry) Entry {
	out := Entry{Index: e.Index, Data: e.Data, LeafHash: e.LeafHash}
	if out.Data == nil {
		out.Data = []byte{}
	}
	if out.LeafHash == nil {
		out.LeafHash = []byte{}
	}
	d, err := ledger.Decode(e.Data)
	if err != nil {
		out.RecordError = err.Error()
		return out
	}
	out.Record = &Record{Entry: d}
	return out
}

// Stored is the entry as a ledger.Source returns it.
func (e Entry) Stored() ledger.StoredEntry {
	return ledger.StoredEntry{Index: e.Index, Data: e.Data, LeafHash: e.LeafHash}
}

// EntriesPage is the answer of GET entries: {"items": [...], "next": ""}.
// Next is empty on the last page, else an opaque cursor: pass it as
// ?cursor= for the next page (it carries start and end).
type EntriesPage struct {
	Items []Entry `json:"items"`
	Next  string  `json:"next"`
}

// Batch is one item of GET batches: a sidecar's batch signature
// (ledger.BatchSignature) as stored, and the log range [Start, End) of the
// leaves it covers. The signed statement (ledger.BatchStatement) is
// InstanceID, BatchSeq, SignedAt, the count End-Start and Root; Chain is the
// signer's certificate chain (DER, leaf first) and Signature the ECDSA
// P-256 signature (ASN.1 DER) over the statement's Message. Root, Chain and
// Signature travel as standard base64; SignedAt as RFC 3339 with
// nanoseconds (UTC), exact to the nanosecond the statement signs.
type Batch struct {
	Start      uint64    `json:"start"`
	End        uint64    `json:"end"`
	InstanceID string    `json:"instance_id"`
	BatchSeq   uint64    `json:"batch_seq"`
	SignedAt   time.Time `json:"signed_at"`
	Root       []byte    `json:"root"`
	Chain      [][]byte  `json:"chain"`
	Signature  []byte    `json:"signature"`
}

// NewBatch is the API item of a stored batch signature.
func NewBatch(b ledger.StoredBatch) Batch {
	s := &b.Signature
	out := Batch{
		Start: b.Start, End: b.End,
		InstanceID: s.InstanceID, BatchSeq: s.BatchSeq, SignedAt: s.SignedAt.UTC(),
		Root: s.Root[:], Chain: s.Chain, Signature: s.Signature,
	}
	if out.Chain == nil {
		out.Chain = [][]byte{}
	}
	if out.Signature == nil {
		out.Signature = []byte{}
	}
	return out
}

// Stored is the batch signature as a ledger.Source returns it (Count is
// End-Start). It fails if the item cannot be one: a root that is not 32
// bytes, End before Start, or a time beyond int64 unix nanoseconds.
func (b Batch) Stored() (ledger.StoredBatch, error) {
	if len(b.Root) != 32 {
		return ledger.StoredBatch{}, fmt.Errorf("batch [%d,%d): root has %d bytes, want 32", b.Start, b.End, len(b.Root))
	}
	if b.End < b.Start {
		return ledger.StoredBatch{}, fmt.Errorf("batch [%d,%d): ends before it starts", b.Start, b.End)
	}
	if b.SignedAt.Before(minTime) || b.SignedAt.After(maxTime) {
		return ledger.StoredBatch{}, fmt.Errorf("batch [%d,%d): signed_at %s: out of the range of unix nanoseconds",
			b.Start, b.End, b.SignedAt.Format(time.RFC3339Nano))
	}
	return ledger.StoredBatch{Start: b.Start, End: b.End, Signature: ledger.BatchSignature{
		BatchStatement: ledger.BatchStatement{
			InstanceID: b.InstanceID, BatchSeq: b.BatchSeq, SignedAt: time.Unix(0, b.SignedAt.UnixNano()),
			Count: b.End - b.Start, Root: [32]byte(b.Root),
		},
		Chain:     b.Chain,
		Signature: b.Signature,
	}}, nil
}

// BatchesPage is the answer of GET batches: {"items": [...], "next": ""},
// in increasing Start order, at most MaxPage items. Next is empty on the
// last page, else an opaque cursor: pass it as ?cursor= for the next page.
type BatchesPage struct {
	Items []Batch `json:"items"`
	Next  string  `json:"next"`
}

// InclusionProof is the answer of GET proof/inclusion: the RFC 6962
// inclusion proof of the leaf at Index in the tree of Size leaves.
type InclusionProof struct {
	Index  uint64   `json:"index"`
	Size   uint64   `json:"size"`
	Hashes [][]byte `json:"hashes"`
}

// ConsistencyProof is the answer of GET proof/consistency: the RFC 6962
// consistency proof between the trees of Old and New leaves.
type ConsistencyProof struct {
	Old    uint64   `json:"old"`
	New    uint64   `json:"new"`
	Hashes [][]byte `json:"hashes"`
}

// Record is a decoded leaf as JSON. Its fields are those of the leaf
// layout (ledger.EntryVersion), snake_case, in layout order, and only those
// of its kind:
//
//	confirmation: kind, message_id, seq, source, destination, source_identity,
//	  destination_identity, protocol, request_digest, response_digest,
//	  request_bytes, response_bytes, confirmed_at, instance_id, batch_seq
//	omission: kind, event_id, omission_kind, source, destination,
//	  source_identity, destination_identity, message_id, seq, detected_at,
//	  detail, reporter, instance_id, batch_seq
//
// kind is "confirmation" or "omission", digests are standard base64 of 32
// bytes, times RFC 3339 with nanoseconds (UTC). Decoding is strict: unknown
// or missing fields, fields of the other kind, and digests of another length
// are refused, so a record converts back to exactly one entry.
type Record struct {
	ledger.Entry
}

type confirmationJSON struct {
	Kind                string    `json:"kind"`
	MessageID           string    `json:"message_id"`
	Seq                 uint64    `json:"seq"`
	Source              string    `json:"source"`
	Destination         string    `json:"destination"`
	SourceIdentity      string    `json:"source_identity"`
	DestinationIdentity string    `json:"destination_identity"`
	Protocol            string    `json:"protocol"`
	RequestDigest       []byte    `json:"request_digest"`
	ResponseDigest      []byte    `json:"response_digest"`
	RequestBytes        int64     `json:"request_bytes"`
	ResponseBytes       int64     `json:"response_bytes"`
	ConfirmedAt         time.Time `json:"confirmed_at"`
	InstanceID          string    `json:"instance_id"`
	BatchSeq            uint64    `json:"batch_seq"`
}

type omissionJSON struct {
	Kind                string    `json:"kind"`
	EventID             string    `json:"event_id"`
	OmissionKind        string    `json:"omission_kind"`
	Source              string    `json:"source"`
	Destination         string    `json:"destination"`
	SourceIdentity      string    `json:"source_identity"`
	DestinationIdentity string    `json:"destination_identity"`
	MessageID           string    `json:"message_id"`
	Seq                 uint64    `json:"seq"`
	DetectedAt          time.Time `json:"detected_at"`
	Detail              string    `json:"detail"`
	Reporter            string    `json:"reporter"`
	InstanceID          string    `json:"instance_id"`
	BatchSeq            uint64    `json:"batch_seq"`
}

// Number of fields of each JSON form, to refuse missing ones.
const (
	confirmationFields = 15
	omissionFields     = 14
)

// MarshalJSON implements json.Marshaler.
func (r Record) MarshalJSON() ([]byte, error) {
	e := &r.Entry
	at := time.Unix(0, e.AtUnixNano).UTC()
	switch e.Kind {
	case ledger.KindConfirmation:
		return json.Marshal(confirmationJSON{
			Kind: e.Kind.String(), MessageID: e.MessageID, Seq: e.Seq,
			Source: e.Source, Destination: e.Destination,
			SourceIdentity: e.SourceIdentity, DestinationIdentity: e.DestinationIdentity,
			Protocol: e.Protocol, RequestDigest: e.RequestDigest[:], ResponseDigest: e.ResponseDigest[:],
			RequestBytes: e.RequestBytes, ResponseBytes: e.ResponseBytes, ConfirmedAt: at,
			InstanceID: e.InstanceID, BatchSeq: e.BatchSeq,
		})
	case ledger.KindOmission:
		return json.Marshal(omissionJSON{
			Kind: e.Kind.String(), EventID: e.EventID, OmissionKind: e.OmissionKind,
			Source: e.Source, Destination: e.Destination,
			SourceIdentity: e.SourceIdentity, DestinationIdentity: e.DestinationIdentity,
			MessageID: e.MessageID, Seq: e.Seq, DetectedAt: at, Detail: e.Detail, Reporter: e.Reporter,
			InstanceID: e.InstanceID, BatchSeq: e.BatchSeq,
		})
	}
	return nil, fmt.Errorf("record: unknown kind %d", e.Kind)
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *Record) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	var kind string
	if err := json.Unmarshal(fields["kind"], &kind); err != nil {
		return errors.New("record: kind: want a string")
	}
	strict := func(v any, want int) error {
		if len(fields) != want {
			return fmt.Errorf("record: %s has %d fields, want %d", kind, len(fields), want)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		return nil
	}
	var e ledger.Entry
	switch kind {
	case ledger.KindConfirmation.String():
		var c confirmationJSON
		if err := strict(&c, confirmationFields); err != nil {
			return err
		}
		if len(c.RequestDigest) != 32 || len(c.ResponseDigest) != 32 {
			return errors.New("record: request_digest and response_digest must be 32 bytes")
		}
		at, err := unixNano("confirmed_at", c.ConfirmedAt)
		if err != nil {
			return err
		}
		e = ledger.Entry{
			Kind: ledger.KindConfirmation, MessageID: c.MessageID, Seq: c.Seq,
			Source: c.Source, Destination: c.Destination,
			SourceIdentity: c.SourceIdentity, DestinationIdentity: c.DestinationIdentity,
			Protocol: c.Protocol, RequestDigest: [32]byte(c.RequestDigest), ResponseDigest: [32]byte(c.ResponseDigest),
			RequestBytes: c.RequestBytes, ResponseBytes: c.ResponseBytes, AtUnixNano: at,
			InstanceID: c.InstanceID, BatchSeq: c.BatchSeq,
		}
	case ledger.KindOmission.String():
		var o omissionJSON
		if err := strict(&o, omissionFields); err != nil {
			return err
		}
		at, err := unixNano("detected_at", o.DetectedAt)
		if err != nil {
			return err
		}
		e = ledger.Entry{
			Kind: ledger.KindOmission, EventID: o.EventID, OmissionKind: o.OmissionKind,
			Source: o.Source, Destination: o.Destination,
			SourceIdentity: o.SourceIdentity, DestinationIdentity: o.DestinationIdentity,
			MessageID: o.MessageID, Seq: o.Seq, AtUnixNano: at, Detail: o.Detail, Reporter: o.Reporter,
			InstanceID: o.InstanceID, BatchSeq: o.BatchSeq,
		}
	default:
		return fmt.Errorf("record: unknown kind %q", kind)
	}
	r.Entry = e
	return nil
}

// Bounds of a time that int64 unix nanoseconds can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func unixNano(field string, t time.Time) (int64, error) {
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("record: %s %s: out of the range of unix nanoseconds", field, t.Format(time.RFC3339Nano))
	}
	return t.UnixNano(), nil
}
