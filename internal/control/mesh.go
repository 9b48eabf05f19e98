package control

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/reconcile"
)

// meshServer implements the tally.v1.Mesh service.
type meshServer struct {
	tallyv1.UnimplementedMeshServer
	s *Server
}

// Join trades a live join token and a CSR for the service's first SVID.
func (ms *meshServer) Join(ctx context.Context, req *tallyv1.JoinRequest) (*tallyv1.SVIDResponse, error) {
	s := ms.s
	if err := s.tokens.check(req.GetTokenId(), req.GetTokenSecret(), time.Now()); err != nil {
		s.m.joins.WithLabelValues(joinResult(err)).Inc()
		s.log.Warn("join refused", "token_id", req.GetTokenId(), "service", req.GetService(), "peer", peerAddr(ctx), "err", err)
		return nil, status.Errorf(codes.PermissionDenied, "join refused: %v", err)
	}
	if err := identity.ValidateServiceName(req.GetService()); err != nil {
		s.m.joins.WithLabelValues("invalid").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "service: %v", err)
	}
	id, err := identity.ServiceID(s.td, req.GetService())
	if err != nil {
		s.m.joins.WithLabelValues("invalid").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "service: %v", err)
	}
	resp, err := s.issue(req.GetCsrDer(), id)
	if err != nil {
		s.m.joins.WithLabelValues("invalid").Inc()
		return nil, err
	}
	s.m.joins.WithLabelValues("ok").Inc()
	s.log.Info("sidecar joined", "service", req.GetService(), "token_id", req.GetTokenId(), "peer", peerAddr(ctx))
	return resp, nil
}

func joinResult(err error) string {
	switch {
	case errors.Is(err, ErrTokenExpired):
		return "expired"
	case errors.Is(err, ErrTokenRevoked):
		return "revoked"
	default:
		return "unknown_token"
	}
}

// Renew issues a fresh SVID for the identity of the caller's certificate.
func (ms *meshServer) Renew(ctx context.Context, req *tallyv1.RenewRequest) (*tallyv1.SVIDResponse, error) {
	s := ms.s
	id, _, err := s.peerService(ctx)
	if err != nil {
		s.m.renewals.WithLabelValues("unauthenticated").Inc()
		return nil, err
	}
	resp, err := s.issue(req.GetCsrDer(), id)
	if err != nil {
		s.m.renewals.WithLabelValues("invalid").Inc()
		return nil, err
	}
	s.m.renewals.WithLabelValues("ok").Inc()
	s.log.Debug("svid renewed", "identity", id)
	return resp, nil
}

