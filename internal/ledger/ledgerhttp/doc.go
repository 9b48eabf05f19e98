// Package ledgerhttp is the client of a control plane's ledger endpoints
// (/api/v1/ledger/..., SPEC.md) and the JSON shapes they share with the
// server: what `tally audit --control URL` reads.
//
//	c := ledgerhttp.NewClient("http://127.0.0.1:7401", nil)
//	key, err := c.Key(ctx)
//	ca, err := c.CA(ctx)                      // or a pinned one
//	signed, err := c.Checkpoint(ctx)          // ledger.ErrNoCheckpoint before the first
//	view, err := c.View(signed)               // a ledger.Source of the checkpointed tree
//	report, err := ledger.Verify(ctx, view, ledger.VerifyOptions{VerifierKey: key, Roots: pool})
//
// A Client is a ledger.Source itself (the log as the server has it now,
// growing); a View is one fixed at a checkpoint, which is what a verifier
// wants. Both serve the batch signatures (GET batches) beside the entries,
// so a Verify over HTTP checks the tree, the checkpoint and every batch
// signature of the entries it reads; a View leaves out the batches appended
// after its checkpoint.
//
// Client.Audit does that whole round for `tally audit verify --control`:
// the entries up to the latest checkpoint and their batch signatures
// through ledger.Verify (a compact range, bounded memory), then a
// consistency proof to the checkpoint seen at the end;
// Client.ProveInclusion is `tally audit proof`. Neither trusts the server
// beyond the verifier key and the CA pool it is given: what the server
// sends is only decoded here and checked against signed roots
// (ledger.OpenCheckpoint, github.com/transparency-dev/merkle/proof) and
// signatures; a problem is a *ledger.TamperError naming the first bad
// entry.
//
// # Concurrency
//
// Client and View are safe for concurrent use.
package ledgerhttp
