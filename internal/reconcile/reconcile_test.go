package reconcile

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests run histories of records on a simulated clock: t0 is the
// reconciler's first now, and Tick runs every tickEvery as the control
// plane's would.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	win       = 5 * time.Second
	lag       = 500 * time.Millisecond
	tickEvery = 100 * time.Millisecond
	td        = "spiffe://mesh.local/svc/"
)

// caller instances (service web or api) and callee instances (orders,
// payments).
var (
	webA = inst{id: "0000000000000000000000000000a001", svc: "web"}
	webB = inst{id: "0000000000000000000000000000a002", svc: "web"} // webA after a restart
	apiA = inst{id: "0000000000000000000000000000b001", svc: "api"}
	ord1 = inst{id: "0000000000000000000000000000c001", svc: "orders"}
	ord2 = inst{id: "0000000000000000000000000000c002", svc: "orders"}
	ord3 = inst{id: "0000000000000000000000000000c003", svc: "orders"}
	pay1 = inst{id: "0000000000000000000000000000d001", svc: "payments"}
)

type inst struct{ id, svc string }

func mid(n int) string { return fmt.Sprintf("%032x", n) }

func dig(s string) []byte { return []byte(fmt.Sprintf("%-32s", s)) }

// ms is a time offset from t0 in milliseconds.
func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// call describes one message for the record builders.
type call struct {
	from     inst
	to       string // destination service
	id, seq  int
	req, res string // digests
}

func (c call) base(kind RecordKind, at time.Duration) Record {
	return Record{
		Kind: kind, MessageID: mid(c.id), Seq: uint64(c.seq),
		Source: c.from.svc, Destination: c.to,
		SourceIdentity: td + c.from.svc, DestinationIdentity: td + c.to,
		Instance: c.from.id, PeerInstance: c.from.id, Reporter: ReporterCaller,
		At: t0.Add(at),
	}
}

func (c call) digests() (req, res []byte) {
	req, res = dig("req"), dig("res")
	if c.req != "" {
		req = dig(c.req)
	}
	if c.res != "" {
		res = dig(c.res)
	}
	return req, res
}

func (c call) sent(at time.Duration) Record { return c.base(Sent, at) }

func (c call) confirmed(at time.Duration) Record {
	r := c.base(Confirmed, at)
	r.RequestDigest, r.ResponseDigest = c.digests()
	return r
}

func (c call) callerOmission(at time.Duration, kind string) Record {
	r := c.base(Omission, at)
	r.OmissionKind, r.Detail = kind, "test"
	return r
}

// received is the RECEIVED of callee by (whose service is its own
// destination, even if the caller addressed another).
func (c call) received(by inst, at time.Duration) Record {
	r := c.base(Received, at)
	r.Destination, r.DestinationIdentity = by.svc, td+by.svc
	r.Instance, r.PeerInstance, r.Reporter = by.id, c.from.id, ReporterCallee
	r.RequestDigest, r.ResponseDigest = c.digests()
	return r
}

func (c call) calleeOmission(by inst, at time.Duration, kind string) Record {
	r := c.received(by, at)
	r.Kind, r.OmissionKind, r.Detail = Omission, kind, "test"
	r.RequestDigest, r.ResponseDigest = nil, nil
	return r
}

// ev is one step of a history: at now = t0+at, add recs as one batch (or
// call InstanceGone(gone)).
type ev struct {
	at   time.Duration
	recs []Record
	gone string
}

func batch(at time.Duration, recs ...Record) ev { return ev{at: at, recs: recs} }

// ok is a call whose three records arrive together, confirmed in time.
func ok(c call, callee inst, at time.Duration) ev {
	return batch(at, c.sent(at), c.received(callee, at+ms(2)), c.confirmed(at+ms(3)))
}

// run plays history on a fresh reconciler with ticks every tickEvery until
// end past the last event, and returns every finding.
func run(t *testing.T, cfg Config, history []ev, end time.Duration) ([]Finding, *Reconciler) {
	t.Helper()
	r := New(cfg)
	var out []Finding
	evs := slices.Clone(history)
	slices.SortStableFunc(evs, func(a, b ev) int { return int(a.at - b.at) })
	last := time.Duration(0)
	if len(evs) > 0 {
		last = evs[len(evs)-1].at
	}
	if end < last {
		end = last
	}
	i := 0
	for tick := time.Duration(0); tick <= end; tick += tickEvery {
		for i < len(evs) && evs[i].at <= tick {
			e := evs[i]
			now := t0.Add(e.at)
			if e.gone != "" {
				out = append(out, r.InstanceGone(e.gone, now)...)
			} else {
				out = append(out, r.AddBatch(e.recs, now)...)
			}
			i++
		}
		out = append(out, r.Tick(t0.Add(tick))...)
	}
	return out, r
}

