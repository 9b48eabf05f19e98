// Package control is tally's control plane: the mesh certificate authority,
// the sidecar API (gRPC service tally.v1.Mesh), record ingestion, and the HTTP
// side: REST API, Server-Sent Events, dashboard, /metrics, /healthz and
// /readyz.
//
// A Server is built by New from a Config and served by Run:
//
//	srv, err := control.New(control.Config{DataDir: dir, Logger: log, Registry: reg})
//	...
//	err = srv.Run(ctx) // until ctx ends
//
// # Data directory
//
// DataDir (mode 0700) holds ca.crt and ca.key (see identity.LoadOrCreateCA),
// join-token (the default join token, one line, 0600), admin-token (the
// bearer token of the writing REST endpoints, 0600), tokens.json (every join
// token's id, SHA-256 of its secret, expiry and revocation; 0600) and
// http-addr (the bound HTTP address, one line). join-token and http-addr are
// written after both listeners are bound, atomically, so with port 0 they
// carry the real ports; http-addr is removed by New, so it never names a
// previous run's address. Deleting join-token and restarting replaces the
// default join token (the old one is revoked).
//
// # Sidecar API
//
// Join is the only call without a client certificate: it needs a live join
// token and a CSR naming spiffe://<td>/svc/<service>. Renew, Watch and Report
// take the caller's identity and service from its verified X.509-SVID, never
// from the request: a record whose reporting side ("caller": source,
// "callee": destination) is not the uploader is refused as forged. Watch
// registers the instance for as long as its stream is open and sends a full
// Snapshot at once and after every change, coalesced to at most one per 50
// ms. Report acknowledges every batch once applied; batches are idempotent by
// (service, instance_id, batch_seq), so a resent batch is acknowledged again
// but counted once. Invalid records are counted in
// tally_records_rejected_total{reason} and logged, and the rest of their batch
// is applied.
//
// # Accounting
//
// Per edge (source, destination): sent, confirmed, received, omitted (the
// caller's omission reports) and in_flight = sent - confirmed - omitted (never
// below zero), request bytes sent and confirmed, and latency quantiles from
// the CONFIRMED records. Every OMISSION record is an event; two reports of
// one (message_id, kind), such as caller and callee each seeing the same
// loss, are one event whose detail carries both. At most 100,000 events are
// kept; older ones are dropped and counted. All of it lives in memory behind
// the Store interface, which a durable ledger will implement.
//
// # HTTP API
//
// Reading endpoints are open; PUT/DELETE /api/v1/faults/{kind} and
// /api/v1/tokens need "Authorization: Bearer <admin-token>". Lists are
// {"items": [...], "next": "CURSOR"} with limit (default 100, at most 1000)
// and an opaque cursor; errors are {"error": "..."} with a 4xx/5xx status.
//
// # Concurrency
//
// Server methods are safe for concurrent use. The event stream never slows
// ingestion: each subscriber has a bounded queue (observe.Bus) and a
// subscriber that falls behind is disconnected and counted; a browser's
// EventSource reconnects with Last-Event-ID and is sent the omissions it
// missed.
package control
