package control_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// ingestBatchRecords is the size of an upload batch: a sidecar cuts one at
// 2000 records (internal/proxy recorder.go maxBatchRecords).
const ingestBatchRecords = 2000

// BenchmarkIngest measures the control plane's ingest path end to end as a
// sidecar drives it, into the default SQLite ledger: a control.Server on
// 127.0.0.1:0 in a temporary data directory; a sidecar that joins with the
// data directory's join token and opens a Report stream over mTLS with its
// SVID; batches of 2000 records (1000 SENT + CONFIRMED pairs: 1000 ledger
// leaves), each signed with the SVID key as internal/proxy signBatch does.
// The batches are built and signed before the timer starts, then sent as a
// sidecar's uploader sends them: without waiting for earlier acks, up to 8
// in flight, so the control plane commits what a stream has queued in one
// transaction. The time runs until the last ack (that is, until every
// leaf is durably committed). records/s counts every record uploaded,
// leaves/s the ledger leaves among them. Target: at least 100,000
// records/s.
func BenchmarkIngest(b *testing.B) {
	benchIngest(b, "")
}

// BenchmarkIngestPostgres is BenchmarkIngest into a PostgreSQL ledger (a
// fresh schema of $TALLY_TEST_POSTGRES; skipped without it).
func BenchmarkIngestPostgres(b *testing.B) {
	benchIngest(b, ledgertest.Postgres(b))
}

func benchIngest(b *testing.B, store string) {
	ctx := b.Context()
	dir := filepath.Join(b.TempDir(), "data")
	reg := prometheus.NewRegistry()
	srv, err := control.New(control.Config{
		DataDir:  dir,
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		Ledger:   store,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: reg,
	})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !srv.Ready() {
		select {
		case err := <-done:
			b.Fatalf("Run returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatal("timed out waiting for the control plane to be ready")
		}
		time.Sleep(5 * time.Millisecond)
	}

	sc := joinBench(b, dir)
	stream, err := sc.mesh.Report(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer stream.CloseSend()

	// The sidecar: builds and signs batches ahead of their sending.
	bctx, stopBuild := context.WithCancel(ctx)
	defer stopBuild()
	batches := make(chan *tallyv1.RecordBatch, 1)
	buildErr := make(chan error, 1)
	go func() {
		defer close(batches)
		for seq := uint64(1); ; seq++ {
			bt, err := sc.batch(seq)
			if err != nil {
				buildErr <- err
				return
			}
			select {
			case batches <- bt:
			case <-bctx.Done():
				return
			}
		}
	}()
	next := func() *tallyv1.RecordBatch {
		bt, ok := <-batches
		if !ok {
			b.Fatalf("building batch: %v", <-buildErr)
		}
		return bt
	}
	send := func(bt *tallyv1.RecordBatch) {
		if err := stream.Send(bt); err != nil {
			b.Fatalf("Send batch %d: %v", bt.GetBatchSeq(), err)
		}
		ack, err := stream.Recv()
		if err != nil {
			b.Fatalf("Recv ack of batch %d: %v", bt.GetBatchSeq(), err)
		}
		if ack.GetBatchSeq() != bt.GetBatchSeq() {
			b.Fatalf("ack for batch %d, want %d", ack.GetBatchSeq(), bt.GetBatchSeq())
		}
	}
	// Warm up: the first batch opens the edge, the sequence space and the
	// database's pages.
	send(next())

	// Then as a real sidecar does: batches go out as they are cut, without
	// waiting for the acks of the earlier ones (up to inFlight), so the
	// control plane can commit several in one transaction.
	const inFlight = 8
	acks := make(chan error, 1)
	sent := make(chan uint64, inFlight)
	go func() {
		for want := range sent {
			ack, err := stream.Recv()
			if err == nil && ack.GetBatchSeq() != want {
				err = fmt.Errorf("ack for batch %d, want %d", ack.GetBatchSeq(), want)
			}
			if err != nil {
				acks <- err
				return
			}
		}
		acks <- nil
	}()
	// Build and sign every batch first: several sidecars build in their own
	// processes, so building must not be what this measures.
	prebuilt := make([]*tallyv1.RecordBatch, b.N)
	for i := range prebuilt {
		prebuilt[i] = next()
	}
	var records, leaves int
	b.ResetTimer()
	start := time.Now()
	for _, bt := range prebuilt {
		sent <- bt.GetBatchSeq()
		if err := stream.Send(bt); err != nil {
			b.Fatalf("Send batch %d: %v", bt.GetBatchSeq(), err)
		}
		records += len(bt.GetRecords())
		leaves += len(bt.GetRecords()) / 2
	}
	close(sent)
	if err := <-acks; err != nil {
		b.Fatal(err)
	}
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(records)/el, "records/s")
	b.ReportMetric(float64(leaves)/el, "leaves/s")

	// Everything was stored as signed leaves.
	if got := gatherValue(b, reg, "tally_control_unsigned_batches_total"); got != 0 {
		b.Errorf("tally_control_unsigned_batches_total = %v, want 0", got)
	}
	if got, want := gatherValue(b, reg, "tally_ledger_size"), float64(leaves+ingestBatchRecords/2); got != want {
		b.Errorf("tally_ledger_size = %v, want %v", got, want)
	}
}

// benchSidecar is one joined sidecar instance with its Report client.
type benchSidecar struct {
	svid     *x509svid.SVID
	chain    [][]byte
	instance string
	srcID    string
	dstID    string
	mesh     tallyv1.MeshClient
	seq      uint64 // per-edge message sequence of frontend -> orders
}

// joinBench joins as service "frontend" with the join token of the data
// directory, as `tally proxy --join-token-file` does, and dials the control
// plane with the SVID it got, authorizing only the control plane's identity.
func joinBench(b *testing.B, dir string) *benchSidecar {
	b.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, control.JoinTokenFile))
	if err != nil {
		b.Fatal(err)
	}
	tok, err := identity.ParseToken(string(raw))
	if err != nil {
		b.Fatalf("join token file: %v", err)
	}
	jc, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(identity.JoinClientTLS(tok.CAFingerprint))))
	if err != nil {
		b.Fatal(err)
	}
	defer jc.Close()
	key, err := identity.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	id, err := identity.ServiceID(td, "frontend")
	if err != nil {
		b.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := tallyv1.NewMeshClient(jc).Join(b.Context(), &tallyv1.JoinRequest{
		TokenId: tok.ID, TokenSecret: tok.Secret, Service: "frontend", CsrDer: csr,
	})
	if err != nil {
		b.Fatalf("Join: %v", err)
	}
	var cas []*x509.Certificate
	for _, der := range resp.GetBundleDer() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			b.Fatal(err)
		}
		cas = append(cas, c)
	}
	bundle := x509bundle.FromX509Authorities(td, cas)
	svid, err := identity.ParseSVID(resp.GetChainDer(), key, bundle)
	if err != nil {
		b.Fatalf("ParseSVID: %v", err)
	}
	src := identity.NewSource(svid, bundle)
	ctlTLS := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(identity.ControlID(td)))
	ctlTLS.MinVersion = tls.VersionTLS13
	cc, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(ctlTLS)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	sc := &benchSidecar{
		svid: svid, instance: fmt.Sprintf("%032x", sha256.Sum256([]byte(b.Name())))[:32],
		srcID: svid.ID.String(), dstID: "spiffe://mesh.local/svc/orders",
		mesh: tallyv1.NewMeshClient(cc),
	}
	for _, c := range svid.Certificates {
		sc.chain = append(sc.chain, c.Raw)
	}
	return sc
}

