package digest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

// serialize writes a parsed dictionary back as a field value, keys sorted.
func serialize(m map[string][]byte) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
		b.WriteString("=:")
		b.WriteString(base64.StdEncoding.EncodeToString(m[k]))
		b.WriteString(":")
	}
	return b.String()
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.field)
	}
	for _, vec := range loadVectors(f).Vectors {
		f.Add(vec.Value)
	}
	f.Add(loadVectors(f).Malformed)
	f.Fuzz(func(t *testing.T, field string) {
		got, err := Parse(field)
		var sum [32]byte
		checkErr := CheckSHA256(field, sum)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLong) {
				t.Fatalf("Parse(%q) error %v wraps neither ErrMalformed nor ErrTooLong", field, err)
			}
			if checkErr == nil || errors.Is(checkErr, ErrMismatch) || errors.Is(checkErr, ErrNoSupportedAlgorithm) {
				t.Fatalf("Parse(%q) failed with %v but CheckSHA256 returned %v", field, err, checkErr)
			}
			return
		}

		// Round trip: what Parse returns serializes to a field that
		// parses to the same dictionary.
		again, err := Parse(serialize(got))
		if err != nil {
			t.Fatalf("Parse(serialize(Parse(%q))) = %v", field, err)
		}
		if !maps.EqualFunc(got, again, bytes.Equal) {
			t.Fatalf("round trip of %q: got %v, want %v", field, again, got)
		}

		// CheckSHA256 and Check agree with Parse.
		if v, ok := got[SHA256]; ok && len(v) == 32 {
			copy(sum[:], v)
			if err := CheckSHA256(field, sum); err != nil {
				t.Fatalf("CheckSHA256(%q, parsed sum) = %v", field, err)
			}
			if err := Check(field, map[string][]byte{SHA256: v}); err != nil {
				t.Fatalf("Check(%q, parsed sum) = %v", field, err)
			}
		} else if checkErr == nil {
			t.Fatalf("CheckSHA256(%q, zero) = nil without a 32-byte sha-256 member", field)
		}
		if err := Check(field, got); len(got) > 0 && err != nil && !errors.Is(err, ErrNoSupportedAlgorithm) {
			t.Fatalf("Check(%q, Parse(%q)) = %v", field, field, err)
		}
	})
}

// FuzzDecodeBase64 checks the in-place decoder against encoding/base64.
func FuzzDecodeBase64(f *testing.F) {
	for _, s := range []string{"", "YQ", "YQ==", "YR==", "YWI", "YWI=", "YWJj", helloB64, hello512} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, ":") {
			// A colon ends the byte sequence: the field then holds other
			// members (":,a=:" gives "x=::,a=::"), not a value to decode.
			return
		}
		field := "x=:" + s + ":"
		m, err := Parse(field)
		if err != nil {
			return
		}
		// Synthesize the padding the parser accepts missing.
		padded := s
		if r := len(strings.TrimRight(s, "=")) % 4; r != 0 && !strings.HasSuffix(s, "=") {
			padded += strings.Repeat("=", 4-r)
		}
		want, err := base64.StdEncoding.DecodeString(padded)
		if err != nil {
			t.Fatalf("Parse accepted %q but encoding/base64 rejects %q: %v", s, padded, err)
		}
		if !bytes.Equal(m["x"], want) {
			t.Fatalf("decoding %q: got %x, want %x", s, m["x"], want)
		}
		// Apart from padding, the text may differ from the canonical
		// encoding only in its last character (the pad bits).
		data := strings.TrimRight(s, "=")
		canon := base64.RawStdEncoding.EncodeToString(want)
		if len(data) != len(canon) || (len(data) > 0 && data[:len(data)-1] != canon[:len(canon)-1]) {
			t.Fatalf("accepted %q, canonical %q differs beyond padding and pad bits", s, canon)
		}
	})
}
