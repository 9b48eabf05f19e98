package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ErrHeaderTooLarge: the request's header block is over the peer's
// SETTINGS_MAX_HEADER_LIST_SIZE; the request was not sent.
var ErrHeaderTooLarge = errors.New("mux: request header block over the peer's limit")

// ClientConn is the client end of one HTTP/2 connection: requests are
// multiplexed as streams. It is safe for concurrent use.
type ClientConn struct {
	c      *conn
	nextID uint32 // guarded by c.wmu: IDs go out in order
	done   chan struct{}
}

// ClientConfig configures a ClientConn. The zero value is usable.
type ClientConfig struct {
	MaxHeaderBytes int           // limit on a response header block; 0 = 64 KiB
	PingIdle       time.Duration // quiet time before PINGs start; 0 = 15s
	DeadAfter      time.Duration // quiet time after which the connection is closed; 0 = 30s
	// NeverIndex names fields whose value differs in every message (ids,
	// MACs): they are sent as never-indexed literals instead of churning
	// both ends' HPACK tables.
	NeverIndex []string
}

// NewClientConn starts HTTP/2 on nc (already through TLS with ALPN h2):
// it writes the preface and settings and starts the read loop.
func NewClientConn(nc net.Conn, cfg ClientConfig) (*ClientConn, error) {
	c := newConn(nc, cfg.MaxHeaderBytes, cfg.NeverIndex)
	cc := &ClientConn{c: c, nextID: 1, done: make(chan struct{})}
	c.wmu.Lock()
	_, err := c.bw.WriteString(http2.ClientPreface)
	c.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := c.writeSettings(defaultMaxStreams, int(c.rf.MaxHeaderListSize)); err != nil {
		nc.Close()
		return nil, err
	}
	c.lastRead.Store(time.Now().UnixNano())
	go cc.readLoop()
	go c.flusher(c.closed)
	pingIdle, deadAfter := cfg.PingIdle, cfg.DeadAfter
	if pingIdle <= 0 {
		pingIdle = defaultPingIdle
	}
	if deadAfter <= 0 {
		deadAfter = defaultDeadAfter
	}
	go cc.keepalive(pingIdle, deadAfter)
	return cc, nil
}

// Keepalive: a connection quiet for PingIdle gets a PING every third of it;
// one silent for deadAfter (no frame at all, not even the PING's ack) is
// closed, so its requests fail instead of hanging on a peer that is gone
// without a FIN (a dead host, a dropped route).
const (
	defaultPingIdle  = 15 * time.Second
	defaultDeadAfter = 30 * time.Second
)

func (cc *ClientConn) keepalive(pingIdle, deadAfter time.Duration) {
	c := cc.c
	t := time.NewTicker(pingIdle / 3)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
		}
		quiet := time.Since(time.Unix(0, c.lastRead.Load()))
		switch {
		case quiet >= deadAfter:
			c.fail(fmt.Errorf("mux: peer silent for %v, no answer to PING", quiet.Round(time.Second)))
			return
		case quiet >= pingIdle:
			c.writeFrames(func() error { return c.wf.WritePing(false, [8]byte{'t', 'a', 'l', 'l', 'y'}) })
		}
	}
}

// Err reports why the connection can take no new requests (closed, or the
// peer sent GOAWAY), or nil.
func (cc *ClientConn) Err() error {
	cc.c.mu.Lock()
	defer cc.c.mu.Unlock()
	if cc.c.err != nil {
		return cc.c.err
	}
	if cc.c.goAway {
		return ErrGoAway
	}
	return nil
}

// Close closes the connection; streams in progress fail.
func (cc *ClientConn) Close() error {
	cc.c.fail(ErrClosed)
	return nil
}

// Done is closed when the connection has ended.
func (cc *ClientConn) Done() <-chan struct{} { return cc.done }

