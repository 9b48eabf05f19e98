package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Server serves HTTP/2 on connections already through TLS (ALPN h2): each
// stream runs Handler in its own goroutine. Configure it before the first
// ServeConn; its methods are safe for concurrent use.
type Server struct {
	Handler              http.Handler
	MaxConcurrentStreams uint32   // per connection; 0 = 1000
	MaxHeaderBytes       int      // request header block limit; 0 = 64 KiB; over it: 431
	NeverIndex           []string // as in ClientConfig
	// FoldTrailer, if set, names trailers that may travel in the header
	// block instead: when a handler returns before its header block went
	// out, those of its trailers go there, which saves the peer a second
	// header block. The peer must accept them in either place.
	FoldTrailer func(name string) bool
	// ConnContext returns the context of the requests on nc (values the
	// handler finds with r.Context()). Nil: the context given to ServeConn.
	ConnContext func(ctx context.Context, nc net.Conn) context.Context
	// OnError, if set, hears about connections that failed.
	OnError func(nc net.Conn, err error)

	mu       sync.Mutex // guards following
	conns    map[*serverConn]struct{}
	shutdown bool
	active   sync.WaitGroup // running handlers

	// Idle handler goroutines wait on work for the next stream (see run).
	initOnce sync.Once
	work     chan func()
	stop     chan struct{} // closed by Shutdown: idle handler goroutines exit
}

// handlerIdle is how long a handler goroutine waits for another stream
// before it exits.
const handlerIdle = 10 * time.Second

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.work = make(chan func())
		s.stop = make(chan struct{})
	})
}

// run runs f on an idle handler goroutine, or on a new one. Reusing them
// keeps the stacks they grew: starting a goroutine per stream cost the
// callee about a tenth of its CPU in stack growth (runtime.newstack under
// the handler, seen with pprof).
func (s *Server) run(f func()) {
	select {
	case s.work <- f:
	default:
		go s.handlerLoop(f)
	}
}

func (s *Server) handlerLoop(f func()) {
	var t *time.Timer
	for {
		f()
		f = nil
		if t == nil {
			t = time.NewTimer(handlerIdle)
		} else {
			t.Reset(handlerIdle)
		}
		select {
		case f = <-s.work:
		case <-t.C:
			return
		case <-s.stop:
			t.Stop()
			return
		}
	}
}

type serverConn struct {
	srv    *Server
	c      *conn
	ctx    context.Context
	values context.Context // ctx without its cancellation, for the requests' values
	lastID uint32          // highest stream opened; read loop only, then under srv.mu for GOAWAY
	remote string          // the peer's address, for Request.RemoteAddr
}

var errShutdown = errors.New("mux: server shutting down")

// ServeConn serves nc until the connection ends; it closes nc.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	maxStreams := s.MaxConcurrentStreams
	if maxStreams == 0 {
		maxStreams = defaultMaxStreams
	}
	s.init()
	sc := &serverConn{srv: s, c: newConn(nc, s.MaxHeaderBytes, s.NeverIndex), ctx: ctx, remote: nc.RemoteAddr().String()}
	if s.ConnContext != nil {
		sc.ctx = s.ConnContext(ctx, nc)
	}
	sc.values = context.WithoutCancel(sc.ctx)
	// The requests' contexts end with the connection's context.
	defer context.AfterFunc(sc.ctx, sc.c.cancelStreams)()
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()
	err := sc.serve(maxStreams)
	if err != nil && s.OnError != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.OnError(nc, err)
	}
	sc.c.fail(fmt.Errorf("mux: connection lost: %w", err))
}

func (sc *serverConn) serve(maxStreams uint32) error {
	c := sc.c
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.nc, preface); err != nil {
		return fmt.Errorf("reading preface: %w", err)
	}
	if string(preface) != http2.ClientPreface {
		return errors.New("bad HTTP/2 preface")
	}
	c.nc.SetReadDeadline(time.Time{})
	if err := c.writeSettings(maxStreams, int(c.rf.MaxHeaderListSize)); err != nil {
		return err
	}
	go c.flusher(c.closed)
	for {
		f, blk, err := c.readFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.writeReset(se.StreamID, se.Code)
				continue
			}
			return err
		}
		if ok, err := c.handleCommon(f); ok {
			if err != nil {
				return err
			}
			continue
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			if err := sc.onHeaders(blk, maxStreams); err != nil {
				return err
			}
		case *http2.DataFrame:
			c.onData(f)
		case *http2.RSTStreamFrame:
			c.mu.Lock()
			st := c.streams[f.StreamID]
			c.mu.Unlock()
			if st != nil {
				sc.c.resetStream(st, StreamError{f.ErrCode})
			}
		}
	}
}

