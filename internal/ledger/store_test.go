package ledger_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for tampering
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// The store suite: every test here runs against SQLite, and PostgreSQL
// when TALLY_TEST_POSTGRES is set (ledgertest.ForEachStore).

func open(t *testing.T, cfg ledger.Config) *ledger.Log {
	t.Helper()
	l, err := ledger.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func head(t *testing.T, l *ledger.Log) (uint64, [32]byte) {
	t.Helper()
	size, root, err := l.Head(t.Context())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return size, root
}

func appendOK(t *testing.T, l *ledger.Log, batches ...ledger.Batch) uint64 {
	t.Helper()
	first, err := l.Append(t.Context(), batches...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return first
}

func TestAppendRead(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		l := ledgertest.Open(t, cfg)
		all := ledgertest.Entries(0, 12)
		leaves := ledgertest.Leaves(t, all)

		if got := appendOK(t, l, ledger.Batch{Entries: all[:5]}); got != 0 {
			t.Errorf("first append: got index %d, want 0", got)
		}
		if got := appendOK(t, l, ledger.Batch{Entries: all[5:8]}, ledger.Batch{Entries: all[8:]}); got != 5 {
			t.Errorf("second append: got index %d, want 5", got)
		}
		if got := appendOK(t, l); got != 12 {
			t.Errorf("empty append: got index %d, want 12", got)
		}
		size, root := head(t, l)
		if size != 12 || root != ledger.BatchRoot(leaves) {
			t.Errorf("head: got %d %x, want 12 %x", size, root, ledger.BatchRoot(leaves))
		}

		es, err := l.Entries(ctx, 0, 12)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 12 {
			t.Fatalf("got %d entries, want 12", len(es))
		}
		for i, e := range es {
			lh := ledger.LeafHash(leaves[i])
			if e.Index != uint64(i) || string(e.Data) != string(leaves[i]) || string(e.LeafHash) != string(lh[:]) {
				t.Errorf("entry %d: got %d %x %x", i, e.Index, e.Data, e.LeafHash)
			}
			d, err := ledger.Decode(e.Data)
			if err != nil || !reflect.DeepEqual(d, all[i]) {
				t.Errorf("entry %d decodes to %+v, %v", i, d, err)
			}
		}
		for _, r := range []struct{ start, end, n uint64 }{{3, 5, 2}, {10, 100, 2}, {12, 20, 0}, {5, 5, 0}, {7, 3, 0}} {
			es, err := l.Entries(ctx, r.start, r.end)
			if err != nil || uint64(len(es)) != r.n || (r.n > 0 && es[0].Index != r.start) {
				t.Errorf("Entries(%d, %d): got %d entries, %v; want %d", r.start, r.end, len(es), err, r.n)
			}
		}

		// Refused appends store nothing.
		if _, err := l.Append(ctx, ledger.Batch{Entries: all[:2]}, ledger.Batch{Entries: []ledger.Entry{{}}}); !errors.Is(err, ledger.ErrMalformed) {
			t.Errorf("bad entry: got %v, want ErrMalformed", err)
		}
		sc := newSidecar(t)
		sig := sc.sign(t, 1, leaves[:3])
		if _, err := l.Append(ctx, ledger.Batch{Entries: all[:4], Signature: sig}); !errors.Is(err, ledger.ErrBadBatch) {
			t.Errorf("signature of other leaves: got %v, want ErrBadBatch", err)
		}
		if size, _ := head(t, l); size != 12 {
			t.Errorf("after refused appends: size %d, want 12", size)
		}

		// Reopened, it continues.
		l.Close()
		l = ledgertest.Open(t, cfg)
		if size, r := head(t, l); size != 12 || r != root {
			t.Errorf("reopened: %d %x, want 12 %x", size, r, root)
		}
		more := ledgertest.Entries(12, 9)
		if got := appendOK(t, l, ledger.Batch{Entries: more}); got != 12 {
			t.Errorf("after reopen: got index %d, want 12", got)
		}
		leaves = append(leaves, ledgertest.Leaves(t, more)...)
		if _, r := head(t, l); r != ledger.BatchRoot(leaves) {
			t.Errorf("root after reopen differs from the recomputed one")
		}
		rep, err := l.Verify(ctx, ledger.VerifyOptions{})
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if rep.Size != 21 || rep.Root != ledger.BatchRoot(leaves) || rep.Omissions != 3 || rep.Confirmations != 18 || !rep.TreeChecked {
			t.Errorf("report: %+v", rep)
		}
	})
}

