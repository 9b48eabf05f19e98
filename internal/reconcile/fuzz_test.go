package reconcile

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The fuzz input is a program of operations on a simulated clock:
//
//	0x00 dt:u16                 advance dt ms, Tick
//	0x01 dt:u16 n:u8 rec×n      advance dt ms, AddBatch of n records
//	0x02 i:u8                   InstanceGone(fuzzInsts[i])
//
// A record is fuzzRecSize bytes; every index is taken modulo its table:
//
//	kind:u8 id:u16 seq:u16 source:u8 dest:u8 instance:u8 peer:u8
//	reporter:u8 reqDigest:u8 resDigest:u8 at:i16 (ms from now)
//	omissionKind:u8 sourceID:u8 destID:u8
var (
	fuzzInsts     = []inst{webA, webB, apiA, ord1, ord2, ord3, pay1, {id: "not an id", svc: "x"}, {}}
	fuzzServices  = []string{"web", "api", "orders", "payments", "", "x"}
	fuzzDigests   = []string{"", "req", "res", "other", "x", "y"}
	fuzzOmissions = []string{"unconfirmed", "truncated", "digest_mismatch", "sequence_gap", "duplicate", "misrouted", "unauthorized", "incomplete", "audit_gap", ""}
	fuzzIDs       = []string{"", td + "web", td + "api", td + "orders", td + "payments", "spiffe://evil.example/svc/orders", "garbage"}
	fuzzReporters = []string{ReporterCaller, ReporterCallee, ""}
)

const fuzzRecSize = 18

func index[T comparable](table []T, v T) (byte, bool) {
	i := slices.Index(table, v)
	return byte(i), i >= 0
}

// encodeHistory encodes a table history (with a Tick every tickEvery
// until end) in the fuzz format; ok is false if it uses values outside the
// fuzz tables.
func encodeHistory(history []ev, end time.Duration) (out []byte, ok bool) {
	evs := slices.Clone(history)
	slices.SortStableFunc(evs, func(a, b ev) int { return int(a.at - b.at) })
	var now time.Duration
	advance := func(to time.Duration) []byte {
		dt := max(to-now, 0) / time.Millisecond
		now += dt * time.Millisecond
		return binary.BigEndian.AppendUint16(nil, uint16(min(dt, 0xffff)))
	}
	i := 0
	for tick := time.Duration(0); tick <= end; tick += tickEvery {
		for ; i < len(evs) && evs[i].at <= tick; i++ {
			e := evs[i]
			if e.gone != "" {
				j := slices.IndexFunc(fuzzInsts, func(x inst) bool { return x.id == e.gone })
				if j < 0 {
					return nil, false
				}
				out = append(out, 2, byte(j))
				continue
			}
			out = append(out, 1)
			out = append(out, advance(e.at)...)
			out = append(out, byte(len(e.recs)))
			for _, r := range e.recs {
				b, ok := encodeRecord(r, now)
				if !ok {
					return nil, false
				}
				out = append(out, b...)
			}
		}
		out = append(out, 0)
		out = append(out, advance(tick)...)
	}
	return out, true
}

func encodeRecord(r Record, now time.Duration) ([]byte, bool) {
	var id uint64
	if r.MessageID != "" {
		var err error
		if id, err = strconv.ParseUint(r.MessageID, 16, 16); err != nil {
			return nil, false
		}
	}
	findInst := func(id string) (byte, bool) {
		j := slices.IndexFunc(fuzzInsts, func(x inst) bool { return x.id == id })
		return byte(j), j >= 0
	}
	trim := func(d []byte) string {
		if len(d) == 0 {
			return ""
		}
		return string(d[:len(dig(""))]) // padded by dig
	}
	digIdx := func(d []byte) (byte, bool) {
		for i, s := range fuzzDigests {
			if (s == "" && len(d) == 0) || (s != "" && trim(d) == string(dig(s))) {
				return byte(i), true
			}
		}
		return 0, false
	}
	b := []byte{byte(r.Kind)}
	b = binary.BigEndian.AppendUint16(b, uint16(id))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Seq))
	ok := id < 1<<16 && r.Seq < 1<<16
	for _, f := range []func() (byte, bool){
		func() (byte, bool) { return index(fuzzServices, r.Source) },
		func() (byte, bool) { return index(fuzzServices, r.Destination) },
		func() (byte, bool) { return findInst(r.Instance) },
		func() (byte, bool) { return findInst(r.PeerInstance) },
		func() (byte, bool) { return index(fuzzReporters, r.Reporter) },
		func() (byte, bool) { return digIdx(r.RequestDigest) },
		func() (byte, bool) { return digIdx(r.ResponseDigest) },
	} {
		v, good := f()
		ok = ok && good
		b = append(b, v)
	}
	at := (r.At.Sub(t0) - now) / time.Millisecond
	ok = ok && at >= -1<<15 && at < 1<<15
	b = binary.BigEndian.AppendUint16(b, uint16(int16(at)))
	for _, f := range []func() (byte, bool){
		func() (byte, bool) { return index(fuzzOmissions, r.OmissionKind) },
		func() (byte, bool) { return index(fuzzIDs, r.SourceIdentity) },
		func() (byte, bool) { return index(fuzzIDs, r.DestinationIdentity) },
	} {
		v, good := f()
		ok = ok && good
		b = append(b, v)
	}
	b = append(b, 0) // flags: At given
	return b, ok
}

