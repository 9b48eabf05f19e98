package proxy

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/ledger"
)

// meshState is one snapshot of the mesh as the control plane sent it.
type meshState struct {
	version   uint64
	endpoints map[string][]endpoint // service -> endpoints
	faults    []*tallyv1.Fault
}

type endpoint struct {
	instance string
	addr     string
}

// agent is the sidecar's side of the control plane API: it joins, renews the
// SVID at two thirds of its life, keeps the endpoint snapshot current and
// uploads records.
type agent struct {
	cfg *Config
	log *slog.Logger
	rec *recorder
	met *metrics

	td     spiffeid.TrustDomain
	source *identity.Source // set once by join, before joined
	selfID string           // this sidecar's SPIFFE ID, set with source
	joined atomic.Bool
	conn   *grpc.ClientConn // mTLS with the current SVID
	client tallyv1.MeshClient

	state   atomic.Pointer[meshState]
	synced  chan struct{} // closed at the first snapshot
	syncOne sync.Once
	rr      sync.Map // service -> *atomic.Uint32 round-robin cursor
}

func newAgent(cfg *Config, log *slog.Logger, rec *recorder, met *metrics) *agent {
	a := &agent{cfg: cfg, log: log.With("component", "agent"), rec: rec, met: met, synced: make(chan struct{})}
	a.state.Store(&meshState{endpoints: map[string][]endpoint{}})
	return a
}

func (a *agent) notReadyReason() string {
	switch {
	case !a.joined.Load():
		return "not joined"
	default:
		select {
		case <-a.synced:
			return "starting listeners"
		default:
			return "no endpoint snapshot yet"
		}
	}
}

// join obtains the first SVID, retrying with backoff until ctx ends: a
// sidecar may well start before its control plane.
func (a *agent) join(ctx context.Context) error {
	bo := backoff{}
	for {
		err := a.tryJoin(ctx)
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return err
		}
		a.log.Warn("join failed, retrying", "control", a.cfg.Token.Addr, "err", err)
		if err := bo.wait(ctx); err != nil {
			return fmt.Errorf("joining the mesh at %s: %w", a.cfg.Token.Addr, ctx.Err())
		}
	}
}

type permanentError struct{ error }

func (a *agent) tryJoin(ctx context.Context) error {
	tok := a.cfg.Token
	// Learn the trust domain from the control plane's certificate, which
	// the token's CA fingerprint authenticates.
	d := tls.Dialer{Config: identity.JoinClientTLS(tok.CAFingerprint)}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := d.DialContext(dctx, "tcp", tok.Addr)
	cancel()
	if err != nil {
		return fmt.Errorf("contacting control plane: %w", err)
	}
	cs := c.(*tls.Conn).ConnectionState()
	c.Close()
	pinned, err := identity.PinnedCA(&cs, tok.CAFingerprint)
	if err != nil {
		return permanentError{fmt.Errorf("control plane certificate: %w", err)}
	}
	if a.td, err = identity.TrustDomainOf(pinned); err != nil {
		return permanentError{fmt.Errorf("mesh CA: %w", err)}
	}
	id, err := identity.ServiceID(a.td, a.cfg.Service)
	if err != nil {
		return permanentError{err}
	}

	jc, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(identity.JoinClientTLS(tok.CAFingerprint))))
	if err != nil {
		return permanentError{fmt.Errorf("join client: %w", err)}
	}
	defer jc.Close()
	key, csr, err := newCSR(id)
	if err != nil {
		return permanentError{err}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := tallyv1.NewMeshClient(jc).Join(rctx, &tallyv1.JoinRequest{
		TokenId: tok.ID, TokenSecret: tok.Secret, Service: a.cfg.Service, CsrDer: csr,
	})
	if err != nil {
		if isPermanent(err) {
			return permanentError{fmt.Errorf("join refused: %w", err)}
		}
		return fmt.Errorf("join: %w", err)
	}
	svid, bundle, err := parseSVIDResponse(resp, key, a.td)
	if err != nil {
		return permanentError{err}
	}
	if !bundleHolds(bundle, tok.CAFingerprint) {
		return permanentError{errors.New("trust bundle from control plane does not hold the CA the join token names")}
	}
	a.source = identity.NewSource(svid, bundle)
	a.selfID = svid.ID.String()
	// Only the control plane's own identity may answer on this connection:
	// every sidecar certificate is also a TLS server certificate.
	ctlTLS := tlsconfig.MTLSClientConfig(a.source, a.source, tlsconfig.AuthorizeID(identity.ControlID(a.td)))
	ctlTLS.MinVersion = tls.VersionTLS13
	conn, err := grpc.NewClient(tok.Addr, grpc.WithTransportCredentials(credentials.NewTLS(ctlTLS)))
	if err != nil {
		return permanentError{fmt.Errorf("mesh client: %w", err)}
	}
	a.conn = conn
	a.client = tallyv1.NewMeshClient(conn)
	a.met.svidExpiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	a.joined.Store(true)
	a.log.Info("joined mesh", "id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
	return nil
}

// signYieldEvery is how many leaves signBatch hashes between yields.
const signYieldEvery = 64

// signBatch signs the ledger leaves of b with the current SVID's key; a
// batch without leaves goes unsigned. A failure leaves the batch unsigned:
// the control plane stores it and says so.
func (a *agent) signBatch(b *tallyv1.RecordBatch) {
	// The leaves are encoded and hashed one by one, yielding now and then:
	// the sidecar runs on one core, and a whole batch at once (up to a
	// millisecond) would hold up every message in flight meanwhile.
	var root ledger.RootBuilder
	var leaf []byte
	for i, r := range b.Records {
		e, ok := ledger.FromRecord(r, b.InstanceId, b.BatchSeq, i)
		if !ok {
			continue
		}
		var err error
		if leaf, err = e.AppendBinary(leaf[:0]); err != nil {
			a.log.Error("batch not signed: encoding its leaves", "batch_seq", b.BatchSeq, "record", i, "err", err)
			return
		}
		root.Add(leaf)
		if root.Len()%signYieldEvery == 0 {
			runtime.Gosched()
		}
	}
	if root.Len() == 0 {
		return
	}
	svid := a.source.SVID()
	chain := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		chain[i] = c.Raw
	}
	sig, err := ledger.SignBatchRoot(svid.PrivateKey, chain, b.InstanceId, b.BatchSeq, time.Now(), root.Len(), root.Root())
	if err != nil {
		a.log.Error("batch not signed", "batch_seq", b.BatchSeq, "err", err)
		return
	}
	b.Signature = ledger.SignatureToProto(sig)
}