// want is a finding reduced to what a case checks.
type want struct {
	kind   string
	id     int    // message id number; 0: none
	seq    uint64 // checked for sequence_gap only
	detail string // substring; empty: not checked
}

func reduce(fs []Finding) []want {
	var out []want
	for _, f := range fs {
		w := want{kind: f.Kind, detail: f.Detail}
		if f.MessageID != "" {
			fmt.Sscanf(f.MessageID, "%x", &w.id)
		}
		if f.Kind == KindSequenceGap {
			w.seq = f.Seq
		}
		out = append(out, w)
	}
	return out
}

func checkFindings(t *testing.T, got []Finding, wants []want) {
	t.Helper()
	g := reduce(got)
	matched := make([]bool, len(g))
	var missing []want
	for _, w := range wants {
		found := false
		for i, x := range g {
			if !matched[i] && x.kind == w.kind && x.id == w.id && x.seq == w.seq && strings.Contains(x.detail, w.detail) {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	var extra []Finding
	for i, m := range matched {
		if !m {
			extra = append(extra, got[i])
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("findings differ\nmissing: %+v\nunexpected:\n%s", missing, fmtFindings(extra))
	}
}

func fmtFindings(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s id=%s seq=%d %s->%s at=%s: %s\n", f.Kind, f.MessageID, f.Seq, f.Source, f.Destination,
			f.DetectedAt.Sub(t0), f.Detail)
	}
	return b.String()
}

var (
	cfgNoWarmup = Config{Window: win, Lag: lag, Warmup: -1}
	cfgWarmup   = Config{Window: win, Lag: lag}
)

type historyTest struct {
	name    string
	cfg     Config // zero: cfgNoWarmup
	history []ev
	end     time.Duration // zero: 4 windows past the last event
	want    []want
}

func runTable(t *testing.T, tests []historyTest) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg == (Config{}) {
				cfg = cfgNoWarmup
			}
			end := tt.end
			if end == 0 {
				for _, e := range tt.history {
					end = max(end, e.at)
				}
				end += 4 * win
			}
			got, _ := run(t, cfg, tt.history, end)
			checkFindings(t, got, tt.want)
		})
	}
}

// web -> orders calls of webA, message id n with seq n.
func wo(n int) call { return call{from: webA, to: "orders", id: n, seq: n} }

func TestUnconfirmed(t *testing.T) { runTable(t, unconfirmedTests()) }