func (sc *serverConn) onHeaders(b *headerBlock, maxStreams uint32) error {
	c := sc.c
	c.mu.Lock()
	st := c.streams[b.streamID]
	c.mu.Unlock()
	if st != nil {
		// Trailers end the request.
		tr, err := c.decodeFields(b.fields, nil)
		if err != nil || !b.endStream {
			c.writeReset(st.id, http2.ErrCodeProtocol)
			sc.c.resetStream(st, StreamError{http2.ErrCodeProtocol})
			return nil
		}
		st.setTrailer(tr)
		c.markDone(st, false, true)
		st.closeRecv(io.EOF)
		return nil
	}
	if b.streamID%2 == 0 || b.streamID <= sc.lastID {
		return fmt.Errorf("stream %d opened out of order", b.streamID)
	}
	sc.srv.mu.Lock()
	sc.lastID = b.streamID
	shutdown := sc.srv.shutdown
	sc.srv.mu.Unlock()
	if shutdown {
		c.writeReset(b.streamID, http2.ErrCodeRefusedStream)
		return nil
	}
	c.mu.Lock()
	full := uint32(len(c.streams)) >= maxStreams
	c.mu.Unlock()
	if full {
		c.writeReset(b.streamID, http2.ErrCodeRefusedStream)
		return nil
	}
	st = newStream(c, b.streamID)
	st.ctx = newRequestContext(sc.values) // before others can see st
	c.mu.Lock()
	st.sendWindow = int64(c.peerWindow)
	c.streams[st.id] = st
	c.mu.Unlock()
	if sc.ctx.Err() != nil { // else cancelStreams, which runs after, sees st
		st.ctx.cancel()
	}
	st.headersSeen = true
	if b.endStream {
		c.markDone(st, false, true)
		st.closeRecv(io.EOF)
	}
	if b.truncated {
		sc.answer(st, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	var method, path, authority string
	h, err := c.decodeFields(b.fields, func(name, value string) error {
		switch name {
		case ":method":
			method = value
		case ":path":
			path = value
		case ":authority":
			authority = value
		case ":scheme":
		default:
			return fmt.Errorf("unknown pseudo-header %s", name)
		}
		return nil
	})
	if err != nil || method == "" || path == "" {
		sc.answer(st, http.StatusBadRequest)
		return nil
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		sc.answer(st, http.StatusBadRequest)
		return nil
	}
	if authority == "" {
		authority = h.Get("Host")
	}
	req := &http.Request{
		Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, Host: authority,
		RequestURI: path, RemoteAddr: sc.remote,
	}
	if b.endStream {
		req.Body = http.NoBody
	} else {
		req.Body = &requestBody{st: st}
		req.ContentLength = -1
		if cl := h.Get("Content-Length"); cl != "" {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
				req.ContentLength = n
			}
		}
	}
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				if req.Trailer == nil {
					req.Trailer = http.Header{}
				}
				req.Trailer[c.canonical(k)] = nil
			}
		}
	}
	delete(h, "Trailer")
	st.onEOF = func(tr http.Header) {
		if len(tr) == 0 {
			return
		}
		if req.Trailer == nil {
			req.Trailer = http.Header{}
		}
		for k, v := range tr {
			req.Trailer[k] = v
		}
	}
	// A handler is counted under srv.mu, where Shutdown sets shutdown
	// before it waits: no Add can race with that Wait.
	sc.srv.mu.Lock()
	if sc.srv.shutdown {
		sc.srv.mu.Unlock()
		c.writeReset(st.id, http2.ErrCodeRefusedStream)
		c.resetStream(st, errShutdown)
		return nil
	}
	sc.srv.active.Add(1)
	sc.srv.mu.Unlock()
	req = req.WithContext(st.ctx)
	sc.srv.run(func() { sc.runHandler(st, req) })
	return nil
}

// answer sends a bodiless response with status code (the handler is not run).
func (sc *serverConn) answer(st *stream, code int) {
	c := sc.c
	c.writeFrames(func() error {
		return c.writeHeaderBlock(st.id, true, func(enc *hpack.Encoder) {
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(code)})
		})
	})
	c.markDone(st, true, false)
	if !st.remoteDone {
		c.writeReset(st.id, http2.ErrCodeNo)
		c.resetStream(st, errors.New("mux: request refused"))
	}
}

type requestBody struct{ st *stream }

func (b *requestBody) Read(p []byte) (int, error) { return b.st.Read(p) }
func (b *requestBody) Close() error {
	b.st.abandon(errors.New("mux: request body closed"))
	return nil
}

func (sc *serverConn) runHandler(st *stream, req *http.Request) {
	defer sc.srv.active.Done()
	defer st.ctx.cancel()
	rw := &responseWriter{sc: sc, st: st, h: make(http.Header), req: req}
	defer func() {
		if e := recover(); e != nil {
			// http.ErrAbortHandler, or a bug: either way the stream must
			// not look complete.
			sc.c.writeReset(st.id, http2.ErrCodeInternal)
			sc.c.resetStream(st, errors.New("mux: handler aborted"))
			if e != http.ErrAbortHandler {
				panic(e)
			}
		}
	}()
	sc.srv.Handler.ServeHTTP(rw, req)
	rw.finish()
}

// responseWriter is the http.ResponseWriter of one stream. Trailers work
// as in net/http: keys declared in the "Trailer" header before WriteHeader,
// or set with the http.TrailerPrefix.
type responseWriter struct {
	sc          *serverConn
	st          *stream
	req         *http.Request
	h           http.Header
	status      int
	wroteHeader bool
	sentHeader  bool
	declared    []string
	buf         []byte
	err         error
}