// batch returns upload batch seq: ingestBatchRecords/2 messages, each a
// SENT and a CONFIRMED record as internal/proxy outbound.go makes them,
// signed over its ledger leaves as internal/proxy agent.go signBatch does.
func (sc *benchSidecar) batch(seq uint64) (*tallyv1.RecordBatch, error) {
	recs := make([]*tallyv1.Record, 0, ingestBatchRecords)
	now := time.Now().UnixNano()
	for range ingestBatchRecords / 2 {
		sc.seq++
		id := fmt.Sprintf("%016x%016x", seq, sc.seq)
		rec := func(kind tallyv1.RecordKind) *tallyv1.Record {
			return &tallyv1.Record{
				Kind: kind, MessageId: id, Seq: sc.seq, Source: "frontend", Destination: "orders",
				SourceIdentity: sc.srcID, DestinationIdentity: sc.dstID, Protocol: "http",
				Reporter: "caller", InstanceId: sc.instance, AtUnixNano: now,
			}
		}
		sent := rec(tallyv1.RecordKind_RECORD_KIND_SENT)
		conf := rec(tallyv1.RecordKind_RECORD_KIND_CONFIRMED)
		req := sha256.Sum256([]byte("request " + id))
		res := sha256.Sum256([]byte("response " + id))
		conf.RequestDigest, conf.ResponseDigest = req[:], res[:]
		conf.RequestBytes, conf.ResponseBytes = 120, 2048
		conf.LatencyNanos = int64(800 * time.Microsecond)
		conf.AtUnixNano = now + int64(time.Millisecond)
		recs = append(recs, sent, conf)
	}
	bt := &tallyv1.RecordBatch{BatchSeq: seq, InstanceId: sc.instance, Records: recs}
	entries, _ := ledger.BatchEntries(bt)
	leaves, err := ledger.EncodeAll(entries)
	if err != nil {
		return nil, err
	}
	sig, err := ledger.SignBatch(sc.svid.PrivateKey, sc.chain, bt.InstanceId, bt.BatchSeq, time.Now(), leaves)
	if err != nil {
		return nil, err
	}
	bt.Signature = ledger.SignatureToProto(sig)
	return bt, nil
}

// gatherValue sums the counters and gauges named name in reg.
func gatherValue(b *testing.B, reg *prometheus.Registry, name string) float64 {
	b.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
