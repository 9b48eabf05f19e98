package receipt

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// testCert returns a self-signed certificate for "orders.mesh" and a pool
// that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "orders.mesh"},
		DNSNames:     []string{"orders.mesh"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool
}

// handshake connects a TLS client and server over net.Pipe and returns both
// ends' connection states.
func handshake(t *testing.T, cert tls.Certificate, pool *x509.CertPool, maxVersion uint16) (client, server tls.ConnectionState) {
	t.Helper()
	c1, c2 := net.Pipe()
	t.Cleanup(func() { c1.Close(); c2.Close() })
	srv := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: maxVersion})
	cli := tls.Client(c2, &tls.Config{RootCAs: pool, ServerName: "orders.mesh", MaxVersion: maxVersion})

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.HandshakeContext(ctx) }()
	if err := cli.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return cli.ConnectionState(), srv.ConnectionState()
}

func TestKey(t *testing.T) {
	cert, pool := testCert(t)
	cs1, ss1 := handshake(t, cert, pool, 0)
	ck1, err := Key(&cs1)
	if err != nil {
		t.Fatalf("client Key: %v", err)
	}
	sk1, err := Key(&ss1)
	if err != nil {
		t.Fatalf("server Key: %v", err)
	}
	if len(ck1) != KeySize {
		t.Errorf("len(Key) = %d, want %d", len(ck1), KeySize)
	}
	if !bytes.Equal(ck1, sk1) {
		t.Errorf("client key %x, server key %x, want equal", ck1, sk1)
	}

	cs2, _ := handshake(t, cert, pool, 0)
	ck2, err := Key(&cs2)
	if err != nil {
		t.Fatalf("second session Key: %v", err)
	}
	if bytes.Equal(ck1, ck2) {
		t.Errorf("two sessions derived the same key %x", ck1)
	}

	// A receipt signed on one session verifies on its other end only.
	r := testReceipt()
	mac := Sign(sk1, r)
	if err := Verify(ck1, r, mac); err != nil {
		t.Errorf("Verify on the same session = %v", err)
	}
	if err := Verify(ck2, r, mac); !errors.Is(err, ErrForged) {
		t.Errorf("Verify on another session = %v, want ErrForged", err)
	}
}

func TestKeyRefused(t *testing.T) {
	cert, pool := testCert(t)
	cs12, _ := handshake(t, cert, pool, tls.VersionTLS12)
	tests := []struct {
		name    string
		cs      *tls.ConnectionState
		wantErr string
	}{
		{name: "nil", cs: nil, wantErr: "handshake not complete"},
		{name: "no handshake", cs: &tls.ConnectionState{}, wantErr: "handshake not complete"},
		{name: "tls 1.2", cs: &cs12, wantErr: "connection uses TLS 1.2, want TLS 1.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := Key(tt.cs)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Key() = %x, %v, want error containing %q", key, err, tt.wantErr)
			}
		})
	}
}

func testReceipt() Receipt {
	return Receipt{
		Kind:           KindHTTP,
		MessageID:      "0123456789abcdef0123456789abcdef",
		Seq:            42,
		RequestDigest:  sha256.Sum256([]byte("{\"hello\": \"world\"}\n")),
		RequestLen:     19,
		ResponseDigest: sha256.Sum256(nil),
		ResponseLen:    0,
	}
}

func testKey() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

func TestAppendCanonicalLayout(t *testing.T) {
	r := testReceipt()
	var want []byte
	want = append(want, "tally-receipt/v1\x00"...)
	want = append(want, 0x01, 32)
	want = append(want, "0123456789abcdef0123456789abcdef"...)
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 42)
	want = append(want, r.RequestDigest[:]...)
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 19)
	want = append(want, r.ResponseDigest[:]...)
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 0)
	got := r.AppendCanonical([]byte("x"))
	if !bytes.Equal(got[1:], want) || got[0] != 'x' {
		t.Errorf("AppendCanonical =\n%x\nwant x then\n%x", got, want)
	}
	if len(want) != 139 {
		t.Errorf("canonical encoding is %d bytes, want 139", len(want))
	}
}

