package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// TokenPrefix is field 1 of a join token: the format and its version.
//
// A join token is one line of ASCII that lets a sidecar join the mesh: it
// names the control plane and pins the CA, so the sidecar needs nothing else
// to trust the control plane, and it carries the secret the control plane
// checks. Version 1, the text form written to DIR/join-token:
//
//	tally1.<id>.<secret>.<addr>.<fingerprint>
//
//	field  name         form
//	1      version      the literal "tally1"
//	2      id           8 lowercase hex characters (4 random bytes); public,
//	                    shown and used by `tally token list` and `tally token revoke`
//	3      secret       43 characters: 32 random bytes, base64url without padding
//	4      address      base64url without padding of the control plane's gRPC
//	                    address "host:port" (host: DNS name, IPv4, or [IPv6])
//	5      fingerprint  43 characters: SHA-256 of the CA certificate's DER,
//	                    base64url without padding
//
// base64url is RFC 4648 §5 ("A-Z a-z 0-9 - _"), without '=' padding, with zero
// trailing bits, so every token has exactly one text form. Fields are separated
// by '.', which base64url never contains. Surrounding whitespace (such as the
// trailing newline of the token file) is ignored; anything else is rejected.
//
// Version history:
//
//	tally1  the first version.
const TokenPrefix = "tally1"

const (
	tokenFields    = 5
	tokenIDLen     = 8  // hex characters
	tokenSecretLen = 32 // bytes before encoding
	maxTokenLen    = 1024
	maxAddrLen     = 300 // a 253-byte DNS name, brackets, a port
)

var (
	b64             = base64.RawURLEncoding.Strict()
	versionField    = regexp.MustCompile(`^tally[0-9]+$`)
	tokenFieldNames = [tokenFields + 1]string{"", "version", "id", "secret", "address", "CA fingerprint"}
)

// Token is a join token. Its String form carries the secret: write it only to
// the token file (mode 0600) or to the operator who asked for it. Token
// implements slog.LogValuer, so logging a Token shows its ID and address only.
type Token struct {
	ID            string   // 8 lowercase hex characters; public
	Secret        string   // 32 random bytes, base64url without padding
	Addr          string   // control plane gRPC address, host:port
	CAFingerprint [32]byte // SHA-256 of the CA certificate's DER (see Fingerprint)
}

// TokenError says what is wrong with a join token text.
type TokenError struct {
	Field  int    // 1 to 5 as in the format of TokenPrefix; 0: the token as a whole
	Reason string // never contains the secret
}

func (e *TokenError) Error() string {
	if e.Field <= 0 || e.Field > tokenFields {
		return "join token: " + e.Reason
	}
	return fmt.Sprintf("join token: field %d (%s): %s", e.Field, tokenFieldNames[e.Field], e.Reason)
}

func tokenErr(field int, format string, args ...any) error {
	return &TokenError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// NewToken returns a token with a fresh random id and secret for the control
// plane at addr (host:port) whose CA has fingerprint caFP.
func NewToken(addr string, caFP [32]byte) (Token, error) {
	if err := checkAddr(addr); err != nil {
		return Token{}, fmt.Errorf("creating join token: address %q: %w", addr, err)
	}
	if caFP == ([32]byte{}) {
		return Token{}, errors.New("creating join token: CA fingerprint is all zeros")
	}
	var id [tokenIDLen / 2]byte
	var secret [tokenSecretLen]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Token{}, fmt.Errorf("creating join token: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Token{}, fmt.Errorf("creating join token: %w", err)
	}
	return Token{
		ID:            hex.EncodeToString(id[:]),
		Secret:        b64.EncodeToString(secret[:]),
		Addr:          addr,
		CAFingerprint: caFP,
	}, nil
}

// String returns the token's text form (see TokenPrefix), secret included.
func (t Token) String() string {
	return TokenPrefix + "." + t.ID + "." + t.Secret + "." +
		b64.EncodeToString([]byte(t.Addr)) + "." + b64.EncodeToString(t.CAFingerprint[:])
}

// LogValue shows the token's id and address, never its secret.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", t.ID), slog.String("addr", t.Addr))
}