func unconfirmedTests() []historyTest {
	c := wo(1)
	return []historyTest{{
		name:    "confirmed in time",
		history: []ev{ok(c, ord1, 0)},
	}, {
		name:    "never confirmed",
		history: []ev{batch(0, c.sent(0))},
		want:    []want{{kind: KindUnconfirmed, id: 1, detail: "within the 5s window"}},
	}, {
		name:    "never confirmed but received: only unconfirmed",
		history: []ev{batch(0, c.sent(0)), batch(ms(40), c.received(ord2, ms(10)))},
		want:    []want{{kind: KindUnconfirmed, id: 1}},
	}, {
		name:    "caller reported an omission",
		history: []ev{batch(0, c.sent(0)), batch(ms(2100), c.callerOmission(ms(2000), "truncated"))},
	}, {
		name:    "caller omission past the window is loud already",
		history: []ev{batch(0, c.sent(0)), batch(win+ms(200), c.callerOmission(win+ms(100), "unconfirmed"))},
	}, {
		name:    "callee reported it unconfirmed",
		history: []ev{batch(0, c.sent(0)), batch(ms(300), c.calleeOmission(ord1, ms(250), "unconfirmed"))},
	}, {
		name: "confirmation just before the window, arriving after it",
		history: []ev{
			batch(ms(50), c.sent(0)), batch(ms(60), c.received(ord1, ms(10))),
			batch(win+ms(300), c.confirmed(win-ms(1))),
		},
	}, {
		name: "confirmation just after the window",
		history: []ev{
			batch(ms(50), c.sent(0)), batch(ms(60), c.received(ord1, ms(10))),
			batch(win+ms(50), c.confirmed(win+ms(1))),
		},
		want: []want{{kind: KindUnconfirmed, id: 1, detail: "confirmed 5.001s after it was sent"}},
	}, {
		name: "confirmation after the finding: it stands, no second one",
		history: []ev{
			batch(ms(50), c.sent(0)), batch(ms(60), c.received(ord1, ms(10))),
			batch(win+ms(2000), c.confirmed(win+ms(1900))),
		},
		want: []want{{kind: KindUnconfirmed, id: 1, detail: "no confirmation"}},
	}, {
		name: "confirmation made in time but arriving long after the finding",
		history: []ev{
			batch(ms(50), c.sent(0)),
			batch(win+ms(3000), c.confirmed(ms(100)), c.received(ord1, ms(50))),
		},
		want: []want{{kind: KindUnconfirmed, id: 1}},
	}, {
		name:    "confirmation after the message was forgotten",
		history: []ev{batch(ms(50), c.sent(0)), batch(5*win, c.confirmed(5*win))},
		want:    []want{{kind: KindUnconfirmed, id: 1}},
	}, {
		name:    "CONFIRMED before SENT",
		history: []ev{batch(ms(10), c.confirmed(ms(5))), batch(ms(3000), c.sent(0)), batch(ms(3100), c.received(ord1, ms(3)))},
	}, {
		name:    "CONFIRMED before SENT, SENT after the message settled",
		history: []ev{batch(ms(10), c.confirmed(ms(5)), c.received(ord1, ms(3))), batch(win+ms(900), c.sent(0))},
	}, {
		name:    "RECEIVED before SENT",
		history: []ev{batch(ms(10), c.received(ord1, ms(3))), batch(ms(1500), c.sent(0), c.confirmed(ms(5)))},
	}, {
		name: "RECEIVED long before SENT (orphan brought back)",
		history: []ev{
			batch(ms(10), c.received(ord1, ms(3))),
			batch(win+lag+ms(800), c.sent(win)),
		},
		want: []want{{kind: KindUnconfirmed, id: 1}},
	}, {
		name: "SENT from a resent batch long after, CONFIRMED in the next batch",
		history: []ev{
			batch(20*time.Second, c.sent(0)),
			batch(20*time.Second+ms(50), c.confirmed(ms(100)), c.received(ord1, ms(90))),
		},
	}, {
		name: "SENT and CONFIRMED in different batches, 4s apart",
		history: []ev{
			batch(ms(50), c.sent(0)),
			batch(ms(4000), c.confirmed(ms(3900))),
			batch(ms(4500), c.received(ord3, ms(3800))),
		},
	}}
}

func TestUnconfirmedCallerDies(t *testing.T) {
	// webA sends 6 messages to orders over three callee instances; it
	// dies after the confirmations of 1-3 were uploaded. 4 and 5 were
	// delivered (RECEIVED), 6 was not.
	callees := []inst{ord1, ord2, ord3}
	var h []ev
	for n := 1; n <= 6; n++ {
		c := wo(n)
		at := ms(10 * n)
		h = append(h, batch(at+ms(5), c.sent(at)))
		if n <= 5 {
			h = append(h, batch(at+ms(30), c.received(callees[n%3], at+ms(2))))
		}
		if n <= 3 {
			h = append(h, batch(at+ms(60), c.confirmed(at+ms(3))))
		}
	}
	// The restarted caller carries on with a new space from 1.
	for n := 1; n <= 3; n++ {
		c := call{from: webB, to: "orders", id: 100 + n, seq: n}
		h = append(h, ok(c, callees[n%3], ms(500+10*n)))
	}
	for _, gone := range []bool{false, true} {
		t.Run(fmt.Sprintf("InstanceGone=%v", gone), func(t *testing.T) {
			h := h
			if gone {
				h = append(slices.Clone(h), ev{at: ms(200), gone: webA.id})
			}
			got, _ := run(t, cfgNoWarmup, h, 4*win)
			checkFindings(t, got, []want{
				{kind: KindUnconfirmed, id: 4}, {kind: KindUnconfirmed, id: 5}, {kind: KindUnconfirmed, id: 6},
			})
		})
	}
}

func TestSequenceGap(t *testing.T) { runTable(t, sequenceGapTests()) }