// Receipts that differ only in how bytes are split between fields encode
// differently.
func TestAppendCanonicalInjective(t *testing.T) {
	base := testReceipt()
	variants := []Receipt{base}
	add := func(f func(*Receipt)) {
		r := base
		f(&r)
		variants = append(variants, r)
	}
	add(func(r *Receipt) { r.MessageID = r.MessageID[:31] })
	add(func(r *Receipt) { r.MessageID = "" })
	add(func(r *Receipt) { r.MessageID = strings.Repeat("a", 256) })
	add(func(r *Receipt) { r.MessageID = strings.Repeat("a", 288) })
	add(func(r *Receipt) { r.Kind = KindTCP })
	add(func(r *Receipt) { r.RequestLen = -1 })
	add(func(r *Receipt) { r.RequestDigest, r.ResponseDigest = r.ResponseDigest, r.RequestDigest })
	add(func(r *Receipt) { r.RequestLen, r.ResponseLen = r.ResponseLen, r.RequestLen })
	seen := map[string]int{}
	for i, r := range variants {
		enc := string(r.AppendCanonical(nil))
		if j, ok := seen[enc]; ok {
			t.Errorf("variants %d and %d encode the same", j, i)
		}
		seen[enc] = i
	}
}

// Sign is HMAC-SHA256 over the canonical encoding, for keys of any length.
func TestSignIsHMAC(t *testing.T) {
	r := testReceipt()
	for _, n := range []int{0, 1, 31, 32, 33, 63, 64, 65, 100, 200} {
		key := bytes.Repeat([]byte{0xa5}, n)
		m := hmac.New(sha256.New, key)
		m.Write(r.AppendCanonical(nil))
		if got, want := Sign(key, r), m.Sum(nil); !bytes.Equal(got[:], want) {
			t.Errorf("key of %d bytes: Sign = %x, want %x", n, got, want)
		}
	}
	long := r
	long.MessageID = strings.Repeat("f", 300)
	m := hmac.New(sha256.New, testKey())
	m.Write(long.AppendCanonical(nil))
	if got, want := Sign(testKey(), long), m.Sum(nil); !bytes.Equal(got[:], want) {
		t.Errorf("long id: Sign = %x, want %x", got, want)
	}
}

// golden is testdata/vectors.json: a fixed key and receipt with the
// encoding and MAC they must always give, and tamper vectors for Parse.
type golden struct {
	Key       string      `json:"key"`
	Receipt   jsonReceipt `json:"receipt"`
	Canonical string      `json:"canonical"`
	MAC       string      `json:"mac"`
	Header    string      `json:"header"`
	Headers   []headerVec `json:"headers"`
}

// jsonReceipt is a Receipt with its digests in hex.
type jsonReceipt struct {
	Kind           Kind   `json:"kind"`
	MessageID      string `json:"message_id"`
	Seq            uint64 `json:"seq"`
	RequestDigest  string `json:"request_digest"`
	RequestLen     int64  `json:"request_len"`
	ResponseDigest string `json:"response_digest"`
	ResponseLen    int64  `json:"response_len"`
}

func toJSON(r Receipt) jsonReceipt {
	return jsonReceipt{
		Kind: r.Kind, MessageID: r.MessageID, Seq: r.Seq,
		RequestDigest: hex.EncodeToString(r.RequestDigest[:]), RequestLen: r.RequestLen,
		ResponseDigest: hex.EncodeToString(r.ResponseDigest[:]), ResponseLen: r.ResponseLen,
	}
}

func fromJSON(t *testing.T, j jsonReceipt) Receipt {
	t.Helper()
	r := Receipt{Kind: j.Kind, MessageID: j.MessageID, Seq: j.Seq, RequestLen: j.RequestLen, ResponseLen: j.ResponseLen}
	for _, d := range []struct {
		dst *[32]byte
		src string
	}{{&r.RequestDigest, j.RequestDigest}, {&r.ResponseDigest, j.ResponseDigest}} {
		b, err := hex.DecodeString(d.src)
		if err != nil || len(b) != 32 {
			t.Fatalf("digest %q: want 64 hex characters", d.src)
		}
		copy(d.dst[:], b)
	}
	return r
}

