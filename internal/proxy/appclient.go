package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// h1Client carries a request whose body the sidecar already holds whole
// (empty, or verified under --hold-bytes) to the app over HTTP/1.1 on a
// pooled connection, in the calling goroutine. That is most requests, and
// for them it replaces net/http.Transport, whose two goroutines per
// connection and the hand-offs between them cost more CPU than the rest of
// the callee's work on the app side (see bench/README.md). Requests that
// stream a body or carry trailers still go through net/http.Transport.
//
// The response is parsed by net/http's own http.ReadResponse; only the
// request line and header block are written here.
type h1Client struct {
	addr      string
	maxHeader int // response header block limit, in bytes
	maxIdle   int
	idleTime  time.Duration
	dialer    net.Dialer

	mu   sync.Mutex
	idle []*h1Conn // most recently used last
}

func newH1Client(addr string, maxHeader int) *h1Client {
	return &h1Client{addr: addr, maxHeader: maxHeader, maxIdle: 1024, idleTime: 60 * time.Second,
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}}
}

type h1Conn struct {
	nc      net.Conn
	lr      limitedConnReader
	br      *bufio.Reader
	bw      *bufio.Writer
	idleAt  time.Time
	reused  bool
	broken  bool
	stopCtx func() bool
}

// limitedConnReader bounds what the response header block may read; the
// body is read with no limit (remaining < 0).
type limitedConnReader struct {
	nc        net.Conn
	remaining int64
	tooLarge  error // returned once remaining is used up
}

var errAppHeaderTooLarge = errors.New("app response header block over the limit (--max-header-bytes)")

func (l *limitedConnReader) Read(p []byte) (int, error) {
	if l.remaining >= 0 {
		if l.remaining == 0 {
			return 0, l.tooLarge
		}
		if int64(len(p)) > l.remaining {
			p = p[:l.remaining]
		}
	}
	n, err := l.nc.Read(p)
	if l.remaining >= 0 {
		l.remaining -= int64(n)
	}
	return n, err
}

// canFast reports whether r's method and target are safe to write as a
// request line (the caller checks that its body is held whole and that it
// carries no trailers of the app's).
func canFast(r *http.Request) bool {
	if r.Method == http.MethodConnect {
		return false
	}
	if !validMethod(r.Method) {
		return false
	}
	uri := r.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '!' || c == '~' || c == '*' || c == '\'' ||
			c == '+' || c == '#' || c == '$' || c == '%' || c == '&' || c == '^' || c == '`' || c == '|') {
			return false
		}
	}
	return true
}

// skipToApp is what never goes on to the app from a message's header:
// hop-by-hop fields, the sidecars' own fields, and the framing this client
// writes itself.
var skipToApp = func() map[string]bool {
	m := map[string]bool{"Content-Length": true, "Content-Digest": true, "Host": true, "Te": true}
	for _, h := range hopHeaders {
		m[http.CanonicalHeaderKey(h)] = true
	}
	for _, h := range tallyHeaders {
		m[http.CanonicalHeaderKey(h)] = true
	}
	return m
}()

// roundTrip sends r with body (nil for none) and returns the app's
// response. The response body must be closed; read to its end, it puts the
// connection back in the pool.
func (c *h1Client) roundTrip(ctx context.Context, r *http.Request, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		cn, err := c.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.send(ctx, cn, r, body)
		if err == nil {
			return resp, nil
		}
		cn.close()
		// A kept-alive connection the app closed while it sat idle fails
		// before any response byte. Sending again is safe only if the app
		// cannot have acted on the request (RFC 9110 §9.2.2): an idempotent
		// method, as net/http.Transport decides.
		if attempt == 0 && cn.reused && errors.Is(err, errStaleConn) && idempotent(r) {
			continue
		}
		return nil, err
	}
}

var errStaleConn = errors.New("kept-alive app connection closed before answering")

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

func (c *h1Client) get(ctx context.Context) (*h1Conn, error) {
	now := time.Now()
	c.mu.Lock()
	for n := len(c.idle); n > 0; n = len(c.idle) {
		cn := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		if now.Sub(cn.idleAt) < c.idleTime {
			c.mu.Unlock()
			cn.reused = true
			return cn, nil
		}
		go cn.nc.Close()
	}
	c.mu.Unlock()
	nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	cn := &h1Conn{nc: nc}
	cn.lr.nc = nc
	cn.lr.remaining = -1
	cn.lr.tooLarge = errAppHeaderTooLarge
	cn.br = bufio.NewReaderSize(&cn.lr, 16<<10)
	cn.bw = bufio.NewWriterSize(nc, 8<<10)
	return cn, nil
}

func (c *h1Client) put(cn *h1Conn) {
	if cn.broken {
		cn.close()
		return
	}
	cn.idleAt = time.Now()
	c.mu.Lock()
	if len(c.idle) < c.maxIdle {
		c.idle = append(c.idle, cn)
		cn = nil
	}
	c.mu.Unlock()
	if cn != nil {
		cn.close()
	}
}

func (cn *h1Conn) close() {
	cn.broken = true
	cn.nc.Close()
}

// afterFunc is context.AfterFunc without its allocations when ctx runs
// the function itself, as the inbound server's request contexts do.
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

func (c *h1Client) send(ctx context.Context, cn *h1Conn, r *http.Request, body []byte) (*http.Response, error) {
	// Abandoning the message (the caller went away) unblocks this
	// connection's reads and writes; it is not reused after that.
	cn.stopCtx = afterFunc(ctx, func() { cn.nc.SetDeadline(time.Unix(1, 0)) })
	w := cn.bw
	w.WriteString(r.Method)
	w.WriteByte(' ')
	w.WriteString(r.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(r.Host)
	w.WriteString("\r\n")
	for k, vs := range r.Header {
		if skipToApp[k] {
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if body != nil || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		w.WriteString("Content-Length: ")
		var num [20]byte
		w.Write(strconv.AppendInt(num[:0], int64(len(body)), 10))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		cn.stopCtx()
		return nil, c.classify(ctx, err, false)
	}
	cn.lr.remaining = int64(c.maxHeader) + 4096
	for {
		resp, err := http.ReadResponse(cn.br, r)
		if err != nil {
			cn.stopCtx()
			if errors.Is(err, errAppHeaderTooLarge) {
				return nil, err
			}
			return nil, c.classify(ctx, err, cn.br.Buffered() == 0)
		}
		// 1xx interim responses (100 Continue, 103 Early Hints) are not the
		// answer; 101 cannot happen, as Upgrade is never forwarded.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		cn.lr.remaining = -1
		if resp.Close || r.Close {
			cn.broken = true
		}
		resp.Body = &h1Body{rc: resp.Body, cn: cn, c: c}
		return resp, nil
	}
}

// classify names why a request failed on a connection. Nothing at all read
// back on a reused connection means the app had closed it while idle.
func (c *h1Client) classify(ctx context.Context, err error, nothingRead bool) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if nothingRead && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		return fmt.Errorf("%w: %v", errStaleConn, err)
	}
	return err
}

// h1Body is a response body; its connection goes back to the pool when the
// body was read to its end, and is closed when the body is abandoned.
type h1Body struct {
	rc   io.ReadCloser
	cn   *h1Conn
	c    *h1Client
	eof  bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("read on a closed response body")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	stopped := b.cn.stopCtx()
	if !b.eof || !stopped || b.cn.br.Buffered() > 0 {
		// Unread body, a cancelled context that may have set a deadline,
		// or bytes the app sent beyond its response: not reusable.
		b.cn.close()
		return nil
	}
	b.c.put(b.cn)
	return nil
}
