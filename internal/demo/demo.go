// Package demo runs a whole mesh in one process: a control plane, three
// services (frontend -> orders -> payments) each behind its own sidecar, and
// a traffic generator, so that `tally demo` shows accounting and omission
// detection with nothing to install. Faults are switched from the dashboard
// or with `tally demo fault`.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/proxy"
)

// DefaultHTTPAddr is the demo control plane's REST and dashboard address.
const DefaultHTTPAddr = "127.0.0.1:7401"

// StateDir is where the demo keeps its control plane data, so that
// `tally demo fault` finds the admin token without flags.
func StateDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("tally-demo-%d", os.Getuid()))
}

// Config configures a demo run.
type Config struct {
	HTTPAddr string        // control plane REST and dashboard; "" = DefaultHTTPAddr
	StateDir string        // "" = StateDir()
	Rate     int           // traffic generator requests per second; 0 = 20
	Report   time.Duration // interval of the status line; 0 = 5s
	Logger   *slog.Logger  // nil discards
	Out      io.Writer     // banner and status lines; nil = os.Stdout
}

// Run starts the demo and blocks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.StateDir == "" {
		cfg.StateDir = StateDir()
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Report <= 0 {
		cfg.Report = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	dataDir := filepath.Join(cfg.StateDir, "control")
	ctl, err := control.New(control.Config{DataDir: dataDir, GRPCAddr: "127.0.0.1:0", HTTPAddr: cfg.HTTPAddr, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	// The control plane outlives the sidecars, so that they can upload
	// their last records when the demo stops.
	ctlCtx, ctlCancel := context.WithCancel(context.WithoutCancel(ctx))
	var ctlWG sync.WaitGroup
	defer ctlWG.Wait()
	defer ctlCancel()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The apps and sidecars outlive ctx by the traffic generator's drain:
	// on Ctrl-C it stops sending and its requests in flight finish before
	// they stop, so that stopping the demo does not itself cut messages
	// (and report omissions). A component's failure stops them at once.
	meshCtx, meshCancel := context.WithCancel(context.WithoutCancel(ctx))
	fail := func() { cancel(); meshCancel() }
	var wg sync.WaitGroup
	defer wg.Wait()
	defer meshCancel()
	errc := make(chan error, 16)
	ctlWG.Go(func() {
		if err := ctl.Run(ctlCtx); err != nil {
			errc <- fmt.Errorf("control plane: %w", err)
			fail()
		}
	})
	if err := waitFor(ctx, errc, ctl.Ready); err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, "join-token"))
	if err != nil {
		return err
	}
	tok, err := identity.ParseToken(string(raw))
	if err != nil {
		return err
	}

	// Each service: an app on its own port, a sidecar in front of it, and
	// the sidecar's outbound listener for the app's own calls.
	type svc struct {
		name                   string
		calls                  string // the service its app calls, if any
		app, inbound, outbound string
		handler                func(outbound, calls string) http.Handler
		sidecar                *proxy.Proxy
	}
	services := []*svc{
		{name: "payments", handler: paymentsApp},
		{name: "orders", calls: "payments", handler: ordersApp},
		{name: "frontend", calls: "orders", handler: frontendApp},
	}
	for _, s := range services {
		if s.app, err = freeAddr(); err != nil {
			return err
		}
		if s.inbound, err = freeAddr(); err != nil {
			return err
		}
		if s.outbound, err = freeAddr(); err != nil {
			return err
		}
		srv := &http.Server{Addr: s.app, Handler: s.handler(s.outbound, s.calls), ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", s.app)
		if err != nil {
			return err
		}
		wg.Go(func() { srv.Serve(ln) })
		context.AfterFunc(meshCtx, func() { srv.Close() })
		p, err := proxy.New(proxy.Config{Token: tok, Service: s.name, AppAddr: s.app, InboundAddr: s.inbound,
			OutboundAddr: s.outbound, Logger: cfg.Logger})
		if err != nil {
			return err
		}
		s.sidecar = p
		wg.Go(func() {
			if err := p.Run(meshCtx); err != nil {
				errc <- fmt.Errorf("sidecar %s: %w", s.name, err)
				fail()
			}
		})
	}
	genOut, err := freeAddr()
	if err != nil {
		return err
	}
	gen, err := proxy.New(proxy.Config{Token: tok, Service: "loadgen", OutboundAddr: genOut, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	wg.Go(func() {
		if err := gen.Run(meshCtx); err != nil {
			errc <- fmt.Errorf("sidecar loadgen: %w", err)
			fail()
		}
	})
	for _, s := range services {
		if err := waitFor(ctx, errc, s.sidecar.Ready); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, errc, gen.Ready); err != nil {
		return err
	}
	// Each caller must know its callee's endpoint before traffic starts: a
	// sidecar that joined before the next service registered learns of it
	// from the watch stream a moment later, and a call meanwhile fails with
	// 503.
	routes := map[*proxy.Proxy]string{gen: "frontend"}
	for _, s := range services {
		if s.calls != "" {
			routes[s.sidecar] = s.calls
		}
	}
	for caller, callee := range routes {
		if err := waitFor(ctx, errc, func() bool { return caller.Routes(callee) }); err != nil {
			return err
		}
	}
	admin, _ := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	fmt.Fprintf(cfg.Out, `Tally demo running: loadgen -> frontend -> orders -> payments, every hop through two sidecars.

  Dashboard:  http://%s/#token=%s
  API:        http://%s/api/v1/edges   /api/v1/omissions   /api/v1/events
  Faults:     tally demo fault truncate on     (drop, truncate, corrupt, delay, abort, misroute; off to stop)

Ctrl-C stops everything.
`, ctl.HTTPAddr(), strings.TrimSpace(string(admin)), ctl.HTTPAddr())

	genDone := make(chan struct{})
	wg.Go(func() {
		defer close(genDone)
		generate(ctx, genOut, cfg.Rate, cfg.Report, cfg.Out)
	})
	select {
	case <-ctx.Done():
	case err := <-errc:
		fail()
		return err
	}
	<-genDone // then the deferred meshCancel stops the sidecars and apps
	return nil
}

// generate calls frontend at rate per second through the loadgen sidecar and
// prints a status line every report interval. When ctx ends it sends no more
// and returns once the requests in flight have finished (each within the
// client's timeout): they are not cut short.
func generate(ctx context.Context, outbound string, rate int, report time.Duration, out io.Writer) {
	client := &http.Client{Timeout: 10 * time.Second}
	reqCtx := context.WithoutCancel(ctx)
	var ok, failed atomic.Int64
	byKind := sync.Map{}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	rep := time.NewTicker(report)
	defer rep.Stop()
	var wg sync.WaitGroup
	status := func(what string) {
		var kinds []string
		byKind.Range(func(k, v any) bool {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
			return true
		})
		sort.Strings(kinds)
		fmt.Fprintf(out, "%s  %s ok %d, failed loudly %d %v\n", time.Now().Format("15:04:05"), what, ok.Load(), failed.Load(), kinds)
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			status("stopped; requests")
			return
		case <-rep.C:
			status("requests")
		case <-tick.C:
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(reqCtx, "GET", "http://"+outbound+"/checkout", nil)
				req.Host = "frontend"
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == 200 {
					ok.Add(1)
					return
				}
				failed.Add(1)
				kind := "error"
				if err == nil {
					kind = resp.Header.Get("Tally-Omission")
					if kind == "" {
						kind = fmt.Sprint(resp.StatusCode)
					}
				}
				v, _ := byKind.LoadOrStore(kind, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			})
		}
	}
}

// call sends GET path to service through the sidecar at outbound and
// decodes a JSON answer.
func call(r *http.Request, outbound, service, path string, v any) error {
	req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://"+outbound+path, nil)
	req.Host = service
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s answered %d (%s)", service, resp.StatusCode, resp.Header.Get("Tally-Omission"))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func paymentsApp(_, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"paid","reference":%q}`, fmt.Sprintf("pay-%d", time.Now().UnixNano()))
	})
}

func ordersApp(outbound, payments string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var pay map[string]any
		if err := call(r, outbound, payments, "/pay", &pay); err != nil {
			http.Error(w, payments+": "+err.Error(), http.StatusBadGateway)
			return
		}
		items := []map[string]any{{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"items": items, "count": len(items), "payment": pay})
	})
}

func frontendApp(outbound, orders string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var order map[string]any
		if err := call(r, outbound, orders, "/orders", &order); err != nil {
			http.Error(w, orders+": "+err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"checkout": "ok", "order": order})
	})
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitFor(ctx context.Context, errc chan error, ready func() bool) error {
	for !ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			errc <- err
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
