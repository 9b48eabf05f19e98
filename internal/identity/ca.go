package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files of the CA inside the control plane's data directory.
const (
	CACertFile = "ca.crt" // PEM "CERTIFICATE", mode 0644
	CAKeyFile  = "ca.key" // PEM "PRIVATE KEY" (PKCS #8), mode 0600
)

const (
	caCommonName = "tally mesh CA"
	caValidity   = 10 // years
	// caBackdate absorbs clock skew between the control plane and sidecars on
	// other machines: a CA created a second ago must already verify there.
	caBackdate = time.Hour
	// leafBackdate is how far before "now" a leaf certificate becomes valid.
	leafBackdate = time.Minute
)

// CA is the mesh certificate authority. Its keys are ECDSA P-256 throughout
// (fast TLS 1.3 handshakes). A CA is immutable after LoadOrCreateCA and safe for
// concurrent use.
type CA struct {
	Cert        *x509.Certificate
	Key         crypto.Signer
	TrustDomain spiffeid.TrustDomain
}

// LoadOrCreateCA loads dir/ca.crt and dir/ca.key (PEM), or creates both when
// neither exists: dir is created with mode 0700 if missing, ca.key is written
// with mode 0600 and ca.crt with 0644. Existing files are never overwritten.
//
// The created CA certificate is self-signed, a CA that may not sign other CAs
// (path length 0), has KeyUsageCertSign, the URI SAN spiffe://<td> (the trust
// domain), subject CN "tally mesh CA" and a validity of 10 years.
//
// Loading checks that the certificate is a CA for td, that the key matches it,
// and that it is currently valid; if the files are for another trust domain the
// error says so. Only one of the two files existing is an error. Errors name the
// file.
func LoadOrCreateCA(dir string, td spiffeid.TrustDomain) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("loading CA: trust domain is empty")
	}
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certExists, err := fileExists(certPath)
	if err != nil {
		return nil, err
	}
	keyExists, err := fileExists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certExists && keyExists:
		return loadCA(certPath, keyPath, td)
	case certExists:
		return nil, fmt.Errorf("%s: missing, but %s exists; restore it, or remove both to create a new CA", keyPath, certPath)
	case keyExists:
		return nil, fmt.Errorf("%s: missing, but %s exists; restore it, or remove both to create a new CA", certPath, keyPath)
	}
	return createCA(dir, certPath, keyPath, td)
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("checking %s: %w", path, err)
	}
}

func loadCA(certPath, keyPath string, td spiffeid.TrustDomain) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", certPath, err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: parsing certificate: %w", certPath, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: not a CA certificate (needs CA:true and keyCertSign)", certPath)
	}
	certTD, err := TrustDomainOf(cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if certTD != td {
		return nil, fmt.Errorf("%s: CA is for trust domain %q, not %q; use --data with the CA of %q, or another directory", certPath, certTD, td, td)
	}
	now := time.Now()
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%s: CA certificate expired at %s", certPath, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("%s: CA certificate not valid before %s (check the clock)", certPath, cert.NotBefore.UTC().Format(time.RFC3339))
	}

	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", keyPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s: key does not match the certificate in %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key, TrustDomain: td}, nil
}

// parseKeyPEM reads the first PEM block: PKCS #8 "PRIVATE KEY" (what this
// package writes) or SEC 1 "EC PRIVATE KEY".
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want \"PRIVATE KEY\"", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", key)
	}
	return signer, nil
}

func createCA(dir, certPath, keyPath string, td spiffeid.TrustDomain) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("creating CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.AddDate(caValidity, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing new CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA key: %w", err)
	}

	// The key first: a crash in between leaves a key without a certificate,
	// which the next start reports instead of silently minting a second CA.
	if err := writeNewFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNewFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		_ = os.Remove(keyPath)
		return nil, err
	}
	syncDir(dir)
	return &CA{Cert: cert, Key: key, TrustDomain: td}, nil
}

// writeNewFile creates path (failing if it exists), writes b and syncs it.
func writeNewFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// syncDir makes new directory entries durable where the platform allows it;
// failure only weakens durability, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Fingerprint returns the SHA-256 of the CA certificate's DER encoding: the
// fingerprint a join token carries.
func (ca *CA) Fingerprint() [32]byte { return Fingerprint(ca.Cert) }

// Fingerprint returns the SHA-256 of cert's DER encoding.
func Fingerprint(cert *x509.Certificate) [32]byte { return sha256.Sum256(cert.Raw) }

// Bundle returns a new trust bundle for ca.TrustDomain holding the CA
// certificate.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.TrustDomain, []*x509.Certificate{ca.Cert})
}