// issue checks that csrDER names exactly id and issues its SVID.
func (s *Server) issue(csrDER []byte, id spiffeid.ID) (*tallyv1.SVIDResponse, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: signature: %v", err)
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != id.String() {
		var got []string
		for _, u := range csr.URIs {
			got = append(got, u.String())
		}
		return nil, status.Errorf(codes.InvalidArgument, "csr: URI SANs %q, want exactly %q", got, id)
	}
	chain, err := s.ca.IssueSVID(csrDER, id, s.cfg.SVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return &tallyv1.SVIDResponse{
		ChainDer:    chain,
		BundleDer:   [][]byte{s.ca.Cert.Raw},
		TrustDomain: s.td.Name(),
	}, nil
}

// peerService returns the verified SPIFFE ID of the caller's client
// certificate and its service, or a gRPC status error.
func (s *Server) peerService(ctx context.Context) (spiffeid.ID, string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, "", status.Error(codes.Unauthenticated, "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 || len(ti.State.VerifiedChains) == 0 {
		return spiffeid.ID{}, "", status.Error(codes.Unauthenticated,
			"this call needs a client certificate: the X.509-SVID that Join issued")
	}
	id, err := identity.PeerID(&ti.State)
	if err != nil {
		return spiffeid.ID{}, "", status.Errorf(codes.Unauthenticated, "%v", err)
	}
	if !id.MemberOf(s.td) {
		return spiffeid.ID{}, "", status.Errorf(codes.PermissionDenied, "peer %s is not in trust domain %q", id, s.td.Name())
	}
	svc, ok := identity.ServiceOf(id)
	if !ok {
		return spiffeid.ID{}, "", status.Errorf(codes.PermissionDenied, "peer %s is not a mesh service", id)
	}
	return id, svc, nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// Watch registers the calling instance while the stream is open and sends
// it the mesh state: a snapshot at once, then one after each change, at most
// one per snapshotInterval.
func (ms *meshServer) Watch(req *tallyv1.WatchRequest, stream grpc.ServerStreamingServer[tallyv1.Snapshot]) error {
	s := ms.s
	ctx := stream.Context()
	id, svc, err := s.peerService(ctx)
	if err != nil {
		return err
	}
	if !isInstanceID(req.GetInstanceId()) {
		return status.Errorf(codes.InvalidArgument, "instance_id %q: want 32 lowercase hex characters", req.GetInstanceId())
	}
	if a := req.GetAdvertiseAddr(); a != "" {
		if err := checkAdvertiseAddr(a); err != nil {
			return status.Errorf(codes.InvalidArgument, "advertise_addr %q: %v", a, err)
		}
	}
	notify := make(chan struct{}, 1)
	inst := instance{
		InstanceID:  req.GetInstanceId(),
		Service:     svc,
		Address:     req.GetAdvertiseAddr(),
		Identity:    id.String(),
		ConnectedAt: time.Now().UTC(),
	}
	gen := s.reg.register(inst, notify)
	defer s.reg.deregister(inst, gen, notify)
	log := s.log.With("service", svc, "instance_id", inst.InstanceID)
	log.Info("instance connected", "address", inst.Address, "peer", peerAddr(ctx))
	defer log.Info("instance disconnected")

	var sent uint64
	var sentAt time.Time
	for {
		if snap := s.reg.snapshot(); snap.GetVersion() != sent {
			if err := stream.Send(snap); err != nil {
				return err
			}
			sent, sentAt = snap.GetVersion(), time.Now()
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "control plane shutting down")
		}
		// At most one snapshot per snapshotInterval: the changes until then
		// coalesce into the next one.
		wait := snapshotInterval - time.Since(sentAt)
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			t.Stop()
			return status.Error(codes.Unavailable, "control plane shutting down")
		}
	}
}

func isInstanceID(s string) bool { return len(s) == 32 && isLowerHex(s) }

