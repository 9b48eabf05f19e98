package digest

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"
)

// rfcVectors is the part of testdata/rfc9530.json (a copy of
// shared/vectors/rfc9530.json) that these tests read.
type rfcVectors struct {
	Malformed string `json:"malformed_published_value"`
	Vectors   []struct {
		ID       string          `json:"id"`
		Field    string          `json:"field"`
		Content  string          `json:"content_b64"`
		Value    string          `json:"expected_field_value"`
		Verified map[string]bool `json:"verified_members"`
	} `json:"vectors"`
}

func loadVectors(tb testing.TB) rfcVectors {
	tb.Helper()
	b, err := os.ReadFile("testdata/rfc9530.json")
	if err != nil {
		tb.Fatal(err)
	}
	var v rfcVectors
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decoding testdata/rfc9530.json: %v", err)
	}
	if len(v.Vectors) == 0 || v.Malformed == "" {
		tb.Fatal("testdata/rfc9530.json holds no vectors")
	}
	return v
}

func sums(content []byte) map[string][]byte {
	s256 := sha256.Sum256(content)
	s512 := sha512.Sum512(content)
	return map[string][]byte{SHA256: s256[:], SHA512: s512[:]}
}

func TestRFC9530Vectors(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.Vectors {
		t.Run(vec.ID, func(t *testing.T) {
			content, err := base64.StdEncoding.DecodeString(vec.Content)
			if err != nil {
				t.Fatalf("content_b64: %v", err)
			}
			allVerified := true
			for _, ok := range vec.Verified {
				allVerified = allVerified && ok
			}

			// Format reproduces every single-member sha-256 example.
			sum := sha256.Sum256(content)
			if !strings.Contains(vec.Value, ",") && strings.HasPrefix(vec.Value, SHA256+"=") {
				if got := Format(sum); got != vec.Value {
					t.Errorf("Format(sha256(content)) = %q, want %q", got, vec.Value)
				}
			}

			parsed, err := Parse(vec.Value)
			if err != nil {
				t.Fatalf("Parse(%q): %v", vec.Value, err)
			}
			if got, want := len(parsed), len(vec.Verified); got != want {
				t.Errorf("Parse(%q) has %d members, want %d", vec.Value, got, want)
			}

			err = Check(vec.Value, sums(content))
			switch {
			case allVerified && err != nil:
				t.Errorf("Check(%q) = %v, want nil", vec.Value, err)
			case !allVerified && !errors.Is(err, ErrMismatch):
				t.Errorf("Check(%q) = %v, want ErrMismatch", vec.Value, err)
			}

			if ok, has := vec.Verified[SHA256]; has {
				err := CheckSHA256(vec.Value, sum)
				if ok && err != nil {
					t.Errorf("CheckSHA256(%q) = %v, want nil", vec.Value, err)
				}
				if !ok && !errors.Is(err, ErrMismatch) {
					t.Errorf("CheckSHA256(%q) = %v, want ErrMismatch", vec.Value, err)
				}
			} else if err := CheckSHA256(vec.Value, sum); !errors.Is(err, ErrNoSupportedAlgorithm) {
				t.Errorf("CheckSHA256(%q) = %v, want ErrNoSupportedAlgorithm", vec.Value, err)
			}
		})
	}
}

// The sha-512 member of the as-published two-member example describes the
// unencoded object; checking sha-512 alone accepts it.
func TestRFC9530TwoMembersSHA512Only(t *testing.T) {
	v := loadVectors(t)
	for _, vec := range v.Vectors {
		if vec.ID != "sec2-two-members-as-published" {
			continue
		}
		content, _ := base64.StdEncoding.DecodeString(vec.Content)
		s512 := sha512.Sum512(content)
		if err := Check(vec.Value, map[string][]byte{SHA512: s512[:]}); err != nil {
			t.Errorf("Check(sha-512 only) = %v, want nil", err)
		}
		return
	}
	t.Fatal("vector sec2-two-members-as-published not found")
}

