// Package identitytest makes real mesh identities for tests: a CA in a
// temporary directory and SVIDs issued by it the way a sidecar obtains them
// (key, CSR, IssueSVID, ParseSVID). Nothing here is a fake.
package identitytest

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/tally-mesh/tally/internal/identity"
)

// TrustDomain is the trust domain tests use unless they need another.
var TrustDomain = spiffeid.RequireTrustDomainFromString("mesh.local")

// NewCA returns a new CA for td, stored in a directory of t.TempDir().
func NewCA(t testing.TB, td spiffeid.TrustDomain) *identity.CA {
	t.Helper()
	ca, err := identity.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"), td)
	if err != nil {
		t.Fatalf("identitytest: creating CA: %v", err)
	}
	return ca
}

// NewSVID returns an SVID for service, issued by ca for ttl.
func NewSVID(t testing.TB, ca *identity.CA, service string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	id, err := identity.ServiceID(ca.TrustDomain, service)
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	key, err := identity.NewKey()
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	chain, err := ca.IssueSVID(csr, id, ttl)
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	svid, err := identity.ParseSVID(chain, key, ca.Bundle())
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	return svid
}

// NewSource returns a Source holding a one-hour SVID for service from ca and
// ca's bundle.
func NewSource(t testing.TB, ca *identity.CA, service string) *identity.Source {
	t.Helper()
	return identity.NewSource(NewSVID(t, ca, service, time.Hour), ca.Bundle())
}