func sequenceGapTests() []historyTest {
	w := func(n int) call { return wo(n) }
	wp := func(n, seq int) call { return call{from: webA, to: "payments", id: 1000 + n, seq: seq} }
	b := func(n, seq int) call { return call{from: webB, to: "orders", id: 500 + n, seq: seq} }
	return []historyTest{{
		name:    "in order",
		history: []ev{ok(w(1), ord1, 0), ok(w(2), ord2, ms(10)), ok(w(3), ord3, ms(20))},
	}, {
		name:    "one missing",
		history: []ev{ok(w(1), ord1, 0), ok(w(2), ord1, ms(10)), ok(w(4), ord1, ms(30))},
		want:    []want{{kind: KindSequenceGap, seq: 3, detail: "seq 3 of caller instance " + webA.id + " to orders"}},
	}, {
		name:    "a range missing is one finding",
		history: []ev{ok(w(1), ord1, 0), ok(w(5), ord1, ms(30))},
		want:    []want{{kind: KindSequenceGap, seq: 2, detail: "seqs 2-4 (3 messages)"}},
	}, {
		name: "out-of-order batches fill the hole",
		history: []ev{
			ok(w(1), ord1, 0), ok(w(2), ord1, ms(10)), ok(w(4), ord2, ms(30)),
			batch(ms(3000), w(3).sent(ms(20)), w(3).confirmed(ms(25)), w(3).received(ord3, ms(22))),
		},
	}, {
		name: "reordered within a batch",
		history: []ev{batch(ms(100),
			w(2).sent(ms(11)), w(1).sent(ms(12)), w(4).sent(ms(13)), w(3).sent(ms(14)),
			w(1).confirmed(ms(20)), w(2).confirmed(ms(21)), w(4).confirmed(ms(22)), w(3).confirmed(ms(23))),
			batch(ms(150), w(1).received(ord1, ms(15)), w(2).received(ord2, ms(15)), w(3).received(ord3, ms(15)), w(4).received(ord1, ms(15))),
		},
	}, {
		name: "late fill after the window: one finding, it stands",
		history: []ev{
			ok(w(1), ord1, 0), ok(w(3), ord1, ms(30)),
			batch(win+ms(1000), w(2).sent(ms(20)), w(2).confirmed(ms(25)), w(2).received(ord1, ms(22))),
		},
		want: []want{{kind: KindSequenceGap, seq: 2}},
	}, {
		name: "split hole: the ends stay missing",
		history: []ev{
			ok(w(1), ord1, 0), ok(w(6), ord1, ms(60)),
			ok(w(3), ord2, ms(300)),
		},
		want: []want{{kind: KindSequenceGap, seq: 2}, {kind: KindSequenceGap, seq: 4, detail: "seqs 4-5"}},
	}, {
		name: "balanced over three callee instances, callee records first and interleaved",
		history: func() []ev {
			var h []ev
			callees := []inst{ord1, ord2, ord3}
			for n := 1; n <= 12; n++ {
				h = append(h, batch(ms(5*n), w(n).received(callees[(n*7)%3], ms(n))))
			}
			for n := 1; n <= 12; n += 4 {
				h = append(h, batch(ms(100+n), w(n).sent(ms(n)), w(n+1).sent(ms(n+1)), w(n+2).sent(ms(n+2)), w(n+3).sent(ms(n+3))))
			}
			for n := 12; n >= 1; n-- {
				h = append(h, batch(ms(300+n), w(n).confirmed(ms(20+n))))
			}
			return h
		}(),
	}, {
		name: "one callee instance sees only every third seq",
		history: []ev{
			batch(ms(10), w(1).received(ord1, ms(1)), w(4).received(ord1, ms(4)), w(7).received(ord1, ms(7))),
			batch(ms(20), w(2).received(ord2, ms(2)), w(5).received(ord2, ms(5))),
			batch(ms(4000), w(3).received(ord3, ms(3)), w(6).received(ord3, ms(6))),
			batch(ms(50), w(1).sent(ms(1)), w(2).sent(ms(2)), w(3).sent(ms(3)), w(4).sent(ms(4)), w(5).sent(ms(5)), w(6).sent(ms(6)), w(7).sent(ms(7))),
			batch(ms(100), w(1).confirmed(ms(9)), w(2).confirmed(ms(9)), w(3).confirmed(ms(9)), w(4).confirmed(ms(9)), w(5).confirmed(ms(9)), w(6).confirmed(ms(9)), w(7).confirmed(ms(9))),
		},
	}, {
		name: "retries are new messages with new seqs",
		history: []ev{
			ok(w(1), ord1, 0),
			batch(ms(20), w(2).sent(ms(10)), w(2).callerOmission(ms(15), "unconfirmed")),
			ok(w(3), ord2, ms(20)), // the retry of 2
			batch(ms(40), w(4).sent(ms(30)), w(4).callerOmission(ms(31), "misrouted")),
			ok(w(5), ord3, ms(40)), // the retry of 4
		},
	}, {
		name: "a misrouted message's seq is named by its omission alone",
		history: []ev{
			ok(w(1), ord1, 0), batch(ms(20), w(2).callerOmission(ms(15), "misrouted")), ok(w(3), ord1, ms(30)),
		},
	}, {
		name: "caller restart: a new space from 1",
		history: []ev{
			ok(w(1), ord1, 0), ok(w(2), ord1, ms(10)), ok(w(3), ord1, ms(20)),
			ok(b(1, 1), ord2, ms(1000)), ok(b(2, 2), ord2, ms(1010)),
		},
	}, {
		name:    "first seen above 1 is the baseline",
		history: []ev{ok(w(7), ord1, 0), ok(w(8), ord1, ms(10)), ok(w(9), ord1, ms(20))},
	}, {
		name:    "a lower seq after the baseline is not a gap",
		history: []ev{ok(w(7), ord1, 0), ok(w(5), ord1, ms(10)), ok(w(8), ord1, ms(20))},
	}, {
		name: "spaces are per destination",
		history: []ev{
			ok(w(1), ord1, 0), ok(wp(1, 1), pay1, ms(10)), ok(w(2), ord1, ms(20)), ok(wp(2, 2), pay1, ms(30)),
			ok(call{from: apiA, to: "orders", id: 900, seq: 1}, ord1, ms(40)),
		},
	}, {
		name: "callee records do not fill the caller's gap",
		history: []ev{
			ok(w(1), ord1, 0), batch(ms(20), w(2).received(ord2, ms(15))), ok(w(3), ord1, ms(30)),
		},
		want: []want{{kind: KindSequenceGap, seq: 2}},
	}, {
		name: "InstanceGone reports an open hole at once",
		history: []ev{
			ok(w(1), ord1, 0), ok(w(3), ord1, ms(30)), {at: ms(1000), gone: webA.id},
		},
		end:  ms(1000),
		want: []want{{kind: KindSequenceGap, seq: 2, detail: "before the instance went away"}},
	}, {
		name: "InstanceGone of a callee changes nothing",
		history: []ev{
			ok(w(1), ord1, 0), ok(w(3), ord1, ms(30)), {at: ms(1000), gone: ord1.id},
			batch(ms(2000), w(2).sent(ms(20)), w(2).confirmed(ms(25)), w(2).received(ord1, ms(22))),
		},
	}, {
		name: "warm-up: records made before it open no hole",
		cfg:  cfgWarmup,
		history: []ev{
			// A restarted control plane: resent batches of records made
			// before it started, with seqs 3 and 4 acknowledged and lost.
			batch(0, w(2).sent(-ms(300)), w(5).sent(-ms(200))),
			batch(ms(50), w(2).confirmed(-ms(100)), w(5).confirmed(-ms(100))),
			// After the warm-up: 6 then 8.
			ok(w(6), ord1, win+ms(100)), ok(w(8), ord1, win+ms(200)),
		},
		want: []want{{kind: KindSequenceGap, seq: 7}},
	}, {
		name: "warm-up: a hole below the first record made after it is not judged",
		cfg:  cfgWarmup,
		history: []ev{
			batch(ms(10), w(10).sent(ms(5)), w(10).confirmed(ms(6))),
			// 11 was made before the end of warm-up and lost; 12 after.
			ok(w(12), ord1, win+ms(100)), ok(w(13), ord1, win+ms(200)),
		},
	}}
}

