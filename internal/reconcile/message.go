package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// msgKey is a message id: the 16 bytes of its 32 hex characters, or for
// any other text (which the control plane does not let through) the first
// 16 bytes of its SHA-256.
type msgKey [16]byte

// keyOf returns id's key, and id itself if it is not 32 lowercase hex
// characters (the key cannot be turned back into it).
func keyOf(id string) (msgKey, string) {
	var k msgKey
	if len(id) == 32 {
		ok := true
		for i := range k {
			hi, ok1 := unhex(id[2*i])
			lo, ok2 := unhex(id[2*i+1])
			if !ok1 || !ok2 {
				ok = false
				break
			}
			k[i] = hi<<4 | lo
		}
		if ok {
			return k, ""
		}
	}
	sum := sha256.Sum256([]byte(id))
	copy(k[:], sum[:])
	return k, strings.Clone(id)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// callerInfo is the calling edge of a message as its caller's records name
// it. Messages of one sequence space share their space's.
type callerInfo struct {
	instance, source, destination string
	sourceID, destinationID       string
	// sentIdentity is set once destinationID comes from a SENT record:
	// the identity the caller addressed.
	sentIdentity bool
}

func newCallerInfo(rec *Record) *callerInfo {
	return &callerInfo{
		instance:      strings.Clone(rec.Instance),
		source:        strings.Clone(rec.Source),
		destination:   strings.Clone(rec.Destination),
		sourceID:      strings.Clone(rec.SourceIdentity),
		destinationID: strings.Clone(rec.DestinationIdentity),
		sentIdentity:  rec.Kind == Sent,
	}
}

// digests are the first side's digests of a message, kept until the other
// side's arrive.
type digests struct {
	req, resp  string
	fromCaller bool
}

// msg is the state of one tracked message.
type msg struct {
	id       msgKey
	gen      uint32 // incremented when the slot is freed; stale timers carry an old one
	flags    uint16
	done     uint8  // finding kinds known for the message: emitted, or reported by a sidecar
	seq      uint64 // from the caller's records
	sentAt   int64  // At of the SENT (caller's clock)
	closeAt  int64  // At of the caller's CONFIRMED or OMISSION
	deadline int64  // when the unconfirmed finding is due (reconciler's clock)
	timer    int64  // when the message next needs attention
	heapAt   int64  // when its earliest timer entry fires; 0: none
	caller   *callerInfo
	// The first callee's record: its service (equal to the caller's
	// destination unless misrouted) and instance.
	calleeDest, calleeInst string
	dig                    *digests
	rawID                  string // the id when it is not 32 hex characters
}

// msg.flags
const (
	fSent uint16 = 1 << iota
	fConfirmed
	fCallerOmission
	fReceived
	fCalleeOmission
	fCompared      // the two sides' digests were compared
	fUnconfEmitted // the reconciler emitted unconfirmed (not a sidecar)
)

// msg.done: one bit per finding kind that can be about one message.
const (
	dUnconfirmed uint8 = 1 << iota
	dDuplicate
	dDigestMismatch
	dMisrouted
)

func doneBit(kind string) uint8 {
	switch kind {
	case KindUnconfirmed:
		return dUnconfirmed
	case KindDuplicate:
		return dDuplicate
	case KindDigestMismatch:
		return dDigestMismatch
	case KindMisrouted:
		return dMisrouted
	}
	return 0
}

func (m *msg) closed() bool { return m.flags&(fConfirmed|fCallerOmission) != 0 }

func (m *msg) calleeSeen() bool { return m.flags&(fReceived|fCalleeOmission) != 0 }

// waitingForCaller reports whether the message was sent and may still
// become unconfirmed.
func (m *msg) waitingForCaller() bool {
	return m.flags&fSent != 0 && !m.closed() && m.done&dUnconfirmed == 0
}

func (m *msg) idString() string {
	if m.rawID != "" {
		return m.rawID
	}
	return hex.EncodeToString(m.id[:])
}

// recent-set flags of a settled message.
const (
	rSent uint8 = 1 << iota
	rConfirmed
	rReceived
	rCaller // some caller record was seen
	rDup    // duplicate emitted or reported
)

// track starts tracking a message and returns its slot.
func (r *Reconciler) track(key msgKey, raw string) uint32 {
	var idx uint32
	if n := len(r.free); n > 0 {
		idx = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		idx = uint32(len(r.slab))
		r.slab = append(r.slab, msg{})
	}
	m := &r.slab[idx]
	*m = msg{id: key, rawID: raw, gen: m.gen}
	r.msgs[key] = idx
	return idx
}

// addCaller applies a caller's record (SENT, CONFIRMED, OMISSION) to m.
func (r *Reconciler) addCaller(m *msg, rec *Record, sp *space, at, now int64, out []Finding) []Finding {
	if m.caller == nil {
		if sp != nil {
			m.caller = &sp.info
		} else {
			m.caller = newCallerInfo(rec)
		}
		m.seq = rec.Seq
		if m.flags&fReceived != 0 {
			if m.calleeDest == m.caller.destination {
				m.calleeDest = m.caller.destination // share the string
			}
			out = r.checkCalleeDest(m, now, out)
		}
	}
	switch rec.Kind {
	case Sent:
		if m.flags&fSent != 0 {
			return r.duplicate(m, rec, now, "SENT twice with the same id: a replay", out)
		}
		if !m.caller.sentIdentity && rec.DestinationIdentity != "" {
			m.caller.destinationID = strings.Clone(rec.DestinationIdentity)
			m.caller.sentIdentity = true
		}
		m.flags |= fSent
		m.sentAt = at
		// The window runs on the caller's clock from its SENT; the finding
		// waits for it on ours: never before the SENT arrived (a late
		// batch), never more than a Window after (a caller clock ahead).
		m.deadline = min(max(at+r.window, now), now+r.window) + r.lag
		out = r.checkLate(m, now, out)
	case Confirmed:
		if m.flags&fConfirmed != 0 {
			return r.duplicate(m, rec, now, "CONFIRMED twice", out)
		}
		if !m.closed() {
			m.closeAt = at
		}
		m.flags |= fConfirmed
		if m.flags&fUnconfEmitted != 0 && m.flags&fSent != 0 && at <= m.sentAt+r.window {
			r.stats.LateConfirmations++
		}
		out = r.checkLate(m, now, out)
		out = r.checkIdentity(m, rec, now, out)
		out = r.compareDigests(m, rec, true, now, out)
	case Omission:
		m.done |= doneBit(rec.OmissionKind)
		if !m.closed() {
			m.closeAt = at
			m.flags |= fCallerOmission
		}
	}
	return out
}

// addCallee applies a callee's record (RECEIVED, OMISSION) to m.
func (r *Reconciler) addCallee(m *msg, rec *Record, now int64, out []Finding) []Finding {
	switch rec.Kind {
	case Received:
		if m.flags&fReceived != 0 {
			return r.duplicate(m, rec, now,
				fmt.Sprintf("RECEIVED twice: delivered by callee instance %s and by instance %s", m.calleeInst, rec.Instance), out)
		}
		m.flags |= fReceived
		m.calleeInst = rec.Instance
		m.calleeDest = rec.Destination
		if m.caller != nil {
			if rec.Destination == m.caller.destination {
				m.calleeDest = m.caller.destination
			}
			out = r.checkCalleeDest(m, now, out)
		}
		out = r.compareDigests(m, rec, false, now, out)
	case Omission:
		m.done |= doneBit(rec.OmissionKind)
		m.flags |= fCalleeOmission
	}
	return out
}

// checkLate makes unconfirmed for a message confirmed (on the caller's
// clock) after its window.
func (r *Reconciler) checkLate(m *msg, now int64, out []Finding) []Finding {
	if m.flags&(fSent|fConfirmed) != fSent|fConfirmed || m.flags&fCallerOmission != 0 ||
		m.done&dUnconfirmed != 0 || m.closeAt-m.sentAt <= r.window {
		return out
	}
	m.done |= dUnconfirmed
	m.flags |= fUnconfEmitted
	return append(out, r.finding(KindUnconfirmed, m, nil, now,
		fmt.Sprintf("confirmed %s after it was sent, past the %s window", fmtDur(m.closeAt-m.sentAt), fmtDur(r.window))))
}

// checkCalleeDest makes misrouted if the callee that received m is not of
// the service the caller addressed.
func (r *Reconciler) checkCalleeDest(m *msg, now int64, out []Finding) []Finding {
	if m.flags&fReceived == 0 || m.calleeDest == "" || m.calleeDest == m.caller.destination || m.done&dMisrouted != 0 {
		return out
	}
	m.done |= dMisrouted
	return append(out, r.finding(KindMisrouted, m, nil, now,
		fmt.Sprintf("addressed to %q, received by %q (callee instance %s)", m.caller.destination, m.calleeDest, m.calleeInst)))
}

// checkIdentity makes misrouted if a CONFIRMED names a peer identity other
// than the one addressed.
func (r *Reconciler) checkIdentity(m *msg, rec *Record, now int64, out []Finding) []Finding {
	id := rec.DestinationIdentity
	if id == "" || m.done&dMisrouted != 0 {
		return out
	}
	want := ""
	if m.caller.sentIdentity {
		want = m.caller.destinationID
	}
	if namesService(id, m.caller.destination) && (want == "" || id == want) {
		return out
	}
	if want == "" {
		want = "spiffe://<trust domain>/svc/" + m.caller.destination
	}
	m.done |= dMisrouted
	return append(out, r.finding(KindMisrouted, m, rec, now,
		fmt.Sprintf("confirmed by %s, addressed %s", id, want)))
}

// namesService reports whether id is spiffe://<td>/svc/<service>.
func namesService(id, service string) bool {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return false
	}
	td, path, ok := strings.Cut(rest, "/")
	return ok && td != "" && path == "svc/"+service
}

