package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// EntryVersion is the version byte that starts every leaf.
//
// # Leaf encoding, version 1
//
// A leaf is the canonical encoding of one [Entry]. Integers are big-endian;
// a string is a 2-byte big-endian length n followed by n bytes of UTF-8.
// Every field is present, in this order, whatever its value:
//
//	offset  size  field
//	0       1     version = 0x01 (EntryVersion)
//	1       1     kind: 0x01 confirmation, 0x02 omission (Kind)
//
//	confirmation (KindConfirmation), from offset 2:
//	        str   message_id            (≤ 1024 bytes)
//	        8     seq, uint64
//	        str   source                (≤ 1024)
//	        str   destination           (≤ 1024)
//	        str   source_identity       (≤ 1024)
//	        str   destination_identity  (≤ 1024)
//	        str   protocol              (≤ 1024): http, grpc, tcp
//	        32    request_digest, SHA-256
//	        32    response_digest, SHA-256
//	        8     request_bytes, int64 (two's complement)
//	        8     response_bytes, int64
//	        8     confirmed_at, int64 unix nanoseconds
//	        str   instance_id           (≤ 1024): the uploading sidecar
//	        8     batch_seq, uint64: its upload batch (0: none)
//
//	omission (KindOmission), from offset 2:
//	        str   event_id              (≤ 1024)
//	        str   omission_kind         (≤ 1024): unconfirmed, truncated, ...
//	        str   source                (≤ 1024)
//	        str   destination           (≤ 1024)
//	        str   source_identity       (≤ 1024)
//	        str   destination_identity  (≤ 1024)
//	        str   message_id            (≤ 1024)
//	        8     seq, uint64
//	        8     detected_at, int64 unix nanoseconds
//	        str   detail                (≤ 4096)
//	        str   reporter              (≤ 1024): caller, callee, control
//	        str   instance_id           (≤ 1024)
//	        8     batch_seq, uint64
//
// A confirmation with every string empty is 2+7·2+8+64+8·3+2+8 = 122 bytes.
// The encoding is a bijection: [Decode] accepts exactly the outputs of
// [Entry.AppendBinary] (no trailing bytes, no unknown version or kind, no
// string over its limit or not UTF-8), so Decode(b).AppendBinary(nil) == b
// and equal entries have equal leaves. The leaf's RFC 6962 hash is
// SHA-256(0x00 || leaf) ([LeafHash]).
//
// # Version history
//
// 1: the only version. A later version gets a new version byte; Decode
// keeps decoding version 1 leaves, since they stay in the log forever.
const EntryVersion = 1

// Limits on string fields of an [Entry], in bytes.
const (
	MaxString = 1024 // every string field but Detail
	MaxDetail = 4096 // Detail
)

// Kind is the kind of a ledger entry.
type Kind uint8

// Kinds of entry.
const (
	// KindConfirmation: a message both sidecars accounted for; the
	// caller verified the callee's receipt.
	KindConfirmation Kind = 1
	// KindOmission: an omission event, reported by a sidecar or found by
	// the reconciler.
	KindOmission Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindConfirmation:
		return "confirmation"
	case KindOmission:
		return "omission"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Entry is one leaf of the ledger: a confirmed message or an omission event.
// Fields marked "confirmation" must be zero in an omission and those marked
// "omission" zero in a confirmation; [Entry.AppendBinary] refuses otherwise,
// so each entry has exactly one encoding.
type Entry struct {
	Kind Kind

	MessageID           string // the message's id (wire id)
	Seq                 uint64 // its per-edge sequence number
	Source              string // calling service
	Destination         string // called service
	SourceIdentity      string // SPIFFE ID of the caller
	DestinationIdentity string // SPIFFE ID of the callee
	// AtUnixNano is when the message was confirmed (confirmation) or the
	// omission detected (omission), in unix nanoseconds.
	AtUnixNano int64
	// InstanceID is the sidecar instance that uploaded the record, and
	// BatchSeq its upload batch: the batch whose signature covers this
	// leaf. Both are zero for events the control plane found itself.
	InstanceID string
	BatchSeq   uint64

	Protocol       string   // confirmation: http, grpc or tcp
	RequestDigest  [32]byte // confirmation: SHA-256 of the request body
	ResponseDigest [32]byte // confirmation: SHA-256 of the response body
	RequestBytes   int64    // confirmation: request body length
	ResponseBytes  int64    // confirmation: response body length

	EventID      string // omission: the event's id
	OmissionKind string // omission: unconfirmed, truncated, digest_mismatch, ...
	Detail       string // omission: what was seen, for people
	Reporter     string // omission: caller, callee or control
}

// ErrMalformed is wrapped by every error of [Decode] and
// [Entry.AppendBinary].
var ErrMalformed = errors.New("malformed entry")

// EntryError says which field of an entry is wrong and, when decoding,
// at which byte offset it starts.
type EntryError struct {
	Field  string // field name as in the layout ("message_id"), or "version"/"kind"/"end"
	Offset int    // byte offset of the field; -1 when encoding
	Reason string
}

func (e *EntryError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("entry field %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("entry field %s at offset %d: %s", e.Field, e.Offset, e.Reason)
}

// Unwrap returns ErrMalformed.
func (e *EntryError) Unwrap() error { return ErrMalformed }

// Encode returns the leaf encoding of e ([EntryVersion]).
func (e *Entry) Encode() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, e.encodedSizeHint()))
}

