package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startH1 serves h on loopback with an h1Server and returns its address.
func startH1(t *testing.T, h http.HandlerFunc) (string, *h1Server, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	bad := new(atomic.Int32)
	s := &h1Server{handler: h, maxHeader: 2048, readHeaderTimeout: 2 * time.Second, idleTimeout: 5 * time.Second,
		h2c: &http.Server{Handler: h, Protocols: protos}, log: slog.New(slog.DiscardHandler),
		badInput: func(string) { bad.Add(1) }}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String(), s, bad
}

// exchange writes raw to a new connection and returns the responses read.
func exchange(t *testing.T, addr, raw string, reqs ...*http.Request) ([]*http.Response, []string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies []string
	for _, req := range reqs {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return resps, bodies, err
		}
		b, err := io.ReadAll(resp.Body)
		resps, bodies = append(resps, resp), append(bodies, string(b))
		if err != nil {
			return resps, bodies, err
		}
	}
	return resps, bodies, nil
}

func get(method string) *http.Request { return &http.Request{Method: method} }

func TestH1ServerKeepAliveAndLengths(t *testing.T) {
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Host", r.Host)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
	})
	raw := "POST /a?x=1 HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /b HTTP/1.1\r\nHost: svc\r\n\r\n" +
		"HEAD /c HTTP/1.1\r\nHost: svc\r\n\r\n" +
		"GET /d HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
	resps, bodies, err := exchange(t, addr, raw, get("POST"), get("GET"), get("HEAD"), get("GET"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"POST /a?x=1 abc", "GET /b ", "", "GET /d hi"}
	for i, resp := range resps {
		if bodies[i] != want[i] || resp.StatusCode != 200 || resp.Header.Get("X-Host") != "svc" || resp.Header.Get("Date") == "" {
			t.Errorf("response %d: %d %q header %v, want body %q", i, resp.StatusCode, bodies[i], resp.Header, want[i])
		}
		if i != 2 && resp.ContentLength != int64(len(want[i])) {
			t.Errorf("response %d: Content-Length %d, want %d", i, resp.ContentLength, len(want[i]))
		}
	}
}

func TestH1ServerChunksLargeBodiesWithTrailers(t *testing.T) {
	big := strings.Repeat("x", 10_000)
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Content-Digest")
		w.WriteHeader(201)
		io.WriteString(w, big)
		w.Header().Set("Content-Digest", "sha-256=:abc=:")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})
	resps, bodies, err := exchange(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\n\r\nGET / HTTP/1.1\r\nHost: svc\r\n\r\n", get("GET"), get("GET"))
	if err != nil {
		t.Fatal(err)
	}
	for i, resp := range resps {
		if resp.StatusCode != 201 || bodies[i] != big || len(resp.TransferEncoding) != 1 {
			t.Fatalf("response %d: %d, %d bytes, TE %v", i, resp.StatusCode, len(bodies[i]), resp.TransferEncoding)
		}
		if resp.Trailer.Get("Content-Digest") != "sha-256=:abc=:" || resp.Trailer.Get("X-Late") != "yes" {
			t.Errorf("response %d trailers %v", i, resp.Trailer)
		}
	}
}

func TestH1ServerAbortLeavesTheBodyBroken(t *testing.T) {
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, strings.Repeat("y", 10))
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	})
	resps, _, err := exchange(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n", get("GET"))
	if len(resps) != 1 || err == nil {
		t.Fatalf("responses %d, err %v: want the body to fail", len(resps), err)
	}
	// Chunked: the terminating chunk must never be sent.
	addr, _, _ = startH1(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("y", 8000))
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	})
	if _, _, err := exchange(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n", get("GET")); err == nil {
		t.Fatal("an aborted chunked body read as complete")
	}
}

func TestH1ServerShortOfItsLengthCloses(t *testing.T) {
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "12345")
	})
	if _, _, err := exchange(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n", get("GET")); err == nil {
		t.Fatal("a body short of its Content-Length read as complete")
	}
}

