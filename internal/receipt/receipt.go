package receipt

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// ExporterLabel is the RFC 8446 §7.5 exporter label of the receipt key:
// [Key] calls tls.ConnectionState.ExportKeyingMaterial(ExporterLabel, nil,
// KeySize).
const ExporterLabel = "EXPORTER-tally-receipt-v1"

// KeySize is the length of a receipt key in bytes.
const KeySize = 32

// ErrForged means a receipt's MAC does not match what the verifier saw:
// the peer saw something else, or the receipt was made for another session,
// or by someone else.
var ErrForged = errors.New("receipt: MAC does not match")

// Key derives the receipt key of a TLS 1.3 connection from its exported
// keying material. Both ends of a connection derive the same key; any other
// session, resumed or not, has another. It fails if the handshake is not
// complete or the connection is not TLS 1.3.
func Key(cs *tls.ConnectionState) ([]byte, error) {
	if cs == nil || !cs.HandshakeComplete {
		return nil, errors.New("receipt: deriving key: TLS handshake not complete")
	}
	if cs.Version != tls.VersionTLS13 {
		return nil, fmt.Errorf("receipt: deriving key: connection uses %s, want TLS 1.3", tls.VersionName(cs.Version))
	}
	key, err := cs.ExportKeyingMaterial(ExporterLabel, nil, KeySize)
	if err != nil {
		return nil, fmt.Errorf("receipt: deriving key: %w", err)
	}
	return key, nil
}

// Kind is what the receipt is for.
type Kind uint8

// Kinds of receipt.
const (
	// KindHTTP: an HTTP request and its response, or a gRPC call.
	KindHTTP Kind = 1
	// KindTCP: both directions of a TCP connection, sent at FIN_ACK.
	KindTCP Kind = 2
)

// Receipt is what both sides of a message must agree on.
type Receipt struct {
	Kind      Kind
	MessageID string // 32 lowercase hex characters (wire.ParseID)
	Seq       uint64 // per-edge sequence number
	// RequestDigest is the SHA-256 of the request body (HTTP) or of the
	// caller-to-callee byte stream (TCP); RequestLen its length in bytes.
	RequestDigest [32]byte
	RequestLen    int64
	// ResponseDigest is the SHA-256 of the response body or of the
	// callee-to-caller stream; ResponseLen its length in bytes.
	ResponseDigest [32]byte
	ResponseLen    int64
}

// canonicalPrefix starts the canonical encoding; it names the version.
const canonicalPrefix = "tally-receipt/v1\x00"

// canonicalFixedLen is the length of the canonical encoding less the id.
const canonicalFixedLen = len(canonicalPrefix) + 1 + 1 + 8 + 32 + 8 + 32 + 8

// AppendCanonical appends the canonical encoding of r, which Sign MACs,
// to dst. Its layout (version 1, 139 bytes for a 32-character id):
//
//	offset  size  field
//	0       17    "tally-receipt/v1\x00"
//	17      1     Kind
//	18      1     len(MessageID), modulo 256
//	19      n     MessageID
//	19+n    8     Seq, uint64 big-endian
//	27+n    32    RequestDigest
//	59+n    8     RequestLen, as uint64 big-endian (two's complement)
//	67+n    32    ResponseDigest
//	99+n    8     ResponseLen, as uint64 big-endian
//
// Every field but the id has a fixed size, so the encoding's total length
// fixes n and no two receipts share an encoding, even with ids of 256
// bytes or more (which are not valid ids anyway).
func (r Receipt) AppendCanonical(dst []byte) []byte {
	dst = append(dst, canonicalPrefix...)
	dst = append(dst, byte(r.Kind), byte(len(r.MessageID)))
	dst = append(dst, r.MessageID...)
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = append(dst, r.RequestDigest[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.RequestLen))
	dst = append(dst, r.ResponseDigest[:]...)
	return binary.BigEndian.AppendUint64(dst, uint64(r.ResponseLen))
}

// Sign returns the receipt MAC of r: HMAC-SHA256(key, r.AppendCanonical).
// key should come from Key; Verify refuses keys of other lengths. Sign does
// not allocate for ids of up to 64 bytes.
func Sign(key []byte, r Receipt) [32]byte {
	// HMAC (RFC 2104) over sha256.Sum256, so that nothing escapes to the
	// heap: H((K ^ opad) | H((K ^ ipad) | message)).
	var k [sha256.BlockSize]byte
	if len(key) > sha256.BlockSize {
		sum := sha256.Sum256(key)
		copy(k[:], sum[:])
	} else {
		copy(k[:], key)
	}
	var inner [sha256.BlockSize + canonicalFixedLen + 64]byte
	for i, b := range k {
		inner[i] = b ^ 0x36
	}
	msg := r.AppendCanonical(inner[:sha256.BlockSize])
	innerSum := sha256.Sum256(msg)

	var outer [sha256.BlockSize + sha256.Size]byte
	for i, b := range k {
		outer[i] = b ^ 0x5c
	}
	copy(outer[sha256.BlockSize:], innerSum[:])
	return sha256.Sum256(outer[:])
}