// RFC 9530 B.5, B.6, B.11 and C.1 print the sha-256 of the example object
// with a doubled '='. A strict parser rejects it and says why.
func TestRFC9530MalformedPublishedValue(t *testing.T) {
	v := loadVectors(t)
	_, err := Parse(v.Malformed)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Parse(%q) = %v, want ErrMalformed", v.Malformed, err)
	}
	const want = "content-digest: offset 52: bad base64 padding: 43 characters take one '=' or none, found 2"
	if got := err.Error(); got != want {
		t.Errorf("Parse(%q) error = %q, want %q", v.Malformed, got, want)
	}
	sum := sha256.Sum256([]byte("{\"hello\": \"world\"}\n"))
	if err := CheckSHA256(v.Malformed, sum); !errors.Is(err, ErrMalformed) {
		t.Errorf("CheckSHA256(%q) = %v, want ErrMalformed", v.Malformed, err)
	}
}

// helloSum is the sha-256 of RFC 9530's {"hello": "world"}+LF.
const (
	helloB64  = "RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg="
	hello512  = "YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg=="
	helloBody = "{\"hello\": \"world\"}\n"
)

func mustB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var parseTests = []struct {
	name    string
	field   string
	want    map[string][]byte
	wantErr string // substring of the error; empty means success
}{
	{name: "empty", field: "", want: map[string][]byte{}},
	{name: "only whitespace", field: " \t ", want: map[string][]byte{}},
	{name: "sha-256", field: "sha-256=:" + helloB64 + ":", want: map[string][]byte{"sha-256": mustB64(helloB64)}},
	{name: "surrounding whitespace", field: "  sha-256=:" + helloB64 + ":\t", want: map[string][]byte{"sha-256": mustB64(helloB64)}},
	{
		name:  "two members",
		field: "sha-256=:" + helloB64 + ":, sha-512=:" + hello512 + ":",
		want:  map[string][]byte{"sha-256": mustB64(helloB64), "sha-512": mustB64(hello512)},
	},
	{
		name:  "members without space and with tabs",
		field: "sha-256=:" + helloB64 + ":,\tsha-512=:" + hello512 + ":",
		want:  map[string][]byte{"sha-256": mustB64(helloB64), "sha-512": mustB64(hello512)},
	},
	{name: "duplicate key last wins", field: "sha-256=:AAAA:, sha-256=:" + helloB64 + ":", want: map[string][]byte{"sha-256": mustB64(helloB64)}},
	{name: "empty byte sequence", field: "sha-256=::", want: map[string][]byte{"sha-256": {}}},
	{name: "missing padding", field: "sha-256=:" + strings.TrimRight(helloB64, "=") + ":", want: map[string][]byte{"sha-256": mustB64(helloB64)}},
	{name: "missing two padding", field: "x=:YQ:", want: map[string][]byte{"x": []byte("a")}},
	{name: "non-zero pad bits", field: "x=:YR==:", want: map[string][]byte{"x": []byte("a")}},
	{
		name:  "parameters ignored",
		field: `sha-256=:` + helloB64 + `:;a=1;b="x\"y";c=tok/en:1;d=?0;e=:AA==:;f=-1.5;g=@1700000000;h=%"caf%c3%a9";i`,
		want:  map[string][]byte{"sha-256": mustB64(helloB64)},
	},
	{name: "parameter with spaces after semicolon", field: "a=::;  p=1", want: map[string][]byte{"a": {}}},
	{name: "key with all key characters", field: "*a0_-.*=:YQ==:", want: map[string][]byte{"*a0_-.*": []byte("a")}},

	{name: "uppercase key", field: "SHA-256=:" + helloB64 + ":", wantErr: "offset 0: expected key, found uppercase 'S' (keys are lowercase)"},
	{name: "uppercase inside key", field: "sHa-256=:" + helloB64 + ":", wantErr: "offset 1: uppercase 'H' in key"},
	{name: "key starts with digit", field: "1sha=::", wantErr: "offset 0: expected key (lowercase letter or '*'), found '1'"},
	{name: "bare key", field: "sha-256", wantErr: `offset 0: member "sha-256" has no value, want a byte sequence`},
	{name: "bare key with parameter", field: "sha-256;a=1", wantErr: `offset 0: member "sha-256" has no value`},
	{name: "token value", field: "sha-256=abc", wantErr: `offset 8: member "sha-256": value is a token, want a byte sequence`},
	{name: "integer value", field: "sha-256=12", wantErr: "value is a number"},
	{name: "string value", field: `sha-256="x"`, wantErr: "value is a string"},
	{name: "inner list value", field: "sha-256=(:AA==:)", wantErr: "value is an inner list"},
	{name: "boolean value", field: "sha-256=?1", wantErr: "value is a boolean"},
	{name: "missing value", field: "sha-256=", wantErr: "offset 8: member \"sha-256\": value is missing"},
	{name: "unterminated byte sequence", field: "sha-256=:" + helloB64, wantErr: "offset 53: expected ':' to end byte sequence"},
	{name: "invalid base64 character", field: "sha-256=:RK/0qy!8:", wantErr: "offset 15: invalid character '!' in byte sequence"},
	{name: "base64url character", field: "sha-256=:RK_0:", wantErr: "offset 11: invalid character '_' in byte sequence"},
	{name: "space in byte sequence", field: "sha-256=:RK/0 qy18:", wantErr: "offset 13: invalid character space in byte sequence"},
	{name: "padding in the middle", field: "x=:YQ==YQ==:", wantErr: "offset 5: '=' padding in the middle of byte sequence"},
	{name: "only padding", field: "x=:=:", wantErr: "bad base64 padding: 0 characters take none, found 1"},
	{name: "one padding for two chars", field: "x=:YQ=:", wantErr: "bad base64 padding: 2 characters take two '=' or none, found 1"},
	{name: "three padding", field: "x=:YWI===:", wantErr: "bad base64 padding"},
	{name: "length one mod four", field: "x=:YWJjZ:", wantErr: "offset 3: invalid base64: 5 characters cannot encode whole bytes"},
	{name: "trailing comma", field: "sha-256=:" + helloB64 + ":,", wantErr: "offset 54: trailing ','"},
	{name: "trailing comma and space", field: "x=::, ", wantErr: "offset 4: trailing ','"},
	{name: "leading comma", field: ",x=::", wantErr: "offset 0: expected key"},
	{name: "double comma", field: "x=::,,y=::", wantErr: "offset 5: expected key"},
	{name: "missing comma", field: "x=:: y=::", wantErr: "offset 5: expected ',' or end of field after member, found 'y'"},
	{name: "space before semicolon", field: "x=:: ;a", wantErr: "found ';'"},
	{name: "semicolon without key", field: "x=::;", wantErr: "offset 5: expected key, found end of field"},
	{name: "bad parameter value", field: "x=::;a=(1)", wantErr: "offset 7: invalid parameter value starting with '('"},
	{name: "parameter missing value", field: "x=::;a=", wantErr: "expected parameter value"},
	{name: "bad parameter boolean", field: "x=::;a=?2", wantErr: "expected '0' or '1'"},
	{name: "unterminated parameter string", field: `x=::;a="abc`, wantErr: "offset 7: unterminated string"},
	{name: "bad escape in parameter string", field: `x=::;a="a\b"`, wantErr: "invalid escape 'b'"},
	{name: "control character in parameter string", field: "x=::;a=\"a\x01\"", wantErr: "invalid character byte 0x01 in string"},
	{name: "long integer parameter", field: "x=::;a=1234567890123456", wantErr: "integer has more than 15 digits"},
	{name: "decimal parameter with four fraction digits", field: "x=::;a=1.2345", wantErr: "more than 3 fractional digits"},
	{name: "decimal parameter ending in dot", field: "x=::;a=1.", wantErr: "decimal ends with '.'"},
	{name: "decimal date parameter", field: "x=::;a=@1.5", wantErr: "date is not an integer"},
	{name: "date parameter without digits", field: "a=::;a=@", wantErr: "offset 8: expected digit in number"},
	{name: "bare minus parameter", field: "x=::;a=-", wantErr: "expected digit"},
	{name: "display string with bad utf-8", field: `x=::;a=%"%ff"`, wantErr: "not valid UTF-8"},
	{name: "display string with uppercase hex", field: `x=::;a=%"%C3%A9"`, wantErr: "two lowercase hex digits"},
	{name: "non-ascii byte", field: "x=::\xff", wantErr: "found byte 0xff"},
	{name: "newline inside", field: "x=::,\ny=::", wantErr: "offset 5: expected key (lowercase letter or '*'), found byte 0x0a"},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.field)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want error containing %q", tt.field, got, tt.wantErr)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("Parse(%q) error %v does not wrap ErrMalformed", tt.field, err)
				}
				if !strings.HasPrefix(err.Error(), "content-digest: offset ") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.field, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.field, err)
			}
			if !maps.EqualFunc(got, tt.want, bytes.Equal) {
				t.Errorf("Parse(%q) = %v, want %v", tt.field, got, tt.want)
			}
		})
	}
}