func TestDuplicate(t *testing.T) { runTable(t, duplicateTests()) }

func duplicateTests() []historyTest {
	c := wo(1)
	return []historyTest{{
		name: "RECEIVED by two callee instances",
		history: []ev{
			batch(ms(10), c.sent(0)), batch(ms(20), c.received(ord1, ms(5))),
			batch(ms(30), c.received(ord2, ms(6))), batch(ms(40), c.confirmed(ms(8))),
		},
		want: []want{{kind: KindDuplicate, id: 1, detail: "RECEIVED twice: delivered by callee instance " + ord1.id + " and by instance " + ord2.id}},
	}, {
		name:    "RECEIVED again after the message settled",
		history: []ev{ok(c, ord1, 0), batch(ms(2000), c.received(ord3, ms(1900)))},
		want:    []want{{kind: KindDuplicate, id: 1, detail: "RECEIVED again after the message settled"}},
	}, {
		name: "RECEIVED three times: one finding",
		history: []ev{
			ok(c, ord1, 0), batch(ms(20), c.received(ord2, ms(5))), batch(ms(30), c.received(ord3, ms(6))),
		},
		want: []want{{kind: KindDuplicate, id: 1}},
	}, {
		name:    "CONFIRMED twice",
		history: []ev{ok(c, ord1, 0), batch(ms(20), c.confirmed(ms(5)))},
		want:    []want{{kind: KindDuplicate, id: 1, detail: "CONFIRMED again"}},
	}, {
		name:    "CONFIRMED twice while in flight",
		history: []ev{batch(ms(10), c.sent(0), c.confirmed(ms(5)), c.confirmed(ms(6)))},
		want:    []want{{kind: KindDuplicate, id: 1, detail: "CONFIRMED twice"}},
	}, {
		name:    "SENT twice: a replay",
		history: []ev{batch(ms(10), c.sent(0)), batch(ms(20), c.sent(ms(10))), batch(ms(30), c.confirmed(ms(20)), c.received(ord1, ms(15)))},
		want:    []want{{kind: KindDuplicate, id: 1, detail: "SENT twice"}},
	}, {
		name:    "SENT replayed after the message settled",
		history: []ev{ok(c, ord1, 0), batch(ms(3000), c.sent(ms(3000)))},
		want:    []want{{kind: KindDuplicate, id: 1, detail: "SENT again"}},
	}, {
		name: "not: a delivery and an omission at two callees",
		history: []ev{
			batch(ms(10), c.sent(0)), batch(ms(20), c.calleeOmission(ord1, ms(5), "truncated")),
			batch(ms(30), c.received(ord2, ms(6))), batch(ms(40), c.confirmed(ms(8))),
		},
	}, {
		name: "not: the same seq in two instances' spaces",
		history: []ev{
			ok(call{from: webA, to: "orders", id: 1, seq: 1}, ord1, 0),
			ok(call{from: webB, to: "orders", id: 2, seq: 1}, ord1, ms(10)),
		},
	}, {
		name: "not: a retry with a new id",
		history: []ev{
			batch(ms(10), c.sent(0), c.callerOmission(ms(5), "unconfirmed")), batch(ms(20), c.received(ord1, ms(3))),
			ok(wo(2), ord2, ms(20)),
		},
	}}
}