func mustHex(t *testing.T, hs []string) [][]byte {
	out := make([][]byte, len(hs))
	for i, h := range hs {
		out[i] = unhex(t, h)
	}
	return out
}

func hexes(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = hex.EncodeToString(b)
	}
	return out
}

// TestProofVectors appends the RFC 6962 test leaves and checks roots and
// proofs against the published vectors, exactly.
func TestProofVectors(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		v := loadMerkle(t)
		leaves := v.leaves(t)
		l := ledgertest.Open(t, cfg)
		// Uneven appends: 1, 2, 4, 1.
		for _, r := range [][2]int{{0, 1}, {1, 3}, {3, 7}, {7, 8}} {
			if _, err := ledger.AppendLeaves(ctx, l, leaves[r[0]:r[1]]); err != nil {
				t.Fatal(err)
			}
			if _, root := head(t, l); hex.EncodeToString(root[:]) != v.RootsBySize[r[1]] {
				t.Errorf("root at %d: got %x, want %s", r[1], root, v.RootsBySize[r[1]])
			}
		}
		for _, p := range v.Inclusion {
			got, err := l.InclusionProof(ctx, p.Index, p.Size)
			if err != nil {
				t.Errorf("inclusion %d in %d: %v", p.Index, p.Size, err)
				continue
			}
			if !reflect.DeepEqual(hexes(got), append([]string{}, p.Proof...)) {
				t.Errorf("inclusion %d in %d:\n got %v\nwant %v", p.Index, p.Size, hexes(got), p.Proof)
			}
		}
		for _, p := range v.Consistency {
			got, err := l.ConsistencyProof(ctx, p.Size1, p.Size2)
			if err != nil {
				t.Errorf("consistency %d to %d: %v", p.Size1, p.Size2, err)
				continue
			}
			if !reflect.DeepEqual(hexes(got), append([]string{}, p.Proof...)) {
				t.Errorf("consistency %d to %d:\n got %v\nwant %v", p.Size1, p.Size2, hexes(got), p.Proof)
			}
		}
		if _, err := l.InclusionProof(ctx, 2, 9); !errors.Is(err, ledger.ErrBeyondSize) {
			t.Errorf("inclusion beyond the log: got %v", err)
		}
		if _, err := l.InclusionProof(ctx, 8, 8); err == nil {
			t.Error("inclusion of index 8 in size 8: no error")
		}
		if _, err := l.ConsistencyProof(ctx, 5, 4); err == nil {
			t.Error("consistency 5 to 4: no error")
		}
		if _, err := l.ConsistencyProof(ctx, 4, 9); !errors.Is(err, ledger.ErrBeyondSize) {
			t.Errorf("consistency beyond the log: got %v", err)
		}
	})
}

// TestProofs checks proofs in a larger tree, appended in uneven batches,
// against roots recomputed independently.
func TestProofs(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		l := ledgertest.Open(t, cfg)
		all := ledgertest.Entries(0, 100)
		leaves := ledgertest.Leaves(t, all)
		for i, n := 0, 1; i < len(all); i, n = i+n, n%17+3 {
			appendOK(t, l, ledger.Batch{Entries: all[i:min(i+n, len(all))]})
		}
		h := rfc6962.DefaultHasher
		sizes := []uint64{1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 65, 99, 100}
		for _, size := range sizes {
			root := ledger.BatchRoot(leaves[:size])
			for i := range size {
				p, err := l.InclusionProof(ctx, i, size)
				if err != nil {
					t.Fatalf("inclusion %d in %d: %v", i, size, err)
				}
				lh := ledger.LeafHash(leaves[i])
				if err := proof.VerifyInclusion(h, i, size, lh[:], p, root[:]); err != nil {
					t.Errorf("inclusion %d in %d: %v", i, size, err)
				}
			}
			for _, old := range sizes {
				if old > size {
					continue
				}
				p, err := l.ConsistencyProof(ctx, old, size)
				if err != nil {
					t.Fatalf("consistency %d to %d: %v", old, size, err)
				}
				oldRoot := ledger.BatchRoot(leaves[:old])
				if err := proof.VerifyConsistency(h, old, size, p, oldRoot[:], root[:]); err != nil {
					t.Errorf("consistency %d to %d: %v", old, size, err)
				}
			}
		}
	})
}

