// Package receipt issues and verifies delivery receipts.
//
// A receipt proves to the sending sidecar that the authenticated peer at the
// other end of its TLS 1.3 connection saw a given message: its id and
// sequence number, and the length and SHA-256 digest of both the request
// and the response (for TCP: of both directions of the byte stream). It is
// an HMAC-SHA256 keyed with keying material exported from the TLS session
// (RFC 8446 §7.5), so only the two ends of that session can compute it, and
// it cannot be replayed on another connection.
//
// # Flow
//
// Both sidecars call [Key] once per connection. The receiving sidecar,
// having checked the request, fills a [Receipt] with what it got and what it
// answered, and sends [Sign]'s MAC in the Tally-Receipt trailer ([Format]).
// The calling sidecar fills a Receipt with what it sent and what it got,
// and [Verify]s the trailer's MAC ([Parse]) against it. Any difference in
// any field, or a different session, gives [ErrForged].
//
// The package does no I/O and keeps no state; all functions are safe for
// concurrent use.
//
// # Version history
//
// v1 is the only version: the canonical encoding starts with
// "tally-receipt/v1\x00" and the header form with "v1:". A new version
// changes both.
package receipt
