package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
)

// freeAddr returns a loopback address whose port was free just now.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInProcessMesh runs a control plane and two sidecars in this process,
// so the race detector sees the whole data path under concurrent load.
func TestInProcessMesh(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir := filepath.Join(t.TempDir(), "ctl")
	ctl, err := control.New(control.Config{DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { ctl.Run(ctx) })
	waitUntil(t, "control plane ready", ctl.Ready)
	raw, err := os.ReadFile(filepath.Join(dir, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := identity.ParseToken(string(raw))
	if err != nil {
		t.Fatal(err)
	}

	body := bytes.Repeat([]byte("b"), 3000)
	appLn, _ := net.Listen("tcp", "127.0.0.1:0")
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	})}
	wg.Go(func() { app.Serve(appLn) })
	defer app.Close()
	tcpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer tcpLn.Close()
	wg.Go(func() {
		for {
			c, err := tcpLn.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	})

	callee, err := New(Config{Token: tok, Service: "orders", AppAddr: appLn.Addr().String(), InboundAddr: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	echo, err := New(Config{Token: tok, Service: "echo", AppAddr: tcpLn.Addr().String(), InboundAddr: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	out, up := freeAddr(t), freeAddr(t)
	caller, err := New(Config{Token: tok, Service: "frontend", OutboundAddr: out, Upstreams: map[string]string{"echo": up}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Proxy{callee, echo, caller} {
		wg.Go(func() { p.Run(ctx) })
	}
	for _, p := range []*Proxy{callee, echo, caller} {
		waitUntil(t, "sidecar ready", p.Ready)
	}
	waitUntil(t, "endpoints", func() bool {
		return len(caller.agent.endpoints("orders")) == 1 && len(caller.agent.endpoints("echo")) == 1
	})

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var cw sync.WaitGroup
	errs := make(chan error, 16*30+8)
	for range 16 {
		cw.Go(func() {
			for range 30 {
				req, _ := http.NewRequest("POST", "http://"+out+"/", bytes.NewReader(body[:100]))
				req.Host = "orders"
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Equal(b, body) {
					errs <- fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(b))
				}
			}
		})
	}
	for range 8 {
		cw.Go(func() {
			c, err := net.Dial("tcp", up)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte("t"), 50000)
			go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("tcp echo: %d bytes, %v", len(got), err)
			}
		})
	}
	cw.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitUntil(t, "records acknowledged", func() bool { return caller.rec.held() == 0 && callee.rec.held() == 0 })
}
