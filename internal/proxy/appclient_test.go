package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawApp accepts connections on loopback and answers each with serve.
func rawApp(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), conns
}

func message(method, target, host string, h http.Header) *http.Request {
	u, _ := url.ParseRequestURI(target)
	if h == nil {
		h = http.Header{}
	}
	return &http.Request{Method: method, URL: u, Host: host, Header: h}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestH1ClientWritesTheMessageAndReusesTheConnection(t *testing.T) {
	got := make(chan *http.Request, 4)
	addr, conns := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(strings.NewReader(string(body)))
			got <- req
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: yes\r\n\r\nhello")
		}
	})
	c := newH1Client(addr, 16<<10)
	h := http.Header{"X-Caller": {"a", "b"}, "Tally-Seq": {"7"}, "Content-Digest": {"sha-256=:x:"}, "Connection": {"close"}}
	for i := range 2 {
		resp, err := c.roundTrip(context.Background(), message("POST", "/p?q=1", "svc", h), []byte("abc"))
		if err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("X-App") != "yes" || readAll(t, resp) != "hello" {
			t.Fatalf("round trip %d: got %d %v", i, resp.StatusCode, resp.Header)
		}
		req := <-got
		b, _ := io.ReadAll(req.Body)
		if req.Method != "POST" || req.RequestURI != "/p?q=1" || req.Host != "svc" || string(b) != "abc" ||
			strings.Join(req.Header["X-Caller"], ",") != "a,b" {
			t.Fatalf("app got %s %s host %q body %q header %v", req.Method, req.RequestURI, req.Host, b, req.Header)
		}
		for _, k := range []string{"Tally-Seq", "Content-Digest", "Connection"} {
			if req.Header.Get(k) != "" {
				t.Errorf("%s reached the app", k)
			}
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two requests, want 1 (reuse)", n)
	}
}

func TestH1ClientResendsOnlyIdempotentRequestsOnAStaleConnection(t *testing.T) {
	var served atomic.Int32
	// The app answers one request per connection, then closes without
	// saying so: the pooled connection goes stale.
	addr, conns := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		served.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	for _, tc := range []struct {
		method  string
		resends bool
	}{{"GET", true}, {"POST", false}} {
		c := newH1Client(addr, 16<<10)
		resp, err := c.roundTrip(context.Background(), message(tc.method, "/", "svc", nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		time.Sleep(50 * time.Millisecond) // the app's close arrives
		resp, err = c.roundTrip(context.Background(), message(tc.method, "/", "svc", nil), nil)
		if tc.resends {
			if err != nil {
				t.Fatalf("%s on a stale connection: %v, want a resend on a new one", tc.method, err)
			}
			readAll(t, resp)
			continue
		}
		if err == nil || !errors.Is(err, errStaleConn) {
			t.Fatalf("%s on a stale connection: err %v, want errStaleConn and no resend", tc.method, err)
		}
	}
	if s, n := served.Load(), conns.Load(); s != 3 || n != 3 {
		t.Errorf("app served %d requests on %d connections, want 3 on 3", s, n)
	}
}

func TestH1ClientLimitsTheResponseHeader(t *testing.T) {
	addr, _ := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("x", 64<<10)+"\r\n\r\n")
	})
	c := newH1Client(addr, 1024)
	_, err := c.roundTrip(context.Background(), message("GET", "/", "svc", nil), nil)
	if !errors.Is(err, errAppHeaderTooLarge) {
		t.Fatalf("err %v, want errAppHeaderTooLarge", err)
	}
}

func TestH1ClientGivesUpWhenTheMessageIsAbandoned(t *testing.T) {
	addr, _ := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		time.Sleep(5 * time.Second) // never answers in time
	})
	c := newH1Client(addr, 1024)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.roundTrip(ctx, message("GET", "/", "svc", nil), nil)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %v, want the context's error at once", err, time.Since(start))
	}
	c.mu.Lock()
	idle := len(c.idle)
	c.mu.Unlock()
	if idle != 0 {
		t.Errorf("%d idle connections after an abandoned message, want 0", idle)
	}
}

func TestH1ClientDoesNotReuseAPartlyReadBody(t *testing.T) {
	addr, conns := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
		}
	})
	c := newH1Client(addr, 1024)
	resp, err := c.roundTrip(context.Background(), message("GET", "/", "svc", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	resp, err = c.roundTrip(context.Background(), message("GET", "/", "svc", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); got != "0123456789" {
		t.Fatalf("second response %q", got)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the half-read one is not reused)", n)
	}
}

func TestCanFastRefusesUnsafeRequestLines(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		ok             bool
	}{
		{"GET", "/a?b=c", true},
		{"PURGE", "/", true},
		{"GE T", "/", false},
		{"GET\r\nX: y", "/", false},
		{"CONNECT", "/", false},
		{"", "/", false},
	} {
		r := message(tc.method, tc.target, "svc", nil)
		if got := canFast(r); got != tc.ok {
			t.Errorf("canFast(%q %q) = %v, want %v", tc.method, tc.target, got, tc.ok)
		}
	}
}
