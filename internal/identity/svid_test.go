package identity

import (
	"crypto"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestServiceID(t *testing.T) {
	tests := []struct {
		name    string
		service string
		want    string // empty: want an error
	}{
		{name: "plain", service: "orders", want: "spiffe://mesh.local/svc/orders"},
		{name: "one letter", service: "a", want: "spiffe://mesh.local/svc/a"},
		{name: "hyphen", service: "order-api", want: "spiffe://mesh.local/svc/order-api"},
		{name: "leading digit", service: "1orders", want: "spiffe://mesh.local/svc/1orders"},
		{name: "63 characters", service: strings.Repeat("a", 63), want: "spiffe://mesh.local/svc/" + strings.Repeat("a", 63)},
		{name: "empty", service: ""},
		{name: "64 characters", service: strings.Repeat("a", 64)},
		{name: "upper case", service: "Orders"},
		{name: "leading hyphen", service: "-orders"},
		{name: "trailing hyphen", service: "orders-"},
		{name: "dot", service: "orders.v1"},
		{name: "slash", service: "orders/v1"},
		{name: "underscore", service: "order_api"},
		{name: "non-ascii", service: "bestellungen-ü"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ServiceID(testTD, tt.service)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ServiceID(%q) = %v, want an error", tt.service, id)
				}
				return
			}
			if err != nil {
				t.Fatalf("ServiceID(%q): %v", tt.service, err)
			}
			if got := id.String(); got != tt.want {
				t.Errorf("ServiceID(%q) = %q, want %q", tt.service, got, tt.want)
			}
			if got, ok := ServiceOf(id); !ok || got != tt.service {
				t.Errorf("ServiceOf(ServiceID(%q)) = %q, %v; want %q, true", tt.service, got, ok, tt.service)
			}
		})
	}
	if _, err := ServiceID(spiffeid.TrustDomain{}, "orders"); err == nil {
		t.Error("ServiceID(zero trust domain) succeeded, want an error")
	}
}