func TestH1ServerRefusesBadRequests(t *testing.T) {
	addr, _, bad := startH1(t, func(w http.ResponseWriter, r *http.Request) { t.Error("handler ran") })
	for _, tc := range []struct {
		raw    string
		status int
	}{
		{"GET / HTTP/1.1\r\nHost: svc\r\nX-Big: " + strings.Repeat("b", 8000) + "\r\n\r\n", 431},
		{"GET / HTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"NOT A REQUEST\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: svc\r\nExpect: teapot\r\n\r\n", 417},
	} {
		resps, bodies, err := exchange(t, addr, tc.raw, get("GET"))
		if err != nil || resps[0].StatusCode != tc.status || !strings.HasPrefix(bodies[0], "tally: ") {
			t.Errorf("%.40q: err %v, want %d with a reason", tc.raw, err, tc.status)
			continue
		}
		if !resps[0].Close {
			t.Errorf("%.40q: connection kept open after a refusal", tc.raw)
		}
	}
	if bad.Load() != 5 {
		t.Errorf("bad input counted %d times, want 5", bad.Load())
	}
}

func TestH1ServerContinueAndHTTP10(t *testing.T) {
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		if r.URL.Path == "/stream" {
			http.NewResponseController(w).Flush()
			w.Write([]byte("!"))
		}
	})
	resps, bodies, err := exchange(t, addr, "POST / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", get("POST"), get("POST"))
	if err != nil || resps[0].StatusCode != 100 || resps[1].StatusCode != 200 || bodies[1] != "ok" {
		t.Fatalf("Expect: 100-continue: err %v, %v %q", err, resps, bodies)
	}
	resps, bodies, err = exchange(t, addr, "POST /stream HTTP/1.0\r\nContent-Length: 2\r\n\r\nok", get("POST"))
	if err != nil || bodies[0] != "ok!" || !resps[0].Close || resps[0].Proto != "HTTP/1.0" {
		t.Fatalf("HTTP/1.0 streamed: err %v, %q close=%v %s", err, bodies, resps[0].Close, resps[0].Proto)
	}
}

func TestH1ServerHandsH2CToNetHTTP(t *testing.T) {
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s via %s", r.URL.Path, r.Proto)
	})
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: protos, TLSClientConfig: &tls.Config{}}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "/x via HTTP/2.0" {
		t.Fatalf("h2c got %q", b)
	}
}

func TestH1ServerShutdownFinishesWhatIsInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	addr, s, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		_, bodies, err := exchange(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n", get("GET"))
		if err != nil {
			got <- result{err: err}
			return
		}
		got <- result{body: bodies[0]}
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("idle connection still open during shutdown")
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// A request still in flight after hangupWatchAfter has its context
// canceled when the app closes the connection; one that finishes keeps the
// connection, and a request pipelined behind a slow one is served whole.
func TestH1ServerNoticesAHangUp(t *testing.T) {
	canceled := make(chan string, 4)
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			canceled <- r.URL.Path
		case <-time.After(300 * time.Millisecond):
			io.WriteString(w, "answered "+r.URL.Path)
		}
	})
	for _, raw := range []string{
		"GET /get HTTP/1.1\r\nHost: svc\r\n\r\n",
		"POST /post HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello",
		"POST /chunked HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(nc, raw)
		time.Sleep(hangupWatchAfter + 50*time.Millisecond)
		nc.Close()
		select {
		case p := <-canceled:
			if !strings.HasPrefix(raw, "GET "+p) && !strings.HasPrefix(raw, "POST "+p) {
				t.Fatalf("canceled %s, want the request of %q", p, raw)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%q: the handler's context was not canceled after the app hung up", raw)
		}
	}

	// A second request sent while the first is watched: the watch reads
	// its start, which must still reach the server whole.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /one HTTP/1.1\r\nHost: svc\r\n\r\n")
	time.Sleep(hangupWatchAfter + 50*time.Millisecond)
	io.WriteString(nc, "POST /two HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\nok")
	br := bufio.NewReader(nc)
	for _, want := range []string{"answered /one", "answered /two"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the response %q: %v", want, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != want {
			t.Fatalf("response %q, %v; want %q", b, err, want)
		}
	}
	select {
	case p := <-canceled:
		t.Fatalf("%s canceled, though the app stayed", p)
	default:
	}
}

// Watched requests whose apps stay are never canceled: 16 keep-alive
// connections, each with requests in flight past hangupWatchAfter.
func TestH1ServerWatchHasNoFalseHangUps(t *testing.T) {
	var canceled atomic.Int32
	addr, _, _ := startH1(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			canceled.Add(1)
		case <-time.After(hangupWatchAfter + 50*time.Millisecond):
			io.WriteString(w, "ok")
		}
	})
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	errs := make(chan error, 16*3)
	for i := range 16 {
		go func() {
			for j := range 3 {
				var body io.Reader
				method := "GET"
				if (i+j)%2 == 1 {
					method, body = "POST", strings.NewReader("payload")
				}
				req, _ := http.NewRequest(method, "http://"+addr+"/", body)
				resp, err := client.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != "ok" {
						err = fmt.Errorf("%s: status %d, body %q", method, resp.StatusCode, b)
					}
				}
				errs <- err
			}
		}()
	}
	for range 16 * 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := canceled.Load(); n != 0 {
		t.Fatalf("%d requests canceled though their apps stayed", n)
	}
}
