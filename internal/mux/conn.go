package mux

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Settings this implementation advertises and assumes.
const (
	initialStreamWindow = 1 << 20  // SETTINGS_INITIAL_WINDOW_SIZE we advertise
	connWindow          = 16 << 20 // connection receive window after the preface
	maxFrameSize        = 1 << 18  // SETTINGS_MAX_FRAME_SIZE we accept
	refundThreshold     = 128 << 10
	defaultMaxStreams   = 1000
	defaultMaxHeader    = 64 << 10
)

var (
	// ErrClosed is returned for operations on a closed connection.
	ErrClosed = errors.New("mux: connection closed")
	// ErrGoAway is returned when the peer is shutting down and takes no
	// new streams; the request was not sent and may go elsewhere.
	ErrGoAway = errors.New("mux: peer sent GOAWAY")
	// errStreamReset is the cause of a stream the peer reset.
	errStreamReset = errors.New("mux: stream reset by peer")
)

// StreamError reports a stream the peer reset with an HTTP/2 error code.
type StreamError struct{ Code http2.ErrCode }

func (e StreamError) Error() string { return "mux: stream reset by peer: " + e.Code.String() }
func (e StreamError) Unwrap() error { return errStreamReset }

// conn is what both ends share: framing, header coding, flow control and
// the table of streams. Its methods are safe for concurrent use.
type conn struct {
	nc net.Conn
	// Read side, used only by the read loop: the framer, the HPACK
	// decoder and the header block they fill.
	rf    *http2.Framer
	hdec  *hpack.Decoder
	blk   headerBlock
	names map[string]string // canonical header names, by received name

	wmu      sync.Mutex // guards bw, wf, henc, hbuf, lowers, flushDue
	bw       *bufio.Writer
	wf       *http2.Framer
	henc     *hpack.Encoder
	hbuf     bytes.Buffer
	lowers   map[string]string // HTTP/2 header names, by canonical name
	flushDue bool              // frames are buffered and the flusher is told
	flushReq chan struct{}     // wakes the flusher; capacity 1
	closed   chan struct{}     // closed by fail
	closeOne sync.Once
	lastRead atomic.Int64 // unix nanoseconds of the last frame read
	// neverIndex: fields whose value is new in every message, sent as
	// never-indexed literals (RFC 7541 §6.2.3) so neither end's HPACK table
	// churns on them. Set at creation, read-only.
	neverIndex map[string]bool

	mu          sync.Mutex // guards following
	cond        *sync.Cond // flow control, stream slots, closure
	streams     map[uint32]*stream
	sendWindow  int64 // connection-level, what the peer allows us
	peerWindow  int32 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   uint32
	peerStreams uint32
	peerHeader  uint32 // peer's SETTINGS_MAX_HEADER_LIST_SIZE; 0 = unlimited
	goAway      bool
	err         error
	connUnacked int64 // bytes consumed but not yet refunded to the peer
}

func newConn(nc net.Conn, maxHeader int, neverIndex []string) *conn {
	c := &conn{
		nc:          nc,
		streams:     map[uint32]*stream{},
		sendWindow:  65535,
		peerWindow:  65535,
		peerFrame:   16384,
		peerStreams: defaultMaxStreams,
	}
	c.cond = sync.NewCond(&c.mu)
	for _, k := range neverIndex {
		if c.neverIndex == nil {
			c.neverIndex = map[string]bool{}
		}
		c.neverIndex[http.CanonicalHeaderKey(k)] = true
	}
	c.flushReq = make(chan struct{}, 1)
	c.closed = make(chan struct{})
	c.bw = bufio.NewWriterSize(nc, 64<<10)
	c.wf = http2.NewFramer(c.bw, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.rf = http2.NewFramer(nil, bufio.NewReaderSize(nc, 64<<10))
	if maxHeader <= 0 {
		maxHeader = defaultMaxHeader
	}
	c.rf.MaxHeaderListSize = uint32(maxHeader)
	c.hdec = hpack.NewDecoder(4096, nil)
	c.hdec.SetEmitFunc(func(f hpack.HeaderField) { c.blk.emit(c.hdec, f) })
	c.hdec.SetMaxStringLength(maxHeader)
	c.rf.SetMaxReadFrameSize(maxFrameSize)
	return c
}

// writeSettings writes our SETTINGS and the connection window update.
func (c *conn) writeSettings(maxStreams uint32, maxHeader int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wf.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: initialStreamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(maxHeader)},
	)
	c.wf.WriteWindowUpdate(0, connWindow-65535)
	return c.bw.Flush()
}

