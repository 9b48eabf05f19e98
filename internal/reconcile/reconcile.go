package reconcile

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// RecordKind is what a record says happened to a message.
type RecordKind uint8

// Record kinds, as tallyv1.RecordKind numbers them.
const (
	KindUnspecified RecordKind = iota
	Sent                       // the caller's sidecar sent the message
	Confirmed                  // the caller's sidecar verified the receipt
	Received                   // the callee's sidecar received the message whole and answered
	Omission                   // either side detected an omission
)

func (k RecordKind) String() string {
	switch k {
	case Sent:
		return "SENT"
	case Confirmed:
		return "CONFIRMED"
	case Received:
		return "RECEIVED"
	case Omission:
		return "OMISSION"
	}
	return fmt.Sprintf("RecordKind(%d)", uint8(k))
}

// Reporting sides of a record.
const (
	ReporterCaller = "caller"
	ReporterCallee = "callee"
)

// Finding kinds: the omission kinds of SPEC.md that the reconciler derives.
const (
	KindUnconfirmed    = "unconfirmed"
	KindSequenceGap    = "sequence_gap"
	KindDuplicate      = "duplicate"
	KindDigestMismatch = "digest_mismatch"
	KindMisrouted      = "misrouted"
	KindAuditGap       = "audit_gap"
)

// Config configures a Reconciler. Every zero value has a documented default.
type Config struct {
	// Window is how long a sent message may stay unconfirmed, counted on
	// the caller's clock from its SENT record (--window). It is also how
	// long a missing sequence number may stay missing before it is a
	// sequence_gap. Zero or negative means 5s.
	Window time.Duration
	// Lag is how long a record may take from the sidecar that made it to
	// Add (batching, upload, apply). An unconfirmed finding, which rests on
	// a record's absence, waits this long past the window so that a
	// confirmation made in time but still in transit is not missed. Zero
	// or negative means 500ms.
	Lag time.Duration
	// Warmup is how long after the reconciler first runs records do not
	// open sequence gaps: records made (At) before first now + Warmup may
	// be preceded by records a previous control plane acknowledged and
	// lost, so only a hole between two records made after it is judged.
	// Zero means Window; negative means none (a control plane starting on
	// an empty data directory, which cannot have lost anything, and tests).
	Warmup time.Duration
	// MaxTracked bounds the messages tracked at once (in flight, or
	// waiting for the other side's record); the same number bounds the
	// settled message ids remembered for duplicate detection, and the
	// missing sequence ranges. A record that would exceed it is counted
	// and reported in an audit_gap finding. Zero or negative means
	// 1,000,000; at most 2^31-1.
	MaxTracked int
	// MaxSpaces bounds the sequence spaces (caller instance, destination)
	// tracked at once; beyond it, records are counted and reported in an
	// audit_gap finding. Idle spaces are forgotten (see the package doc).
	// Zero or negative means 100,000.
	MaxSpaces int
}

// recentGenerations is the duplicate horizon in windows: settled ids are
// kept in two generations of this many windows each, so an id is
// remembered at least this many windows after it settled.
const recentGenerations = 2

// Defaults of Config.
const (
	DefaultWindow     = 5 * time.Second
	DefaultLag        = 500 * time.Millisecond
	DefaultMaxTracked = 1_000_000
	DefaultMaxSpaces  = 100_000
)

// Record is one record of a sidecar, as the control plane validated it
// (control.Record plus the uploader's instance and the digests).
type Record struct {
	Kind                RecordKind
	MessageID           string // 32 lowercase hex characters; empty for records of no message
	Seq                 uint64 // in the caller instance's space for Destination; 0: none
	Source              string // calling service
	Destination         string // on caller records the service addressed; on callee records the callee's own
	SourceIdentity      string
	DestinationIdentity string
	Instance            string // the uploading sidecar's instance
	PeerInstance        string // callee records: the caller's instance
	Reporter            string // ReporterCaller or ReporterCallee
	RequestDigest       []byte
	ResponseDigest      []byte
	RequestBytes        int64
	ResponseBytes       int64
	At                  time.Time // when the sidecar made the record, on its clock; zero: unknown (now is used)
	OmissionKind        string    // Omission only
	Detail              string    // Omission only
}

