package wire

import (
	"encoding/hex"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
)

func TestHeaderNamesCanonical(t *testing.T) {
	for _, h := range []string{
		HeaderMessageID, HeaderSeq, HeaderInstance, HeaderDestination, HeaderProtocol,
		HeaderLength, HeaderRequestDigest, HeaderReceipt, HeaderOmission, HeaderContentDigest,
	} {
		if got := textproto.CanonicalMIMEHeaderKey(h); got != h {
			t.Errorf("CanonicalMIMEHeaderKey(%q) = %q, want it unchanged", h, got)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if err := ParseID(id); err != nil {
			t.Fatalf("ParseID(NewID()) = %v", err)
		}
		if seen[id] {
			t.Fatalf("NewID() returned %q twice", id)
		}
		seen[id] = true
	}
}

var parseIDTests = []struct {
	name    string
	in      string
	wantErr string // substring; empty means valid
}{
	{name: "valid", in: "0123456789abcdef0123456789abcdef"},
	{name: "all zero", in: strings.Repeat("0", 32)},
	{name: "empty", in: "", wantErr: `id "": 0 characters, want 32`},
	{name: "short", in: strings.Repeat("a", 31), wantErr: "31 characters, want 32"},
	{name: "long", in: strings.Repeat("a", 33), wantErr: "33 characters, want 32"},
	{name: "uppercase", in: "0123456789ABCDEF0123456789abcdef", wantErr: "'A' at offset 10, want lowercase hex (uppercase is not allowed)"},
	{name: "non-hex letter", in: "0123456789abcdeg0123456789abcdef", wantErr: "'g' at offset 15, want lowercase hex"},
	{name: "uuid with dashes", in: "01234567-89ab-cdef-0123-456789ab", wantErr: "'-' at offset 8"},
	{name: "space", in: " 123456789abcdef0123456789abcdef", wantErr: "space at offset 0"},
	{name: "non-ascii", in: "\xff123456789abcdef0123456789abcdef", wantErr: "byte 0xff at offset 0"},
	{name: "very long is truncated in error", in: strings.Repeat("z", 1000), wantErr: `z"...: 1000 characters`},
}

func TestParseID(t *testing.T) {
	for _, tt := range parseIDTests {
		t.Run(tt.name, func(t *testing.T) {
			err := ParseID(tt.in)
			checkErr(t, "ParseID", tt.in, err, tt.wantErr)
			if err != nil && len(err.Error()) > 200 {
				t.Errorf("ParseID error is %d bytes long, want the input truncated", len(err.Error()))
			}
		})
	}
}

func checkErr(t *testing.T, fn, in string, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("%s(%q) = %v, want nil", fn, in, err)
	case wantErr != "" && err == nil:
		t.Errorf("%s(%q) = nil, want error containing %q", fn, in, wantErr)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("%s(%q) = %q, want error containing %q", fn, in, err, wantErr)
	}
}

var parseSeqTests = []struct {
	name    string
	in      string
	want    uint64
	wantErr string
}{
	{name: "one", in: "1", want: 1},
	{name: "typical", in: "12345", want: 12345},
	{name: "max", in: "18446744073709551615", want: 1<<64 - 1},
	{name: "zero", in: "0", wantErr: `sequence "0": zero, sequences start at 1`},
	{name: "empty", in: "", wantErr: `sequence "": empty`},
	{name: "overflow", in: "18446744073709551616", wantErr: "out of range"},
	{name: "21 digits", in: "100000000000000000000", wantErr: "21 characters, at most 20 digits"},
	{name: "plus sign", in: "+1", wantErr: "'+' at offset 0, want a decimal digit"},
	{name: "minus sign", in: "-1", wantErr: "'-' at offset 0"},
	{name: "leading zero", in: "01", wantErr: "leading zero"},
	{name: "space", in: "1 ", wantErr: "space at offset 1"},
	{name: "hex", in: "0x10", wantErr: "'x' at offset 1"},
	{name: "underscore", in: "1_000", wantErr: "'_' at offset 1"},
}