func TestTooLong(t *testing.T) {
	member := "sha-256=:" + helloB64 + ":"
	exact := member + strings.Repeat(" ", MaxFieldLen-len(member))
	if _, err := Parse(exact); err != nil {
		t.Errorf("Parse(%d bytes) = %v, want nil", len(exact), err)
	}
	field := exact + " "
	if _, err := Parse(field); !errors.Is(err, ErrTooLong) {
		t.Errorf("Parse(%d bytes) = %v, want ErrTooLong", len(field), err)
	}
	if err := Check(field, sums([]byte(helloBody))); !errors.Is(err, ErrTooLong) {
		t.Errorf("Check(%d bytes) = %v, want ErrTooLong", len(field), err)
	}
	if err := CheckSHA256(field, sha256.Sum256([]byte(helloBody))); !errors.Is(err, ErrTooLong) {
		t.Errorf("CheckSHA256(%d bytes) = %v, want ErrTooLong", len(field), err)
	}
}

func TestCheck(t *testing.T) {
	body := []byte(helloBody)
	all := sums(body)
	md5 := mustB64("Sd/dVLAcvNLSq16eXua5uQ==") // Appendix D md5, used as an opaque value
	good256 := "sha-256=:" + helloB64 + ":"
	good512 := "sha-512=:" + hello512 + ":"
	bad256 := "sha-256=:" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + ":"

	tests := []struct {
		name    string
		field   string
		sums    map[string][]byte
		wantErr error
	}{
		{name: "sha-256 matches", field: good256, sums: all},
		{name: "sha-512 matches", field: good512, sums: all},
		{name: "both match", field: good256 + ", " + good512, sums: all},
		{name: "sha-256 differs", field: bad256, sums: all, wantErr: ErrMismatch},
		{name: "one of two differs", field: bad256 + ", " + good512, sums: all, wantErr: ErrMismatch},
		{name: "differing member not in sums is ignored", field: bad256 + ", " + good512, sums: map[string][]byte{SHA512: all[SHA512]}},
		{name: "unknown algorithm ignored", field: "blake3=:AAAA:, " + good256, sums: all},
		{name: "only unknown algorithm", field: "blake3=:AAAA:", sums: all, wantErr: ErrNoSupportedAlgorithm},
		{name: "empty field", field: "", sums: all, wantErr: ErrNoSupportedAlgorithm},
		{name: "no sums", field: good256, sums: nil, wantErr: ErrNoSupportedAlgorithm},
		{name: "deprecated member alone never counts", field: "md5=:Sd/dVLAcvNLSq16eXua5uQ==:", sums: map[string][]byte{"md5": md5}, wantErr: ErrNoSupportedAlgorithm},
		{name: "deprecated member not in sums ignored", field: "md5=:AAAA:, " + good256, sums: all},
		{name: "deprecated member in sums and differing fails", field: "md5=:AAAA:, " + good256, sums: map[string][]byte{SHA256: all[SHA256], "md5": md5}, wantErr: ErrMismatch},
		{name: "deprecated member plus active match", field: "md5=:Sd/dVLAcvNLSq16eXua5uQ==:, " + good256, sums: map[string][]byte{SHA256: all[SHA256], "md5": md5}},
		{name: "duplicate key last wins good", field: bad256 + ", " + good256, sums: all},
		{name: "duplicate key last wins bad", field: good256 + ", " + bad256, sums: all, wantErr: ErrMismatch},
		{name: "wrong length digest", field: "sha-256=:AAAA:", sums: all, wantErr: ErrMismatch},
		{name: "parameters ignored", field: good256 + ";q=1", sums: all},
		{name: "malformed", field: good256 + ",", sums: all, wantErr: ErrMalformed},
		{name: "malformed after match", field: good256 + ", sha-512=x", sums: all, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.field, tt.sums)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("Check(%q) = %v, want %v", tt.field, err, tt.wantErr)
			}
		})
	}
}

