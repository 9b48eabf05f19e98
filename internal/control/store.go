package control

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

// Store keeps what the control plane learned from the sidecars' records: per
// edge counters and the omission events. The in-memory store of this package
// is the only one for now; a durable ledger will take its place behind this
// interface.
//
// Implementations are safe for concurrent use. Apply must be idempotent by
// BatchKey: applying a key a second time changes nothing and reports
// Duplicate, so a sidecar may resend any batch it holds no ack for.
type Store interface {
	// Apply applies recs, the already validated records of one batch, at
	// time now (the detection time of events whose record carries none).
	Apply(key BatchKey, recs []Record, now time.Time) Applied
	// Seen reports whether key was applied already (Apply would report
	// Duplicate), without applying anything.
	Seen(key BatchKey) bool
	// Edges returns every edge, sorted by source, then destination.
	Edges() []Edge
	// Omissions returns the events that match q, in q's order, and whether
	// more match past the last one returned.
	Omissions(q OmissionQuery) (events []Event, more bool)
}

var _ Store = (*memStore)(nil)

// BatchKey identifies a batch: a sidecar instance's batch_seq, in the
// sequence space of the instance's service (the service of the peer
// certificate that uploaded it), so no service can shadow another's batches.
type BatchKey struct {
	Service    string
	InstanceID string
	Seq        uint64
}

// Record is a validated record of a sidecar (see tallyv1.Record for the
// meaning of the fields). Names are valid service names, MessageID is empty or
// 32 lowercase hex characters, OmissionKind is one of OmissionKinds for
// KindOmission and empty otherwise.
type Record struct {
	Kind                tallyv1.RecordKind
	MessageID           string
	Seq                 uint64
	Source              string
	Destination         string
	SourceIdentity      string
	DestinationIdentity string
	Protocol            string
	RequestBytes        int64
	ResponseBytes       int64
	At                  time.Time // zero: unknown
	Latency             time.Duration
	OmissionKind        string
	Detail              string
	Reporter            string // ReporterCaller or ReporterCallee
}

// Reporting sides of a record.
const (
	ReporterCaller = "caller"
	ReporterCallee = "callee"
	// ReporterControl marks the control plane's own findings (reconciler).
	ReporterControl = "control"
)

// OmissionKinds are the omission kinds of SPEC.md, in its order.
var OmissionKinds = []string{
	"unconfirmed", "truncated", "digest_mismatch", "sequence_gap", "duplicate",
	"misrouted", "unauthorized", "incomplete", "audit_gap",
}

// KindAuditGap is the omission kind of records the mesh itself could not keep.
const KindAuditGap = "audit_gap"

// Applied says what one Apply changed.
type Applied struct {
	// Duplicate is set if the batch was applied before; nothing else is set
	// then.
	Duplicate bool
	// Edges holds the changed edges after the batch, and Deltas what the
	// batch added to each (same order).
	Edges  []Edge
	Deltas []EdgeDelta
	// Events holds the omission events the batch created; a record that
	// de-duplicated into an existing event creates none.
	Events []Event
	// Rejected holds the indexes into recs of records the store refused
	// (only for a full edge table: RejectTooManyEdges).
	Rejected []int
	// Evicted counts the oldest events dropped to make room.
	Evicted int
	// Held is the number of confirmations plus omission events the store
	// holds after the batch: what a ledger would hold.
	Held int
}

// EdgeDelta is what one batch added to an edge's counters.
type EdgeDelta struct {
	Sent, Confirmed, Received, Omitted uint64
	BytesSent, BytesConfirmed          uint64
}

// Edge is the accounting of one source -> destination pair, as the REST API
// returns it. InFlight is Sent - Confirmed - Omitted, never below zero.
// BytesSent counts the request bytes of SENT records; BytesConfirmed the
// request and response bytes of CONFIRMED records, as the sidecars count
// them.
type Edge struct {
	Source         string    `json:"source"`
	Destination    string    `json:"destination"`
	Sent           uint64    `json:"sent"`
	Confirmed      uint64    `json:"confirmed"`
	Received       uint64    `json:"received"`
	Omitted        uint64    `json:"omitted"`
	InFlight       uint64    `json:"in_flight"`
	BytesSent      uint64    `json:"bytes_sent"`
	BytesConfirmed uint64    `json:"bytes_confirmed"`
	Latency        Quantiles `json:"latency_ms"`
}

