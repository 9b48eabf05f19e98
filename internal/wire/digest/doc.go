// Package digest formats, parses and checks the RFC 9530 integrity fields
// Content-Digest and Repr-Digest.
//
// Tally's sidecars hash every body as it streams (sha-256 by default) and
// send the sum in Content-Digest, as a header when the body is small enough
// to hold and as a trailer otherwise. The receiving side checks the field
// against what it computed over the bytes it actually got.
//
// # Wire format
//
// A field value is an RFC 8941 (updated by RFC 9651) Structured Field
// Dictionary. Each member's key is a hash algorithm from the IANA "Hash
// Algorithms for HTTP Digest Fields" registry and its value is a Byte
// Sequence holding the raw digest in standard base64 between colons:
//
//	Content-Digest: sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:
//	Content-Digest: sha-256=:...=:, sha-512=:...==:
//
// Tally sends exactly one member, sha-256, with canonical padded base64
// (see [Format]). It accepts what RFC 8941 says a recipient must accept:
// any number of members separated by commas and optional whitespace,
// parameters on members (ignored), base64 without '=' padding and with
// non-zero pad bits. Everything else is an error that names the byte offset
// and what was wrong: keys that are not lowercase RFC 8941 keys, values that
// are not byte sequences, characters outside the base64 alphabet, wrong
// padding (such as the doubled '=' misprinted in RFC 9530 B.5, B.6, B.11 and
// C.1), a trailing comma, or a field longer than [MaxFieldLen].
//
// # Algorithms
//
// sha-256 and sha-512 are the active algorithms of RFC 9530. md5, sha,
// unixsum, unixcksum, adler and crc32c are deprecated (RFC 9530 §5): [Check]
// never counts them as the match that makes a field acceptable.
//
// # Concurrency
//
// All functions are safe for concurrent use; none of them retains its
// arguments.
package digest
