package cli

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/proxy"
)

func init() { commands = append(commands, newProxyCmd) }

func newProxyCmd() *cobra.Command {
	var (
		cfg         proxy.Config
		tokenFile   string
		upstreams   []string
		holdBytes   string
		concurrency int
	)
	cmd := &cobra.Command{
		Use:   "proxy --join-token-file FILE --service NAME [flags]",
		Short: "Run a sidecar: accounts for every message of one workload",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("--join-token-file: %w", err)
			}
			if cfg.Token, err = identity.ParseToken(string(raw)); err != nil {
				return fmt.Errorf("%s: %w", tokenFile, err)
			}
			cfg.Upstreams = map[string]string{}
			for _, u := range upstreams {
				name, addr, ok := strings.Cut(u, "=")
				if !ok || name == "" || addr == "" {
					return fmt.Errorf("--upstream %q: want NAME=ADDR", u)
				}
				if _, dup := cfg.Upstreams[name]; dup {
					return fmt.Errorf("--upstream %q: %s given twice", u, name)
				}
				cfg.Upstreams[name] = addr
			}
			if cfg.HoldBytes, err = parseBytes(holdBytes); err != nil {
				return fmt.Errorf("--hold-bytes: %w", err)
			}
			if cfg.HoldBytes == 0 {
				cfg.HoldBytes = -1 // hold nothing: every body streams
			}
			// A sidecar is a guest beside its workload: by default it runs
			// on one core (like Envoy's --concurrency), where it also
			// spends the least CPU per message, and collects garbage less
			// often than Go's default (its live heap is small).
			if concurrency > 0 {
				runtime.GOMAXPROCS(concurrency)
			}
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(400)
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				// With GOGC at 400 the heap may grow five times its live
				// size; a soft limit keeps the sidecar small all the same,
				// plus room for the records it holds for the control plane.
				cfg.MemoryLimit = 20 << 20
			}
			cfg.Logger = newLogger(cmd)
			p, err := proxy.New(cfg)
			if err != nil {
				return err
			}
			return p.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&tokenFile, "join-token-file", "", "file holding the join token (control plane DIR/join-token)")
	f.StringVar(&cfg.Service, "service", "", "this workload's service name")
	f.StringVar(&cfg.AppAddr, "app", "", "where this workload's application listens")
	f.StringVar(&cfg.InboundAddr, "inbound", "", "mTLS listener other sidecars reach (needs --app)")
	f.StringVar(&cfg.AdvertiseAddr, "advertise", "", "address other sidecars dial to reach --inbound (default: the --inbound address)")
	f.StringVar(&cfg.OutboundAddr, "outbound", "", "plain HTTP listener for the local app, routed by Host (HTTP/1.1 and h2c)")
	f.StringArrayVar(&upstreams, "upstream", nil, "NAME=ADDR: a local TCP port that carries raw bytes to service NAME (repeatable)")
	f.StringVar(&cfg.AdminAddr, "admin-addr", "", "address for /metrics, /healthz and /readyz")
	f.StringVar(&holdBytes, "hold-bytes", "256KiB", "a response body up to this size is verified before its first byte reaches the caller")
	f.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", 64<<10, "limit on a request or response header block")
	f.IntVar(&cfg.MaxFrameBytes, "max-frame-bytes", 64<<10, "limit on one TCP data frame between sidecars")
	f.IntVar(&cfg.RecordBuffer, "record-buffer", 200_000, "records held until the control plane acknowledges them")
	f.StringVar(&cfg.AppProtocol, "app-protocol", "auto", "how inbound requests reach the app: auto (h2c for gRPC), http1 or h2c")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "bound on draining in-flight messages at SIGTERM (default 10s)")
	f.IntVar(&concurrency, "concurrency", 1, "cores the sidecar uses (GOMAXPROCS); 0: all")
	cmd.MarkFlagRequired("join-token-file")
	cmd.MarkFlagRequired("service")
	return cmd
}

// parseBytes reads a size: a plain number of bytes, or one with a KiB, MiB
// or GiB suffix.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscan(num, &n); err != nil || n < 0 || fmt.Sprint(n) != strings.TrimSpace(num) {
		return 0, fmt.Errorf("%q is not a size (bytes, or with KiB, MiB, GiB)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}
