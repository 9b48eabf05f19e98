package control

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/ledger"
)

// checkpointInterval is how often a growing log gets a new signed
// checkpoint (issue: at least every second).
const checkpointInterval = time.Second

// ledgerIngest appends what sidecars upload to the durable ledger before
// the batch is acknowledged. It is safe for concurrent use.
//
// # Durability
//
// A batch is acknowledged only after Append returned, and Append returns
// only after the commit is durable: a sidecar keeps and resends everything
// not acknowledged, so nothing acknowledged is lost when the control plane
// dies. A batch resent after a crash that had been appended already is
// recognised by its (instance, batch_seq) in the log's signed batches and
// not appended twice.
type ledgerIngest struct {
	log    *ledger.Log
	roots  *x509.CertPool
	writer atomic.Bool

	// epoch tells apart the event ids of successive processes (they count
	// from 1 in each).
	epoch string

	mu      sync.Mutex        // guards lastSeq
	lastSeq map[string]uint64 // signer and instance -> highest signed batch in the log
}

func newLedgerIngest(lg *ledger.Log, ca *x509.Certificate) *ledgerIngest {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &ledgerIngest{log: lg, roots: roots, lastSeq: map[string]uint64{},
		epoch: strconv.FormatInt(time.Now().UnixNano(), 36)}
}

// errNotWriter tells a sidecar to come back later: another control plane
// holds the ledger; what it uploads stays in its buffer.
var errNotWriter = status.Error(codes.Unavailable, "this control plane is a reader: another one holds the ledger writer lock")

// prepare works out what batch b adds to the ledger: the leaves of its
// accepted records (accepted[i] for record i) and the sidecar's signature,
// kept only if it verifies and covers exactly those leaves. It returns a
// nil batch when there is nothing to append (no leaves, or appended before
// a restart). Nothing is written: commit appends prepared batches together.
func (li *ledgerIngest) prepare(ctx context.Context, peerID spiffeid.ID, b *tallyv1.RecordBatch, accepted []bool) (lb *ledger.Batch, note string, err error) {
	if !li.writer.Load() {
		return nil, "", errNotWriter
	}
	// Instance ids are the sidecars' choice: the dedupe key includes the
	// uploader's identity, so no sidecar can suppress another's leaves by
	// uploading under its instance id.
	key := seqKey(peerID.String(), b.GetInstanceId())
	li.mu.Lock()
	last, known := li.lastSeq[key]
	li.mu.Unlock()
	if !known {
		seq, chain, err := li.log.LastBatch(ctx, b.GetInstanceId())
		if err != nil {
			return nil, "", status.Errorf(codes.Unavailable, "ledger: %v", err)
		}
		if seq > 0 && signerOf(chain) == peerID.String() {
			last = seq
		}
		li.mu.Lock()
		if cur, ok := li.lastSeq[key]; !ok || cur < last {
			li.lastSeq[key] = last
		}
		li.mu.Unlock()
	}
	if b.GetBatchSeq() <= last {
		return nil, "", nil // appended before a restart: not again
	}
	all, from := ledger.BatchEntries(b)
	var entries []ledger.Entry
	for i, e := range all {
		if accepted[from[i]] {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		return nil, "", nil
	}
	var (
		leaves [][]byte   // encoded once, when the signature is checked
		hashes [][32]byte // and hashed once
	)
	sig, serr := ledger.SignatureFromProto(b)
	switch {
	case serr != nil:
		note = serr.Error()
		sig = nil
	case sig == nil:
		note = "batch not signed"
	case len(entries) != len(all):
		note = "records were refused, so the signature does not cover what is stored"
		sig = nil
	default:
		var err error
		leaves, err = ledger.EncodeAll(entries)
		if err != nil {
			return nil, "", status.Errorf(codes.InvalidArgument, "batch %d: %v", b.GetBatchSeq(), err)
		}
		hashes = ledger.LeafHashes(leaves)
		cert, verr := ledger.VerifyBatchSignatureHashes(sig, hashes, li.roots)
		if verr == nil {
			if id, err := x509svid.IDFromCert(cert); err != nil || id != peerID {
				verr = fmt.Errorf("signed by %v, uploaded by %s", id, peerID)
			}
		}
		if verr != nil {
			note = "batch signature refused: " + verr.Error()
			sig = nil
		}
	}
	return &ledger.Batch{Entries: entries, Signature: sig, Leaves: leaves, LeafHashes: hashes}, note, nil
}

// commit appends prepared batches in one durable transaction (a group
// commit: the batches a stream has queued share one fsync). It returns the
// log's size after them, 0 when there was nothing to append.
func (li *ledgerIngest) commit(ctx context.Context, batches []ledger.Batch) (size uint64, err error) {
	if len(batches) == 0 {
		return 0, nil
	}
	first, err := li.log.Append(ctx, batches...)
	if err != nil {
		if errors.Is(err, ledger.ErrNotWriter) {
			li.writer.Store(false)
			return 0, errNotWriter
		}
		return 0, status.Errorf(codes.Unavailable, "ledger append: %v", err)
	}
	size = first
	for _, b := range batches {
		size += uint64(len(b.Entries))
	}
	li.mu.Lock()
	for _, b := range batches {
		if b.Signature == nil {
			continue
		}
		key := seqKey(signerOf(b.Signature.Chain), b.Signature.InstanceID)
		if b.Signature.BatchSeq > li.lastSeq[key] {
			li.lastSeq[key] = b.Signature.BatchSeq
		}
	}
	li.mu.Unlock()
	return size, nil
}

func seqKey(signer, instance string) string { return signer + " " + instance }

// signerOf is the SPIFFE ID of a chain's leaf certificate, "" if none.
func signerOf(chain [][]byte) string {
	if len(chain) == 0 {
		return ""
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return ""
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return ""
	}
	return id.String()
}

// appendFindings stores the control plane's own omission events.
func (li *ledgerIngest) appendFindings(ctx context.Context, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	if !li.writer.Load() {
		return errNotWriter
	}
	entries := make([]ledger.Entry, len(evs))
	for i, ev := range evs {
		entries[i] = ledger.Entry{
			Kind: ledger.KindOmission, MessageID: ev.MessageID, Seq: ev.Seq,
			Source: ev.Source, Destination: ev.Destination,
			SourceIdentity: ev.SourceIdentity, DestinationIdentity: ev.DestinationIdentity,
			AtUnixNano: ev.DetectedAt.UnixNano(), EventID: "control:" + li.epoch + ":" + ev.ID,
			OmissionKind: ev.Kind, Detail: ev.Detail, Reporter: "control",
		}
	}
	_, err := li.log.Append(ctx, ledger.Batch{Entries: entries})
	return err
}

// run holds or waits for the writer role and publishes a checkpoint every
// second while the log grows, until ctx ends.
func (li *ledgerIngest) run(ctx context.Context, s *Server) {
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		if err := li.log.AcquireWriter(ctx); err != nil {
			if li.writer.Swap(false) {
				s.log.Warn("ledger writer role lost", "err", err)
			}
		} else if !li.writer.Swap(true) {
			// Taken over from a writer that stopped.
			s.log.Info("ledger writer role held: appending and signing checkpoints")
			li.mu.Lock()
			clear(li.lastSeq) // another writer may have appended meanwhile
			li.mu.Unlock()
		}
		if li.writer.Load() {
			if _, err := li.log.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("signing checkpoint", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
