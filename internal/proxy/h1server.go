package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// h1Server serves the outbound listener. HTTP/1.x connections it serves
// itself, one goroutine per connection that reads a request, runs the
// handler and writes the response; a connection that opens with the
// HTTP/2 preface (h2c with prior knowledge, as gRPC clients use) goes to
// net/http's server.
//
// net/http's HTTP/1 server was about a third of the caller's CPU per small
// request beyond the system calls themselves (pprof: its per-request
// background read and its goroutine, the response's header clone and chunk
// writer). Requests are still parsed by http.ReadRequest; only the
// response framing is written here.
type h1Server struct {
	handler           http.Handler
	maxHeader         int // header block limit while reading a request, in bytes
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	h2c               *http.Server // serves connections that open with the HTTP/2 preface
	log               *slog.Logger
	badInput          func(what string)

	h2ln     *connListener
	mu       sync.Mutex
	ln       net.Listener
	conns    map[*h1ServerConn]struct{}
	shutdown atomic.Bool
	wg       sync.WaitGroup
}

type h1ServerConn struct {
	nc     net.Conn
	active atomic.Bool // a request is being handled
}

// Serve accepts connections on ln until ln is closed or Shutdown.
func (s *h1Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	if s.conns == nil {
		s.conns = map[*h1ServerConn]struct{}{}
	}
	s.h2ln = newConnListener(ln.Addr())
	s.mu.Unlock()
	go s.h2c.Serve(s.h2ln)
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if s.shutdown.Load() {
				return http.ErrServerClosed
			}
			return err
		}
		c := &h1ServerConn{nc: nc}
		s.mu.Lock()
		if s.shutdown.Load() {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// progress finish (their connections close after the response) and waits
// for them until ctx ends.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	h2err := make(chan error, 1)
	go func() { h2err <- s.h2c.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		s.closeIdle()
		select {
		case <-done:
			return <-h2err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes every connection at once.
func (s *h1Server) Close() error {
	s.shutdown.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return s.h2c.Close()
}

func (s *h1Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if !c.active.Load() {
			c.nc.Close()
		}
	}
}

var errRequestHeaderTooLarge = errors.New("request header block over the limit")

func (s *h1Server) serveConn(c *h1ServerConn) {
	handedOff := false
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		if !handedOff {
			c.nc.Close()
		}
		s.wg.Done()
	}()
	remote := c.nc.RemoteAddr().String()
	// One context for the connection's requests, ended with it (net/http
	// makes one per request; nothing here needs that): when the app hangs
	// up during a request, or when this returns.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hw := newHangupWatch(c.nc, cancel)
	defer hw.disarm()
	lr := &limitedConnReader{nc: hw, remaining: -1, tooLarge: errRequestHeaderTooLarge}
	var body []byte // the response body buffer, reused across the connection's requests
	br := bufio.NewReaderSize(lr, 4<<10)
	bw := &outBuf{nc: c.nc, b: make([]byte, 0, 4<<10)}

	// The header block limit counts from the first byte of each request
	// (plus what bufio reads ahead of the body).
	limit := int64(s.maxHeader) + 4<<10
	lr.remaining = limit
	c.nc.SetReadDeadline(time.Now().Add(s.readHeaderTimeout))
	// Only the HTTP/2 preface starts with "PRI" (RFC 9113 §3.4; PRI is no
	// HTTP/1 method), and every HTTP/1 request is longer than 3 bytes.
	if p, err := br.Peek(3); err == nil && string(p) == "PRI" {
		if p, err := br.Peek(len(http2.ClientPreface)); err == nil && string(p) == http2.ClientPreface {
			c.nc.SetReadDeadline(time.Time{})
			handedOff = s.h2ln.put(&replayConn{Conn: c.nc, r: br})
			return
		}
	}
	for first := true; ; first = false {
		if !first {
			// Idle between requests: Shutdown may close it now.
			c.active.Store(false)
			if s.shutdown.Load() {
				return
			}
			c.nc.SetReadDeadline(time.Now().Add(s.idleTimeout))
			lr.remaining = limit - int64(br.Buffered())
			if _, err := br.Peek(1); err != nil {
				return
			}
			c.nc.SetReadDeadline(time.Now().Add(s.readHeaderTimeout))
		}
		c.active.Store(true)
		req, err := http.ReadRequest(br)
		lr.remaining = -1
		if err != nil {
			s.refuseRequest(c.nc, bw, err, first)
			return
		}
		c.nc.SetReadDeadline(time.Time{})
		if msg := checkRequest(req); msg != "" {
			s.badInput("request")
			s.log.Warn("malformed request from the app", "peer", c.nc.RemoteAddr().String(), "err", msg)
			writeBareResponse(bw, http.StatusBadRequest, msg)
			return
		}
		req.RemoteAddr = remote
		if e := req.Header.Get("Expect"); e != "" {
			if !strings.EqualFold(e, "100-continue") {
				writeBareResponse(bw, http.StatusExpectationFailed, "unsupported Expect: "+e)
				return
			}
			// Sent at once: the sidecar reads the body anyway.
			bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			bw.Flush()
		}
		req = req.WithContext(ctx)
		hw.arm(req)
		w := &h1Response{bw: bw, req: req, h: make(http.Header, 8), contentLength: -1, buf: body[:0]}
		ok := s.run(w, req)
		hw.disarm()
		if !ok {
			// Aborted (http.ErrAbortHandler): the connection closes with the
			// body incomplete, so the caller never takes it as whole.
			bw.Flush()
			return
		}
		w.finish()
		if cap(w.buf) <= h1BodyBuffer {
			body = w.buf[:0]
		}
		if w.err != nil || w.closeAfter || req.Close || s.shutdown.Load() {
			return
		}
		// What the handler left of the request body: read a bounded rest,
		// else close instead of reading on.
		if n, err := io.CopyN(io.Discard, req.Body, 256<<10+1); err != io.EOF || n > 256<<10 {
			return
		}
	}
}

// run runs the handler; it reports false if the handler aborted.
func (s *h1Server) run(w *h1Response, req *http.Request) (ok bool) {
	defer func() {
		if e := recover(); e != nil {
			if e != http.ErrAbortHandler {
				s.log.Error("outbound handler panic", "err", e)
			}
			ok = false
		}
	}()
	s.handler.ServeHTTP(w, req)
	return true
}

// checkRequest returns what makes req unacceptable, or "": the checks
// net/http's server adds to http.ReadRequest's.
func checkRequest(req *http.Request) string {
	if req.ProtoMajor != 1 {
		return "unsupported protocol " + req.Proto
	}
	// http.ReadRequest refused a repeated Host and moved the one Host
	// into req.Host.
	switch {
	case req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect:
		return "missing required Host header"
	case req.Host != "" && !httpguts.ValidHostHeader(req.Host):
		return "malformed Host header"
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Sprintf("invalid header name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Sprintf("invalid value of header %s", k)
			}
		}
	}
	return ""
}

