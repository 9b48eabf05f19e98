package identity

import (
	"bytes"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// goldenToken pins the text form of version 1: changing it breaks every token
// already written to disk.
const goldenToken = "tally1.0123abcd.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8." +
	"Y29udHJvbC5tZXNoLmxvY2FsOjc0MDA.__79_Pv6-fj39vX08_Lx8O_u7ezr6uno5-bl5OPi4eA"

func goldenTokenValue() Token {
	var fp [32]byte
	for i := range fp {
		fp[i] = byte(0xff - i)
	}
	return Token{
		ID:            "0123abcd",
		Secret:        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
		Addr:          "control.mesh.local:7400",
		CAFingerprint: fp,
	}
}

// withField returns goldenToken with field i (1-based) replaced by v.
func withField(i int, v string) string {
	f := strings.Split(goldenToken, ".")
	f[i-1] = v
	return strings.Join(f, ".")
}

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestTokenGolden(t *testing.T) {
	if got, want := goldenTokenValue().String(), goldenToken; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	got, err := ParseToken(goldenToken)
	if err != nil {
		t.Fatalf("ParseToken(golden): %v", err)
	}
	if want := goldenTokenValue(); got != want {
		t.Errorf("ParseToken(golden) = %+v, want %+v", got, want)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	fp := goldenTokenValue().CAFingerprint
	tests := []struct {
		name string
		addr string
		wrap func(string) string // how the text reaches ParseToken
	}{
		{name: "ipv4", addr: "127.0.0.1:7400", wrap: func(s string) string { return s }},
		{name: "dns name", addr: "control.mesh.local:7400", wrap: func(s string) string { return s }},
		{name: "ipv6", addr: "[::1]:7400", wrap: func(s string) string { return s }},
		{name: "ipv6 with zone", addr: "[fe80::1%eth0]:7400", wrap: func(s string) string { return s }},
		{name: "trailing newline", addr: "127.0.0.1:7400", wrap: func(s string) string { return s + "\n" }},
		{name: "crlf", addr: "127.0.0.1:7400", wrap: func(s string) string { return s + "\r\n" }},
		{name: "surrounding spaces", addr: "127.0.0.1:7400", wrap: func(s string) string { return "  \t" + s + " \n" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := NewToken(tt.addr, fp)
			if err != nil {
				t.Fatalf("NewToken(%q): %v", tt.addr, err)
			}
			if len(tok.ID) != 8 || !isLowerHex(tok.ID) {
				t.Errorf("ID = %q, want 8 lowercase hex characters", tok.ID)
			}
			if got, want := len(tok.Secret), 43; got != want {
				t.Errorf("len(Secret) = %d, want %d", got, want)
			}
			got, err := ParseToken(tt.wrap(tok.String()))
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if got != tok {
				t.Errorf("ParseToken(String()) = %+v, want %+v", got, tok)
			}
		})
	}
}

func TestNewTokenFresh(t *testing.T) {
	fp := goldenTokenValue().CAFingerprint
	a, err := NewToken("127.0.0.1:7400", fp)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewToken("127.0.0.1:7400", fp)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || a.Secret == b.Secret {
		t.Errorf("two tokens share id or secret: %v and %v", a.ID, b.ID)
	}
}

func TestNewTokenErrors(t *testing.T) {
	fp := goldenTokenValue().CAFingerprint
	tests := []struct {
		name string
		addr string
		fp   [32]byte
	}{
		{name: "missing port", addr: "127.0.0.1", fp: fp},
		{name: "empty address", addr: "", fp: fp},
		{name: "empty host", addr: ":7400", fp: fp},
		{name: "zero fingerprint", addr: "127.0.0.1:7400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := NewToken(tt.addr, tt.fp); err == nil {
				t.Errorf("NewToken(%q) = %v, want an error", tt.addr, tok.LogValue())
			}
		})
	}
}