// callerInstance is the caller's instance of a caller's record: the
// uploader, or PeerInstance if the uploader was left out.
func (rec *Record) callerInstance() string {
	if rec.Instance != "" {
		return rec.Instance
	}
	return rec.PeerInstance
}

// caller reports whether the record comes from the calling side.
func (rec *Record) caller() bool {
	switch rec.Kind {
	case Sent, Confirmed:
		return true
	case Omission:
		return rec.Reporter != ReporterCallee
	}
	return false
}

// Finding is an omission the reconciler derived from the records. Source,
// Destination and the identities are the calling edge as the caller
// addressed it (a misrouted finding names what answered in Detail).
// DetectedAt is the now of the call that produced it.
type Finding struct {
	Kind                string
	MessageID           string // empty for sequence_gap and audit_gap
	Seq                 uint64 // sequence_gap: the first missing seq
	Source              string
	Destination         string
	SourceIdentity      string
	DestinationIdentity string
	DetectedAt          time.Time
	Detail              string
}

// Stats are the reconciler's counters and sizes.
type Stats struct {
	Records  uint64 // records added
	Ignored  uint64 // records that name no message or have an unknown kind
	Messages int    // messages tracked now
	Recent   int    // settled message ids remembered for duplicate detection
	Spaces   int    // sequence spaces tracked now
	Holes    int    // missing sequence ranges waiting for their window
	// Overflow, each reported in an audit_gap finding.
	Untracked     uint64 // records of new messages not tracked: MaxTracked reached
	SpacesRefused uint64 // caller records of a new sequence space not tracked: MaxSpaces reached
	HolesDropped  uint64 // missing sequence ranges not tracked: MaxTracked reached
	// Horizons, counted only.
	RecentDropped     uint64 // settled ids forgotten early because the recent set was full
	Orphans           uint64 // messages forgotten without any caller record
	LateConfirmations uint64 // confirmations made within the window that arrived after their unconfirmed finding
	SpacesForgotten   uint64 // idle or gone sequence spaces forgotten
}

// Reconciler matches both sides' records and turns what does not add up
// into findings. It is safe for concurrent use: every method takes one
// mutex. It does no I/O and starts no goroutine; time only moves when a
// method is called.
type Reconciler struct {
	window, lag, warmup int64 // ns
	hold                int64 // ns a message waits for the other side's record
	spaceIdle           int64 // ns after which a space without holes is forgotten
	maxTracked          int
	maxSpaces           int

	mu      sync.Mutex // guards following
	now     int64      // latest now seen (ns); the reconciler's clock never goes back
	started bool
	warmEnd int64 // records made before this open no holes

	msgs   map[msgKey]uint32 // -> index into slab
	slab   []msg
	free   []uint32
	timers timerHeap

	recent      [2]map[msgKey]uint8 // settled ids: [0] current generation, [1] previous
	recentSince int64

	spaces     map[spaceKey]*space
	byInstance map[string][]*space
	holey      map[*space]struct{}
	holes      int
	lastSweep  int64

	stats        Stats
	reportedLoss uint64 // Untracked + SpacesRefused + HolesDropped at the last audit_gap finding
}

