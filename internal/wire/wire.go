package wire

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// Header and trailer names, in the canonical form net/textproto produces.
const (
	// HeaderMessageID identifies one message (an HTTP exchange, a gRPC
	// call or a TCP connection) across both sidecars, the control plane
	// and the caller's app: 32 lowercase hex characters encoding 16 random
	// bytes (see NewID, ParseID).
	HeaderMessageID = "Tally-Message-Id"
	// HeaderSeq is the message's sequence number on its edge (calling
	// instance to destination service): decimal uint64, no sign, no
	// leading zeros, starting at 1 (see ParseSeq).
	HeaderSeq = "Tally-Seq"
	// HeaderInstance is the sending sidecar's instance id, in the same
	// format as a message id.
	HeaderInstance = "Tally-Instance"
	// HeaderDestination is the service name the caller addressed (see
	// ValidServiceName); the receiver checks it against its own.
	HeaderDestination = "Tally-Destination"
	// HeaderProtocol is "http", "grpc" or "tcp".
	HeaderProtocol = "Tally-Protocol"
	// HeaderLength is a trailer: the body's length in bytes, decimal
	// (see ParseLength).
	HeaderLength = "Tally-Length"
	// HeaderRequestDigest is a response trailer: the Content-Digest value
	// the receiving sidecar computed over the request body it got.
	HeaderRequestDigest = "Tally-Request-Digest"
	// HeaderReceipt is a response trailer: the receipt MAC, in the form of
	// receipt.Format.
	HeaderReceipt = "Tally-Receipt"
	// HeaderOmission names an omission kind ("truncated",
	// "digest_mismatch", ...): on a 502 to the caller, or as a trailer
	// from the peer sidecar.
	HeaderOmission = "Tally-Omission"
	// HeaderContentDigest is the RFC 9530 field, see package wire/digest.
	HeaderContentDigest = "Content-Digest"
)

// Values of HeaderProtocol.
const (
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
	ProtocolTCP  = "tcp"
)

// IDLen is the length of a message or instance id in characters.
const IDLen = 32

// MaxServiceName is the longest service name, as for a DNS label.
const MaxServiceName = 63

// NewID returns a new message or instance id: 16 bytes from crypto/rand as
// 32 lowercase hex characters.
func NewID() string {
	var b [IDLen / 2]byte
	rand.Read(b[:]) // never fails: it crashes the program if it cannot read
	var h [IDLen]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// ParseID checks that s is a message or instance id: exactly 32 lowercase
// hex characters.
func ParseID(s string) error {
	if len(s) != IDLen {
		return fmt.Errorf("id %s: %d characters, want %d", quote(s), len(s), IDLen)
	}
	for i := range len(s) {
		if c := s[i]; !isDigit(c) && (c < 'a' || c > 'f') {
			what := "lowercase hex"
			if c >= 'A' && c <= 'F' {
				what = "lowercase hex (uppercase is not allowed)"
			}
			return fmt.Errorf("id %s: %s at offset %d, want %s", quote(s), char(c), i, what)
		}
	}
	return nil
}

// ParseSeq parses a sequence number: 1 to 20 decimal digits without sign or
// leading zeros, nonzero, at most math.MaxUint64.
func ParseSeq(s string) (uint64, error) {
	n, err := parseDecimal(s, 20, math.MaxUint64)
	if err != nil {
		return 0, fmt.Errorf("sequence %s: %w", quote(s), err)
	}
	if n == 0 {
		return 0, fmt.Errorf("sequence %s: zero, sequences start at 1", quote(s))
	}
	return n, nil
}

// ParseLength parses a body length: 1 to 19 decimal digits without sign or
// leading zeros (but "0"), at most math.MaxInt64.
func ParseLength(s string) (int64, error) {
	n, err := parseDecimal(s, 19, math.MaxInt64)
	if err != nil {
		return 0, fmt.Errorf("length %s: %w", quote(s), err)
	}
	return int64(n), nil
}

// parseDecimal parses the canonical decimal form of an integer up to max.
func parseDecimal(s string, maxDigits int, max uint64) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if len(s) > maxDigits {
		return 0, fmt.Errorf("%d characters, at most %d digits", len(s), maxDigits)
	}
	var n uint64
	for i := range len(s) {
		c := s[i]
		if !isDigit(c) {
			return 0, fmt.Errorf("%s at offset %d, want a decimal digit", char(c), i)
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, fmt.Errorf("out of range, at most %d", max)
		}
		n = n*10 + d
	}
	if s[0] == '0' && len(s) > 1 {
		return 0, errors.New("leading zero")
	}
	return n, nil
}