// compareDigests keeps the first side's digests of m and compares the
// other side's with them.
func (r *Reconciler) compareDigests(m *msg, rec *Record, fromCaller bool, now int64, out []Finding) []Finding {
	req, resp := rec.RequestDigest, rec.ResponseDigest
	if m.flags&fCompared != 0 || len(req) == 0 && len(resp) == 0 {
		return out
	}
	if m.dig == nil {
		m.dig = &digests{req: string(req), resp: string(resp), fromCaller: fromCaller}
		return out
	}
	if m.dig.fromCaller == fromCaller {
		return out
	}
	d := m.dig
	m.dig = nil
	m.flags |= fCompared
	var parts []string
	diff := func(what, first string, second []byte) {
		if first == "" || len(second) == 0 || first == string(second) {
			return
		}
		byCaller, byCallee := []byte(first), second
		if fromCaller {
			byCaller, byCallee = second, []byte(first)
		}
		parts = append(parts, fmt.Sprintf("%s digest: caller confirmed %x, callee received %x", what, byCaller, byCallee))
	}
	diff("request", d.req, req)
	diff("response", d.resp, resp)
	if len(parts) == 0 || m.done&dDigestMismatch != 0 {
		return out
	}
	m.done |= dDigestMismatch
	return append(out, r.finding(KindDigestMismatch, m, rec, now, strings.Join(parts, "; ")))
}

