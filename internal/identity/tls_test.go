package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// handshakeTimeout bounds a handshake that a bug would leave hanging.
const handshakeTimeout = 10 * time.Second

// tlsPair is both ends of one TLS connection over loopback TCP after both
// handshakes returned.
type tlsPair struct {
	client, server       *tls.Conn
	clientErr, serverErr error
}

func newListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connect dials ln, accepts the connection, runs both handshakes concurrently
// and waits for both.
func connect(t *testing.T, ln net.Listener, serverCfg, clientCfg *tls.Config) tlsPair {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), handshakeTimeout)
	defer cancel()
	type result struct {
		conn *tls.Conn
		err  error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- result{err: err}
			return
		}
		tc := tls.Server(c, serverCfg)
		accepted <- result{conn: tc, err: tc.HandshakeContext(ctx)}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Client(raw, clientCfg)
	clientErr := client.HandshakeContext(ctx)
	srv := <-accepted
	t.Cleanup(func() {
		client.Close()
		if srv.conn != nil {
			srv.conn.Close()
		}
	})
	if srv.conn == nil {
		t.Fatalf("accept: %v", srv.err)
	}
	return tlsPair{client: client, server: srv.conn, clientErr: clientErr, serverErr: srv.err}
}

// refusedByServer reports whether the server failed the handshake and the
// client learned it: in TLS 1.3 the client's handshake ends before the server
// has checked the client certificate, so the refusal reaches the client as an
// alert on its first read.
func (p tlsPair) refusedByServer(t *testing.T) bool {
	t.Helper()
	if p.serverErr == nil {
		return false
	}
	if p.clientErr != nil {
		return true
	}
	p.client.SetReadDeadline(time.Now().Add(handshakeTimeout))
	_, err := p.client.Read(make([]byte, 1))
	return err != nil
}

// echo serves p.server as an echo server until the client closes; the caller
// waits on wg.
func echo(wg *sync.WaitGroup, p tlsPair) {
	wg.Go(func() { io.Copy(p.server, p.server) })
}

func ping(t *testing.T, c *tls.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// tlsCertOf turns an SVID into what a raw tls.Config presents.
func tlsCertOf(svid *x509svid.SVID) tls.Certificate {
	c := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// signLeaf has ca sign tmpl for a new key, bypassing IssueSVID's checks, to
// build certificates IssueSVID never would.
func signLeaf(t *testing.T, ca *CA, tmpl *x509.Certificate) ([]byte, crypto.Signer) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(1)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func serviceID(t *testing.T, td spiffeid.TrustDomain, service string) spiffeid.ID {
	t.Helper()
	id, err := ServiceID(td, service)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMeshTLS(t *testing.T) {
	ca := newTestCA(t, testTD)
	server := NewSource(newTestSVID(t, ca, "orders", time.Hour), ca.Bundle())
	client := NewSource(newTestSVID(t, ca, "frontend", time.Hour), ca.Bundle())
	ln := newListener(t)

	p := connect(t, ln, MeshServerTLS(server, testTD), MeshClientTLS(client, testTD))
	if p.clientErr != nil || p.serverErr != nil {
		t.Fatalf("handshake: client %v, server %v", p.clientErr, p.serverErr)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer p.client.Close()
	echo(&wg, p)
	ping(t, p.client, "hello")

	cs, ss := p.client.ConnectionState(), p.server.ConnectionState()
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("version = %x, want TLS 1.3", cs.Version)
	}
	if got, err := PeerID(&cs); err != nil || got != serviceID(t, testTD, "orders") {
		t.Errorf("client's PeerID = %v, %v; want the orders ID", got, err)
	}
	if got, err := PeerID(&ss); err != nil || got != serviceID(t, testTD, "frontend") {
		t.Errorf("server's PeerID = %v, %v; want the frontend ID", got, err)
	}
}

func TestMeshServerTLSRefuses(t *testing.T) {
	ca := newTestCA(t, testTD)
	otherCA := newTestCA(t, testTD)
	otherTDCA := newTestCA(t, otherTD)
	server := NewSource(newTestSVID(t, ca, "orders", time.Hour), ca.Bundle())
	good := NewSource(newTestSVID(t, ca, "frontend", time.Hour), ca.Bundle())

	expiredDER, expiredKey := signLeaf(t, ca, &x509.Certificate{
		NotBefore:   time.Now().Add(-2 * time.Hour),
		NotAfter:    time.Now().Add(-time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{serviceID(t, testTD, "frontend").URL()},
	})
	noIDDER, noIDKey := signLeaf(t, ca, &x509.Certificate{
		NotBefore:   time.Now().Add(-time.Minute),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"frontend"},
	})
	withCert := func(c tls.Certificate) *tls.Config {
		// Skips the server check: only the server's refusal is under test.
		return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{c}}
	}
	tls12 := MeshClientTLS(good, testTD)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	tests := []struct {
		name    string
		client  *tls.Config
		wantErr string // in the server's error
	}{
		{name: "no client certificate", client: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}, wantErr: "didn't provide a certificate"},
		{name: "SVID from another CA", client: withCert(tlsCertOf(newTestSVID(t, otherCA, "frontend", time.Hour))), wantErr: "could not verify leaf certificate"},
		{name: "SVID from another trust domain", client: withCert(tlsCertOf(newTestSVID(t, otherTDCA, "frontend", time.Hour))), wantErr: "no X.509 bundle found"},
		{name: "expired SVID from the mesh CA", client: withCert(tls.Certificate{Certificate: [][]byte{expiredDER}, PrivateKey: expiredKey}), wantErr: "expired"},
		{name: "mesh CA certificate without SPIFFE ID", client: withCert(tls.Certificate{Certificate: [][]byte{noIDDER}, PrivateKey: noIDKey}), wantErr: "no URI SAN"},
		{name: "TLS 1.2", client: tls12, wantErr: "unsupported versions"},
	}
	ln := newListener(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := connect(t, ln, MeshServerTLS(server, testTD), tt.client)
			if !p.refusedByServer(t) {
				t.Fatalf("server accepted the client (client error %v)", p.clientErr)
			}
			if !strings.Contains(p.serverErr.Error(), tt.wantErr) {
				t.Errorf("server error = %q, want it to contain %q", p.serverErr, tt.wantErr)
			}
		})
	}

	// The listener still serves a good client afterwards.
	p := connect(t, ln, MeshServerTLS(server, testTD), MeshClientTLS(good, testTD))
	if p.clientErr != nil || p.serverErr != nil {
		t.Fatalf("good client after refusals: client %v, server %v", p.clientErr, p.serverErr)
	}
}

