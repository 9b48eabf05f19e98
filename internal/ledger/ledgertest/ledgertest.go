// Package ledgertest has small real helpers for tests of the ledger and of
// its users: a fresh PostgreSQL schema per test, both stores in one loop,
// and sample entries. Nothing here is a fake: the stores are the real ones.
package ledgertest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tally-mesh/tally/internal/ledger"
)

// PostgresEnv names the environment variable with the URL of a PostgreSQL
// database tests may use (CI sets it). Tests make their own schema in it.
const PostgresEnv = "TALLY_TEST_POSTGRES"

// Origin is the ledger origin tests use.
const Origin = "tally/mesh.local/ledger"

// Postgres returns a URL of the database in $TALLY_TEST_POSTGRES whose
// search_path is a new, empty schema, dropped when t ends; so tests can
// share one database. Without the variable it skips t.
func Postgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skip("PostgreSQL not available: set TALLY_TEST_POSTGRES=postgres://... (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("ledgertest: connecting to %s: %v", PostgresEnv, err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	rand.Read(b[:])
	schema := "tally_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("ledgertest: creating schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("ledgertest: dropping schema %s: %v", schema, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("ledgertest: dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("ledgertest: parsing %s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// ForEachStore runs fn as subtests "sqlite" (a new directory) and
// "postgres" (a new schema; skipped without TALLY_TEST_POSTGRES), each with
// the Config of a new, empty ledger. Open it as often as the test likes: the
// same Config opens the same store.
func ForEachStore(t *testing.T, fn func(t *testing.T, cfg ledger.Config)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, ledger.Config{Dir: t.TempDir(), Origin: Origin})
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, ledger.Config{Store: Postgres(t), Origin: Origin})
	})
}

// NewConfig returns the Config of a new, empty store of the same kind as
// like (SQLite or PostgreSQL).
func NewConfig(t testing.TB, like ledger.Config) ledger.Config {
	t.Helper()
	if like.Store == "" || like.Store == "sqlite" {
		return ledger.Config{Dir: t.TempDir(), Origin: like.Origin}
	}
	return ledger.Config{Store: Postgres(t), Origin: like.Origin}
}

// Open opens the ledger of cfg, makes it the writer, and closes it when t
// ends.
func Open(t testing.TB, cfg ledger.Config) *ledger.Log {
	t.Helper()
	l, err := ledger.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ledgertest: opening ledger: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.AcquireWriter(context.Background()); err != nil {
		t.Fatalf("ledgertest: acquiring writer: %v", err)
	}
	return l
}

// Entry returns a realistic entry, different for each i: every seventh is
// an omission, the others confirmations.
func Entry(i int) ledger.Entry {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond).UnixNano()
	id := fmt.Sprintf("%032x", sha256.Sum256([]byte(fmt.Sprint("message", i))))[:32]
	if i%7 == 6 {
		return ledger.Entry{
			Kind:                ledger.KindOmission,
			EventID:             fmt.Sprintf("ev-%d", i),
			OmissionKind:        "truncated",
			Source:              "frontend",
			Destination:         "orders",
			SourceIdentity:      "spiffe://mesh.local/svc/frontend",
			DestinationIdentity: "spiffe://mesh.local/svc/orders",
			MessageID:           id,
			Seq:                 uint64(i),
			AtUnixNano:          at,
			Detail:              fmt.Sprintf("response body: %d of %d bytes", i, 2*i+1),
			Reporter:            "caller",
			InstanceID:          "frontend-7f9c",
			BatchSeq:            uint64(i/100 + 1),
		}
	}
	return ledger.Entry{
		Kind:                ledger.KindConfirmation,
		MessageID:           id,
		Seq:                 uint64(i),
		Source:              "frontend",
		Destination:         "orders",
		SourceIdentity:      "spiffe://mesh.local/svc/frontend",
		DestinationIdentity: "spiffe://mesh.local/svc/orders",
		Protocol:            "http",
		RequestDigest:       sha256.Sum256([]byte(fmt.Sprint("request", i))),
		ResponseDigest:      sha256.Sum256([]byte(fmt.Sprint("response", i))),
		RequestBytes:        int64(100 + i%1000),
		ResponseBytes:       int64(2000 + i%5000),
		AtUnixNano:          at,
		InstanceID:          "frontend-7f9c",
		BatchSeq:            uint64(i/100 + 1),
	}
}

// Entries returns Entry(from), ..., Entry(from+n-1).
func Entries(from, n int) []ledger.Entry {
	out := make([]ledger.Entry, n)
	for i := range out {
		out[i] = Entry(from + i)
	}
	return out
}

// Leaves returns the encodings of entries.
func Leaves(t testing.TB, entries []ledger.Entry) [][]byte {
	t.Helper()
	out := make([][]byte, len(entries))
	for i := range entries {
		b, err := entries[i].Encode()
		if err != nil {
			t.Fatalf("ledgertest: encoding entry %d: %v", i, err)
		}
		out[i] = b
	}
	return out
}