func bundleHolds(b *x509bundle.Bundle, fp [32]byte) bool {
	for _, c := range b.X509Authorities() {
		if identity.Fingerprint(c) == fp {
			return true
		}
	}
	return false
}

func newCSR(id spiffeid.ID) (crypto.Signer, []byte, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

func parseSVIDResponse(resp *tallyv1.SVIDResponse, key crypto.Signer, td spiffeid.TrustDomain) (*x509svid.SVID, *x509bundle.Bundle, error) {
	bundle, err := identity.ParseBundle(td, resp.BundleDer)
	if err != nil {
		return nil, nil, fmt.Errorf("from control plane: %w", err)
	}
	svid, err := identity.ParseSVID(resp.ChainDer, key, bundle)
	if err != nil {
		return nil, nil, fmt.Errorf("SVID from control plane: %w", err)
	}
	return svid, bundle, nil
}

// run keeps the SVID fresh, the snapshot current and the records flowing
// until ctx ends.
func (a *agent) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { a.renewLoop(ctx) })
	wg.Go(func() { a.watchLoop(ctx) })
	wg.Go(func() { a.reportLoop(ctx) })
	wg.Wait()
	a.conn.Close()
}

func (a *agent) renewLoop(ctx context.Context) {
	for {
		at := identity.RenewAt(a.source.SVID())
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		bo := backoff{max: 5 * time.Second}
		for {
			err := a.renew(ctx)
			if err == nil {
				break
			}
			a.log.Warn("SVID renewal failed, retrying", "err", err, "expires", a.source.SVID().Certificates[0].NotAfter)
			if bo.wait(ctx) != nil {
				return
			}
		}
	}
}

func (a *agent) renew(ctx context.Context) error {
	old := a.source.SVID()
	key, csr, err := newCSR(old.ID)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.client.Renew(rctx, &tallyv1.RenewRequest{CsrDer: csr})
	if err != nil {
		return err
	}
	svid, _, err := parseSVIDResponse(resp, key, a.td)
	if err != nil {
		return err
	}
	a.source.Update(svid)
	a.met.svidRenewals.Inc()
	a.met.svidExpiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	a.log.Info("SVID renewed", "expires", svid.Certificates[0].NotAfter)
	return nil
}

func (a *agent) watchLoop(ctx context.Context) {
	bo := backoff{max: 2 * time.Second}
	for ctx.Err() == nil {
		err := a.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("endpoint watch interrupted, keeping last snapshot", "err", err)
		bo.wait(ctx)
	}
}