// New returns a Reconciler for cfg.
func New(cfg Config) *Reconciler {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Lag <= 0 {
		cfg.Lag = DefaultLag
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = cfg.Window
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = DefaultMaxTracked
	}
	cfg.MaxTracked = min(cfg.MaxTracked, math.MaxInt32) // slots are uint32
	if cfg.MaxSpaces <= 0 {
		cfg.MaxSpaces = DefaultMaxSpaces
	}
	r := &Reconciler{
		window:     int64(cfg.Window),
		lag:        int64(cfg.Lag),
		warmup:     int64(cfg.Warmup),
		hold:       int64(cfg.Window + cfg.Lag),
		spaceIdle:  12 * int64(cfg.Window),
		maxTracked: cfg.MaxTracked,
		maxSpaces:  cfg.MaxSpaces,
		msgs:       make(map[msgKey]uint32),
		recent:     [2]map[msgKey]uint8{make(map[msgKey]uint8), make(map[msgKey]uint8)},
		spaces:     make(map[spaceKey]*space),
		byInstance: make(map[string][]*space),
		holey:      make(map[*space]struct{}),
	}
	return r
}

// Add reconciles one record at now (the control plane's clock) and returns
// the findings it makes at once: duplicate, digest_mismatch, misrouted, and
// unconfirmed for a confirmation made after the window. It keeps no
// reference to rec or its slices.
func (r *Reconciler) Add(rec Record, now time.Time) []Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.advance(now)
	return r.add(&rec, n, nil)
}

// AddBatch is Add for every record of recs, in order, under one lock: the
// records of one batch are reconciled together, with no Tick in between.
func (r *Reconciler) AddBatch(recs []Record, now time.Time) []Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.advance(now)
	var out []Finding
	for i := range recs {
		out = r.add(&recs[i], n, out)
	}
	return out
}

// Tick makes the findings that time makes: unconfirmed messages whose
// window (plus Lag) has passed, sequence gaps still open a Window after they
// were noticed, and an audit_gap for any overflow since the last Tick. It
// also forgets what has settled. Call it every 100-250ms.
func (r *Reconciler) Tick(now time.Time) []Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.advance(now)
	var out []Finding
	out = r.fireTimers(n, out)
	out = r.dueHoles(n, out)
	if period, since := recentGenerations*r.window, n-r.recentSince; since >= period {
		r.rotateRecent(n)
		if since >= 2*period { // no Tick for a while: both generations are old
			r.rotateRecent(n)
		}
	}
	if n-r.lastSweep >= r.window {
		r.sweepSpaces(n)
		r.lastSweep = n
	}
	out = r.auditGap(n, out)
	slices.SortStableFunc(out, compareFindings)
	return out
}

// InstanceGone tells the reconciler that a sidecar instance's stream ended
// for good and that every record it uploaded has been passed to Add. It is
// an optional hint: no rule depends on it. It reports the open sequence
// gaps of the instance's spaces at once (no later record can fill them)
// and forgets those spaces. Messages the instance had in flight are left
// to their window, as without the hint. An instance that only ever called
// nothing (a callee) has no spaces; the call is then a no-op.
func (r *Reconciler) InstanceGone(instance string, now time.Time) []Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.advance(now)
	var out []Finding
	for _, sp := range r.byInstance[instance] {
		for len(sp.holes) > 0 {
			out = append(out, r.gapFinding(sp, sp.holes[0], n, "before the instance went away"))
			r.popHole(sp)
		}
		delete(r.spaces, sp.key)
		r.stats.SpacesForgotten++
	}
	delete(r.byInstance, instance)
	return out
}

// Stats returns the current counters.
func (r *Reconciler) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Messages = len(r.msgs)
	s.Recent = len(r.recent[0]) + len(r.recent[1])
	s.Spaces = len(r.spaces)
	s.Holes = r.holes
	return s
}

// advance moves the reconciler's clock to now if that is later, and returns
// the clock. Callers racing for the lock may pass slightly older times; the
// reconciler never goes back.
func (r *Reconciler) advance(now time.Time) int64 {
	n := now.UnixNano()
	if !r.started {
		r.started = true
		r.now = n
		r.recentSince = n
		r.lastSweep = n
		if r.warmup < 0 {
			r.warmEnd = math.MinInt64
		} else {
			r.warmEnd = n + r.warmup
		}
	}
	if n > r.now {
		r.now = n
	}
	return r.now
}

