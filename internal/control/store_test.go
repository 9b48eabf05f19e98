package control

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

const (
	kSent      = tallyv1.RecordKind_RECORD_KIND_SENT
	kConfirmed = tallyv1.RecordKind_RECORD_KIND_CONFIRMED
	kReceived  = tallyv1.RecordKind_RECORD_KIND_RECEIVED
	kOmission  = tallyv1.RecordKind_RECORD_KIND_OMISSION
)

func rec(kind tallyv1.RecordKind, reporter string) Record {
	return Record{Kind: kind, Source: "frontend", Destination: "orders", Reporter: reporter, RequestBytes: 10}
}

func omission(kind, msgID, reporter, detail string) Record {
	r := rec(kOmission, reporter)
	r.OmissionKind, r.MessageID, r.Detail = kind, msgID, detail
	return r
}

func msgID(n int) string { return fmt.Sprintf("%032x", n) }

func TestStoreEdgeCounters(t *testing.T) {
	m := newMemStore(100, 100)
	now := time.Now()
	c := rec(kConfirmed, ReporterCaller)
	c.Latency = 3 * time.Millisecond
	recs := []Record{
		rec(kSent, ReporterCaller), rec(kSent, ReporterCaller), rec(kSent, ReporterCaller), rec(kSent, ReporterCaller),
		c, rec(kReceived, ReporterCallee),
		omission("truncated", msgID(1), ReporterCaller, "cut"),
		omission("truncated", msgID(1), ReporterCallee, "short"), // same event, other side
		omission("truncated", msgID(1), ReporterCaller, "again"), // same side again: ignored
		omission("unconfirmed", "", ReporterCallee, "callee only"),
	}
	a := m.Apply(BatchKey{"frontend", msgID(9), 1}, recs, now)
	if a.Duplicate {
		t.Fatal("first Apply reported Duplicate")
	}
	if got, want := len(a.Events), 2; got != want {
		t.Fatalf("new events = %d, want %d", got, want)
	}
	edges := m.Edges()
	if len(edges) != 1 {
		t.Fatalf("edges = %d, want 1", len(edges))
	}
	e := edges[0]
	// Bytes sent are counted from the records that end a message: the
	// confirmation and the first caller omission (10 bytes each).
	want := Edge{Source: "frontend", Destination: "orders", Sent: 4, Confirmed: 1, Received: 1, Omitted: 1, InFlight: 2, BytesSent: 20, BytesConfirmed: 10}
	e.Latency = Quantiles{}
	if e != want {
		t.Errorf("edge = %+v, want %+v", e, want)
	}
	if p50 := edges[0].Latency.P50; p50 < 2 || p50 > 4 {
		t.Errorf("p50 = %v ms, want about 3", p50)
	}
	evs, more := m.Omissions(OmissionQuery{Limit: 10})
	if more || len(evs) != 2 {
		t.Fatalf("Omissions = %d events, more %v; want 2, false", len(evs), more)
	}
	if got, want := evs[0].Detail, "cut; callee: short"; got != want {
		t.Errorf("merged detail = %q, want %q", got, want)
	}
	if got, want := a.Held, 1+2; got != want {
		t.Errorf("Held = %d, want %d", got, want)
	}

	// A resent batch changes nothing.
	if a := m.Apply(BatchKey{"frontend", msgID(9), 1}, recs, now); !a.Duplicate {
		t.Error("second Apply of the same key not Duplicate")
	}
	if got := m.Edges()[0].Sent; got != 4 {
		t.Errorf("sent after resend = %d, want 4", got)
	}
	// The same seq of another service's instance is another batch.
	if a := m.Apply(BatchKey{"orders", msgID(9), 1}, nil, now); a.Duplicate {
		t.Error("other service's batch reported Duplicate")
	}
}

func TestStoreInFlightNeverNegative(t *testing.T) {
	m := newMemStore(100, 100)
	m.Apply(BatchKey{"frontend", msgID(1), 1}, []Record{
		rec(kConfirmed, ReporterCaller), rec(kConfirmed, ReporterCaller), rec(kSent, ReporterCaller),
	}, time.Now())
	if got := m.Edges()[0].InFlight; got != 0 {
		t.Errorf("in_flight = %d, want 0", got)
	}
}

func TestStoreBatchWindow(t *testing.T) {
	m := newMemStore(100, 100)
	now := time.Now()
	apply := func(seq uint64) bool {
		return !m.Apply(BatchKey{"a", msgID(1), seq}, nil, now).Duplicate
	}
	for _, tc := range []struct {
		seq  uint64
		want bool
	}{
		{1, true}, {3, true}, {2, true}, {3, false}, {1, false}, {4, true}, {10, true}, {10, false}, {9, true},
	} {
		if got := apply(tc.seq); got != tc.want {
			t.Errorf("apply seq %d = %v, want %v", tc.seq, got, tc.want)
		}
	}
}

