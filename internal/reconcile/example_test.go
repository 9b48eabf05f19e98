package reconcile_test

import (
	"fmt"
	"time"

	"github.com/tally-mesh/tally/internal/reconcile"
)

func Example() {
	r := reconcile.New(reconcile.Config{Window: 5 * time.Second})
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sent := reconcile.Record{
		Kind: reconcile.Sent, MessageID: "0123456789abcdef0123456789abcdef", Seq: 1,
		Source: "web", Destination: "orders", DestinationIdentity: "spiffe://mesh.local/svc/orders",
		Instance: "00000000000000000000000000000001", Reporter: reconcile.ReporterCaller, At: start,
	}
	// The control plane adds each batch as it arrives, and ticks.
	r.AddBatch([]reconcile.Record{sent}, start.Add(50*time.Millisecond))
	for now := start; now.Before(start.Add(6 * time.Second)); now = now.Add(100 * time.Millisecond) {
		for _, f := range r.Tick(now) {
			fmt.Println(f.Kind, f.Source, "->", f.Destination, f.MessageID, f.DetectedAt.Sub(start))
		}
	}
	// Output:
	// unconfirmed web -> orders 0123456789abcdef0123456789abcdef 5.5s
}
