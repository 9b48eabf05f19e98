package control_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/tally-mesh/tally/internal/cli"
	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/identity/identitytest"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgerhttp"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// auditLedger is a control plane's data directory as tally audit sees it:
// the mesh CA (DIR/ca.crt) and a SQLite ledger whose batches a sidecar of
// that CA signed, with a checkpoint after each batch.
type auditLedger struct {
	dir  string
	lg   *ledger.Log // the writer; nil once closed
	svid *x509svid.SVID
	n    int // entries appended
}

func newAuditLedger(t *testing.T) *auditLedger {
	t.Helper()
	dir := t.TempDir()
	ca, err := identity.LoadOrCreateCA(dir, identitytest.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	al := &auditLedger{dir: dir, svid: identitytest.NewSVID(t, ca, "frontend", time.Hour)}
	al.lg = ledgertest.Open(t, ledger.Config{Dir: dir, Origin: ledgertest.Origin})
	if _, err := al.lg.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	return al
}

// grow appends n entries as one signed batch and publishes a checkpoint.
// It may run on a server goroutine: it reports with t.Error.
func (al *auditLedger) grow(t *testing.T, n int) {
	es := ledgertest.Entries(al.n, n)
	leaves := make([][]byte, len(es))
	for i := range es {
		leaves[i], _ = es[i].Encode()
	}
	sig, err := ledger.SignBatch(al.svid.PrivateKey, [][]byte{al.svid.Certificates[0].Raw}, "frontend-7f9c", uint64(al.n/n+1), time.Now(), leaves)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := al.lg.Append(t.Context(), ledger.Batch{Entries: es, Signature: sig}); err != nil {
		t.Error(err)
		return
	}
	al.n += n
	if _, err := al.lg.Checkpoint(t.Context()); err != nil {
		t.Error(err)
	}
}

// close closes the writer, so that DIR's files can be copied.
func (al *auditLedger) close(t *testing.T) {
	t.Helper()
	if err := al.lg.Close(); err != nil {
		t.Fatal(err)
	}
	al.lg = nil
}

// buildAuditLedger returns a closed ledger of 6 signed batches of 50 and
// one unsigned entry (301 entries, 8 checkpoints).
func buildAuditLedger(t *testing.T) *auditLedger {
	t.Helper()
	al := newAuditLedger(t)
	for range 6 {
		al.grow(t, 50)
	}
	if _, err := al.lg.Append(t.Context(), ledger.Batch{Entries: ledgertest.Entries(300, 1)}); err != nil {
		t.Fatal(err)
	}
	al.n++
	if _, err := al.lg.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	al.close(t)
	return al
}

// copyDir copies the files of a closed ledger's DIR into a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, name := range []string{ledger.DBFile, ledger.DBFile + "-wal", ledger.KeyFile, identity.CACertFile} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(name, "-wal") {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// tamper is a change an operator could make to DIR/ledger.db.
type tamper func(t *testing.T, db *sql.DB)

// execSQL returns the tamper that runs stmts.
func execSQL(stmts ...string) tamper {
	return func(t *testing.T, db *sql.DB) {
		t.Helper()
		for _, s := range stmts {
			if _, err := db.ExecContext(t.Context(), s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
}

// flipByte returns the tamper that flips the low bit of byte off of the
// blob column of table's row where.
func flipByte(table, column, where string, off int) tamper {
	return func(t *testing.T, db *sql.DB) {
		t.Helper()
		var b []byte
		if err := db.QueryRowContext(t.Context(), "SELECT "+column+" FROM "+table+" WHERE "+where).Scan(&b); err != nil {
			t.Fatal(err)
		}
		b[off] ^= 1
		if _, err := db.ExecContext(t.Context(), "UPDATE "+table+" SET "+column+" = $1 WHERE "+where, b); err != nil {
			t.Fatal(err)
		}
	}
}

// tamperDir applies tampers to DIR/ledger.db.
func tamperDir(t *testing.T, dir string, tampers ...tamper) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, ledger.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, f := range tampers {
		f(t, db)
	}
}

// Tampering, the ways an operator could.
var (
	// flipEntryByte changes one byte of entry 123's stored leaf.
	flipEntryByte = flipByte("entries", "data", "idx = 123", 40)
	// deleteRow deletes entry 77.
	deleteRow = execSQL("DELETE FROM entries WHERE idx = 77")
	// swapRows exchanges entries 10 and 11 (data and leaf hash).
	swapRows = execSQL(
		"UPDATE entries SET idx = -1 WHERE idx = 10",
		"UPDATE entries SET idx = 10 WHERE idx = 11",
		"UPDATE entries SET idx = 11 WHERE idx = -1",
	)
	// copyEntry makes entry 150 a copy of entry 200, leaf hash and all.
	copyEntry = execSQL("UPDATE entries SET data = (SELECT data FROM entries WHERE idx = 200), leaf_hash = (SELECT leaf_hash FROM entries WHERE idx = 200) WHERE idx = 150")
)

// serveDir serves DIR's ledger, opened read-only, and its mesh CA
// (DIR/ca.crt) through the ledger API.
func serveDir(t *testing.T, dir string) string {
	t.Helper()
	lg, err := ledger.Open(t.Context(), ledger.Config{Dir: dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	return serveLog(t, lg, caCert(t, dir))
}

// caCert returns the mesh CA certificate of DIR/ca.crt.
func caCert(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, identity.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", dir)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serveLog serves lg and the mesh CA ca (nil: none) through the ledger
// API, mounted as the control plane mounts it.
func serveLog(t *testing.T, lg *ledger.Log, ca *x509.Certificate) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(ledgerhttp.PathPrefix, control.LedgerHandler(lg, ca, slog.New(slog.NewTextHandler(t.Output(), nil))))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// outsideLedger serves a ledger of 200 entries in 4 signed batches, each
// with its checkpoint, for the outside verifier; grow appends a signed
// batch of n entries and publishes a checkpoint.
func outsideLedger(t *testing.T) (url string, grow func(n int)) {
	t.Helper()
	al := newAuditLedger(t)
	for range 4 {
		al.grow(t, 50)
	}
	return serveLog(t, al.lg, caCert(t, al.dir)), func(n int) { al.grow(t, n) }
}

// ---- running tally ----

const auditHelperEnv = "TALLY_AUDIT_TEST_HELPER"

// TestAuditHelperProcess is not a test: it is the tally command, run by
// tally() in a child process (the test binary re-executed), so that exit
// codes, stdout and stderr are the real ones.
func TestAuditHelperProcess(t *testing.T) {
	if os.Getenv(auditHelperEnv) != "1" {
		t.Skip("the tally command for the audit tests")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(cli.Main(args))
}

// tallyCmd returns the command running tally with args.
func tallyCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], append([]string{"-test.run=^TestAuditHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), auditHelperEnv+"=1")
	return cmd
}

// tally runs tally with args and returns its exit code, stdout and stderr.
func tally(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := tallyCmd(t, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running tally %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// oneLine checks that stderr is one line holding want, and returns it.
func oneLine(t *testing.T, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("stderr: got %q, want one line with %q", stderr, want)
	}
}

// ---- tally audit verify ----

func TestAuditVerifyData(t *testing.T) {
	t.Parallel()
	al := buildAuditLedger(t)
	db := filepath.Join(al.dir, ledger.DBFile)

	t.Run("intact", func(t *testing.T) {
		code, out, errOut := tally(t, "audit", "verify", "--data", al.dir)
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, errOut)
		}
		for _, want := range []string{
			"ledger " + db + ": intact\n",
			"size 301, root ",
			"entries: 258 confirmations, 43 omissions\n",
			"checkpoints checked: 8 ",
			"batch signatures checked: 6 (certificate chains against " + filepath.Join(al.dir, "ca.crt") + ")\n",
			"stored tree: ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout %q lacks %q", out, want)
			}
		}
		oneLine(t, errOut, "tally audit: trusting the verifier key of "+filepath.Join(al.dir, ledger.KeyFile))
	})

	lg, err := ledger.Open(t.Context(), ledger.Config{Dir: al.dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	key := lg.VerifierKey()
	lg.Close()
	keyFile := filepath.Join(t.TempDir(), "ledger.pub")
	os.WriteFile(keyFile, []byte(key+"\n"), 0o644)
	other := newAuditLedger(t)
	otherKey := other.lg.VerifierKey()
	caFile, otherCA := filepath.Join(al.dir, identity.CACertFile), filepath.Join(other.dir, identity.CACertFile)

	for _, tc := range []struct {
		name   string
		tamper tamper
		args   []string // after --data COPY
		code   int
		msg    string // in stderr
	}{
		{name: "pinned key", args: []string{"--key", key}, code: 0},
		{name: "pinned key file", args: []string{"--key", keyFile}, code: 0},
		{name: "entry byte", tamper: flipEntryByte, code: 1, msg: "ledger.db: entry 123: leaf hash does not match its data"},
		{name: "row deleted", tamper: deleteRow, code: 1, msg: "ledger.db: entry 77 missing (rows jump from 76 to 78)"},
		{name: "rows swapped", tamper: swapRows, code: 1, msg: "ledger.db: entries 10 and 11 out of order"},
		{name: "checkpoint byte", tamper: flipByte("checkpoints", "note", "seq = 4", 30), code: 1, msg: "ledger.db: checkpoint at size 150: signature does not verify"},
		{name: "batch signature byte", tamper: flipByte("batches", "signature", "start_idx = 100", 20), code: 1, msg: "ledger.db: batch [100,150): signature does not verify"},
		{name: "another key", args: []string{"--key", otherKey}, code: 1, msg: "checkpoint at size 0: signature does not verify"},
		{name: "pinned CA", args: []string{"--key", key, "--ca", caFile}, code: 0},
		{name: "another CA", args: []string{"--ca", otherCA}, code: 1, msg: "ledger.db: batch [0,50): signature does not verify: signer certificate at "},
		{name: "no such CA file", args: []string{"--ca", filepath.Join(al.dir, "nope.crt")}, code: 2, msg: "--ca: open " + filepath.Join(al.dir, "nope.crt") + ": no such file or directory"},
		{name: "CA file not PEM", args: []string{"--ca", keyFile}, code: 2, msg: "--ca " + keyFile + ": no PEM certificate"},
		{name: "bad key", args: []string{"--key", "nonsense"}, code: 2, msg: `--key "nonsense": neither a verifier key nor a readable file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, al.dir)
			if tc.tamper != nil {
				tamperDir(t, dir, tc.tamper)
			}
			code, out, errOut := tally(t, append([]string{"audit", "verify", "--data", dir}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %s, stderr %s", code, tc.code, out, errOut)
			}
			if tc.code == 0 {
				if errOut != "" || !strings.Contains(out, ": intact\n") {
					t.Errorf("pinned: stdout %q, stderr %q", out, errOut)
				}
				return
			}
			oneLine(t, strings.TrimPrefix(errOut, lineWith(errOut, "trusting")), tc.msg)
		})
	}

	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{name: "no such dir", args: []string{"--data", filepath.Join(t.TempDir(), "nope")}, msg: "nope/ledger.db: no such file or directory"},
		{name: "nothing to verify", args: nil, msg: "give --data DIR (or --ledger postgres://...) or --control URL"},
		{name: "both", args: []string{"--data", al.dir, "--control", "http://127.0.0.1:1"}, msg: "give either --control URL or --data DIR / --ledger, not both"},
		{name: "unknown store", args: []string{"--data", al.dir, "--ledger", "mysql://x"}, msg: `--ledger "mysql://x": want sqlite or a postgres:// URL`},
		{name: "unreachable control plane", args: []string{"--control", "http://127.0.0.1:1"}, msg: "127.0.0.1:1/api/v1/ledger/key"},
		{name: "bad URL", args: []string{"--control", "ftp://x"}, msg: `--control "ftp://x": want a URL such as http://127.0.0.1:7401`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := tally(t, append([]string{"audit", "verify"}, tc.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %s", code, errOut)
			}
			oneLine(t, errOut, tc.msg)
		})
	}
}

// lineWith returns the line of s that contains sub, with its newline, or "".
func lineWith(s, sub string) string {
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestAuditVerifyRunning verifies DIR while its writer is open and growing,
// as beside a running control plane.
func TestAuditVerifyRunning(t *testing.T) {
	t.Parallel()
	al := newAuditLedger(t)
	al.grow(t, 100)
	code, out, errOut := tally(t, "audit", "verify", "--data", al.dir)
	if code != 0 || !strings.Contains(out, "size 100, ") {
		t.Errorf("exit %d, stdout %s, stderr %s", code, out, errOut)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			al.grow(t, 10)
		}
	}()
	code, out, errOut = tally(t, "audit", "verify", "--data", al.dir)
	<-done
	if code != 0 || !strings.Contains(out, ": intact\n") {
		t.Errorf("while appending: exit %d, stdout %s, stderr %s", code, out, errOut)
	}
}

func TestAuditVerifyControl(t *testing.T) {
	t.Parallel()
	al := buildAuditLedger(t)
	caFile := filepath.Join(al.dir, identity.CACertFile)
	other := newAuditLedger(t)
	otherCA := filepath.Join(other.dir, identity.CACertFile)

	t.Run("intact", func(t *testing.T) {
		url := serveDir(t, al.dir)
		code, out, errOut := tally(t, "audit", "verify", "--control", url)
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, errOut)
		}
		for _, want := range []string{
			"ledger at " + url + ": intact\n",
			"size 301, root ",
			"checkpoints checked: 2 (size 301: signature and root recomputed from its 301 entries; size 301: ",
			"batch signatures checked: 6 (certificate chains against the mesh CA the server serves)\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout %q lacks %q", out, want)
			}
		}
		// Two lines: the key and the CA are trusted from the server.
		fp := identity.Fingerprint(caCert(t, al.dir))
		keyLine := lineWith(errOut, "verifier key")
		oneLine(t, keyLine, "tally audit: trusting the verifier key the server serves (tally/mesh.local/ledger+")
		oneLine(t, strings.TrimPrefix(errOut, keyLine), fmt.Sprintf("tally audit: trusting the mesh CA the server serves (CN=tally mesh CA, SHA-256 %x); pin one with --ca", fp[:]))
	})

	t.Run("pinned", func(t *testing.T) {
		url := serveDir(t, al.dir)
		code, out, errOut := tally(t, "audit", "verify", "--control", url, "--key", al.key(t), "--ca", caFile)
		if code != 0 || errOut != "" || !strings.Contains(out, "batch signatures checked: 6 (certificate chains against "+caFile+")\n") {
			t.Errorf("exit %d, stdout %s, stderr %s", code, out, errOut)
		}
	})

	batchSig := flipByte("batches", "signature", "start_idx = 100", 20)
	for _, tc := range []struct {
		name   string
		tamper tamper
		args   []string // besides --key
		msg    string
	}{
		{name: "entry byte", tamper: flipEntryByte, msg: ": entry 123: leaf hash does not match its data"},
		{name: "row deleted", tamper: deleteRow, msg: ": entry 77 missing (rows jump from 76 to 78)"},
		{name: "rows swapped", tamper: swapRows, msg: ": entries 10 and 11 out of order"},
		{name: "entry and leaf hash rewritten", tamper: copyEntry, msg: ": entries 150 and 151: their pair is not in the checkpointed tree of size 301"},
		{name: "checkpoint byte", tamper: flipByte("checkpoints", "note", "seq = 8", 30), msg: ": checkpoint from "},
		{name: "batch signature byte", tamper: batchSig, msg: ": batch [100,150): signature does not verify: ECDSA signature is invalid"},
		{name: "batch signature byte, the server's CA", tamper: batchSig, args: []string{}, msg: ": batch [100,150): signature does not verify: ECDSA signature is invalid"},
		{name: "batch root byte", tamper: flipByte("batches", "root", "start_idx = 50", 7), msg: ": batch [50,100): signature does not cover its entries"},
		{name: "another CA", args: []string{"--ca", otherCA}, msg: ": batch [0,50): signature does not verify: signer certificate at "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, al.dir)
			if tc.tamper != nil {
				tamperDir(t, dir, tc.tamper)
			}
			url := serveDir(t, dir)
			args := tc.args
			if args == nil {
				args = []string{"--ca", caFile}
			}
			code, out, errOut := tally(t, append([]string{"audit", "verify", "--control", url, "--key", al.key(t)}, args...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stdout %s, stderr %s", code, out, errOut)
			}
			oneLine(t, strings.TrimPrefix(errOut, lineWith(errOut, "trusting the mesh CA")), "tally: audit: "+url+tc.msg)
		})
	}

	t.Run("no CA served", func(t *testing.T) {
		lg, err := ledger.Open(t.Context(), ledger.Config{Dir: al.dir, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer lg.Close()
		url := serveLog(t, lg, nil)
		code, _, errOut := tally(t, "audit", "verify", "--control", url, "--key", lg.VerifierKey())
		if code != 2 {
			t.Errorf("exit %d, want 2; stderr %s", code, errOut)
		}
		oneLine(t, errOut, "audit verify: GET "+url+"/api/v1/ledger/ca: 404 Not Found: this control plane has no mesh CA")
		// Pinned, it needs none.
		code, out, errOut := tally(t, "audit", "verify", "--control", url, "--key", lg.VerifierKey(), "--ca", caFile)
		if code != 0 || !strings.Contains(out, "batch signatures checked: 6 ") {
			t.Errorf("pinned: exit %d, stdout %s, stderr %s", code, out, errOut)
		}
	})
}

// key returns the verifier key of a closed auditLedger.
func (al *auditLedger) key(t *testing.T) string {
	t.Helper()
	lg, err := ledger.Open(t.Context(), ledger.Config{Dir: al.dir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	return lg.VerifierKey()
}

// TestAuditVerifyControlFork serves two logs under one key: the checkpoint
// at the end is not consistent with the one at the start.
func TestAuditVerifyControlFork(t *testing.T) {
	t.Parallel()
	a := newAuditLedger(t)
	a.grow(t, 100)
	// b shares a's key but not its entries.
	bdir := t.TempDir()
	skey, err := os.ReadFile(filepath.Join(a.dir, ledger.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bdir, ledger.KeyFile), skey, 0o600)
	b := ledgertest.Open(t, ledger.Config{Dir: bdir, Origin: ledgertest.Origin})
	if _, err := b.Append(t.Context(), ledger.Batch{Entries: ledgertest.Entries(1000, 150)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The first checkpoint and the entries come from a, the rest from b.
	aURL, bURL := serveLog(t, a.lg, caCert(t, a.dir)), serveLog(t, b, caCert(t, a.dir))
	var mu sync.Mutex
	checkpoints := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := aURL
		mu.Lock()
		if r.URL.Path == ledgerhttp.PathCheckpoint {
			checkpoints++
		}
		if checkpoints > 1 && r.URL.Path != ledgerhttp.PathEntries {
			to = bURL
		}
		mu.Unlock()
		http.Redirect(w, r, to+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	code, out, errOut := tally(t, "audit", "verify", "--control", srv.URL, "--key", a.lg.VerifierKey(), "--ca", filepath.Join(a.dir, identity.CACertFile))
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %s, stderr %s", code, out, errOut)
	}
	oneLine(t, errOut, "checkpoint at size 100: not consistent with the later one at size 150")
}

// ---- tally audit proof ----

func TestAuditProof(t *testing.T) {
	t.Parallel()
	al := buildAuditLedger(t)
	url := serveDir(t, al.dir)
	key := al.key(t)

	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // in stdout
		msg  string // in stderr
	}{
		{name: "in the checkpoint", args: []string{"--index", "5"}, out: "verified: entry 5 is in the tree of size 301\n"},
		{name: "first", args: []string{"--index", "0"}, out: "verified: entry 0 is in the tree of size 301\n"},
		{name: "last", args: []string{"--index", "300"}, out: "verified: entry 300 is in the tree of size 301\n"},
		{name: "smaller tree", args: []string{"--index", "5", "--size", "100"},
			out: "verified: entry 5 is in the tree of size 100, consistent with the checkpoint of size 301\n"},
		{name: "index beyond", args: []string{"--index", "301"}, code: 2, msg: "--index 301: must be < size 301"},
		{name: "size beyond", args: []string{"--index", "1", "--size", "302"}, code: 2, msg: "--size 302: must be <= the checkpoint's size 301"},
		{name: "no index", args: nil, code: 2, msg: "give --index N"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := tally(t, append([]string{"audit", "proof", "--control", url, "--key", key}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %s, stderr %s", code, tc.code, out, errOut)
			}
			if tc.code != 0 {
				oneLine(t, errOut, tc.msg)
				return
			}
			if !strings.HasSuffix(out, tc.out) {
				t.Errorf("stdout %q does not end with %q", out, tc.out)
			}
			var p struct {
				Index, Size    uint64
				LeafHash       []byte `json:"leaf_hash"`
				Hashes         [][]byte
				CheckpointSize uint64 `json:"checkpoint_size"`
			}
			if err := json.Unmarshal([]byte(strings.TrimSuffix(out, tc.out)), &p); err != nil || len(p.LeafHash) != 32 || p.CheckpointSize != 301 {
				t.Errorf("proof JSON %q: %+v, %v", out, p, err)
			}
		})
	}

	t.Run("tampered", func(t *testing.T) {
		dir := copyDir(t, al.dir)
		tamperDir(t, dir, copyEntry)
		code, out, errOut := tally(t, "audit", "proof", "--control", serveDir(t, dir), "--key", key, "--index", "150")
		if code != 1 {
			t.Fatalf("exit %d, want 1; stdout %s, stderr %s", code, out, errOut)
		}
		oneLine(t, errOut, "entry 150: inclusion proof in size 301 does not verify against the checkpoint of size 301")
	})
}

// ---- tally audit tail ----

func TestAuditTail(t *testing.T) {
	t.Parallel()
	al := newAuditLedger(t)
	al.grow(t, 50)
	url := serveLog(t, al.lg, nil)

	indices := func(t *testing.T, out string) []uint64 {
		t.Helper()
		var got []uint64
		for l := range strings.Lines(out) {
			var e ledgerhttp.Entry
			if err := json.Unmarshal([]byte(l), &e); err != nil || e.Record == nil {
				t.Fatalf("line %q: %v", l, err)
			}
			got = append(got, e.Index)
		}
		return got
	}
	code, out, errOut := tally(t, "audit", "tail", "--control", url)
	if got := indices(t, out); code != 0 || len(got) != 20 || got[0] != 30 || got[19] != 49 {
		t.Errorf("tail: exit %d, indices %v, stderr %s", code, got, errOut)
	}
	code, out, _ = tally(t, "audit", "tail", "--control", url, "--from", "47")
	if got := indices(t, out); code != 0 || len(got) != 3 || got[0] != 47 {
		t.Errorf("tail --from 47: exit %d, indices %v", code, got)
	}

	t.Run("follow", func(t *testing.T) {
		cmd := tallyCmd(t, "audit", "tail", "--control", url, "--from", "45", "--follow")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		next := func() uint64 {
			t.Helper()
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("tail --follow ended: %s", stderr.String())
				}
				var e ledgerhttp.Entry
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				return e.Index
			case <-time.After(20 * time.Second):
				t.Fatal("no line from tail --follow in 20s")
			}
			return 0
		}
		for want := uint64(45); want < 50; want++ {
			if got := next(); got != want {
				t.Fatalf("got entry %d, want %d", got, want)
			}
		}
		al.grow(t, 7)
		for want := uint64(50); want < 57; want++ {
			if got := next(); got != want {
				t.Fatalf("after growing: got entry %d, want %d", got, want)
			}
		}
		// Interrupted: it ends with exit 0.
		cmd.Process.Signal(syscall.SIGINT)
		for range lines {
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("tail --follow after SIGINT: %v, stderr %s", err, stderr.String())
		}
	})
}