// checkAdvertiseAddr accepts host:port with a non-empty host and a port from 1
// to 65535.
func checkAdvertiseAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("empty host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// Report applies the caller's record batches and acknowledges each by its
// batch_seq once applied.
func (ms *meshServer) Report(stream grpc.BidiStreamingServer[tallyv1.RecordBatch, tallyv1.BatchAck]) error {
	s := ms.s
	ctx := stream.Context()
	id, svc, err := s.peerService(ctx)
	if err != nil {
		return err
	}
	// Recv runs in its own goroutine so that shutdown can end the stream
	// while the sidecar is idle; it returns once the handler has returned.
	batches := make(chan *tallyv1.RecordBatch, maxGroupBatches)
	recvErr := make(chan error, 1)
	s.streams.Go(func() {
		for {
			b, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
		}
	})
	for {
		select {
		case b := <-batches:
			// Take what else the sidecar has queued: one durable commit
			// for the group, then each batch is applied and acknowledged
			// in order.
			group := []*tallyv1.RecordBatch{b}
		more:
			for len(group) < maxGroupBatches {
				select {
				case nb := <-batches:
					group = append(group, nb)
				default:
					break more
				}
			}
			if err := s.applyBatches(ctx, id, svc, group); err != nil {
				return err
			}
			for _, b := range group {
				if err := stream.Send(&tallyv1.BatchAck{BatchSeq: b.GetBatchSeq()}); err != nil {
					return err
				}
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "control plane shutting down; resend unacknowledged batches")
		}
	}
}

// Reasons of tally_records_rejected_total.
const (
	rejectKind         = "unknown_kind"
	rejectSource       = "invalid_source"
	rejectDestination  = "invalid_destination"
	rejectMessageID    = "invalid_message_id"
	rejectOmissionKind = "invalid_omission_kind"
	rejectReporter     = "invalid_reporter"
	rejectProtocol     = "invalid_protocol"
	rejectIdentity     = "invalid_identity"
	rejectValue        = "invalid_value"
	rejectForged       = "identity_mismatch"
	rejectTooManyEdges = "too_many_edges"
)

// maxRecordDetailSize bounds the detail of one omission record.
const maxRecordDetailSize = 1024

// maxGroupBatches bounds the batches of one stream committed together.
const maxGroupBatches = 32

// preparedBatch is a batch validated and ready to apply once its leaves
// are durable.
type preparedBatch struct {
	b        *tallyv1.RecordBatch
	key      BatchKey
	recs     []Record
	from     []int // index in b's records of each of recs
	accepted []bool
	rejected int
	firstErr error
	dup      bool
}

// applyBatches stores the leaves of a stream's queued batches in one
// durable commit, then applies each batch in order. Only then may they be
// acknowledged.
func (s *Server) applyBatches(ctx context.Context, peerID spiffeid.ID, svc string, group []*tallyv1.RecordBatch) error {
	prepared := make([]*preparedBatch, 0, len(group))
	var lbs []ledger.Batch
	for _, b := range group {
		pb, err := s.validateBatch(peerID, svc, b)
		if err != nil {
			return err
		}
		prepared = append(prepared, pb)
		if pb.dup {
			continue
		}
		lb, note, err := s.ledger.prepare(ctx, peerID, b, pb.accepted)
		if err != nil {
			return err
		}
		if note != "" {
			s.m.unsignedBatches.Inc()
			s.log.Warn("batch stored without its signature", "service", svc, "instance_id", pb.key.InstanceID,
				"batch_seq", pb.key.Seq, "reason", note)
		}
		if lb != nil {
			lbs = append(lbs, *lb)
		}
	}
	// Durable first: the batches are acknowledged only once their leaves
	// are committed to the ledger.
	size, err := s.ledger.commit(ctx, lbs)
	if err != nil {
		return err
	}
	for _, pb := range prepared {
		if !pb.dup {
			s.applyPrepared(ctx, svc, pb)
		}
	}
	if size > 0 {
		s.m.ledgerSize.Set(float64(size))
	}
	return nil
}

// validateBatch checks a batch and its records; an error ends the stream.
func (s *Server) validateBatch(peerID spiffeid.ID, svc string, b *tallyv1.RecordBatch) (*preparedBatch, error) {
	if !isInstanceID(b.GetInstanceId()) {
		return nil, status.Errorf(codes.InvalidArgument, "batch %d: instance_id %q: want 32 lowercase hex characters", b.GetBatchSeq(), b.GetInstanceId())
	}
	if b.GetBatchSeq() == 0 {
		return nil, status.Error(codes.InvalidArgument, "batch_seq 0: batches are numbered from 1")
	}
	pb := &preparedBatch{b: b, key: BatchKey{Service: svc, InstanceID: b.GetInstanceId(), Seq: b.GetBatchSeq()}}
	if s.store.Seen(pb.key) {
		s.m.batches.WithLabelValues("duplicate").Inc()
		pb.dup = true
		return pb, nil
	}
	pb.recs = make([]Record, 0, len(b.GetRecords()))
	pb.from = make([]int, 0, len(b.GetRecords()))
	pb.accepted = make([]bool, len(b.GetRecords()))
	for i, pr := range b.GetRecords() {
		r, reason, err := validateRecord(pr, peerID, svc, s.td)
		if err != nil {
			s.m.rejected.WithLabelValues(reason).Inc()
			pb.rejected++
			if pb.firstErr == nil {
				pb.firstErr = fmt.Errorf("record %d: %w", i, err)
			}
			continue
		}
		pb.accepted[i] = true
		if pr.GetIncludesSent() {
			pb.recs = append(pb.recs, sentOf(r))
			pb.from = append(pb.from, i)
		}
		pb.recs = append(pb.recs, r)
		pb.from = append(pb.from, i)
	}
	return pb, nil
}

// applyPrepared applies a batch whose leaves are durable: store, metrics,
// event stream, reconciler.
func (s *Server) applyPrepared(ctx context.Context, svc string, pb *preparedBatch) {
	now := time.Now()
	b, key, recs, rejected, firstErr := pb.b, pb.key, pb.recs, pb.rejected, pb.firstErr
	a := s.store.Apply(key, recs, now)
	if a.Duplicate {
		s.m.batches.WithLabelValues("duplicate").Inc()
		s.log.Debug("duplicate batch acknowledged again", "service", svc, "instance_id", key.InstanceID, "batch_seq", key.Seq)
		return
	}
	if rejected > 0 {
		s.log.Warn("records rejected", "service", svc, "instance_id", key.InstanceID,
			"batch_seq", key.Seq, "rejected", rejected, "records", len(b.GetRecords()), "first_err", firstErr)
	}
	s.m.batches.WithLabelValues("applied").Inc()
	skip := make(map[int]bool, len(a.Rejected))
	for _, i := range a.Rejected {
		skip[i] = true
		s.m.rejected.WithLabelValues(rejectTooManyEdges).Inc()
	}
	if len(a.Rejected) > 0 {
		s.log.Error("records refused: edge table full", "service", svc, "rejected", len(a.Rejected), "max_edges", defaultMaxEdges)
	}
	for i, r := range recs {
		if skip[i] {
			continue
		}
		s.m.ingested.WithLabelValues(kindLabel(r.Kind)).Inc()
		if r.Kind == tallyv1.RecordKind_RECORD_KIND_CONFIRMED {
			s.m.duration.WithLabelValues(r.Source, r.Destination).Observe(r.Latency.Seconds())
		}
	}
	s.publishApplied(a)
	// Reconcile both sides' records in real time: the records as stored
	// (a SENT that includes_sent stands for among them, derived once, by
	// sentOf), with what only the upload carries (digests, peer instance).
	rrecs := make([]reconcile.Record, len(recs))
	for i, r := range recs {
		rrecs[i] = toReconcile(r, b.GetRecords()[pb.from[i]], b.GetInstanceId())
	}
	s.applyFindings(ctx, s.recon.AddBatch(rrecs, now))
}

// publishApplied updates metrics and tells the event stream about what
// one Apply changed.
func (s *Server) publishApplied(a Applied) {
	for i, e := range a.Edges {
		s.addEdgeMetrics(e, a.Deltas[i])
		s.publish("edge", "", e)
	}
	for _, ev := range a.Events {
		s.m.omissions.WithLabelValues(ev.Kind, ev.Source, ev.Destination).Inc()
		if ev.Kind == KindAuditGap {
			s.m.auditGaps.Inc()
		}
		s.publish("omission", ev.ID, ev)
		s.alerts.send(ev)
	}
	if a.Evicted > 0 {
		s.m.evicted.Add(float64(a.Evicted))
	}
}

// sentOf is the SENT record a CONFIRMED record with includes_sent stands
// for: sent at its time less its latency.
func sentOf(confirmed Record) Record {
	r := confirmed
	r.Kind = tallyv1.RecordKind_RECORD_KIND_SENT
	if !r.At.IsZero() {
		r.At = r.At.Add(-r.Latency)
	}
	r.Latency, r.RequestBytes, r.ResponseBytes = 0, 0, 0
	return r
}

// toReconcile is the reconciler's view of stored record r, uploaded as pr:
// kind, id and time as stored (r may be the SENT that pr's includes_sent
// stands for), the rest as uploaded.
func toReconcile(r Record, pr *tallyv1.Record, instance string) reconcile.Record {
	return reconcile.Record{
		Kind: reconcile.RecordKind(r.Kind), MessageID: r.MessageID, Seq: pr.GetSeq(),
		Source: pr.GetSource(), Destination: pr.GetDestination(),
		SourceIdentity: pr.GetSourceIdentity(), DestinationIdentity: pr.GetDestinationIdentity(),
		Instance: instance, PeerInstance: pr.GetPeerInstanceId(), Reporter: pr.GetReporter(),
		RequestDigest: pr.GetRequestDigest(), ResponseDigest: pr.GetResponseDigest(),
		RequestBytes: pr.GetRequestBytes(), ResponseBytes: pr.GetResponseBytes(),
		OmissionKind: pr.GetOmissionKind(), Detail: pr.GetDetail(), At: r.At,
	}
}

// applyFindings turns the reconciler's findings into omission events: in
// the store, on the event stream and the webhook, and in the ledger.
func (s *Server) applyFindings(ctx context.Context, fs []reconcile.Finding) {
	if len(fs) == 0 {
		return
	}
	recs := make([]Record, len(fs))
	for i, f := range fs {
		recs[i] = Record{
			Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, MessageID: f.MessageID, Seq: f.Seq,
			Source: f.Source, Destination: f.Destination,
			SourceIdentity: f.SourceIdentity, DestinationIdentity: f.DestinationIdentity,
			At: f.DetectedAt, OmissionKind: f.Kind, Detail: f.Detail, Reporter: ReporterControl,
		}
	}
	s.findingsMu.Lock()
	s.findingSeq++
	key := BatchKey{Service: ReporterControl, InstanceID: ReporterControl, Seq: s.findingSeq}
	a := s.store.Apply(key, recs, time.Now())
	s.findingsMu.Unlock()
	s.publishApplied(a)
	if err := s.ledger.appendFindings(ctx, a.Events); err != nil {
		// The mesh's own loss: say so like any other omission.
		s.log.Error("storing the reconciler's findings in the ledger", "events", len(a.Events), "err", err)
		s.findingsMu.Lock()
		s.findingSeq++
		gapKey := BatchKey{Service: ReporterControl, InstanceID: ReporterControl, Seq: s.findingSeq}
		gap := s.store.Apply(gapKey, []Record{{
			Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, OmissionKind: KindAuditGap, Reporter: ReporterControl,
			At: time.Now(), Detail: fmt.Sprintf("%d reconciler findings not stored in the ledger: %v", len(a.Events), err),
		}}, time.Now())
		s.findingsMu.Unlock()
		s.publishApplied(gap)
	}
}

const reconcileTick = 200 * time.Millisecond

// reconcileLoop lets the reconciler find what time reveals (a message not
// confirmed within the window, a sequence gap that stayed open).
func (s *Server) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(reconcileTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.applyFindings(ctx, s.recon.Tick(now))
		}
	}
}