func TestCheckpoints(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		l := ledgertest.Open(t, cfg)
		if got := l.Origin(); got != ledgertest.Origin {
			t.Errorf("origin: got %q", got)
		}
		vkey := l.VerifierKey()
		if _, err := l.LatestCheckpoint(ctx); !errors.Is(err, ledger.ErrNoCheckpoint) {
			t.Errorf("before any: got %v, want ErrNoCheckpoint", err)
		}
		open := func(signed []byte) ledger.Checkpoint {
			t.Helper()
			c, err := ledger.OpenCheckpoint(signed, vkey)
			if err != nil {
				t.Fatalf("OpenCheckpoint: %v\n%s", err, signed)
			}
			return c
		}
		n0, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c := open(n0); c.Size != 0 || c.Root != ledger.BatchRoot(nil) || c.Origin != ledgertest.Origin {
			t.Errorf("empty tree checkpoint: %+v", c)
		}
		again, err := l.Checkpoint(ctx)
		if err != nil || string(again) != string(n0) {
			t.Errorf("unchanged tree: got a new checkpoint %q, %v", again, err)
		}
		all := ledgertest.Entries(0, 17)
		appendOK(t, l, ledger.Batch{Entries: all[:10]})
		n10, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		appendOK(t, l, ledger.Batch{Entries: all[10:]})
		n17, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c10, c17 := open(n10), open(n17)
		if c10.Size != 10 || c17.Size != 17 || c17.Root != ledger.BatchRoot(ledgertest.Leaves(t, all)) {
			t.Errorf("checkpoints: %+v %+v", c10, c17)
		}
		latest, err := l.LatestCheckpoint(ctx)
		if err != nil || string(latest) != string(n17) {
			t.Errorf("latest: %q, %v", latest, err)
		}
		p, err := l.ConsistencyProof(ctx, 10, 17)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, 10, 17, p, c10.Root[:], c17.Root[:]); err != nil {
			t.Errorf("consistency between checkpoints: %v", err)
		}

		// A second instance reads, but does not sign.
		r := open2(t, cfg)
		if r.VerifierKey() != vkey {
			t.Errorf("reader's key %q, writer's %q", r.VerifierKey(), vkey)
		}
		if _, err := r.Checkpoint(ctx); !errors.Is(err, ledger.ErrNotWriter) {
			t.Errorf("reader Checkpoint: got %v, want ErrNotWriter", err)
		}
		if got, err := r.LatestCheckpoint(ctx); err != nil || string(got) != string(n17) {
			t.Errorf("reader latest: %q, %v", got, err)
		}
		rep, err := l.Verify(ctx, ledger.VerifyOptions{VerifierKey: vkey})
		if err != nil || rep.Checkpoints != 3 {
			t.Errorf("Verify: %+v, %v; want 3 checkpoints", rep, err)
		}

		// Another origin is refused.
		other := cfg
		other.Origin = "tally/other/ledger"
		if l2, err := ledger.Open(ctx, other); err == nil {
			l2.Close()
			t.Error("opened with another origin")
		}
	})
}

func open2(t *testing.T, cfg ledger.Config) *ledger.Log { return open(t, cfg) }

func TestKeyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l := open(t, ledger.Config{Dir: dir, Origin: ledgertest.Origin})
	for name, want := range map[string]os.FileMode{"": 0o700 | fs.ModeDir, ledger.DBFile: 0o600, ledger.KeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	key, err := os.ReadFile(filepath.Join(dir, ledger.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	vk := l.VerifierKey()
	l.Close()
	l = open(t, ledger.Config{Dir: dir, Origin: ledgertest.Origin})
	if l.VerifierKey() != vk {
		t.Errorf("key changed on reopen: %q, then %q", vk, l.VerifierKey())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, ledger.KeyFile)); string(again) != string(key) {
		t.Error("key file rewritten on reopen")
	}
}

func TestReadOnly(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	if _, err := ledger.Open(ctx, ledger.Config{Dir: dir, ReadOnly: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read-only on an empty directory: got %v, want ErrNotExist", err)
	}
	w := ledgertest.Open(t, ledger.Config{Dir: dir, Origin: ledgertest.Origin})
	appendOK(t, w, ledger.Batch{Entries: ledgertest.Entries(0, 5)})
	if _, err := w.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	r := open(t, ledger.Config{Dir: dir, ReadOnly: true})
	if r.Origin() != ledgertest.Origin || r.VerifierKey() != w.VerifierKey() {
		t.Errorf("read-only: origin %q key %q", r.Origin(), r.VerifierKey())
	}
	if err := r.AcquireWriter(ctx); !errors.Is(err, ledger.ErrNotWriter) {
		t.Errorf("AcquireWriter: got %v, want ErrNotWriter", err)
	}
	if _, err := r.Append(ctx, ledger.Batch{Entries: ledgertest.Entries(5, 1)}); !errors.Is(err, ledger.ErrNotWriter) {
		t.Errorf("Append: got %v, want ErrNotWriter", err)
	}
	// It reads while the writer writes.
	appendOK(t, w, ledger.Batch{Entries: ledgertest.Entries(5, 5)})
	if rep, err := r.Verify(ctx, ledger.VerifyOptions{}); err != nil || rep.Size != 10 {
		t.Errorf("Verify: %+v, %v", rep, err)
	}
}

// TestWriterTakeover: two instances on one store; one writes; when it dies
// (its connection closes) the other takes over and continues the same tree.
func TestWriterTakeover(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		a, b := open(t, cfg), open(t, cfg)
		if err := a.AcquireWriter(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.AcquireWriter(ctx); !errors.Is(err, ledger.ErrNotWriter) {
			t.Fatalf("second writer: got %v, want ErrNotWriter", err)
		}
		if err := a.AcquireWriter(ctx); err != nil {
			t.Errorf("writer re-checking its role: %v", err)
		}
		all := ledgertest.Entries(0, 30)
		appendOK(t, a, ledger.Batch{Entries: all[:10]})
		if _, err := a.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Append(ctx, ledger.Batch{Entries: all[10:20]}); !errors.Is(err, ledger.ErrNotWriter) {
			t.Errorf("reader Append: got %v, want ErrNotWriter", err)
		}
		// The reader serves reads meanwhile.
		if size, _ := head(t, b); size != 10 {
			t.Errorf("reader sees size %d, want 10", size)
		}
		if _, err := b.InclusionProof(ctx, 3, 10); err != nil {
			t.Errorf("reader proof: %v", err)
		}

		a.Close() // the writer dies: its session (or file lock) goes
		// PostgreSQL frees a closed session's advisory lock when its backend
		// has ended, a moment after the client hung up; the control plane
		// retries every second, the test every 20 ms for 5 s.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			err := b.AcquireWriter(ctx)
			if err == nil {
				break
			}
			if !errors.Is(err, ledger.ErrNotWriter) || time.Now().After(deadline) {
				t.Fatalf("takeover: %v", err)
			}
		}
		if got := appendOK(t, b, ledger.Batch{Entries: all[10:20]}); got != 10 {
			t.Errorf("takeover append at %d, want 10", got)
		}
		appendOK(t, b, ledger.Batch{Entries: all[20:]})
		if _, err := b.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		// Same tree: the root of the same 30 entries, no fork.
		if _, root := head(t, b); root != ledger.BatchRoot(ledgertest.Leaves(t, all)) {
			t.Error("root after takeover differs from the root of the same entries")
		}
		if rep, err := b.Verify(ctx, ledger.VerifyOptions{}); err != nil || rep.Size != 30 || rep.Checkpoints != 2 {
			t.Errorf("Verify: %+v, %v", rep, err)
		}
		// And the first, back, is a reader.
		c := open(t, cfg)
		if err := c.AcquireWriter(ctx); !errors.Is(err, ledger.ErrNotWriter) {
			t.Errorf("third instance: got %v, want ErrNotWriter", err)
		}
	})
}

// TestNoForkWithoutLock: even two instances that both think they are the
// writer (the lock bypassed) cannot fork the log: each append checks the
// stored tree size in its transaction.
func TestNoForkWithoutLock(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		a := ledgertest.Open(t, cfg)
		all := ledgertest.Entries(0, 12)
		appendOK(t, a, ledger.Batch{Entries: all[:5]})
		b := open(t, cfg)
		if err := ledger.ForceWriter(ctx, b); err != nil {
			t.Fatal(err)
		}
		if got := appendOK(t, b, ledger.Batch{Entries: all[5:8]}); got != 5 {
			t.Errorf("b appended at %d, want 5", got)
		}
		if _, err := a.Append(ctx, ledger.Batch{Entries: all[8:]}); !errors.Is(err, ledger.ErrNotWriter) {
			t.Fatalf("stale writer: got %v, want ErrNotWriter", err)
		}
		if _, err := a.Checkpoint(ctx); !errors.Is(err, ledger.ErrNotWriter) {
			t.Errorf("stale writer checkpoint: got %v, want ErrNotWriter", err)
		}
		appendOK(t, b, ledger.Batch{Entries: all[8:]})
		if _, root := head(t, b); root != ledger.BatchRoot(ledgertest.Leaves(t, all)) {
			t.Error("forked")
		}
		if _, err := b.Verify(ctx, ledger.VerifyOptions{}); err != nil {
			t.Errorf("Verify: %v", err)
		}
	})
}

