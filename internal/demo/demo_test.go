package demo

import (
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tally-mesh/tally/internal/testutil"
)

var statusLine = regexp.MustCompile(`(stopped; )?requests ok (\d+), failed loudly (\d+) \[(.*)\]`)

// lastStatus returns the figures of the last status line in out.
func lastStatus(out string) (stopped bool, ok, failed int, kinds string, found bool) {
	m := statusLine.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return false, 0, 0, "", false
	}
	l := m[len(m)-1]
	ok, _ = strconv.Atoi(l[2])
	failed, _ = strconv.Atoi(l[3])
	return l[1] != "", ok, failed, l[4], true
}

// TestRunStopsWithoutOmissions runs the whole demo (control plane, four
// sidecars, three apps, the traffic generator) in-process on loopback, stops
// it the way Ctrl-C does while requests are in flight, and checks that
// stopping cuts none of them: every request succeeded and no sidecar
// detected an omission, during the run or while stopping.
func TestRunStopsWithoutOmissions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo mesh")
	}
	var out, logs testutil.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			HTTPAddr: "127.0.0.1:0",
			StateDir: t.TempDir(),
			Rate:     200, // a request every 5 ms: some are in flight when it stops
			Report:   100 * time.Millisecond,
			Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Out:      &out,
		})
	}()

	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, ok, _, _, found := lastStatus(out.String()); found && ok >= 200 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\noutput:\n%s\nlogs:\n%s", err, out.String(), logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 200 requests within 60 s\noutput:\n%s\nlogs:\n%s", out.String(), logs.String())
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("demo did not stop within 60 s\noutput:\n%s", out.String())
	}

	stopped, ok, failed, kinds, found := lastStatus(out.String())
	if !found || !stopped {
		t.Fatalf("no final status line after stopping\noutput:\n%s", out.String())
	}
	if failed != 0 || ok < 200 {
		t.Errorf("final status: ok %d, failed loudly %d %s; want no failure\noutput:\n%s\nlogs:\n%s", ok, failed, kinds, out.String(), logs.String())
	}
	if n := strings.Count(logs.String(), "msg=omission"); n > 0 {
		t.Errorf("%d omission(s) detected in a demo without faults:\n%s", n, logs.String())
	}
}
