package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/identity/identitytest"
)

func TestMisroutedRequestNotDelivered(t *testing.T) {
	var paymentsHits atomic.Int64
	payments := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paymentsHits.Add(1)
		w.Write([]byte("payments"))
	}))
	orders := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("orders")) }))
	m := newMesh(t)
	pay := m.sidecar("payments", sidecarOpts{app: payments, inbound: true})
	// A stale endpoint: "orders" is registered at the address where
	// payments' sidecar answers (a reused address).
	m.sidecar("orders", sidecarOpts{app: orders, inbound: true, advertise: pay.inbound})
	caller := m.sidecar("frontend", sidecarOpts{outbound: true})
	m.waitEndpoints("orders", 1)

	resp, body, err := get(outboundClient(), caller.outbound, "orders", "/pay")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Tally-Omission") != "misrouted" {
		t.Fatalf("got %d %q (Tally-Omission %q), want 502 misrouted", resp.StatusCode, body, resp.Header.Get("Tally-Omission"))
	}
	if n := paymentsHits.Load(); n != 0 {
		t.Fatalf("payments app received %d requests meant for orders", n)
	}
	ev := m.waitOmission("misrouted", func(ev omissionEvent) bool { return ev.Destination == "orders" })
	if !strings.Contains(ev.Detail, "svc/payments") {
		t.Errorf("detail %q does not name who answered", ev.Detail)
	}
}

func TestHandshakeRefusedWithoutMeshCertificate(t *testing.T) {
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) }))
	m := newMesh(t)
	callee := m.sidecar("orders", sidecarOpts{app: app, inbound: true})

	otherCA := identitytest.NewCA(t, spiffeid.RequireTrustDomainFromString("mesh.local"))
	foreign := identitytest.NewSource(t, otherCA, "frontend")
	for _, tc := range []struct {
		name   string
		reason string
		cfg    *tls.Config
	}{
		{name: "no client certificate", reason: "no_client_certificate", cfg: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}},
		{name: "certificate from another CA", reason: "untrusted_certificate", cfg: func() *tls.Config {
			c := identity.MeshClientTLS(foreign, spiffeid.RequireTrustDomainFromString("mesh.local"))
			c.InsecureSkipVerify = true
			c.VerifyPeerCertificate = nil
			c.NextProtos = []string{"h2"}
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc.cfg, ForceAttemptHTTP2: true}}
			resp, err := c.Get("https://" + callee.inbound + "/")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("request without a mesh certificate got %d %q; want the handshake refused", resp.StatusCode, b)
			}
			m.waitOmission("unauthorized", func(ev omissionEvent) bool {
				return ev.Destination == "orders" && strings.Contains(ev.Detail, "refused ("+tc.reason+")")
			})
		})
	}
}