// rawDB opens the store of cfg with plain SQL, to tamper with it.
func rawDB(t *testing.T, cfg ledger.Config) *sql.DB {
	t.Helper()
	var (
		db  *sql.DB
		err error
	)
	if cfg.Store == "" {
		db, err = sql.Open("sqlite", "file:"+filepath.Join(cfg.Dir, ledger.DBFile)+"?_pragma=busy_timeout(10000)")
	} else {
		db, err = sql.Open("pgx", cfg.Store)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func execSQL(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	res, err := db.ExecContext(context.Background(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s: no row changed", q)
	}
}

func readBlob(t *testing.T, db *sql.DB, q string, args ...any) []byte {
	t.Helper()
	var b []byte
	if err := db.QueryRowContext(context.Background(), q, args...).Scan(&b); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return b
}

// flip changes one byte of a blob column in one row.
func flip(t *testing.T, db *sql.DB, table, column, where string, at int, args ...any) {
	t.Helper()
	b := readBlob(t, db, "SELECT "+column+" FROM "+table+" WHERE "+where, args...)
	if at < 0 {
		at += len(b)
	}
	b[at] ^= 0x01
	execSQL(t, db, "UPDATE "+table+" SET "+column+" = $1 WHERE "+shift(where), append([]any{b}, args...)...)
}

// shift renumbers $1.. in where to $2..
func shift(where string) string {
	out := []byte{}
	for i := 0; i < len(where); i++ {
		out = append(out, where[i])
		if where[i] == '$' && i+1 < len(where) {
			out = append(out, where[i+1]+1)
			i++
		}
	}
	return string(out)
}

func swapRows(t *testing.T, db *sql.DB, i, j int) {
	t.Helper()
	execSQL(t, db, "UPDATE entries SET idx = -1 WHERE idx = $1", i)
	execSQL(t, db, "UPDATE entries SET idx = $1 WHERE idx = $2", i, j)
	execSQL(t, db, "UPDATE entries SET idx = $1 WHERE idx = -1", j)
}

// buildTamperLedger makes a 301-entry ledger: six signed batches of 50,
// a checkpoint at 0 and after each batch, then one unsigned entry and a
// checkpoint at 301. Checkpoint seqs: 1 (size 0), 2 (50), ..., 7 (300), 8 (301).
func buildTamperLedger(t *testing.T, cfg ledger.Config, sc sidecar) {
	t.Helper()
	ctx := t.Context()
	l := ledgertest.Open(t, cfg)
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for b := range 6 {
		es := ledgertest.Entries(50*b, 50)
		appendOK(t, l, ledger.Batch{Entries: es, Signature: sc.sign(t, uint64(b+1), ledgertest.Leaves(t, es))})
		if _, err := l.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	appendOK(t, l, ledger.Batch{Entries: ledgertest.Entries(300, 1)})
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	l.Close()
}

// TestTamper changes a stored ledger the ways an operator could, and checks
// that Verify fails naming the first bad entry (tamper vectors).
func TestTamper(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		sc := newSidecar(t)
		rewrite := func(t *testing.T, db *sql.DB, _ ledger.Config) {
			// Entry 123 rewritten (still decodable), its leaf hash too.
			e := ledgertest.Entry(123)
			e.ResponseBytes++
			b, _ := e.Encode()
			lh := ledger.LeafHash(b)
			execSQL(t, db, "UPDATE entries SET data = $1, leaf_hash = $2 WHERE idx = 123", b, lh[:])
		}
		tests := []struct {
			name   string
			tamper func(t *testing.T, db *sql.DB, c ledger.Config)
			index  uint64
			msg    string // "" means intact
		}{
			{name: "intact", tamper: func(*testing.T, *sql.DB, ledger.Config) {}},
			{name: "entry byte", index: 123, msg: "entry 123: leaf hash does not match its data",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { flip(t, db, "entries", "data", "idx = $1", 40, 123) }},
			{name: "entry first byte", index: 0, msg: "entry 0: leaf hash does not match its data",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { flip(t, db, "entries", "data", "idx = $1", 0, 0) }},
			{name: "entry truncated", index: 123, msg: "entry 123: leaf hash does not match its data",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					b := readBlob(t, db, "SELECT data FROM entries WHERE idx = 123")
					execSQL(t, db, "UPDATE entries SET data = $1 WHERE idx = 123", b[:len(b)-1])
				}},
			{name: "entry garbage prefix", index: 123, msg: "entry 123: leaf hash does not match its data",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					b := readBlob(t, db, "SELECT data FROM entries WHERE idx = 123")
					execSQL(t, db, "UPDATE entries SET data = $1 WHERE idx = 123", append([]byte("x"), b...))
				}},
			{name: "leaf hash byte", index: 123, msg: "entry 123: leaf hash does not match its data",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "entries", "leaf_hash", "idx = $1", 5, 123)
				}},
			{name: "entry rewritten with its leaf hash", index: 122, msg: "entries 122 and 123: their pair's hash differs from the stored tree (node 1/61): an entry or the node was rewritten",
				tamper: rewrite},
			{name: "row deleted", index: 77, msg: "entry 77 missing (rows jump from 76 to 78)",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { execSQL(t, db, "DELETE FROM entries WHERE idx = 77") }},
			{name: "first row deleted", index: 0, msg: "entry 0 missing (rows start at 1)",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { execSQL(t, db, "DELETE FROM entries WHERE idx = 0") }},
			{name: "last row deleted", index: 300, msg: "entry 300 missing (rows end at 299, the tree has size 301)",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { execSQL(t, db, "DELETE FROM entries WHERE idx = 300") }},
			{name: "rows swapped", index: 10, msg: "entries 10 and 11 out of order",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { swapRows(t, db, 10, 11) }},
			{name: "rows swapped apart", index: 10, msg: "entries 10 and 13 out of order",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { swapRows(t, db, 10, 13) }},
			{name: "odd rows swapped apart", index: 11, msg: "entries 11 and 200 out of order",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { swapRows(t, db, 11, 200) }},
			{name: "extra row", index: 301, msg: "entry 301: beyond the stored tree size 301",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					e := ledgertest.Entry(301)
					b, _ := e.Encode()
					lh := ledger.LeafHash(b)
					execSQL(t, db, "INSERT INTO entries (idx, data, leaf_hash) VALUES (301, $1, $2)", b, lh[:])
				}},
			{name: "batch signature byte", index: 100, msg: "batch [100,150): signature does not verify: ECDSA signature is invalid",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "batches", "signature", "start_idx = $1", -1, 100)
				}},
			{name: "batch certificate byte", index: 100, msg: "batch [100,150): signature does not verify",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "batches", "chain", "start_idx = $1", 200, 100)
				}},
			{name: "batch root", index: 100, msg: "batch [100,150): signature does not cover its entries",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "batches", "root", "start_idx = $1", 0, 100)
				}},
			{name: "batch moved", index: 101, msg: "batch [101,151): signature does not cover its entries",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					execSQL(t, db, "UPDATE batches SET start_idx = 101, end_idx = 151 WHERE start_idx = 100")
				}},
			{name: "checkpoint byte", index: 150, msg: "checkpoint at size 150: signature does not verify",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "checkpoints", "note", "seq = $1", -10, 4)
				}},
			{name: "checkpoint root line", index: 150, msg: "checkpoint at size 150: signature does not verify",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { flip(t, db, "checkpoints", "note", "seq = $1", 30, 4) }},
			{name: "checkpoint deleted", index: 100, msg: "checkpoint 4 missing (sequence jumps from 3 to 5)",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					execSQL(t, db, "DELETE FROM checkpoints WHERE seq = 4")
				}},
			{name: "first checkpoint deleted", index: 0, msg: "checkpoint 1 missing (the first stored is 2)",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					execSQL(t, db, "DELETE FROM checkpoints WHERE seq = 1")
				}},
			{name: "checkpoint size", index: 149, msg: "checkpoint at size 149: it signs size 150",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					execSQL(t, db, "UPDATE checkpoints SET size = 149 WHERE seq = 4")
				}},
			{name: "checkpoint of another tree, validly signed", index: 150, msg: "checkpoint at size 150: root differs from the log",
				tamper: func(t *testing.T, db *sql.DB, c ledger.Config) {
					// Whoever holds the key signs a checkpoint of a forked tree.
					s, err := note.NewSigner(signerKey(t, db, c))
					if err != nil {
						t.Fatal(err)
					}
					forged, err := note.Sign(&note.Note{Text: ledger.Checkpoint{Origin: ledgertest.Origin, Size: 150, Root: [32]byte{1}}.String()}, s)
					if err != nil {
						t.Fatal(err)
					}
					execSQL(t, db, "UPDATE checkpoints SET note = $1 WHERE seq = 4", forged)
				}},
			{name: "level 1 node", index: 40, msg: "entries 40 and 41: their pair's hash differs from the stored tree (node 1/20): an entry or the node was rewritten",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "nodes", "hash", "level = 1 AND idx = $1", 3, 20)
				}},
			{name: "level 3 node", index: 16, msg: "entries [16,24): their subtree hash differs from the stored tree (node 3/2)",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					flip(t, db, "nodes", "hash", "level = 3 AND idx = $1", 3, 2)
				}},
			{name: "node deleted", index: 20, msg: "entries [20,24): node 2/5 missing from the stored tree",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) {
					execSQL(t, db, "DELETE FROM nodes WHERE level = 2 AND idx = 5")
				}},
			{name: "tree root", index: 0, msg: "tree state: root differs from the log",
				tamper: func(t *testing.T, db *sql.DB, _ ledger.Config) { flip(t, db, "tree", "root", "id = $1", 0, 1) }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := ledgertest.NewConfig(t, cfg)
				buildTamperLedger(t, c, sc)
				tt.tamper(t, rawDB(t, c), c)
				ro := c
				ro.ReadOnly, ro.Origin = true, ""
				l := open(t, ro)
				rep, err := l.Verify(t.Context(), ledger.VerifyOptions{Roots: sc.pool})
				if tt.msg == "" {
					if err != nil {
						t.Fatalf("intact ledger: %v", err)
					}
					want := ledger.Report{Size: 301, Root: rep.Root, Confirmations: 258, Omissions: 43,
						Checkpoints: 8, Batches: 6, Nodes: 301 - 5, TreeChecked: true, ChainsChecked: true}
					if rep != want {
						t.Errorf("report:\n got %+v\nwant %+v", rep, want)
					}
					return
				}
				var te *ledger.TamperError
				if !errors.As(err, &te) || !errors.Is(err, ledger.ErrTampered) {
					t.Fatalf("got %v, want a TamperError", err)
				}
				if te.Index != tt.index || !hasPrefix(te.Msg, tt.msg) {
					t.Errorf("got index %d %q,\nwant index %d %q", te.Index, te.Msg, tt.index, tt.msg)
				}
			})
		}
	})
}

