package digest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
)

// SHA256 is the RFC 9530 algorithm key of SHA-256, the digest Tally sends.
const SHA256 = "sha-256"

// SHA512 is the RFC 9530 algorithm key of SHA-512.
const SHA512 = "sha-512"

// MaxFieldLen is the longest field value Parse and the Check functions
// accept, in bytes. Longer values fail with [ErrTooLong].
const MaxFieldLen = 4096

// sha256FieldLen is the length of a formatted sha-256 member:
//
//	"sha-256=:" | base64(sum), 44 chars with one '=' | ":"
const sha256FieldLen = len(SHA256) + 2 + 44 + 1

var (
	// ErrMismatch means a member's digest differs from the one computed
	// over the content. Errors wrap it together with the algorithm.
	ErrMismatch = errors.New("digest mismatch")
	// ErrNoSupportedAlgorithm means the field holds no member the checker
	// could verify.
	ErrNoSupportedAlgorithm = errors.New("no supported digest algorithm")
	// ErrTooLong means the field value is longer than MaxFieldLen.
	ErrTooLong = errors.New("field too long")
	// ErrMalformed is wrapped by every syntax error; the error text names
	// the byte offset in the field and what was wrong.
	ErrMalformed = errors.New("malformed field")
)

// deprecated reports whether alg is deprecated or insecure per RFC 9530 §5
// and the IANA registry, and so must never be what makes a field acceptable.
func deprecated(alg string) bool {
	switch alg {
	case "md5", "sha", "unixsum", "unixcksum", "adler", "crc32c":
		return true
	}
	return false
}

// Format returns the Content-Digest field value for a sha-256 sum:
// `sha-256=:<standard base64 with padding>:`.
func Format(sum [32]byte) string {
	var buf [sha256FieldLen]byte
	return string(AppendFormat(buf[:0], sum))
}

// AppendFormat appends the Content-Digest field value for a sha-256 sum,
// as Format returns it, to dst. It does not allocate when dst has room for
// 54 more bytes.
func AppendFormat(dst []byte, sum [32]byte) []byte {
	dst = append(dst, SHA256...)
	dst = append(dst, '=', ':')
	dst = base64.StdEncoding.AppendEncode(dst, sum[:])
	return append(dst, ':')
}

// Parse parses a Content-Digest or Repr-Digest field value: a Structured
// Field Dictionary whose members are algorithm keys with Byte Sequence
// values. It returns the decoded digest of each member; for a key that
// occurs twice the last member wins, as RFC 8941 requires. Parameters are
// accepted and ignored. An empty field is an empty dictionary.
//
// Syntax errors wrap [ErrMalformed] and read like
// `content-digest: offset 12: expected ':' to end byte sequence`.
// A field longer than MaxFieldLen fails with [ErrTooLong].
func Parse(field string) (map[string][]byte, error) {
	if err := checkLen(field); err != nil {
		return nil, err
	}
	out := make(map[string][]byte)
	sc := newScanner(field)
	for {
		m, ok, err := sc.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		v := make([]byte, decodedLen(m.value))
		decodeBase64(v, m.value)
		out[m.key] = v
	}
}

// Check verifies field against digests computed over the content. sums maps
// an algorithm key ("sha-256", "sha-512") to the digest computed with it.
//
// Check returns nil only if every member whose algorithm is in sums matches,
// and at least one of them uses an algorithm that is not deprecated (RFC
// 9530 §5: md5, sha, unixsum, unixcksum, adler, crc32c). Members with
// algorithms not in sums are ignored; a deprecated member that is in sums is
// still compared, and fails the check if it differs. For a key that occurs
// twice, only the last member counts.
//
// Errors wrap [ErrMismatch] (naming the algorithm), [ErrNoSupportedAlgorithm],
// [ErrTooLong] or [ErrMalformed].
func Check(field string, sums map[string][]byte) error {
	if err := checkLen(field); err != nil {
		return err
	}
	var arr [8]member
	members := arr[:0]
	sc := newScanner(field)
	for {
		m, ok, err := sc.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		members = append(members, m)
	}

	// Walk backwards so the last member of a repeated key is the one
	// checked; seen holds the keys already checked, at most len(sums).
	var seenArr [4]string
	seen := seenArr[:0]
	matched := false
	for i := len(members) - 1; i >= 0; i-- {
		m := members[i]
		want, ok := sums[m.key]
		if !ok || contains(seen, m.key) {
			continue
		}
		seen = append(seen, m.key)
		if !equalBase64(m.value, want) {
			return fmt.Errorf("content-digest: %s: %w", m.key, ErrMismatch)
		}
		if !deprecated(m.key) {
			matched = true
		}
	}
	if !matched {
		return fmt.Errorf("content-digest: %w", ErrNoSupportedAlgorithm)
	}
	return nil
}

// CheckSHA256 verifies that field holds a sha-256 member equal to sum. Other
// members are ignored, but the whole field must be well-formed. It is the
// hot-path form of Check and does not allocate unless it fails.
func CheckSHA256(field string, sum [32]byte) error {
	if err := checkLen(field); err != nil {
		return err
	}
	var (
		found bool
		last  string
	)
	sc := newScanner(field)
	for {
		m, ok, err := sc.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if m.key == SHA256 {
			found, last = true, m.value
		}
	}
	if !found {
		return fmt.Errorf("content-digest: no %s member: %w", SHA256, ErrNoSupportedAlgorithm)
	}
	if !equalBase64(last, sum[:]) {
		return fmt.Errorf("content-digest: %s: %w", SHA256, ErrMismatch)
	}
	return nil
}

func checkLen(field string) error {
	if len(field) > MaxFieldLen {
		return fmt.Errorf("content-digest: %d bytes, limit %d: %w", len(field), MaxFieldLen, ErrTooLong)
	}
	return nil
}

// equalBase64 reports whether the validated base64 text b64 decodes to want.
func equalBase64(b64 string, want []byte) bool {
	if decodedLen(b64) != len(want) {
		return false
	}
	var buf [64]byte
	var got []byte
	if len(want) <= len(buf) {
		got = buf[:len(want)]
	} else {
		got = make([]byte, len(want))
	}
	decodeBase64(got, b64)
	return bytes.Equal(got, want)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
