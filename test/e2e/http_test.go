package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func contentDigest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(s[:]) + ":"
}

// pair is a caller sidecar (outbound) and a callee sidecar for service
// "orders" in front of app.
type pair struct {
	m      *mesh
	caller *sidecar
	callee *sidecar
	client *http.Client
}

func newPair(t *testing.T, app string, calleeOpts ...func(*sidecarOpts)) *pair {
	m := newMesh(t)
	o := sidecarOpts{app: app, inbound: true}
	for _, f := range calleeOpts {
		f(&o)
	}
	callee := m.sidecar("orders", o)
	caller := m.sidecar("frontend", sidecarOpts{outbound: true})
	m.waitEndpoints("orders", 1)
	return &pair{m: m, caller: caller, callee: callee, client: outboundClient()}
}

func (p *pair) edgeLabels() map[string]string {
	return map[string]string{"source": "frontend", "destination": "orders"}
}

func TestHTTPMessageAccounted(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, over --hold-bytes
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Got-Host", r.Host)
			w.Write(b)
		case "/big":
			w.Write(big)
		default:
			fmt.Fprintf(w, "hello %s", r.URL.Path)
		}
	}))
	p := newPair(t, app)

	resp, body, err := get(p.client, p.caller.outbound, "orders", "/x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || string(body) != "hello /x" {
		t.Fatalf("GET: got %d %q, want 200 %q", resp.StatusCode, body, "hello /x")
	}
	if got, want := resp.Header.Get("Content-Digest"), contentDigest(body); got != want {
		t.Errorf("Content-Digest: got %q, want %q", got, want)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length: got %d, want %d", resp.ContentLength, len(body))
	}
	if id := resp.Header.Get("Tally-Message-Id"); len(id) != 32 {
		t.Errorf("Tally-Message-Id: got %q, want 32 hex chars", id)
	}

	// A request body crosses and is checked too; Host names the service.
	payload := bytes.Repeat([]byte("x"), 300<<10)
	req, _ := http.NewRequest("POST", "http://"+p.caller.outbound+"/echo", bytes.NewReader(payload))
	req.Host = "orders.mesh:80"
	resp, err = p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, payload) {
		t.Fatalf("POST echo: got %d with %d bytes, want 200 with %d", resp.StatusCode, len(body), len(payload))
	}
	if got := resp.Header.Get("X-Got-Host"); got != "orders.mesh:80" {
		t.Errorf("app saw Host %q, want the caller's %q", got, "orders.mesh:80")
	}

	// Over --hold-bytes: streamed, the digest arrives as a trailer.
	resp, body, err = get(p.client, p.caller.outbound, "orders", "/big")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, big) {
		t.Fatalf("big body: got %d bytes, want %d", len(body), len(big))
	}
	if got, want := resp.Trailer.Get("Content-Digest"), contentDigest(big); got != want {
		t.Errorf("Content-Digest trailer: got %q, want %q", got, want)
	}

	l := p.edgeLabels()
	if sent, conf := metric(t, p.caller.admin, "tally_messages_sent_total", l), metric(t, p.caller.admin, "tally_messages_confirmed_total", l); sent != 3 || conf != 3 {
		t.Errorf("caller metrics: sent %v confirmed %v, want 3 and 3", sent, conf)
	}
	if got := metric(t, p.callee.admin, "tally_messages_received_total", l); got != 3 {
		t.Errorf("callee received: got %v, want 3", got)
	}
	if ev := p.m.omissions(""); len(ev) != 0 {
		t.Errorf("omissions after clean calls: %+v", ev)
	}
}

// hijackApp answers every request by writing raw bytes and closing.
func hijackApp(t *testing.T, raw func(w *bufio.Writer)) string {
	return serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		c, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		raw(bw.Writer)
		bw.Flush()
		c.(*net.TCPConn).CloseWrite()
		time.Sleep(50 * time.Millisecond)
		c.Close()
	}))
}

func TestAppClosesBeforeContentLength(t *testing.T) {
	for _, tc := range []struct {
		name     string
		declared int
		sent     int
	}{
		{name: "within hold-bytes", declared: 1000, sent: 500},
		{name: "over hold-bytes", declared: 1 << 20, sent: 600 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := hijackApp(t, func(w *bufio.Writer) {
				fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", tc.declared)
				w.Write(bytes.Repeat([]byte("a"), tc.sent))
			})
			p := newPair(t, app)
			resp, body, err := get(p.client, p.caller.outbound, "orders", "/short")
			assertLoudFailure(t, resp, body, err, tc.declared)
			p.m.waitOmission("truncated", func(ev omissionEvent) bool {
				return ev.Source == "frontend" && ev.Destination == "orders" && len(ev.MessageID) == 32
			})
		})
	}
}

