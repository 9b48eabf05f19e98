package control

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "", want: defaultLimit},
		{in: "1", want: 1},
		{in: "1000", want: 1000},
		{in: "0", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1001", wantErr: true},
		{in: "ten", wantErr: true},
		{in: "1.5", wantErr: true},
		{in: " 5", wantErr: true},
	} {
		got, err := parseLimit(tc.in)
		if (err != nil) != tc.wantErr || err == nil && got != tc.want {
			t.Errorf("parseLimit(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "limit ") {
			t.Errorf("parseLimit(%q) error %q does not name the parameter", tc.in, err)
		}
	}
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"", "1", "100", "1000", "0", "1001", "-3", "x", "007", "+5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseLimit(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "limit ") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if n < 1 || n > maxLimit {
			t.Fatalf("parseLimit(%q) = %d, out of range", s, n)
		}
	})
}

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: ""},
		{in: "2025-03-04T05:06:07Z", want: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)},
		{in: "2025-03-04T05:06:07.123456789Z", want: time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)},
		{in: "2025-03-04T07:06:07+02:00", want: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)},
		{in: "2025-03-04", wantErr: true},
		{in: "yesterday", wantErr: true},
		{in: "1700000000", wantErr: true},
	} {
		got, err := parseSince(tc.in)
		if (err != nil) != tc.wantErr || err == nil && !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"", "2025-03-04T05:06:07Z", "2025-03-04T05:06:07.123456789+01:00", "2025-13-01T00:00:00Z", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseSince(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "since ") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if s == "" {
			return
		}
		// Round trip: the formatted time parses to the same instant.
		again, err := parseSince(got.Format(time.RFC3339Nano))
		if err != nil {
			t.Fatalf("re-parsing %q (from %q): %v", got.Format(time.RFC3339Nano), s, err)
		}
		if !again.Equal(got) {
			t.Fatalf("round trip of %q: %v, want %v", s, again, got)
		}
	})
}

func FuzzParseKind(f *testing.F) {
	f.Add("")
	for _, k := range OmissionKinds {
		f.Add(k)
	}
	f.Add("Truncated")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseKind(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kind ") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if k != s {
			t.Fatalf("parseKind(%q) = %q", s, k)
		}
	})
}

func FuzzParseOrder(f *testing.F) {
	for _, s := range []string{"", "asc", "desc", "DESC", "up"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		desc, err := parseOrder(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "order ") {
				t.Fatalf("error %q does not name the parameter", err)
			}
			return
		}
		if desc != (s == "desc") {
			t.Fatalf("parseOrder(%q) = %v", s, desc)
		}
	})
}

func TestParseCursor(t *testing.T) {
	c := encodeCursor(cursorEdges, "frontend orders")
	if got, err := parseCursor(c, cursorEdges); err != nil || got != "frontend orders" {
		t.Errorf("parseCursor(own) = %q, %v", got, err)
	}
	for _, tc := range []struct{ name, in string }{
		{"other list", encodeCursor(cursorServices, "orders")},
		{"not base64", "!!!"},
		{"padded", c + "="},
		{"empty key", encodeCursor(cursorEdges, "")},
		{"too long", strings.Repeat("A", 600)},
	} {
		if _, err := parseCursor(tc.in, cursorEdges); err == nil || !strings.HasPrefix(err.Error(), "cursor: ") {
			t.Errorf("%s: parseCursor(%q) error = %v, want a cursor error", tc.name, tc.in, err)
		}
	}
}

func FuzzParseCursor(f *testing.F) {
	f.Add(encodeCursor(cursorOmissions, "42"), "42")
	f.Add(encodeCursor(cursorEdges, "a b"), "a b")
	f.Add("bzE6", "")
	f.Add("", "x")
	f.Fuzz(func(t *testing.T, s, key string) {
		// Any input: an error that names the parameter, or a key.
		if k, err := parseCursor(s, cursorOmissions); err != nil {
			if !strings.HasPrefix(err.Error(), "cursor: ") {
				t.Fatalf("error %q does not name the parameter", err)
			}
		} else if s != "" && k == "" {
			t.Fatalf("parseCursor(%q) = empty key, no error", s)
		}
		// Round trip of a cursor we made.
		if key == "" {
			return
		}
		c := encodeCursor(cursorEdges, key)
		got, err := parseCursor(c, cursorEdges)
		if len(c) > 512 {
			if err == nil {
				t.Fatalf("a %d-character cursor parsed", len(c))
			}
			return
		}
		if err != nil || got != key {
			t.Fatalf("round trip of %q: %q, %v", key, got, err)
		}
		if _, err := parseCursor(c, cursorServices); err == nil {
			t.Fatal("an edges cursor parsed as a services cursor")
		}
	})
}

func FuzzParseOmissionQuery(f *testing.F) {
	f.Add("kind=truncated&since=2025-01-01T00:00:00Z&limit=5&order=desc&cursor=" + encodeCursor(cursorOmissions, "7"))
	f.Add("cursor=" + encodeCursor(cursorOmissions, "x"))
	f.Add("limit=0")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseOmissionQuery(v.Get)
		if err != nil {
			return
		}
		if q.Limit < 1 || q.Limit > maxLimit {
			t.Fatalf("limit %d out of range", q.Limit)
		}
		if v.Get("cursor") != "" && q.After == 0 {
			t.Fatalf("cursor %q gave After 0", v.Get("cursor"))
		}
	})
}

