// Package ledger is tally's tamper-evident delivery ledger: an append-only
// Merkle log (RFC 6962 hashing, github.com/transparency-dev/merkle) of
// confirmed messages and omission events, with signed checkpoints (C2SP
// tlog-checkpoint, golang.org/x/mod/sumdb/note, Ed25519), inclusion and
// consistency proofs, the sidecars' batch signatures, and a streaming
// verifier. It stores into SQLite (modernc.org/sqlite, the default) or
// PostgreSQL (github.com/jackc/pgx/v5), and does no network I/O but the
// PostgreSQL client connection.
//
//	log, err := ledger.Open(ctx, ledger.Config{Dir: dir, Origin: "tally/mesh.local/ledger"})
//	err = log.AcquireWriter(ctx)                   // ErrNotWriter: another process writes
//	first, err := log.Append(ctx, ledger.Batch{Entries: entries, Signature: sig})
//	note, err := log.Checkpoint(ctx)               // at least every second while it grows
//	proof, err := log.InclusionProof(ctx, index, size)
//	report, err := log.Verify(ctx, ledger.VerifyOptions{Roots: caPool})
//
// # Leaves
//
// A leaf is the canonical encoding of an [Entry] (a confirmation or an
// omission), versioned and documented at [EntryVersion]. Its RFC 6962 leaf
// hash is SHA-256(0x00 || leaf) ([LeafHash]). The control plane maps records
// to entries; this package does not know the API's protobuf types.
//
// # Batch signatures
//
// A sidecar signs the RFC 6962 root ([BatchRoot]) of the leaves of each
// batch it uploads ([SignBatch], ECDSA P-256 with its SVID key; the signed
// message is documented at [BatchStatement.Message]). The control plane checks
// it ([VerifyBatchSignature]) and appends the batch with its signature,
// which is kept with the log range [start, end) of its leaves. [Verify]
// rechecks it later against the mesh CA at the time of signing, so expired
// SVIDs still verify.
//
// # Checkpoints and the key
//
// The log's origin (e.g. "tally/<trust domain>/ledger") is the name of its
// Ed25519 note key. The key is created on first open and kept: for SQLite in
// Dir/ledger.key (0600, one line in note signer format "PRIVATE+KEY+..."),
// apart from Dir/ledger.db so the database can be copied for audit without
// it; for PostgreSQL in the database (meta.signer_key), so that every
// control plane sharing it signs as the same log. [Log.VerifierKey] is the
// verifier key, [Log.Checkpoint] signs and publishes the current size and
// root, and every published checkpoint is stored, in order, for Verify.
//
// # Storage
//
// Tables (both stores): entries(idx, data, leaf_hash); nodes(level, idx,
// hash), the hash of every perfect subtree of level >= 1 stored as it
// completes, so a proof is O(log n) lookups; tree, the size, root and
// compact range, updated in the same transaction as the entries; batches;
// checkpoints; meta.
//
// SQLite is Dir/ledger.db (0600) in WAL mode with synchronous=FULL: every
// commit syncs the WAL, so an acknowledged append survives power loss, not
// just a crash; with whole batches per transaction the one fsync per batch
// costs little. Appends use one writer connection with prepared multi-row
// INSERTs; reads a small pool of read-only connections, which WAL lets run
// beside the writer. PostgreSQL keeps the tables in the current schema (set
// search_path in the URL) and appends with COPY.
//
// # Single writer
//
// Exactly one Log appends to a store. [Log.AcquireWriter] takes the role:
// on PostgreSQL a session-level advisory lock (pg_try_advisory_lock) on the
// writer's own connection, through which it also writes; when that session
// ends (process death, lost connection, Close) the lock is released and a
// reader's next AcquireWriter takes over, loading the tree from the
// database. On SQLite, flock(2) on Dir/ledger.lock. Besides the lock, every
// append checks inside its transaction that the stored tree size is the one
// the writer appended to (on PostgreSQL under SELECT ... FOR UPDATE), so
// even two processes that both believed they held the role could not fork
// the log: one of them gets [ErrNotWriter].
//
// # Invariants
//
//   - An Append MUST return only after its transaction is durably
//     committed; nothing is acknowledged before. The control plane
//     acknowledges a sidecar's batch only after Append returned for it.
//   - The entries, node hashes, batch signatures and tree state of one
//     Append are committed in one transaction: all or none.
//   - The log only grows: no method updates or deletes an entry, node,
//     batch signature or checkpoint.
//   - A checkpoint is signed only for a tree state that is committed, and
//     stored in the same transaction that checks the tree size.
//   - Verify holds in memory a compact range, one page per stream and the
//     batch being read: O(log n + page), whatever the size of the log.
//
// # Concurrency
//
// A Log is safe for concurrent use. Appends and checkpoints are serialized
// by a mutex; reads (entries, proofs, checkpoints) run beside them. A
// Snapshot is one read transaction; use it from one goroutine.
package ledger