func (w *responseWriter) Header() http.Header { return w.h }

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.status = code
	for _, v := range w.h["Trailer"] {
		if w.declared == nil {
			w.declared = make([]string, 0, strings.Count(v, ",")+1)
		}
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.declared = append(w.declared, http.CanonicalHeaderKey(k))
			}
		}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if w.buf == nil {
		w.buf = getDataBuf()
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= 64<<10 {
		if err := w.FlushError(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (w *responseWriter) Flush() { w.FlushError() }

// FlushError sends the headers and the data written so far.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	c := w.sc.c
	if !w.sentHeader {
		w.err = c.writeFrames(func() error { return w.writeHeaders(false) })
		w.sentHeader = true
	}
	if w.err == nil && len(w.buf) > 0 {
		w.err = c.writeData(w.st, w.buf, false)
		w.buf = w.buf[:0]
	}
	return w.err
}

func (w *responseWriter) writeHeaders(end bool) error {
	return w.sc.c.writeHeaderBlock(w.st.id, end, func(enc *hpack.Encoder) {
		enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(w.status)})
		w.sc.c.encodeHeader(w.h, w.declared...)
	})
}

// trailers collects the response's trailers: the keys declared in
// "Trailer" and those set with http.TrailerPrefix. When fold is set (the
// header block has not gone out yet), the ones fold accepts go in the
// header block instead: a declared one's value is in w.h already and only
// stops being held back; a prefixed one loses its prefix. One pass over
// w.h either way.
func (w *responseWriter) trailers(fold func(string) bool) http.Header {
	var tr http.Header
	add := func(k string, vs []string) {
		if tr == nil {
			tr = http.Header{}
		}
		tr[k] = vs
	}
	kept := w.declared[:0] // w.declared is this writer's own
	for _, k := range w.declared {
		if fold != nil && fold(k) {
			continue
		}
		kept = append(kept, k)
		if vs := w.h[k]; len(vs) > 0 {
			add(k, vs)
		}
	}
	w.declared = kept
	for k, vs := range w.h {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || len(vs) == 0 {
			continue
		}
		name = http.CanonicalHeaderKey(name)
		if fold != nil && fold(name) {
			w.h[name] = vs
			delete(w.h, k)
			continue
		}
		add(name, vs)
	}
	return tr
}

// finish ends the response: headers if not yet sent, the buffered data and
// the trailers, in as few writes as possible.
func (w *responseWriter) finish() {
	defer func() { putDataBuf(w.buf); w.buf = nil }()
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c, st := w.sc.c, w.st
	if w.err != nil {
		return
	}
	var fold func(string) bool
	if !w.sentHeader {
		fold = w.sc.srv.FoldTrailer
	}
	tr := w.trailers(fold)
	// Fast path: everything fits the send windows; one write, one flush.
	n := len(w.buf)
	c.mu.Lock()
	fits := c.err == nil && st.sendErr == nil && int64(n) <= c.sendWindow && int64(n) <= st.sendWindow && n <= int(c.peerFrame)
	if fits {
		c.sendWindow -= int64(n)
		st.sendWindow -= int64(n)
	}
	c.mu.Unlock()
	var err error
	if fits {
		err = c.writeFrames(func() error {
			if !w.sentHeader {
				if err := w.writeHeaders(n == 0 && tr == nil); err != nil {
					return err
				}
			}
			if n > 0 || (w.sentHeader && tr == nil) {
				if err := c.wf.WriteData(st.id, tr == nil, w.buf); err != nil {
					return err
				}
			}
			if tr != nil {
				return c.writeHeaderBlock(st.id, true, func(enc *hpack.Encoder) { c.encodeHeader(tr) })
			}
			return nil
		})
	} else {
		if err = w.FlushError(); err == nil {
			if tr != nil {
				err = c.writeFrames(func() error {
					return c.writeHeaderBlock(st.id, true, func(enc *hpack.Encoder) { c.encodeHeader(tr) })
				})
			} else {
				err = c.writeData(st, nil, true)
			}
		}
	}
	if err != nil {
		return
	}
	c.markDone(st, true, false)
	c.mu.Lock()
	open := !st.remoteDone
	c.mu.Unlock()
	if open {
		// The request is still coming but the answer is complete: tell
		// the client to stop sending (RFC 9113 §8.1).
		c.writeReset(st.id, http2.ErrCodeNo)
		c.resetStream(st, errors.New("mux: response complete"))
	}
}

// Shutdown stops taking new streams (GOAWAY), waits for running handlers
// until ctx ends, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if !s.shutdown {
		close(s.stop)
	}
	s.shutdown = true
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		s.mu.Lock()
		last := sc.lastID
		s.mu.Unlock()
		sc.c.writeFrames(func() error { return sc.c.wf.WriteGoAway(last, http2.ErrCodeNo, nil) })
	}
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	for _, sc := range conns {
		sc.c.flushNow()
		sc.c.fail(errShutdown)
	}
	return err
}
