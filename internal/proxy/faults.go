package proxy

import (
	"math/rand/v2"
	"time"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

// Injected faults come from the control plane's snapshot (SPEC.md "faults",
// switched by `tally demo fault`). Each one acts where the real failure it
// imitates would happen, so the detection path is the real one:
//   - misroute (caller side): the request goes to an endpoint of another
//     service, as with a stale endpoint or a reused address;
//   - drop (callee side): the request is swallowed and the stream reset, as
//     by a faulty hop;
//   - abort (callee side): the app answers but the stream is reset before
//     the response;
//   - truncate (callee side): the response stream dies mid-body;
//   - corrupt (callee side): one byte of the response changes after hashing;
//   - delay (callee side): the response waits delay_ms.

func matches(pattern, name string) bool { return pattern == "*" || pattern == "" || pattern == name }

func (p *Proxy) pickFault(from, to, kind string) *tallyv1.Fault {
	for _, f := range p.agent.state.Load().faults {
		if f.Kind == kind && matches(f.From, from) && matches(f.To, to) && rand.Float64()*100 < f.Percent {
			return f
		}
	}
	return nil
}

// faultFor is a fault this sidecar, as caller, applies to a message to dest.
func (p *Proxy) faultFor(dest, kind string) *tallyv1.Fault {
	return p.pickFault(p.cfg.Service, dest, kind)
}

// calleeFault is a fault this sidecar, as callee, applies to a message from source.
func (p *Proxy) calleeFault(source, kind string) *tallyv1.Fault {
	return p.pickFault(source, p.cfg.Service, kind)
}

// misrouteTargets replaces the endpoints of dest by those of another service.
func (p *Proxy) misrouteTargets(dest string, eps []endpoint) []endpoint {
	for svc, other := range p.agent.state.Load().endpoints {
		if svc != dest && len(other) > 0 {
			return other
		}
	}
	return eps
}

// bodyFault damages a response body on its way out of the callee.
type bodyFault struct {
	kind string
	done bool
	cut  bool // the stream must die after what apply returned
}

// responseFault returns the body fault for one response, or nil; a delay
// fault is served here, before the body.
func (p *Proxy) responseFault(source string) *bodyFault {
	if f := p.calleeFault(source, "delay"); f != nil {
		time.Sleep(time.Duration(f.DelayMs) * time.Millisecond)
	}
	for _, k := range []string{"truncate", "corrupt"} {
		if p.calleeFault(source, k) != nil {
			return &bodyFault{kind: k}
		}
	}
	return nil
}

// apply returns the bytes to send instead of b (already hashed); after it
// sets cut, the stream must be reset.
func (f *bodyFault) apply(b []byte) []byte {
	if f.done {
		return b
	}
	switch f.kind {
	case "truncate":
		f.done, f.cut = true, true
		return b[:len(b)/2]
	case "corrupt":
		f.done = true
		b[len(b)/2] ^= 0x01
	}
	return b
}
