package control_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
)

func TestJoin(t *testing.T) {
	p := startPlane(t, "")
	sc := p.join(t, "orders")
	if got, want := sc.svid.ID.String(), "spiffe://mesh.local/svc/orders"; got != want {
		t.Errorf("SVID ID = %s, want %s", got, want)
	}
	leaf := sc.svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://mesh.local/svc/orders" {
		t.Errorf("URI SANs = %v, want [spiffe://mesh.local/svc/orders]", leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < time.Hour || life > time.Hour+2*time.Minute {
		t.Errorf("SVID life = %v, want about 1h", life)
	}
	if got := p.metric(t, "tally_control_joins_total", map[string]string{"result": "ok"}); got != 1 {
		t.Errorf("tally_control_joins_total{result=ok} = %v, want 1", got)
	}
}

func TestJoinRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A token that expired before the control plane started, as
	// tokens.json keeps it (only the secret's SHA-256 is stored).
	expired, err := identity.NewToken("127.0.0.1:1", [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(expired.Secret))
	past := time.Now().Add(-time.Minute).UTC()
	seed, _ := json.Marshal(map[string]any{
		"version": 1,
		"tokens": []map[string]any{{
			"id": expired.ID, "secret_sha256": hex.EncodeToString(sum[:]),
			"created_at": past.Add(-time.Hour), "expires_at": past, "revoked": false,
		}},
	})
	if err := os.WriteFile(filepath.Join(dir, control.TokensFile), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPlane(t, dir)

	// A token created and revoked through the API.
	code, body := p.do(t, "POST", "/api/v1/tokens", p.admin, `{"ttl":"1h"}`)
	if code != 201 {
		t.Fatalf("POST /api/v1/tokens = %d %s", code, body)
	}
	var created control.CreatedToken
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	revoked, err := identity.ParseToken(created.Token)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := p.do(t, "DELETE", "/api/v1/tokens/"+revoked.ID, p.admin, ""); code != 204 {
		t.Fatalf("DELETE token = %d %s", code, body)
	}

	_, csr := csrFor(t, "orders")
	_, otherCSR := csrFor(t, "payments")
	jc := p.joinClient(t)
	for _, tc := range []struct {
		name     string
		req      *tallyv1.JoinRequest
		wantCode codes.Code
		wantMsg  string
	}{
		{"wrong secret", &tallyv1.JoinRequest{TokenId: p.token.ID, TokenSecret: expired.Secret, Service: "orders", CsrDer: csr},
			codes.PermissionDenied, "unknown or secret mismatch"},
		{"unknown id", &tallyv1.JoinRequest{TokenId: "00000000", TokenSecret: p.token.Secret, Service: "orders", CsrDer: csr},
			codes.PermissionDenied, "unknown or secret mismatch"},
		{"expired", &tallyv1.JoinRequest{TokenId: expired.ID, TokenSecret: expired.Secret, Service: "orders", CsrDer: csr},
			codes.PermissionDenied, "expired"},
		{"revoked", &tallyv1.JoinRequest{TokenId: revoked.ID, TokenSecret: revoked.Secret, Service: "orders", CsrDer: csr},
			codes.PermissionDenied, "revoked"},
		{"bad service", &tallyv1.JoinRequest{TokenId: p.token.ID, TokenSecret: p.token.Secret, Service: "Orders!", CsrDer: csr},
			codes.InvalidArgument, "service"},
		{"csr for another service", &tallyv1.JoinRequest{TokenId: p.token.ID, TokenSecret: p.token.Secret, Service: "orders", CsrDer: otherCSR},
			codes.InvalidArgument, "svc/payments"},
		{"garbage csr", &tallyv1.JoinRequest{TokenId: p.token.ID, TokenSecret: p.token.Secret, Service: "orders", CsrDer: []byte("nope")},
			codes.InvalidArgument, "csr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := jc.Join(t.Context(), tc.req)
			st := status.Convert(err)
			if st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantMsg) {
				t.Errorf("Join = %v, want %v containing %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
	if got := p.metric(t, "tally_control_joins_total", map[string]string{"result": "expired"}); got != 1 {
		t.Errorf("joins{result=expired} = %v, want 1", got)
	}
}

func TestCallsWithoutClientCertRefused(t *testing.T) {
	p := startPlane(t, "")
	jc := p.joinClient(t)
	_, csr := csrFor(t, "orders")
	if _, err := jc.Renew(t.Context(), &tallyv1.RenewRequest{CsrDer: csr}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Renew without client cert = %v, want Unauthenticated", err)
	}
	ws, err := jc.Watch(t.Context(), &tallyv1.WatchRequest{InstanceId: hexID(1)})
	if err == nil {
		_, err = ws.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Watch without client cert = %v, want Unauthenticated", err)
	}
	rs, err := jc.Report(t.Context())
	if err == nil {
		_, err = rs.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Report without client cert = %v, want Unauthenticated", err)
	}
}

func TestRenew(t *testing.T) {
	p := startPlane(t, "")
	sc := p.join(t, "orders")
	key, csr := csrFor(t, "orders")
	resp, err := sc.mesh.Renew(t.Context(), &tallyv1.RenewRequest{CsrDer: csr})
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	renewed := p.sidecarFrom(t, "orders", key, resp)
	if renewed.svid.ID != sc.svid.ID {
		t.Errorf("renewed ID = %s, want %s", renewed.svid.ID, sc.svid.ID)
	}
	if renewed.svid.Certificates[0].SerialNumber.Cmp(sc.svid.Certificates[0].SerialNumber) == 0 {
		t.Error("renewed SVID has the old serial")
	}
	_, other := csrFor(t, "payments")
	if _, err := sc.mesh.Renew(t.Context(), &tallyv1.RenewRequest{CsrDer: other}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Renew for another identity = %v, want InvalidArgument", err)
	}
}

// nextSnapshot receives snapshots until one satisfies ok.
func nextSnapshot(t *testing.T, ws grpc.ServerStreamingClient[tallyv1.Snapshot], what string, ok func(*tallyv1.Snapshot) bool) *tallyv1.Snapshot {
	t.Helper()
	for {
		snap, err := ws.Recv()
		if err != nil {
			t.Fatalf("waiting for a snapshot with %s: %v", what, err)
		}
		if ok(snap) {
			return snap
		}
	}
}

func findService(snap *tallyv1.Snapshot, name string) *tallyv1.Service {
	i := slices.IndexFunc(snap.GetServices(), func(s *tallyv1.Service) bool { return s.GetName() == name })
	if i < 0 {
		return nil
	}
	return snap.GetServices()[i]
}

func TestWatch(t *testing.T) {
	p := startPlane(t, "")
	orders := p.join(t, "orders")
	frontend := p.join(t, "frontend")

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, err := orders.mesh.Watch(ctx, &tallyv1.WatchRequest{InstanceId: hexID(1), AdvertiseAddr: "127.0.0.1:9001"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ws.Recv()
	if err != nil {
		t.Fatalf("first snapshot: %v", err)
	}
	svc := findService(first, "orders")
	if svc == nil || len(svc.GetEndpoints()) != 1 || svc.GetEndpoints()[0].GetAddress() != "127.0.0.1:9001" ||
		svc.GetIdentity() != "spiffe://mesh.local/svc/orders" {
		t.Fatalf("first snapshot = %v, want orders with endpoint 127.0.0.1:9001", first)
	}

	// A second, client-only instance appears ...
	fctx, fcancel := context.WithCancel(ctx)
	fws, err := frontend.mesh.Watch(fctx, &tallyv1.WatchRequest{InstanceId: hexID(2)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fws.Recv(); err != nil {
		t.Fatal(err)
	}
	snap := nextSnapshot(t, ws, "frontend", func(s *tallyv1.Snapshot) bool { return findService(s, "frontend") != nil })
	if fs := findService(snap, "frontend"); len(fs.GetEndpoints()) != 0 {
		t.Errorf("client-only frontend has endpoints %v, want none", fs.GetEndpoints())
	}
	if snap.GetVersion() <= first.GetVersion() {
		t.Errorf("version %d after change, want > %d", snap.GetVersion(), first.GetVersion())
	}
	var services struct {
		Items []control.ServiceInfo `json:"items"`
	}
	p.getJSON(t, "/api/v1/services", &services)
	if len(services.Items) != 2 || services.Items[0].Name != "frontend" || len(services.Items[0].Instances) != 1 ||
		services.Items[0].Instances[0].Address != "" || services.Items[1].Instances[0].InstanceID != hexID(1) {
		t.Errorf("services = %+v, want frontend (client-only) and orders", services.Items)
	}

	// ... and goes when its stream closes.
	fcancel()
	nextSnapshot(t, ws, "frontend gone", func(s *tallyv1.Snapshot) bool { return findService(s, "frontend") == nil })
	if got := p.metric(t, "tally_control_instances", nil); got != 1 {
		t.Errorf("tally_control_instances = %v, want 1", got)
	}

	// Malformed requests.
	bad, err := orders.mesh.Watch(ctx, &tallyv1.WatchRequest{InstanceId: "short"})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Watch with bad instance_id = %v, want InvalidArgument", err)
	}
	bad, err = orders.mesh.Watch(ctx, &tallyv1.WatchRequest{InstanceId: hexID(3), AdvertiseAddr: "nowhere"})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Watch with bad advertise_addr = %v, want InvalidArgument", err)
	}
}

func callerRecord(kind tallyv1.RecordKind, n int) *tallyv1.Record {
	return &tallyv1.Record{
		Kind: kind, MessageId: hexID(n), Seq: uint64(n), Source: "frontend", Destination: "orders",
		Protocol: "http", RequestBytes: 100, Reporter: "caller", InstanceId: hexID(1),
	}
}

func TestReport(t *testing.T) {
	p := startPlane(t, "")
	frontend := p.join(t, "frontend")
	stream, err := frontend.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	confirmed := callerRecord(tallyv1.RecordKind_RECORD_KIND_CONFIRMED, 1)
	confirmed.LatencyNanos = int64(2 * time.Millisecond)
	lost := callerRecord(tallyv1.RecordKind_RECORD_KIND_OMISSION, 2)
	lost.OmissionKind, lost.Detail = "truncated", "40 of 100 bytes"
	batch1 := &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(1), Records: []*tallyv1.Record{
		callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 1),
		callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 2),
		callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 3),
		confirmed, lost,
	}}
	report(t, stream, batch1)
	report(t, stream, batch1) // resent after a lost ack: acked, not applied again

	// Invalid and forged records are refused; the rest of the batch counts.
	forged := callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 4)
	forged.Source = "orders" // a frontend sidecar cannot report orders' calls
	forgedCallee := callerRecord(tallyv1.RecordKind_RECORD_KIND_RECEIVED, 5)
	forgedCallee.Reporter = "callee" // frontend is not the destination
	badKind := callerRecord(tallyv1.RecordKind_RECORD_KIND_OMISSION, 6)
	badKind.OmissionKind = "vanished"
	badID := callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 7)
	badID.MessageId = "xyz"
	report(t, stream, &tallyv1.RecordBatch{BatchSeq: 2, InstanceId: hexID(1), Records: []*tallyv1.Record{
		forged, forgedCallee, badKind, badID, callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 8),
	}})
	// A new stream (a reconnect) resending batch 2 is still a duplicate.
	stream2, err := frontend.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	report(t, stream2, &tallyv1.RecordBatch{BatchSeq: 2, InstanceId: hexID(1), Records: []*tallyv1.Record{
		callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 8),
	}})

	var edges struct {
		Items []control.Edge `json:"items"`
	}
	p.getJSON(t, "/api/v1/edges", &edges)
	if len(edges.Items) != 1 {
		t.Fatalf("edges = %+v, want one", edges.Items)
	}
	e := edges.Items[0]
	if e.Source != "frontend" || e.Destination != "orders" || e.Sent != 4 || e.Confirmed != 1 || e.Omitted != 1 ||
		e.InFlight != 2 || e.BytesSent != 200 || e.BytesConfirmed != 100 { // bytes sent: the confirmed and the omitted message, 100 each
		t.Errorf("edge = %+v, want frontend->orders sent 4 confirmed 1 omitted 1 in flight 2", e)
	}
	if e.Latency.P99 <= 0 {
		t.Errorf("p99 = %v, want > 0", e.Latency.P99)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tally_messages_sent_total", map[string]string{"source": "frontend", "destination": "orders"}, 4},
		{"tally_messages_confirmed_total", map[string]string{"source": "frontend", "destination": "orders"}, 1},
		{"tally_omissions_total", map[string]string{"kind": "truncated"}, 1},
		{"tally_records_ingested_total", nil, 6},
		{"tally_records_rejected_total", map[string]string{"reason": "identity_mismatch"}, 2},
		{"tally_records_rejected_total", map[string]string{"reason": "invalid_omission_kind"}, 1},
		{"tally_records_rejected_total", map[string]string{"reason": "invalid_message_id"}, 1},
		{"tally_control_batches_total", map[string]string{"result": "duplicate"}, 2},
		{"tally_ledger_size", nil, 2},
	} {
		if got := p.metric(t, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}

	// The callee's report of the same loss joins the caller's event.
	orders := p.join(t, "orders")
	os, err := orders.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	calleeSaw := callerRecord(tallyv1.RecordKind_RECORD_KIND_OMISSION, 2)
	calleeSaw.Reporter, calleeSaw.OmissionKind, calleeSaw.Detail = "callee", "truncated", "stream ended early"
	report(t, os, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(2), Records: []*tallyv1.Record{calleeSaw}})
	var om struct {
		Items []control.Event `json:"items"`
	}
	p.getJSON(t, "/api/v1/omissions", &om)
	if len(om.Items) != 1 {
		t.Fatalf("omissions = %+v, want one", om.Items)
	}
	ev := om.Items[0]
	if ev.Kind != "truncated" || ev.MessageID != hexID(2) || ev.Seq != 2 || ev.Reporter != "caller" ||
		ev.SourceIdentity != "spiffe://mesh.local/svc/frontend" || ev.DestinationIdentity != "spiffe://mesh.local/svc/orders" ||
		ev.Detail != "40 of 100 bytes; callee: stream ended early" {
		t.Errorf("event = %+v", ev)
	}
}

