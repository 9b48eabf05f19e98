package ledger

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
)

func sampleBatch() *tallyv1.RecordBatch {
	return &tallyv1.RecordBatch{
		BatchSeq: 7, InstanceId: "0123456789abcdef0123456789abcdef",
		Records: []*tallyv1.Record{
			{Kind: tallyv1.RecordKind_RECORD_KIND_SENT, MessageId: "aa", Seq: 1, Source: "frontend", Destination: "orders"},
			{Kind: tallyv1.RecordKind_RECORD_KIND_CONFIRMED, MessageId: "aa", Seq: 1, Source: "frontend", Destination: "orders",
				SourceIdentity: "spiffe://mesh.local/svc/frontend", DestinationIdentity: "spiffe://mesh.local/svc/orders",
				Protocol: "http", RequestDigest: bytes.Repeat([]byte{1}, 32), ResponseDigest: bytes.Repeat([]byte{2}, 32),
				RequestBytes: 3, ResponseBytes: 4, AtUnixNano: 5},
			{Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, MessageId: "bb", Seq: 2, Source: "frontend", Destination: "orders",
				OmissionKind: "truncated", Detail: "cut", Reporter: "caller", AtUnixNano: 6},
		},
	}
}

func TestBatchEntries(t *testing.T) {
	b := sampleBatch()
	entries, from := BatchEntries(b)
	if len(entries) != 2 || from[0] != 1 || from[1] != 2 {
		t.Fatalf("leaves from records %v, want [1 2]", from)
	}
	if got := entries[1].EventID; got != "0123456789abcdef0123456789abcdef:7:2" {
		t.Errorf("event id %q", got)
	}
	leaves, err := EncodeAll(entries)
	if err != nil {
		t.Fatal(err)
	}
	// The sidecar and the control plane derive the same bytes.
	again, _ := BatchEntries(proto.Clone(b).(*tallyv1.RecordBatch))
	leaves2, _ := EncodeAll(again)
	for i := range leaves {
		if !bytes.Equal(leaves[i], leaves2[i]) {
			t.Fatalf("leaf %d differs between two derivations", i)
		}
	}
}

// FuzzBatchLeaves feeds arbitrary uploaded batches through the path the
// control plane takes: decode, derive leaves, encode, decode again.
func FuzzBatchLeaves(f *testing.F) {
	seed, _ := proto.Marshal(sampleBatch())
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0x1a, 0x02, 0x08, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		var b tallyv1.RecordBatch
		if err := proto.Unmarshal(data, &b); err != nil {
			return
		}
		SignatureFromProto(&b)
		entries, from := BatchEntries(&b)
		if len(entries) != len(from) {
			t.Fatalf("%d entries, %d indices", len(entries), len(from))
		}
		for i := range entries {
			leaf, err := entries[i].Encode()
			if err != nil {
				continue // refused with a clear error (too long, not UTF-8)
			}
			back, err := Decode(leaf)
			if err != nil {
				t.Fatalf("a leaf we encoded does not decode: %v", err)
			}
			again, _ := back.Encode()
			if !bytes.Equal(leaf, again) {
				t.Fatalf("leaf %d does not round-trip", i)
			}
		}
	})
}