// fail ends the connection: every stream fails with err.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, s := range streams {
		s.closeRecv(err)
		s.ctx.cancel()
	}
	c.closeOne.Do(func() { close(c.closed) })
	c.nc.Close()
}

// cancelStreams cancels the request contexts of the server streams open
// now; the connection goes on.
func (c *conn) cancelStreams() {
	c.mu.Lock()
	open := make([]*requestContext, 0, len(c.streams))
	for _, s := range c.streams {
		open = append(open, s.ctx)
	}
	c.mu.Unlock()
	for _, ctx := range open {
		ctx.cancel()
	}
}

// Err reports the connection's fatal error, if any.
func (c *conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// handleCommon processes the connection-level frames both roles share. It
// reports whether f was one of them.
func (c *conn) handleCommon(f http2.Frame) (bool, error) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true, nil
		}
		err := f.ForeachSetting(func(s http2.Setting) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - int64(c.peerWindow)
				c.peerWindow = int32(s.Val)
				for _, st := range c.streams {
					st.sendWindow += delta
				}
				c.cond.Broadcast()
			case http2.SettingMaxFrameSize:
				c.peerFrame = s.Val
			case http2.SettingMaxConcurrentStreams:
				c.peerStreams = s.Val
				c.cond.Broadcast()
			case http2.SettingMaxHeaderListSize:
				c.peerHeader = s.Val
			}
			return nil
		})
		if err != nil {
			return true, err
		}
		err = c.writeFrames(func() error { return c.wf.WriteSettingsAck() })
		return true, err
	case *http2.PingFrame:
		if f.IsAck() {
			return true, nil
		}
		err := c.writeFrames(func() error { return c.wf.WritePing(true, f.Data) })
		return true, err
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
		} else if s := c.streams[f.StreamID]; s != nil {
			s.sendWindow += int64(f.Increment)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		return true, nil
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAway = true
		var late []*stream
		for id, s := range c.streams {
			if id > f.LastStreamID && id%2 == 1 {
				late = append(late, s)
				delete(c.streams, id)
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		for _, s := range late {
			s.closeRecv(ErrGoAway)
		}
		return true, nil
	case *http2.PriorityFrame:
		return true, nil
	}
	return false, nil
}

// refund gives n consumed bytes of stream s back to the peer.
func (c *conn) refund(s *stream, n int) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.connUnacked += int64(n)
	var connInc, streamInc uint32
	if c.connUnacked >= refundThreshold {
		connInc = uint32(c.connUnacked)
		c.connUnacked = 0
	}
	if s != nil {
		s.recvUnacked += n
		if s.recvUnacked >= refundThreshold && !s.remoteDone {
			streamInc = uint32(s.recvUnacked)
			s.recvUnacked = 0
		}
	}
	c.mu.Unlock()
	if connInc == 0 && streamInc == 0 {
		return
	}
	c.wmu.Lock()
	if connInc > 0 {
		c.wf.WriteWindowUpdate(0, connInc)
	}
	if streamInc > 0 {
		c.wf.WriteWindowUpdate(s.id, streamInc)
	}
	c.scheduleFlush()
	c.wmu.Unlock()
}