func TestMeshClientTLSRefuses(t *testing.T) {
	ca := newTestCA(t, testTD)
	otherCA := newTestCA(t, testTD)
	otherTDCA := newTestCA(t, otherTD)
	client := NewSource(newTestSVID(t, ca, "frontend", time.Hour), ca.Bundle())
	serve := func(c tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c}}
	}
	otherControl, err := otherCA.ServerCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		server  *tls.Config
		wantErr string
	}{
		{name: "SVID from another CA", server: serve(tlsCertOf(newTestSVID(t, otherCA, "orders", time.Hour))), wantErr: "could not verify leaf certificate"},
		{name: "SVID from another trust domain", server: serve(tlsCertOf(newTestSVID(t, otherTDCA, "orders", time.Hour))), wantErr: "could not get X509 bundle"},
		{name: "control certificate of another CA", server: serve(otherControl), wantErr: "could not verify leaf certificate"},
	}
	ln := newListener(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := connect(t, ln, tt.server, MeshClientTLS(client, testTD))
			if p.clientErr == nil {
				t.Fatal("client accepted the server")
			}
			if !strings.Contains(p.clientErr.Error(), tt.wantErr) {
				t.Errorf("client error = %q, want it to contain %q", p.clientErr, tt.wantErr)
			}
		})
	}
}