type headerVec struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	WantErr string `json:"want_err,omitempty"` // empty: parses to MAC
}

func makeGolden() golden {
	key, r := testKey(), testReceipt()
	mac := Sign(key, r)
	h := Format(mac)
	return golden{
		Key:       hex.EncodeToString(key),
		Receipt:   toJSON(r),
		Canonical: hex.EncodeToString(r.AppendCanonical(nil)),
		MAC:       hex.EncodeToString(mac[:]),
		Header:    h,
		Headers: []headerVec{
			{Name: "happy path", Value: h},
			{Name: "flipped bit", Value: h[:10] + string(h[10]^0x01) + h[11:], WantErr: "MAC does not match"},
			{Name: "flipped last char", Value: h[:45] + "A", WantErr: "MAC does not match"},
			{Name: "truncated", Value: h[:45], WantErr: "45 characters, want 46"},
			{Name: "truncated to prefix", Value: "v1:", WantErr: "3 characters, want 46"},
			{Name: "empty", Value: "", WantErr: `"" does not start with "v1:"`},
			{Name: "garbage prefix", Value: "x" + h, WantErr: "does not start with"},
			{Name: "space prefix", Value: " " + h, WantErr: "does not start with"},
			{Name: "trailing garbage", Value: h + "A", WantErr: "47 characters, want 46"},
			{Name: "padded", Value: h[:45] + "=", WantErr: "offset 45: '=' padding is not allowed"},
			{Name: "padded after full", Value: h + "=", WantErr: "47 characters"},
			{Name: "standard base64", Value: "v1:+" + h[4:], WantErr: "offset 3: '+' is standard base64, want base64url"},
			{Name: "invalid character", Value: "v1:" + h[3:20] + "!" + h[21:], WantErr: "offset 20: '!' is not base64url"},
			{Name: "non-canonical trailing bits", Value: h[:45] + string(h[45]+1), WantErr: "offset 45: non-canonical base64url"},
			{Name: "uppercase version", Value: "V1:" + h[3:], WantErr: "does not start with"},
			{Name: "other version", Value: "v2:" + h[3:], WantErr: `unsupported version "v2", want v1`},
			{Name: "hex instead", Value: "v1:" + hex.EncodeToString(mac[:]), WantErr: "67 characters, want 46"},
		},
	}
}