// assertLoudFailure checks the caller was failed: a 502 naming the
// omission, or a body that ends in an error — never a whole-looking body.
func assertLoudFailure(t *testing.T, resp *http.Response, body []byte, err error, wholeLen int) {
	t.Helper()
	if err != nil {
		return // the body was aborted: the client saw an error
	}
	if resp.StatusCode == http.StatusBadGateway && resp.Header.Get("Tally-Omission") != "" {
		return
	}
	t.Fatalf("caller got %d with %d bytes (Tally-Omission %q) and no error; want a 502 with Tally-Omission or an aborted body",
		resp.StatusCode, len(body), resp.Header.Get("Tally-Omission"))
}

func TestChunkedResponseLosesLastChunk(t *testing.T) {
	app := hijackApp(t, func(w *bufio.Writer) {
		w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for range 3 {
			fmt.Fprintf(w, "%x\r\n%s\r\n", 100, strings.Repeat("c", 100))
		}
		// No "0\r\n\r\n": the terminating chunk is lost.
	})
	p := newPair(t, app)
	resp, body, err := get(p.client, p.caller.outbound, "orders", "/chunked")
	assertLoudFailure(t, resp, body, err, 300)
	if err == nil && resp.Header.Get("Tally-Omission") != "truncated" {
		t.Errorf("Tally-Omission: got %q, want truncated", resp.Header.Get("Tally-Omission"))
	}
	p.m.waitOmission("truncated", func(ev omissionEvent) bool { return ev.Destination == "orders" })
}

// hop is a TCP relay between two sidecars that can cut the connection after
// a number of bytes in one direction.
type hop struct {
	ln     net.Listener
	target atomic.Value // string
	// After arm, the next n bytes in the armed direction pass, then every
	// relayed connection is cut.
	mu      sync.Mutex
	armed   string // "up" (caller->callee) or "down"
	budget  int64
	conns   []net.Conn
	cutOnce sync.Once
	cut     chan struct{}
}

func newHop(t *testing.T) *hop {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hop{ln: ln, cut: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); h.cutAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go h.relay(c)
		}
	}()
	return h
}

func (h *hop) arm(dir string, n int64) {
	h.mu.Lock()
	h.armed, h.budget = dir, n
	h.mu.Unlock()
}

func (h *hop) cutAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	h.cutOnce.Do(func() { close(h.cut) })
}

func (h *hop) relay(c net.Conn) {
	t, _ := h.target.Load().(string)
	u, err := net.Dial("tcp", t)
	if err != nil {
		c.Close()
		return
	}
	h.mu.Lock()
	h.conns = append(h.conns, c, u)
	h.mu.Unlock()
	go h.copy(u, c, "up")
	h.copy(c, u, "down")
}

func (h *hop) copy(dst, src net.Conn, dir string) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			h.mu.Lock()
			cut := false
			if h.armed == dir {
				if int64(n) > h.budget {
					n = int(h.budget)
					cut = true
				}
				h.budget -= int64(n)
			}
			h.mu.Unlock()
			dst.Write(buf[:n])
			if cut {
				h.cutAll()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func TestConnectionCutBetweenSidecars(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 2<<20)
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(big)
	}))
	for _, tc := range []struct {
		name string
		dir  string
		post bool
	}{
		{name: "callee to caller, mid response body", dir: "down"},
		{name: "caller to callee, mid request body", dir: "up", post: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHop(t)
			p := newPair(t, app, func(o *sidecarOpts) { o.advertise = h.ln.Addr().String() })
			h.target.Store(p.callee.inbound)
			// Warm the connection so the cut lands in a body, not a handshake.
			if resp, _, err := get(p.client, p.caller.outbound, "orders", "/warm"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("warm-up through the hop: %v %v", resp, err)
			}
			h.arm(tc.dir, 256<<10)
			var resp *http.Response
			var body []byte
			var err error
			if tc.post {
				req, _ := http.NewRequest("POST", "http://"+p.caller.outbound+"/upload", bytes.NewReader(big))
				req.Host = "orders"
				resp, err = p.client.Do(req)
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
			} else {
				resp, body, err = get(p.client, p.caller.outbound, "orders", "/download")
			}
			assertLoudFailure(t, resp, body, err, len(big))
			want := "truncated"
			if tc.post {
				want = "unconfirmed"
			}
			p.m.waitOmission(want, func(ev omissionEvent) bool { return ev.Source == "frontend" })
		})
	}
}