// encodedSizeHint is at least the length of e's encoding when it is valid.
func (e *Entry) encodedSizeHint() int {
	return 160 + len(e.MessageID) + len(e.Source) + len(e.Destination) + len(e.SourceIdentity) +
		len(e.DestinationIdentity) + len(e.InstanceID) + len(e.Detail) + len(e.Protocol) +
		len(e.EventID) + len(e.OmissionKind) + len(e.Reporter)
}

// AppendBinary appends the leaf encoding of e ([EntryVersion]) to b. It
// fails, leaving b as it was, if a string is over its limit or not UTF-8, the
// kind is unknown, or a field of the other kind is set.
func (e *Entry) AppendBinary(b []byte) ([]byte, error) {
	if err := e.check(); err != nil {
		return b, err
	}
	b = append(b, EntryVersion, byte(e.Kind))
	switch e.Kind {
	case KindConfirmation:
		b = appendString(b, e.MessageID)
		b = binary.BigEndian.AppendUint64(b, e.Seq)
		b = appendString(b, e.Source)
		b = appendString(b, e.Destination)
		b = appendString(b, e.SourceIdentity)
		b = appendString(b, e.DestinationIdentity)
		b = appendString(b, e.Protocol)
		b = append(b, e.RequestDigest[:]...)
		b = append(b, e.ResponseDigest[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(e.RequestBytes))
		b = binary.BigEndian.AppendUint64(b, uint64(e.ResponseBytes))
		b = binary.BigEndian.AppendUint64(b, uint64(e.AtUnixNano))
		b = appendString(b, e.InstanceID)
		b = binary.BigEndian.AppendUint64(b, e.BatchSeq)
	case KindOmission:
		b = appendString(b, e.EventID)
		b = appendString(b, e.OmissionKind)
		b = appendString(b, e.Source)
		b = appendString(b, e.Destination)
		b = appendString(b, e.SourceIdentity)
		b = appendString(b, e.DestinationIdentity)
		b = appendString(b, e.MessageID)
		b = binary.BigEndian.AppendUint64(b, e.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(e.AtUnixNano))
		b = appendString(b, e.Detail)
		b = appendString(b, e.Reporter)
		b = appendString(b, e.InstanceID)
		b = binary.BigEndian.AppendUint64(b, e.BatchSeq)
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// check validates e for encoding.
func (e *Entry) check() error {
	encErr := func(field, reason string) error {
		return &EntryError{Field: field, Offset: -1, Reason: reason}
	}
	type str struct {
		name string
		v    string
		max  int
	}
	// Arrays, not slices: check runs for every leaf a sidecar signs and
	// the control plane appends, and must not allocate.
	common := [...]str{
		{"message_id", e.MessageID, MaxString},
		{"source", e.Source, MaxString},
		{"destination", e.Destination, MaxString},
		{"source_identity", e.SourceIdentity, MaxString},
		{"destination_identity", e.DestinationIdentity, MaxString},
		{"instance_id", e.InstanceID, MaxString},
	}
	var own [4]str
	switch e.Kind {
	case KindConfirmation:
		own[0] = str{"protocol", e.Protocol, MaxString}
		for _, f := range [...]str{{"event_id", e.EventID, 0}, {"omission_kind", e.OmissionKind, 0},
			{"detail", e.Detail, 0}, {"reporter", e.Reporter, 0}} {
			if f.v != "" {
				return encErr(f.name, "set on a confirmation")
			}
		}
	case KindOmission:
		own = [4]str{{"event_id", e.EventID, MaxString}, {"omission_kind", e.OmissionKind, MaxString},
			{"detail", e.Detail, MaxDetail}, {"reporter", e.Reporter, MaxString}}
		switch {
		case e.Protocol != "":
			return encErr("protocol", "set on an omission")
		case e.RequestDigest != [32]byte{}:
			return encErr("request_digest", "set on an omission")
		case e.ResponseDigest != [32]byte{}:
			return encErr("response_digest", "set on an omission")
		case e.RequestBytes != 0:
			return encErr("request_bytes", "set on an omission")
		case e.ResponseBytes != 0:
			return encErr("response_bytes", "set on an omission")
		}
	default:
		return encErr("kind", fmt.Sprintf("unknown kind %d", e.Kind))
	}
	for _, fields := range [...][]str{common[:], own[:]} {
		for _, f := range fields {
			if f.name == "" {
				continue // own's unused slots
			}
			if len(f.v) > f.max {
				return encErr(f.name, fmt.Sprintf("%d bytes, more than %d", len(f.v), f.max))
			}
			if !utf8.ValidString(f.v) {
				return encErr(f.name, "not UTF-8")
			}
		}
	}
	return nil
}

// decoder reads a leaf, remembering the first error.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(field string, off int, format string, args ...any) {
	if d.err == nil {
		d.err = &EntryError{Field: field, Offset: off, Reason: fmt.Sprintf(format, args...)}
	}
}

func (d *decoder) take(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b)-d.off < n {
		d.fail(field, d.off, "need %d bytes, have %d", n, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) u64(field string) uint64 {
	p := d.take(field, 8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *decoder) i64(field string) int64 { return int64(d.u64(field)) }

func (d *decoder) digest(field string) (h [32]byte) {
	copy(h[:], d.take(field, 32))
	return h
}

func (d *decoder) str(field string, limit int) string {
	start := d.off
	p := d.take(field, 2)
	if p == nil {
		return ""
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > limit {
		d.fail(field, start, "length %d over the limit of %d", n, limit)
		return ""
	}
	if len(d.b)-d.off < n {
		d.fail(field, start, "length %d but only %d bytes left", n, len(d.b)-d.off)
		return ""
	}
	s := d.b[d.off : d.off+n]
	if !utf8.Valid(s) {
		d.fail(field, start, "not UTF-8")
		return ""
	}
	d.off += n
	return string(s)
}

// Decode parses a leaf (version 1, see [EntryVersion]). It is strict: an
// unknown version or kind, a string over its limit or not UTF-8, a short
// leaf or trailing bytes give an *[EntryError] naming the field and its
// offset.
func Decode(b []byte) (Entry, error) {
	d := decoder{b: b}
	var e Entry
	if len(b) < 1 {
		return e, &EntryError{Field: "version", Offset: 0, Reason: "empty leaf"}
	}
	if b[0] != EntryVersion {
		return e, &EntryError{Field: "version", Offset: 0, Reason: fmt.Sprintf("unknown version %d", b[0])}
	}
	if len(b) < 2 {
		return e, &EntryError{Field: "kind", Offset: 1, Reason: "missing"}
	}
	e.Kind = Kind(b[1])
	d.off = 2
	switch e.Kind {
	case KindConfirmation:
		e.MessageID = d.str("message_id", MaxString)
		e.Seq = d.u64("seq")
		e.Source = d.str("source", MaxString)
		e.Destination = d.str("destination", MaxString)
		e.SourceIdentity = d.str("source_identity", MaxString)
		e.DestinationIdentity = d.str("destination_identity", MaxString)
		e.Protocol = d.str("protocol", MaxString)
		e.RequestDigest = d.digest("request_digest")
		e.ResponseDigest = d.digest("response_digest")
		e.RequestBytes = d.i64("request_bytes")
		e.ResponseBytes = d.i64("response_bytes")
		e.AtUnixNano = d.i64("confirmed_at")
		e.InstanceID = d.str("instance_id", MaxString)
		e.BatchSeq = d.u64("batch_seq")
	case KindOmission:
		e.EventID = d.str("event_id", MaxString)
		e.OmissionKind = d.str("omission_kind", MaxString)
		e.Source = d.str("source", MaxString)
		e.Destination = d.str("destination", MaxString)
		e.SourceIdentity = d.str("source_identity", MaxString)
		e.DestinationIdentity = d.str("destination_identity", MaxString)
		e.MessageID = d.str("message_id", MaxString)
		e.Seq = d.u64("seq")
		e.AtUnixNano = d.i64("detected_at")
		e.Detail = d.str("detail", MaxDetail)
		e.Reporter = d.str("reporter", MaxString)
		e.InstanceID = d.str("instance_id", MaxString)
		e.BatchSeq = d.u64("batch_seq")
	default:
		return Entry{}, &EntryError{Field: "kind", Offset: 1, Reason: fmt.Sprintf("unknown kind %d", b[1])}
	}
	if d.err != nil {
		return Entry{}, d.err
	}
	if d.off != len(b) {
		return Entry{}, &EntryError{Field: "end", Offset: d.off, Reason: fmt.Sprintf("%d trailing bytes", len(b)-d.off)}
	}
	return e, nil
}

// LeafHash is the RFC 6962 hash of a leaf: SHA-256(0x00 || leaf).
func LeafHash(leaf []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(leaf)
	var out [32]byte
	h.Sum(out[:0])
	return out
}