// parseTokenErrorTests is also the seed corpus of FuzzParseToken.
var parseTokenErrorTests = []struct {
	name      string
	in        string
	wantField int    // TokenError.Field
	wantErr   string // substring of the message
}{
	{name: "empty", in: "", wantField: 0, wantErr: "join token: empty"},
	{name: "only whitespace", in: " \n", wantField: 0, wantErr: "empty"},
	{name: "too long", in: goldenToken + strings.Repeat("A", 1024), wantField: 0, wantErr: "at most 1024"},
	{name: "wrong prefix", in: "tailscale." + goldenToken[len("tally1."):], wantField: 1, wantErr: `does not start with "tally1."`},
	{name: "upper case prefix", in: withField(1, "TALLY1"), wantField: 1, wantErr: "not a tally join token"},
	{name: "unknown version", in: withField(1, "tally2"), wantField: 1, wantErr: `version "tally2" is not supported`},
	{name: "prefix alone", in: "tally1", wantField: 0, wantErr: "1 fields"},
	{name: "four fields", in: goldenToken[:strings.LastIndex(goldenToken, ".")], wantField: 0, wantErr: "4 fields separated by '.', want 5"},
	{name: "six fields", in: goldenToken + ".AAAA", wantField: 0, wantErr: "6 fields"},
	{name: "trailing dot", in: goldenToken + ".", wantField: 0, wantErr: "6 fields"},
	{name: "inner space", in: strings.Replace(goldenToken, ".", ". ", 1), wantField: 2, wantErr: "8 lowercase hex"},
	{name: "id too short", in: withField(2, "0123abc"), wantField: 2, wantErr: "8 lowercase hex"},
	{name: "id upper case", in: withField(2, "0123ABCD"), wantField: 2, wantErr: "8 lowercase hex"},
	{name: "id not hex", in: withField(2, "0123abcg"), wantField: 2, wantErr: "8 lowercase hex"},
	{name: "secret empty", in: withField(3, ""), wantField: 3, wantErr: "empty"},
	{name: "secret standard base64", in: withField(3, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+"), wantField: 3, wantErr: "not base64url"},
	{name: "secret padded", in: withField(3, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="), wantField: 3, wantErr: "not base64url"},
	{name: "secret inner newline", in: withField(3, "AAECAwQFBgcICQoLDA0OD\nxAREhMUFRYXGBkaGxwdHh8"), wantField: 3, wantErr: "not base64url"},
	{name: "secret non-canonical", in: withField(3, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9"), wantField: 3, wantErr: "not canonical"},
	{name: "secret impossible length", in: withField(3, "AAECA"), wantField: 3, wantErr: "not canonical"},
	{name: "secret too short", in: withField(3, enc(strings.Repeat("x", 31))), wantField: 3, wantErr: "decodes to 31 bytes, want 32"},
	{name: "secret too long", in: withField(3, enc(strings.Repeat("x", 33))), wantField: 3, wantErr: "decodes to 33 bytes, want 32"},
	{name: "address not encoded", in: withField(4, "localhost:7400"), wantField: 4, wantErr: "not base64url"},
	{name: "address empty", in: withField(4, ""), wantField: 4, wantErr: "empty"},
	{name: "missing port", in: withField(4, enc("127.0.0.1")), wantField: 4, wantErr: "missing port"},
	{name: "empty port", in: withField(4, enc("127.0.0.1:")), wantField: 4, wantErr: "port"},
	{name: "empty host", in: withField(4, enc(":7400")), wantField: 4, wantErr: "empty host"},
	{name: "port zero", in: withField(4, enc("127.0.0.1:0")), wantField: 4, wantErr: "1 to 65535"},
	{name: "port too big", in: withField(4, enc("127.0.0.1:70000")), wantField: 4, wantErr: "1 to 65535"},
	{name: "port named", in: withField(4, enc("127.0.0.1:http")), wantField: 4, wantErr: "1 to 65535"},
	{name: "ipv6 without brackets", in: withField(4, enc("::1:7400")), wantField: 4, wantErr: "too many colons"},
	{name: "host with space", in: withField(4, enc("a b:7400")), wantField: 4, wantErr: "not printable ASCII"},
	{name: "host with slash", in: withField(4, enc("a/b:7400")), wantField: 4, wantErr: "not an IP address or DNS name"},
	{name: "host not utf-8", in: withField(4, enc("\xff:7400")), wantField: 4, wantErr: "not printable ASCII"},
	{name: "url not address", in: withField(4, enc("https://control:7400")), wantField: 4, wantErr: "address"},
	{name: "fingerprint empty", in: withField(5, ""), wantField: 5, wantErr: "empty"},
	{name: "fingerprint bad base64", in: withField(5, "__79_Pv6-fj39vX08_Lx8O_u7ezr6uno5-bl5OPi4e!"), wantField: 5, wantErr: "not base64url"},
	{name: "fingerprint hex", in: withField(5, strings.Repeat("ab", 32)), wantField: 5, wantErr: "decodes to 48 bytes"},
	{name: "fingerprint too short", in: withField(5, enc(strings.Repeat("x", 31))), wantField: 5, wantErr: "decodes to 31 bytes, want 32"},
	{name: "fingerprint too long", in: withField(5, enc(strings.Repeat("x", 33))), wantField: 5, wantErr: "decodes to 33 bytes, want 32"},
	{name: "fingerprint zero", in: withField(5, enc(strings.Repeat("\x00", 32))), wantField: 5, wantErr: "all zeros"},
}

func TestParseTokenErrors(t *testing.T) {
	secret := goldenTokenValue().Secret
	for _, tt := range parseTokenErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseToken(tt.in)
			if err == nil {
				t.Fatalf("ParseToken(%q) = %v, want an error", tt.in, tok.LogValue())
			}
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("error %v is %T, want *TokenError", err, err)
			}
			if got, want := te.Field, tt.wantField; got != want {
				t.Errorf("Field = %d, want %d (error: %v)", got, want, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "join token: ") {
				t.Errorf("error = %q, want prefix %q", err, "join token: ")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q repeats the secret", err)
			}
		})
	}
}

func TestParseTokenErrorMessage(t *testing.T) {
	_, err := ParseToken(withField(4, enc("127.0.0.1")))
	if got, want := err.Error(), `join token: field 4 (address): "127.0.0.1": missing port in address`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

// TestParseTokenTruncated feeds every proper prefix of a valid token: none may
// parse, as a token cut short (a partial copy and paste) must never be taken
// for another one.
func TestParseTokenTruncated(t *testing.T) {
	for i := range len(goldenToken) {
		if tok, err := ParseToken(goldenToken[:i]); err == nil {
			t.Errorf("ParseToken(golden[:%d]) = %v, want an error", i, tok.LogValue())
		}
	}
}

func TestSecretMatches(t *testing.T) {
	tok := goldenTokenValue()
	tests := []struct {
		name   string
		token  Token
		secret string
		want   bool
	}{
		{name: "same", token: tok, secret: tok.Secret, want: true},
		{name: "other", token: tok, secret: "BAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", want: false},
		{name: "prefix", token: tok, secret: tok.Secret[:42], want: false},
		{name: "longer", token: tok, secret: tok.Secret + "A", want: false},
		{name: "empty", token: tok, secret: "", want: false},
		{name: "empty token secret", token: Token{}, secret: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.token.SecretMatches(tt.secret); got != tt.want {
				t.Errorf("SecretMatches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTokenLogValueHidesSecret(t *testing.T) {
	tok := goldenTokenValue()
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("token created", "token", tok)
	if strings.Contains(buf.String(), tok.Secret) {
		t.Errorf("log line %q contains the secret", buf.String())
	}
	if !strings.Contains(buf.String(), "token.id="+tok.ID) {
		t.Errorf("log line %q lacks token.id=%s", buf.String(), tok.ID)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(goldenToken)
	f.Add(goldenToken + "\n")
	f.Add(withField(4, enc("[::1]:1")))
	for _, tt := range parseTokenErrorTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("error %v is %T, want *TokenError", err, err)
			}
			return
		}
		out := tok.String()
		if want := strings.TrimSpace(s); out != want {
			t.Fatalf("String() = %q, want the trimmed input %q", out, want)
		}
		again, err := ParseToken(out)
		if err != nil {
			t.Fatalf("ParseToken(String()) of %q: %v", out, err)
		}
		if again != tok {
			t.Fatalf("round trip = %+v, want %+v", again, tok)
		}
		if !tok.SecretMatches(tok.Secret) {
			t.Fatalf("SecretMatches(own secret) = false")
		}
	})
}
