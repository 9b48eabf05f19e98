package control

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/observe"
	"github.com/tally-mesh/tally/internal/reconcile"
)

// Defaults of Config.
const (
	DefaultGRPCAddr    = "127.0.0.1:7400"
	DefaultHTTPAddr    = "127.0.0.1:7401"
	DefaultTrustDomain = "mesh.local"
	DefaultWindow      = 5 * time.Second
	DefaultSVIDTTL     = time.Hour
)

// Timing of the servers.
const (
	// shutdownGrace bounds how long Run waits for RPCs and HTTP requests to
	// finish once ctx ends, before it closes what is left.
	shutdownGrace = 5 * time.Second
	// snapshotInterval is the shortest time between two snapshots on one
	// Watch stream; changes in between are coalesced.
	snapshotInterval = 50 * time.Millisecond
	// serverCertTTL is the life of the gRPC listener's certificate; it is
	// reissued when two thirds of it have passed.
	serverCertTTL = 30 * 24 * time.Hour
	// sseHeartbeat is the interval of comment lines on the event stream.
	sseHeartbeat = 15 * time.Second
	// maxBatchBytes bounds one gRPC message, a RecordBatch in practice.
	maxBatchBytes = 32 << 20
	// sseBuffer is the number of events a stream subscriber may lag behind
	// before it is dropped.
	sseBuffer = 1024
)

// Config configures a control plane Server.
type Config struct {
	// DataDir holds the control plane's state: the CA (ca.crt, ca.key), the
	// default join token (join-token), the admin token (admin-token), the join
	// tokens' state (tokens.json) and the bound HTTP address (http-addr).
	// Created with mode 0700 if missing. Required.
	DataDir string
	// GRPCAddr is the listen address of the sidecar API (gRPC over TLS).
	// Empty: DefaultGRPCAddr. Port 0 picks a free port, which the join token
	// then carries.
	GRPCAddr string
	// HTTPAddr is the listen address of the REST API, the event stream, the
	// dashboard, /metrics, /healthz and /readyz. Empty: DefaultHTTPAddr. The
	// bound address is written to DataDir/http-addr.
	HTTPAddr string
	// TrustDomain is the SPIFFE trust domain of the mesh. Empty:
	// DefaultTrustDomain. It must match the CA of DataDir if one exists.
	TrustDomain string
	// Window is how long a sent message may stay unconfirmed. Zero:
	// DefaultWindow.
	Window time.Duration
	// AlertWebhook, if set, receives every omission event as a JSON POST,
	// retried with backoff (SPEC.md alerts.webhook). "" = none.
	AlertWebhook string
	// Ledger selects the durable ledger: "" or "sqlite" for SQLite in
	// DataDir/ledger.db, or a postgres:// URL. Several control planes may
	// share one PostgreSQL ledger: one holds the writer role, the others
	// serve reads and take over when it dies.
	Ledger string
	// SVIDTTL is the life of the sidecars' certificates; sidecars renew at
	// two thirds of it. Zero: DefaultSVIDTTL; at least one second.
	SVIDTTL time.Duration
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Registry receives the server's metrics. Nil: a new registry, served on
	// /metrics all the same.
	Registry *prometheus.Registry
}

// Server is the control plane: certificate authority, sidecar API, record
// ingestion, REST API, event stream and dashboard. Its methods are safe for
// concurrent use; Run may be called once.
type Server struct {
	cfg        Config
	log        *slog.Logger
	td         spiffeid.TrustDomain
	ca         *identity.CA
	tokens     *tokenStore
	adminToken string
	store      Store
	ledger     *ledgerIngest
	recon      *reconcile.Reconciler
	alerts     *alerter

	findingsMu sync.Mutex // guards findingSeq
	findingSeq uint64
	reg        *registry
	events     observe.Bus[streamEvent]
	m          *metrics

	started atomic.Bool
	ready   atomic.Bool
	bound   atomic.Pointer[boundAddrs]
	// stopping is closed when Run begins to shut down; open streams end.
	stopping chan struct{}
	// streams owns the receiving goroutines of Report streams.
	streams sync.WaitGroup

	certMu sync.Mutex // guards following
	cert   *tls.Certificate
	hosts  []string
}

type boundAddrs struct {
	grpc, http string
	// token is the address join tokens carry: the bound gRPC port on the
	// host of GRPCAddr (this machine's name for a wildcard host).
	token string
}

