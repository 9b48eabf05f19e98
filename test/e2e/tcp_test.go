package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// serveTCP runs a TCP app on loopback; handle owns each connection.
func serveTCP(t *testing.T, handle func(c *net.TCPConn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c.(*net.TCPConn))
		}
	}()
	return ln.Addr().String()
}

func tcpPair(t *testing.T, app string) (*mesh, *sidecar, string) {
	m := newMesh(t)
	m.sidecar("ledger", sidecarOpts{app: app, inbound: true})
	up := freeAddr(t)
	caller := m.sidecar("frontend", sidecarOpts{upstreams: map[string]string{"ledger": up}})
	m.waitEndpoints("ledger", 1)
	return m, caller, up
}

func TestTCPStreamConfirmedWithHalfClose(t *testing.T) {
	// The app reads everything the client sends, then answers with its
	// length and a fixed tail, then closes: a half-close protocol.
	app := serveTCP(t, func(c *net.TCPConn) {
		defer c.Close()
		b, _ := io.ReadAll(c)
		c.Write([]byte("got:"))
		c.Write(bytes.Repeat([]byte("r"), len(b)))
	})
	m, caller, up := tcpPair(t, app)
	c, err := net.Dial("tcp", up)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte("p"), 200<<10)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (a confirmed end must be a normal close)", err)
	}
	want := append([]byte("got:"), bytes.Repeat([]byte("r"), len(payload))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("answer: got %d bytes, want %d", len(got), len(want))
	}
	l := map[string]string{"source": "frontend", "destination": "ledger"}
	eventually(t, 2*time.Second, "TCP confirmation", func() error {
		if metric(t, caller.admin, "tally_messages_confirmed_total", l) != 1 {
			return errors.New("not confirmed")
		}
		return nil
	})
	if ev := m.omissions(""); len(ev) != 0 {
		t.Errorf("omissions: %+v", ev)
	}
}

func TestTCPUpstreamCutBeforeConfirmation(t *testing.T) {
	// The app sends part of an answer and then resets the connection.
	app := serveTCP(t, func(c *net.TCPConn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.Write(bytes.Repeat([]byte("x"), 1000))
		time.Sleep(50 * time.Millisecond)
		c.SetLinger(0)
		c.Close()
	})
	m, _, up := tcpPair(t, app)
	c, err := net.Dial("tcp", up)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read ended with %v; want a reset (ECONNRESET), never a normal close", err)
	}
	m.waitOmission("truncated", func(ev omissionEvent) bool { return ev.Destination == "ledger" })
}