// signerKey reads the checkpoint signer key of the store of c.
func signerKey(t *testing.T, db *sql.DB, c ledger.Config) string {
	t.Helper()
	if c.Store == "" {
		b, err := os.ReadFile(filepath.Join(c.Dir, ledger.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	var k string
	if err := db.QueryRow("SELECT value FROM meta WHERE key = 'signer_key'").Scan(&k); err != nil {
		t.Fatal(err)
	}
	return k
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// sourceOnly hides a Snapshot's tree, as a REST client would see the log:
// entries and the latest checkpoint only.
type sourceOnly struct {
	s       *ledger.Snapshot
	latest  bool
	reorder bool // serve entries 10 and 11 the other way round
}

func (s sourceOnly) ReadEntries(ctx context.Context, start uint64, limit int) ([]ledger.StoredEntry, error) {
	es, err := s.s.ReadEntries(ctx, start, limit)
	for i := range es {
		if s.reorder && es[i].Index == 10 && i+1 < len(es) {
			es[i], es[i+1] = es[i+1], es[i]
			break
		}
	}
	return es, err
}

func (s sourceOnly) ReadCheckpoints(ctx context.Context, from uint64, limit int) ([]ledger.StoredCheckpoint, error) {
	cs, err := s.s.ReadCheckpoints(ctx, 0, 1<<20)
	if err != nil || !s.latest || len(cs) == 0 || from > 1 {
		return nil, err
	}
	c := cs[len(cs)-1]
	c.Seq = 1
	return []ledger.StoredCheckpoint{c}, nil
}

func (s sourceOnly) ReadBatches(ctx context.Context, start uint64, limit int) ([]ledger.StoredBatch, error) {
	return nil, nil
}

func TestVerifySourceOnly(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		sc := newSidecar(t)
		buildTamperLedger(t, cfg, sc)
		l := open(t, cfg)
		snap, err := l.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Close()
		src := sourceOnly{s: snap, latest: true}
		if _, err := ledger.Verify(ctx, src, ledger.VerifyOptions{}); err == nil || err.Error() != "verifying ledger: no checkpoint verifier key" {
			t.Errorf("without a key: got %v", err)
		}
		rep, err := ledger.Verify(ctx, src, ledger.VerifyOptions{VerifierKey: l.VerifierKey(), PageSize: 7})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Size != 301 || rep.Checkpoints != 1 || rep.TreeChecked || rep.ChainsChecked {
			t.Errorf("report: %+v", rep)
		}
		_, err = ledger.Verify(ctx, sourceOnly{s: snap, latest: true, reorder: true}, ledger.VerifyOptions{VerifierKey: l.VerifierKey()})
		if err == nil || err.Error() != "entries 10 and 11 out of order" {
			t.Errorf("served out of order: got %v", err)
		}
		snap.Close()
		flip(t, rawDB(t, cfg), "entries", "data", "idx = $1", 9, 299)
		snap, err = l.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ledger.Verify(ctx, sourceOnly{s: snap, latest: true}, ledger.VerifyOptions{VerifierKey: l.VerifierKey()})
		if err == nil || err.Error() != "entry 299: leaf hash does not match its data" {
			t.Errorf("tampered: got %v", err)
		}
	})
}

// TestWriterSessionKilled: the server ends the writer's session (as when
// its host dies and TCP keepalive gives up): its lock goes with it, another
// instance takes over, and the old writer can append nothing more.
func TestWriterSessionKilled(t *testing.T) {
	cfg := ledger.Config{Store: ledgertest.Postgres(t), Origin: ledgertest.Origin}
	ctx := t.Context()
	a := ledgertest.Open(t, cfg)
	all := ledgertest.Entries(0, 20)
	appendOK(t, a, ledger.Batch{Entries: all[:10]})
	b := open(t, cfg)
	if err := b.AcquireWriter(ctx); !errors.Is(err, ledger.ErrNotWriter) {
		t.Fatalf("second writer: got %v", err)
	}
	var ok bool
	if err := rawDB(t, cfg).QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", int64(ledger.WriterPID(a))).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminating the writer's session: %v %v", ok, err)
	}
	// The lock is released once the backend has exited; poll for it.
	for {
		err := b.AcquireWriter(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, ledger.ErrNotWriter) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the lock was never released")
		default:
		}
	}
	appendOK(t, b, ledger.Batch{Entries: all[10:]})
	if _, err := a.Append(ctx, ledger.Batch{Entries: all[:1]}); !errors.Is(err, ledger.ErrNotWriter) {
		t.Errorf("old writer: got %v, want ErrNotWriter", err)
	}
	if _, err := a.Checkpoint(ctx); !errors.Is(err, ledger.ErrNotWriter) {
		t.Errorf("old writer checkpoint: got %v, want ErrNotWriter", err)
	}
	if rep, err := b.Verify(ctx, ledger.VerifyOptions{}); err != nil || rep.Root != ledger.BatchRoot(ledgertest.Leaves(t, all)) {
		t.Errorf("Verify: %+v, %v", rep, err)
	}
}

