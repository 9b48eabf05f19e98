package reconcile

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// spaceKey names a sequence space: the seqs one caller instance gave the
// messages it addressed to one destination service.
type spaceKey struct{ instance, destination string }

// space is what is known of one sequence space, compactly: every seq up to
// max was seen (or reported missing, or lies before the first one seen),
// except those in holes.
type space struct {
	key        spaceKey
	info       callerInfo
	max        uint64
	maxTrusted bool // the record that set max was made after the warm-up
	holes      []hole
	lastSeen   int64
}

// hole is a range of seqs missing from a space, to be reported as a
// sequence_gap at due unless filled. Holes are sorted and disjoint; since
// each opens above the ones before it and keeps its due when split, the
// first one is always the first due.
type hole struct {
	lo, hi uint64
	due    int64
}

// observeSeq notes the seq of a caller's record in its space and returns
// the space, or nil if it cannot be tracked.
func (r *Reconciler) observeSeq(rec *Record, at, now int64) *space {
	k := spaceKey{rec.callerInstance(), rec.Destination}
	sp := r.spaces[k]
	trusted := at >= r.warmEnd
	s := rec.Seq
	if sp == nil {
		if len(r.spaces) >= r.maxSpaces {
			r.stats.SpacesRefused++
			return nil
		}
		// The first seq seen is the space's baseline; see the package
		// doc for why seqs below it are never a gap.
		sp = &space{info: *newCallerInfo(rec), max: s, maxTrusted: trusted, lastSeen: now}
		sp.info.instance = strings.Clone(k.instance)
		sp.key = spaceKey{sp.info.instance, sp.info.destination}
		r.spaces[sp.key] = sp
		r.byInstance[sp.key.instance] = append(r.byInstance[sp.key.instance], sp)
		return sp
	}
	sp.lastSeen = now
	switch {
	case s > sp.max:
		if s-sp.max > 1 && trusted && sp.maxTrusted {
			r.addHole(sp, hole{lo: sp.max + 1, hi: s - 1, due: now + r.window})
		}
		sp.max, sp.maxTrusted = s, trusted
	case len(sp.holes) > 0:
		r.fillHole(sp, s)
	}
	return sp
}

func (r *Reconciler) addHole(sp *space, h hole) {
	if r.holes >= r.maxTracked {
		r.stats.HolesDropped++
		return
	}
	sp.holes = append(sp.holes, h)
	r.holes++
	if len(sp.holes) == 1 {
		r.holey[sp] = struct{}{}
	}
}

// fillHole takes s out of the hole that holds it, if any.
func (r *Reconciler) fillHole(sp *space, s uint64) {
	hs := sp.holes
	i := sort.Search(len(hs), func(i int) bool { return hs[i].hi >= s })
	if i == len(hs) || hs[i].lo > s {
		return
	}
	h := &hs[i]
	switch {
	case h.lo == h.hi:
		sp.holes = slices.Delete(hs, i, i+1)
		r.holes--
		if len(sp.holes) == 0 {
			sp.holes = nil
			delete(r.holey, sp)
		}
	case s == h.lo:
		h.lo++
	case s == h.hi:
		h.hi--
	default:
		upper := hole{lo: s + 1, hi: h.hi, due: h.due}
		h.hi = s - 1
		if r.holes >= r.maxTracked {
			r.stats.HolesDropped++
			return
		}
		sp.holes = slices.Insert(hs, i+1, upper)
		r.holes++
	}
}

// popHole removes the first hole of sp.
func (r *Reconciler) popHole(sp *space) {
	sp.holes = sp.holes[1:]
	r.holes--
	if len(sp.holes) == 0 {
		sp.holes = nil
		delete(r.holey, sp)
	}
}

// dueHoles reports the holes whose window has passed.
func (r *Reconciler) dueHoles(now int64, out []Finding) []Finding {
	for sp := range r.holey {
		for len(sp.holes) > 0 && sp.holes[0].due <= now {
			out = append(out, r.gapFinding(sp, sp.holes[0], now, "within the "+fmtDur(r.window)+" window"))
			r.popHole(sp)
		}
	}
	return out
}

func (r *Reconciler) gapFinding(sp *space, h hole, now int64, when string) Finding {
	what := fmt.Sprintf("seq %d", h.lo)
	if h.hi > h.lo {
		what = fmt.Sprintf("seqs %d-%d (%d messages)", h.lo, h.hi, h.hi-h.lo+1)
	}
	return Finding{
		Kind:                KindSequenceGap,
		Seq:                 h.lo,
		Source:              sp.info.source,
		Destination:         sp.info.destination,
		SourceIdentity:      sp.info.sourceID,
		DestinationIdentity: sp.info.destinationID,
		DetectedAt:          time.Unix(0, now).UTC(),
		Detail: fmt.Sprintf("%s of caller instance %s to %s: no record from the caller %s",
			what, sp.info.instance, sp.info.destination, when),
	}
}

// sweepSpaces forgets the spaces that have no holes and saw no record for
// spaceIdle.
func (r *Reconciler) sweepSpaces(now int64) {
	gone := make(map[string]bool)
	for k, sp := range r.spaces {
		if len(sp.holes) == 0 && now-sp.lastSeen >= r.spaceIdle {
			delete(r.spaces, k)
			gone[k.instance] = true
			r.stats.SpacesForgotten++
		}
	}
	for inst := range gone {
		kept := slices.DeleteFunc(r.byInstance[inst], func(sp *space) bool { return r.spaces[sp.key] != sp })
		if len(kept) == 0 {
			delete(r.byInstance, inst)
		} else {
			r.byInstance[inst] = kept
		}
	}
}

// String describes a space for debugging.
func (sp *space) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s->%s max=%d", sp.key.instance, sp.key.destination, sp.max)
	for _, h := range sp.holes {
		fmt.Fprintf(&b, " hole[%d-%d]", h.lo, h.hi)
	}
	return b.String()
}