func TestReportMalformedBatch(t *testing.T) {
	p := startPlane(t, "")
	frontend := p.join(t, "frontend")
	stream, err := frontend.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&tallyv1.RecordBatch{BatchSeq: 0, InstanceId: hexID(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("batch_seq 0: %v, want InvalidArgument", err)
	}
}

func TestRunStopsWithOpenStreams(t *testing.T) {
	p := startPlane(t, "")
	sc := p.join(t, "orders")
	ws, err := sc.mesh.Watch(t.Context(), &tallyv1.WatchRequest{InstanceId: hexID(1), AdvertiseAddr: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	rs, err := sc.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	report(t, rs, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(1)})

	start := time.Now()
	if err := p.stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with open streams", d)
	}
	if _, err := ws.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch after shutdown = %v, want Unavailable", err)
	}
	if p.srv.Ready() {
		t.Error("Ready after Run returned")
	}
}

func TestDataDir(t *testing.T) {
	p := startPlane(t, "")
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{
		{".", 0o700 | os.ModeDir},
		{control.JoinTokenFile, 0o600},
		{control.AdminTokenFile, 0o600},
		{control.TokensFile, 0o600},
		{"ca.key", 0o600},
	} {
		fi, err := os.Stat(filepath.Join(p.dir, f.name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != f.mode {
			t.Errorf("%s mode = %v, want %v", f.name, fi.Mode(), f.mode)
		}
	}
	b, _ := os.ReadFile(filepath.Join(p.dir, control.JoinTokenFile))
	if !strings.HasSuffix(string(b), "\n") || strings.Count(string(b), "\n") != 1 {
		t.Errorf("join-token file %q is not one line", b)
	}
	if got, want := p.token.Addr, p.srv.GRPCAddr(); got != want {
		t.Errorf("token address = %s, want the bound %s", got, want)
	}
	if len(p.admin) != 43 {
		t.Errorf("admin token has %d characters, want 43 (32 bytes base64url)", len(p.admin))
	}

	// A restart keeps the default token (with the new address), the admin
	// token and the CA.
	first := p.token
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	q := startPlane(t, p.dir)
	if q.token.ID != first.ID || q.token.Secret != first.Secret || q.token.CAFingerprint != first.CAFingerprint {
		t.Error("default join token changed across a restart")
	}
	if q.token.Addr != q.srv.GRPCAddr() {
		t.Errorf("token address after restart = %s, want %s", q.token.Addr, q.srv.GRPCAddr())
	}
	if q.admin != p.admin {
		t.Error("admin token changed across a restart")
	}
	q.join(t, "orders")
}

func TestReportOmissionWithUnknownSide(t *testing.T) {
	p := startPlane(t, "")
	frontend := p.join(t, "frontend")
	orders := p.join(t, "orders")
	fs, err := frontend.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gap := &tallyv1.Record{Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, OmissionKind: "audit_gap",
		Source: "frontend", Reporter: "caller", Detail: "12 records dropped: record buffer full"}
	noDest := &tallyv1.Record{Kind: tallyv1.RecordKind_RECORD_KIND_SENT, Source: "frontend", Reporter: "caller"}
	report(t, fs, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(1), Records: []*tallyv1.Record{gap, noDest}})
	os, err := orders.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	refused := &tallyv1.Record{Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, OmissionKind: "unauthorized",
		Destination: "orders", Reporter: "callee", Detail: "mTLS handshake refused"}
	report(t, os, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(2), Records: []*tallyv1.Record{refused}})

	var om struct {
		Items []control.Event `json:"items"`
	}
	p.getJSON(t, "/api/v1/omissions", &om)
	if len(om.Items) != 2 || om.Items[0].Kind != "audit_gap" || om.Items[0].Destination != "" ||
		om.Items[1].Kind != "unauthorized" || om.Items[1].Source != "" || om.Items[1].DestinationIdentity != "spiffe://mesh.local/svc/orders" {
		t.Errorf("omissions = %+v, want the audit gap and the refused handshake", om.Items)
	}
	var edges struct {
		Items []control.Edge `json:"items"`
	}
	p.getJSON(t, "/api/v1/edges", &edges)
	if len(edges.Items) != 0 {
		t.Errorf("edges = %+v, want none", edges.Items)
	}
	if got := p.metric(t, "tally_audit_gaps_total", nil); got != 1 {
		t.Errorf("tally_audit_gaps_total = %v, want 1", got)
	}
	if got := p.metric(t, "tally_records_rejected_total", map[string]string{"reason": "invalid_destination"}); got != 1 {
		t.Errorf("rejected{invalid_destination} = %v, want 1 (a SENT record needs its destination)", got)
	}
}

