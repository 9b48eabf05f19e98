package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MeshServerTLS returns the TLS 1.3 configuration of a sidecar's inbound
// listener. It presents s's current SVID on every handshake and requires a
// client X.509-SVID that chains to s's bundle and is a member of td; which
// member may call is the caller's decision (see PeerID).
//
// Session tickets are disabled: go-spiffe verifies the peer in
// VerifyPeerCertificate, which crypto/tls skips on resumed sessions, and a
// resumed session would also not present the SVID of the latest Update.
func MeshServerTLS(s *Source, td spiffeid.TrustDomain) *tls.Config {
	c := tlsconfig.MTLSServerConfig(s, s, tlsconfig.AuthorizeMemberOf(td))
	c.MinVersion = tls.VersionTLS13
	c.SessionTicketsDisabled = true
	return c
}

// MeshClientTLS returns the TLS 1.3 configuration for dialing another sidecar
// or the control plane with s's current SVID. It accepts a server whose
// X.509-SVID chains to s's bundle and is a member of td; the caller checks which
// ID answered (see PeerID). Do not set ClientSessionCache on it: a resumed
// session skips the SPIFFE verification.
func MeshClientTLS(s *Source, td spiffeid.TrustDomain) *tls.Config {
	c := tlsconfig.MTLSClientConfig(s, s, tlsconfig.AuthorizeMemberOf(td))
	c.MinVersion = tls.VersionTLS13
	return c
}

// PeerID returns the SPIFFE ID of the peer's leaf certificate (its single URI
// SAN). It trusts that the handshake verified that certificate, as every
// configuration of this package does; do not use it on connections of other
// configurations.
func PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	switch {
	case cs == nil || !cs.HandshakeComplete:
		return spiffeid.ID{}, errors.New("peer ID: handshake not complete")
	case len(cs.PeerCertificates) == 0:
		return spiffeid.ID{}, errors.New("peer ID: peer presented no certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("peer ID: %w", err)
	}
	return id, nil
}

// JoinClientTLS returns the TLS 1.3 configuration of a sidecar's first
// contact with the control plane, before it holds an SVID: it presents no
// client certificate and accepts the server only if the presented chain
// contains a CA certificate whose SHA-256 is fp (the join token's fingerprint),
// the leaf verifies against that CA for server authentication, and the leaf's
// SPIFFE ID is ControlID of the CA's trust domain (any trust domain if the CA
// names none), i.e. its path is "/control".
//
// Why InsecureSkipVerify with VerifyConnection: trust here comes from the
// fingerprint pinned in the token, not from a root store or a host name. The
// standard verification would need the CA in RootCAs before the handshake shows
// it, and would match the dialed address against DNS/IP SANs, which fails
// behind NAT or an --advertise address. InsecureSkipVerify turns that off only;
// VerifyConnection then does the whole check above, and unlike
// VerifyPeerCertificate it also runs on resumed sessions.
func JoinClientTLS(fp [32]byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // see the doc comment: VerifyConnection verifies
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyJoin(&cs, fp)
		},
	}
}

func verifyJoin(cs *tls.ConnectionState, fp [32]byte) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("join: control plane presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	ca, err := PinnedCA(cs, fp)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:     roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("join: control plane certificate: %w", err)
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return fmt.Errorf("join: control plane certificate: %w", err)
	}
	if id.Path() != controlPath {
		return fmt.Errorf("join: server is %s, not the control plane (path %q)", id, controlPath)
	}
	if td, err := TrustDomainOf(ca); err == nil && !id.MemberOf(td) {
		return fmt.Errorf("join: server is %s, but the CA is for trust domain %q", id, td)
	}
	return nil
}

// PinnedCA returns the CA certificate with SHA-256 fp among the certificates
// the peer presented after its leaf, as the control plane's chain carries it
// (see ServerCert). A sidecar takes its trust bundle and trust domain (see
// TrustDomainOf) from it after a JoinClientTLS handshake.
func PinnedCA(cs *tls.ConnectionState, fp [32]byte) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) > 1 {
		for _, c := range cs.PeerCertificates[1:] {
			if c.IsCA && Fingerprint(c) == fp {
				return c, nil
			}
		}
	}
	return nil, errors.New("join: control plane's chain has no CA certificate with the token's fingerprint (wrong token, or another control plane)")
}

// ControlServerTLS returns the TLS 1.3 configuration of the control plane's
// gRPC listener: it presents cert; client certificates are optional
// (tls.VerifyClientCertIfGiven) and, if given, must chain to ca, so Join works
// without one and every other call's handler checks PeerID itself. Session
// tickets are disabled so every connection verifies its client certificate
// afresh. To rotate cert, set GetCertificate on the result.
func ControlServerTLS(cert tls.Certificate, ca *x509.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.VerifyClientCertIfGiven,
		ClientCAs:              roots,
		SessionTicketsDisabled: true,
	}
}
