// Package cli builds the tally command tree: one file per subcommand, flags and
// wiring only; the logic lives in the packages the commands start.
package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes of SPEC.md.
const (
	exitOK      = 0
	exitProblem = 1 // the check found a problem
	exitUsage   = 2 // usage error, or DIR/URL missing or unreadable
)

// problemError marks an error that means "the check found a problem" (exit 1)
// rather than a usage error (exit 2).
type problemError struct{ err error }

func (e problemError) Error() string { return e.err.Error() }
func (e problemError) Unwrap() error { return e.err }

// Main runs the tally command with args and returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts a graceful stop (sidecars drain, the demo lets
	// its requests finish); a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	root := newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "tally:", err)
	var p problemError
	if errors.As(err, &p) {
		return exitProblem
	}
	return exitUsage
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "tally",
		Short:         "A service mesh that accounts for every message",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	for _, add := range commands {
		root.AddCommand(add())
	}
	return root
}

// commands holds the constructors of the subcommands; each subcommand's file
// registers itself in an init function so files stay independent.
var commands []func() *cobra.Command

// newLogger returns the process logger at the level of --log-level.
func newLogger(cmd *cobra.Command) *slog.Logger {
	var lvl slog.Level
	s, _ := cmd.Flags().GetString("log-level")
	if err := lvl.UnmarshalText([]byte(s)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}
