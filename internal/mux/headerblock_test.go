package mux

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawPeer is a hand-driven HTTP/2 client on a real connection to a Server,
// to send header blocks no well-behaved encoder would.
type rawPeer struct {
	t  *testing.T
	nc net.Conn
	fr *http2.Framer
}

func newRawPeer(t *testing.T, maxHeader int) *rawPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		w.WriteHeader(204)
	}), MaxHeaderBytes: maxHeader}
	go func() {
		c, err := ln.Accept()
		ln.Close()
		if err == nil {
			srv.ServeConn(context.Background(), c)
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := p.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return p
}

// block HPACK-encodes fields without indexing them, so that names and
// values reach the decoder exactly as written (upper case included).
func block(fields ...string) []byte {
	var b bytes.Buffer
	for i := 0; i < len(fields); i += 2 {
		b.WriteByte(0x00) // literal without indexing, new name
		for _, s := range fields[i : i+2] {
			b.WriteByte(byte(len(s))) // lengths here stay under 127
			b.WriteString(s)
		}
	}
	return b.Bytes()
}

var reqFields = []string{":method", "GET", ":scheme", "https", ":authority", "svc", ":path", "/p"}

func (p *rawPeer) headers(id uint32, frags ...[]byte) {
	p.t.Helper()
	err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frags[0], EndStream: true, EndHeaders: len(frags) == 1})
	for i, f := range frags[1:] {
		if err == nil {
			err = p.fr.WriteContinuation(id, i == len(frags)-2, f)
		}
	}
	if err != nil {
		p.t.Fatal(err)
	}
}

// outcome reads frames until stream id is answered or reset, or the
// connection ends: "status NNN", "reset CODE", "goaway CODE" or "closed".
func (p *rawPeer) outcome(id uint32) string {
	p.t.Helper()
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return "closed" // EOF, or a reset when our frames went unread
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				p.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return "status " + f.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "reset " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "goaway " + f.ErrCode.String()
		}
	}
}

func TestHeaderBlocks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frags  [][]byte
		want   string
		recovs bool // the connection serves the next stream
	}{
		{"whole", [][]byte{block(reqFields...)}, "status 204", true},
		{"split over CONTINUATIONs", [][]byte{block(reqFields[:4]...), block(reqFields[4:6]...), block(reqFields[6:]...)}, "status 204", true},
		{"upper-case name", [][]byte{block(append(reqFields, "X-Up", "v")...)}, "reset PROTOCOL_ERROR", true},
		{"control byte in a value", [][]byte{block(append(reqFields, "x-v", "a\x01b")...)}, "reset PROTOCOL_ERROR", true},
		{"pseudo after regular", [][]byte{block(append([]string{":method", "GET", "x-a", "1"}, reqFields[2:]...)...)}, "reset PROTOCOL_ERROR", true},
		{"duplicate pseudo", [][]byte{block(append(reqFields, ":path", "/q")...)}, "reset PROTOCOL_ERROR", true},
		{"unknown pseudo", [][]byte{block(append(reqFields, ":foo", "x")...)}, "reset PROTOCOL_ERROR", true},
		{"request and response pseudo", [][]byte{block(append(reqFields, ":status", "200")...)}, "reset PROTOCOL_ERROR", true},
		{"over the list limit", [][]byte{block(append(reqFields, "x-a", strings.Repeat("a", 100), "x-b", strings.Repeat("b", 100), "x-c", strings.Repeat("c", 100))...)}, "status 431", true},
		{"far over the limit", [][]byte{block(reqFields...)[:2], bytes.Repeat([]byte{0}, 2000)}, "closed", false},
		{"not HPACK", [][]byte{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, "closed", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newRawPeer(t, 300)
			p.headers(1, tc.frags...)
			if got := p.outcome(1); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if !tc.recovs {
				return
			}
			p.headers(3, block(reqFields...))
			if got := p.outcome(3); got != "status 204" {
				t.Fatalf("next stream: got %q, want status 204", got)
			}
		})
	}
}

// readerConn is a net.Conn that reads from r and discards writes.
type readerConn struct {
	net.Conn
	r *bytes.Reader
}

func (c readerConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c readerConn) Write(p []byte) (int, error) { return len(p), nil }

// FuzzHeaderBlock feeds a peer's arbitrary header block fragments, as a
// HEADERS frame and a CONTINUATION, to the decoder: it must never panic,
// and a block it accepts holds only valid fields within the limit.
func FuzzHeaderBlock(f *testing.F) {
	f.Add(block(reqFields...), []byte(nil))
	f.Add(block(reqFields[:4]...), block(reqFields[4:]...))
	f.Add(block(append(reqFields, "X-Up", "v")...), []byte(nil))
	f.Add([]byte{0x82, 0x86, 0x84, 0x41, 0x03, 's', 'v', 'c'}, []byte{0x10})
	f.Add([]byte{0x3f, 0xe1, 0x1f}, []byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var wire bytes.Buffer
		fr := http2.NewFramer(&wire, nil)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: second == nil})
		if second != nil {
			fr.WriteContinuation(1, true, second)
		}
		const max = 512
		c := newConn(readerConn{r: bytes.NewReader(wire.Bytes())}, max, nil)
		_, blk, err := c.readFrame()
		if err != nil {
			return
		}
		var size uint32
		for _, hf := range blk.fields {
			size += hf.Size()
			if !strings.HasPrefix(hf.Name, ":") && !validFieldName(hf.Name) {
				t.Fatalf("accepted field name %q", hf.Name)
			}
		}
		if size > max {
			t.Fatalf("accepted %d bytes of fields, over the limit of %d", size, max)
		}
	})
}

func TestNameCachesAreBounded(t *testing.T) {
	c := newConn(readerConn{r: bytes.NewReader(nil)}, 0, nil)
	for i := range 4 * maxNames {
		name := fmt.Sprintf("x-name-%d", i)
		if got, want := c.canonical(name), http.CanonicalHeaderKey(name); got != want {
			t.Fatalf("canonical(%q) = %q, want %q", name, got, want)
		}
		c.lower(http.CanonicalHeaderKey(name))
	}
	if len(c.names) > maxNames || len(c.lowers) > maxNames {
		t.Fatalf("caches hold %d and %d names, over %d", len(c.names), len(c.lowers), maxNames)
	}
}