func TestServiceOf(t *testing.T) {
	tests := []struct {
		name   string
		id     spiffeid.ID
		want   string
		wantOK bool
	}{
		{name: "service", id: spiffeid.RequireFromString("spiffe://mesh.local/svc/orders"), want: "orders", wantOK: true},
		{name: "other trust domain", id: spiffeid.RequireFromString("spiffe://other.local/svc/orders"), want: "orders", wantOK: true},
		{name: "control", id: ControlID(testTD)},
		{name: "trust domain", id: testTD.ID()},
		{name: "nested", id: spiffeid.RequireFromString("spiffe://mesh.local/svc/orders/v1")},
		{name: "svc alone", id: spiffeid.RequireFromString("spiffe://mesh.local/svc")},
		{name: "other prefix", id: spiffeid.RequireFromString("spiffe://mesh.local/ns/default/sa/orders")},
		{name: "invalid name", id: spiffeid.RequireFromString("spiffe://mesh.local/svc/Orders")},
		{name: "zero", id: spiffeid.ID{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ServiceOf(tt.id)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ServiceOf(%v) = %q, %v; want %q, %v", tt.id, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestControlID(t *testing.T) {
	if got, want := ControlID(testTD).String(), "spiffe://mesh.local/control"; got != want {
		t.Errorf("ControlID = %q, want %q", got, want)
	}
	if got := ControlID(spiffeid.TrustDomain{}); !got.IsZero() {
		t.Errorf("ControlID(zero) = %v, want the zero ID", got)
	}
}

func TestParseSVID(t *testing.T) {
	ca := newTestCA(t, testTD)
	other := newTestCA(t, testTD)
	id := spiffeid.RequireFromString("spiffe://mesh.local/svc/orders")
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.IssueSVID(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ParseSVID(chain, key, ca.Bundle())
	if err != nil {
		t.Fatalf("ParseSVID: %v", err)
	}
	if svid.ID != id || len(svid.Certificates) != 1 || svid.PrivateKey != key {
		t.Errorf("ParseSVID = {%v, %d certs}, want {%v, 1 cert} with the key", svid.ID, len(svid.Certificates), id)
	}
	// The result passes go-spiffe's own checks of an SVID.
	certs, keyDER, err := svid.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.ParseRaw(certs, keyDER); err != nil {
		t.Errorf("x509svid.ParseRaw of the result: %v", err)
	}

	otherKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	control, err := ca.ServerCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		chain   [][]byte
		key     crypto.Signer
		bundle  *x509bundle.Bundle
		wantErr string
	}{
		{name: "other key", chain: chain, key: otherKey, bundle: ca.Bundle(), wantErr: "does not match the private key"},
		{name: "other CA's bundle", chain: chain, key: key, bundle: other.Bundle(), wantErr: "could not verify leaf certificate"},
		{name: "other trust domain's bundle", chain: chain, key: key, bundle: x509bundle.FromX509Authorities(otherTD, []*x509.Certificate{ca.Cert}), wantErr: "could not get X509 bundle"},
		{name: "empty chain", chain: nil, key: key, bundle: ca.Bundle(), wantErr: "empty chain"},
		{name: "garbage", chain: [][]byte{[]byte("garbage")}, key: key, bundle: ca.Bundle(), wantErr: "certificate 0"},
		{name: "CA as leaf", chain: [][]byte{ca.Cert.Raw}, key: ca.Key, bundle: ca.Bundle(), wantErr: "CA flag"},
		{name: "no bundle", chain: chain, key: key, wantErr: "no trust bundle"},
		{name: "no key", chain: chain, bundle: ca.Bundle(), wantErr: "no private key"},
		{name: "control cert with another key", chain: control.Certificate, key: key, bundle: ca.Bundle(), wantErr: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSVID(tt.chain, tt.key, tt.bundle)
			if err == nil {
				t.Fatalf("ParseSVID = %v, want an error", got.ID)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name      string
		notBefore time.Time
		notAfter  time.Time
		want      time.Time
	}{
		{name: "three hours", notBefore: t0, notAfter: t0.Add(3 * time.Hour), want: t0.Add(2 * time.Hour)},
		{name: "one hour and a minute of backdating", notBefore: t0.Add(-time.Minute), notAfter: t0.Add(time.Hour), want: t0.Add(-time.Minute).Add(40*time.Minute + 40*time.Second)},
		{name: "ten years", notBefore: t0, notAfter: t0.Add(3 * 87600 * time.Hour), want: t0.Add(2 * 87600 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svid := &x509svid.SVID{Certificates: []*x509.Certificate{{NotBefore: tt.notBefore, NotAfter: tt.notAfter}}}
			if got := RenewAt(svid); !got.Equal(tt.want) {
				t.Errorf("RenewAt = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSource(t *testing.T) {
	ca := newTestCA(t, testTD)
	a := newTestSVID(t, ca, "orders", time.Hour)
	b := newTestSVID(t, ca, "orders", time.Hour)

	s := NewSource(nil, ca.Bundle())
	if got, err := s.GetX509SVID(); !errors.Is(err, ErrNoSVID) {
		t.Errorf("GetX509SVID on an empty Source = %v, %v; want ErrNoSVID", got, err)
	}
	if s.SVID() != nil {
		t.Error("SVID() on an empty Source is not nil")
	}
	s.Update(a)
	if got, err := s.GetX509SVID(); err != nil || got != a {
		t.Errorf("GetX509SVID = %v, %v; want the first SVID", got, err)
	}
	s.Update(b)
	if got := s.SVID(); got != b {
		t.Error("SVID() after Update is not the new SVID")
	}

	if got, err := s.GetX509BundleForTrustDomain(testTD); err != nil || got != s.Bundle() {
		t.Errorf("GetX509BundleForTrustDomain(%v) = %v, %v; want the bundle", testTD, got, err)
	}
	if _, err := s.GetX509BundleForTrustDomain(otherTD); err == nil {
		t.Errorf("GetX509BundleForTrustDomain(%v) succeeded, want an error", otherTD)
	}
	if _, err := NewSource(a, nil).GetX509BundleForTrustDomain(testTD); err == nil {
		t.Error("GetX509BundleForTrustDomain without a bundle succeeded, want an error")
	}
}

// TestSourceConcurrent gives the race detector readers and a writer.
func TestSourceConcurrent(t *testing.T) {
	ca := newTestCA(t, testTD)
	svids := []*x509svid.SVID{newTestSVID(t, ca, "orders", time.Hour), newTestSVID(t, ca, "orders", time.Hour)}
	s := NewSource(svids[0], ca.Bundle())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				got, err := s.GetX509SVID()
				if err != nil || (got != svids[0] && got != svids[1]) {
					t.Errorf("GetX509SVID = %v, %v; want one of the SVIDs", got, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 1000 {
			s.Update(svids[i%2])
		}
	})
	wg.Wait()
}