func decodeRecord(b []byte, now time.Time) Record {
	pick := func(table []string, i byte) string { return table[int(i)%len(table)] }
	digest := func(i byte) []byte {
		if s := pick(fuzzDigests, i); s != "" {
			return dig(s)
		}
		return nil
	}
	r := Record{
		Kind:                RecordKind(b[0] % 6),
		Seq:                 uint64(binary.BigEndian.Uint16(b[3:])),
		Source:              pick(fuzzServices, b[5]),
		Destination:         pick(fuzzServices, b[6]),
		Instance:            fuzzInsts[int(b[7])%len(fuzzInsts)].id,
		PeerInstance:        fuzzInsts[int(b[8])%len(fuzzInsts)].id,
		Reporter:            pick(fuzzReporters, b[9]),
		RequestDigest:       digest(b[10]),
		ResponseDigest:      digest(b[11]),
		At:                  now.Add(time.Duration(int16(binary.BigEndian.Uint16(b[12:]))) * time.Millisecond),
		OmissionKind:        pick(fuzzOmissions, b[14]),
		SourceIdentity:      pick(fuzzIDs, b[15]),
		DestinationIdentity: pick(fuzzIDs, b[16]),
	}
	switch id := binary.BigEndian.Uint16(b[1:]); {
	case id == 0:
	case id == 0xffff:
		r.MessageID = "NOT-A-HEX-ID" // never let through by the control plane; must not break anything
	default:
		r.MessageID = mid(int(id))
	}
	if b[17]&1 != 0 {
		r.At = time.Time{}
	}
	return r
}

var gapDetail = regexp.MustCompile(`^seqs? (\d+)(?:-(\d+))? .*of caller instance (.*) to (.*): no record`)

