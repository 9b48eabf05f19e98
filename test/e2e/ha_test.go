package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// copyCA gives a second control plane the first one's CA, so that the
// mesh's identities hold across both.
func copyCA(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTwoControlPlanesShareOnePostgresLedger(t *testing.T) {
	pg := ledgertest.Postgres(t) // skips without TALLY_TEST_POSTGRES; CI sets it
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ha") }))

	a := newMesh(t, "--ledger", pg)
	bdir := filepath.Join(t.TempDir(), "ctl-b")
	copyCA(t, a.dir, bdir)
	b := &mesh{t: t, dir: bdir, grpcAddr: freeAddr(t), httpAddr: freeAddr(t)}
	b.token = filepath.Join(bdir, "join-token")
	b.url = "http://" + b.httpAddr
	b.startControl("--ledger", pg)

	traffic := func(m *mesh, tag string, n int) {
		m.sidecar("orders", sidecarOpts{app: app, inbound: true})
		caller := m.sidecar("frontend", sidecarOpts{outbound: true})
		m.waitEndpoints("orders", 1)
		c := outboundClient()
		for i := range n {
			if resp, _, err := get(c, caller.outbound, "orders", fmt.Sprintf("/%s/%d", tag, i)); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s request %d: %v %v", tag, i, resp, err)
			}
		}
	}
	// A writes; B serves the same log for reading.
	traffic(a, "a", 100)
	eventually(t, 5*time.Second, "B reads A's entries", func() error {
		if c, _ := confirmations(ledgerLeaves(t, b)); c != 100 {
			return fmt.Errorf("B sees %d confirmations", c)
		}
		return nil
	})
	eventually(t, 3*time.Second, "B serves A's checkpoint", func() error {
		resp, err := http.Get(b.url + "/api/v1/ledger/checkpoint")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		lines := strings.Split(string(body), "\n")
		var size int
		if resp.StatusCode != 200 || len(lines) < 2 {
			return fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		if _, err := fmt.Sscan(lines[1], &size); err != nil || size < 100 {
			return fmt.Errorf("checkpoint of size %q", lines[1])
		}
		return nil
	})

	// The writer dies; B takes the writer role over and continues the
	// same log.
	a.control.cmd.Process.Signal(syscall.SIGKILL)
	<-a.control.done
	eventually(t, 10*time.Second, "B holds the writer role", func() error {
		if !strings.Contains(b.control.out.String(), "ledger writer role held") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	traffic(b, "b", 100)
	eventually(t, 5*time.Second, "B appends", func() error {
		if c, d := confirmations(ledgerLeaves(t, b)); c != 200 || d != 200 {
			return fmt.Errorf("%d confirmations (%d distinct)", c, d)
		}
		return nil
	})
	// One log, never forked: every checkpoint either plane signed is
	// consistent with the tree (audit verify checks them all in sequence).
	eventually(t, 3*time.Second, "audit verify", func() error {
		if code, out := runTally(t, "audit", "verify", "--control", b.url); code != 0 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	if code, out := runTally(t, "audit", "verify", "--data", bdir, "--ledger", pg); code != 0 {
		t.Errorf("audit verify --data --ledger: exit %d: %s", code, out)
	}
}