// Quantiles of the confirmation latency, in milliseconds; zero without data.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// Event is an omission event, as the REST API and the event stream return it.
// ID is a decimal, increasing with every new event. DetectedAt is the
// reporting sidecar's time of detection, or the control plane's time of
// receipt if the record carried none.
type Event struct {
	ID                  string    `json:"id"`
	Kind                string    `json:"kind"`
	Source              string    `json:"source"`
	Destination         string    `json:"destination"`
	SourceIdentity      string    `json:"source_identity"`
	DestinationIdentity string    `json:"destination_identity"`
	MessageID           string    `json:"message_id"`
	Seq                 uint64    `json:"seq"`
	DetectedAt          time.Time `json:"detected_at"`
	Detail              string    `json:"detail"`
	Reporter            string    `json:"reporter"`
}

// OmissionQuery selects omission events.
type OmissionQuery struct {
	After uint64    // 0: from the start; else continue past the event with this id
	Desc  bool      // newest first
	Kind  string    // "": every kind
	Since time.Time // zero: no bound; else DetectedAt >= Since
	Limit int       // at least 1
}

// Bounds of the in-memory store.
const (
	defaultMaxEvents    = 100_000
	defaultMaxEdges     = 10_000
	defaultMaxInstances = 100_000
	// maxAboveFloor bounds the batch sequence numbers remembered above an
	// instance's contiguous floor; see batchWindow.
	maxAboveFloor = 4096
	// maxDetail bounds an event's detail, appended details included.
	maxDetail = 4096
)

// memStore is the in-memory Store. It is safe for concurrent use.
type memStore struct {
	maxEvents, maxEdges, maxInstances int

	mu            sync.Mutex // guards following
	edges         map[edgeKey]*edgeState
	batches       map[instanceKey]*batchWindow
	confirmations int
	// events is a ring of at most maxEvents slots; the oldest is at start and
	// has id firstID. Ids are contiguous.
	events  []eventSlot
	start   int
	firstID uint64
	dedup   map[dedupKey]uint64 // (message_id, kind) -> event id
}

type edgeKey struct{ source, destination string }

type instanceKey struct{ service, instance string }

type dedupKey struct{ messageID, kind string }

type eventSlot struct {
	Event
	callerSeen, calleeSeen bool
}

type edgeState struct {
	Edge
	hist latencyHist
}

// batchWindow remembers which batch sequence numbers of one instance were
// applied: every seq <= floor, and the ones in above. Sidecars number batches
// from 1 without gaps, so above stays small; if it grows past maxAboveFloor
// the lowest entries are forgotten (a resend of one of those would then be
// applied twice, which is visible, rather than lost, which would not be).
type batchWindow struct {
	floor    uint64
	above    map[uint64]struct{}
	lastSeen time.Time
}

func newMemStore(maxEvents, maxEdges int) *memStore {
	return &memStore{
		maxEvents:    maxEvents,
		maxEdges:     maxEdges,
		maxInstances: defaultMaxInstances,
		edges:        make(map[edgeKey]*edgeState),
		batches:      make(map[instanceKey]*batchWindow),
		dedup:        make(map[dedupKey]uint64),
		firstID:      1,
	}
}

func (m *memStore) Apply(key BatchKey, recs []Record, now time.Time) Applied {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.markBatch(key, now) {
		return Applied{Duplicate: true}
	}
	var a Applied
	changed := make(map[edgeKey]int) // -> index in a.Edges/a.Deltas
	for i, r := range recs {
		if r.Source == "" || r.Destination == "" {
			// An omission with one side unknown (a refused handshake,
			// the mesh's own loss) belongs to no edge.
			if ev, _, evicted := m.addEvent(r, now); ev != nil {
				a.Events = append(a.Events, *ev)
				a.Evicted += evicted
			}
			continue
		}
		k := edgeKey{r.Source, r.Destination}
		e := m.edges[k]
		if e == nil {
			if len(m.edges) >= m.maxEdges {
				a.Rejected = append(a.Rejected, i)
				continue
			}
			e = &edgeState{Edge: Edge{Source: r.Source, Destination: r.Destination}}
			m.edges[k] = e
		}
		j, ok := changed[k]
		if !ok {
			j = len(a.Deltas)
			changed[k] = j
			a.Deltas = append(a.Deltas, EdgeDelta{})
		}
		d := &a.Deltas[j]
		switch r.Kind {
		case tallyv1.RecordKind_RECORD_KIND_SENT:
			// A request's size is known only at its end: bytes sent are
			// counted from the record that ends the message.
			e.Sent++
			d.Sent++
		case tallyv1.RecordKind_RECORD_KIND_CONFIRMED:
			e.Confirmed++
			d.Confirmed++
			e.BytesSent += uint64(r.RequestBytes)
			d.BytesSent += uint64(r.RequestBytes)
			e.BytesConfirmed += uint64(r.RequestBytes + r.ResponseBytes)
			d.BytesConfirmed += uint64(r.RequestBytes + r.ResponseBytes)
			e.hist.observe(r.Latency)
			m.confirmations++
		case tallyv1.RecordKind_RECORD_KIND_RECEIVED:
			e.Received++
			d.Received++
		case tallyv1.RecordKind_RECORD_KIND_OMISSION:
			ev, callerFirst, evicted := m.addEvent(r, now)
			a.Evicted += evicted
			if ev != nil {
				a.Events = append(a.Events, *ev)
			}
			if callerFirst {
				e.Omitted++
				d.Omitted++
				e.BytesSent += uint64(r.RequestBytes)
				d.BytesSent += uint64(r.RequestBytes)
			}
		}
	}
	a.Edges = make([]Edge, len(a.Deltas))
	for k, j := range changed {
		a.Edges[j] = m.edges[k].snapshot()
	}
	a.Held = m.confirmations + len(m.events)
	return a
}