// validateRecord checks one record of a batch uploaded by peerID (service
// svc) and converts it. On error, reason is the label of
// tally_records_rejected_total.
func validateRecord(pr *tallyv1.Record, peerID spiffeid.ID, svc string, td spiffeid.TrustDomain) (r Record, reason string, err error) {
	r = Record{
		Kind:          pr.GetKind(),
		MessageID:     strings.ToLower(pr.GetMessageId()),
		Seq:           pr.GetSeq(),
		Source:        pr.GetSource(),
		Destination:   pr.GetDestination(),
		Protocol:      pr.GetProtocol(),
		RequestBytes:  pr.GetRequestBytes(),
		ResponseBytes: pr.GetResponseBytes(),
		Latency:       time.Duration(pr.GetLatencyNanos()),
		Reporter:      pr.GetReporter(),
	}
	switch r.Kind {
	case tallyv1.RecordKind_RECORD_KIND_SENT, tallyv1.RecordKind_RECORD_KIND_CONFIRMED,
		tallyv1.RecordKind_RECORD_KIND_RECEIVED, tallyv1.RecordKind_RECORD_KIND_OMISSION:
	default:
		return Record{}, rejectKind, fmt.Errorf("kind %v is not SENT, CONFIRMED, RECEIVED or OMISSION", r.Kind)
	}
	// The other side of an omission may be unknown: a handshake refused
	// before any identity was proven (unauthorized, reported by the callee
	// without a source), or the mesh's own loss (audit_gap, no destination).
	// The reporting side is always named.
	otherUnknown := func(name, side string) bool {
		return name == "" && r.Kind == tallyv1.RecordKind_RECORD_KIND_OMISSION &&
			((side == "source" && r.Reporter == ReporterCallee && pr.GetOmissionKind() == "unauthorized") ||
				(side == "destination" && r.Reporter == ReporterCaller && pr.GetOmissionKind() == "audit_gap"))
	}
	if err := identity.ValidateServiceName(r.Source); err != nil && !otherUnknown(r.Source, "source") {
		return Record{}, rejectSource, fmt.Errorf("source: %w", err)
	}
	if err := identity.ValidateServiceName(r.Destination); err != nil && !otherUnknown(r.Destination, "destination") {
		return Record{}, rejectDestination, fmt.Errorf("destination: %w", err)
	}
	if r.MessageID != "" && (len(r.MessageID) != 32 || !isLowerHex(r.MessageID)) {
		return Record{}, rejectMessageID, fmt.Errorf("message_id %q: want 32 hex characters", pr.GetMessageId())
	}
	switch r.Protocol {
	case "", "http", "grpc", "tcp":
	default:
		return Record{}, rejectProtocol, fmt.Errorf("protocol %q is not http, grpc or tcp", r.Protocol)
	}
	for _, d := range [][]byte{pr.GetRequestDigest(), pr.GetResponseDigest()} {
		if len(d) != 0 && len(d) != 32 {
			return Record{}, rejectValue, fmt.Errorf("digest of %d bytes, want a 32-byte sha-256", len(d))
		}
	}
	if r.RequestBytes < 0 || r.ResponseBytes < 0 || r.Latency < 0 || pr.GetAtUnixNano() < 0 {
		return Record{}, rejectValue, errors.New("negative byte count, latency or time")
	}
	if pr.GetIncludesSent() && r.Kind != tallyv1.RecordKind_RECORD_KIND_CONFIRMED {
		return Record{}, rejectValue, fmt.Errorf("includes_sent on a %s record: only CONFIRMED may stand for its SENT", kindLabel(r.Kind))
	}
	if n := pr.GetAtUnixNano(); n > 0 {
		r.At = time.Unix(0, n).UTC()
	}
	// Which side may report which kind.
	switch {
	case r.Reporter != ReporterCaller && r.Reporter != ReporterCallee:
		return Record{}, rejectReporter, fmt.Errorf("reporter %q is not %q or %q", r.Reporter, ReporterCaller, ReporterCallee)
	case r.Reporter == ReporterCallee && (r.Kind == tallyv1.RecordKind_RECORD_KIND_SENT || r.Kind == tallyv1.RecordKind_RECORD_KIND_CONFIRMED),
		r.Reporter == ReporterCaller && r.Kind == tallyv1.RecordKind_RECORD_KIND_RECEIVED:
		return Record{}, rejectReporter, fmt.Errorf("a %s record cannot come from the %s", kindLabel(r.Kind), r.Reporter)
	}
	if r.Kind == tallyv1.RecordKind_RECORD_KIND_OMISSION {
		if !slices.Contains(OmissionKinds, pr.GetOmissionKind()) {
			return Record{}, rejectOmissionKind, fmt.Errorf("omission_kind %q is not one of %s", pr.GetOmissionKind(), strings.Join(OmissionKinds, ", "))
		}
		r.OmissionKind = pr.GetOmissionKind()
		r.Detail = truncate(pr.GetDetail(), maxRecordDetailSize)
	}
	// The reporting side is the peer: its own name and identity come from
	// its certificate; the other side's identity is as observed, if given.
	own, other := &r.SourceIdentity, &r.DestinationIdentity
	ownName, otherName := r.Source, r.Destination
	ownGiven, otherGiven := pr.GetSourceIdentity(), pr.GetDestinationIdentity()
	if r.Reporter == ReporterCallee {
		own, other = other, own
		ownName, otherName = otherName, ownName
		ownGiven, otherGiven = otherGiven, ownGiven
	}
	if ownName != svc {
		return Record{}, rejectForged, fmt.Errorf("a %s record of %s -> %s uploaded by %s: the %s must be the uploader",
			r.Reporter, r.Source, r.Destination, peerID, r.Reporter)
	}
	if ownGiven != "" && ownGiven != peerID.String() {
		return Record{}, rejectForged, fmt.Errorf("%s identity %q uploaded by %s", r.Reporter, ownGiven, peerID)
	}
	*own = peerID.String()
	if otherGiven != "" {
		if _, err := spiffeid.FromString(otherGiven); err != nil {
			return Record{}, rejectIdentity, fmt.Errorf("peer identity %q: %w", otherGiven, err)
		}
		*other = otherGiven
	} else if otherName != "" {
		oid, err := identity.ServiceID(td, otherName)
		if err != nil {
			return Record{}, rejectIdentity, err
		}
		*other = oid.String()
	}
	return r, "", nil
}