func TestStoreEviction(t *testing.T) {
	m := newMemStore(3, 100)
	now := time.Now()
	var evicted int
	for i := 1; i <= 5; i++ {
		a := m.Apply(BatchKey{"frontend", msgID(1), uint64(i)}, []Record{omission("duplicate", msgID(i), ReporterCaller, "")}, now)
		evicted += a.Evicted
	}
	if evicted != 2 {
		t.Errorf("evicted = %d, want 2", evicted)
	}
	evs, _ := m.Omissions(OmissionQuery{Limit: 10})
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	if got, want := fmt.Sprint(ids), "[3 4 5]"; got != want {
		t.Errorf("ids = %s, want %s", got, want)
	}
	// The evicted event's dedup entry is gone: a new report makes a new event.
	a := m.Apply(BatchKey{"frontend", msgID(1), 6}, []Record{omission("duplicate", msgID(1), ReporterCaller, "")}, now)
	if len(a.Events) != 1 || a.Events[0].ID != "6" {
		t.Errorf("events after eviction = %+v, want one with id 6", a.Events)
	}
	// A held event still de-duplicates.
	a = m.Apply(BatchKey{"frontend", msgID(1), 7}, []Record{omission("duplicate", msgID(5), ReporterCaller, "")}, now)
	if len(a.Events) != 0 {
		t.Errorf("events for a held (message_id, kind) = %d, want 0", len(a.Events))
	}
}

func TestStoreOmissionQuery(t *testing.T) {
	m := newMemStore(100, 100)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var recs []Record
	for i := 1; i <= 6; i++ {
		kind := "truncated"
		if i%2 == 0 {
			kind = "unconfirmed"
		}
		r := omission(kind, msgID(i), ReporterCaller, "")
		r.At = base.Add(time.Duration(i) * time.Second)
		recs = append(recs, r)
	}
	m.Apply(BatchKey{"frontend", msgID(1), 1}, recs, base)
	ids := func(evs []Event) string {
		var s []string
		for _, e := range evs {
			s = append(s, e.ID)
		}
		return fmt.Sprint(s)
	}
	for _, tc := range []struct {
		name     string
		q        OmissionQuery
		want     string
		wantMore bool
	}{
		{name: "all", q: OmissionQuery{Limit: 10}, want: "[1 2 3 4 5 6]"},
		{name: "page", q: OmissionQuery{Limit: 2}, want: "[1 2]", wantMore: true},
		{name: "after", q: OmissionQuery{After: 4, Limit: 2}, want: "[5 6]"},
		{name: "kind", q: OmissionQuery{Kind: "unconfirmed", Limit: 10}, want: "[2 4 6]"},
		{name: "kind page", q: OmissionQuery{Kind: "unconfirmed", Limit: 2}, want: "[2 4]", wantMore: true},
		{name: "since", q: OmissionQuery{Since: base.Add(5 * time.Second), Limit: 10}, want: "[5 6]"},
		{name: "desc", q: OmissionQuery{Desc: true, Limit: 2}, want: "[6 5]", wantMore: true},
		{name: "desc after", q: OmissionQuery{Desc: true, After: 5, Limit: 10}, want: "[4 3 2 1]"},
		{name: "desc kind", q: OmissionQuery{Desc: true, Kind: "truncated", Limit: 10}, want: "[5 3 1]"},
		{name: "after the end", q: OmissionQuery{After: 60, Limit: 10}, want: "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, more := m.Omissions(tc.q)
			if got := ids(evs); got != tc.want || more != tc.wantMore {
				t.Errorf("got %s more=%v, want %s more=%v", got, more, tc.want, tc.wantMore)
			}
		})
	}
}

func TestStoreEdgeLimit(t *testing.T) {
	m := newMemStore(100, 2)
	var recs []Record
	for i := range 3 {
		r := rec(kSent, ReporterCaller)
		r.Destination = "svc" + strconv.Itoa(i)
		recs = append(recs, r)
	}
	a := m.Apply(BatchKey{"frontend", msgID(1), 1}, recs, time.Now())
	if got := fmt.Sprint(a.Rejected); got != "[2]" {
		t.Errorf("Rejected = %s, want [2]", got)
	}
	if got := len(m.Edges()); got != 2 {
		t.Errorf("edges = %d, want 2", got)
	}
}

func TestLatencyQuantiles(t *testing.T) {
	var h latencyHist
	if got := h.quantile(0.5); got != 0 {
		t.Errorf("empty p50 = %v, want 0", got)
	}
	for i := 1; i <= 100; i++ {
		h.observe(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q, want float64
	}{{0.5, 50}, {0.9, 90}, {0.99, 99}} {
		got := h.quantile(tc.q)
		if got < tc.want*0.75 || got > tc.want*1.3 {
			t.Errorf("q%v = %v ms, want about %v", tc.q, got, tc.want)
		}
	}
	var big latencyHist
	big.observe(time.Hour)
	if got, lo, hi := big.quantile(0.99), histBounds[histBuckets-2], histBounds[histBuckets-1]; got < lo || got > hi {
		t.Errorf("overflow p99 = %v, want in the last bucket [%v, %v]", got, lo, hi)
	}
}
