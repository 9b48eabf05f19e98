package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// FuzzH1ServerRequest feeds arbitrary bytes from "the app" to the lean
// outbound server: it must answer or close, never panic or hang.
func FuzzH1ServerRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: svc\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: svc\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: svc\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: svc\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/2" {
			w.Header().Set("Trailer", "X-Len")
		}
		w.Write(b)
		w.Header().Set("X-Len", "1")
	})
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := &h1Server{handler: handler, maxHeader: 1024, readHeaderTimeout: time.Second, idleTimeout: time.Second,
			h2c: &http.Server{}, log: slog.New(slog.DiscardHandler), badInput: func(string) {}}
		s.h2ln = newConnListener(&net.TCPAddr{})
		s.h2ln.Close() // nothing takes h2c here: such a connection is closed
		s.conns = map[*h1ServerConn]struct{}{}
		srv, app := net.Pipe()
		c := &h1ServerConn{nc: srv}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		done := make(chan struct{})
		go func() { s.serveConn(c); close(done) }()
		go io.Copy(io.Discard, app)
		app.SetWriteDeadline(time.Now().Add(2 * time.Second))
		app.Write(raw)
		app.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("server still serving 5 s after the app closed, input %q", raw)
		}
	})
}

// FuzzH1ClientResponse feeds arbitrary bytes as "the app's" answer to the
// callee's lean client: a response or an error, never a panic or a hang.
func FuzzH1ClientResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 999\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c := newH1Client("unused", 1024)
		cl, app := net.Pipe()
		cn := &h1Conn{nc: cl}
		cn.lr = limitedConnReader{nc: cl, remaining: -1, tooLarge: errAppHeaderTooLarge}
		cn.br = bufio.NewReaderSize(&cn.lr, 16<<10)
		cn.bw = bufio.NewWriterSize(cl, 8<<10)
		cl.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			br := bufio.NewReader(app)
			http.ReadRequest(br) // the request the client writes
			app.Write(raw)
			app.Close()
		}()
		resp, err := c.send(context.Background(), cn, message("GET", "/", "svc", nil), nil)
		if err != nil {
			return
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	})
}