// TrustDomainOf returns the trust domain named by a CA certificate's single
// URI SAN spiffe://<td>, as LoadOrCreateCA writes it. A sidecar uses it on
// the CA it pinned at join time to learn the trust domain.
func TrustDomainOf(ca *x509.Certificate) (spiffeid.TrustDomain, error) {
	if len(ca.URIs) != 1 {
		return spiffeid.TrustDomain{}, fmt.Errorf("CA certificate has %d URI SANs, want 1 (spiffe://<trust domain>)", len(ca.URIs))
	}
	id, err := spiffeid.FromURI(ca.URIs[0])
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("CA certificate URI SAN: %w", err)
	}
	if id.Path() != "" {
		return spiffeid.TrustDomain{}, fmt.Errorf("CA certificate URI SAN %q has a path, want spiffe://<trust domain>", id)
	}
	return id.TrustDomain(), nil
}

// IssueSVID checks the CSR's signature and issues a leaf X.509-SVID for id:
// URI SAN id only (no DNS or IP SANs), valid from now-1m to now+ttl (cut to the
// CA's own expiry), KeyUsageDigitalSignature, ExtKeyUsage ServerAuth and
// ClientAuth, a random 128-bit serial. It returns the DER chain [leaf]; the CA
// certificate is the trust bundle, not part of the chain.
//
// Only the CSR's public key is used, and it must be ECDSA P-256. The CA decides
// the identity: a CSR that names URI SANs must name exactly id, so a sidecar
// that asked for one identity never silently receives another. id must be in
// ca.TrustDomain and have a path.
func (ca *CA) IssueSVID(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([][]byte, error) {
	if id.IsZero() {
		return nil, errors.New("issuing SVID: empty SPIFFE ID")
	}
	if !id.MemberOf(ca.TrustDomain) {
		return nil, fmt.Errorf("issuing SVID for %s: not in trust domain %q", id, ca.TrustDomain)
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("issuing SVID for %s: SPIFFE ID has no path", id)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("issuing SVID for %s: ttl %v is not positive", id, ttl)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: parsing CSR: %w", id, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: CSR signature: %w", id, err)
	}
	if err := checkP256(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: CSR %w", id, err)
	}
	for _, u := range csr.URIs {
		if u.String() != id.String() {
			return nil, fmt.Errorf("issuing SVID for %s: CSR asks for %q", id, u)
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	// Backdating is kept small against the life, so that RenewAt (two
	// thirds of NotBefore..NotAfter) stays near two thirds of ttl even for
	// short-lived SVIDs.
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-min(leafBackdate, ttl/10)),
		NotAfter:              ca.clampNotAfter(now.Add(ttl)),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issuing SVID for %s: %w", id, err)
	}
	return [][]byte{der}, nil
}

// ServerCert issues a TLS server certificate for the control plane's gRPC
// listener, with a fresh P-256 key: SANs are hosts (IP literals become IP
// SANs, names DNS SANs) plus the URI SAN ControlID(ca.TrustDomain); valid from
// now-1m to now+ttl (cut to the CA's expiry). The chain is [leaf, CA cert], so a
// joining sidecar sees the CA and can compare its fingerprint (JoinClientTLS).
//
// The leaf is also a valid X.509-SVID, so a sidecar holding an SVID can dial the
// control plane with MeshClientTLS and check PeerID == ControlID(td).
func (ca *CA) ServerCert(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	if ttl <= 0 {
		return tls.Certificate{}, fmt.Errorf("issuing control certificate: ttl %v is not positive", ttl)
	}
	id := ControlID(ca.TrustDomain)
	if id.IsZero() {
		return tls.Certificate{}, errors.New("issuing control certificate: CA has no trust domain")
	}
	var dnsNames []string
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkHostName(strings.TrimPrefix(h, "*.")); err != nil {
			return tls.Certificate{}, fmt.Errorf("issuing control certificate: host %q: %w", h, err)
		}
		dnsNames = append(dnsNames, h)
	}
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tally control"},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              ca.clampNotAfter(now.Add(ttl)),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing control certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing control certificate: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der, ca.Cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

func (ca *CA) clampNotAfter(t time.Time) time.Time {
	if t.After(ca.Cert.NotAfter) {
		return ca.Cert.NotAfter
	}
	return t
}

// checkHostName accepts what may stand in a DNS SAN or an address: a name
// of at most 253 characters of letters, digits, '-', '.' and '_'.
func checkHostName(h string) error {
	if h == "" || len(h) > 253 {
		return errors.New("not an IP address or DNS name")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return errors.New("not an IP address or DNS name")
		}
	}
	return nil
}

// randomSerial returns a random, positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

func checkP256(pub any) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("public key is %T, want ECDSA P-256", pub)
	}
	if k.Curve != elliptic.P256() {
		return fmt.Errorf("public key is ECDSA %s, want P-256", k.Curve.Params().Name)
	}
	return nil
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