func (s *h1Server) refuseRequest(nc net.Conn, bw *outBuf, err error, first bool) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) && !first || errors.As(err, &ne) && ne.Timeout():
		// The app closed, or went quiet: nothing to answer.
		return
	case errors.Is(err, errRequestHeaderTooLarge):
		s.badInput("header_too_large")
		s.log.Warn("request header block too large", "peer", nc.RemoteAddr().String(), "limit", s.maxHeader)
		writeBareResponse(bw, http.StatusRequestHeaderFieldsTooLarge,
			fmt.Sprintf("request header block over %d bytes", s.maxHeader))
	default:
		s.badInput("request")
		s.log.Warn("malformed request from the app", "peer", nc.RemoteAddr().String(), "err", err)
		writeBareResponse(bw, http.StatusBadRequest, "malformed request: "+err.Error())
	}
}

// writeBareResponse answers with status and a text body, then the
// connection closes.
func writeBareResponse(bw *outBuf, status int, msg string) {
	body := "tally: " + msg + "\n"
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	bw.Flush()
}

// h1Response is the http.ResponseWriter of one HTTP/1.x request. As in
// net/http: a body that fits its buffer and has no trailers gets a
// Content-Length; otherwise it is chunked (HTTP/1.1) or ends with the
// connection (HTTP/1.0). Trailers are the keys the "Trailer" header
// declared before WriteHeader, and keys set with http.TrailerPrefix.
type h1Response struct {
	bw            *outBuf
	req           *http.Request
	h             http.Header
	status        int
	wroteHeader   bool
	sentHeader    bool
	declared      []string
	buf           []byte // body held until the header goes out (appended to only before)
	chunked       bool
	contentLength int64 // declared by the handler; -1: none
	written       int64
	closeAfter    bool
	err           error
}

const h1BodyBuffer = 4 << 10

func (w *h1Response) Header() http.Header { return w.h }

func (w *h1Response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 {
		// Interim responses are not relayed; the final one follows.
		return
	}
	w.wroteHeader = true
	w.status = code
	for _, v := range w.h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.declared = append(w.declared, http.CanonicalHeaderKey(k))
			}
		}
	}
	if cl := w.h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			delete(w.h, "Content-Length")
		}
	}
}

