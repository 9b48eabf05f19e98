package cli

import (
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/tally-mesh/tally/internal/control"
)

func init() { commands = append(commands, newControlCmd) }

func newControlCmd() *cobra.Command {
	var cfg control.Config
	cmd := &cobra.Command{
		Use:   "control --data DIR [flags]",
		Short: "Run the control plane: CA, sidecar API, record ingestion, REST API and dashboard",
		Long: `Run the control plane.

The first start creates DIR (mode 0700) with the mesh CA, DIR/join-token (the
line a sidecar needs to join: control plane address and CA fingerprint) and
DIR/admin-token (the bearer token of the writing REST endpoints). SIGTERM or
Ctrl-C stops accepting, ends the sidecars' streams and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Getenv("GOGC") == "" {
				// Ingestion allocates per record while the live heap
				// stays small (the ledger lives in the database):
				// collecting half as often took a tenth off the control
				// plane's CPU per record for a few MiB of heap.
				debug.SetGCPercent(200)
			}
			cfg.Logger = newLogger(cmd)
			reg := prometheus.NewRegistry()
			reg.MustRegister(
				collectors.NewGoCollector(),
				collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			)
			cfg.Registry = reg
			srv, err := control.New(cfg)
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "", "state directory: CA, join and admin tokens (created with mode 0700)")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", control.DefaultGRPCAddr, "sidecar API (gRPC over TLS) listen address; port 0 picks one, which the join token carries")
	f.StringVar(&cfg.HTTPAddr, "http-addr", control.DefaultHTTPAddr, "REST API, events, dashboard, /metrics, /healthz, /readyz listen address; the bound one is written to DIR/http-addr")
	f.DurationVar(&cfg.Window, "window", control.DefaultWindow, "how long a sent message may stay unconfirmed")
	f.StringVar(&cfg.TrustDomain, "trust-domain", control.DefaultTrustDomain, "SPIFFE trust domain of the mesh")
	f.DurationVar(&cfg.SVIDTTL, "svid-ttl", control.DefaultSVIDTTL, "life of the sidecars' certificates; they renew at 2/3 of it")
	f.StringVar(&cfg.AlertWebhook, "alert-webhook", "", "URL that receives every omission event as a JSON POST (retried)")
	f.StringVar(&cfg.Ledger, "ledger", "sqlite", "durable ledger: sqlite (in DIR) or a postgres:// URL (shared by several control planes)")
	cmd.MarkFlagRequired("data")
	return cmd
}