// RoundTrip sends req on a new stream and returns when the response
// headers arrive. It closes req.Body, except when it returns ErrGoAway: then
// nothing was sent and req may be sent on another connection. The request body is sent concurrently (full duplex),
// followed by req.Trailer if any keys were declared. The response's Trailer
// is filled when its Body returns io.EOF.
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	c := cc.c
	hasBody := req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
	s := newStream(c, 0)
	s.resp = make(chan *http.Response, 1)

	// Wait for a stream slot, then take the next ID and send the headers
	// in ID order.
	c.mu.Lock()
	for c.err == nil && !c.goAway && uint32(len(c.streams)) >= c.peerStreams {
		c.cond.Wait()
	}
	if err := c.err; err != nil || c.goAway {
		c.mu.Unlock()
		if err == nil {
			// Not sent, body untouched: the caller may send it elsewhere.
			return nil, ErrGoAway
		}
		closeBody(req)
		return nil, err
	}
	limit := c.peerHeader
	c.mu.Unlock()
	if limit > 0 && headerListSize(req.Header) > limit {
		closeBody(req)
		return nil, ErrHeaderTooLarge
	}

	c.wmu.Lock()
	s.id = cc.nextID
	cc.nextID += 2
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		c.wmu.Unlock()
		closeBody(req)
		return nil, c.err
	}
	s.sendWindow = int64(c.peerWindow)
	c.streams[s.id] = s
	c.mu.Unlock()
	err := c.writeHeaderBlock(s.id, !hasBody, func(enc *hpack.Encoder) {
		host := req.Host
		if host == "" {
			host = req.URL.Host
		}
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: req.Method})
		enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
		enc.WriteField(hpack.HeaderField{Name: ":authority", Value: host})
		enc.WriteField(hpack.HeaderField{Name: ":path", Value: req.URL.RequestURI()})
		c.encodeHeader(req.Header)
		for k := range req.Trailer {
			enc.WriteField(hpack.HeaderField{Name: "trailer", Value: c.lower(k)})
		}
		if req.ContentLength > 0 {
			enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(req.ContentLength, 10)})
		}
	})
	if err == nil {
		c.scheduleFlush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(err)
		closeBody(req)
		return nil, err
	}
	if !hasBody {
		c.markDone(s, true, false)
		closeBody(req)
	}

	// The request's context cancels the stream until it completes.
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { cc.cancel(s, ctx.Err()) })
	if hasBody {
		go cc.writeBody(s, req)
	}
	resp := <-s.resp
	if resp == nil {
		stop()
		s.rmu.Lock()
		err := s.rerr
		s.rmu.Unlock()
		if err == nil || err == io.EOF {
			err = errors.New("mux: stream ended without a response")
		}
		return nil, err
	}
	resp.Request = req
	resp.Body = &responseBody{s: s, cc: cc, stop: stop}
	return resp, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeBody sends the request body, then the trailers or END_STREAM.
func (cc *ClientConn) writeBody(s *stream, req *http.Request) {
	c := cc.c
	defer req.Body.Close()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := req.Body.Read(buf)
		if n > 0 {
			if err := c.writeData(s, buf[:n], false); err != nil {
				return // the stream or connection failed; the reader sees it
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cc.cancel(s, fmt.Errorf("mux: request body: %w", rerr))
			return
		}
	}
	var err error
	if len(req.Trailer) > 0 {
		err = c.writeFrames(func() error {
			return c.writeHeaderBlock(s.id, true, func(enc *hpack.Encoder) { c.encodeHeader(req.Trailer) })
		})
	} else {
		err = c.writeData(s, nil, true)
	}
	if err == nil {
		c.markDone(s, true, false)
	}
}

// cancel resets s (the caller gave up, or its body failed).
func (cc *ClientConn) cancel(s *stream, cause error) {
	c := cc.c
	c.mu.Lock()
	_, live := c.streams[s.id]
	c.mu.Unlock()
	if live {
		c.writeReset(s.id, http2.ErrCodeCancel)
	}
	c.resetStream(s, cause)
}

type responseBody struct {
	s    *stream
	cc   *ClientConn
	stop func() bool
	once sync.Once
}

