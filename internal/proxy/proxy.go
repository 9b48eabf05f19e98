package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/wire"
)

// DefaultHoldBytes is the default of Config.HoldBytes (SPEC.md --hold-bytes).
const DefaultHoldBytes = 256 << 10

// Config configures a sidecar. The zero value of each optional field is
// documented beside it.
type Config struct {
	Token   identity.Token // the join token (required)
	Service string         // this workload's service name (required)

	AppAddr       string            // where the application listens; with InboundAddr makes the workload callable
	InboundAddr   string            // mTLS listener for other sidecars; "" = not callable
	AdvertiseAddr string            // address other sidecars dial; "" = the bound InboundAddr
	OutboundAddr  string            // plain HTTP listener for the local app; "" = none
	Upstreams     map[string]string // service -> local TCP listen address carrying raw bytes
	AdminAddr     string            // /metrics, /healthz, /readyz; "" = none

	// HoldBytes: a body up to this size is verified before its first byte is
	// delivered; a larger one is streamed with its tail withheld.
	// 0 = DefaultHoldBytes; negative = hold nothing (every body streams).
	HoldBytes int64
	// MaxHeaderBytes bounds the request or response header block (names plus
	// values). 0 = 64 KiB. Requests over it get 431; counted.
	MaxHeaderBytes int
	// MaxFrameBytes bounds one TCP DATA frame between sidecars. 0 = 64 KiB.
	MaxFrameBytes int
	// RecordBuffer bounds records held for upload to the control plane
	// (pending plus unacknowledged). 0 = 200,000. Overflow is counted and
	// reported as an audit_gap omission.
	RecordBuffer int
	// DrainTimeout bounds the drain of in-flight messages on shutdown. 0 = 10s.
	DrainTimeout time.Duration
	// AppProtocol selects how inbound requests reach the app: "auto" (h2c for
	// gRPC, HTTP/1.1 otherwise), "http1" or "h2c". "" = auto.
	AppProtocol string
	// MemoryLimit, if > 0, is the Go soft memory limit the sidecar keeps
	// while its records are acknowledged; it grows by recordMemory for each
	// record held for the control plane and shrinks back as they are
	// acknowledged. 0 leaves the runtime's limit alone.
	MemoryLimit int64

	Logger   *slog.Logger         // nil discards
	Registry *prometheus.Registry // nil: a private registry
}

func (c *Config) setDefaults() {
	if c.HoldBytes == 0 {
		c.HoldBytes = DefaultHoldBytes
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = 64 << 10
	}
	if c.RecordBuffer == 0 {
		c.RecordBuffer = 200_000
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.AppProtocol == "" {
		c.AppProtocol = "auto"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
}

// Validate reports the first configuration error.
func (c *Config) Validate() error {
	if c.Token.Addr == "" {
		return errors.New("join token: missing")
	}
	if err := wire.ValidServiceName(c.Service); err != nil {
		return fmt.Errorf("--service: %w", err)
	}
	if (c.InboundAddr == "") != (c.AppAddr == "") && c.InboundAddr != "" {
		return errors.New("--inbound needs --app: the inbound listener forwards to the app")
	}
	if c.OutboundAddr == "" && c.InboundAddr == "" && len(c.Upstreams) == 0 {
		return errors.New("nothing to do: give --inbound with --app, --outbound, or --upstream")
	}
	for name := range c.Upstreams {
		if err := wire.ValidServiceName(name); err != nil {
			return fmt.Errorf("--upstream %s: %w", name, err)
		}
	}
	switch c.AppProtocol {
	case "auto", "http1", "h2c":
	default:
		return fmt.Errorf("--app-protocol %q: want auto, http1 or h2c", c.AppProtocol)
	}
	return nil
}

// Proxy is one sidecar. Create it with New and run it with Run.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	agent   *agent
	rec     *recorder
	met     *metrics
	pool    *pool
	edges   sync.Map // destination service -> *edge
	app     *appClients
	ready   atomic.Bool
	flights sync.WaitGroup // in-flight TCP streams, drained on shutdown
}

// New validates cfg and builds a sidecar; it binds nothing yet.
func New(cfg Config) (*Proxy, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "proxy", "service", cfg.Service)}
	p.met = newMetrics(cfg.Registry)
	p.rec = newRecorder(wire.NewID(), cfg.Service, cfg.RecordBuffer, p.met)
	p.agent = newAgent(&p.cfg, p.log, p.rec, p.met)
	p.pool = newPool(p.agent)
	p.app = newAppClients(cfg.AppAddr, cfg.AppProtocol, cfg.MaxHeaderBytes)
	return p, nil
}

// holdBytes is the effective hold limit.
func (p *Proxy) holdBytes() int64 { return max(p.cfg.HoldBytes, 0) }

// Ready reports whether the sidecar has joined, holds a certificate and holds
// the endpoint snapshot.
func (p *Proxy) Ready() bool { return p.ready.Load() }

// Routes reports whether the sidecar is ready and its endpoint snapshot
// holds an endpoint of service: whether a call to service can be routed now.
// A sidecar that joined before service registered learns of it from the
// watch stream a moment later.
func (p *Proxy) Routes(service string) bool {
	return p.Ready() && len(p.agent.state.Load().endpoints[service]) > 0
}

