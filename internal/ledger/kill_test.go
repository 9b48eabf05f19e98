package ledger_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// Environment of the child process of TestKillMidWrite.
const (
	childEnv      = "TALLY_LEDGER_KILL_CHILD" // "1" in the child
	childStoreEnv = "TALLY_LEDGER_KILL_STORE"
	childDirEnv   = "TALLY_LEDGER_KILL_DIR"
)

// TestKillMidWrite appends in a loop in a child process (this test binary
// again), kills it with SIGKILL in mid-write, then reopens the store: it
// must verify, hold every acknowledged entry, and take appends again.
func TestKillMidWrite(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		appendForever(t)
		return
	}
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKillMidWrite$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"=1", childStoreEnv+"="+cfg.Store, childDirEnv+"="+cfg.Dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var acked uint64 // the size after the last acknowledged append
		lines := 0
		killed := false
		deadline := time.Now().Add(2 * time.Minute)
		for sc.Scan() {
			line := sc.Text()
			n, ok := strings.CutPrefix(line, "acked ")
			if !ok {
				continue // the test framework's own output
			}
			v, err := strconv.ParseUint(n, 10, 64)
			if err != nil {
				t.Fatalf("child said %q", line)
			}
			acked = v
			lines++
			// Kill it after a few dozen appends, at a moment the
			// appends do not choose: right after reading an ack,
			// the child is already inside the next append.
			if !killed && (lines == 40 || time.Now().After(deadline)) {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		// Acks printed before the kill are still read above.
		err = cmd.Wait()
		if !killed {
			t.Fatalf("child ended by itself after %d appends: %v", lines, err)
		}
		if acked == 0 {
			t.Fatal("no append acknowledged")
		}

		ro := cfg
		ro.ReadOnly, ro.Origin = true, ""
		r := open(t, ro)
		rep, err := r.Verify(ctx, ledger.VerifyOptions{})
		if err != nil {
			t.Fatalf("Verify after kill: %v", err)
		}
		if rep.Size < acked {
			t.Fatalf("size %d after kill, but %d entries were acknowledged", rep.Size, acked)
		}
		t.Logf("killed after %d acknowledged appends: %d entries acknowledged, %d stored", lines, acked, rep.Size)

		// The next writer continues.
		l := ledgertest.Open(t, cfg)
		first := appendOK(t, l, ledger.Batch{Entries: ledgertest.Entries(int(rep.Size), 10)})
		if first != rep.Size {
			t.Errorf("append after recovery at %d, want %d", first, rep.Size)
		}
		if _, err := l.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if rep, err := l.Verify(ctx, ledger.VerifyOptions{}); err != nil || rep.Size != first+10 {
			t.Errorf("Verify after recovery: %+v, %v", rep, err)
		}
	})
}

// appendForever is the child: append signed batches and checkpoints until
// killed, printing "acked N" (the tree size) after each append returned.
func appendForever(t *testing.T) {
	ctx := context.Background()
	cfg := ledger.Config{Store: os.Getenv(childStoreEnv), Dir: os.Getenv(childDirEnv), Origin: ledgertest.Origin}
	l, err := ledger.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AcquireWriter(ctx); err != nil {
		t.Fatal(err)
	}
	sc := newSidecar(t)
	for i := 0; ; i++ {
		es := ledgertest.Entries(i*200, 200)
		first, err := l.Append(ctx, ledger.Batch{Entries: es, Signature: sc.sign(t, uint64(i+1), ledgertest.Leaves(t, es))})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(os.Stdout, "acked %d\n", first+uint64(len(es)))
		if i%3 == 0 {
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
}