func TestBadInputFromLocalApp(t *testing.T) {
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	p := newPair(t, app)
	for _, tc := range []struct {
		name   string
		host   string
		header string
		status int
	}{
		{name: "unknown service", host: "nosuch", status: http.StatusServiceUnavailable},
		{name: "ip literal host", host: "127.0.0.1", status: http.StatusBadRequest},
		{name: "oversized header", host: "orders", header: strings.Repeat("h", 70<<10), status: http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+p.caller.outbound+"/", nil)
			req.Host = tc.host
			if tc.header != "" {
				req.Header.Set("X-Big", tc.header)
			}
			resp, err := p.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.HasPrefix(string(b), "tally: ") {
				t.Errorf("got %d %q, want %d with a tally: message", resp.StatusCode, b, tc.status)
			}
		})
	}
	if got := metric(t, p.caller.admin, "tally_proxy_limit_hits_total", map[string]string{"limit": "header_bytes"}); got != 1 {
		t.Errorf("header limit hits: got %v, want 1", got)
	}
	// Nothing bad reached the control plane as an omission, and the
	// sidecar still serves.
	if resp, _, err := get(p.client, p.caller.outbound, "orders", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after bad input: %v %v", resp, err)
	}
}

func TestLoadNoFalsePositives(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	body := bytes.Repeat([]byte("k"), 1024)
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	p := newPair(t, app)
	const total, conc = 20000, 32
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= total {
				resp, b, err := get(p.client, p.caller.outbound, "orders", "/load")
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, body) {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v %v %d bytes", err, resp, len(b)))
				}
			}
		})
	}
	wg.Wait()
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", f, total, firstErr.Load())
	}
	l := p.edgeLabels()
	if got := metric(t, p.caller.admin, "tally_messages_confirmed_total", l); got != total {
		t.Errorf("caller confirmed: got %v, want %d", got, total)
	}
	if got := metric(t, p.callee.admin, "tally_messages_received_total", l); got != total {
		t.Errorf("callee received: got %v, want %d", got, total)
	}
	// The control plane's sums agree once the records are uploaded.
	eventually(t, 10*time.Second, "control plane edge totals", func() error {
		var edges struct {
			Items []struct {
				Source, Destination       string
				Sent, Confirmed, Received int64
				Omitted                   int64
				InFlight                  int64 `json:"in_flight"`
			} `json:"items"`
		}
		if err := getJSON(p.m.url+"/api/v1/edges", &edges); err != nil {
			return err
		}
		for _, e := range edges.Items {
			if e.Source == "frontend" && e.Destination == "orders" {
				if e.Sent != total || e.Confirmed != total || e.Received != total {
					return fmt.Errorf("edge %+v", e)
				}
				return nil
			}
		}
		return fmt.Errorf("no edge yet")
	})
	if ev := p.m.omissions(""); len(ev) != 0 {
		t.Fatalf("false positives: %d omission events, first %+v", len(ev), ev[0])
	}
}

// An app that hangs up while its call is in flight cancels the call: the
// callee's app sees its request canceled (it does not hold it to the end),
// and the caller's sidecar records the call as unconfirmed, saying why.
func TestCallerHangUpCancelsTheCall(t *testing.T) {
	arrived := make(chan struct{}, 1)
	ended := make(chan string, 1)
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- "canceled"
		case <-time.After(15 * time.Second):
			ended <- "held to the end"
		}
	}))
	p := newPair(t, app)
	nc, err := net.Dial("tcp", p.caller.outbound)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(nc, "GET /hold HTTP/1.1\r\nHost: orders\r\n\r\n")
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the callee's app")
	}
	hungUp := time.Now()
	nc.Close()
	select {
	case how := <-ended:
		if how != "canceled" {
			t.Fatalf("callee's app: request %s", how)
		}
		t.Logf("callee's app saw the cancel %v after the hang-up", time.Since(hungUp).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("callee's app still holds the request 5 s after the caller hung up")
	}
	p.m.waitOmission("unconfirmed", func(ev omissionEvent) bool {
		return ev.Source == "frontend" && ev.Destination == "orders" && strings.Contains(ev.Detail, "went away")
	})
}