func (a *agent) watch(ctx context.Context) error {
	stream, err := a.client.Watch(ctx, &tallyv1.WatchRequest{InstanceId: a.rec.instance, AdvertiseAddr: a.cfg.AdvertiseAddr})
	if err != nil {
		return err
	}
	// After a reconnect (the control plane may have restarted and be
	// rebuilding its registry from sidecars that re-register), endpoints
	// are only added for a grace period, never removed: a restart of the
	// control plane must not take endpoints away from the data path. At
	// the end of the grace the latest snapshot applies exactly. An
	// endpoint that is really gone fails at dial and is skipped, and an
	// identity check guards against a reused address.
	var graceEnd time.Time
	if a.state.Load().version > 0 {
		graceEnd = time.Now().Add(reregisterGrace)
	}
	var graceTimer *time.Timer
	defer func() {
		if graceTimer != nil {
			graceTimer.Stop()
		}
	}()
	for {
		snap, err := stream.Recv()
		if err != nil {
			return err
		}
		st := &meshState{version: snap.Version, endpoints: map[string][]endpoint{}, faults: snap.Faults}
		for _, s := range snap.Services {
			for _, e := range s.Endpoints {
				if e.Address != "" {
					st.endpoints[s.Name] = append(st.endpoints[s.Name], endpoint{instance: e.InstanceId, addr: e.Address})
				}
			}
		}
		if st.version == 0 {
			st.version = 1 // zero means "no snapshot yet"
		}
		if time.Now().Before(graceEnd) {
			exact := st
			a.state.Store(mergeEndpoints(a.state.Load(), st))
			if graceTimer != nil {
				graceTimer.Stop()
			}
			graceTimer = time.AfterFunc(time.Until(graceEnd), func() { a.state.Store(exact) })
		} else {
			a.state.Store(st)
		}
		a.syncOne.Do(func() { close(a.synced) })
	}
}

// reregisterGrace is how long after a reconnect endpoints are only added.
const reregisterGrace = 5 * time.Second

// mergeEndpoints returns next with the endpoints of prev it lacks added.
func mergeEndpoints(prev, next *meshState) *meshState {
	out := &meshState{version: next.version, faults: next.faults, endpoints: map[string][]endpoint{}}
	for svc, eps := range next.endpoints {
		out.endpoints[svc] = append([]endpoint(nil), eps...)
	}
	for svc, eps := range prev.endpoints {
		for _, e := range eps {
			if !slices.ContainsFunc(out.endpoints[svc], func(x endpoint) bool { return x.addr == e.addr }) {
				out.endpoints[svc] = append(out.endpoints[svc], e)
			}
		}
	}
	return out
}

// endpoints returns the endpoints of service, rotated for round-robin: the
// caller tries them in order.
func (a *agent) endpoints(service string) []endpoint {
	eps := a.state.Load().endpoints[service]
	if len(eps) <= 1 {
		return eps
	}
	v, _ := a.rr.LoadOrStore(service, new(atomic.Uint32))
	start := int(v.(*atomic.Uint32).Add(1)) % len(eps)
	out := make([]endpoint, 0, len(eps))
	out = append(out, eps[start:]...)
	return append(out, eps[:start]...)
}

func (a *agent) reportLoop(ctx context.Context) {
	bo := backoff{max: 2 * time.Second}
	for ctx.Err() == nil {
		err := a.report(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("record upload interrupted, will resend unacknowledged batches", "err", err, "held", a.rec.held())
		bo.wait(ctx)
	}
}

func (a *agent) report(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.client.Report(sctx)
	if err != nil {
		return err
	}
	a.rec.rewind()
	errc := make(chan error, 1)
	go func() {
		for {
			ack, err := stream.Recv()
			if err != nil {
				errc <- err
				cancel()
				return
			}
			a.rec.ack(ack.BatchSeq)
		}
	}()
	for {
		b, err := a.rec.next(sctx)
		if err != nil {
			break
		}
		if err := stream.Send(b); err != nil {
			break
		}
	}
	cancel()
	return <-errc
}

// backoff is a capped exponential backoff with jitter.
type backoff struct {
	n   int
	max time.Duration
}

func (b *backoff) wait(ctx context.Context) error {
	maxd := b.max
	if maxd == 0 {
		maxd = 2 * time.Second
	}
	d := min(50*time.Millisecond<<min(b.n, 10), maxd)
	b.n++
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
