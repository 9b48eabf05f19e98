package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("mesh.local")
	otherTD = spiffeid.RequireTrustDomainFromString("other.local")
)

// newTestCA creates a CA for td in a fresh directory.
func newTestCA(t *testing.T, td spiffeid.TrustDomain) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(filepath.Join(t.TempDir(), "data"), td)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca
}

// newTestSVID issues an SVID for service from ca the way a sidecar obtains it.
func newTestSVID(t *testing.T, ca *CA, service string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	id, err := ServiceID(ca.TrustDomain, service)
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.IssueSVID(csr, id, ttl)
	if err != nil {
		t.Fatalf("IssueSVID: %v", err)
	}
	svid, err := ParseSVID(chain, key, ca.Bundle())
	if err != nil {
		t.Fatalf("ParseSVID: %v", err)
	}
	return svid
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ca, err := LoadOrCreateCA(dir, testTD)
	if err != nil {
		t.Fatalf("LoadOrCreateCA (create): %v", err)
	}

	for _, f := range []struct {
		path string
		want os.FileMode
	}{
		{path: dir, want: 0o700},
		{path: filepath.Join(dir, "ca.key"), want: 0o600},
		{path: filepath.Join(dir, "ca.crt"), want: 0o644},
	} {
		if got := fileMode(t, f.path); got != f.want {
			t.Errorf("mode of %s = %o, want %o", f.path, got, f.want)
		}
	}

	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA=%v BasicConstraintsValid=%v KeyUsage=%b, want a CA with keyCertSign", c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
	}
	if got, want := c.Subject.CommonName, "tally mesh CA"; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if got, want := urisOf(c), []string{"spiffe://mesh.local"}; !slices.Equal(got, want) {
		t.Errorf("URI SANs = %q, want %q", got, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if life := time.Until(c.NotAfter); life < 10*365*24*time.Hour || life > 10*366*24*time.Hour+time.Hour {
		t.Errorf("CA valid for another %v, want 10 years", life)
	}
	if _, ok := ca.Key.Public().(*ecdsa.PublicKey); !ok {
		t.Errorf("CA key is %T, want ECDSA", ca.Key.Public())
	}
	if ca.TrustDomain != testTD {
		t.Errorf("TrustDomain = %v, want %v", ca.TrustDomain, testTD)
	}

	again, err := LoadOrCreateCA(dir, testTD)
	if err != nil {
		t.Fatalf("LoadOrCreateCA (load): %v", err)
	}
	if again.Fingerprint() != ca.Fingerprint() {
		t.Errorf("second call loaded fingerprint %x, want %x", again.Fingerprint(), ca.Fingerprint())
	}
	if !publicKeysEqual(again.Key.Public(), ca.Key.Public()) {
		t.Errorf("second call loaded another key")
	}
	if got, want := fileMode(t, filepath.Join(dir, "ca.key")), os.FileMode(0o600); got != want {
		t.Errorf("mode of ca.key after load = %o, want %o", got, want)
	}
}

func TestLoadOrCreateCAExistingDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir, testTD); err != nil {
		t.Fatal(err)
	}
	if got, want := fileMode(t, dir), os.FileMode(0o750); got != want {
		t.Errorf("mode of an existing dir = %o, want it left at %o", got, want)
	}
}