func kindLabel(k tallyv1.RecordKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "RECORD_KIND_"))
}

// addEdgeMetrics adds one batch's deltas of edge e to the counters.
func (s *Server) addEdgeMetrics(e Edge, d EdgeDelta) {
	labels := []string{e.Source, e.Destination}
	if d.Sent > 0 {
		s.m.sent.WithLabelValues(labels...).Add(float64(d.Sent))
	}
	if d.Confirmed > 0 {
		s.m.confirmed.WithLabelValues(labels...).Add(float64(d.Confirmed))
	}
	if d.Received > 0 {
		s.m.received.WithLabelValues(labels...).Add(float64(d.Received))
	}
	if d.BytesSent > 0 {
		s.m.bytesSent.WithLabelValues(labels...).Add(float64(d.BytesSent))
	}
	if d.BytesConfirmed > 0 {
		s.m.bytesConfirmed.WithLabelValues(labels...).Add(float64(d.BytesConfirmed))
	}
}

// streamEvent is one event of GET /api/v1/events, encoded once for every
// subscriber.
type streamEvent struct {
	Type string // "omission" or "edge"
	ID   string // the omission event's id; empty for edges
	Data []byte // JSON
}

func (s *Server) publish(typ, id string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encoding event", "type", typ, "err", err)
		return
	}
	s.events.Publish(streamEvent{Type: typ, ID: id, Data: b})
}

