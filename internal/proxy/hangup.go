package proxy

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// hangupWatchAfter is how long an HTTP/1.x request from the app may be in
// flight before the outbound server watches its connection for a hang-up.
const hangupWatchAfter = 100 * time.Millisecond

// hangupWatch notices an app that closes its connection while its request
// is in flight, so that the call is canceled toward the callee (a reset
// stream) instead of holding the callee's app until it answers. net/http's
// server reads in the background during every request for this; most
// requests here finish long before that could matter, and the read costs
// each of them a goroutine and a system call, so the watch starts only for
// a request still in flight after hangupWatchAfter, and only once its body
// was read to the end (until then the handler's reads notice a hang-up).
//
// It is the connection the server reads requests from: bytes the watch
// read (the start of a pipelined request) come first.
type hangupWatch struct {
	net.Conn
	hungUp func() // called once, when the app hung up during a request
	timer  *time.Timer

	mu       sync.Mutex
	armed    bool // a request is in flight
	due      bool // ... for longer than hangupWatchAfter
	bodyRead bool // ... and its body was read to the end
	reading  bool // the watch's read is running
	stopping bool // disarm is ending that read
	done     chan struct{}
	stash    []byte
}

func newHangupWatch(nc net.Conn, hungUp func()) *hangupWatch {
	w := &hangupWatch{Conn: nc, hungUp: hungUp}
	w.timer = time.AfterFunc(time.Hour, w.fire)
	w.timer.Stop()
	return w
}

// Read serves what the watch read first.
func (w *hangupWatch) Read(p []byte) (int, error) {
	w.mu.Lock()
	if len(w.stash) > 0 {
		n := copy(p, w.stash)
		w.stash = w.stash[n:]
		w.mu.Unlock()
		return n, nil
	}
	w.mu.Unlock()
	return w.Conn.Read(p)
}

// arm starts the wait for req, whose body (if any) must be read through
// the body arm returns.
func (w *hangupWatch) arm(req *http.Request) {
	w.mu.Lock()
	w.armed, w.due, w.bodyRead = true, false, req.Body == http.NoBody
	w.mu.Unlock()
	if !w.bodyRead {
		req.Body = &watchedBody{ReadCloser: req.Body, w: w}
	}
	w.timer.Reset(hangupWatchAfter)
}

func (w *hangupWatch) fire()     { w.mark(&w.due) }
func (w *hangupWatch) bodyDone() { w.mark(&w.bodyRead) }

// mark sets one of the two conditions of the request in flight and starts
// the watch's read once both hold. A late timer of the previous request
// only starts this one's watch early.
func (w *hangupWatch) mark(cond *bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed || w.reading {
		return
	}
	*cond = true
	if w.due && w.bodyRead {
		w.reading = true
		w.done = make(chan struct{})
		go w.watch(w.done)
	}
}

// watch reads until the app sends more (it is there) or the connection
// fails (it hung up), unless disarm ends the read first.
func (w *hangupWatch) watch(done chan struct{}) {
	defer close(done)
	var b [512]byte
	n, err := w.Conn.Read(b[:])
	w.mu.Lock()
	w.stash = append(w.stash, b[:n]...)
	w.reading = false
	hungUp := err != nil && !w.stopping
	w.armed = w.armed && !hungUp
	w.mu.Unlock()
	if hungUp {
		w.hungUp()
	}
}

// disarm ends the watch of the request in flight; the server reads the
// connection again after it.
func (w *hangupWatch) disarm() {
	w.timer.Stop()
	w.mu.Lock()
	w.armed = false
	if !w.reading {
		w.mu.Unlock()
		return
	}
	w.stopping = true
	done := w.done
	w.mu.Unlock()
	w.Conn.SetReadDeadline(time.Unix(1, 0))
	<-done
	w.Conn.SetReadDeadline(time.Time{})
	w.mu.Lock()
	w.stopping = false
	w.mu.Unlock()
}

// watchedBody tells the watch when the request body was read to its end.
type watchedBody struct {
	io.ReadCloser
	w *hangupWatch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.w.bodyDone()
	}
	return n, err
}