func TestGolden(t *testing.T) {
	const path = "testdata/vectors.json"
	if *update {
		b, err := json.MarshalIndent(makeGolden(), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	key, err := hex.DecodeString(g.Key)
	if err != nil {
		t.Fatal(err)
	}
	r := fromJSON(t, g.Receipt)
	if got := hex.EncodeToString(r.AppendCanonical(nil)); got != g.Canonical {
		t.Errorf("canonical = %s, want %s", got, g.Canonical)
	}
	mac := Sign(key, r)
	if got := hex.EncodeToString(mac[:]); got != g.MAC {
		t.Errorf("Sign = %s, want %s", got, g.MAC)
	}
	if got := Format(mac); got != g.Header {
		t.Errorf("Format = %s, want %s", got, g.Header)
	}
	for _, hv := range g.Headers {
		t.Run(hv.Name, func(t *testing.T) {
			parsed, err := Parse(hv.Value)
			if err == nil {
				err = Verify(key, r, parsed)
			}
			if hv.WantErr == "" {
				if err != nil {
					t.Errorf("Parse+Verify(%q) = %v, want nil", hv.Value, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), hv.WantErr) {
				t.Errorf("Parse+Verify(%q) = %v, want error containing %q", hv.Value, err, hv.WantErr)
			}
		})
	}
}

// Every bit of every field, of the key and of the MAC matters.
func TestVerifyTamper(t *testing.T) {
	key, r := testKey(), testReceipt()
	mac := Sign(key, r)
	if err := Verify(key, r, mac); err != nil {
		t.Fatalf("Verify(happy path) = %v", err)
	}

	type tamper struct {
		name string
		key  []byte
		r    Receipt
		mac  [32]byte
	}
	var cases []tamper
	add := func(name string, f func(*tamper)) {
		tc := tamper{name: name, key: bytes.Clone(key), r: r, mac: mac}
		f(&tc)
		cases = append(cases, tc)
	}
	for b := range 8 {
		add("kind", func(tc *tamper) { tc.r.Kind ^= 1 << b })
	}
	for i := range len(r.MessageID) * 8 {
		add("message id", func(tc *tamper) {
			id := []byte(tc.r.MessageID)
			id[i/8] ^= 1 << (i % 8)
			tc.r.MessageID = string(id)
		})
	}
	for b := range 64 {
		add("seq", func(tc *tamper) { tc.r.Seq ^= 1 << b })
		add("request len", func(tc *tamper) { tc.r.RequestLen ^= 1 << b })
		add("response len", func(tc *tamper) { tc.r.ResponseLen ^= 1 << b })
	}
	for i := range 256 {
		add("request digest", func(tc *tamper) { tc.r.RequestDigest[i/8] ^= 1 << (i % 8) })
		add("response digest", func(tc *tamper) { tc.r.ResponseDigest[i/8] ^= 1 << (i % 8) })
		add("mac", func(tc *tamper) { tc.mac[i/8] ^= 1 << (i % 8) })
		add("key", func(tc *tamper) { tc.key[i/8] ^= 1 << (i % 8) })
	}
	add("id one shorter", func(tc *tamper) { tc.r.MessageID = tc.r.MessageID[:31] })
	add("id empty", func(tc *tamper) { tc.r.MessageID = "" })
	add("digests swapped", func(tc *tamper) {
		tc.r.RequestDigest, tc.r.ResponseDigest = tc.r.ResponseDigest, tc.r.RequestDigest
	})
	add("zero mac", func(tc *tamper) { tc.mac = [32]byte{} })

	for _, tc := range cases {
		if err := Verify(tc.key, tc.r, tc.mac); !errors.Is(err, ErrForged) {
			t.Errorf("%s: Verify = %v, want ErrForged", tc.name, err)
		}
	}
}

func TestVerifyRefusesBadKeys(t *testing.T) {
	r := testReceipt()
	for _, key := range [][]byte{nil, {}, make([]byte, 16), make([]byte, 33)} {
		err := Verify(key, r, Sign(key, r))
		if err == nil || errors.Is(err, ErrForged) || !strings.Contains(err.Error(), "want 32") {
			t.Errorf("Verify with a %d-byte key = %v, want a key length error", len(key), err)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	key, r := testKey(), testReceipt()
	mac := Sign(key, r)
	h := Format(mac)
	for name, f := range map[string]func(){
		"Sign":   func() { _ = Sign(key, r) },
		"Verify": func() { _ = Verify(key, r, mac) },
		"Parse":  func() { _, _ = Parse(h) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s allocates %v times, want 0", name, n)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, hv := range makeGolden().Headers {
		f.Add(hv.Value)
	}
	f.Add(Format([32]byte{}))
	f.Add(Format([32]byte{0: 0xff, 31: 0xff}))
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := Parse(s)
		if err != nil {
			if mac != ([32]byte{}) {
				t.Fatalf("Parse(%q) = %x with error %v", s, mac, err)
			}
		} else if got := Format(mac); got != s {
			t.Fatalf("Format(Parse(%q)) = %q", s, got)
		}
		// Any MAC survives Format then Parse.
		sum := sha256.Sum256([]byte(s))
		back, err := Parse(Format(sum))
		if err != nil || back != sum {
			t.Fatalf("Parse(Format(%x)) = %x, %v", sum, back, err)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	key, r := testKey(), testReceipt()
	b.ReportAllocs()
	for b.Loop() {
		Sign(key, r)
	}
}

func BenchmarkVerify(b *testing.B) {
	key, r := testKey(), testReceipt()
	mac := Sign(key, r)
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(key, r, mac); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	h := Format(Sign(testKey(), testReceipt()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(h); err != nil {
			b.Fatal(err)
		}
	}
}