// instance is a sidecar instance with an open Watch stream.
type instance struct {
	InstanceID  string
	Service     string
	Address     string // empty: a client-only instance
	Identity    string
	ConnectedAt time.Time
}

// Fault is an injected failure on the edges it matches, as the REST API and
// the snapshot carry it.
type Fault struct {
	Kind    string  `json:"kind"`
	From    string  `json:"from"`    // source service, "*" for any
	To      string  `json:"to"`      // destination service, "*" for any
	Percent float64 `json:"percent"` // 0..100
	DelayMS int64   `json:"delay_ms"`
}

// FaultKinds are the fault kinds of SPEC.md.
var FaultKinds = []string{"drop", "truncate", "corrupt", "delay", "abort", "misroute"}

// ServiceInfo is a service as GET /api/v1/services returns it.
type ServiceInfo struct {
	Name      string         `json:"name"`
	Identity  string         `json:"identity"`
	Instances []InstanceInfo `json:"instances"`
}

// InstanceInfo is one connected instance of a service. Address is empty for
// a client-only instance (no inbound listener).
type InstanceInfo struct {
	InstanceID  string    `json:"instance_id"`
	Address     string    `json:"address"`
	ConnectedAt time.Time `json:"connected_at"`
}

// registry holds the connected instances and the faults, versions their
// state and wakes the watchers on change. It is safe for concurrent use.
type registry struct {
	td spiffeid.TrustDomain

	mu        sync.Mutex // guards following
	instances map[instanceKey]registered
	faults    map[string]Fault
	version   uint64
	snap      *tallyv1.Snapshot // of version; nil: not built yet
	watchers  map[chan struct{}]struct{}
	gen       uint64
}