func TestLoadOrCreateCAErrors(t *testing.T) {
	otherDir := t.TempDir()
	if _, err := LoadOrCreateCA(otherDir, testTD); err != nil {
		t.Fatal(err)
	}
	otherKey, err := os.ReadFile(filepath.Join(otherDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		td      spiffeid.TrustDomain
		setup   func(t *testing.T, dir string) // runs after a CA for mesh.local was created in dir
		wantErr []string                       // substrings
	}{
		{
			name:    "other trust domain",
			td:      otherTD,
			setup:   func(t *testing.T, dir string) {},
			wantErr: []string{"ca.crt", `trust domain "mesh.local", not "other.local"`},
		},
		{
			name:    "key missing",
			td:      testTD,
			setup:   func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "ca.key")) },
			wantErr: []string{"ca.key: missing", "ca.crt exists"},
		},
		{
			name:    "cert missing",
			td:      testTD,
			setup:   func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "ca.crt")) },
			wantErr: []string{"ca.crt: missing", "ca.key exists"},
		},
		{
			name:    "cert garbage",
			td:      testTD,
			setup:   func(t *testing.T, dir string) { write(t, filepath.Join(dir, "ca.crt"), "not PEM\n") },
			wantErr: []string{"ca.crt: no PEM CERTIFICATE block"},
		},
		{
			name:    "key garbage",
			td:      testTD,
			setup:   func(t *testing.T, dir string) { write(t, filepath.Join(dir, "ca.key"), "not PEM\n") },
			wantErr: []string{"ca.key: no PEM block"},
		},
		{
			name:    "key of another CA",
			td:      testTD,
			setup:   func(t *testing.T, dir string) { write(t, filepath.Join(dir, "ca.key"), string(otherKey)) },
			wantErr: []string{"ca.key: key does not match the certificate in", "ca.crt"},
		},
		{
			name:    "empty trust domain",
			td:      spiffeid.TrustDomain{},
			setup:   func(t *testing.T, dir string) {},
			wantErr: []string{"trust domain is empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreateCA(dir, testTD); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, dir)
			ca, err := LoadOrCreateCA(dir, tt.td)
			if err == nil {
				t.Fatalf("LoadOrCreateCA = %v, want an error", ca.TrustDomain)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func urisOf(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

func TestIssueSVID(t *testing.T) {
	ca := newTestCA(t, testTD)
	id := spiffeid.RequireFromString("spiffe://mesh.local/svc/orders")
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	chain, err := ca.IssueSVID(csr, id, time.Hour)
	if err != nil {
		t.Fatalf("IssueSVID: %v", err)
	}
	if got, want := len(chain), 1; got != want {
		t.Fatalf("len(chain) = %d, want %d", got, want)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := urisOf(leaf), []string{id.String()}; !slices.Equal(got, want) {
		t.Errorf("URI SANs = %q, want %q", got, want)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has other SANs: DNS %q IP %v email %q", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Error("leaf IsCA = true")
	}
	if got, want := leaf.KeyUsage, x509.KeyUsageDigitalSignature; got != want {
		t.Errorf("KeyUsage = %b, want %b", got, want)
	}
	if got, want := leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage = %v, want %v", got, want)
	}
	if d := before.Add(-time.Minute).Sub(leaf.NotBefore); d.Abs() > 2*time.Second {
		t.Errorf("NotBefore = %v, want now-1m (%v)", leaf.NotBefore, before.Add(-time.Minute))
	}
	if d := before.Add(time.Hour).Sub(leaf.NotAfter); d.Abs() > 2*time.Second {
		t.Errorf("NotAfter = %v, want now+1h (%v)", leaf.NotAfter, before.Add(time.Hour))
	}
	if n := leaf.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
		t.Errorf("serial %v: want positive, at most 128 bits", n)
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		t.Error("leaf does not carry the CSR's public key")
	}
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("leaf not signed by the CA: %v", err)
	}

	chain2, err := ca.IssueSVID(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := x509.ParseCertificate(chain2[0])
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("two SVIDs share serial %v", leaf.SerialNumber)
	}

	// A CSR without URI SANs is fine: the CA decides the identity.
	bare, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueSVID(bare, id, time.Hour); err != nil {
		t.Errorf("IssueSVID(CSR without SANs): %v", err)
	}

	// A TTL beyond the CA's life is cut to it.
	long, err := ca.IssueSVID(csr, id, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	longLeaf, _ := x509.ParseCertificate(long[0])
	if !longLeaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", longLeaf.NotAfter, ca.Cert.NotAfter)
	}
}

func TestIssueSVIDErrors(t *testing.T) {
	ca := newTestCA(t, testTD)
	id := spiffeid.RequireFromString("spiffe://mesh.local/svc/orders")
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	good, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	tampered := slices.Clone(good)
	tampered[len(tampered)-5] ^= 0x01 // inside the signature
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384CSR, err := NewCSR(p384, id)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edCSR, err := NewCSR(edKey, id)
	if err != nil {
		t.Fatal(err)
	}
	otherID := spiffeid.RequireFromString("spiffe://mesh.local/svc/payments")
	otherCSR, err := NewCSR(key, otherID)
	if err != nil {
		t.Fatal(err)
	}
	twoURIs, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL(), otherID.URL()},
	}, key)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		csr     []byte
		id      spiffeid.ID
		ttl     time.Duration
		wantErr string
	}{
		{name: "other trust domain", csr: good, id: spiffeid.RequireFromString("spiffe://other.local/svc/orders"), ttl: time.Hour, wantErr: "not in trust domain"},
		{name: "trust domain ID", csr: good, id: testTD.ID(), ttl: time.Hour, wantErr: "no path"},
		{name: "zero ID", csr: good, ttl: time.Hour, wantErr: "empty SPIFFE ID"},
		{name: "zero ttl", csr: good, id: id, wantErr: "not positive"},
		{name: "garbage CSR", csr: []byte("garbage"), id: id, ttl: time.Hour, wantErr: "parsing CSR"},
		{name: "tampered CSR", csr: tampered, id: id, ttl: time.Hour, wantErr: "CSR signature"},
		{name: "P-384 key", csr: p384CSR, id: id, ttl: time.Hour, wantErr: "want P-256"},
		{name: "ed25519 key", csr: edCSR, id: id, ttl: time.Hour, wantErr: "want ECDSA P-256"},
		{name: "CSR for another ID", csr: otherCSR, id: id, ttl: time.Hour, wantErr: `CSR asks for "spiffe://mesh.local/svc/payments"`},
		{name: "CSR for two IDs", csr: twoURIs, id: id, ttl: time.Hour, wantErr: "CSR asks for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ca.IssueSVID(tt.csr, tt.id, tt.ttl)
			if err == nil {
				t.Fatalf("IssueSVID = %d certificates, want an error", len(chain))
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestServerCert(t *testing.T) {
	ca := newTestCA(t, testTD)
	cert, err := ca.ServerCert([]string{"127.0.0.1", "localhost", "::1", "[::2]", "control.mesh.local"}, time.Hour)
	if err != nil {
		t.Fatalf("ServerCert: %v", err)
	}
	if got, want := len(cert.Certificate), 2; got != want {
		t.Fatalf("chain length = %d, want %d", got, want)
	}
	if string(cert.Certificate[1]) != string(ca.Cert.Raw) {
		t.Error("chain[1] is not the CA certificate")
	}
	leaf := cert.Leaf
	if leaf == nil || string(leaf.Raw) != string(cert.Certificate[0]) {
		t.Fatal("Leaf is not chain[0]")
	}
	if got, want := leaf.DNSNames, []string{"localhost", "control.mesh.local"}; !slices.Equal(got, want) {
		t.Errorf("DNS SANs = %q, want %q", got, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got, want := ips, []string{"127.0.0.1", "::1", "::2"}; !slices.Equal(got, want) {
		t.Errorf("IP SANs = %q, want %q", got, want)
	}
	if got, want := urisOf(leaf), []string{"spiffe://mesh.local/control"}; !slices.Equal(got, want) {
		t.Errorf("URI SANs = %q, want %q", got, want)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: poolOf(ca.Cert), DNSName: "localhost"}); err != nil {
		t.Errorf("leaf does not verify for localhost: %v", err)
	}
	if !publicKeysEqual(cert.PrivateKey.(*ecdsa.PrivateKey).Public(), leaf.PublicKey) {
		t.Error("private key does not match the leaf")
	}

	for _, bad := range []string{"", "a b", "host:7400", "a/b"} {
		if _, err := ca.ServerCert([]string{bad}, time.Hour); err == nil {
			t.Errorf("ServerCert([%q]) succeeded, want an error", bad)
		}
	}
	if _, err := ca.ServerCert(nil, 0); err == nil {
		t.Error("ServerCert(ttl 0) succeeded, want an error")
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
