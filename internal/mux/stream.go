package mux

import (
	"io"
	"net/http"
	"sync"

	"golang.org/x/net/http2"
)

// stream is one HTTP/2 stream. Its receive side is a pipe from the read
// loop to whoever reads the body; trailers are handed over with the end of
// the body, in the reader's goroutine.
type stream struct {
	id uint32
	c  *conn

	// Guarded by c.mu.
	sendWindow  int64
	sendErr     error // the peer reset the stream, or we finished sending
	recvUnacked int
	remoteDone  bool // the peer ended its side
	localDone   bool // we ended our side

	rmu     sync.Mutex // guards following
	rcond   sync.Cond
	buf     []byte
	off     int   // read position in buf
	rerr    error // io.EOF at the peer's END_STREAM, else the failure
	trailer http.Header
	// onEOF moves the trailers into the request or response, in the
	// reader's goroutine.
	onEOF func(trailer http.Header)
	// Client streams: the response headers arrive here, once (nil when
	// the stream failed first).
	resp     chan *http.Response
	respOnce sync.Once
	// headersSeen: the read loop has had this stream's headers, so the
	// next header block is the trailers. Touched only by the read loop.
	headersSeen bool
	// Server streams: the handler's request context (nil on client streams).
	ctx *requestContext
}

// deliverResp hands the response (or nil for a failure) to RoundTrip once.
func (s *stream) deliverResp(r *http.Response) {
	if s.resp == nil {
		return
	}
	s.respOnce.Do(func() { s.resp <- r })
}

func newStream(c *conn, id uint32) *stream {
	s := &stream{id: id, c: c}
	s.rcond.L = &s.rmu
	return s
}

// deliver appends DATA from the read loop. It reports false when the peer
// sent more than the window it was given.
func (s *stream) deliver(p []byte) bool {
	s.rmu.Lock()
	if s.rerr == nil {
		if len(s.buf)-s.off+len(p) > initialStreamWindow {
			s.rmu.Unlock()
			return false
		}
		if s.buf == nil {
			s.buf = getDataBuf()
		}
		s.buf = append(s.buf, p...)
		s.rcond.Broadcast()
		s.rmu.Unlock()
		return true
	}
	s.rmu.Unlock()
	// Nobody will read it: give the connection window back at once.
	s.c.refund(nil, len(p))
	return true
}

// closeRecv ends the receive side with err (io.EOF for a clean end).
func (s *stream) closeRecv(err error) {
	s.rmu.Lock()
	if s.rerr == nil {
		s.rerr = err
	}
	s.rcond.Broadcast()
	s.rmu.Unlock()
	s.deliverResp(nil)
}

func (s *stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	for len(s.buf) == s.off && s.rerr == nil {
		s.rcond.Wait()
	}
	if len(s.buf) > s.off {
		n := copy(p, s.buf[s.off:])
		s.off += n
		if s.off == len(s.buf) {
			s.buf, s.off = s.buf[:0], 0
		}
		s.rmu.Unlock()
		s.c.refund(s, n)
		return n, nil
	}
	err, tr, onEOF := s.rerr, s.trailer, s.onEOF
	s.onEOF = nil
	// Drained and ended: nothing is appended after rerr is set.
	putDataBuf(s.buf)
	s.buf, s.off = nil, 0
	s.rmu.Unlock()
	if err == io.EOF && onEOF != nil {
		onEOF(tr)
	}
	return 0, err
}

// setTrailer records the trailers that end the stream.
func (s *stream) setTrailer(h http.Header) {
	s.rmu.Lock()
	s.trailer = h
	s.rmu.Unlock()
}

// abandon stops reading: data still arriving is discarded.
func (s *stream) abandon(err error) {
	s.rmu.Lock()
	n := len(s.buf) - s.off
	s.buf, s.off = nil, 0
	if s.rerr == nil {
		s.rerr = err
	}
	s.rcond.Broadcast()
	s.rmu.Unlock()
	s.c.refund(nil, n)
}

// markDone records that one side ended and drops the stream from the
// table when both have.
func (c *conn) markDone(s *stream, local, remote bool) {
	c.mu.Lock()
	if local {
		s.localDone = true
	}
	if remote {
		s.remoteDone = true
	}
	if s.localDone && s.remoteDone {
		delete(c.streams, s.id)
		c.cond.Broadcast()
	}
	c.mu.Unlock()
}

// resetStream forgets s after a reset in either direction.
func (c *conn) resetStream(s *stream, err error) {
	c.mu.Lock()
	s.localDone, s.remoteDone = true, true
	if s.sendErr == nil {
		s.sendErr = err
	}
	delete(c.streams, s.id)
	c.cond.Broadcast()
	c.mu.Unlock()
	s.closeRecv(err)
	s.ctx.cancel() // a server stream's handler stops waiting
}

// onData takes a DATA frame from the read loop (either role).
func (c *conn) onData(f *http2.DataFrame) {
	c.mu.Lock()
	s := c.streams[f.StreamID]
	c.mu.Unlock()
	if s == nil {
		c.refund(nil, int(f.Length)) // a stream already gone
		return
	}
	if data := f.Data(); len(data) > 0 && !s.deliver(data) {
		c.writeReset(s.id, http2.ErrCodeFlowControl)
		c.resetStream(s, StreamError{http2.ErrCodeFlowControl})
		return
	}
	if pad := int(f.Length) - len(f.Data()); pad > 0 {
		c.refund(s, pad)
	}
	if f.StreamEnded() {
		c.markDone(s, false, true)
		s.closeRecv(io.EOF)
	}
}
