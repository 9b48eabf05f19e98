package cli

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgerhttp"
)

func init() { commands = append(commands, newAuditCmd) }

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit verify|proof|tail",
		Short: "Check the delivery ledger: recompute it, prove an entry, follow it",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditProofCmd(), newAuditTailCmd())
	return cmd
}

// auditVerifyConfig is the configuration of tally audit verify.
type auditVerifyConfig struct {
	// Data is the control plane's data directory: its ledger (DIR/ledger.db
	// and DIR/ledger.key unless Ledger names PostgreSQL), opened read-only,
	// and DIR/ca.crt, the mesh CA batch signers must chain to.
	Data string
	// Ledger is the store: "" or "sqlite" (in Data), or a postgres:// URL.
	Ledger string
	// Control is the control plane's URL (its --http-addr): verify through
	// the REST API instead of a store.
	Control string
	// Key pins the checkpoint verifier key: note verifier text, or a file
	// holding it. Empty: trust the store's or the server's, and say so.
	Key string
	// CA pins the mesh CA certificate (a PEM file) that batch signers must
	// chain to. Empty: DIR/ca.crt with Data (if it exists); with Control,
	// the one the server serves (GET /api/v1/ledger/ca), and say so.
	CA string
}

func newAuditVerifyCmd() *cobra.Command {
	var cfg auditVerifyConfig
	cmd := &cobra.Command{
		Use:   "verify (--data DIR [--ledger postgres://...] | --control URL) [--key FILE|KEY] [--ca FILE]",
		Short: "Recompute the ledger and check its checkpoints, batch signatures and consistency",
		Long: `Recompute the ledger and check it.

--data DIR opens the control plane's store read-only (it may be running):
every entry (leaf hash, encoding, order), the stored tree (node hashes, size,
root), every published checkpoint (signature, root at its size, sequence) and
every batch signature (against its certificate, and its chain against
the mesh CA at signing time: --ca FILE, else DIR/ca.crt when that file
exists). --ledger postgres://... reads a PostgreSQL store instead of
DIR/ledger.db.

--control URL reads the REST API: the entries up to the latest checkpoint,
whose root it recomputes, every batch signature of those entries (covering
exactly its entries, against its certificate, and its chain against the mesh
CA at signing time), and a consistency proof from that checkpoint to the
latest one at the end. The CA is --ca FILE if given, else the one the server
serves (GET /api/v1/ledger/ca), trusted as the key is, and said so on stderr.

Exit 0: intact. Exit 1: a problem, named by the first bad entry. Exit 2:
usage, or DIR or URL unreadable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return auditVerify(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Data, "data", "", "the control plane's data directory (its ledger is opened read-only)")
	f.StringVar(&cfg.Ledger, "ledger", "", "ledger store: sqlite (in --data DIR, the default) or a postgres:// URL")
	f.StringVar(&cfg.Control, "control", "", "control plane URL (its --http-addr): verify through the REST API")
	f.StringVar(&cfg.Key, "key", "", "pin the checkpoint verifier key: note verifier key text, or a file holding it (default: trust the store's or server's)")
	f.StringVar(&cfg.CA, "ca", "", "pin the mesh CA certificate (PEM file) batch signers must chain to (default: DIR/ca.crt with --data, the server's with --control)")
	return cmd
}

func auditVerify(ctx context.Context, stdout, stderr io.Writer, cfg auditVerifyConfig) error {
	pinned, err := readVerifierKey(cfg.Key)
	if err != nil {
		return err
	}
	var ca *x509.CertPool
	if cfg.CA != "" {
		if ca, err = readCAFile(cfg.CA); err != nil {
			return err
		}
	}
	switch {
	case cfg.Control != "" && (cfg.Data != "" || cfg.Ledger != ""):
		return errors.New("audit verify: give either --control URL or --data DIR / --ledger, not both")
	case cfg.Control != "":
		return auditVerifyControl(ctx, stdout, stderr, cfg, pinned, ca)
	case cfg.Data == "" && !isPostgres(cfg.Ledger):
		return errors.New("audit verify: give --data DIR (or --ledger postgres://...) or --control URL")
	}
	return auditVerifyStore(ctx, stdout, stderr, cfg, pinned, ca)
}

// readCAFile reads --ca FILE: PEM with at least one certificate.
func readCAFile(name string) (*x509.CertPool, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--ca %s: no PEM certificate", name)
	}
	return pool, nil
}

func isPostgres(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

func auditVerifyStore(ctx context.Context, stdout, stderr io.Writer, cfg auditVerifyConfig, pinned string, pinnedCA *x509.CertPool) error {
	where := filepath.Join(cfg.Data, ledger.DBFile)
	if isPostgres(cfg.Ledger) {
		where = redactURL(cfg.Ledger)
	} else if cfg.Ledger != "" && cfg.Ledger != "sqlite" {
		return fmt.Errorf("audit verify: --ledger %q: want sqlite or a postgres:// URL", cfg.Ledger)
	} else if _, err := os.Stat(where); err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	lg, err := ledger.Open(ctx, ledger.Config{Store: cfg.Ledger, Dir: cfg.Data, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("audit verify: %s: %w", where, err)
	}
	defer lg.Close()
	opts := ledger.VerifyOptions{VerifierKey: pinned}
	switch {
	case pinned != "":
	case lg.VerifierKey() == "":
		return fmt.Errorf("audit verify: %s has no checkpoint key (%s): pin the verifier key with --key", where, ledger.KeyFile)
	default:
		src := "the store's key"
		if !isPostgres(cfg.Ledger) {
			src = filepath.Join(cfg.Data, ledger.KeyFile)
		}
		fmt.Fprintf(stderr, "tally audit: trusting the verifier key of %s (%s); pin one with --key\n", src, lg.VerifierKey())
	}
	caFile := ""
	if pinnedCA != nil {
		caFile, opts.Roots = cfg.CA, pinnedCA
	} else if cfg.Data != "" {
		caFile = filepath.Join(cfg.Data, identity.CACertFile)
		pem, err := os.ReadFile(caFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			caFile = ""
		case err != nil:
			return fmt.Errorf("audit verify: %w", err)
		default:
			opts.Roots = x509.NewCertPool()
			if !opts.Roots.AppendCertsFromPEM(pem) {
				return fmt.Errorf("audit verify: %s: no PEM certificate", caFile)
			}
		}
	}
	rep, err := lg.Verify(ctx, opts)
	if err != nil {
		return auditError(where, err)
	}
	fmt.Fprintf(stdout, "ledger %s: intact\n", where)
	printReport(stdout, rep)
	fmt.Fprintf(stdout, "checkpoints checked: %d (signature, and root at their size; in sequence)\n", rep.Checkpoints)
	chains := "certificates only: no " + identity.CACertFile + " in --data, nor --ca"
	if rep.ChainsChecked {
		chains = "certificate chains against " + caFile
	}
	fmt.Fprintf(stdout, "batch signatures checked: %d (%s)\n", rep.Batches, chains)
	if rep.TreeChecked {
		fmt.Fprintf(stdout, "stored tree: %d node hashes and the tree state match\n", rep.Nodes)
	}
	return nil
}

func auditVerifyControl(ctx context.Context, stdout, stderr io.Writer, cfg auditVerifyConfig, pinned string, pinnedCA *x509.CertPool) error {
	controlURL := cfg.Control
	c, err := auditClient(controlURL)
	if err != nil {
		return err
	}
	key, err := serverKey(ctx, c, stderr, pinned)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	roots, chains := pinnedCA, "certificate chains against "+cfg.CA
	if roots == nil {
		if roots, err = serverCA(ctx, c, stderr); err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		chains = "certificate chains against the mesh CA the server serves"
	}
	rep, err := c.Audit(ctx, ledgerhttp.AuditOptions{VerifierKey: key, Roots: roots})
	if errors.Is(err, ledger.ErrNoCheckpoint) {
		fmt.Fprintf(stdout, "ledger at %s: no checkpoint published yet: nothing to verify\n", controlURL)
		return nil
	}
	if err != nil {
		return auditError(controlURL, err)
	}
	fmt.Fprintf(stdout, "ledger at %s: intact\n", controlURL)
	printReport(stdout, rep.Report)
	fmt.Fprintf(stdout, "checkpoints checked: 2 (size %d: signature and root recomputed from its %d entries; size %d: signature and consistency proof from size %d)\n",
		rep.First.Size, rep.Size, rep.Last.Size, rep.First.Size)
	fmt.Fprintf(stdout, "batch signatures checked: %d (%s)\n", rep.Batches, chains)
	return nil
}

// serverCA returns a pool of the mesh CA the server serves, with a notice
// on stderr that it is trusted.
func serverCA(ctx context.Context, c *ledgerhttp.Client, stderr io.Writer) (*x509.CertPool, error) {
	cert, err := c.CA(ctx)
	if err != nil {
		return nil, err
	}
	fp := identity.Fingerprint(cert)
	fmt.Fprintf(stderr, "tally audit: trusting the mesh CA the server serves (%s, SHA-256 %x); pin one with --ca\n", cert.Subject, fp[:])
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}

// auditError turns a verification error into the command's: a problem the
// check found (exit 1) or a failure to read (exit 2).
func auditError(where string, err error) error {
	var te *ledger.TamperError
	switch {
	case errors.As(err, &te):
		return problemError{fmt.Errorf("audit: %s: %s", where, auditOneLine(te.Msg))}
	case errors.Is(err, ledger.ErrTampered), isCorrupt(err):
		return problemError{fmt.Errorf("audit: %s: %s", where, auditOneLine(err.Error()))}
	}
	return fmt.Errorf("audit: %s: %s", where, auditOneLine(err.Error()))
}

// auditOneLine keeps an error message on one line, as SPEC.md wants.
func auditOneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }

// isCorrupt reports an SQLite error that says the database file itself is
// damaged (SQLITE_CORRUPT, SQLITE_NOTADB): an undecodable ledger.
func isCorrupt(err error) bool {
	var c interface{ Code() int }
	if !errors.As(err, &c) {
		return false
	}
	code := c.Code() & 0xff
	return code == 11 || code == 26
}

func printReport(w io.Writer, rep ledger.Report) {
	fmt.Fprintf(w, "size %d, root %s\n", rep.Size, base64.StdEncoding.EncodeToString(rep.Root[:]))
	fmt.Fprintf(w, "entries: %d confirmations, %d omissions\n", rep.Confirmations, rep.Omissions)
}

// readVerifierKey returns the verifier key of --key: note verifier key
// text, or the name of a file holding one. Empty is empty.
func readVerifierKey(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if _, err := note.NewVerifier(s); err == nil {
		return s, nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return "", fmt.Errorf("--key %q: neither a verifier key nor a readable file: %w", s, err)
	}
	k := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(k); err != nil {
		return "", fmt.Errorf("--key %s: %w", s, err)
	}
	return k, nil
}

// auditClient checks --control URL and returns its client.
func auditClient(raw string) (*ledgerhttp.Client, error) {
	s := raw
	if s == "" {
		return nil, errors.New("give --control URL (the control plane's --http-addr, e.g. http://127.0.0.1:7401)")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--control %q: want a URL such as http://127.0.0.1:7401", raw)
	}
	return ledgerhttp.NewClient(s, nil), nil
}

// redactURL hides a URL's password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the --ledger URL"
	}
	return u.Redacted()
}

// serverKey returns the pinned key, or the server's with a notice on stderr.
func serverKey(ctx context.Context, c *ledgerhttp.Client, stderr io.Writer, pinned string) (string, error) {
	if pinned != "" {
		return pinned, nil
	}
	key, err := c.Key(ctx)
	if err != nil {
		return "", err
	}
	if _, err := note.NewVerifier(key); err != nil {
		return "", problemError{fmt.Errorf("the served verifier key: %w", err)}
	}
	fmt.Fprintf(stderr, "tally audit: trusting the verifier key the server serves (%s); pin one with --key\n", key)
	return key, nil
}

func newAuditProofCmd() *cobra.Command {
	var (
		controlURL, key string
		index, size     uint64
	)
	cmd := &cobra.Command{
		Use:   "proof --control URL --index N [--size M] [--key FILE|KEY]",
		Short: "Prove that entry N is in the checkpointed ledger",
		Long: `Fetch the latest checkpoint (verified with the verifier key), entry N and its
inclusion proof in the tree of M entries (default: the checkpoint's size), and
verify it against the checkpoint's root; for M below the checkpoint's size,
through a consistency proof. Prints the proof as JSON and "verified"; exits 1
if it does not verify.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("index") {
				return errors.New("audit proof: give --index N")
			}
			c, err := auditClient(controlURL)
			if err != nil {
				return err
			}
			pinned, err := readVerifierKey(key)
			if err != nil {
				return err
			}
			k, err := serverKey(ctx, c, cmd.ErrOrStderr(), pinned)
			if err != nil {
				return fmt.Errorf("audit proof: %w", err)
			}
			cp, _, err := c.VerifiedCheckpoint(ctx, k)
			if err != nil {
				return auditError(controlURL, err)
			}
			if !cmd.Flags().Changed("size") {
				size = cp.Size
			}
			switch {
			case size > cp.Size:
				return fmt.Errorf("audit proof: --size %d: must be <= the checkpoint's size %d", size, cp.Size)
			case index >= size:
				return fmt.Errorf("audit proof: --index %d: must be < size %d", index, size)
			}
			in, err := c.ProveInclusion(ctx, cp, index, size)
			if err != nil {
				return auditError(controlURL, err)
			}
			out := struct {
				Index          uint64   `json:"index"`
				Size           uint64   `json:"size"`
				LeafHash       []byte   `json:"leaf_hash"`
				Hashes         [][]byte `json:"hashes"`
				Root           []byte   `json:"root"`
				CheckpointSize uint64   `json:"checkpoint_size"`
				CheckpointRoot []byte   `json:"checkpoint_root"`
				Consistency    [][]byte `json:"consistency,omitempty"`
			}{in.Index, in.Size, in.LeafHash, in.Hashes, in.Root, cp.Size, cp.Root[:], in.Consistency}
			b, _ := json.MarshalIndent(out, "", "  ")
			fmt.Fprintf(cmd.OutOrStdout(), "%s\nverified: entry %d is in the tree of size %d", b, index, size)
			if size < cp.Size {
				fmt.Fprintf(cmd.OutOrStdout(), ", consistent with the checkpoint of size %d", cp.Size)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&controlURL, "control", "", "control plane URL (its --http-addr)")
	f.Uint64Var(&index, "index", 0, "index of the entry to prove")
	f.Uint64Var(&size, "size", 0, "tree size to prove it in (default: the latest checkpoint's)")
	f.StringVar(&key, "key", "", "pin the checkpoint verifier key: text, or a file holding it (default: trust the server's)")
	return cmd
}

// tailDefault is how many entries tally audit tail shows without --from.
const tailDefault = 20

func newAuditTailCmd() *cobra.Command {
	var (
		controlURL string
		from       uint64
		follow     bool
	)
	cmd := &cobra.Command{
		Use:   "tail --control URL [--from N] [--follow]",
		Short: "Print ledger entries as JSON lines",
		Long: `Print the ledger's entries from index N (default: the last 20 of the latest
checkpoint) as JSON lines, as GET /api/v1/ledger/entries serves them: index,
data, leaf_hash, record. With --follow, poll every second for new ones until
interrupted. It prints what the server serves; tally audit verify checks it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := auditClient(controlURL)
			if err != nil {
				return err
			}
			next := from
			if !cmd.Flags().Changed("from") {
				signed, err := c.Checkpoint(ctx)
				switch {
				case errors.Is(err, ledger.ErrNoCheckpoint):
					next = 0
				case err != nil:
					return fmt.Errorf("audit tail: %w", err)
				default:
					v, err := c.View(signed)
					if err != nil {
						return fmt.Errorf("audit tail: %w", err)
					}
					next = v.Size() - min(v.Size(), tailDefault)
				}
			}
			return auditTail(ctx, c, cmd.OutOrStdout(), next, follow)
		},
	}
	f := cmd.Flags()
	f.StringVar(&controlURL, "control", "", "control plane URL (its --http-addr)")
	f.Uint64Var(&from, "from", 0, "first index to print (default: the last 20)")
	f.BoolVar(&follow, "follow", false, "keep polling every second for new entries until interrupted")
	return cmd
}

// auditTail prints the entries from next to the end of the log, and with
// follow keeps polling once a second until ctx ends.
func auditTail(ctx context.Context, c *ledgerhttp.Client, w io.Writer, next uint64, follow bool) error {
	enc := json.NewEncoder(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		es, err := c.EntriesFrom(ctx, next)
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil // interrupted
			}
			return fmt.Errorf("audit tail: %w", err)
		}
		for _, e := range es {
			if err := enc.Encode(e); err != nil {
				return err
			}
			next = max(next, e.Index+1)
		}
		if len(es) == ledgerhttp.MaxPage {
			continue // more to read now
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
