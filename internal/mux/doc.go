// Package mux is the HTTP/2 used between sidecars: a client connection
// that multiplexes requests as streams, and a server that runs a handler
// per stream, both on a connection already through TLS 1.3 (ALPN h2).
//
// It speaks standard HTTP/2 (RFC 9113: preface, SETTINGS, HEADERS and
// CONTINUATION with HPACK, DATA, trailers, RST_STREAM, WINDOW_UPDATE, PING,
// GOAWAY) through golang.org/x/net/http2's Framer, and exposes requests and
// responses as net/http types, so the proxy's data path is the same code
// whichever HTTP/2 engine carries it. It exists because net/http's HTTP/2
// spends most of a sidecar's CPU at load on per-stream machinery a sidecar
// does not need (server push, priorities, per-frame flushes, a goroutine
// handoff per write); see bench/README.md for the figures.
//
// # Flow control
//
// Each side advertises a 1 MiB stream window and a 16 MiB connection
// window, and refunds consumed bytes in steps of 128 KiB. Senders respect
// the peer's windows and frame size; a peer that overruns a stream window
// gets RST_STREAM(FLOW_CONTROL_ERROR).
//
// # Concurrency
//
// One read loop per connection dispatches frames. Writers from any
// goroutine add frames to the connection's buffer under its write lock and
// wake one flusher goroutine, which yields once before it writes: at load,
// the frames of many streams share one TLS record and one system call
// (profiles showed write(2) at a third of a sidecar's CPU when every
// response was flushed on its own); idle, nothing waits. A client's request
// body is sent by its own goroutine, so streams are full duplex. A server
// handler that returns before the request body ended answers completely,
// then resets the stream with NO_ERROR (RFC 9113 §8.1).
package mux