func (r *Reconciler) duplicate(m *msg, rec *Record, now int64, detail string, out []Finding) []Finding {
	if m.done&dDuplicate != 0 {
		return out
	}
	m.done |= dDuplicate
	return append(out, r.finding(KindDuplicate, m, rec, now, detail))
}

// schedule sets m's next timer after a change, or forgets it if settled.
func (r *Reconciler) schedule(idx uint32, now int64) {
	m := &r.slab[idx]
	if m.closed() && m.calleeSeen() {
		r.forget(idx)
		return
	}
	when := now + r.hold
	if m.waitingForCaller() {
		when = m.deadline
	}
	r.setTimer(idx, m, when)
}

func (r *Reconciler) setTimer(idx uint32, m *msg, when int64) {
	m.timer = when
	if m.heapAt == 0 || when < m.heapAt {
		r.timers.push(timer{when: when, idx: idx, gen: m.gen})
		m.heapAt = when
	}
}

// fireTimers handles every timer due at now: unconfirmed findings, and
// forgetting messages that waited long enough for the other side.
func (r *Reconciler) fireTimers(now int64, out []Finding) []Finding {
	for len(r.timers) > 0 && r.timers[0].when <= now {
		t := r.timers.pop()
		m := &r.slab[t.idx]
		if m.gen != t.gen || m.heapAt != t.when {
			continue // the message was forgotten, or has an earlier entry
		}
		m.heapAt = 0
		if m.timer > now {
			r.setTimer(t.idx, m, m.timer) // postponed since pushed
			continue
		}
		if m.waitingForCaller() {
			m.done |= dUnconfirmed
			m.flags |= fUnconfEmitted
			out = append(out, r.finding(KindUnconfirmed, m, nil, now,
				fmt.Sprintf("sent at %s by instance %s; no confirmation or omission from the caller within the %s window",
					time.Unix(0, m.sentAt).UTC().Format(time.RFC3339Nano), m.caller.instance, fmtDur(r.window))))
			r.setTimer(t.idx, m, now+r.hold)
			continue
		}
		r.forget(t.idx)
	}
	return out
}