// New validates cfg, creates DataDir if needed, and loads or creates the CA,
// the admin token and the join tokens' state. It binds nothing; see Run.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("control: data directory is required")
	}
	cfg.GRPCAddr = orDefault(cfg.GRPCAddr, DefaultGRPCAddr)
	cfg.HTTPAddr = orDefault(cfg.HTTPAddr, DefaultHTTPAddr)
	cfg.TrustDomain = orDefault(cfg.TrustDomain, DefaultTrustDomain)
	for _, a := range []struct{ flag, addr string }{{"grpc-addr", cfg.GRPCAddr}, {"http-addr", cfg.HTTPAddr}} {
		if err := checkListenAddr(a.addr); err != nil {
			return nil, fmt.Errorf("control: %s %q: %w", a.flag, a.addr, err)
		}
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("control: trust domain %q: %w", cfg.TrustDomain, err)
	}
	switch {
	case cfg.Window < 0:
		return nil, fmt.Errorf("control: window %v is negative", cfg.Window)
	case cfg.Window == 0:
		cfg.Window = DefaultWindow
	}
	switch {
	case cfg.SVIDTTL == 0:
		cfg.SVIDTTL = DefaultSVIDTTL
	case cfg.SVIDTTL < time.Second:
		return nil, fmt.Errorf("control: svid-ttl %v is shorter than 1s", cfg.SVIDTTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("control: creating data directory: %w", err)
	}
	if fi, err := os.Stat(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		cfg.Logger.Warn("data directory is open to other users; it holds the CA key and tokens",
			"dir", cfg.DataDir, "mode", fi.Mode().Perm().String())
	}
	ca, err := identity.LoadOrCreateCA(cfg.DataDir, td)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	admin, err := loadOrCreateAdminToken(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	tokens, err := loadTokens(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	// A stale http-addr would send readers polling for it to a dead address.
	if err := os.Remove(filepath.Join(cfg.DataDir, HTTPAddrFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control: %w", err)
	}

	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "control"),
		td:         td,
		ca:         ca,
		tokens:     tokens,
		adminToken: admin,
		store:      newMemStore(defaultMaxEvents, defaultMaxEdges),
		reg:        newRegistry(td),
		stopping:   make(chan struct{}),
	}
	lg, err := ledger.Open(context.Background(), ledger.Config{
		Store: cfg.Ledger, Dir: cfg.DataDir, Origin: "tally/" + td.Name() + "/ledger", Logger: s.log.With("component", "ledger"),
	})
	if err != nil {
		return nil, fmt.Errorf("control: opening the ledger: %w", err)
	}
	s.ledger = newLedgerIngest(lg, ca.Cert)
	// After a restart, records of messages from before it arrive without
	// their other half for a while: give the reconciler a warm-up then,
	// but none on a fresh ledger.
	warmup := time.Duration(0)
	if size, _, err := lg.Head(context.Background()); err == nil && size == 0 {
		warmup = -1
	}
	s.recon = reconcile.New(reconcile.Config{Window: cfg.Window, Warmup: warmup})
	s.alerts = newAlerter(cfg.AlertWebhook, s.log, cfg.Registry)
	s.m, err = newMetrics(cfg.Registry, s)
	if err != nil {
		return nil, fmt.Errorf("control: registering metrics: %w", err)
	}
	return s, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// checkListenAddr accepts host:port with a numeric port; an empty host
// listens on every interface.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// Ready reports whether both listeners are bound and the join token is
// written.
func (s *Server) Ready() bool { return s.ready.Load() }

// GRPCAddr returns the bound address of the sidecar API, empty before Run
// has bound it.
func (s *Server) GRPCAddr() string {
	if b := s.bound.Load(); b != nil {
		return b.grpc
	}
	return ""
}

// HTTPAddr returns the bound address of the HTTP server, empty before Run
// has bound it.
func (s *Server) HTTPAddr() string {
	if b := s.bound.Load(); b != nil {
		return b.http
	}
	return ""
}

// Run binds both listeners, writes the join token and DataDir/http-addr, and
// serves until ctx ends. Then it stops accepting, ends the open streams (a
// sidecar resends what was not acknowledged), waits up to a bound for
// requests in progress, and returns nil. It returns an error if it cannot
// bind or write its files, or if a server fails.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("control: Run called twice")
	}
	defer s.ready.Store(false)
	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("control: listening on grpc-addr: %w", err)
	}
	hl, err := lc.Listen(ctx, "tcp", s.cfg.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("control: listening on http-addr: %w", err)
	}
	b := &boundAddrs{grpc: gl.Addr().String(), http: hl.Addr().String()}
	b.token = tokenAddr(s.cfg.GRPCAddr, gl.Addr())
	s.bound.Store(b)

	s.certMu.Lock()
	s.hosts = certHosts(b.token)
	s.certMu.Unlock()
	if _, err := s.serverCert(nil); err != nil {
		gl.Close()
		hl.Close()
		return fmt.Errorf("control: %w", err)
	}
	tlsCfg := identity.ControlServerTLS(tls.Certificate{}, s.ca.Cert)
	tlsCfg.Certificates = nil
	tlsCfg.GetCertificate = s.serverCert
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// A refused batch would be resent forever: leave ample room over
		// the sidecars' batches (2,000 records, well under 4 MiB).
		grpc.MaxRecvMsgSize(maxBatchBytes),
		// Batches are large (2,000 records, a few hundred KiB): windows
		// that fit several let a sidecar keep batches in flight.
		grpc.InitialWindowSize(4<<20),
		grpc.InitialConnWindowSize(16<<20),
	)
	tallyv1.RegisterMeshServer(gs, &meshServer{s: s})

	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	hs := &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}

	var wg sync.WaitGroup
	defer s.ledger.log.Close()
	// Take the writer role now if it is free, so the first batches need
	// not wait; otherwise serve reads and keep trying (ledgerIngest.run).
	if err := s.ledger.log.AcquireWriter(ctx); err == nil {
		s.ledger.writer.Store(true)
	} else {
		s.log.Info("ledger reader: another control plane holds the writer role", "err", err)
	}
	ledgerCtx, stopLedger := context.WithCancel(context.WithoutCancel(ctx))
	var lw sync.WaitGroup
	lw.Go(func() { s.ledger.run(ledgerCtx, s) })
	lw.Go(func() { s.reconcileLoop(ledgerCtx) })
	lw.Go(func() { s.alerts.run(ledgerCtx) })
	defer func() { stopLedger(); lw.Wait() }()
	errc := make(chan error, 2)
	wg.Go(func() {
		if err := gs.Serve(gl); err != nil {
			errc <- fmt.Errorf("control: grpc server: %w", err)
		}
	})
	wg.Go(func() {
		if err := hs.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("control: http server: %w", err)
		}
	})

	err = s.writeStartFiles(b)
	if err == nil {
		s.ready.Store(true)
		s.log.Info("control plane serving", "grpc_addr", b.grpc, "http_addr", b.http,
			"join_token_file", filepath.Join(s.cfg.DataDir, JoinTokenFile), "trust_domain", s.td.Name())
		select {
		case <-ctx.Done():
		case err = <-errc:
		}
	}

	s.ready.Store(false)
	s.log.Info("control plane stopping")
	close(s.stopping)
	cancelBase() // ends event streams
	s.events.Close()
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if herr := hs.Shutdown(shutCtx); herr != nil {
		hs.Close()
	}
	stopped := make(chan struct{})
	go func() { // owned: waited for below
		gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-shutCtx.Done():
		gs.Stop()
		<-stopped
	}
	wg.Wait()
	s.streams.Wait()
	s.log.Info("control plane stopped")
	return err
}