func TestDigestMismatch(t *testing.T) { runTable(t, digestTests()) }

func digestTests() []historyTest {
	c := wo(1)
	bad := func(req, res string) call { b := c; b.req, b.res = req, res; return b }
	return []historyTest{{
		name:    "same digests",
		history: []ev{ok(c, ord1, 0)},
	}, {
		name:    "request differs, CONFIRMED first",
		history: []ev{batch(ms(10), c.sent(0), c.confirmed(ms(5))), batch(ms(50), bad("other", "").received(ord1, ms(3)))},
		want:    []want{{kind: KindDigestMismatch, id: 1, detail: fmt.Sprintf("request digest: caller confirmed %x, callee received %x", dig("req"), dig("other"))}},
	}, {
		name:    "response differs, RECEIVED first",
		history: []ev{batch(ms(10), c.received(ord2, ms(3))), batch(ms(50), c.sent(0), bad("", "other").confirmed(ms(5)))},
		want:    []want{{kind: KindDigestMismatch, id: 1, detail: fmt.Sprintf("response digest: caller confirmed %x, callee received %x", dig("other"), dig("res"))}},
	}, {
		name:    "both differ: one finding",
		history: []ev{batch(ms(10), c.sent(0), c.confirmed(ms(5))), batch(ms(50), bad("x", "y").received(ord1, ms(3)))},
		want:    []want{{kind: KindDigestMismatch, id: 1, detail: "; response digest"}},
	}, {
		name: "a side without digests is not compared",
		history: []ev{batch(ms(10), c.sent(0), c.confirmed(ms(5))), batch(ms(50), func() Record {
			r := c.received(ord1, ms(3))
			r.RequestDigest, r.ResponseDigest = nil, nil
			return r
		}())},
	}, {
		name:    "a duplicate RECEIVED with other digests is a duplicate only",
		history: []ev{ok(c, ord1, 0), batch(ms(50), bad("x", "y").received(ord2, ms(3)))},
		want:    []want{{kind: KindDuplicate, id: 1}},
	}}
}

func TestMisrouted(t *testing.T) { runTable(t, misroutedTests()) }

