package identitytest

import (
	"testing"

	"github.com/tally-mesh/tally/internal/identity"
)

func TestNewSource(t *testing.T) {
	ca := NewCA(t, TrustDomain)
	s := NewSource(t, ca, "orders")
	svid, err := s.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	want, err := identity.ServiceID(TrustDomain, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != want {
		t.Errorf("SVID ID = %v, want %v", svid.ID, want)
	}
	if _, err := s.GetX509BundleForTrustDomain(TrustDomain); err != nil {
		t.Errorf("bundle: %v", err)
	}
}
