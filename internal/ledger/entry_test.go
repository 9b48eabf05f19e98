package ledger_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

var update = flag.Bool("update", false, "rewrite testdata/leaves.json")

func sampleConfirmation() ledger.Entry { return ledgertest.Entry(0) }
func sampleOmission() ledger.Entry     { return ledgertest.Entry(6) }

func TestEntryLayout(t *testing.T) {
	// The smallest confirmation: every string empty.
	b, err := (&ledger.Entry{Kind: ledger.KindConfirmation}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(b), 2+7*2+8+64+8*3+8; got != want {
		t.Errorf("empty confirmation: %d bytes, want %d", got, want)
	}
	e := ledger.Entry{
		Kind: ledger.KindConfirmation, MessageID: "ab", Seq: 0x0102030405060708, Source: "s",
		Destination: "d", SourceIdentity: "si", DestinationIdentity: "di", Protocol: "http",
		RequestBytes: -1, ResponseBytes: 2, AtUnixNano: 3, InstanceID: "i", BatchSeq: 4,
	}
	e.RequestDigest[0], e.ResponseDigest[31] = 0xaa, 0xbb
	b, err = e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	want = append(want, 1, 1, 0, 2, 'a', 'b', 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 's', 0, 1, 'd', 0, 2, 's', 'i', 0, 2, 'd', 'i', 0, 4, 'h', 't', 't', 'p')
	want = append(want, 0xaa)
	want = append(want, make([]byte, 31+31)...)
	want = append(want, 0xbb)
	want = append(want, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 'i', 0, 0, 0, 0, 0, 0, 0, 4)
	if !bytes.Equal(b, want) {
		t.Errorf("layout:\n got %x\nwant %x", b, want)
	}
}

type leafVector struct {
	Name     string       `json:"name"`
	Entry    ledger.Entry `json:"entry"`
	Leaf     string       `json:"leaf_hex"`
	LeafHash string       `json:"leaf_hash_hex"`
}

// TestGolden pins the encoding: testdata/leaves.json holds entries, their
// leaves and leaf hashes. Regenerate with -update only for a new version.
func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "leaves.json")
	entries := []struct {
		name string
		e    ledger.Entry
	}{
		{"confirmation", sampleConfirmation()},
		{"omission", sampleOmission()},
		{"empty confirmation", ledger.Entry{Kind: ledger.KindConfirmation}},
		{"empty omission", ledger.Entry{Kind: ledger.KindOmission}},
		{"unicode", ledger.Entry{Kind: ledger.KindOmission, Detail: "längd ≠ 5 — 🙂"}},
	}
	if *update {
		var vs []leafVector
		for _, c := range entries {
			b, err := c.e.Encode()
			if err != nil {
				t.Fatal(err)
			}
			h := ledger.LeafHash(b)
			vs = append(vs, leafVector{Name: c.name, Entry: c.e, Leaf: hex.EncodeToString(b), LeafHash: hex.EncodeToString(h[:])})
		}
		out, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []leafVector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != len(entries) {
		t.Fatalf("%d vectors, want %d (run with -update)", len(vs), len(entries))
	}
	for i, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			if !reflect.DeepEqual(v.Entry, entries[i].e) {
				t.Fatalf("vector entry differs from the test's")
			}
			b, err := v.Entry.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(b); got != v.Leaf {
				t.Errorf("leaf:\n got %s\nwant %s", got, v.Leaf)
			}
			h := ledger.LeafHash(b)
			if got := hex.EncodeToString(h[:]); got != v.LeafHash {
				t.Errorf("leaf hash: got %s, want %s", got, v.LeafHash)
			}
			d, err := ledger.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d, v.Entry) {
				t.Errorf("decode: got %+v, want %+v", d, v.Entry)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for i := range 50 {
		e := ledgertest.Entry(i)
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		d, err := ledger.Decode(b)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !reflect.DeepEqual(d, e) {
			t.Errorf("entry %d: got %+v, want %+v", i, d, e)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", ledger.MaxString+1)
	tests := []struct {
		name  string
		e     ledger.Entry
		field string
	}{
		{name: "no kind", e: ledger.Entry{}, field: "kind"},
		{name: "unknown kind", e: ledger.Entry{Kind: 3}, field: "kind"},
		{name: "long message id", e: ledger.Entry{Kind: ledger.KindConfirmation, MessageID: long}, field: "message_id"},
		{name: "long detail", e: ledger.Entry{Kind: ledger.KindOmission, Detail: strings.Repeat("x", ledger.MaxDetail+1)}, field: "detail"},
		{name: "not utf-8", e: ledger.Entry{Kind: ledger.KindConfirmation, Source: "\xff"}, field: "source"},
		{name: "detail on confirmation", e: ledger.Entry{Kind: ledger.KindConfirmation, Detail: "x"}, field: "detail"},
		{name: "reporter on confirmation", e: ledger.Entry{Kind: ledger.KindConfirmation, Reporter: "caller"}, field: "reporter"},
		{name: "protocol on omission", e: ledger.Entry{Kind: ledger.KindOmission, Protocol: "http"}, field: "protocol"},
		{name: "digest on omission", e: ledger.Entry{Kind: ledger.KindOmission, RequestDigest: [32]byte{1}}, field: "request_digest"},
		{name: "bytes on omission", e: ledger.Entry{Kind: ledger.KindOmission, ResponseBytes: 1}, field: "response_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("keep")
			b, err := tt.e.AppendBinary(prefix)
			var ee *ledger.EntryError
			if !errors.As(err, &ee) || !errors.Is(err, ledger.ErrMalformed) {
				t.Fatalf("got %v, want an *EntryError", err)
			}
			if ee.Field != tt.field {
				t.Errorf("field: got %q, want %q (%v)", ee.Field, tt.field, err)
			}
			if string(b) != "keep" {
				t.Errorf("AppendBinary changed b on error: %q", b)
			}
		})
	}
	// At the limit is fine.
	if _, err := (&ledger.Entry{Kind: ledger.KindOmission, MessageID: long[1:], Detail: strings.Repeat("y", ledger.MaxDetail)}).Encode(); err != nil {
		t.Errorf("at the limits: %v", err)
	}
}

// setU16 returns a copy of b with a big-endian uint16 at off.
func setU16(b []byte, off int, v uint16) []byte {
	c := bytes.Clone(b)
	c[off], c[off+1] = byte(v>>8), byte(v)
	return c
}

func decodeCases(t testing.TB) []struct {
	name   string
	b      []byte
	field  string
	offset int
} {
	conf, err := (&ledger.Entry{Kind: ledger.KindConfirmation, MessageID: "m"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	om, err := (&ledger.Entry{Kind: ledger.KindOmission, Source: "s"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	badUTF8 := bytes.Clone(conf)
	badUTF8[4] = 0xff // message_id's byte
	return []struct {
		name   string
		b      []byte
		field  string
		offset int
	}{
		{"empty", nil, "version", 0},
		{"version 0", append([]byte{0}, conf[1:]...), "version", 0},
		{"version 2", append([]byte{2}, conf[1:]...), "version", 0},
		{"garbage prefix", append([]byte{0x30}, conf...), "version", 0},
		{"version only", []byte{1}, "kind", 1},
		{"unknown kind", []byte{1, 9}, "kind", 1},
		{"no fields", []byte{1, 1}, "message_id", 2},
		{"trailing byte", append(bytes.Clone(conf), 0), "end", len(conf)},
		{"trailing bytes omission", append(bytes.Clone(om), 1, 2), "end", len(om)},
		{"truncated", conf[:len(conf)-1], "batch_seq", len(conf) - 8},
		{"string past end", setU16(conf, 2, 200), "message_id", 2},
		{"overlong string", setU16(conf, 2, ledger.MaxString+1), "message_id", 2},
		{"overlong detail", setU16(om, 33, ledger.MaxDetail+1), "detail", 33},
		{"not utf-8", badUTF8, "message_id", 2},
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tt := range decodeCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ledger.Decode(tt.b)
			var ee *ledger.EntryError
			if !errors.As(err, &ee) || !errors.Is(err, ledger.ErrMalformed) {
				t.Fatalf("got %v, want an *EntryError", err)
			}
			if ee.Field != tt.field || ee.Offset != tt.offset {
				t.Errorf("got field %q at %d, want %q at %d (%v)", ee.Field, ee.Offset, tt.field, tt.offset, err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("message %q does not name the field", err)
			}
		})
	}
}

// TestDecodeEveryPrefix feeds every proper prefix and every one-bit flip of
// real leaves: prefixes must fail, and a flip must fail or decode to an entry
// that encodes back to the flipped bytes.
func TestDecodeEveryPrefix(t *testing.T) {
	for _, e := range []ledger.Entry{sampleConfirmation(), sampleOmission()} {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			if _, err := ledger.Decode(b[:n]); err == nil {
				t.Errorf("%v: prefix of %d/%d bytes decoded", e.Kind, n, len(b))
			}
		}
		for i := range len(b) * 8 {
			c := bytes.Clone(b)
			c[i/8] ^= 1 << (i % 8)
			d, err := ledger.Decode(c)
			if err != nil {
				continue
			}
			back, err := d.Encode()
			if err != nil || !bytes.Equal(back, c) {
				t.Errorf("%v: bit %d flipped: decoded but encodes to %x (%v)", e.Kind, i, back, err)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range []ledger.Entry{sampleConfirmation(), sampleOmission(), {Kind: ledger.KindConfirmation}, {Kind: ledger.KindOmission}} {
		b, err := e.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range decodeCases(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ledger.Decode(b)
		if err != nil {
			var ee *ledger.EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("error %v is not an *EntryError", err)
			}
			return
		}
		// Canonical: decoding then encoding gives the same bytes back.
		back, err := e.Encode()
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		if !bytes.Equal(back, b) {
			t.Fatalf("round trip:\n got %x\nwant %x", back, b)
		}
		again, err := ledger.Decode(back)
		if err != nil || !reflect.DeepEqual(again, e) {
			t.Fatalf("second decode: %+v, %v", again, err)
		}
	})
}