// bodyAllowed: HEAD, 204 and 304 responses have no body.
func (w *h1Response) bodyAllowed() bool {
	return w.req.Method != http.MethodHead && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *h1Response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.bodyAllowed() {
		return len(p), nil
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sentHeader {
		if len(w.buf)+len(p) <= h1BodyBuffer {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		if w.err = w.sendHeader(false); w.err != nil {
			return 0, w.err
		}
	}
	large := len(p) >= 2<<10 // goes out with what is buffered, in one writev, uncopied
	switch {
	case w.chunked:
		w.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		w.bw.WriteString("\r\n")
		if large {
			w.err = w.bw.flushWith(p, crlf)
		} else {
			w.bw.Write(p)
			w.bw.WriteString("\r\n")
		}
	case large:
		w.err = w.bw.flushWith(p)
	default:
		w.bw.Write(p)
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush sends the header and what was written so far.
func (w *h1Response) Flush() { w.FlushError() }

func (w *h1Response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil && !w.sentHeader {
		w.err = w.sendHeader(false)
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return w.err
}

// EnableFullDuplex: the response may go out while the request body is
// still being read, always (http.ResponseController).
func (w *h1Response) EnableFullDuplex() error { return nil }

func (w *h1Response) hasTrailers() bool {
	if len(w.declared) > 0 {
		return true
	}
	for k := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// sendHeader writes the status line and header block, then the buffered
// body. final: the handler returned, so the whole body is in buf.
func (w *h1Response) sendHeader(final bool) error {
	w.sentHeader = true
	h, bw := w.h, w.bw
	http11 := w.req.ProtoAtLeast(1, 1)
	switch {
	case !w.bodyAllowed() || w.status < 200:
	case w.contentLength >= 0:
	case final && !w.hasTrailers():
		h["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
	case http11:
		w.chunked = true
		h["Transfer-Encoding"] = []string{"chunked"}
	default:
		// HTTP/1.0 without a length: the body ends with the connection.
		w.closeAfter = true
	}
	if !http11 && !w.closeAfter && !w.req.Close {
		h["Connection"] = []string{"keep-alive"}
	}
	if w.closeAfter {
		h["Connection"] = []string{"close"}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{httpDate()}
	}
	if http11 {
		bw.WriteString("HTTP/1.1 ")
	} else {
		bw.WriteString("HTTP/1.0 ")
	}
	var num [20]byte
	bw.Write(strconv.AppendInt(num[:0], int64(w.status), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(w.status))
	bw.WriteString("\r\n")
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Transfer-Encoding" && !w.chunked {
			continue
		}
		writeField(bw, k, vs)
	}
	bw.WriteString("\r\n")
	b := w.buf
	w.buf = b[:0] // its storage serves the connection's next response
	if len(b) == 0 {
		return nil
	}
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(b)), 16))
		bw.WriteString("\r\n")
		bw.Write(b)
		_, err := bw.WriteString("\r\n")
		return err
	}
	_, err := bw.Write(b)
	return err
}

var crlf = []byte("\r\n")

// outBuf collects a connection's response bytes until a flush; a large
// body part goes out beside them with one writev instead of being copied
// in and written in pieces.
type outBuf struct {
	nc  net.Conn
	b   []byte
	err error
}

func (o *outBuf) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), o.err
}

func (o *outBuf) WriteString(s string) (int, error) {
	o.b = append(o.b, s...)
	return len(s), o.err
}

func (o *outBuf) WriteByte(c byte) error {
	o.b = append(o.b, c)
	return o.err
}

// Flush writes what is buffered.
func (o *outBuf) Flush() error {
	if len(o.b) > 0 && o.err == nil {
		_, o.err = o.nc.Write(o.b)
	}
	o.reset()
	return o.err
}

// flushWith writes what is buffered, then parts, with one system call.
func (o *outBuf) flushWith(parts ...[]byte) error {
	if o.err != nil {
		return o.err
	}
	bufs := make(net.Buffers, 0, 1+len(parts))
	if len(o.b) > 0 {
		bufs = append(bufs, o.b)
	}
	bufs = append(bufs, parts...)
	_, o.err = bufs.WriteTo(o.nc)
	o.reset()
	return o.err
}

func (o *outBuf) reset() {
	if cap(o.b) > 64<<10 {
		o.b = make([]byte, 0, 4<<10) // a large header block: do not keep it
	} else {
		o.b = o.b[:0]
	}
}

// writeField writes k: v lines; a CR or LF in a value becomes a space, so
// that no value can end the header block (as net/http does).
func writeField(bw *outBuf, k string, vs []string) {
	for _, v := range vs {
		if strings.ContainsAny(v, "\r\n") {
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
		}
		bw.WriteString(k)
		bw.WriteString(": ")
		bw.WriteString(v)
		bw.WriteString("\r\n")
	}
}

// finish completes the response after the handler returned.
func (w *h1Response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return
	}
	if !w.sentHeader {
		if w.err = w.sendHeader(true); w.err != nil {
			return
		}
	}
	if w.contentLength >= 0 && w.written < w.contentLength && w.bodyAllowed() {
		// Short of its own Content-Length: the connection must end so the
		// caller sees a truncated body.
		w.closeAfter = true
		w.bw.Flush()
		return
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		for _, k := range w.declared {
			if vs := w.h[k]; len(vs) > 0 {
				writeField(w.bw, k, vs)
			}
		}
		for k, vs := range w.h {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && len(vs) > 0 {
				writeField(w.bw, http.CanonicalHeaderKey(name), vs)
			}
		}
		w.bw.WriteString("\r\n")
	}
	w.err = w.bw.Flush()
}

// httpDate is the Date header value, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := cachedDate.Load(); d != nil && d.unix == now {
		return d.s
	}
	d := &dateValue{unix: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

type dateValue struct {
	unix int64
	s    string
}

var cachedDate atomic.Pointer[dateValue]

// connListener hands connections to an http.Server.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

// put hands c over; false if the listener is closed (c is then the
// caller's to close).
func (l *connListener) put(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// replayConn reads what was peeked from its buffered reader first.
type replayConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}