// Verify checks mac against r in constant time. It returns ErrForged if
// they differ, and an error without ErrForged if key is not KeySize bytes
// long (a missing key must not make receipts anyone can forge).
func Verify(key []byte, r Receipt, mac [32]byte) error {
	if len(key) != KeySize {
		return errors.New("receipt: verifying with a key of " + strconv.Itoa(len(key)) + " bytes, want " + strconv.Itoa(KeySize))
	}
	want := Sign(key, r)
	if subtle.ConstantTimeCompare(want[:], mac[:]) != 1 {
		return ErrForged
	}
	return nil
}

// Header form of a MAC, for the Tally-Receipt trailer:
//
//	"v1:" | base64url without padding (RFC 4648 §5) of the 32-byte MAC
//
// 46 characters in all; Parse accepts only that exact, canonical form.
const (
	headerPrefix = "v1:"
	headerB64Len = 43 // base64.RawURLEncoding.EncodedLen(32)
	headerLen    = len(headerPrefix) + headerB64Len
)

// Format returns the header form of mac: "v1:" and 43 characters of
// base64url without padding.
func Format(mac [32]byte) string {
	var buf [headerLen]byte
	copy(buf[:], headerPrefix)
	base64.RawURLEncoding.Encode(buf[len(headerPrefix):], mac[:])
	return string(buf[:])
}

// Parse parses the header form of a MAC, as Format writes it. It is strict:
// anything but "v1:" and 43 canonical base64url characters is an error
// that names what was wrong. It does not allocate unless it fails.
func Parse(s string) ([32]byte, error) {
	var mac [32]byte
	if len(s) < len(headerPrefix) || s[:len(headerPrefix)] != headerPrefix {
		if i := indexColon(s); i > 0 && s[0] == 'v' && i <= 8 {
			return mac, fmt.Errorf("receipt: unsupported version %s, want v1", strconv.Quote(s[:i]))
		}
		return mac, fmt.Errorf("receipt: %s does not start with %q", quoteShort(s), headerPrefix)
	}
	if len(s) != headerLen {
		return mac, fmt.Errorf("receipt: %d characters, want %d (%q and %d of base64url)", len(s), headerLen, headerPrefix, headerB64Len)
	}
	b := s[len(headerPrefix):]
	var v [headerB64Len]byte
	for i := range len(b) {
		c := b[i]
		v[i] = b64url[c]
		if v[i] == invalid {
			off := len(headerPrefix) + i
			switch c {
			case '=':
				return mac, fmt.Errorf("receipt: offset %d: '=' padding is not allowed", off)
			case '+', '/':
				return mac, fmt.Errorf("receipt: offset %d: %q is standard base64, want base64url", off, c)
			}
			return mac, fmt.Errorf("receipt: offset %d: %s is not base64url", off, describe(c))
		}
	}
	// 43 characters: ten groups of four give 30 bytes, three more give 2
	// bytes and 2 spare bits that must be zero.
	j := 0
	for i := 0; i < 40; i += 4 {
		x := uint32(v[i])<<18 | uint32(v[i+1])<<12 | uint32(v[i+2])<<6 | uint32(v[i+3])
		mac[j], mac[j+1], mac[j+2] = byte(x>>16), byte(x>>8), byte(x)
		j += 3
	}
	x := uint32(v[40])<<18 | uint32(v[41])<<12 | uint32(v[42])<<6
	if x&0xff != 0 {
		return [32]byte{}, fmt.Errorf("receipt: offset %d: non-canonical base64url (trailing bits set)", headerLen-1)
	}
	mac[30], mac[31] = byte(x>>16), byte(x>>8)
	return mac, nil
}

const invalid = 0xff

// b64url maps a base64url character to its 6-bit value, others to invalid.
var b64url = func() (t [256]byte) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range t {
		t[i] = invalid
	}
	for i := range len(alphabet) {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

func indexColon(s string) int {
	for i := range len(s) {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}

// quoteShort quotes a value from the network for an error, truncated.
func quoteShort(s string) string {
	if len(s) > 16 {
		return strconv.Quote(s[:16]) + "..."
	}
	return strconv.Quote(s)
}

func describe(c byte) string {
	if c > 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	return fmt.Sprintf("byte 0x%02x", c)
}