func TestParseFault(t *testing.T) {
	for _, tc := range []struct {
		name, kind, body string
		want             Fault
		wantErr          string
	}{
		{name: "empty body", kind: "drop", want: Fault{Kind: "drop", From: "*", To: "*", Percent: 100}},
		{name: "full", kind: "truncate", body: `{"from":"frontend","to":"orders","percent":5,"delay_ms":0}`,
			want: Fault{Kind: "truncate", From: "frontend", To: "orders", Percent: 5}},
		{name: "delay default", kind: "delay", body: `{}`, want: Fault{Kind: "delay", From: "*", To: "*", Percent: 100, DelayMS: defaultFaultDelay}},
		{name: "delay", kind: "delay", body: `{"delay_ms":250}`, want: Fault{Kind: "delay", From: "*", To: "*", Percent: 100, DelayMS: 250}},
		{name: "unknown kind", kind: "explode", wantErr: "kind "},
		{name: "percent high", kind: "drop", body: `{"percent":101}`, wantErr: "percent "},
		{name: "percent negative", kind: "drop", body: `{"percent":-1}`, wantErr: "percent "},
		{name: "bad from", kind: "drop", body: `{"from":"Front End"}`, wantErr: "from: "},
		{name: "empty to", kind: "drop", body: `{"to":""}`, wantErr: "to: "},
		{name: "delay on drop ignored", kind: "drop", body: `{"delay_ms":500}`, want: Fault{Kind: "drop", From: "*", To: "*", Percent: 100}},
		{name: "delay on drop out of range", kind: "drop", body: `{"delay_ms":-5}`, wantErr: "delay_ms "},
		{name: "delay zero", kind: "delay", body: `{"delay_ms":0}`, wantErr: "delay_ms "},
		{name: "unknown field", kind: "drop", body: `{"percentage":5}`, wantErr: "body: "},
		{name: "trailing", kind: "drop", body: `{} {}`, wantErr: "body: "},
		{name: "not json", kind: "drop", body: `percent=5`, wantErr: "body: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFault(tc.kind, []byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseFault(f *testing.F) {
	f.Add("drop", []byte(""))
	f.Add("delay", []byte(`{"from":"*","to":"*","percent":100,"delay_ms":0}`))
	f.Add("truncate", []byte(`{"from":"frontend","to":"orders","percent":5}`))
	f.Add("misroute", []byte(`{"percent":1e2}`))
	f.Add("abort", []byte(`{"from":null}`))
	f.Fuzz(func(t *testing.T, kind string, body []byte) {
		got, err := parseFault(kind, body)
		if err != nil {
			return
		}
		if !(got.Percent >= 0 && got.Percent <= 100) || got.DelayMS < 0 || got.DelayMS > maxFaultDelay {
			t.Fatalf("accepted out-of-range fault %+v", got)
		}
		// Round trip: the fault's own JSON (kind aside) parses to itself.
		b, err := json.Marshal(map[string]any{"from": got.From, "to": got.To, "percent": got.Percent, "delay_ms": got.DelayMS})
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseFault(got.Kind, b)
		if err != nil || again != got {
			t.Fatalf("round trip of %+v via %s: %+v, %v", got, b, again, err)
		}
	})
}

func TestParseTokenTTL(t *testing.T) {
	for _, tc := range []struct {
		body    string
		want    time.Duration
		wantErr bool
	}{
		{body: "", want: defaultTokenTTL},
		{body: `{}`, want: defaultTokenTTL},
		{body: `{"ttl":"30m"}`, want: 30 * time.Minute},
		{body: `{"ttl":"8760h"}`, want: maxTokenTTL},
		{body: `{"ttl":"8761h"}`, wantErr: true},
		{body: `{"ttl":"-1h"}`, wantErr: true},
		{body: `{"ttl":"1"}`, wantErr: true},
		{body: `{"ttl":3600}`, wantErr: true},
		{body: `{"ttl":"1h","x":1}`, wantErr: true},
	} {
		got, err := parseTokenTTL([]byte(tc.body))
		if (err != nil) != tc.wantErr || err == nil && got != tc.want {
			t.Errorf("parseTokenTTL(%s) = %v, %v; want %v, error %v", tc.body, got, err, tc.want, tc.wantErr)
		}
	}
}

func FuzzParseTokenTTL(f *testing.F) {
	for _, s := range []string{"", `{}`, `{"ttl":"1h"}`, `{"ttl":"1h30m"}`, `{"ttl":"0s"}`, `{"ttl":"999999h"}`, `{"ttl":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := parseTokenTTL(body)
		if err != nil {
			if !utf8.ValidString(err.Error()) && utf8.Valid(body) {
				t.Fatalf("error not UTF-8: %q", err)
			}
			return
		}
		if d < minTokenTTL || d > maxTokenTTL {
			t.Fatalf("ttl %v out of range", d)
		}
		// Round trip through the duration's own text.
		b, _ := json.Marshal(tokenRequest{TTL: d.String()})
		again, err := parseTokenTTL(b)
		if err != nil || again != d {
			t.Fatalf("round trip of %v: %v, %v", d, again, err)
		}
	})
}
