package ledger

import (
	"fmt"
	"time"
	"unicode/utf8"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

// FromRecord maps a sidecar's record to its ledger leaf. Confirmations and
// omissions are leaves; SENT and RECEIVED records are not (ok is false).
// The sidecar calls it to sign a batch and the control plane to store it,
// so both derive the same bytes: everything comes from the record as
// uploaded, the batch it travels in, and its index there.
func FromRecord(r *tallyv1.Record, instance string, batchSeq uint64, index int) (e Entry, ok bool) {
	e = Entry{
		MessageID: r.GetMessageId(), Seq: r.GetSeq(),
		Source: r.GetSource(), Destination: r.GetDestination(),
		SourceIdentity: r.GetSourceIdentity(), DestinationIdentity: r.GetDestinationIdentity(),
		AtUnixNano: r.GetAtUnixNano(), InstanceID: instance, BatchSeq: batchSeq,
	}
	switch r.GetKind() {
	case tallyv1.RecordKind_RECORD_KIND_CONFIRMED:
		e.Kind = KindConfirmation
		e.Protocol = r.GetProtocol()
		copy(e.RequestDigest[:], r.GetRequestDigest())
		copy(e.ResponseDigest[:], r.GetResponseDigest())
		e.RequestBytes, e.ResponseBytes = r.GetRequestBytes(), r.GetResponseBytes()
	case tallyv1.RecordKind_RECORD_KIND_OMISSION:
		e.Kind = KindOmission
		e.EventID = fmt.Sprintf("%s:%d:%d", instance, batchSeq, index)
		e.OmissionKind = r.GetOmissionKind()
		e.Detail = truncateUTF8(r.GetDetail(), MaxDetail)
		e.Reporter = r.GetReporter()
	default:
		return Entry{}, false
	}
	return e, true
}

// BatchEntries returns the leaves of a batch's records, in order, with the
// indices of the records they came from.
func BatchEntries(b *tallyv1.RecordBatch) (entries []Entry, from []int) {
	n := 0
	for _, r := range b.GetRecords() {
		if k := r.GetKind(); k == tallyv1.RecordKind_RECORD_KIND_CONFIRMED || k == tallyv1.RecordKind_RECORD_KIND_OMISSION {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	entries, from = make([]Entry, 0, n), make([]int, 0, n)
	for i, r := range b.GetRecords() {
		if e, ok := FromRecord(r, b.GetInstanceId(), b.GetBatchSeq(), i); ok {
			entries = append(entries, e)
			from = append(from, i)
		}
	}
	return entries, from
}

// EncodeAll encodes entries as leaves. The leaves share one backing array
// (one allocation per batch, not per leaf); each is capped at its length,
// so appending to one cannot overwrite the next.
func EncodeAll(entries []Entry) ([][]byte, error) {
	size := 0
	for i := range entries {
		size += entries[i].encodedSizeHint()
	}
	buf := make([]byte, 0, size)
	leaves := make([][]byte, len(entries))
	for i := range entries {
		start := len(buf)
		var err error
		if buf, err = entries[i].AppendBinary(buf); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		leaves[i] = buf[start:len(buf):len(buf)]
	}
	return leaves, nil
}

// SignatureToProto and SignatureFromProto move a batch signature across
// the sidecar API.
func SignatureToProto(s *BatchSignature) *tallyv1.BatchSignature {
	return &tallyv1.BatchSignature{
		SignedAtUnixNano: s.SignedAt.UnixNano(), Count: s.Count, Root: s.Root[:],
		ChainDer: s.Chain, Signature: s.Signature,
	}
}

// SignatureFromProto rebuilds the signature of batch b; nil when b carries
// none.
func SignatureFromProto(b *tallyv1.RecordBatch) (*BatchSignature, error) {
	p := b.GetSignature()
	if p == nil {
		return nil, nil
	}
	if len(p.GetRoot()) != 32 {
		return nil, fmt.Errorf("batch signature: root of %d bytes, want 32", len(p.GetRoot()))
	}
	s := &BatchSignature{
		BatchStatement: BatchStatement{InstanceID: b.GetInstanceId(), BatchSeq: b.GetBatchSeq(),
			SignedAt: time.Unix(0, p.GetSignedAtUnixNano()), Count: p.GetCount()},
		Chain: p.GetChainDer(), Signature: p.GetSignature(),
	}
	copy(s.Root[:], p.GetRoot())
	return s, nil
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