// forget stops tracking a message and remembers its id as settled.
func (r *Reconciler) forget(idx uint32) {
	m := &r.slab[idx]
	var f uint8
	if m.flags&fSent != 0 {
		f |= rSent
	}
	if m.flags&fConfirmed != 0 {
		f |= rConfirmed
	}
	if m.flags&fReceived != 0 {
		f |= rReceived
	}
	if m.caller != nil {
		f |= rCaller
	} else {
		r.stats.Orphans++
	}
	if m.done&dDuplicate != 0 {
		f |= rDup
	}
	r.recentPut(m.id, f)
	delete(r.msgs, m.id)
	*m = msg{gen: m.gen + 1}
	r.free = append(r.free, idx)
}

func (r *Reconciler) recentGet(k msgKey) (gen int, f uint8, ok bool) {
	if f, ok := r.recent[0][k]; ok {
		return 0, f, true
	}
	if f, ok := r.recent[1][k]; ok {
		return 1, f, true
	}
	return 0, 0, false
}

func (r *Reconciler) recentPut(k msgKey, f uint8) {
	if len(r.recent[0]) >= r.maxTracked {
		r.stats.RecentDropped += uint64(len(r.recent[1]))
		r.rotateRecent(r.now)
	}
	r.recent[0][k] = f
}

// rotateRecent drops the previous generation of settled ids: an id is
// remembered at least recentGenerations windows after it settled.
func (r *Reconciler) rotateRecent(now int64) {
	old := r.recent[1]
	clear(old)
	r.recent[1] = r.recent[0]
	r.recent[0] = old
	r.recentSince = now
}

// addSettled applies a record of a message that already settled: only a
// duplicate can come of it, unless the message was forgotten with no caller
// record (an orphan), which a caller record brings back.
func (r *Reconciler) addSettled(rec *Record, key msgKey, gen int, f uint8, now int64, out []Finding) []Finding {
	caller := rec.caller()
	if caller && f&rCaller == 0 && len(r.msgs) >= r.maxTracked {
		r.stats.Untracked++ // an orphan's caller record finds no room
	}
	if caller && f&rCaller == 0 && len(r.msgs) < r.maxTracked {
		delete(r.recent[gen], key)
		_, raw := keyOf(rec.MessageID)
		idx := r.track(key, raw)
		m := &r.slab[idx]
		if f&rReceived != 0 {
			m.flags |= fReceived
		}
		if f&rDup != 0 {
			m.done |= dDuplicate
		}
		// The caller's space was observed by add already.
		sp := r.spaces[spaceKey{rec.callerInstance(), rec.Destination}]
		at := now
		if !rec.At.IsZero() {
			at = rec.At.UnixNano()
		}
		out = r.addCaller(m, rec, sp, at, now, out)
		r.schedule(idx, now)
		return out
	}
	var detail string
	switch {
	case rec.Kind == Sent && f&rSent != 0:
		detail = "SENT again after the message settled: a replay"
	case rec.Kind == Confirmed && f&rConfirmed != 0:
		detail = "CONFIRMED again after the message settled"
	case rec.Kind == Received && f&rReceived != 0:
		detail = fmt.Sprintf("RECEIVED again after the message settled: delivered again by callee instance %s", rec.Instance)
	}
	switch rec.Kind {
	case Sent:
		f |= rSent
	case Confirmed:
		f |= rConfirmed
	case Received:
		f |= rReceived
	}
	if caller {
		f |= rCaller
	}
	if detail != "" && f&rDup == 0 {
		f |= rDup
		out = append(out, Finding{
			Kind: KindDuplicate, MessageID: rec.MessageID, Seq: rec.Seq,
			Source: rec.Source, Destination: rec.Destination,
			SourceIdentity: rec.SourceIdentity, DestinationIdentity: rec.DestinationIdentity,
			DetectedAt: time.Unix(0, now).UTC(), Detail: detail,
		})
	}
	r.recent[gen][key] = f
	return out
}

// timer is an entry of the timer heap: message slot idx of generation gen
// needs attention at when.
type timer struct {
	when     int64
	idx, gen uint32
}

// timerHeap is a binary min-heap by when.
type timerHeap []timer

func (h *timerHeap) push(t timer) {
	*h = append(*h, t)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[p].when <= s[i].when {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *timerHeap) pop() timer {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && s[r].when < s[l].when {
			c = r
		}
		if s[i].when <= s[c].when {
			break
		}
		s[i], s[c] = s[c], s[i]
		i = c
	}
	*h = s
	return top
}
