package reconcile

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// A traffic simulator: callers with several instances (restarting now and
// then) call destinations balanced over several callee instances; some
// calls fail loudly (the caller records an omission) and are retried as
// new messages. Each sidecar uploads its records in time-cut batches, in
// order, each batch delayed at random. Everything stays below the window,
// so a history is clean: no finding may come of it.

type simParams struct {
	seed       uint64
	services   int // caller services
	instances  int // instances of each caller service at a time
	dests      int // destination services
	callees    int // instances of each destination
	messages   int
	restartPct int           // chance (%) per message that its caller instance is replaced by a new one first
	failPct    int           // chance (%) that a message fails loudly and is retried
	gap        time.Duration // mean time between messages
	maxLatency time.Duration // SENT to CONFIRMED
	maxDelay   time.Duration // batch upload delay
	jitter     time.Duration // seq taken to SENT recorded
}

var defaultSim = simParams{
	services: 3, instances: 2, dests: 3, callees: 3, messages: 2000,
	restartPct: 1, failPct: 5,
	gap: 2 * time.Millisecond, maxLatency: 2 * time.Second, maxDelay: 1500 * time.Millisecond, jitter: 3 * time.Millisecond,
}

type simMsg struct {
	id             int
	from           inst
	to             string
	callee         inst
	alloc          time.Duration // when its seq was taken
	seq            int
	recs           []simRec
	failed, routed bool // failed loudly / misrouted
}

type simRec struct {
	rec      Record
	at       time.Duration // = rec.At - t0
	uploader string
	order    int // creation order, breaks ties
}

type simHistory struct {
	p    simParams
	msgs []*simMsg
}

func simulate(p simParams) *simHistory {
	rng := rand.New(rand.NewPCG(p.seed, 0x7a11))
	dur := func(d time.Duration) time.Duration {
		if d <= 0 {
			return 0
		}
		return time.Duration(rng.Int64N(int64(d) + 1))
	}
	h := &simHistory{p: p}
	instSeq := 0
	newInst := func(svc string) inst {
		instSeq++
		return inst{id: fmt.Sprintf("%08x%024x", p.seed&0xffffffff, instSeq), svc: svc}
	}
	callers := make([][]inst, p.services)
	for s := range callers {
		for range p.instances {
			callers[s] = append(callers[s], newInst(fmt.Sprintf("caller%d", s)))
		}
	}
	callees := make([][]inst, p.dests)
	for d := range callees {
		for range p.callees {
			callees[d] = append(callees[d], newInst(fmt.Sprintf("dest%d", d)))
		}
	}
	nextID := 0
	var t time.Duration
	var add func(from inst, d int, at time.Duration, retries int)
	add = func(from inst, d int, at time.Duration, retries int) {
		nextID++
		m := &simMsg{id: nextID, from: from, to: fmt.Sprintf("dest%d", d), alloc: at}
		m.callee = callees[d][rng.IntN(len(callees[d]))]
		h.msgs = append(h.msgs, m)
		if retries < 2 && rng.IntN(100) < p.failPct {
			m.failed = true
			m.routed = rng.IntN(4) == 0
			end := at + dur(p.maxLatency)
			add(from, d, end+dur(10*time.Millisecond), retries+1)
		}
	}
	for range p.messages {
		t += dur(2 * p.gap)
		s := rng.IntN(p.services)
		i := rng.IntN(p.instances)
		if rng.IntN(100) < p.restartPct {
			callers[s][i] = newInst(fmt.Sprintf("caller%d", s))
		}
		add(callers[s][i], rng.IntN(p.dests), t, 0)
	}
	// Seqs are taken in time order per (caller instance, destination).
	slices.SortStableFunc(h.msgs, func(a, b *simMsg) int { return int(a.alloc - b.alloc) })
	seqs := make(map[spaceKey]int)
	order := 0
	for _, m := range h.msgs {
		k := spaceKey{m.from.id, m.to}
		seqs[k]++
		m.seq = seqs[k]
		c := call{from: m.from, to: m.to, id: m.id, seq: m.seq,
			req: fmt.Sprintf("q%d", rng.Uint32()), res: fmt.Sprintf("s%d", rng.Uint32())}
		rec := func(r Record, uploader string) {
			order++
			m.recs = append(m.recs, simRec{rec: r, at: r.At.Sub(t0), uploader: uploader, order: order})
		}
		sentAt := m.alloc + dur(p.jitter)
		rec(c.sent(sentAt), m.from.id)
		switch {
		case m.routed:
			rec(c.callerOmission(sentAt+dur(p.maxLatency/4), "misrouted"), m.from.id)
		case m.failed:
			recvAt := sentAt + dur(p.maxLatency/2)
			switch rng.IntN(3) {
			case 0: // the callee saw it cut short too
				rec(c.calleeOmission(m.callee, recvAt, "truncated"), m.callee.id)
			case 1: // the callee answered; the response was cut short
				rec(c.received(m.callee, recvAt), m.callee.id)
			}
			rec(c.callerOmission(recvAt+dur(p.maxLatency/2), "truncated"), m.from.id)
		default:
			recvAt := sentAt + dur(p.maxLatency/2)
			rec(c.received(m.callee, recvAt), m.callee.id)
			rec(c.confirmed(recvAt+dur(p.maxLatency/2)), m.from.id)
		}
	}
	return h
}