func TestParseSeq(t *testing.T) {
	for _, tt := range parseSeqTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSeq(tt.in)
			checkErr(t, "ParseSeq", tt.in, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("ParseSeq(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

var parseLengthTests = []struct {
	name    string
	in      string
	want    int64
	wantErr string
}{
	{name: "zero", in: "0", want: 0},
	{name: "typical", in: "19", want: 19},
	{name: "max", in: "9223372036854775807", want: 1<<63 - 1},
	{name: "overflow", in: "9223372036854775808", wantErr: "out of range"},
	{name: "20 digits", in: "10000000000000000000", wantErr: "at most 19 digits"},
	{name: "negative", in: "-1", wantErr: "'-' at offset 0"},
	{name: "plus", in: "+1", wantErr: "'+' at offset 0"},
	{name: "leading zero", in: "007", wantErr: "leading zero"},
	{name: "double zero", in: "00", wantErr: "leading zero"},
	{name: "empty", in: "", wantErr: `length "": empty`},
	{name: "decimal point", in: "1.0", wantErr: "'.' at offset 1"},
}

func TestParseLength(t *testing.T) {
	for _, tt := range parseLengthTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLength(tt.in)
			checkErr(t, "ParseLength", tt.in, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("ParseLength(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidServiceName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "simple", in: "orders"},
		{name: "with dash and digits", in: "orders-v2"},
		{name: "single char", in: "a"},
		{name: "leading digit", in: "1password"},
		{name: "63 chars", in: strings.Repeat("a", 63)},
		{name: "64 chars", in: strings.Repeat("a", 64), wantErr: "64 characters, at most 63"},
		{name: "empty", in: "", wantErr: "service name: empty"},
		{name: "uppercase", in: "Orders", wantErr: "uppercase 'O' at offset 0, want lowercase"},
		{name: "leading dash", in: "-orders", wantErr: "starts or ends with '-'"},
		{name: "trailing dash", in: "orders-", wantErr: "starts or ends with '-'"},
		{name: "dot", in: "orders.mesh", wantErr: "'.' at offset 6, a service name is a single DNS label"},
		{name: "underscore", in: "my_orders", wantErr: "'_' at offset 2"},
		{name: "non-ascii", in: "ørders", wantErr: "byte 0xc3 at offset 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, "ValidServiceName", tt.in, ValidServiceName(tt.in), tt.wantErr)
		})
	}
}

var serviceFromHostTests = []struct {
	name    string
	in      string
	want    string
	wantErr string
}{
	{name: "bare", in: "orders", want: "orders"},
	{name: "port", in: "orders:80", want: "orders"},
	{name: "mesh", in: "orders.mesh", want: "orders"},
	{name: "mesh and port", in: "orders.mesh:8080", want: "orders"},
	{name: "uppercase", in: "ORDERS", want: "orders"},
	{name: "mixed case mesh", in: "Orders.MESH:80", want: "orders"},
	{name: "trailing dot", in: "orders.", want: "orders"},
	{name: "mesh trailing dot", in: "orders.mesh.", want: "orders"},
	{name: "mesh trailing dot port", in: "orders.mesh.:443", want: "orders"},
	{name: "empty port", in: "orders:", want: "orders"},
	{name: "service named mesh", in: "mesh", want: "mesh"},
	{name: "service named mesh under mesh", in: "mesh.mesh", want: "mesh"},
	{name: "empty", in: "", wantErr: "host: empty"},
	{name: "only mesh suffix", in: ".mesh", wantErr: `host ".mesh": service name ".mesh"`},
	{name: "two mesh suffixes", in: "orders.mesh.mesh", wantErr: "'.' at offset 6"},
	{name: "other domain", in: "orders.default.svc", wantErr: "'.' at offset 6"},
	{name: "two trailing dots", in: "orders..", wantErr: "'.' at offset 6"},
	{name: "ipv4", in: "127.0.0.1", wantErr: "IP literal"},
	{name: "ipv4 port", in: "127.0.0.1:8080", wantErr: "IP literal"},
	{name: "ipv4 mesh", in: "10.0.0.1.mesh", wantErr: "'.' at offset"},
	{name: "ipv6 bracketed", in: "[::1]:80", wantErr: "IP literal"},
	{name: "ipv6 bare", in: "::1", wantErr: "IP literal"},
	{name: "ipv6 full bare", in: "2001:db8::1", wantErr: "IP literal"},
	{name: "bad port", in: "orders:http", wantErr: `port "http": 'h' at offset 0`},
	{name: "port too large", in: "orders:65536", wantErr: "out of range"},
	{name: "port too long", in: "orders:000080", wantErr: "too long"},
	{name: "userinfo", in: "user@orders", wantErr: "'@' at offset 4"},
	{name: "kelvin sign does not become k", in: "\u212aafka", wantErr: "byte 0xe2"},
	{name: "too long", in: strings.Repeat("a", 64) + ".mesh", wantErr: "64 characters"},
	{name: "only port", in: ":80", wantErr: "service name: empty"},
	{name: "only dot", in: ".", wantErr: "service name: empty"},
}

func TestServiceFromHost(t *testing.T) {
	for _, tt := range serviceFromHostTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ServiceFromHost(tt.in)
			checkErr(t, "ServiceFromHost", tt.in, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("ServiceFromHost(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestServiceFromHostNoAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = ServiceFromHost("orders.mesh:8080") }); n != 0 {
		t.Errorf("ServiceFromHost allocates %v times, want 0", n)
	}
}

func FuzzParseID(f *testing.F) {
	for _, tt := range parseIDTests {
		f.Add(tt.in)
	}
	f.Add(NewID())
	f.Fuzz(func(t *testing.T, s string) {
		if err := ParseID(s); err != nil {
			return
		}
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 16 || hex.EncodeToString(b) != s {
			t.Fatalf("ParseID(%q) = nil, but it is not 16 bytes of lowercase hex", s)
		}
	})
}

func FuzzParseSeq(f *testing.F) {
	for _, tt := range parseSeqTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSeq(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseSeq(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n == 0 {
			t.Fatalf("ParseSeq(%q) = 0 without error", s)
		}
		if back := strconv.FormatUint(n, 10); back != s {
			t.Fatalf("ParseSeq(%q) = %d, which formats as %q", s, n, back)
		}
		if m, err := strconv.ParseUint(s, 10, 64); err != nil || m != n {
			t.Fatalf("ParseSeq(%q) = %d, strconv.ParseUint = %d, %v", s, n, m, err)
		}
	})
}

func FuzzParseLength(f *testing.F) {
	for _, tt := range parseLengthTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseLength(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseLength(%q) = %d < 0", s, n)
		}
		if back := strconv.FormatInt(n, 10); back != s {
			t.Fatalf("ParseLength(%q) = %d, which formats as %q", s, n, back)
		}
	})
}

func FuzzServiceFromHost(f *testing.F) {
	for _, tt := range serviceFromHostTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, host string) {
		name, err := ServiceFromHost(host)
		if err != nil {
			if name != "" {
				t.Fatalf("ServiceFromHost(%q) = %q with error %v", host, name, err)
			}
			return
		}
		if err := ValidServiceName(name); err != nil {
			t.Fatalf("ServiceFromHost(%q) = %q, which is not valid: %v", host, name, err)
		}
		if !strings.Contains(strings.ToLower(host), name) {
			t.Fatalf("ServiceFromHost(%q) = %q, which is not in the host", host, name)
		}
		// The name round-trips through every form a caller may use.
		for _, h := range []string{name, name + ":80", name + ".mesh", name + ".mesh.:8080", strings.ToUpper(name)} {
			if got, err := ServiceFromHost(h); err != nil || got != name {
				t.Fatalf("ServiceFromHost(%q) = %q, %v, want %q", h, got, err, name)
			}
		}
	})
}