// TestConcurrent appends from several goroutines while others read
// entries, proofs and checkpoints (run it with -race).
func TestConcurrent(t *testing.T) {
	ledgertest.ForEachStore(t, func(t *testing.T, cfg ledger.Config) {
		ctx := t.Context()
		l := ledgertest.Open(t, cfg)
		const writers, batches, per = 4, 10, 25
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for w := range writers {
			wg.Go(func() {
				for i := range batches {
					if _, err := l.Append(ctx, ledger.Batch{Entries: ledgertest.Entries((w*batches+i)*per, per)}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		stop := make(chan struct{})
		var readers sync.WaitGroup
		for range 2 {
			readers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					size, root, err := l.Head(ctx)
					if err != nil {
						errs <- err
						return
					}
					if size == 0 {
						continue
					}
					p, err := l.InclusionProof(ctx, size/2, size)
					if err != nil {
						errs <- err
						return
					}
					es, err := l.Entries(ctx, size/2, size/2+1)
					if err != nil || len(es) != 1 {
						errs <- fmt.Errorf("entries: %d, %v", len(es), err)
						return
					}
					if err := proof.VerifyInclusion(rfc6962.DefaultHasher, size/2, size, es[0].LeafHash, p, root[:]); err != nil {
						errs <- fmt.Errorf("inclusion %d in %d: %w", size/2, size, err)
						return
					}
					if _, err := l.Checkpoint(ctx); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		readers.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		rep, err := l.Verify(ctx, ledger.VerifyOptions{})
		if err != nil || rep.Size != writers*batches*per {
			t.Errorf("Verify: %+v, %v", rep, err)
		}
	})
}
