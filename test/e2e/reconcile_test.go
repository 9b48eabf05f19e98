package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/wire"
)

// reporter uploads records to the control plane as the fake sidecar f.
func reporter(t *testing.T, m *mesh, f *fakePeer) func(recs ...*tallyv1.Record) {
	raw, err := os.ReadFile(m.token)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := identity.ParseToken(string(raw))
	cc, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(identity.MeshClientTLS(f.source, f.td))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := tallyv1.NewMeshClient(cc).Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	instance := wire.NewID()
	var seq uint64
	return func(recs ...*tallyv1.Record) {
		seq++
		if err := stream.Send(&tallyv1.RecordBatch{BatchSeq: seq, InstanceId: instance, Records: recs}); err != nil {
			t.Fatal(err)
		}
		ack, err := stream.Recv()
		if err != nil || ack.BatchSeq != seq {
			t.Fatalf("ack of batch %d: %v %v", seq, ack, err)
		}
	}
}

// TestReconcilerFindsWhatOneSideCannot drives the real control plane with
// records of two sidecars that disagree, and checks the findings appear
// within the window plus one second.
func TestReconcilerFindsWhatOneSideCannot(t *testing.T) {
	m := newMesh(t, "--window", "1s")
	callerSide := joinFake(t, m, "frontend", http.NotFoundHandler())
	calleeSide := joinFake(t, m, "orders", http.NotFoundHandler())
	sendCaller, sendCallee := reporter(t, m, callerSide), reporter(t, m, calleeSide)
	caller := "spiffe://mesh.local/svc/frontend"
	callee := "spiffe://mesh.local/svc/orders"
	d1, d2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	now := time.Now().UnixNano()
	id := func(n int) string { return fmt.Sprintf("%032x", n) }
	rec := func(kind tallyv1.RecordKind, n int, reporterSide string) *tallyv1.Record {
		return &tallyv1.Record{Kind: kind, MessageId: id(n), Seq: uint64(n), Source: "frontend", Destination: "orders",
			SourceIdentity: caller, DestinationIdentity: callee, Protocol: "http", Reporter: reporterSide,
			RequestDigest: d1, ResponseDigest: d1, AtUnixNano: now}
	}
	var callerRecs, calleeRecs []*tallyv1.Record
	for n := 1; n <= 6; n++ {
		if n == 3 {
			continue // seq 3 never sent: a gap in the caller's sequence
		}
		callerRecs = append(callerRecs, rec(tallyv1.RecordKind_RECORD_KIND_SENT, n, "caller"), rec(tallyv1.RecordKind_RECORD_KIND_CONFIRMED, n, "caller"))
		r := rec(tallyv1.RecordKind_RECORD_KIND_RECEIVED, n, "callee")
		if n == 4 {
			r.ResponseDigest = d2 // the two sides disagree about message 4
		}
		calleeRecs = append(calleeRecs, r)
	}
	calleeRecs = append(calleeRecs, rec(tallyv1.RecordKind_RECORD_KIND_RECEIVED, 5, "callee")) // message 5 delivered twice
	sendCaller(callerRecs...)
	sendCallee(calleeRecs...)
	start := time.Now()
	for _, kind := range []string{"sequence_gap", "digest_mismatch", "duplicate"} {
		ev := m.waitOmissionWithin(kind, time.Second+time.Second, // --window plus one second
			func(omissionEvent) bool { return true })
		if ev.Source != "frontend" || ev.Destination != "orders" {
			t.Errorf("%s event: %+v", kind, ev)
		}
	}
	t.Logf("findings within %v", time.Since(start).Round(time.Millisecond))
	// Nothing else: every message was confirmed.
	for _, ev := range m.omissions("") {
		switch ev.Kind {
		case "sequence_gap", "digest_mismatch", "duplicate":
		default:
			t.Errorf("unexpected event %+v", ev)
		}
	}
}
