package reconcile

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// benchTraffic generates an endless stream of records of clean traffic:
// 64 caller instances calling 8 destinations of 3 instances each; the
// RECEIVED of a message comes 2000 messages after its SENT and the
// CONFIRMED 4000 after, so about 4000 messages are in flight, as at
// 200,000 records/s with 50ms batches. Simulated time advances 5µs per
// record (200,000 records/s), so the reconciler holds what it would hold at
// that rate: about a Window of timers and four Windows of settled ids.
// Records are copied from templates; each message id is made once.
type benchTraffic struct {
	sent, confirmed [benchCallers][benchDests]Record
	received        [benchCallers][benchDests][3]Record
	seq             [benchCallers][benchDests]uint64
	ring            [benchRing]benchMsg
	i               int // next record
	idBuf           [16]byte
}

type benchMsg struct {
	id  string
	seq uint64
}

const (
	benchCallers = 64
	benchDests   = 8
	benchRing    = 8192 // > benchConfLag
	benchRecvLag = 2000
	benchConfLag = 4000
	benchStep    = 5 * time.Microsecond
)

func newBenchTraffic() *benchTraffic {
	bt := &benchTraffic{}
	for c := range benchCallers {
		from := inst{id: fmt.Sprintf("%032x", 0xc000+c), svc: fmt.Sprintf("caller%d", c%8)}
		for d := range benchDests {
			cl := call{from: from, to: fmt.Sprintf("svc%d", d)}
			bt.sent[c][d] = cl.sent(0)
			bt.confirmed[c][d] = cl.confirmed(0)
			for k := range 3 {
				bt.received[c][d][k] = cl.received(inst{id: fmt.Sprintf("%032x", 0xd000+d*16+k), svc: cl.to}, 0)
			}
		}
	}
	return bt
}

// next returns the next record of the stream and the now to add it at
// (30ms after it was made).
func (bt *benchTraffic) next() (Record, time.Time) {
	i := bt.i
	bt.i++
	at := t0.Add(time.Duration(i) * benchStep)
	n := i / 3
	var r Record
	switch i % 3 {
	case 0:
		c, d := n%benchCallers, (n/benchCallers)%benchDests
		bt.seq[c][d]++
		binary.BigEndian.PutUint64(bt.idBuf[8:], uint64(n)+1)
		m := benchMsg{id: hex.EncodeToString(bt.idBuf[:]), seq: bt.seq[c][d]}
		bt.ring[n%benchRing] = m
		r = bt.sent[c][d]
		r.MessageID, r.Seq = m.id, m.seq
	case 1:
		if n -= benchRecvLag; n < 0 {
			return bt.next()
		}
		m := bt.ring[n%benchRing]
		r = bt.received[n%benchCallers][(n/benchCallers)%benchDests][n%3]
		r.MessageID, r.Seq = m.id, m.seq
	case 2:
		if n -= benchConfLag; n < 0 {
			return bt.next()
		}
		m := bt.ring[n%benchRing]
		r = bt.confirmed[n%benchCallers][(n/benchCallers)%benchDests]
		r.MessageID, r.Seq = m.id, m.seq
	}
	r.At = at
	return r, at.Add(30 * time.Millisecond)
}

// BenchmarkTraffic measures the generator alone, to subtract from the
// benchmarks below.
func BenchmarkTraffic(b *testing.B) {
	bt := newBenchTraffic()
	b.ReportAllocs()
	for range b.N {
		bt.next()
	}
}

// BenchmarkAdd feeds records one Add at a time, with a Tick every 100ms of
// simulated time, and reports records/s (generator included).
func BenchmarkAdd(b *testing.B) {
	bt := newBenchTraffic()
	r := New(Config{Window: win, Lag: lag, Warmup: -1})
	var nextTick time.Time
	findings := 0
	b.ReportAllocs()
	for range b.N {
		rec, now := bt.next()
		findings += len(r.Add(rec, now))
		if !now.Before(nextTick) {
			findings += len(r.Tick(now))
			nextTick = now.Add(tickEvery)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(r.Stats().Recent), "settled-ids")
	if findings > 0 {
		b.Fatalf("%d findings from clean traffic", findings)
	}
}

// BenchmarkAddBatch is BenchmarkAdd with batches of 500 records and a
// Tick after each.
func BenchmarkAddBatch(b *testing.B) {
	bt := newBenchTraffic()
	r := New(Config{Window: win, Lag: lag, Warmup: -1})
	findings := 0
	const size = 500
	recs := make([]Record, 0, size)
	b.ReportAllocs()
	for i := 0; i < b.N; i += size {
		recs = recs[:0]
		var now time.Time
		for range min(size, b.N-i) {
			var rec Record
			rec, now = bt.next()
			recs = append(recs, rec)
		}
		findings += len(r.AddBatch(recs, now))
		findings += len(r.Tick(now))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if findings > 0 {
		b.Fatalf("%d findings from clean traffic", findings)
	}
}

// BenchmarkMemory reports the heap per message in flight (a SENT waiting
// for its confirmation) and per settled message id kept for duplicate
// detection.
func BenchmarkMemory(b *testing.B) {
	const n = 200_000
	calls := make([]call, n)
	for i := range calls {
		calls[i] = call{from: inst{id: fmt.Sprintf("%032x", 0xc000+i%64), svc: "web"}, to: "orders", id: i + 1, seq: i/64 + 1}
	}
	sents := make([]Record, n)
	for i := range sents {
		sents[i] = calls[i].sent(0)
	}
	whole := make([][]Record, n)
	for i := range whole {
		whole[i] = []Record{calls[i].sent(0), calls[i].received(ord1, ms(1)), calls[i].confirmed(ms(2))}
	}
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	var inFlight, settled float64
	for range b.N {
		r := New(Config{Window: win, Lag: lag, Warmup: -1})
		before := heap()
		r.AddBatch(sents, t0)
		inFlight = float64(heap()-before) / n
		runtime.KeepAlive(r)

		// Messages that settle at once leave only their id behind (and a
		// timer entry until their deadline, whose slice capacity stays).
		r = New(Config{Window: win, Lag: lag, Warmup: -1})
		before = heap()
		for i := range whole {
			r.AddBatch(whole[i], t0.Add(ms(3)))
		}
		r.Tick(t0.Add(win + lag + ms(10)))
		if s := r.Stats(); s.Messages != 0 || s.Recent != n || len(r.timers) != 0 {
			b.Fatalf("after settling: %+v, %d timers", s, len(r.timers))
		}
		settled = float64(heap()-before-int64(cap(r.timers))*int64(unsafe.Sizeof(timer{}))) / n
		runtime.KeepAlive(r)
	}
	b.ReportMetric(inFlight, "B/in-flight-msg")
	b.ReportMetric(settled, "B/settled-id")
}
