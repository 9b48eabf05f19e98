package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/wire"
)

// fakePeer is a misbehaving sidecar with a real mesh identity: it joins
// with the join token like any sidecar and registers as an endpoint, then
// breaks the protocol in a chosen way.
type fakePeer struct {
	td     spiffeid.TrustDomain
	source *identity.Source
	addr   string
}

func joinFake(t *testing.T, m *mesh, service string, h http.Handler) *fakePeer {
	t.Helper()
	raw, err := os.ReadFile(m.token)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := identity.ParseToken(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("mesh.local")
	id, _ := identity.ServiceID(td, service)
	key, _ := identity.NewKey()
	csr, _ := identity.NewCSR(key, id)
	jc, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(identity.JoinClientTLS(tok.CAFingerprint))))
	if err != nil {
		t.Fatal(err)
	}
	defer jc.Close()
	resp, err := tallyv1.NewMeshClient(jc).Join(ctxT(t, 10*time.Second), &tallyv1.JoinRequest{
		TokenId: tok.ID, TokenSecret: tok.Secret, Service: service, CsrDer: csr})
	if err != nil {
		t.Fatalf("fake peer join: %v", err)
	}
	bundle, err := identity.ParseBundle(td, resp.BundleDer)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := identity.ParseSVID(resp.ChainDer, key, bundle)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePeer{td: td, source: identity.NewSource(svid, bundle)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	cfg := identity.MeshServerTLS(f.source, td)
	cfg.NextProtos = []string{"h2"}
	srv := &http.Server{Handler: h}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })

	mc, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(identity.MeshClientTLS(f.source, td))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := tallyv1.NewMeshClient(mc).Watch(ctx, &tallyv1.WatchRequest{InstanceId: wire.NewID(), AdvertiseAddr: f.addr})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	return f
}

// answerWith writes a response body followed by the given accounting
// trailers; a nil value is computed honestly except for what mangle changes.
func answerWith(body []byte, mangle func(h http.Header)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "Content-Digest, Tally-Length, Tally-Request-Digest, Tally-Receipt")
		w.Header().Set(wire.HeaderMessageID, r.Header.Get(wire.HeaderMessageID))
		w.WriteHeader(200)
		w.Write(body)
		h := w.Header()
		h.Set(wire.HeaderContentDigest, contentDigest(body))
		h.Set(wire.HeaderLength, strconv.Itoa(len(body)))
		h.Set(wire.HeaderRequestDigest, contentDigest(reqBody))
		// No real receipt key: a peer that cannot produce the MAC.
		h.Set(wire.HeaderReceipt, "v1:"+strings.Repeat("A", 43))
		mangle(h)
	})
}

func TestMisbehavingPeerSidecar(t *testing.T) {
	body := []byte(`{"items":[1,2,3],"count":3}`)
	for _, tc := range []struct {
		name   string
		mangle func(h http.Header)
		want   string
	}{
		{name: "forged receipt", mangle: func(http.Header) {}, want: "unconfirmed"},
		{name: "malformed receipt", mangle: func(h http.Header) { h.Set(wire.HeaderReceipt, "garbage") }, want: "unconfirmed"},
		{name: "bad response digest", mangle: func(h http.Header) {
			h.Set(wire.HeaderContentDigest, contentDigest([]byte("something else")))
		}, want: "digest_mismatch"},
		{name: "malformed digest", mangle: func(h http.Header) { h.Set(wire.HeaderContentDigest, "sha-256=:not base64!:") }, want: "digest_mismatch"},
		{name: "claims more bytes than sent", mangle: func(h http.Header) { h.Set(wire.HeaderLength, "999") }, want: "truncated"},
		{name: "request digest differs", mangle: func(h http.Header) {
			h.Set(wire.HeaderRequestDigest, contentDigest([]byte("another request")))
		}, want: "digest_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMesh(t)
			joinFake(t, m, "orders", answerWith(body, tc.mangle))
			caller := m.sidecar("frontend", sidecarOpts{outbound: true})
			m.waitEndpoints("orders", 1)
			resp, got, err := get(outboundClient(), caller.outbound, "orders", "/orders")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Tally-Omission") != tc.want {
				t.Fatalf("got %d %q (Tally-Omission %q); want 502 %s", resp.StatusCode, got, resp.Header.Get("Tally-Omission"), tc.want)
			}
			if bytes.Contains(got, body) {
				t.Fatalf("the unverified body reached the caller: %q", got)
			}
			m.waitOmission(tc.want, func(ev omissionEvent) bool { return ev.Source == "frontend" && ev.Destination == "orders" })
			if !strings.Contains(caller.out.String(), "kind="+tc.want) {
				t.Errorf("no log line naming the omission in the caller's log")
			}
		})
	}
}

func TestGarbageOnTCPFraming(t *testing.T) {
	t.Run("from a callee", func(t *testing.T) {
		m := newMesh(t)
		joinFake(t, m, "ledger", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.Write([]byte("\x09this is not a frame at all"))
			w.(http.Flusher).Flush()
			io.Copy(io.Discard, r.Body)
		}))
		up := freeAddr(t)
		caller := m.sidecar("frontend", sidecarOpts{upstreams: map[string]string{"ledger": up}})
		m.waitEndpoints("ledger", 1)
		c, err := net.Dial("tcp", up)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hello"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(c)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read ended with %v; want a reset", err)
		}
		m.waitOmission("", func(ev omissionEvent) bool { return ev.Destination == "ledger" && strings.Contains(ev.Detail, "frame") })
		if got := metric(t, caller.admin, "tally_proxy_bad_input_total", map[string]string{"what": "tcp_frame"}); got != 1 {
			t.Errorf("bad frame count: got %v, want 1", got)
		}
	})
	t.Run("from a caller", func(t *testing.T) {
		app := serveTCP(t, func(c *net.TCPConn) { io.Copy(c, c); c.Close() })
		m := newMesh(t)
		callee := m.sidecar("ledger", sidecarOpts{app: app, inbound: true})
		fake := joinFake(t, m, "frontend", http.NotFoundHandler())
		cfg := identity.MeshClientTLS(fake.source, fake.td)
		cfg.NextProtos = []string{"h2"}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
		req, _ := http.NewRequest("POST", "https://"+callee.inbound+"/", strings.NewReader("\x01\xff\xff\xff\xffgarbage"))
		req.Header.Set(wire.HeaderMessageID, wire.NewID())
		req.Header.Set(wire.HeaderSeq, "1")
		req.Header.Set(wire.HeaderDestination, "ledger")
		req.Header.Set(wire.HeaderProtocol, "tcp")
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		m.waitOmission("", func(ev omissionEvent) bool {
			return ev.Source == "frontend" && ev.Destination == "ledger" && strings.Contains(ev.Detail, "frame")
		})
		if got := metric(t, callee.admin, "tally_proxy_bad_input_total", map[string]string{"what": "tcp_frame"}); got != 1 {
			t.Errorf("bad frame count: got %v, want 1", got)
		}
		// The callee still serves.
		waitReady(t, "http://"+callee.admin+"/readyz", callee.proc)
	})
}