func misroutedTests() []historyTest {
	c := wo(1)
	withID := func(r Record, id string) Record { r.DestinationIdentity = id; return r }
	return []historyTest{{
		name:    "RECEIVED by the addressed service",
		history: []ev{ok(c, ord2, 0)},
	}, {
		name:    "RECEIVED by another service",
		history: []ev{batch(ms(10), c.sent(0)), batch(ms(20), c.received(pay1, ms(3))), batch(ms(30), c.confirmed(ms(5)))},
		want:    []want{{kind: KindMisrouted, id: 1, detail: `addressed to "orders", received by "payments" (callee instance ` + pay1.id}},
	}, {
		name:    "RECEIVED by another service before the SENT",
		history: []ev{batch(ms(10), c.received(pay1, ms(3))), batch(ms(20), c.sent(0), c.confirmed(ms(5)))},
		want:    []want{{kind: KindMisrouted, id: 1}},
	}, {
		name:    "CONFIRMED by another service's identity",
		history: []ev{batch(ms(10), c.sent(0), c.received(ord1, ms(3)), withID(c.confirmed(ms(5)), td+"payments"))},
		want:    []want{{kind: KindMisrouted, id: 1, detail: "confirmed by spiffe://mesh.local/svc/payments, addressed spiffe://mesh.local/svc/orders"}},
	}, {
		name:    "CONFIRMED by another trust domain",
		history: []ev{batch(ms(10), c.sent(0), c.received(ord1, ms(3)), withID(c.confirmed(ms(5)), "spiffe://evil.example/svc/orders"))},
		want:    []want{{kind: KindMisrouted, id: 1}},
	}, {
		name:    "CONFIRMED by another service, before any SENT of the space",
		history: []ev{batch(ms(10), withID(c.confirmed(ms(5)), td+"payments")), batch(ms(20), c.sent(0))},
		want:    []want{{kind: KindMisrouted, id: 1, detail: "addressed spiffe://<trust domain>/svc/orders"}},
	}, {
		name:    "identities absent",
		history: []ev{batch(ms(10), withID(c.sent(0), ""), withID(c.confirmed(ms(5)), ""), c.received(ord1, ms(3)))},
	}, {
		name: "both RECEIVED by another service and CONFIRMED by its identity: one finding",
		history: []ev{batch(ms(10), c.sent(0), c.received(pay1, ms(3))),
			batch(ms(20), withID(c.confirmed(ms(5)), td+"payments"))},
		want: []want{{kind: KindMisrouted, id: 1}},
	}, {
		name:    "the caller reported it",
		history: []ev{batch(ms(10), c.sent(0), c.callerOmission(ms(5), "misrouted"))},
	}, {
		name:    "the callee refused it",
		history: []ev{batch(ms(10), c.sent(0), c.callerOmission(ms(5), "misrouted")), batch(ms(20), c.calleeOmission(pay1, ms(3), "misrouted"))},
	}}
}

func TestAuditGap(t *testing.T) { runTable(t, auditGapTests()) }

func auditGapTests() []historyTest {
	return []historyTest{{
		name: "messages over MaxTracked",
		cfg:  Config{Window: win, Lag: lag, Warmup: -1, MaxTracked: 2},
		history: []ev{
			batch(ms(10), wo(1).sent(0), wo(2).sent(0), wo(3).sent(0)),
			batch(ms(20), wo(1).confirmed(ms(5)), wo(2).confirmed(ms(5)), wo(3).confirmed(ms(5))),
			batch(ms(30), wo(1).received(ord1, ms(3)), wo(2).received(ord1, ms(3)), wo(3).received(ord1, ms(3))),
		},
		// 3 is not tracked at its SENT and CONFIRMED; its RECEIVED finds room.
		want: []want{{kind: KindAuditGap, detail: "2 records of messages not tracked (limit 2 messages)"}},
	}, {
		name: "spaces over MaxSpaces",
		cfg:  Config{Window: win, Lag: lag, Warmup: -1, MaxSpaces: 1},
		history: []ev{
			ok(wo(1), ord1, 0), ok(call{from: webA, to: "payments", id: 2, seq: 1}, pay1, ms(10)),
		},
		want: []want{{kind: KindAuditGap, detail: "2 caller records outside a tracked sequence space (limit 1 spaces)"}},
	}, {
		name: "holes over MaxTracked",
		cfg:  Config{Window: win, Lag: lag, Warmup: -1, MaxTracked: 1},
		history: []ev{
			batch(ms(10), wo(1).sent(0), wo(1).confirmed(ms(1)), wo(1).received(ord1, ms(1))),
			batch(ms(20), wo(3).sent(0), wo(3).confirmed(ms(1)), wo(3).received(ord1, ms(1))),
			batch(ms(30), wo(5).sent(0), wo(5).confirmed(ms(1)), wo(5).received(ord1, ms(1))),
		},
		want: []want{
			{kind: KindSequenceGap, seq: 2},
			{kind: KindAuditGap, detail: "1 missing sequence ranges not tracked (limit 1)"},
		},
	}}
}

func TestFindingFields(t *testing.T) {
	c := call{from: apiA, to: "payments", id: 42, seq: 3}
	got, _ := run(t, cfgNoWarmup, []ev{batch(ms(10), c.sent(ms(7)))}, 2*win)
	want := Finding{
		Kind: KindUnconfirmed, MessageID: mid(42), Seq: 3, Source: "api", Destination: "payments",
		SourceIdentity: td + "api", DestinationIdentity: td + "payments",
		DetectedAt: t0.Add(win + ms(7) + lag).Add(tickEvery - ms(7)),
		Detail: "sent at 2026-03-01T12:00:00.007Z by instance " + apiA.id +
			"; no confirmation or omission from the caller within the 5s window",
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("findings = \n%s\nwant %+v", fmtFindings(got), want)
	}
}