// events cuts every uploader's records, in the order made, into 50ms
// batches and delivers each batch after a random delay, in order per
// uploader.
func (h *simHistory) events(recs []simRec) []ev {
	rng := rand.New(rand.NewPCG(h.p.seed, 0xba7c4))
	const cut = 50 * time.Millisecond
	by := make(map[string][]simRec)
	var uploaders []string
	for _, r := range recs {
		if _, ok := by[r.uploader]; !ok {
			uploaders = append(uploaders, r.uploader)
		}
		by[r.uploader] = append(by[r.uploader], r)
	}
	var evs []ev
	for _, u := range uploaders {
		rs := by[u]
		slices.SortStableFunc(rs, func(a, b simRec) int {
			if a.at != b.at {
				return int(a.at - b.at)
			}
			return a.order - b.order
		})
		var last time.Duration
		for i := 0; i < len(rs); {
			end := (rs[i].at/cut + 1) * cut
			j := i
			var b []Record
			for j < len(rs) && rs[j].at < end {
				b = append(b, rs[j].rec)
				j++
			}
			arrive := max(last, end+time.Duration(rng.Int64N(int64(h.p.maxDelay)+1)))
			last = arrive
			evs = append(evs, batch(arrive, b...))
			i = j
		}
	}
	slices.SortStableFunc(evs, func(a, b ev) int { return int(a.at - b.at) })
	return evs
}

func (h *simHistory) all() []simRec {
	var out []simRec
	for _, m := range h.msgs {
		out = append(out, m.recs...)
	}
	return out
}

// play runs recs, uploaded as events makes them, and ticks until after
// past the last upload.
func (h *simHistory) play(t *testing.T, cfg Config, recs []simRec, after time.Duration) ([]Finding, *Reconciler) {
	t.Helper()
	evs := h.events(recs)
	end := after
	if len(evs) > 0 {
		end += evs[len(evs)-1].at
	}
	return run(t, cfg, evs, end)
}

func simSeeds(t *testing.T) int {
	if testing.Short() {
		return 4
	}
	return 16
}

func TestSimClean(t *testing.T) {
	for seed := range uint64(simSeeds(t)) {
		for _, cfg := range []Config{cfgNoWarmup, cfgWarmup} {
			p := defaultSim
			p.seed = seed
			h := simulate(p)
			got, r := h.play(t, cfg, h.all(), 4*win)
			if len(got) != 0 {
				t.Fatalf("seed %d, warmup %v: %d findings from a clean history, first:\n%s",
					seed, cfg.Warmup, len(got), fmtFindings(got[:min(len(got), 10)]))
			}
			if s := r.Stats(); s.Messages != 0 || s.Holes != 0 || s.Orphans != 0 {
				t.Errorf("seed %d: after the history: %+v, want nothing tracked and no orphans", seed, s)
			}
		}
	}
}

