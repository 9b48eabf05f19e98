package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// cmdCerts writes a throwaway CA and two leaves signed by it, all ECDSA P-256 (what
// SPIFFE SVIDs usually are), valid for a day:
//
//	ca.pem
//	server.pem server.key server-bundle.pem   DNS backend.bench, IP 127.0.0.1
//	client.pem client.key client-bundle.pem   URI spiffe://bench.local/svc/client
//
// The bundles are certificate then key, as haproxy's crt wants.
func cmdCerts(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one argument, the directory")
	}
	dir := args[0]
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tally bench throwaway CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("creating CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "ca.pem"), 0o644, pemBlock("CERTIFICATE", caDER)); err != nil {
		return err
	}
	spiffe, _ := url.Parse("spiffe://bench.local/svc/client")
	leaves := []struct {
		name string
		tmpl x509.Certificate
	}{
		{name: "server", tmpl: x509.Certificate{
			Subject:     pkix.Name{CommonName: "backend.bench"},
			DNSNames:    []string{"backend.bench", "localhost"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}},
		{name: "client", tmpl: x509.Certificate{
			Subject:     pkix.Name{CommonName: "client.bench"},
			DNSNames:    []string{"client.bench"},
			URIs:        []*url.URL{spiffe},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		}},
	}
	for i, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		t := l.tmpl
		t.SerialNumber = big.NewInt(int64(i + 2))
		t.NotBefore, t.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		t.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &t, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("creating %s certificate: %w", l.name, err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		cert, kb := pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder)
		for _, f := range []struct {
			file string
			mode os.FileMode
			data []byte
		}{
			{file: l.name + ".pem", mode: 0o644, data: cert},
			{file: l.name + ".key", mode: 0o600, data: kb},
			{file: l.name + "-bundle.pem", mode: 0o600, data: append(append([]byte{}, cert...), kb...)},
		} {
			if err := writePEM(filepath.Join(dir, f.file), f.mode, f.data); err != nil {
				return err
			}
		}
	}
	return nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writePEM(path string, mode os.FileMode, data []byte) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