// takeSendWindow blocks until s may send, and returns how many bytes (up to
// want) it may send now.
func (c *conn) takeSendWindow(s *stream, want int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.err != nil {
			return 0, c.err
		}
		if s.sendErr != nil {
			return 0, s.sendErr
		}
		if c.sendWindow > 0 && s.sendWindow > 0 {
			n := min(int64(want), c.sendWindow, s.sendWindow, int64(c.peerFrame))
			c.sendWindow -= n
			s.sendWindow -= n
			return int(n), nil
		}
		c.cond.Wait()
	}
}

// writeData sends p on s as DATA frames, respecting flow control. With end
// set the last frame ends the stream.
func (c *conn) writeData(s *stream, p []byte, end bool) error {
	if len(p) == 0 {
		if !end {
			return nil
		}
		return c.writeFrames(func() error { return c.wf.WriteData(s.id, true, nil) })
	}
	for len(p) > 0 {
		n, err := c.takeSendWindow(s, len(p))
		if err != nil {
			return err
		}
		last := end && n == len(p)
		chunk := p[:n]
		if err := c.writeFrames(func() error { return c.wf.WriteData(s.id, last, chunk) }); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// writeFrames runs write under the write lock; the frames go out with the
// next flush (see flusher).
func (c *conn) writeFrames(write func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	if err := write(); err != nil {
		return err
	}
	c.scheduleFlush()
	return nil
}

// scheduleFlush asks the flusher to write out what is buffered; the caller
// holds wmu.
func (c *conn) scheduleFlush() {
	if c.flushDue {
		return
	}
	c.flushDue = true
	select {
	case c.flushReq <- struct{}{}:
	default:
	}
}

// flushNow writes out what is buffered, before a deliberate close.
func (c *conn) flushNow() {
	c.wmu.Lock()
	c.flushDue = false
	c.bw.Flush()
	c.wmu.Unlock()
}

// flusher writes buffered frames to the connection. It first yields, so
// that every stream ready to write now adds its frames: at load, many
// streams' frames share one TLS record and one system call; idle, the
// yield returns at once. A write error ends the connection.
func (c *conn) flusher(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-c.flushReq:
		}
		runtime.Gosched()
		c.wmu.Lock()
		c.flushDue = false
		err := c.bw.Flush()
		c.wmu.Unlock()
		if err != nil {
			c.fail(fmt.Errorf("mux: writing: %w", err))
			return
		}
	}
}

// writeHeaderBlock encodes fields and writes them as HEADERS (and
// CONTINUATION) frames; the caller holds wmu.
func (c *conn) writeHeaderBlock(id uint32, end bool, encode func(enc *hpack.Encoder)) error {
	c.hbuf.Reset()
	encode(c.henc)
	block := c.hbuf.Bytes()
	c.mu.Lock()
	maxf := int(c.peerFrame)
	c.mu.Unlock()
	first := block
	if len(first) > maxf {
		first = block[:maxf]
	}
	rest := block[len(first):]
	if err := c.wf.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(rest) == 0}); err != nil {
		return err
	}
	for len(rest) > 0 {
		n := min(len(rest), maxf)
		if err := c.wf.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	return nil
}

func (c *conn) writeReset(id uint32, code http2.ErrCode) {
	c.writeFrames(func() error { return c.wf.WriteRSTStream(id, code) })
}

// hopHeaders are connection-specific and never sent on HTTP/2.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Transfer-Encoding": true,
	"Upgrade": true, "Trailer": true, "Host": true,
}

// maxNames bounds each connection's caches of header name forms: a peer
// or app that sends ever new names gets them converted, not remembered.
const maxNames = 512

// lower returns the lowercase (HTTP/2) form of a header name, from the
// connection's cache; the caller holds wmu.
func (c *conn) lower(k string) string {
	if l, ok := c.lowers[k]; ok {
		return l
	}
	l := strings.ToLower(k)
	if len(c.lowers) < maxNames {
		if c.lowers == nil {
			c.lowers = map[string]string{}
		}
		c.lowers[k] = l
	}
	return l
}

// headerListSize is the size of h as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
func headerListSize(h http.Header) uint32 {
	var n uint32
	for k, vs := range h {
		for _, v := range vs {
			n += uint32(len(k) + len(v) + 32)
		}
	}
	return n
}

