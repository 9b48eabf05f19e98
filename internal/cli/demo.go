package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tally-mesh/tally/internal/demo"
)

func init() { commands = append(commands, newDemoCmd) }

func newDemoCmd() *cobra.Command {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a control plane, three services with sidecars and a traffic generator in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Logger = newLogger(cmd)
			cfg.Out = cmd.OutOrStdout()
			return demo.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVar(&cfg.HTTPAddr, "http-addr", demo.DefaultHTTPAddr, "control plane REST API and dashboard address")
	cmd.Flags().IntVar(&cfg.Rate, "rate", 20, "requests per second of the traffic generator")
	cmd.PersistentFlags().String("log-level", "warn", "log level: debug, info, warn, error")
	cmd.AddCommand(newDemoFaultCmd())
	return cmd
}

func newDemoFaultCmd() *cobra.Command {
	var (
		controlURL, tokenFile, from, to string
		percent                         float64
		delay                           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "fault KIND on|off",
		Short: "Switch a fault of the running demo on or off (drop, truncate, corrupt, delay, abort, misroute)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, state := args[0], args[1]
			if state != "on" && state != "off" {
				return fmt.Errorf("fault %s %s: want on or off", kind, state)
			}
			if tokenFile == "" {
				tokenFile = filepath.Join(demo.StateDir(), "control", "admin-token")
			}
			tok, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("admin token (is the demo running?): %w", err)
			}
			u := strings.TrimSuffix(controlURL, "/") + "/api/v1/faults/" + kind
			var req *http.Request
			if state == "on" {
				body, _ := json.Marshal(map[string]any{"from": from, "to": to, "percent": percent, "delay_ms": delay.Milliseconds()})
				req, _ = http.NewRequestWithContext(cmd.Context(), http.MethodPut, u, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
			} else {
				req, _ = http.NewRequestWithContext(cmd.Context(), http.MethodDelete, u, nil)
			}
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("%s: %w", controlURL, err)
			}
			defer resp.Body.Close()
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s %s: %s: %s", req.Method, u, resp.Status, strings.TrimSpace(string(msg)))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "fault %s %s\n", kind, state)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&controlURL, "control", "http://"+demo.DefaultHTTPAddr, "the demo's control plane URL")
	f.StringVar(&tokenFile, "admin-token-file", "", "admin token (default: the demo's state directory)")
	f.StringVar(&from, "from", "*", "source service, * for any")
	f.StringVar(&to, "to", "*", "destination service, * for any")
	f.Float64Var(&percent, "percent", 10, "share of messages affected, 0..100")
	f.DurationVar(&delay, "delay", 500*time.Millisecond, "for the delay fault: how long")
	return cmd
}