func (m *memStore) Seen(key BatchKey) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.batches[instanceKey{key.Service, key.InstanceID}]
	if w == nil {
		return false
	}
	if key.Seq <= w.floor {
		return true
	}
	_, ok := w.above[key.Seq]
	return ok
}

// markBatch records key as applied and reports whether it was new.
func (m *memStore) markBatch(key BatchKey, now time.Time) bool {
	ik := instanceKey{key.Service, key.InstanceID}
	w := m.batches[ik]
	if w == nil {
		if len(m.batches) >= m.maxInstances {
			m.evictInstances()
		}
		w = &batchWindow{}
		m.batches[ik] = w
	}
	w.lastSeen = now
	if key.Seq <= w.floor {
		return false
	}
	if _, ok := w.above[key.Seq]; ok {
		return false
	}
	if key.Seq == w.floor+1 {
		w.floor++
		for {
			if _, ok := w.above[w.floor+1]; !ok {
				break
			}
			delete(w.above, w.floor+1)
			w.floor++
		}
		return true
	}
	if w.above == nil {
		w.above = make(map[uint64]struct{})
	}
	w.above[key.Seq] = struct{}{}
	if len(w.above) > maxAboveFloor {
		lowest := slices.Min(mapKeys(w.above))
		delete(w.above, lowest)
	}
	return true
}

// evictInstances forgets the least recently seen tenth of the instances.
func (m *memStore) evictInstances() {
	type seen struct {
		k instanceKey
		t time.Time
	}
	all := make([]seen, 0, len(m.batches))
	for k, w := range m.batches {
		all = append(all, seen{k, w.lastSeen})
	}
	slices.SortFunc(all, func(a, b seen) int { return a.t.Compare(b.t) })
	for _, s := range all[:max(len(all)/10, 1)] {
		delete(m.batches, s.k)
	}
}

