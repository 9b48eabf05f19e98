package reconcile

import (
	"errors"
	"fmt"
)

// remembered reports whether the message id is tracked or among the
// settled ids.
func (r *Reconciler) remembered(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, _ := keyOf(id)
	if _, ok := r.msgs[k]; ok {
		return true
	}
	_, _, ok := r.recentGet(k)
	return ok
}

func (r *Reconciler) spaceExists(instance, destination string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.spaces[spaceKey{instance, destination}]
	return ok
}

// check verifies the reconciler's internal consistency.
func (r *Reconciler) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(r.msgs) > r.maxTracked {
		fail("%d messages tracked, limit %d", len(r.msgs), r.maxTracked)
	}
	if len(r.spaces) > r.maxSpaces {
		fail("%d spaces, limit %d", len(r.spaces), r.maxSpaces)
	}
	if r.holes > r.maxTracked {
		fail("%d holes, limit %d", r.holes, r.maxTracked)
	}
	for i := range r.recent {
		if len(r.recent[i]) > r.maxTracked {
			fail("recent[%d] holds %d, limit %d", i, len(r.recent[i]), r.maxTracked)
		}
	}
	if len(r.msgs)+len(r.free) != len(r.slab) {
		fail("%d messages + %d free slots != %d slots", len(r.msgs), len(r.free), len(r.slab))
	}
	pending := make(map[timer]bool)
	for i, t := range r.timers {
		pending[t] = true
		if i > 0 && r.timers[(i-1)/2].when > t.when {
			fail("timer heap out of order at %d", i)
		}
	}
	for k, idx := range r.msgs {
		m := &r.slab[idx]
		if m.id != k {
			fail("slot %d holds id %x, map says %x", idx, m.id, k)
		}
		if m.closed() && m.calleeSeen() {
			fail("message %x settled but tracked", k)
		}
		if m.heapAt == 0 || !pending[timer{when: m.heapAt, idx: idx, gen: m.gen}] {
			fail("message %x has no timer (heapAt %d)", k, m.heapAt)
		}
		if m.timer < m.heapAt {
			fail("message %x: timer %d before its heap entry %d", k, m.timer, m.heapAt)
		}
		if m.flags&fSent != 0 && m.caller == nil {
			fail("message %x sent without caller info", k)
		}
	}
	for k := range r.recent[0] {
		if _, ok := r.msgs[k]; ok {
			fail("id %x both tracked and settled", k)
		}
	}
	holes := 0
	for k, sp := range r.spaces {
		if sp.key != k {
			fail("space %v under key %v", sp.key, k)
		}
		holes += len(sp.holes)
		_, holey := r.holey[sp]
		if holey != (len(sp.holes) > 0) {
			fail("space %s: in holey set %v with %d holes", sp, holey, len(sp.holes))
		}
		for i, h := range sp.holes {
			if h.lo > h.hi || h.hi >= sp.max || i > 0 && (sp.holes[i-1].hi+1 >= h.lo || sp.holes[i-1].due > h.due) {
				fail("space %s: bad hole %d", sp, i)
			}
		}
		found := false
		for _, s := range r.byInstance[k.instance] {
			found = found || s == sp
		}
		if !found {
			fail("space %s missing from byInstance", sp)
		}
	}
	if holes != r.holes {
		fail("%d holes counted, %d in spaces", r.holes, holes)
	}
	for sp := range r.holey {
		if r.spaces[sp.key] != sp {
			fail("holey space %s not tracked", sp)
		}
	}
	for inst, sps := range r.byInstance {
		for _, sp := range sps {
			if r.spaces[sp.key] != sp || sp.key.instance != inst {
				fail("byInstance[%s] holds stale space %s", inst, sp)
			}
		}
	}
	return errors.Join(errs...)
}
