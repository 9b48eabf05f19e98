package proxy

import (
	"context"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

func newTestRecorder(limit int) *recorder {
	return newRecorder("0123456789abcdef0123456789abcdef", "frontend", limit, newMetrics(prometheus.NewRegistry()))
}

func sent(id string) *tallyv1.Record {
	return &tallyv1.Record{Kind: tallyv1.RecordKind_RECORD_KIND_SENT, MessageId: id, Source: "frontend", Destination: "orders"}
}

func TestRecorderResendsUntilAcknowledged(t *testing.T) {
	r := newTestRecorder(100)
	ctx := t.Context()
	r.add(sent("a"))
	r.add(sent("b"))
	b1, err := r.next(ctx)
	if err != nil || len(b1.Records) != 2 || b1.BatchSeq != 1 {
		t.Fatalf("first batch: %v %v", b1, err)
	}
	r.add(sent("c"))
	b2, _ := r.next(ctx)
	if b2.BatchSeq != 2 {
		t.Fatalf("second batch seq %d, want 2", b2.BatchSeq)
	}
	// The connection drops before any ack: both batches go again, in order,
	// with their numbers.
	r.rewind()
	for _, want := range []uint64{1, 2} {
		b, _ := r.next(ctx)
		if b.BatchSeq != want {
			t.Fatalf("resend: got batch %d, want %d", b.BatchSeq, want)
		}
	}
	r.ack(1)
	if got := r.held(); got != 1 {
		t.Fatalf("held after ack 1: %d, want 1", got)
	}
	r.ack(2)
	if got := r.held(); got != 0 {
		t.Fatalf("held after ack 2: %d, want 0", got)
	}
}

func TestRecorderOverflowBecomesAuditGap(t *testing.T) {
	r := newTestRecorder(3)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		r.add(sent(id))
	}
	var m dto.Metric
	r.met.recordsDropped.Write(&m)
	if got := m.GetCounter().GetValue(); got != 2 {
		t.Fatalf("dropped: %v, want 2", got)
	}
	b, _ := r.next(t.Context())
	r.ack(b.BatchSeq)
	gap, _ := r.next(t.Context())
	if len(gap.Records) != 1 || gap.Records[0].OmissionKind != "audit_gap" {
		t.Fatalf("after room frees up: %v; want one audit_gap record", gap.Records)
	}
	if d := gap.Records[0].Detail; d != "2 records dropped: record buffer full (limit 3)" {
		t.Errorf("detail %q", d)
	}
}

func TestRecorderFlushWaitsForAcks(t *testing.T) {
	r := newTestRecorder(100)
	r.add(sent("a"))
	var wg sync.WaitGroup
	wg.Go(func() {
		b, _ := r.next(t.Context())
		time.Sleep(20 * time.Millisecond)
		r.ack(b.BatchSeq)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r.flush(ctx)
	if ctx.Err() != nil || r.held() != 0 {
		t.Fatalf("flush returned with %d held, ctx %v", r.held(), ctx.Err())
	}
	wg.Wait()
}

func TestRecorderConfirmedTakesThePlaceOfItsSent(t *testing.T) {
	r := newTestRecorder(100)
	ctx := t.Context()
	confirmed := func(id string) *tallyv1.Record {
		return &tallyv1.Record{Kind: tallyv1.RecordKind_RECORD_KIND_CONFIRMED, MessageId: id, Source: "frontend", Destination: "orders"}
	}
	a := r.add(sent("a"))
	r.add(sent("b"))
	r.settle(a, confirmed("a"))
	b1, err := r.next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(b1.Records) != 2 || b1.Records[0].Kind != tallyv1.RecordKind_RECORD_KIND_CONFIRMED || !b1.Records[0].IncludesSent ||
		b1.Records[1].MessageId != "b" {
		t.Fatalf("batch 1 = %v, want CONFIRMED(a, includes_sent) then SENT(b)", b1.Records)
	}
	// b's SENT left in batch 1: its CONFIRMED is a record of its own.
	c := r.add(sent("c"))
	r.settle(pendingRef{rec: b1.Records[1], cut: 0, idx: 1}, confirmed("b"))
	r.ack(1)
	b2, _ := r.next(ctx)
	if len(b2.Records) != 2 || b2.Records[0] != c.rec || b2.Records[1].MessageId != "b" || b2.Records[1].IncludesSent {
		t.Fatalf("batch 2 = %v, want SENT(c) then CONFIRMED(b) without includes_sent", b2.Records)
	}
	if n := r.held(); n != 2 {
		t.Errorf("held %d records, want 2", n)
	}
}

func TestMemoryLimitFollowsHeldRecords(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	p := &Proxy{cfg: Config{MemoryLimit: 20 << 20}, rec: newTestRecorder(100_000)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.followRecords(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitLimit := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for debug.SetMemoryLimit(-1) != want {
			if time.Now().After(deadline) {
				t.Fatalf("memory limit %d, want %d", debug.SetMemoryLimit(-1), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLimit(20 << 20)
	for range 10_000 {
		p.rec.add(sent("x"))
	}
	waitLimit(20<<20 + 10_000*recordMemory)
	b, _ := p.rec.next(t.Context())
	p.rec.ack(b.BatchSeq)
	waitLimit(20 << 20) // acknowledged: back to the base
}