func FuzzReconciler(f *testing.F) {
	for _, tests := range [][]historyTest{unconfirmedTests(), sequenceGapTests(), duplicateTests(), digestTests(), misroutedTests()} {
		for _, tt := range tests {
			end := 3 * win
			for _, e := range tt.history {
				end = max(end, e.at+3*win)
			}
			if b, ok := encodeHistory(tt.history, end); ok {
				f.Add(b)
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 10, 1, 1, 0, 1, 0, 1, 0, 2, 0, 0, 0, 1, 1, 0, 0, 0, 0, 3, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzRaw(t, data)
		// A clean simulation costs a hundred times a raw run: one input in
		// eight gets one, seeded by the input.
		h := fnv.New64a()
		h.Write(data)
		if seed := h.Sum64(); seed%8 == 0 {
			fuzzClean(t, seed, len(data))
		}
	})
}

// fuzzRaw runs data as a program and checks the invariants after each
// step.
func fuzzRaw(t *testing.T, data []byte) {
	r := New(Config{Window: win, Lag: lag, Warmup: time.Duration(len(data)%3-1) * win, MaxTracked: 6, MaxSpaces: 4})
	now := t0
	type once struct{ id, kind string }
	seen := make(map[once]bool)
	// Seq ranges reported per space.
	gaps := make(map[spaceKey][][2]uint64)
	last := time.Time{}
	step := func(fs []Finding) {
		for _, f := range fs {
			if !f.DetectedAt.Equal(now) || f.DetectedAt.Before(last) {
				t.Fatalf("finding at %v, now %v, previous %v: %+v", f.DetectedAt, now, last, f)
			}
			switch f.Kind {
			case KindUnconfirmed, KindDuplicate, KindDigestMismatch, KindMisrouted:
				if f.MessageID == "" {
					t.Fatalf("%s finding without a message: %+v", f.Kind, f)
				}
				k := once{f.MessageID, f.Kind}
				if seen[k] {
					t.Fatalf("second %s finding for message %s: %+v", f.Kind, f.MessageID, f)
				}
				seen[k] = true
			case KindSequenceGap:
				m := gapDetail.FindStringSubmatch(f.Detail)
				if m == nil {
					t.Fatalf("sequence_gap detail %q", f.Detail)
				}
				lo, _ := strconv.ParseUint(m[1], 10, 64)
				hi := lo
				if m[2] != "" {
					hi, _ = strconv.ParseUint(m[2], 10, 64)
				}
				if lo != f.Seq || hi < lo || lo == 0 {
					t.Fatalf("sequence_gap seq %d, detail %q", f.Seq, f.Detail)
				}
				k := spaceKey{m[3], m[4]}
				for _, g := range gaps[k] {
					if lo <= g[1] && g[0] <= hi {
						t.Fatalf("seqs %d-%d of %s -> %s reported again (%d-%d before)", lo, hi, k.instance, k.destination, g[0], g[1])
					}
				}
				gaps[k] = append(gaps[k], [2]uint64{lo, hi})
			case KindAuditGap:
			default:
				t.Fatalf("finding of kind %q", f.Kind)
			}
		}
		last = now
		if err := r.check(); err != nil {
			t.Fatalf("after step at %v: %v", now.Sub(t0), err)
		}
		// Forget what the reconciler forgot: a message or space it no
		// longer remembers is new to it.
		for k := range seen {
			if !r.remembered(k.id) {
				delete(seen, k)
			}
		}
		for k := range gaps {
			if !r.spaceExists(k.instance, k.destination) {
				delete(gaps, k)
			}
		}
	}
	for len(data) > 0 {
		op := data[0] % 3
		data = data[1:]
		switch op {
		case 0, 1:
			if len(data) < 2 {
				return
			}
			now = now.Add(time.Duration(binary.BigEndian.Uint16(data)) * time.Millisecond)
			data = data[2:]
			if op == 0 {
				step(r.Tick(now))
				continue
			}
			if len(data) < 1 {
				return
			}
			n := int(data[0])
			data = data[1:]
			var recs []Record
			for ; n > 0 && len(data) >= fuzzRecSize; n-- {
				recs = append(recs, decodeRecord(data[:fuzzRecSize], now))
				data = data[fuzzRecSize:]
			}
			step(r.AddBatch(recs, now))
		case 2:
			if len(data) < 1 {
				return
			}
			step(r.InstanceGone(fuzzInsts[int(data[0])%len(fuzzInsts)].id, now))
			data = data[1:]
		}
	}
	now = now.Add(10 * win)
	step(r.Tick(now))
}

// fuzzClean simulates a small clean history chosen by seed and n and
// requires that it makes no finding.
func fuzzClean(t *testing.T, seed uint64, n int) {
	p := simParams{
		seed: seed, services: 1 + n%3, instances: 1 + n%2, dests: 1 + n/3%3,
		callees: 1 + n/2%3, messages: 10 + n%50,
		restartPct: n % 20, failPct: n % 30,
		gap:        time.Duration(1+n%20) * time.Millisecond,
		maxLatency: 2 * time.Second, maxDelay: 1500 * time.Millisecond, jitter: 3 * time.Millisecond,
	}
	sim := simulate(p)
	// Past every deadline (Window + Lag after the last upload) and hole.
	got, r := sim.play(t, cfgNoWarmup, sim.all(), win+lag+tickEvery)
	if len(got) != 0 {
		t.Fatalf("clean history %+v: %d findings, first:\n%s", p, len(got), fmtFindings(got[:min(len(got), 5)]))
	}
	if err := r.check(); err != nil {
		t.Fatal(err)
	}
}

func TestFuzzSeedsEncode(t *testing.T) {
	// The table histories must survive the fuzz encoding, or the fuzz
	// corpus misses them: round-trip one and compare the findings.
	for _, tt := range append(unconfirmedTests(), misroutedTests()...) {
		t.Run(tt.name, func(t *testing.T) {
			end := 3 * win
			for _, e := range tt.history {
				end = max(end, e.at+3*win)
			}
			b, ok := encodeHistory(tt.history, end)
			if !ok {
				t.Skip("outside the fuzz tables")
			}
			want, _ := run(t, cfgNoWarmup, tt.history, end)
			got := replay(b)
			if fmt.Sprint(reduce(got)) != fmt.Sprint(reduce(want)) {
				t.Errorf("decoded history gives\n%s\nwant\n%s", fmtFindings(got), fmtFindings(want))
			}
		})
	}
}

// replay runs an encoded program without checks.
func replay(data []byte) []Finding {
	r := New(cfgNoWarmup)
	now := t0
	var out []Finding
	for len(data) >= 3 {
		op := data[0] % 3
		if op == 2 {
			out = append(out, r.InstanceGone(fuzzInsts[int(data[1])%len(fuzzInsts)].id, now)...)
			data = data[2:]
			continue
		}
		now = now.Add(time.Duration(binary.BigEndian.Uint16(data[1:])) * time.Millisecond)
		data = data[3:]
		if op == 0 {
			out = append(out, r.Tick(now)...)
			continue
		}
		n := int(data[0])
		data = data[1:]
		var recs []Record
		for ; n > 0 && len(data) >= fuzzRecSize; n-- {
			recs = append(recs, decodeRecord(data[:fuzzRecSize], now))
			data = data[fuzzRecSize:]
		}
		out = append(out, r.AddBatch(recs, now)...)
	}
	return out
}
