package mux

import (
	"context"
	"slices"
	"sync"
	"time"
)

// requestContext is the context of the request a server stream carries.
// As with net/http, it is canceled when the peer resets the stream, when
// the connection ends, or when the handler returns, and it carries the
// values of the connection's context.
//
// It costs less than context.WithCancel per stream: it does not register
// with the connection's context (the connection cancels its own streams),
// and it implements AfterFunc, which context.AfterFunc and
// context.WithCancel call on a parent that has it instead of registering.
type requestContext struct {
	// values is the connection's context without its cancellation, so
	// that context.Cause finds no ancestor's cause and reports Err.
	values context.Context

	mu    sync.Mutex
	err   error         // context.Canceled once canceled
	done  chan struct{} // made on the first Done: most requests never ask
	funcs []*afterFunc  // registered, neither run nor stopped yet
}

type afterFunc struct {
	c *requestContext
	f func()
}

func newRequestContext(values context.Context) *requestContext {
	return &requestContext{values: values}
}

func (c *requestContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *requestContext) Value(key any) any           { return c.values.Value(key) }
func (c *requestContext) String() string              { return "mux request context" }

func (c *requestContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

func (c *requestContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// AfterFunc runs f in its own goroutine once c is canceled, at once if it
// already is. stop undoes that and reports whether it did, as with
// context.AfterFunc.
func (c *requestContext) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	e := &afterFunc{c: c, f: f}
	c.funcs = append(c.funcs, e)
	c.mu.Unlock()
	return e.stop
}

func (e *afterFunc) stop() bool {
	c := e.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.funcs, e)
	if i < 0 {
		return false
	}
	c.funcs = slices.Delete(c.funcs, i, i+1)
	return true
}

// cancel ends c and starts the functions registered with AfterFunc; later
// calls do nothing, nor does a call on nil (a client stream has no
// request context).
func (c *requestContext) cancel() {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, e := range funcs {
		go e.f()
	}
}
