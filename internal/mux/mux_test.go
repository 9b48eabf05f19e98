package mux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// pair serves h on one end of a loopback TCP connection and returns a
// client on the other.
func pair(t *testing.T, h http.Handler, opts ...func(*Server)) (*ClientConn, *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &Server{Handler: h, MaxHeaderBytes: 8 << 10}
	for _, o := range opts {
		o(srv)
	}
	go func() {
		// The listener closes only once its one connection is accepted:
		// closed earlier (a loaded machine may run this goroutine late),
		// it would reset the connection still waiting in its backlog.
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			return
		}
		srv.ServeConn(context.Background(), c)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(nc, ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, srv
}

func request(t *testing.T, method, path string, body io.Reader) *http.Request {
	req, err := http.NewRequestWithContext(t.Context(), method, "https://svc"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestRoundTripBodiesAndTrailers(t *testing.T) {
	cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Host", r.Host)
		w.WriteHeader(201)
		w.Write(b)
		w.Header().Set("X-Sum", fmt.Sprintf("%x", sum))
		w.Header().Set(http.TrailerPrefix+"X-Req-Trailer", r.Trailer.Get("X-Client"))
	}))
	big := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB: several windows
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{name: "no body"},
		{name: "small", body: []byte("hello")},
		{name: "larger than the windows", body: big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			req := request(t, "POST", "/x?q=1", body)
			req.Trailer = http.Header{"X-Client": nil}
			if tc.body != nil {
				req.ContentLength = -1
				req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(tc.body), readerFunc(func([]byte) (int, error) {
					req.Trailer.Set("X-Client", "c1")
					return 0, io.EOF
				})))
			}
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 201 || !bytes.Equal(got, tc.body) || resp.Header.Get("X-Method") != "POST" || resp.Header.Get("X-Host") != "svc" {
				t.Fatalf("got %d %d bytes %v", resp.StatusCode, len(got), resp.Header)
			}
			sum := sha256.Sum256(tc.body)
			if resp.Trailer.Get("X-Sum") != fmt.Sprintf("%x", sum) {
				t.Errorf("trailer X-Sum %q", resp.Trailer.Get("X-Sum"))
			}
			if tc.body != nil && resp.Trailer.Get("X-Req-Trailer") != "c1" {
				t.Errorf("request trailer did not arrive: %v", resp.Trailer)
			}
		})
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestFullDuplex(t *testing.T) {
	cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(bytes.ToUpper(buf[:n]))
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	pr, pw := io.Pipe()
	req := request(t, "POST", "/echo", pr)
	req.ContentLength = -1
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for _, word := range []string{"ping", "pong", "done"} {
		pw.Write([]byte(word))
		n, err := resp.Body.Read(buf)
		if err != nil || string(buf[:n]) != strings.ToUpper(word) {
			t.Fatalf("echo of %q: %q %v", word, buf[:n], err)
		}
	}
	pw.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("end: %v", err)
	}
}