// The unconfirmed finding waits for the SENT's At + Window + Lag on the
// control plane's clock, clamped to [arrival, arrival + Window] for the
// window part.
func TestUnconfirmedTiming(t *testing.T) {
	tests := []struct {
		name         string
		sentAt, adds time.Duration
		wantAt       time.Duration
	}{
		{name: "on time", sentAt: 0, adds: ms(50), wantAt: win + lag},
		{name: "late batch", sentAt: 0, adds: 3 * win, wantAt: 3*win + lag},
		{name: "caller clock ahead", sentAt: 10 * win, adds: ms(50), wantAt: ms(50) + win + lag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(cfgNoWarmup)
			r.Tick(t0)
			if got := r.AddBatch([]Record{wo(1).sent(tt.sentAt)}, t0.Add(tt.adds)); len(got) != 0 {
				t.Fatalf("Add: %s", fmtFindings(got))
			}
			if got := r.Tick(t0.Add(tt.wantAt - 1)); len(got) != 0 {
				t.Fatalf("Tick 1ns before %v: %s", tt.wantAt, fmtFindings(got))
			}
			got := r.Tick(t0.Add(tt.wantAt))
			if len(got) != 1 || got[0].Kind != KindUnconfirmed {
				t.Fatalf("Tick at %v = %s, want one unconfirmed", tt.wantAt, fmtFindings(got))
			}
		})
	}
}

func TestLateConfirmationCounted(t *testing.T) {
	c := wo(1)
	_, r := run(t, cfgNoWarmup, []ev{batch(ms(50), c.sent(0)), batch(win+ms(3000), c.confirmed(ms(100)))}, 2*win)
	if got := r.Stats().LateConfirmations; got != 1 {
		t.Errorf("LateConfirmations = %d, want 1", got)
	}
}

// Once every message settled and time passed, nothing is left but the
// settled ids, and those go after two more windows.
func TestForgets(t *testing.T) {
	var h []ev
	for n := 1; n <= 100; n++ {
		h = append(h, ok(wo(n), ord1, ms(n)))
	}
	h = append(h, batch(ms(200), wo(101).sent(ms(150))))                             // unconfirmed
	h = append(h, batch(ms(200), wo(102).received(ord2, ms(150))))                   // orphan
	h = append(h, batch(ms(200), wo(103).sent(ms(150)), wo(103).confirmed(ms(160)))) // no callee record
	_, r := run(t, cfgNoWarmup, h, 3*win)
	s := r.Stats()
	if s.Messages != 0 || s.Holes != 0 {
		t.Errorf("after 3 windows: %+v, want no messages or holes", s)
	}
	if s.Orphans != 1 {
		t.Errorf("Orphans = %d, want 1", s.Orphans)
	}
	r.Tick(t0.Add(20 * win))
	if s := r.Stats(); s.Recent != 0 || s.Spaces != 0 {
		t.Errorf("after 20 windows: %+v, want no settled ids or spaces", s)
	}
	if len(r.timers) != 0 {
		t.Errorf("%d timers left", len(r.timers))
	}
}

// Batches of several callers and a ticker race for the lock, passing
// nows that may go back a little; a clean history still makes nothing.
func TestConcurrentUse(t *testing.T) {
	r := New(cfgNoWarmup)
	var clock atomic.Int64 // ms since t0
	now := func() time.Time { return t0.Add(ms(int(clock.Load()))) }
	var wg sync.WaitGroup
	var found atomic.Int64
	callers := []inst{webA, webB, apiA, {id: "0000000000000000000000000000e001", svc: "batch"}}
	for g, from := range callers {
		wg.Go(func() {
			callees := []inst{ord1, ord2, ord3}
			for n := 1; n <= 2000; n++ {
				c := call{from: from, to: "orders", id: g*100000 + n, seq: n}
				at := now().Sub(t0)
				fs := r.AddBatch([]Record{c.sent(at), c.received(callees[n%3], at), c.confirmed(at)}, now())
				found.Add(int64(len(fs)))
				if n%100 == 0 {
					clock.Add(1)
				}
			}
		})
	}
	stop := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				found.Add(int64(len(r.Tick(now()))))
				r.Stats()
			}
		}
	})
	wg.Wait()
	close(stop)
	ticker.Wait()
	found.Add(int64(len(r.Tick(now().Add(3 * win)))))
	if n := found.Load(); n != 0 {
		t.Errorf("%d findings from a clean history", n)
	}
	if err := r.check(); err != nil {
		t.Error(err)
	}
}