// SecretMatches reports, in constant time, whether secret is the token's
// secret. An empty secret never matches.
func (t Token) SecretMatches(secret string) bool {
	if t.Secret == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1
}

// ParseToken parses the text form of a join token (see TokenPrefix). It is
// strict: surrounding whitespace, such as a trailing newline, is trimmed, and
// anything else out of form is an error of type *TokenError naming the field,
// such as `join token: field 4 (address): missing port`. Addr must be
// host:port. Errors never repeat the secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Token{}, tokenErr(0, "empty")
	case len(s) > maxTokenLen:
		return Token{}, tokenErr(0, "%d characters, at most %d allowed", len(s), maxTokenLen)
	}
	fields := strings.Split(s, ".")
	if fields[0] != TokenPrefix {
		if versionField.MatchString(fields[0]) {
			return Token{}, tokenErr(1, "version %q is not supported, want %q", fields[0], TokenPrefix)
		}
		return Token{}, tokenErr(1, "does not start with %q: not a tally join token", TokenPrefix+".")
	}
	if len(fields) != tokenFields {
		return Token{}, tokenErr(0, "%d fields separated by '.', want %d", len(fields), tokenFields)
	}

	var t Token
	t.ID = fields[1]
	if len(t.ID) != tokenIDLen || !isLowerHex(t.ID) {
		return Token{}, tokenErr(2, "want %d lowercase hex characters", tokenIDLen)
	}

	secret, err := decodeField(fields[2])
	if err != nil {
		return Token{}, tokenErr(3, "%v", err)
	}
	if len(secret) != tokenSecretLen {
		return Token{}, tokenErr(3, "decodes to %d bytes, want %d", len(secret), tokenSecretLen)
	}
	t.Secret = fields[2]

	addr, err := decodeField(fields[3])
	if err != nil {
		return Token{}, tokenErr(4, "%v", err)
	}
	if err := checkAddr(string(addr)); err != nil {
		return Token{}, tokenErr(4, "%q: %v", addr, err)
	}
	t.Addr = string(addr)

	fp, err := decodeField(fields[4])
	if err != nil {
		return Token{}, tokenErr(5, "%v", err)
	}
	if len(fp) != len(t.CAFingerprint) {
		return Token{}, tokenErr(5, "decodes to %d bytes, want %d (SHA-256)", len(fp), len(t.CAFingerprint))
	}
	copy(t.CAFingerprint[:], fp)
	if t.CAFingerprint == ([32]byte{}) {
		return Token{}, tokenErr(5, "all zeros")
	}
	return t, nil
}

// decodeField decodes canonical base64url without padding. The alphabet is
// checked first because the decoder would skip '\r' and '\n'.
func decodeField(f string) ([]byte, error) {
	if f == "" {
		return nil, errors.New("empty")
	}
	for i := 0; i < len(f); i++ {
		if !isB64URL(f[i]) {
			return nil, fmt.Errorf("not base64url: character %q at offset %d", f[i], i)
		}
	}
	b, err := b64.DecodeString(f)
	if err != nil {
		return nil, fmt.Errorf("not canonical base64url without padding (%d characters)", len(f))
	}
	return b, nil
}

func isB64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// checkAddr accepts host:port with a non-empty host (DNS name, IPv4, or
// bracketed IPv6) and a port from 1 to 65535.
func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("empty")
	}
	if len(addr) > maxAddrLen {
		return fmt.Errorf("%d bytes, at most %d allowed", len(addr), maxAddrLen)
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("character %q at offset %d is not printable ASCII", c, i)
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err) // "missing port in address" and the like
		}
		return err
	}
	if host == "" {
		return errors.New("empty host")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if strings.Contains(host, ":") {
			return fmt.Errorf("host %q is not an IPv6 address", host)
		}
		if err := checkHostName(host); err != nil {
			return fmt.Errorf("host %q: %v", host, err)
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}
