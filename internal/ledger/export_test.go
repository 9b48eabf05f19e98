package ledger

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// AppendLeaves appends raw leaves, which need not be entries (the RFC 6962
// test vectors are not).
func AppendLeaves(ctx context.Context, l *Log, leaves [][]byte) (uint64, error) {
	return l.appendLeaves(ctx, leaves, LeafHashes(leaves), []span{{n: len(leaves)}})
}

// ForceWriter makes l a writer without taking the lock, to show that the
// tree-size check alone keeps two writers from forking the log.
func ForceWriter(ctx context.Context, l *Log) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pg, ok := l.b.(*pgStore); ok {
		c, err := pgx.ConnectConfig(ctx, pg.cfg) // no advisory lock
		if err != nil {
			return err
		}
		pg.w = c
	}
	l.writer, l.stale = true, true
	return nil
}

// WriterPID is the PostgreSQL backend process of l's writer session, or 0.
func WriterPID(l *Log) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pg, ok := l.b.(*pgStore); ok && pg.w != nil {
		return pg.w.PgConn().PID()
	}
	return 0
}
