// Package wire defines what crosses between two Tally sidecars: the Tally-*
// headers and trailers of HTTP and gRPC messages, message and instance ids,
// per-edge sequence numbers, service names, and the framing of TCP streams.
//
// It does no I/O of its own: parsers take strings, and [FrameReader] reads
// from whatever io.Reader the caller hands it. The RFC 9530 Content-Digest
// field has its own package, wire/digest; receipts are in internal/receipt.
//
// # HTTP and gRPC
//
// Sidecars talk HTTP/2 over mutual TLS 1.3. A request between them carries
// [HeaderMessageID], [HeaderSeq], [HeaderInstance], [HeaderDestination] and
// [HeaderProtocol]; bodies carry an RFC 9530 [HeaderContentDigest] and a
// [HeaderLength] trailer; the receiving sidecar answers with
// [HeaderRequestDigest] and [HeaderReceipt] trailers. A caller whose message
// could not be delivered whole gets a 502 with [HeaderOmission]. Each
// constant documents its value's format; docs/PROTOCOL.md has the flow.
//
// # TCP framing
//
// A raw TCP connection travels between sidecars as HTTP/2 stream bodies,
// one stream per direction. Each body is a sequence of frames:
//
//	frame   = type:uint8 | length:uint32 big-endian | payload[length]
//
//	type 0x01 DATA     payload = raw bytes, 1..maxData (default MaxData, 64 KiB)
//	type 0x02 FIN      payload = count:uint64 BE | sha256:32 bytes             (length 40)
//	type 0x03 FIN_ACK  payload = count:uint64 BE | sha256:32 | mac:32          (length 72)
//	type 0x04 RESET    payload = reason, valid UTF-8, 0..256 bytes
//
// Byte offsets within a frame:
//
//	0      type
//	1..4   length, big-endian, counting payload bytes only
//	5..    payload
//
// DATA carries the next bytes of the direction's stream; a zero-length DATA
// frame is an error. FIN says the sender closed its direction after count
// bytes whose SHA-256 is sha256; it ends the direction's data. FIN_ACK,
// sent on the opposite direction, confirms that the receiver got exactly
// count bytes with that digest; mac is the delivery receipt over it (see
// internal/receipt). RESET aborts the direction; the reason is for logs.
// Frames of any other type, or with a length their type does not allow,
// are errors: the reader stops at the first one and names its byte offset
// in the stream.
//
// Version history: version 1 (this one) is the only version; streams that
// carry it are announced with [HeaderProtocol] "tcp".
//
// # Concurrency
//
// The functions are safe for concurrent use. A [FrameReader] is not: one
// goroutine reads a stream.
package wire
