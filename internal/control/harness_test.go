package control_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
)

var td = spiffeid.RequireTrustDomainFromString("mesh.local")

// plane is a control plane running for one test.
type plane struct {
	srv   *control.Server
	dir   string
	reg   *prometheus.Registry
	url   string // http://127.0.0.1:port
	token identity.Token
	admin string
	stop  func() error // cancels Run and returns its error
}

// startPlane runs a control plane on 127.0.0.1:0 in dir (a new temporary
// directory if empty) until the test ends.
func startPlane(t *testing.T, dir string) *plane {
	t.Helper()
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "data")
	}
	reg := prometheus.NewRegistry()
	srv, err := control.New(control.Config{
		DataDir:  dir,
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
		Registry: reg,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, "the control plane to be ready", func() (bool, error) {
		select {
		case err := <-done:
			stopped = true
			return false, fmt.Errorf("Run returned early: %v", err)
		default:
		}
		return srv.Ready(), nil
	})
	p := &plane{srv: srv, dir: dir, reg: reg, stop: stop}
	b, err := os.ReadFile(filepath.Join(dir, control.HTTPAddrFile))
	if err != nil {
		t.Fatal(err)
	}
	p.url = "http://" + strings.TrimSpace(string(b))
	if got, want := strings.TrimSpace(string(b)), srv.HTTPAddr(); got != want {
		t.Errorf("http-addr file = %q, HTTPAddr() = %q", got, want)
	}
	b, err = os.ReadFile(filepath.Join(dir, control.JoinTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if p.token, err = identity.ParseToken(string(b)); err != nil {
		t.Fatalf("join token file: %v", err)
	}
	b, err = os.ReadFile(filepath.Join(dir, control.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	p.admin = strings.TrimSpace(string(b))
	return p
}

// waitFor polls cond until it is true, fails, or 10 s pass.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dial returns a Mesh client over TLS config creds to the plane's gRPC
// address (from the join token, as a sidecar would).
func (p *plane) dial(t *testing.T, creds credentials.TransportCredentials) tallyv1.MeshClient {
	t.Helper()
	cc, err := grpc.NewClient(p.token.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return tallyv1.NewMeshClient(cc)
}

// joinClient is a client that has no SVID yet: it trusts the control plane by
// the token's CA fingerprint.
func (p *plane) joinClient(t *testing.T) tallyv1.MeshClient {
	return p.dial(t, credentials.NewTLS(identity.JoinClientTLS(p.token.CAFingerprint)))
}

// sidecar is a joined workload identity.
type sidecar struct {
	service string
	svid    *x509svid.SVID
	key     crypto.Signer
	bundle  *x509bundle.Bundle
	mesh    tallyv1.MeshClient // dialed with the SVID
}

func csrFor(t *testing.T, service string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.ServiceID(td, service)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// join joins service with the default join token and dials the plane with
// the SVID it got.
func (p *plane) join(t *testing.T, service string) *sidecar {
	t.Helper()
	key, csr := csrFor(t, service)
	resp, err := p.joinClient(t).Join(t.Context(), &tallyv1.JoinRequest{
		TokenId: p.token.ID, TokenSecret: p.token.Secret, Service: service, CsrDer: csr,
	})
	if err != nil {
		t.Fatalf("Join(%s): %v", service, err)
	}
	return p.sidecarFrom(t, service, key, resp)
}

func (p *plane) sidecarFrom(t *testing.T, service string, key crypto.Signer, resp *tallyv1.SVIDResponse) *sidecar {
	t.Helper()
	var cas []*x509.Certificate
	for _, der := range resp.GetBundleDer() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, c)
	}
	bundle := x509bundle.FromX509Authorities(td, cas)
	svid, err := identity.ParseSVID(resp.GetChainDer(), key, bundle)
	if err != nil {
		t.Fatalf("ParseSVID: %v", err)
	}
	sc := &sidecar{service: service, svid: svid, key: key, bundle: bundle}
	sc.mesh = p.dial(t, credentials.NewTLS(identity.MeshClientTLS(identity.NewSource(svid, bundle), td)))
	return sc
}

// do sends an HTTP request to the plane and returns status and body.
func (p *plane) do(t *testing.T, method, path, bearer, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, p.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON GETs path, wants 200 and decodes the body into v.
func (p *plane) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, b := p.do(t, "GET", path, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d %s, want 200", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: decoding %s: %v", path, b, err)
	}
}

// metric returns the value of the counter or gauge name with labels (a
// subset match), 0 if absent.
func (p *plane) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// hexID returns a 32-hex-character id from n.
func hexID(n int) string { return fmt.Sprintf("%032x", n) }

// report sends one batch on a Report stream and waits for its ack.
func report(t *testing.T, stream grpc.BidiStreamingClient[tallyv1.RecordBatch, tallyv1.BatchAck], b *tallyv1.RecordBatch) {
	t.Helper()
	if err := stream.Send(b); err != nil {
		t.Fatalf("Send batch %d: %v", b.GetBatchSeq(), err)
	}
	ack, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv ack of batch %d: %v", b.GetBatchSeq(), err)
	}
	if ack.GetBatchSeq() != b.GetBatchSeq() {
		t.Fatalf("ack for batch %d, want %d", ack.GetBatchSeq(), b.GetBatchSeq())
	}
}
