// Package reconcile matches the records both sidecars of every call upload
// and turns what does not add up into omission findings, in real time.
//
// It is a state machine and does no I/O: the control plane feeds it the
// validated records of each batch ([Reconciler.Add], [Reconciler.AddBatch])
// and its clock ([Reconciler.Tick], every 100-250ms), and records the
// [Finding]s it returns as omission events.
//
//	r := reconcile.New(reconcile.Config{Window: 5 * time.Second})
//	findings := r.AddBatch(records, time.Now()) // duplicate, digest_mismatch, misrouted, late unconfirmed
//	findings = r.Tick(time.Now())                // unconfirmed, sequence_gap, audit_gap
//
// # Records
//
// The caller's sidecar makes a SENT record for every message it addresses
// (seq: its per (caller instance, destination service) counter, from 1),
// then one CONFIRMED (receipt verified, with both digests) or one OMISSION,
// unless it dies first. The callee's sidecar makes a RECEIVED record (the
// digests it computed) or an OMISSION; its Destination is its own service,
// and PeerInstance the caller's instance. Which side a record comes from is
// given by its kind: SENT and CONFIRMED are the caller's, RECEIVED the
// callee's, an OMISSION the callee's if Reporter is "callee", else the
// caller's. Records that name no message (an audit_gap or unauthorized
// omission) only count; OMISSION records are events of their own, which
// the control plane stores: the reconciler uses them only to know that a
// message was closed (caller) or seen (callee) and which kinds its
// sidecars already reported, so that it never repeats them.
//
// Times: a record's At is its sidecar's clock (zero: the now of the call);
// now is the control plane's. The reconciler keeps the latest now it was
// given, so callers racing for its lock may pass slightly older ones.
//
// # Rules
//
// unconfirmed: a message with a SENT and neither a CONFIRMED nor a caller
// OMISSION made (At) within Window of the SENT's At. Both times are the
// caller's clock, so the judgement is exact whatever the upload delays. The
// finding is made by Tick once now passes the SENT's At + Window + Lag
// (Lag: records still in transit), but never earlier than Lag after the
// SENT arrived (a late batch, e.g. resent after a control plane restart)
// nor later than Window + Lag after it arrived (a caller clock running
// ahead). A CONFIRMED made after the window makes the finding at once, in
// Add. No finding if the caller reported any omission for the message (it
// was loud already) or either side reported it unconfirmed. A confirmation
// that arrives after the finding changes nothing: the finding stands, as in
// an append-only ledger; if the confirmation was made within the window
// after all (it took longer than Lag to arrive), it is counted in
// [Stats].LateConfirmations, which tells the operator Lag is too short.
// A caller that dies with messages in flight thus leaves an unconfirmed
// finding for each message whose SENT was uploaded and whose end was not,
// and nothing else: callee records of those messages are consistent, and
// the space's highest seq is simply the last. Note that a message is one
// call: a TCP connection or gRPC stream kept open longer than Window is
// unconfirmed by this rule, as SPEC.md words --window.
//
// sequence_gap: per sequence space (caller instance, destination), a seq
// that no caller record (SENT, CONFIRMED or OMISSION: all carry it) named,
// below the highest one seen, still missing a Window after the record
// above it arrived (late and reordered batches fill holes meanwhile). One
// finding per contiguous missing range, with Seq its first number and the
// range in Detail. Gaps are judged only from the caller's own records: the
// callees of a balanced edge each see a subset of a space, so callee
// records are never used. Retries are new messages with new seqs, which the
// caller records like any other; a restarted caller is a new instance
// with a new space from 1. Choices:
//
//   - The first seq seen of a space is its baseline: seqs below it are
//     never a gap, even if it is above 1. A space first seen at k > 1 is
//     what a control plane sees of every live caller after it restarts with
//     empty memory, and of an edge whose space was forgotten while idle; the
//     reconciler cannot tell those from a new instance whose first k-1
//     records were lost, so it does not guess. A sidecar that drops
//     records reports that itself (audit_gap, record buffer full).
//   - Warm-up: a hole is opened only between two records both made (At)
//     after the reconciler's first now + Warmup. Records a previous control
//     plane acknowledged and lost with its memory were made before it
//     died; a caller's seqs are recorded in nearly but not exactly their
//     order, so without this a restart could show a seq recorded just
//     before it as missing. Warmup < 0 switches this off.
//   - A seq that arrives after its gap was reported changes nothing: the
//     finding stands.
//   - InstanceGone reports the open holes of that instance at once.
//
// duplicate: a message id RECEIVED twice (by the same or two callee
// instances), CONFIRMED twice, or SENT twice. Resent batches are removed
// before records reach the reconciler, so a second record is a real
// duplicate. Detected while the message is tracked and for at least two
// Windows after it settled (the duplicate horizon).
//
// digest_mismatch: the CONFIRMED and the RECEIVED of a message disagree
// about the request or the response digest (whichever arrives first; a
// digest missing on either side is not compared).
//
// misrouted: the RECEIVED of a message comes from a callee whose service
// (the record's Destination) is not the caller's Destination; or a
// CONFIRMED names a DestinationIdentity that is not
// spiffe://<td>/svc/<destination>, or not the identity the space's SENT
// records addressed. Only compared when the identities are present.
//
// audit_gap: a record the reconciler could not track because a bound was
// reached (MaxTracked messages, MaxSpaces spaces, MaxTracked holes). It is
// counted in [Stats] and reported by the next Tick in one finding that
// carries the running totals.
//
// # Invariants
//
//   - At most one finding per (message, kind) while the message is
//     remembered (tracked, or settled within the duplicate horizon), and at
//     most one sequence_gap per seq of a space; findings already reported
//     by a sidecar for a message (same kind) are not repeated.
//   - A clean history gives no finding, however callers balance over
//     callee instances, retry (new messages) or restart (new instances),
//     and in whatever order the two sides' records arrive. Clean: every
//     message is SENT once and then either confirmed (At) within Window of
//     its SENT or failed loudly (a caller OMISSION); it is RECEIVED at most
//     once, by a callee of the service addressed, with the digests the
//     caller confirmed; a caller's closing record reaches Add before the
//     unconfirmed deadline above, the two sides' records within Window +
//     Lag of each other, and every seq of a space below its highest within
//     Window of the record above it. TestSimClean and FuzzReconciler check
//     it on random histories.
//   - Memory is bounded: at most MaxTracked messages, MaxTracked settled
//     ids in each of two generations, MaxTracked holes and MaxSpaces
//     spaces; nothing beyond them is dropped without being counted and
//     reported as audit_gap, except the duplicate horizon (counted in
//     [Stats].RecentDropped).
//   - Findings never depend on [Reconciler.InstanceGone] being called.
//
// # Memory
//
// A message is forgotten as soon as both sides are in (caller: CONFIRMED or
// OMISSION; callee: RECEIVED or OMISSION), or else Window + Lag after its
// last record (or after its unconfirmed finding). Its id then moves to a
// compact set of settled ids (16 bytes and a flag byte), kept in two
// generations of two Windows each, that catches duplicates. A message forgotten with no caller
// record (an orphan: its caller's records never came) is counted in
// [Stats].Orphans, not reported; should a caller record come later, it is
// tracked again. A sequence space is a highest seq plus a short list of
// missing ranges, so its size does not grow with traffic; a space with no
// holes and no record for 12 Windows is forgotten (the next record starts
// a new baseline).
//
// # Concurrency
//
// A Reconciler is safe for concurrent use: each method holds one mutex for
// its whole run. AddBatch applies a whole batch under it.
package reconcile