func (b *responseBody) Read(p []byte) (int, error) {
	n, err := b.s.Read(p)
	if err != nil {
		b.once.Do(func() { b.stop() })
	}
	return n, err
}

// Close abandons the response; a stream still open is reset.
func (b *responseBody) Close() error {
	b.once.Do(func() { b.stop() })
	c := b.cc.c
	c.mu.Lock()
	_, live := c.streams[b.s.id]
	c.mu.Unlock()
	if live {
		b.cc.cancel(b.s, errBodyClosed)
	}
	b.s.abandon(errBodyClosed)
	return nil
}

var errBodyClosed = errors.New("mux: response body closed")

func (cc *ClientConn) readLoop() {
	c := cc.c
	defer close(cc.done)
	var err error
	for {
		var f http2.Frame
		var blk *headerBlock
		f, blk, err = c.readFrame()
		c.lastRead.Store(time.Now().UnixNano())
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				s := c.streams[se.StreamID]
				c.mu.Unlock()
				c.writeReset(se.StreamID, se.Code)
				if s != nil {
					c.resetStream(s, fmt.Errorf("mux: %w", se))
				}
				err = nil
				continue
			}
			break
		}
		if ok, herr := c.handleCommon(f); ok {
			if herr != nil {
				err = herr
				break
			}
			continue
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			err = cc.onHeaders(blk)
		case *http2.DataFrame:
			c.onData(f)
		case *http2.RSTStreamFrame:
			c.mu.Lock()
			s := c.streams[f.StreamID]
			c.mu.Unlock()
			if s != nil {
				if f.ErrCode == http2.ErrCodeNo {
					// The server answered in full and needs no more of
					// the request: stop sending, keep what arrived.
					c.mu.Lock()
					s.sendErr = StreamError{f.ErrCode}
					s.localDone = true
					if s.remoteDone {
						delete(c.streams, s.id)
					}
					c.cond.Broadcast()
					c.mu.Unlock()
					continue
				}
				c.resetStream(s, StreamError{f.ErrCode})
			}
		}
		if err != nil {
			break
		}
	}
	c.fail(fmt.Errorf("mux: connection lost: %w", err))
}

func (cc *ClientConn) onHeaders(b *headerBlock) error {
	c := cc.c
	c.mu.Lock()
	s := c.streams[b.streamID]
	c.mu.Unlock()
	if s == nil {
		return nil // a stream we already reset
	}
	if b.truncated {
		cc.cancel(s, errors.New("mux: response header block over the limit"))
		return nil
	}
	if s.headersSeen {
		// Trailers.
		tr, err := c.decodeFields(b.fields, nil)
		if err != nil {
			cc.cancel(s, err)
			return nil
		}
		s.setTrailer(tr)
		if b.endStream {
			c.markDone(s, false, true)
			s.closeRecv(io.EOF)
		}
		return nil
	}
	status := ""
	h, err := c.decodeFields(b.fields, func(name, value string) error {
		if name == ":status" {
			status = value
		}
		return nil
	})
	code, cerr := strconv.Atoi(status)
	if err != nil || cerr != nil || code < 100 || code > 999 {
		cc.cancel(s, fmt.Errorf("mux: bad response headers (status %q): %v", status, err))
		return nil
	}
	if code < 200 {
		return nil // informational; the final response follows
	}
	s.headersSeen = true
	resp := &http.Response{
		Status: status + " " + http.StatusText(code), StatusCode: code,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, ContentLength: -1, Trailer: http.Header{},
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			resp.ContentLength = n
		}
	}
	for _, k := range h.Values("Trailer") {
		resp.Trailer[c.canonical(k)] = nil
	}
	s.rmu.Lock()
	s.onEOF = func(tr http.Header) {
		for k, v := range tr {
			resp.Trailer[k] = v
		}
	}
	s.rmu.Unlock()
	ended := b.endStream
	if ended {
		resp.ContentLength = 0
	}
	s.deliverResp(resp)
	if ended {
		c.markDone(s, false, true)
		s.closeRecv(io.EOF)
	}
	return nil
}
