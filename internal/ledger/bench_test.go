package ledger_test

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgertest"
)

// benchBatches are distinct batches of 1000 entries, reused in turn.
func benchBatches(n int) [][]ledger.Entry {
	out := make([][]ledger.Entry, n)
	for i := range out {
		out[i] = ledgertest.Entries(i*1000, 1000)
	}
	return out
}

func benchAppend(b *testing.B, cfg ledger.Config) {
	ctx := context.Background()
	l, err := ledger.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.AcquireWriter(ctx); err != nil {
		b.Fatal(err)
	}
	batches := benchBatches(8)
	records := 0
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		es := batches[i%len(batches)]
		if _, err := l.Append(ctx, ledger.Batch{Entries: es}); err != nil {
			b.Fatal(err)
		}
		records += len(es)
	}
	b.ReportMetric(float64(records)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkAppendSQLite: appends of batches of 1000 records into SQLite,
// one durable transaction each (WAL, synchronous=FULL). Target: at least
// 100,000 records/s on a 2-core machine.
func BenchmarkAppendSQLite(b *testing.B) {
	benchAppend(b, ledger.Config{Dir: b.TempDir(), Origin: ledgertest.Origin})
}

// BenchmarkAppendPostgres: the same into PostgreSQL (TALLY_TEST_POSTGRES).
func BenchmarkAppendPostgres(b *testing.B) {
	benchAppend(b, ledger.Config{Store: ledgertest.Postgres(b), Origin: ledgertest.Origin})
}

// buildVerifyLedger makes an n-entry SQLite ledger: batches of 10,000
// with sidecar signatures, a checkpoint after each.
func buildVerifyLedger(b *testing.B, n int) (string, sidecar) {
	dir := b.TempDir()
	ctx := context.Background()
	l, err := ledger.Open(ctx, ledger.Config{Dir: dir, Origin: ledgertest.Origin})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.AcquireWriter(ctx); err != nil {
		b.Fatal(err)
	}
	sc := newSidecar(b)
	const batch = 10000
	for i := 0; i < n; i += batch {
		es := ledgertest.Entries(i, min(batch, n-i))
		leaves := ledgertest.Leaves(b, es)
		if _, err := l.Append(ctx, ledger.Batch{Entries: es, Signature: sc.sign(b, uint64(i/batch+1), leaves)}); err != nil {
			b.Fatal(err)
		}
		if _, err := l.Checkpoint(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return dir, sc
}

// peakRSS returns the process's peak resident set (VmHWM) in bytes.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			kb, _ := strconv.ParseFloat(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 64)
			return kb * 1024
		}
	}
	return 0
}

// heapSampler records the peak of live heap objects while it runs.
type heapSampler struct {
	stop chan struct{}
	done chan float64
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan float64)}
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		peak := 0.0
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, float64(s[0].Value.Uint64()))
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) peak() float64 {
	close(h.stop)
	return <-h.done
}

// BenchmarkVerify1M verifies a 1,000,000-entry SQLite ledger (100 signed
// batches, 100 checkpoints) from its files, as tally audit verify --data
// does. Target: under 10 s, memory bounded. It reports the peak live heap
// and the process's peak RSS during verification (reset before it where
// Linux allows).
func BenchmarkVerify1M(b *testing.B) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	dir, sc := buildVerifyLedger(b, n)
	ctx := context.Background()
	runtime.GC()
	// Reset VmHWM so the peak RSS is verification's (Linux >= 4.0).
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	heap := sampleHeap()
	for b.Loop() {
		l, err := ledger.Open(ctx, ledger.Config{Dir: dir, ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		rep, err := l.Verify(ctx, ledger.VerifyOptions{Roots: sc.pool})
		l.Close()
		if err != nil {
			b.Fatal(err)
		}
		if rep.Size != uint64(n) || rep.Batches != n/10000 || rep.Checkpoints != n/10000 {
			b.Fatalf("report: %+v", rep)
		}
	}
	b.ReportMetric(heap.peak()/(1<<20), "peak-heap-MiB")
	b.ReportMetric(peakRSS()/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(n), "entries")
}