// ValidServiceName checks that s is a service name: an RFC 1123 DNS label in
// lowercase, 1 to 63 characters of a-z, 0-9 and '-', neither starting nor
// ending with '-'.
func ValidServiceName(s string) error {
	if s == "" {
		return errors.New("service name: empty")
	}
	if len(s) > MaxServiceName {
		return fmt.Errorf("service name %s: %d characters, at most %d", quote(s), len(s), MaxServiceName)
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case isDigit(c) || (c >= 'a' && c <= 'z'):
		case c == '-':
			if i == 0 || i == len(s)-1 {
				return fmt.Errorf("service name %s: starts or ends with '-'", quote(s))
			}
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("service name %s: uppercase %s at offset %d, want lowercase", quote(s), char(c), i)
		case c == '.':
			return fmt.Errorf("service name %s: '.' at offset %d, a service name is a single DNS label", quote(s), i)
		default:
			return fmt.Errorf("service name %s: %s at offset %d, want a-z, 0-9 or '-'", quote(s), char(c), i)
		}
	}
	return nil
}

// meshSuffix is the domain under which a service may be addressed.
const meshSuffix = ".mesh"

// ServiceFromHost maps an HTTP Host (or :authority) to the service it
// addresses. It drops a port, one trailing '.', and then one trailing
// ".mesh", lowercases ASCII letters, and checks the rest with
// ValidServiceName: "orders", "orders:80", "orders.mesh", "orders.mesh.:8080"
// and "ORDERS" all give "orders". IP literals are refused.
func ServiceFromHost(host string) (string, error) {
	if host == "" {
		return "", errors.New("host: empty")
	}
	h := host
	if h[0] == '[' {
		return "", fmt.Errorf("host %s: IP literal, want a service name", quote(host))
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if strings.IndexByte(h[:i], ':') >= 0 {
			return "", fmt.Errorf("host %s: IP literal, want a service name", quote(host))
		}
		if err := checkPort(h[i+1:]); err != nil {
			return "", fmt.Errorf("host %s: %w", quote(host), err)
		}
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	h = lowerASCII(h)
	if looksIPv4(h) {
		if _, err := netip.ParseAddr(h); err == nil {
			return "", fmt.Errorf("host %s: IP literal, want a service name", quote(host))
		}
	}
	if len(h) > len(meshSuffix) && strings.HasSuffix(h, meshSuffix) {
		h = h[:len(h)-len(meshSuffix)]
	}
	if err := ValidServiceName(h); err != nil {
		return "", fmt.Errorf("host %s: %w", quote(host), err)
	}
	return h, nil
}

// looksIPv4 reports whether s holds only digits and dots, so that the
// common case skips netip.ParseAddr and the error it allocates.
func looksIPv4(s string) bool {
	for i := range len(s) {
		if !isDigit(s[i]) && s[i] != '.' {
			return false
		}
	}
	return true
}

// checkPort accepts the port of an authority: up to five digits, at most
// 65535, or empty (RFC 3986 §3.2.3).
func checkPort(p string) error {
	if len(p) > 5 {
		return fmt.Errorf("port %s: too long", quote(p))
	}
	n := 0
	for i := range len(p) {
		if !isDigit(p[i]) {
			return fmt.Errorf("port %s: %s at offset %d, want a decimal digit", quote(p), char(p[i]), i)
		}
		n = n*10 + int(p[i]-'0')
	}
	if n > math.MaxUint16 {
		return fmt.Errorf("port %s: out of range", quote(p))
	}
	return nil
}

// lowerASCII lowercases A-Z only, so that no non-ASCII character can turn
// into an ASCII one (as strings.ToLower turns the Kelvin sign into 'k').
// It does not allocate when s has no uppercase letter.
func lowerASCII(s string) string {
	i := 0
	for i < len(s) && (s[i] < 'A' || s[i] > 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// quote quotes a value for an error message, truncating long ones: the
// values come from the network.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// char describes a byte for an error message.
func char(c byte) string {
	if c > 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	if c == ' ' {
		return "space"
	}
	return fmt.Sprintf("byte 0x%02x", c)
}