func TestReportConfirmedStandsForItsSent(t *testing.T) {
	p := startPlane(t, "")
	frontend := p.join(t, "frontend")
	stream, err := frontend.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	both := callerRecord(tallyv1.RecordKind_RECORD_KIND_CONFIRMED, 1)
	both.LatencyNanos, both.IncludesSent = int64(time.Millisecond), true
	wrong := callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 2)
	wrong.IncludesSent = true // only CONFIRMED may
	report(t, stream, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(1), Records: []*tallyv1.Record{both, wrong}})
	var edges struct {
		Items []control.Edge `json:"items"`
	}
	p.getJSON(t, "/api/v1/edges", &edges)
	if len(edges.Items) != 1 {
		t.Fatalf("edges = %+v, want one", edges.Items)
	}
	if e := edges.Items[0]; e.Sent != 1 || e.Confirmed != 1 || e.InFlight != 0 {
		t.Errorf("edge = %+v, want sent 1 confirmed 1 in flight 0", e)
	}
	if got := p.metric(t, "tally_records_rejected_total", map[string]string{"reason": "invalid_value"}); got != 1 {
		t.Errorf("rejected invalid_value = %v, want 1", got)
	}
	if got := p.metric(t, "tally_ledger_size", nil); got != 1 {
		t.Errorf("ledger size = %v, want 1 (one confirmation leaf)", got)
	}
}