// writeStartFiles writes the default join token (with the bound address)
// and the bound HTTP address.
func (s *Server) writeStartFiles(b *boundAddrs) error {
	tok, err := s.tokens.ensureDefault(b.token, s.ca.Fingerprint(), time.Now())
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.cfg.DataDir, JoinTokenFile), []byte(tok.String()+"\n")); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(s.cfg.DataDir, HTTPAddrFile), []byte(b.http+"\n")); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	return nil
}

// tokenAddr returns the address join tokens carry for a gRPC listener
// configured as cfgAddr and bound to bound: the configured host (this
// machine's host name for a wildcard host, 127.0.0.1 if it has none) with the
// bound port.
func tokenAddr(cfgAddr string, bound net.Addr) string {
	host, _, _ := net.SplitHostPort(cfgAddr)
	_, port, _ := net.SplitHostPort(bound.String())
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if h, err := os.Hostname(); err == nil && h != "" {
			if _, err := identity.NewToken(net.JoinHostPort(h, "1"), [32]byte{1}); err == nil {
				host = h
			}
		}
	}
	return net.JoinHostPort(host, port)
}

// certHosts returns the names the gRPC server certificate covers: the host
// of the token address and the loopback names.
func certHosts(tokenAddr string) []string {
	host, _, _ := net.SplitHostPort(tokenAddr)
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if !slices.Contains(hosts, host) {
		hosts = append([]string{host}, hosts...)
	}
	return hosts
}

