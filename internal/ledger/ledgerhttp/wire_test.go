package ledgerhttp

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

var recordTests = []struct {
	name  string
	entry ledger.Entry
	json  string
}{
	{
		name: "confirmation",
		entry: ledger.Entry{Kind: ledger.KindConfirmation, MessageID: "m1", Seq: 7, Source: "frontend", Destination: "orders",
			SourceIdentity: "spiffe://mesh.local/svc/frontend", DestinationIdentity: "spiffe://mesh.local/svc/orders",
			Protocol: "http", RequestDigest: [32]byte{1}, ResponseDigest: [32]byte{31: 2}, RequestBytes: 10, ResponseBytes: -1,
			AtUnixNano: 1767322445000000001, InstanceID: "frontend-7f9c", BatchSeq: 3},
		json: `{"kind":"confirmation","message_id":"m1","seq":7,"source":"frontend","destination":"orders",` +
			`"source_identity":"spiffe://mesh.local/svc/frontend","destination_identity":"spiffe://mesh.local/svc/orders",` +
			`"protocol":"http","request_digest":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",` +
			`"response_digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=","request_bytes":10,"response_bytes":-1,` +
			`"confirmed_at":"2026-01-02T02:54:05.000000001Z","instance_id":"frontend-7f9c","batch_seq":3}`,
	},
	{
		name: "omission",
		entry: ledger.Entry{Kind: ledger.KindOmission, EventID: "e1", OmissionKind: "truncated", Source: "a", Destination: "b",
			MessageID: "m2", Seq: 1, AtUnixNano: -1, Detail: "3 of 5 bytes", Reporter: "caller"},
		json: `{"kind":"omission","event_id":"e1","omission_kind":"truncated","source":"a","destination":"b",` +
			`"source_identity":"","destination_identity":"","message_id":"m2","seq":1,"detected_at":"1969-12-31T23:59:59.999999999Z",` +
			`"detail":"3 of 5 bytes","reporter":"caller","instance_id":"","batch_seq":0}`,
	},
	{name: "zero confirmation", entry: ledger.Entry{Kind: ledger.KindConfirmation},
		json: `{"kind":"confirmation","message_id":"","seq":0,"source":"","destination":"","source_identity":"","destination_identity":"",` +
			`"protocol":"","request_digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","response_digest":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",` +
			`"request_bytes":0,"response_bytes":0,"confirmed_at":"1970-01-01T00:00:00Z","instance_id":"","batch_seq":0}`},
	{name: "sample confirmation", entry: ledgertest.Entry(1)},
	{name: "sample omission", entry: ledgertest.Entry(6)},
}

func TestRecordJSON(t *testing.T) {
	for _, tc := range recordTests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(Record{tc.entry})
			if err != nil {
				t.Fatal(err)
			}
			if tc.json != "" && string(b) != tc.json {
				t.Errorf("got  %s\nwant %s", b, tc.json)
			}
			var r Record
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("decoding %s: %v", b, err)
			}
			if r.Entry != tc.entry {
				t.Errorf("round trip: got %+v, want %+v", r.Entry, tc.entry)
			}
		})
	}
}

func TestRecordJSONStrict(t *testing.T) {
	conf, _ := json.Marshal(Record{ledgertest.Entry(1)})
	omis, _ := json.Marshal(Record{ledgertest.Entry(6)})
	for _, tc := range []struct {
		name string
		json string
		err  string
	}{
		{name: "unknown kind", json: `{"kind":"receipt"}`, err: `record: unknown kind "receipt"`},
		{name: "no kind", json: `{}`, err: "record: kind: want a string"},
		{name: "not an object", json: `[]`, err: "record: json: cannot unmarshal"},
		{name: "missing field", json: strings.Replace(string(conf), `"seq":1,`, "", 1), err: "record: confirmation has 14 fields, want 15"},
		{name: "field of the other kind", json: strings.Replace(string(conf), `"seq":1,`, `"detail":"",`, 1), err: `record: json: unknown field "detail"`},
		{name: "short digest", json: strings.Replace(string(conf), string(mustField(t, conf, "request_digest")), `"AAAA"`, 1), err: "record: request_digest and response_digest must be 32 bytes"},
		{name: "time out of range", json: strings.Replace(string(omis), string(mustField(t, omis, "detected_at")), `"2300-01-01T00:00:00Z"`, 1), err: "record: detected_at 2300-01-01T00:00:00Z: out of the range of unix nanoseconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Record
			err := json.Unmarshal([]byte(tc.json), &r)
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("decoding %s: got %v, want %q", tc.json, err, tc.err)
			}
		})
	}
}

// mustField returns the raw JSON of field in the object b.
func mustField(t *testing.T, b []byte, field string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m[field] == nil {
		t.Fatalf("no field %s in %s", field, b)
	}
	return m[field]
}

// FuzzRecord feeds leaves: one that decodes converts to a record whose JSON
// converts back to the same leaf; and any JSON that decodes as a record
// encodes to the same record again.
func FuzzRecord(f *testing.F) {
	for _, tc := range recordTests {
		b, err := tc.entry.Encode()
		if err != nil {
			f.Fatal(err)
		}
		j, _ := json.Marshal(Record{tc.entry})
		f.Add(b, j)
	}
	f.Fuzz(func(t *testing.T, leaf, js []byte) {
		if e, err := ledger.Decode(leaf); err == nil {
			b, err := json.Marshal(Record{e})
			if err != nil {
				t.Fatalf("encoding the record of %x: %v", leaf, err)
			}
			var r Record
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("decoding %s: %v", b, err)
			}
			again, err := r.Encode()
			if err != nil || !bytes.Equal(again, leaf) {
				t.Fatalf("leaf %x -> %s -> %x, %v", leaf, b, again, err)
			}
		}
		var r Record
		if err := json.Unmarshal(js, &r); err != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("encoding %+v (from %s): %v", r.Entry, js, err)
		}
		var r2 Record
		if err := json.Unmarshal(b, &r2); err != nil || r2.Entry != r.Entry {
			t.Fatalf("%s -> %+v -> %s -> %+v, %v", js, r.Entry, b, r2.Entry, err)
		}
	})
}

func TestNewEntry(t *testing.T) {
	e3 := ledgertest.Entry(3)
	leaf, _ := e3.Encode()
	h := ledger.LeafHash(leaf)
	e := NewEntry(ledger.StoredEntry{Index: 3, Data: leaf, LeafHash: h[:]})
	if e.Record == nil || e.Record.Entry != ledgertest.Entry(3) || e.RecordError != "" {
		t.Errorf("NewEntry of a good leaf: got %+v", e)
	}
	bad := NewEntry(ledger.StoredEntry{Index: 4, Data: []byte{1, 9}})
	b, _ := json.Marshal(bad)
	want := `{"index":4,"data":"AQk=","leaf_hash":"","record":null,"record_error":"entry field kind at offset 1: unknown kind 9"}`
	if string(b) != want {
		t.Errorf("NewEntry of a bad leaf: got %s, want %s", b, want)
	}
}