func TestSimDroppedConfirmation(t *testing.T) {
	for seed := range uint64(simSeeds(t)) {
		p := defaultSim
		p.seed = seed
		h := simulate(p)
		rng := rand.New(rand.NewPCG(seed, 1))
		var victim *simMsg
		for victim == nil || victim.failed {
			victim = h.msgs[rng.IntN(len(h.msgs))]
		}
		recs := slices.DeleteFunc(h.all(), func(r simRec) bool {
			return r.rec.MessageID == mid(victim.id) && r.rec.Kind == Confirmed
		})
		got, _ := h.play(t, cfgNoWarmup, recs, 4*win)
		checkFindingsSeed(t, seed, got, []want{{kind: KindUnconfirmed, id: victim.id}})
	}
}

func TestSimCallerKilled(t *testing.T) {
	for seed := range uint64(simSeeds(t)) {
		p := defaultSim
		p.seed = seed
		h := simulate(p)
		rng := rand.New(rand.NewPCG(seed, 2))
		pick := h.msgs[rng.IntN(len(h.msgs)/2)+len(h.msgs)/4]
		victim, kill := pick.from.id, pick.alloc+time.Duration(rng.Int64N(int64(100*time.Millisecond)))
		var recs []simRec
		var wants []want
		for _, m := range h.msgs {
			if m.from.id != victim {
				recs = append(recs, m.recs...)
				continue
			}
			if m.alloc > kill-p.jitter {
				continue // never sent: the caller was gone
			}
			inFlight := false
			for _, r := range m.recs {
				if r.uploader == victim && r.at > kill {
					inFlight = true
					continue // made after the kill
				}
				recs = append(recs, r)
			}
			if inFlight {
				wants = append(wants, want{kind: KindUnconfirmed, id: m.id})
			}
		}
		if len(wants) == 0 {
			t.Logf("seed %d: no message in flight at the kill", seed)
		}
		got, _ := h.play(t, cfgNoWarmup, recs, 4*win)
		checkFindingsSeed(t, seed, got, wants)
	}
}

func TestSimDroppedSent(t *testing.T) {
	for seed := range uint64(simSeeds(t)) {
		p := defaultSim
		p.seed = seed
		h := simulate(p)
		rng := rand.New(rand.NewPCG(seed, 3))
		// The first and highest seqs seen of each space bound its gaps.
		first, top := make(map[spaceKey]uint64), make(map[spaceKey]uint64)
		for _, e := range h.events(h.all()) {
			for _, r := range e.recs {
				if r.caller() {
					k := spaceKey{r.Instance, r.Destination}
					if _, ok := first[k]; !ok {
						first[k] = r.Seq
					}
					top[k] = max(top[k], r.Seq)
				}
			}
		}
		var victim *simMsg
		for victim == nil {
			m := h.msgs[rng.IntN(len(h.msgs))]
			k := spaceKey{m.from.id, m.to}
			if s := uint64(m.seq); s > first[k] && s < top[k] {
				victim = m
			}
		}
		recs := slices.DeleteFunc(h.all(), func(r simRec) bool {
			return r.rec.MessageID == mid(victim.id) && r.rec.caller()
		})
		got, _ := h.play(t, cfgNoWarmup, recs, 4*win)
		checkFindingsSeed(t, seed, got, []want{{kind: KindSequenceGap, seq: uint64(victim.seq)}})
	}
}

func TestSimDuplicateDelivery(t *testing.T) {
	for seed := range uint64(simSeeds(t)) {
		p := defaultSim
		p.seed = seed
		h := simulate(p)
		rng := rand.New(rand.NewPCG(seed, 4))
		var victim *simMsg
		for victim == nil || victim.failed {
			victim = h.msgs[rng.IntN(len(h.msgs))]
		}
		recs := h.all()
		for _, r := range victim.recs {
			if r.rec.Kind == Received {
				again := r
				// Within the duplicate horizon: two windows after it
				// settled, upload delays included.
				again.at += time.Duration(rng.Int64N(int64(win)))
				again.rec.At = t0.Add(again.at)
				again.rec.Instance = "another" + r.uploader[7:]
				again.uploader = again.rec.Instance
				recs = append(recs, again)
			}
		}
		got, _ := h.play(t, cfgNoWarmup, recs, 4*win)
		checkFindingsSeed(t, seed, got, []want{{kind: KindDuplicate, id: victim.id}})
	}
}

func checkFindingsSeed(t *testing.T, seed uint64, got []Finding, wants []want) {
	t.Helper()
	t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { checkFindings(t, got, wants) })
}