func TestAbortedHandlerResetsStream(t *testing.T) {
	cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	resp, err := cc.RoundTrip(request(t, "GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	var se StreamError
	if !errors.As(err, &se) {
		t.Fatalf("body ended with %v; want a stream reset", err)
	}
	// The connection is still good.
	resp, err = cc.RoundTrip(request(t, "GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
}

func TestConcurrentStreams(t *testing.T) {
	cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			path := fmt.Sprintf("/%d", i)
			resp, err := cc.RoundTrip(request(t, "GET", path, nil))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			if string(b) != path {
				errs <- fmt.Errorf("got %q for %s", b, path)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestHeaderLimit(t *testing.T) {
	cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	// Settings arrive with the first exchange.
	resp, err := cc.RoundTrip(request(t, "GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	req := request(t, "GET", "/", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 16<<10))
	if _, err := cc.RoundTrip(req); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("over the peer's limit: got %v, want ErrHeaderTooLarge (not sent)", err)
	}
	if cc.Err() != nil {
		t.Fatalf("the connection must survive: %v", cc.Err())
	}
}

func TestShutdownDrainsThenRefuses(t *testing.T) {
	release := make(chan struct{})
	cc, srv := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late but whole")
	}))
	done := make(chan string)
	go func() {
		resp, err := cc.RoundTrip(request(t, "GET", "/", nil))
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		done <- string(b)
	}()
	time.Sleep(50 * time.Millisecond) // let the request start
	shut := make(chan error)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	deadline := time.Now().Add(5 * time.Second)
	for cc.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(cc.Err(), ErrGoAway) {
		t.Fatalf("client after GOAWAY: Err %v", cc.Err())
	}
	close(release)
	if got := <-done; got != "late but whole" {
		t.Fatalf("in-flight request across shutdown: %q", got)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestSilentPeerIsDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // a peer that reads and never answers
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(nc, ClientConfig{PingIdle: 60 * time.Millisecond, DeadAfter: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-cc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a silent peer's connection was not closed")
	}
	if err := cc.Err(); err == nil || !strings.Contains(err.Error(), "PING") {
		t.Fatalf("Err = %v, want the silent-peer error", err)
	}
}

func TestNeverIndexedFieldsLeaveTheTableAlone(t *testing.T) {
	c := newConn(nil, 0, []string{"tally-message-id"})
	buf := &c.hbuf
	long := strings.Repeat("z", 300) // a length past the 7-bit prefix
	h := http.Header{"Tally-Message-Id": {"0123456789abcdef0123456789abcdef", long}, "X-Other": {"v"}}
	c.encodeHeader(h)
	var got []hpack.HeaderField
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
	if _, err := dec.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range got {
		if want := f.Name == "tally-message-id"; f.Sensitive != want {
			t.Errorf("%s: never-indexed %v, want %v", f.Name, f.Sensitive, want)
		}
		if f.Name == "tally-message-id" {
			ids = append(ids, f.Value)
		}
	}
	if len(got) != 3 || len(ids) != 2 || ids[0] != h["Tally-Message-Id"][0] || ids[1] != long {
		t.Fatalf("decoded %v, want both ids and x-other", got)
	}
	buf.Reset()
	c.encodeHeader(http.Header{"X-Other": {"v"}})
	if buf.Len() != 1 {
		t.Errorf("x-other re-encoded in %d bytes, want 1 (indexed)", buf.Len())
	}
}

func TestNeverIndexedLiteralLengths(t *testing.T) {
	for _, n := range []int{0, 1, 126, 127, 128, 254, 255, 16383, 16384, 70000} {
		v := strings.Repeat("v", n)
		b := appendNeverIndexed(nil, "x-n", v)
		var got []hpack.HeaderField
		dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
		dec.SetMaxStringLength(1 << 20)
		if _, err := dec.Write(b); err != nil || len(got) != 1 || got[0].Value != v || !got[0].Sensitive {
			t.Fatalf("length %d: err %v, decoded %d fields", n, err, len(got))
		}
	}
}

func TestFoldedTrailersTravelInTheHeader(t *testing.T) {
	cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, X-Keep")
		io.WriteString(w, r.URL.Path)
		if r.URL.Path == "/flushed" {
			w.(http.Flusher).Flush() // the header block is out: nothing folds
		}
		w.Header().Set("X-Sum", "s")
		w.Header().Set("X-Keep", "k")
		// Undeclared trailers, named with net/http's prefix.
		w.Header().Set(http.TrailerPrefix+"X-Pre", "p")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
	}), func(s *Server) { s.FoldTrailer = func(k string) bool { return k == "X-Sum" || k == "X-Pre" } })
	for _, tc := range []struct {
		path   string
		folded bool
	}{{"/whole", true}, {"/flushed", false}} {
		resp, err := cc.RoundTrip(request(t, "GET", tc.path, nil))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != tc.path {
			t.Fatalf("%s: body %q, %v", tc.path, b, err)
		}
		inHeader := resp.Header.Get("X-Sum") == "s"
		inTrailer := resp.Trailer.Get("X-Sum") == "s"
		if inHeader != tc.folded || inTrailer == tc.folded || resp.Trailer.Get("X-Keep") != "k" || resp.Header.Get("X-Keep") != "" {
			t.Errorf("%s: X-Sum in header %v, in trailer %v; X-Keep trailer %q header %q", tc.path, inHeader, inTrailer,
				resp.Trailer.Get("X-Keep"), resp.Header.Get("X-Keep"))
		}
		preInHeader := resp.Header.Get("X-Pre") == "p"
		preInTrailer := resp.Trailer.Get("X-Pre") == "p"
		if preInHeader != tc.folded || preInTrailer == tc.folded || resp.Trailer.Get("X-Late") != "l" || resp.Header.Get("X-Late") != "" {
			t.Errorf("%s: prefixed X-Pre in header %v, in trailer %v; X-Late trailer %q header %q", tc.path, preInHeader, preInTrailer,
				resp.Trailer.Get("X-Late"), resp.Header.Get("X-Late"))
		}
		for k := range resp.Header {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				t.Errorf("%s: header field %q sent with the trailer prefix", tc.path, k)
			}
		}
	}
}