// encodeHeader writes h's fields into the header block being built in
// c.hbuf (see writeHeaderBlock), except hop-by-hop ones, trailers announced
// with http.TrailerPrefix, and the keys in skip.
func (c *conn) encodeHeader(h http.Header, skip ...string) {
	enc := c.henc
	for k, vs := range h {
		if hopHeaders[k] || strings.HasPrefix(k, http.TrailerPrefix) || (len(skip) > 0 && slices.Contains(skip, k)) {
			continue
		}
		if k == "Te" {
			for _, v := range vs {
				if strings.EqualFold(v, "trailers") {
					enc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
				}
			}
			continue
		}
		name := c.lower(k)
		if c.neverIndex[k] {
			for _, v := range vs {
				c.hbuf.Write(appendNeverIndexed(c.hbuf.AvailableBuffer(), name, v))
			}
			continue
		}
		for _, v := range vs {
			enc.WriteField(hpack.HeaderField{Name: name, Value: v})
		}
	}
}

// appendNeverIndexed appends a "literal header field never indexed" with a
// literal name (RFC 7541 §6.2.3), both strings without Huffman coding:
// the values sent so are new in every message (ids, digests, MACs), so
// there is nothing for either table to keep, and plain strings cost the
// peer a copy instead of a Huffman decode. The encoder's table is never
// resized, so no size update can be pending ahead of such a field.
func appendNeverIndexed(b []byte, name, value string) []byte {
	b = append(b, 0x10)
	b = appendHpackString(b, name)
	return appendHpackString(b, value)
}

// appendHpackString appends s as a string literal (RFC 7541 §5.2, H = 0).
func appendHpackString(b []byte, s string) []byte {
	// Length as an integer with a 7-bit prefix (§5.1).
	if n := uint64(len(s)); n < 127 {
		b = append(b, byte(n))
	} else {
		b = append(b, 127)
		for n -= 127; n >= 128; n >>= 7 {
			b = append(b, byte(n&0x7f|0x80))
		}
		b = append(b, byte(n))
	}
	return append(b, s...)
}

// canonical returns the canonical form of a received header name, from
// the connection's cache; only the read loop calls it.
func (c *conn) canonical(name string) string {
	if k, ok := c.names[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if len(c.names) < maxNames {
		if c.names == nil {
			c.names = map[string]string{}
		}
		c.names[name] = k
	}
	return k
}

// dataBufs recycles the buffers that hold a stream's DATA (received, or
// written by a handler) between streams; one that grew past 256 KiB is
// left to the garbage collector. (A 64 KiB body grows its buffer to 128
// KiB: keeping those matters as much as keeping small ones.)
var dataBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func getDataBuf() []byte { return (*dataBufs.Get().(*[]byte))[:0] }

func putDataBuf(b []byte) {
	if b != nil && cap(b) <= 256<<10 {
		dataBufs.Put(&b)
	}
}

// decodeFields splits a header block into pseudo-headers and a header map.
func (c *conn) decodeFields(fields []hpack.HeaderField, pseudo func(name, value string) error) (http.Header, error) {
	regular := len(fields)
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") {
			regular-- // pseudo-header fields come first and stay out of h
		} else {
			break
		}
	}
	h := make(http.Header, regular) // up to 8: one small map group
	// One backing array for the values: most fields occur once.
	vals := make([]string, 0, regular)
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") {
			if pseudo == nil {
				return nil, fmt.Errorf("pseudo-header %s in trailers", f.Name)
			}
			if err := pseudo(f.Name, f.Value); err != nil {
				return nil, err
			}
			continue
		}
		k := c.canonical(f.Name)
		if prev, ok := h[k]; ok {
			h[k] = append(prev[:len(prev):len(prev)], f.Value)
			continue
		}
		vals = append(vals, f.Value)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return h, nil
}

var _ io.Reader = (*stream)(nil)
