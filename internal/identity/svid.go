package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrNoSVID is returned by Source.GetX509SVID before the Source holds an SVID.
var ErrNoSVID = errors.New("identity: no X.509-SVID yet")

// NewKey returns a new ECDSA P-256 private key.
func NewKey() (crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating P-256 key: %w", err)
	}
	return key, nil
}

// NewCSR returns a DER certificate signing request for id (its only URI SAN)
// signed with key.
func NewCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	if id.IsZero() {
		return nil, errors.New("creating CSR: empty SPIFFE ID")
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR for %s: %w", id, err)
	}
	return der, nil
}

// ParseSVID builds an X.509-SVID from a DER chain (leaf first, as IssueSVID
// returns it) and the private key of the CSR. It checks that the leaf is a
// valid X.509-SVID, that it matches key, and that it chains to bundle now.
func ParseSVID(chainDER [][]byte, key crypto.Signer, bundle *x509bundle.Bundle) (*x509svid.SVID, error) {
	switch {
	case len(chainDER) == 0:
		return nil, errors.New("parsing SVID: empty chain")
	case key == nil:
		return nil, errors.New("parsing SVID: no private key")
	case bundle == nil:
		return nil, errors.New("parsing SVID: no trust bundle")
	}
	certs := make([]*x509.Certificate, 0, len(chainDER))
	for i, der := range chainDER {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parsing SVID: certificate %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	id, _, err := x509svid.Verify(certs, bundle)
	if err != nil {
		return nil, fmt.Errorf("parsing SVID: %w", err)
	}
	switch {
	case id.Path() == "":
		return nil, fmt.Errorf("parsing SVID %s: SPIFFE ID has no path", id)
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return nil, fmt.Errorf("parsing SVID %s: leaf lacks the digitalSignature key usage", id)
	case !publicKeysEqual(key.Public(), leaf.PublicKey):
		return nil, fmt.Errorf("parsing SVID %s: leaf certificate does not match the private key", id)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// RenewAt returns when svid should be renewed: NotBefore plus 2/3 of the
// leaf's lifetime. svid must hold its leaf certificate.
func RenewAt(svid *x509svid.SVID) time.Time {
	leaf := svid.Certificates[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}

// Source holds a workload's current X.509-SVID and its trust bundle, for the
// TLS configurations of this package, which read it on every handshake.
//
// # Concurrency
//
// A Source is safe for concurrent use. Update swaps the SVID atomically:
// handshakes that start afterwards present the new SVID, while connections
// already established are untouched. An SVID must not be modified once given
// to a Source.
type Source struct {
	svid   atomic.Pointer[x509svid.SVID]
	bundle *x509bundle.Bundle // x509bundle.Bundle is itself safe for concurrent use
}

var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// NewSource returns a Source holding svid and bundle. svid may be nil until
// the workload has one; GetX509SVID then returns ErrNoSVID.
func NewSource(svid *x509svid.SVID, bundle *x509bundle.Bundle) *Source {
	s := &Source{bundle: bundle}
	s.svid.Store(svid)
	return s
}

// Update makes svid the SVID of every later handshake.
func (s *Source) Update(svid *x509svid.SVID) { s.svid.Store(svid) }

// SVID returns the current SVID, nil if there is none.
func (s *Source) SVID() *x509svid.SVID { return s.svid.Load() }

// Bundle returns the trust bundle.
func (s *Source) Bundle() *x509bundle.Bundle { return s.bundle }

// GetX509SVID returns the current SVID, or ErrNoSVID. It implements
// x509svid.Source.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	if svid := s.svid.Load(); svid != nil {
		return svid, nil
	}
	return nil, ErrNoSVID
}

// GetX509BundleForTrustDomain returns the bundle if it is for td, an error
// otherwise. It implements x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if s.bundle == nil {
		return nil, fmt.Errorf("identity: no trust bundle for %q", td)
	}
	return s.bundle.GetX509BundleForTrustDomain(td)
}

// ParseBundle builds the trust bundle of td from DER certificates (as the
// control plane sends them in an SVID response).
func ParseBundle(td spiffeid.TrustDomain, ders [][]byte) (*x509bundle.Bundle, error) {
	anchors := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("trust bundle certificate %d: %w", i, err)
		}
		anchors = append(anchors, c)
	}
	return x509bundle.FromX509Authorities(td, anchors), nil
}
