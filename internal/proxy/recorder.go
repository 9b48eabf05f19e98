package proxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

const (
	maxBatchRecords = 2000
	batchInterval   = 50 * time.Millisecond
)

// recorder holds the records of this sidecar until the control plane has
// acknowledged them. It is safe for concurrent use.
//
// # Invariants
//
// A record leaves the recorder only when the batch holding it is
// acknowledged. After a reconnect every unacknowledged batch is sent again,
// in order, with its original sequence number, so the control plane can
// drop what it already applied. At most limit records are held; a record
// that does not fit is counted, and as soon as room frees up an audit_gap
// omission record says how many were lost — nothing is dropped silently.
type recorder struct {
	instance string
	service  string
	// sign, if set, signs a batch when it is cut, before it is first sent
	// (the sidecar's SVID key over the batch's ledger leaves); selfID
	// names this sidecar.
	sign   func(*tallyv1.RecordBatch)
	selfID func() string
	limit  int
	met    *metrics
	notify chan struct{} // wakes the uploader; capacity 1

	mu       sync.Mutex // guards following
	pending  []*tallyv1.Record
	firstAt  time.Time // when the oldest pending record arrived
	unacked  []*tallyv1.RecordBatch
	nextSend int // index in unacked of the next batch to send
	batchSeq uint64
	cuts     uint64 // batches cut so far: names the pending batch in a pendingRef
	count    int    // records in pending and unacked
	dropped  int64  // records refused since the last audit_gap record
	changed  *sync.Cond
}

func newRecorder(instance, service string, limit int, met *metrics) *recorder {
	r := &recorder{instance: instance, service: service, limit: limit, met: met, notify: make(chan struct{}, 1),
		selfID: func() string { return "" }}
	r.changed = sync.NewCond(&r.mu)
	return r
}

// pendingRef is where add put a record: its index in the batch being
// filled, while that batch is not cut.
type pendingRef struct {
	rec *tallyv1.Record
	cut uint64 // recorder.cuts when it was added
	idx int    // -1: not held (dropped)
}

// add takes a record; urgent records (omissions) are uploaded at once.
func (r *recorder) add(rec *tallyv1.Record) pendingRef {
	return r.settle(pendingRef{idx: -1}, rec)
}

// settle takes rec, the CONFIRMED record that ends the message whose SENT
// record is sent: if that one still waits in the batch being filled, rec
// takes its place and says so (includes_sent), so the batch carries one
// record for the message instead of two. Otherwise it is added as add
// does.
func (r *recorder) settle(sent pendingRef, rec *tallyv1.Record) pendingRef {
	rec.InstanceId = r.instance
	if rec.AtUnixNano == 0 {
		rec.AtUnixNano = time.Now().UnixNano()
	}
	r.mu.Lock()
	if sent.idx >= 0 && sent.cut == r.cuts && sent.idx < len(r.pending) && r.pending[sent.idx] == sent.rec &&
		rec.Kind == tallyv1.RecordKind_RECORD_KIND_CONFIRMED {
		rec.IncludesSent = true
		r.pending[sent.idx] = rec
		r.mu.Unlock()
		return pendingRef{rec: rec, cut: sent.cut, idx: sent.idx}
	}
	if r.count >= r.limit {
		r.dropped++
		r.mu.Unlock()
		r.met.recordsDropped.Inc()
		r.met.limitHits.WithLabelValues("record_buffer").Inc()
		return pendingRef{idx: -1}
	}
	ref := pendingRef{rec: rec, cut: r.cuts, idx: len(r.pending)}
	r.appendLocked(rec)
	urgent := rec.Kind == tallyv1.RecordKind_RECORD_KIND_OMISSION || len(r.pending) >= maxBatchRecords
	r.mu.Unlock()
	if urgent {
		r.wake()
	}
	return ref
}

func (r *recorder) appendLocked(rec *tallyv1.Record) {
	if len(r.pending) == 0 {
		r.firstAt = time.Now()
	}
	r.pending = append(r.pending, rec)
	r.count++
}

func (r *recorder) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// next returns the next batch to send, cutting one from the pending records
// when they are due; it blocks until there is one or ctx ends.
func (r *recorder) next(ctx context.Context) (*tallyv1.RecordBatch, error) {
	t := time.NewTimer(batchInterval)
	defer t.Stop()
	for {
		r.mu.Lock()
		if r.nextSend < len(r.unacked) {
			b := r.unacked[r.nextSend]
			r.nextSend++
			r.mu.Unlock()
			return b, nil
		}
		if len(r.pending) > 0 && (len(r.pending) >= maxBatchRecords || time.Since(r.firstAt) >= batchInterval ||
			hasOmission(r.pending)) {
			b := r.cutLocked()
			r.nextSend++
			r.mu.Unlock()
			// Signed outside the lock: encoding and hashing a full batch
			// takes about a millisecond, during which every message
			// would otherwise wait to add its record. Only this
			// goroutine sends batches, so b goes out signed.
			if r.sign != nil {
				r.sign(b)
			}
			return b, nil
		}
		wait := batchInterval
		if len(r.pending) > 0 {
			wait = batchInterval - time.Since(r.firstAt)
		}
		r.mu.Unlock()
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.notify:
		case <-t.C:
		}
	}
}

func hasOmission(recs []*tallyv1.Record) bool {
	// Omissions are rare; scan from the newest, where an urgent one would be.
	for i := len(recs) - 1; i >= 0 && i >= len(recs)-8; i-- {
		if recs[i].Kind == tallyv1.RecordKind_RECORD_KIND_OMISSION {
			return true
		}
	}
	return false
}

func (r *recorder) cutLocked() *tallyv1.RecordBatch {
	r.batchSeq++
	r.cuts++
	b := &tallyv1.RecordBatch{BatchSeq: r.batchSeq, InstanceId: r.instance, Records: r.pending}
	r.pending = nil
	r.unacked = append(r.unacked, b)
	return b
}

// ack drops every batch up to and including seq.
func (r *recorder) ack(seq uint64) {
	r.mu.Lock()
	n := 0
	for n < len(r.unacked) && r.unacked[n].BatchSeq <= seq {
		r.count -= len(r.unacked[n].Records)
		n++
	}
	if n > 0 {
		r.unacked = append(r.unacked[:0:0], r.unacked[n:]...)
		r.nextSend = max(0, r.nextSend-n)
	}
	if r.dropped > 0 && r.count < r.limit {
		// Room again: say what was lost. This record may take the slot
		// just freed even when the buffer is full again at once.
		gap := &tallyv1.Record{
			Kind:           tallyv1.RecordKind_RECORD_KIND_OMISSION,
			OmissionKind:   "audit_gap",
			Detail:         fmt.Sprintf("%d records dropped: record buffer full (limit %d)", r.dropped, r.limit),
			Reporter:       "caller",
			Source:         r.service,
			SourceIdentity: r.selfID(),
			InstanceId:     r.instance,
			AtUnixNano:     time.Now().UnixNano(),
		}
		r.dropped = 0
		r.appendLocked(gap)
		defer r.wake()
	}
	r.changed.Broadcast()
	r.mu.Unlock()
}

// rewind makes next resend every unacknowledged batch (after a reconnect).
func (r *recorder) rewind() {
	r.mu.Lock()
	r.nextSend = 0
	r.mu.Unlock()
}

// held is the number of records not yet acknowledged.
func (r *recorder) held() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// flush waits until every record is acknowledged or ctx ends.
func (r *recorder) flush(ctx context.Context) {
	r.wake()
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.changed.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.count > 0 && ctx.Err() == nil {
		r.changed.Wait()
	}
}