// TestSourceUpdate rotates both sides' SVIDs between two connections: the
// next handshake presents the new certificates, the established connection
// keeps working.
func TestSourceUpdate(t *testing.T) {
	ca := newTestCA(t, testTD)
	server := NewSource(newTestSVID(t, ca, "orders", time.Hour), ca.Bundle())
	client := NewSource(newTestSVID(t, ca, "frontend", time.Hour), ca.Bundle())
	serverCfg, clientCfg := MeshServerTLS(server, testTD), MeshClientTLS(client, testTD)
	ln := newListener(t)
	var wg sync.WaitGroup
	defer wg.Wait()

	first := connect(t, ln, serverCfg, clientCfg)
	if first.clientErr != nil || first.serverErr != nil {
		t.Fatalf("first handshake: client %v, server %v", first.clientErr, first.serverErr)
	}
	defer first.client.Close()
	echo(&wg, first)
	ping(t, first.client, "before")

	oldServer, oldClient := server.SVID(), client.SVID()
	server.Update(newTestSVID(t, ca, "orders", time.Hour))
	client.Update(newTestSVID(t, ca, "frontend", time.Hour))

	second := connect(t, ln, serverCfg, clientCfg)
	if second.clientErr != nil || second.serverErr != nil {
		t.Fatalf("second handshake: client %v, server %v", second.clientErr, second.serverErr)
	}
	defer second.client.Close()
	echo(&wg, second)
	ping(t, second.client, "new")

	leafSeen := func(cs tls.ConnectionState) []byte { return cs.PeerCertificates[0].Raw }
	tests := []struct {
		name string
		got  []byte
		want *x509svid.SVID
	}{
		{name: "client sees new server SVID", got: leafSeen(second.client.ConnectionState()), want: server.SVID()},
		{name: "server sees new client SVID", got: leafSeen(second.server.ConnectionState()), want: client.SVID()},
		{name: "old connection keeps old server SVID", got: leafSeen(first.client.ConnectionState()), want: oldServer},
		{name: "old connection keeps old client SVID", got: leafSeen(first.server.ConnectionState()), want: oldClient},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want.Certificates[0].Raw) {
			t.Errorf("%s: serial %x presented, want %x", tt.name, parseSerial(t, tt.got), tt.want.Certificates[0].SerialNumber)
		}
	}

	ping(t, first.client, "still working after the update")
}

func parseSerial(t *testing.T, der []byte) *big.Int {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

func TestJoinClientTLS(t *testing.T) {
	ca := newTestCA(t, testTD)
	control, err := ca.ServerCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln := newListener(t)
	p := connect(t, ln, ControlServerTLS(control, ca.Cert), JoinClientTLS(ca.Fingerprint()))
	if p.clientErr != nil || p.serverErr != nil {
		t.Fatalf("handshake: client %v, server %v", p.clientErr, p.serverErr)
	}
	cs, ss := p.client.ConnectionState(), p.server.ConnectionState()
	if got, err := PeerID(&cs); err != nil || got != ControlID(testTD) {
		t.Errorf("PeerID = %v, %v; want %v", got, err, ControlID(testTD))
	}
	pinned, err := PinnedCA(&cs, ca.Fingerprint())
	if err != nil || !pinned.Equal(ca.Cert) {
		t.Fatalf("PinnedCA = %v, %v; want the CA", pinned, err)
	}
	if td, err := TrustDomainOf(pinned); err != nil || td != testTD {
		t.Errorf("TrustDomainOf(pinned) = %v, %v; want %v", td, err, testTD)
	}
	if n := len(ss.PeerCertificates); n != 0 {
		t.Errorf("joining client presented %d certificates, want none", n)
	}
	if _, err := PeerID(&ss); err == nil {
		t.Error("server's PeerID of a joining client succeeded, want an error")
	}
}

func TestJoinClientTLSRefuses(t *testing.T) {
	ca := newTestCA(t, testTD)
	otherCA := newTestCA(t, testTD)
	otherControl, err := otherCA.ServerCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	control, err := ca.ServerCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid := newTestSVID(t, ca, "orders", time.Hour)
	foreignControlDER, foreignControlKey := signLeaf(t, ca, &x509.Certificate{
		NotBefore:   time.Now().Add(-time.Minute),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{ControlID(otherTD).URL()},
	})

	tests := []struct {
		name    string
		cert    tls.Certificate
		fp      [32]byte
		wantErr string
	}{
		{
			name:    "control certificate of another CA",
			cert:    otherControl,
			fp:      ca.Fingerprint(),
			wantErr: "no CA certificate with the token's fingerprint",
		},
		{
			name:    "wrong fingerprint",
			cert:    control,
			fp:      otherCA.Fingerprint(),
			wantErr: "no CA certificate with the token's fingerprint",
		},
		{
			name:    "chain without the CA",
			cert:    tls.Certificate{Certificate: control.Certificate[:1], PrivateKey: control.PrivateKey},
			fp:      ca.Fingerprint(),
			wantErr: "no CA certificate with the token's fingerprint",
		},
		{
			name:    "the CA as the server certificate",
			cert:    tls.Certificate{Certificate: [][]byte{ca.Cert.Raw}, PrivateKey: ca.Key},
			fp:      ca.Fingerprint(),
			wantErr: "no CA certificate with the token's fingerprint",
		},
		{
			name:    "another CA's leaf with the right CA appended",
			cert:    tls.Certificate{Certificate: [][]byte{otherControl.Certificate[0], ca.Cert.Raw}, PrivateKey: otherControl.PrivateKey},
			fp:      ca.Fingerprint(),
			wantErr: "unknown authority",
		},
		{
			name:    "service SVID instead of the control certificate",
			cert:    tls.Certificate{Certificate: [][]byte{svid.Certificates[0].Raw, ca.Cert.Raw}, PrivateKey: svid.PrivateKey},
			fp:      ca.Fingerprint(),
			wantErr: "not the control plane",
		},
		{
			name:    "control ID of another trust domain",
			cert:    tls.Certificate{Certificate: [][]byte{foreignControlDER, ca.Cert.Raw}, PrivateKey: foreignControlKey},
			fp:      ca.Fingerprint(),
			wantErr: `CA is for trust domain "mesh.local"`,
		},
	}
	ln := newListener(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tt.cert}}
			p := connect(t, ln, server, JoinClientTLS(tt.fp))
			if p.clientErr == nil {
				t.Fatal("joining client accepted the server")
			}
			if !strings.Contains(p.clientErr.Error(), tt.wantErr) {
				t.Errorf("client error = %q, want it to contain %q", p.clientErr, tt.wantErr)
			}
		})
	}
}

