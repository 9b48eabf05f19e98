package proxy

import (
	"net"
	"sync"
)

// maxPending bounds the bytes a coalescingConn holds while a write is in
// progress; a writer beyond it waits (backpressure).
const maxPending = 1 << 20

// coalescingConn merges concurrent writes into one system call. HTTP/2
// writes each request's frames and flushes at once, so at load every stream
// costs a TLS record and a write(2); wrapped under TLS, this conn lets the
// first writer write for everyone: writes that arrive while it is in the
// system call are appended and go out with its next one. When writes do not
// overlap it adds nothing: the writer writes its own bytes at once.
//
// A write that was appended behind another returns before its bytes reach
// the socket; a failure of the system call is returned by the next Write.
// It is safe for concurrent use.
type coalescingConn struct {
	net.Conn

	mu       sync.Mutex // guards following
	pending  []byte
	spare    []byte
	flushing bool
	err      error
	room     *sync.Cond // signalled when pending drains
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c}
	cc.room = sync.NewCond(&cc.mu)
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	for c.err == nil && c.flushing && len(c.pending)+len(p) > maxPending {
		c.room.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.flushing {
		c.pending = append(c.pending, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	// Leader: write p directly (no copy), then whatever others appended.
	c.flushing = true
	out, own := p, false
	for {
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		if own {
			c.spare = out[:0] // ours to reuse; p is the caller's
		}
		if err != nil {
			c.err = err
			break
		}
		if len(c.pending) == 0 {
			break
		}
		out, own, c.pending = c.pending, true, c.spare
		c.spare = nil
		c.room.Broadcast()
	}
	c.flushing = false
	c.pending = c.pending[:0]
	err := c.err
	c.room.Broadcast()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