func TestCheckMismatchNamesAlgorithm(t *testing.T) {
	err := Check("sha-512=:AAAA:", sums(nil))
	if got, want := err.Error(), "content-digest: sha-512: digest mismatch"; got != want {
		t.Errorf("Check error = %q, want %q", got, want)
	}
}

func TestCheckSHA256(t *testing.T) {
	sum := sha256.Sum256([]byte(helloBody))
	tests := []struct {
		name    string
		field   string
		wantErr error
	}{
		{name: "match", field: "sha-256=:" + helloB64 + ":"},
		{name: "match among others", field: "sha-512=:AAAA:, sha-256=:" + helloB64 + ":;p=1, md5=::"},
		{name: "unpadded match", field: "sha-256=:" + strings.TrimRight(helloB64, "=") + ":"},
		{name: "mismatch", field: "sha-256=:" + strings.Repeat("A", 43) + "=:", wantErr: ErrMismatch},
		{name: "short digest", field: "sha-256=:" + helloB64[:40] + ":", wantErr: ErrMismatch},
		{name: "last duplicate wins", field: "sha-256=:" + helloB64 + ":, sha-256=::", wantErr: ErrMismatch},
		{name: "only sha-512", field: "sha-512=:" + hello512 + ":", wantErr: ErrNoSupportedAlgorithm},
		{name: "empty", field: "", wantErr: ErrNoSupportedAlgorithm},
		{name: "malformed", field: "sha-256=:" + helloB64, wantErr: ErrMalformed},
		{name: "uppercase algorithm", field: "SHA-256=:" + helloB64 + ":", wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSHA256(tt.field, sum)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("CheckSHA256(%q) = %v, want %v", tt.field, err, tt.wantErr)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		sum  [32]byte
		want string
	}{
		{name: "zero", sum: [32]byte{}, want: "sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"},
		{name: "hello", sum: sha256.Sum256([]byte(helloBody)), want: "sha-256=:" + helloB64 + ":"},
		{name: "empty content", sum: sha256.Sum256(nil), want: "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Format(tt.sum); got != tt.want {
				t.Errorf("Format() = %q, want %q", got, tt.want)
			}
			if got := string(AppendFormat([]byte("x"), tt.sum)); got != "x"+tt.want {
				t.Errorf("AppendFormat(x) = %q, want %q", got, "x"+tt.want)
			}
			if err := CheckSHA256(tt.want, tt.sum); err != nil {
				t.Errorf("CheckSHA256(Format()) = %v", err)
			}
		})
	}
}

func TestNoAllocs(t *testing.T) {
	sum := sha256.Sum256([]byte(helloBody))
	field := "sha-512=:" + hello512 + ":;p=\"x\", sha-256=:" + helloB64 + ":"
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { _ = AppendFormat(buf[:0], sum) }); n != 0 {
		t.Errorf("AppendFormat allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = Format(sum) }); n > 1 {
		t.Errorf("Format allocates %v times, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if CheckSHA256(field, sum) != nil {
			panic("mismatch")
		}
	}); n != 0 {
		t.Errorf("CheckSHA256 allocates %v times, want 0", n)
	}
}

func BenchmarkAppendFormat(b *testing.B) {
	sum := sha256.Sum256([]byte(helloBody))
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = AppendFormat(buf[:0], sum)
	}
}

func BenchmarkCheckSHA256(b *testing.B) {
	sum := sha256.Sum256([]byte(helloBody))
	field := Format(sum)
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckSHA256(field, sum); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	s := sums([]byte(helloBody))
	field := "sha-256=:" + helloB64 + ":, sha-512=:" + hello512 + ":"
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(field, s); err != nil {
			b.Fatal(err)
		}
	}
}