type registered struct {
	instance
	gen uint64
}

func newRegistry(td spiffeid.TrustDomain) *registry {
	return &registry{
		td:        td,
		instances: make(map[instanceKey]registered),
		faults:    make(map[string]Fault),
		version:   1,
		watchers:  make(map[chan struct{}]struct{}),
	}
}

// register adds inst, replacing an earlier registration of the same
// service and instance id (a reconnect that overtook the old stream's end),
// and adds notify to the watchers. It returns the registration's generation
// for deregister.
func (r *registry) register(inst instance, notify chan struct{}) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.instances[instanceKey{inst.Service, inst.InstanceID}] = registered{inst, r.gen}
	r.watchers[notify] = struct{}{}
	r.changedLocked()
	return r.gen
}

// deregister removes the registration of generation gen, if it is still the
// current one, and the watcher notify.
func (r *registry) deregister(inst instance, gen uint64, notify chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.watchers, notify)
	k := instanceKey{inst.Service, inst.InstanceID}
	if cur, ok := r.instances[k]; ok && cur.gen == gen {
		delete(r.instances, k)
		r.changedLocked()
	}
}

func (r *registry) changedLocked() {
	r.version++
	r.snap = nil
	for w := range r.watchers {
		select {
		case w <- struct{}{}:
		default: // already pending
		}
	}
}