// Run joins the mesh, serves until ctx ends, then drains in-flight messages,
// uploads the remaining records and returns.
func (p *Proxy) Run(ctx context.Context) error {
	var lc net.ListenConfig
	listen := func(addr, what string) (net.Listener, error) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listening for %s on %s: %w", what, addr, err)
		}
		return ln, nil
	}
	var (
		admin, inbound, outbound net.Listener
		upstreams                = map[string]net.Listener{}
		err                      error
	)
	closeAll := func() {
		for _, ln := range append([]net.Listener{admin, inbound, outbound}, mapValues(upstreams)...) {
			if ln != nil {
				ln.Close()
			}
		}
	}
	if p.cfg.AdminAddr != "" {
		if admin, err = listen(p.cfg.AdminAddr, "admin"); err != nil {
			return err
		}
	}
	if p.cfg.InboundAddr != "" {
		if inbound, err = listen(p.cfg.InboundAddr, "inbound"); err != nil {
			closeAll()
			return err
		}
		if p.cfg.AdvertiseAddr == "" {
			p.cfg.AdvertiseAddr = inbound.Addr().String()
		}
	}
	if p.cfg.OutboundAddr != "" {
		if outbound, err = listen(p.cfg.OutboundAddr, "outbound"); err != nil {
			closeAll()
			return err
		}
	}
	for name, addr := range p.cfg.Upstreams {
		ln, err := listen(addr, "upstream "+name)
		if err != nil {
			closeAll()
			return err
		}
		upstreams[name] = ln
	}

	// The agent joins first: nothing is served before the sidecar holds a
	// certificate, except the admin endpoints that say it is not ready.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	var adminSrv *http.Server
	if admin != nil {
		adminSrv = &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { adminSrv.Serve(admin) })
	}
	if err := p.agent.join(ctx); err != nil {
		closeAll()
		if adminSrv != nil {
			adminSrv.Close()
		}
		wg.Wait()
		return err
	}
	p.rec.mu.Lock()
	p.rec.sign = p.agent.signBatch
	p.rec.selfID = func() string { return p.agent.selfID }
	p.rec.mu.Unlock()
	wg.Go(func() { p.agent.run(runCtx) })
	if p.cfg.MemoryLimit > 0 {
		wg.Go(func() { p.followRecords(runCtx) })
	}
	select {
	case <-p.agent.synced:
	case <-ctx.Done():
	}

	var servers []interface{ Shutdown(context.Context) error }
	if inbound != nil {
		srv := p.inboundServer()
		servers = append(servers, srv)
		mln := p.newMTLSListener(runCtx, inbound)
		wg.Go(func() { p.serveInbound(runCtx, srv, mln) })
	}
	if outbound != nil {
		srv := &h1Server{
			handler:           http.HandlerFunc(p.serveOutbound),
			maxHeader:         p.cfg.MaxHeaderBytes + 4096,
			readHeaderTimeout: 10 * time.Second,
			idleTimeout:       2 * time.Minute,
			h2c:               p.outboundServer(),
			log:               p.log,
			badInput:          func(what string) { p.met.badInput.WithLabelValues(what).Inc() },
		}
		servers = append(servers, srv)
		wg.Go(func() { srv.Serve(outbound) })
	}
	for name, ln := range upstreams {
		wg.Go(func() { p.serveUpstream(runCtx, name, ln) })
	}
	if ctx.Err() == nil {
		p.ready.Store(true)
		p.log.Info("sidecar ready", "instance", p.rec.instance, "advertise", p.cfg.AdvertiseAddr)
	}

	<-ctx.Done()
	// Drain: stop accepting, let in-flight messages finish, then upload.
	p.ready.Store(false)
	drainCtx, drainCancel := context.WithTimeout(context.Background(), p.cfg.DrainTimeout)
	defer drainCancel()
	for _, ln := range upstreams {
		ln.Close()
	}
	var sw sync.WaitGroup
	if inbound != nil {
		inbound.Close()
	}
	for _, srv := range servers {
		sw.Go(func() {
			if err := srv.Shutdown(drainCtx); err != nil {
				if c, ok := srv.(interface{ Close() error }); ok {
					c.Close()
				}
			}
		})
	}
	sw.Wait()
	waitGroupCtx(drainCtx, &p.flights)
	p.rec.flush(drainCtx)
	cancel()
	p.pool.closeAll()
	if adminSrv != nil {
		adminSrv.Close()
	}
	wg.Wait()
	p.log.Info("sidecar stopped", "records_unacknowledged", p.rec.held())
	return nil
}

// recordMemory is about what one record held for the control plane costs
// the heap (the Record, its id and digests).
const recordMemory = 512

// followRecords keeps the soft memory limit at MemoryLimit plus what the
// held records need. Records the control plane has not acknowledged are
// live heap the collector cannot free: against a fixed limit, a stalled
// control plane made the collector run without pause and halved the data
// path's throughput (measured with the control plane stopped: 14k -> 8.7k
// requests/s; with the limit following the records, about 14.5k).
func (p *Proxy) followRecords(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := int64(-1)
	for {
		limit := p.cfg.MemoryLimit + int64(p.rec.held())*recordMemory
		if d := limit - last; last < 0 || d >= 1<<20 || d <= -1<<20 {
			debug.SetMemoryLimit(limit)
			last = limit
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.cfg.Registry, promhttp.HandlerOpts{}))
	// Profiles, on the admin address only (loopback by default).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !p.ready.Load() {
			http.Error(w, "not ready: "+p.agent.notReadyReason(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// waitGroupCtx waits for wg or ctx, whichever comes first.
func waitGroupCtx(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