func mapKeys(m map[uint64]struct{}) []uint64 {
	ks := make([]uint64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// addEvent adds the event of an OMISSION record, or merges it into the event
// with the same (message_id, kind). It returns the new event (nil if merged),
// whether this is the first caller report of it (which counts as omitted on
// the edge) and how many old events were evicted.
func (m *memStore) addEvent(r Record, now time.Time) (ev *Event, callerFirst bool, evicted int) {
	// The control plane's findings stand in for the caller's side: an
	// unconfirmed message is no longer in flight.
	caller := r.Reporter == ReporterCaller || r.Reporter == ReporterControl
	counts := r.Reporter == ReporterCaller || r.OmissionKind == "unconfirmed"
	if r.MessageID != "" {
		dk := dedupKey{r.MessageID, r.OmissionKind}
		if id, ok := m.dedup[dk]; ok {
			s := m.slot(id)
			seen := &s.calleeSeen
			if caller {
				seen = &s.callerSeen
			}
			if *seen {
				return nil, false, 0 // the same side again: a duplicate report
			}
			*seen = true
			if r.Detail != "" {
				s.Detail = truncate(s.Detail+"; "+r.Reporter+": "+r.Detail, maxDetail)
			}
			return nil, caller && counts, 0
		}
	}
	at := r.At
	if at.IsZero() {
		at = now
	}
	id := m.firstID + uint64(len(m.events))
	s := eventSlot{
		Event: Event{
			ID:                  strconv.FormatUint(id, 10),
			Kind:                r.OmissionKind,
			Source:              r.Source,
			Destination:         r.Destination,
			SourceIdentity:      r.SourceIdentity,
			DestinationIdentity: r.DestinationIdentity,
			MessageID:           r.MessageID,
			Seq:                 r.Seq,
			DetectedAt:          at.UTC(),
			Detail:              truncate(r.Detail, maxDetail),
			Reporter:            r.Reporter,
		},
		callerSeen: caller,
		calleeSeen: !caller,
	}
	if len(m.events) < m.maxEvents {
		m.events = append(m.events, s)
	} else {
		old := m.events[m.start]
		if old.MessageID != "" {
			dk := dedupKey{old.MessageID, old.Kind}
			if m.dedup[dk] == m.firstID {
				delete(m.dedup, dk)
			}
		}
		m.events[m.start] = s
		m.start = (m.start + 1) % len(m.events)
		m.firstID++
		evicted = 1
	}
	if r.MessageID != "" {
		m.dedup[dedupKey{r.MessageID, r.OmissionKind}] = id
	}
	return &s.Event, caller && counts, evicted
}

// slot returns the event with id, which must be held.
func (m *memStore) slot(id uint64) *eventSlot {
	return &m.events[(m.start+int(id-m.firstID))%len(m.events)]
}

func (m *memStore) Edges() []Edge {
	m.mu.Lock()
	edges := make([]Edge, 0, len(m.edges))
	for _, e := range m.edges {
		edges = append(edges, e.snapshot())
	}
	m.mu.Unlock()
	slices.SortFunc(edges, func(a, b Edge) int {
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		return strings.Compare(a.Destination, b.Destination)
	})
	return edges
}

func (m *memStore) Omissions(q OmissionQuery) ([]Event, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := uint64(len(m.events))
	if n == 0 {
		return nil, false
	}
	lo, hi := m.firstID, m.firstID+n // ids held: [lo, hi)
	var out []Event
	match := func(id uint64) (stop bool) {
		s := m.slot(id)
		if q.Kind != "" && s.Kind != q.Kind || !q.Since.IsZero() && s.DetectedAt.Before(q.Since) {
			return false
		}
		if len(out) == q.Limit {
			return true
		}
		out = append(out, s.Event)
		return false
	}
	if q.Desc {
		from := hi
		if q.After != 0 {
			from = min(q.After, hi)
		}
		for id := from; id > lo; id-- {
			if match(id - 1) {
				return out, true
			}
		}
		return out, false
	}
	from := lo
	if q.After != 0 {
		from = max(q.After+1, lo)
	}
	for id := from; id < hi; id++ {
		if match(id) {
			return out, true
		}
	}
	return out, false
}

func (e *edgeState) snapshot() Edge {
	out := e.Edge
	if done := e.Confirmed + e.Omitted; e.Sent > done {
		out.InFlight = e.Sent - done
	}
	out.Latency = Quantiles{
		P50: e.hist.quantile(0.50),
		P90: e.hist.quantile(0.90),
		P99: e.hist.quantile(0.99),
	}
	return out
}

// latencyHist is a histogram with fixed exponential buckets: bucket i holds
// latencies up to histBase * histFactor^i milliseconds, the last one
// everything above. From 50 µs to about 11 minutes in 64 steps of 30 %.
type latencyHist struct {
	counts [histBuckets]uint64
	total  uint64
}

const (
	histBuckets = 64
	histBase    = 0.05 // ms
	histFactor  = 1.3
)

var histBounds = func() (b [histBuckets]float64) {
	for i := range b {
		b[i] = histBase * math.Pow(histFactor, float64(i))
	}
	return b
}()

func (h *latencyHist) observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	i, _ := slices.BinarySearch(histBounds[:], ms)
	h.counts[min(i, histBuckets-1)]++
	h.total++
}

// quantile returns the q-quantile in ms, interpolated linearly inside its
// bucket; 0 if the histogram is empty.
func (h *latencyHist) quantile(q float64) float64 {
	if h.total == 0 {
		return 0
	}
	rank := q * float64(h.total)
	var cum float64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			lower := 0.0
			if i > 0 {
				lower = histBounds[i-1]
			}
			upper := histBounds[i]
			frac := (rank - cum) / float64(c)
			return roundMS(lower + (upper-lower)*frac)
		}
		cum += float64(c)
	}
	return roundMS(histBounds[histBuckets-1])
}

// roundMS rounds to microseconds, which is more than the buckets resolve.
func roundMS(ms float64) float64 { return math.Round(ms*1000) / 1000 }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