func (r *registry) instanceCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.instances)
}

// setFault switches f on, replacing the fault of the same kind.
func (r *registry) setFault(f Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[f.Kind] = f
	r.changedLocked()
}

// clearFault switches the fault of kind off and reports whether it was on.
func (r *registry) clearFault(kind string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.faults[kind]; !ok {
		return false
	}
	delete(r.faults, kind)
	r.changedLocked()
	return true
}

// faultList returns the faults that are on, in the order of FaultKinds.
func (r *registry) faultList() []Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []Fault{}
	for _, k := range FaultKinds {
		if f, ok := r.faults[k]; ok {
			out = append(out, f)
		}
	}
	return out
}

// services returns every service with an instance, sorted by name, with its
// instances sorted by id.
func (r *registry) services() []ServiceInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.servicesLocked()
}

func (r *registry) servicesLocked() []ServiceInfo {
	by := make(map[string]*ServiceInfo)
	for _, in := range r.instances {
		si := by[in.Service]
		if si == nil {
			si = &ServiceInfo{Name: in.Service, Identity: in.Identity}
			by[in.Service] = si
		}
		si.Instances = append(si.Instances, InstanceInfo{
			InstanceID: in.InstanceID, Address: in.Address, ConnectedAt: in.ConnectedAt,
		})
	}
	out := make([]ServiceInfo, 0, len(by))
	for _, si := range by {
		slices.SortFunc(si.Instances, func(a, b InstanceInfo) int { return strings.Compare(a.InstanceID, b.InstanceID) })
		out = append(out, *si)
	}
	slices.SortFunc(out, func(a, b ServiceInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// snapshot returns the snapshot of the current version. The result is
// shared: callers must not modify it.
func (r *registry) snapshot() *tallyv1.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snap != nil {
		return r.snap
	}
	snap := &tallyv1.Snapshot{Version: r.version}
	for _, si := range r.servicesLocked() {
		ps := &tallyv1.Service{Name: si.Name, Identity: si.Identity}
		for _, in := range si.Instances {
			if in.Address != "" {
				ps.Endpoints = append(ps.Endpoints, &tallyv1.Endpoint{InstanceId: in.InstanceID, Address: in.Address})
			}
		}
		snap.Services = append(snap.Services, ps)
	}
	for _, k := range FaultKinds {
		if f, ok := r.faults[k]; ok {
			snap.Faults = append(snap.Faults, &tallyv1.Fault{
				From: f.From, To: f.To, Kind: f.Kind, Percent: f.Percent, DelayMs: f.DelayMS,
			})
		}
	}
	r.snap = snap
	return snap
}