// add reconciles one record; the lock is held.
func (r *Reconciler) add(rec *Record, now int64, out []Finding) []Finding {
	r.stats.Records++
	if rec.Kind < Sent || rec.Kind > Omission {
		r.stats.Ignored++
		return out
	}
	at := now
	if !rec.At.IsZero() {
		at = rec.At.UnixNano()
	}
	caller := rec.caller()
	var sp *space
	if caller && rec.Seq > 0 && rec.Destination != "" && rec.callerInstance() != "" {
		sp = r.observeSeq(rec, at, now)
	}
	if rec.MessageID == "" {
		r.stats.Ignored++
		return out
	}
	key, raw := keyOf(rec.MessageID)
	idx, ok := r.msgs[key]
	if !ok {
		if g, f, ok := r.recentGet(key); ok {
			return r.addSettled(rec, key, g, f, now, out)
		}
		if len(r.msgs) >= r.maxTracked {
			r.stats.Untracked++
			return out
		}
		idx = r.track(key, raw)
	}
	m := &r.slab[idx]
	if caller {
		out = r.addCaller(m, rec, sp, at, now, out)
	} else {
		out = r.addCallee(m, rec, now, out)
	}
	r.schedule(idx, now)
	return out
}

// finding fills a finding about m; rec, if not nil, supplies the edge when
// no caller record has been seen.
func (r *Reconciler) finding(kind string, m *msg, rec *Record, now int64, detail string) Finding {
	f := Finding{Kind: kind, MessageID: m.idString(), Seq: m.seq, DetectedAt: time.Unix(0, now).UTC(), Detail: detail}
	switch {
	case m.caller != nil:
		f.Source, f.Destination = m.caller.source, m.caller.destination
		f.SourceIdentity, f.DestinationIdentity = m.caller.sourceID, m.caller.destinationID
	case rec != nil:
		f.Source, f.Destination = rec.Source, rec.Destination
		f.SourceIdentity, f.DestinationIdentity = rec.SourceIdentity, rec.DestinationIdentity
		f.Seq = rec.Seq
	}
	return f
}

// auditGap reports the overflow since the last report in one finding.
func (r *Reconciler) auditGap(now int64, out []Finding) []Finding {
	s := &r.stats
	total := s.Untracked + s.SpacesRefused + s.HolesDropped
	if total == r.reportedLoss {
		return out
	}
	r.reportedLoss = total
	var parts []string
	if s.Untracked > 0 {
		parts = append(parts, fmt.Sprintf("%d records of messages not tracked (limit %d messages)", s.Untracked, r.maxTracked))
	}
	if s.SpacesRefused > 0 {
		parts = append(parts, fmt.Sprintf("%d caller records outside a tracked sequence space (limit %d spaces)", s.SpacesRefused, r.maxSpaces))
	}
	if s.HolesDropped > 0 {
		parts = append(parts, fmt.Sprintf("%d missing sequence ranges not tracked (limit %d)", s.HolesDropped, r.maxTracked))
	}
	return append(out, Finding{
		Kind:       KindAuditGap,
		DetectedAt: time.Unix(0, now).UTC(),
		Detail:     "reconciler over its bounds, so far: " + strings.Join(parts, "; "),
	})
}

func compareFindings(a, b Finding) int {
	return cmp.Or(
		cmp.Compare(a.Kind, b.Kind),
		cmp.Compare(a.Source, b.Source),
		cmp.Compare(a.Destination, b.Destination),
		cmp.Compare(a.Seq, b.Seq),
		cmp.Compare(a.MessageID, b.MessageID),
		cmp.Compare(a.Detail, b.Detail),
	)
}

func fmtDur(ns int64) string { return time.Duration(ns).String() }