func TestControlServerTLS(t *testing.T) {
	ca := newTestCA(t, testTD)
	otherCA := newTestCA(t, testTD)
	control, err := ca.ServerCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := ControlServerTLS(control, ca.Cert)
	ln := newListener(t)

	t.Run("sidecar with SVID", func(t *testing.T) {
		client := NewSource(newTestSVID(t, ca, "frontend", time.Hour), ca.Bundle())
		p := connect(t, ln, serverCfg, MeshClientTLS(client, testTD))
		if p.clientErr != nil || p.serverErr != nil {
			t.Fatalf("handshake: client %v, server %v", p.clientErr, p.serverErr)
		}
		cs, ss := p.client.ConnectionState(), p.server.ConnectionState()
		if got, err := PeerID(&cs); err != nil || got != ControlID(testTD) {
			t.Errorf("sidecar's PeerID = %v, %v; want %v", got, err, ControlID(testTD))
		}
		if len(ss.VerifiedChains) == 0 {
			t.Error("control plane did not verify the client certificate")
		}
		if got, err := PeerID(&ss); err != nil || got != serviceID(t, testTD, "frontend") {
			t.Errorf("control plane's PeerID = %v, %v; want the frontend ID", got, err)
		}
	})

	t.Run("SVID from another CA is refused", func(t *testing.T) {
		bad := tlsCertOf(newTestSVID(t, otherCA, "frontend", time.Hour))
		p := connect(t, ln, serverCfg, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{bad}})
		if !p.refusedByServer(t) {
			t.Fatal("control plane accepted a client certificate of another CA")
		}
	})

	t.Run("TLS 1.2 is refused", func(t *testing.T) {
		p := connect(t, ln, serverCfg, &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true})
		if p.serverErr == nil {
			t.Fatal("control plane accepted TLS 1.2")
		}
	})
}

func TestPeerIDErrors(t *testing.T) {
	tests := []struct {
		name string
		cs   *tls.ConnectionState
	}{
		{name: "nil", cs: nil},
		{name: "handshake not complete", cs: &tls.ConnectionState{}},
		{name: "no peer certificate", cs: &tls.ConnectionState{HandshakeComplete: true}},
		{name: "no URI SAN", cs: &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, err := PeerID(tt.cs); err == nil {
				t.Errorf("PeerID = %v, want an error", id)
			}
		})
	}
}

func TestTLSConfigsAreTLS13(t *testing.T) {
	ca := newTestCA(t, testTD)
	control, err := ca.ServerCert(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSource(newTestSVID(t, ca, "orders", time.Hour), ca.Bundle())
	for name, c := range map[string]*tls.Config{
		"MeshServerTLS":    MeshServerTLS(s, testTD),
		"MeshClientTLS":    MeshClientTLS(s, testTD),
		"JoinClientTLS":    JoinClientTLS(ca.Fingerprint()),
		"ControlServerTLS": ControlServerTLS(control, ca.Cert),
	} {
		if c.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s: MinVersion = %x, want TLS 1.3", name, c.MinVersion)
		}
	}
}
