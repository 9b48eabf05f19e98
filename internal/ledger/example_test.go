package ledger_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tally-mesh/tally/internal/ledger"
)

// A control plane's life with its ledger: open, take the writer role,
// append a batch, publish a checkpoint; an auditor's: prove an entry is in
// the checkpointed tree, and verify the whole store.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ledger-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	l, err := ledger.Open(ctx, ledger.Config{Dir: dir, Origin: "tally/mesh.local/ledger"})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if err := l.AcquireWriter(ctx); err != nil {
		log.Fatal(err) // ErrNotWriter: another control plane writes
	}
	first, err := l.Append(ctx, ledger.Batch{Entries: []ledger.Entry{
		{Kind: ledger.KindConfirmation, MessageID: "m1", Seq: 1, Source: "frontend", Destination: "orders", Protocol: "http"},
		{Kind: ledger.KindOmission, EventID: "e1", OmissionKind: "truncated", Source: "frontend", Destination: "orders", MessageID: "m2", Seq: 2, Reporter: "caller"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	signed, err := l.Checkpoint(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// The auditor has the key (GET /api/v1/ledger/key) and the checkpoint.
	cp, err := ledger.OpenCheckpoint(signed, l.VerifierKey())
	if err != nil {
		log.Fatal(err)
	}
	es, err := l.Entries(ctx, first+1, first+2)
	if err != nil {
		log.Fatal(err)
	}
	p, err := l.InclusionProof(ctx, es[0].Index, cp.Size)
	if err != nil {
		log.Fatal(err)
	}
	leafHash := ledger.LeafHash(es[0].Data)
	err = proof.VerifyInclusion(rfc6962.DefaultHasher, es[0].Index, cp.Size, leafHash[:], p, cp.Root[:])
	fmt.Println("entry", es[0].Index, "in checkpoint of size", cp.Size, "verified:", err == nil)

	rep, err := l.Verify(ctx, ledger.VerifyOptions{})
	fmt.Printf("verify: %d entries (%d confirmed, %d omissions), %d checkpoint, err %v\n",
		rep.Size, rep.Confirmations, rep.Omissions, rep.Checkpoints, err)
	// Output:
	// entry 1 in checkpoint of size 2 verified: true
	// verify: 2 entries (1 confirmed, 1 omissions), 1 checkpoint, err <nil>
}