// serverCert returns the gRPC listener's certificate, issuing a new one when
// two thirds of the current one's life have passed. It is the listener's
// tls.Config.GetCertificate.
func (s *Server) serverCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	now := time.Now()
	if c := s.cert; c != nil {
		life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		if now.Before(c.Leaf.NotBefore.Add(life * 2 / 3)) {
			return c, nil
		}
	}
	c, err := s.ca.ServerCert(s.hosts, serverCertTTL)
	if err != nil {
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			s.log.Error("reissuing control certificate", "err", err)
			return s.cert, nil
		}
		return nil, err
	}
	s.cert = &c
	return s.cert, nil
}

// metrics are the control plane's Prometheus metrics.
type metrics struct {
	sent, confirmed, received *prometheus.CounterVec // source, destination
	bytesSent, bytesConfirmed *prometheus.CounterVec // source, destination
	duration                  *prometheus.HistogramVec
	omissions                 *prometheus.CounterVec // kind, source, destination
	ingested                  *prometheus.CounterVec // kind
	rejected                  *prometheus.CounterVec // reason
	auditGaps                 prometheus.Counter
	ledgerSize                prometheus.Gauge
	evicted                   prometheus.Counter
	batches                   *prometheus.CounterVec // result
	unsignedBatches           prometheus.Counter
	joins, renewals           *prometheus.CounterVec // result
}

func newMetrics(reg *prometheus.Registry, s *Server) (*metrics, error) {
	edge := []string{"source", "destination"}
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_messages_sent_total", Help: "Messages the calling sidecars reported sent.",
		}, edge),
		confirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_messages_confirmed_total", Help: "Messages the calling sidecars reported confirmed by a verified receipt.",
		}, edge),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_messages_received_total", Help: "Messages the receiving sidecars reported received whole.",
		}, edge),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_bytes_sent_total", Help: "Request bytes of the messages reported sent.",
		}, edge),
		bytesConfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_bytes_confirmed_total", Help: "Request and response bytes of the messages reported confirmed.",
		}, edge),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tally_request_duration_seconds",
			Help:    "Time from sending a message to verifying its receipt, as the calling sidecars reported it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, edge),
		omissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_omissions_total", Help: "Omission events, after de-duplication of reports of both sides.",
		}, []string{"kind", "source", "destination"}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_records_ingested_total", Help: "Records applied, by record kind.",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_records_rejected_total", Help: "Records refused as invalid or forged, by reason.",
		}, []string{"reason"}),
		auditGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_audit_gaps_total", Help: "Omission events of kind audit_gap: records the mesh could not keep.",
		}),
		unsignedBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_control_unsigned_batches_total", Help: "Batches whose leaves were stored without a verified sidecar signature.",
		}),
		ledgerSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tally_ledger_size", Help: "Leaves in the ledger: confirmations and omission events.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_control_events_evicted_total", Help: "Oldest omission events dropped to stay within the event bound.",
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_control_batches_total", Help: "Record batches acknowledged, by result (applied, duplicate).",
		}, []string{"result"}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_control_joins_total", Help: "Join calls, by result.",
		}, []string{"result"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_control_renewals_total", Help: "Renew calls, by result.",
		}, []string{"result"}),
	}
	cs := []prometheus.Collector{
		m.sent, m.confirmed, m.received, m.bytesSent, m.bytesConfirmed, m.duration,
		m.omissions, m.ingested, m.rejected, m.auditGaps, m.ledgerSize, m.evicted, m.unsignedBatches,
		m.batches, m.joins, m.renewals,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tally_control_instances", Help: "Sidecar instances with an open Watch stream.",
		}, func() float64 { return float64(s.reg.instanceCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tally_control_event_subscribers", Help: "Open event streams (GET /api/v1/events).",
		}, func() float64 { return float64(s.events.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tally_control_event_subscribers_dropped_total", Help: "Event streams dropped for falling behind.",
		}, func() float64 { return float64(s.events.Dropped()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
