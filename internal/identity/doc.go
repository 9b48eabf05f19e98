// Package identity is the mesh's certificate authority and workload identity:
// SPIFFE IDs, X.509-SVIDs and their rotation, trust bundles, join tokens, and
// the TLS 1.3 configurations that use them. It does no network I/O: callers
// own the listeners and connections, this package hands them certificates and
// *tls.Config values.
//
// # Identities
//
// Every workload instance of service NAME holds an X.509-SVID whose single URI
// SAN is spiffe://<trustDomain>/svc/NAME (ServiceID, ServiceOf); NAME is a
// lowercase RFC 1123 label (ValidateServiceName). The control plane is
// spiffe://<trustDomain>/control (ControlID). SVIDs carry no DNS or IP SANs:
// peers are authenticated by SPIFFE ID, never by host name.
//
// # Certificate authority
//
// The control plane keeps one CA (LoadOrCreateCA) in its data directory:
//
//	DIR/          mode 0700 when created here
//	DIR/ca.crt    PEM certificate, 0644: self-signed, CA, path length 0,
//	              URI SAN spiffe://<trustDomain>, CN "tally mesh CA", 10 years
//	DIR/ca.key    PEM PKCS #8 ECDSA P-256 key, 0600
//
// It issues leaf SVIDs from CSRs (IssueSVID, chain [leaf]) and the control
// plane's own server certificate (ServerCert, chain [leaf, CA] with the URI SAN
// spiffe://<trustDomain>/control). All keys are ECDSA P-256. The trust bundle is
// the CA certificate alone (CA.Bundle).
//
// # Join token, version 1
//
// A sidecar joins with a one-line token (Token, NewToken, ParseToken) written
// by the control plane to DIR/join-token:
//
//	tally1.<id>.<secret>.<addr>.<fingerprint>
//
//	1  version      "tally1"
//	2  id           8 lowercase hex characters (4 random bytes), public:
//	                `tally token list` shows it, `tally token revoke ID` takes it
//	3  secret       32 random bytes, base64url without padding (43 characters)
//	4  address      the control plane's gRPC address "host:port", base64url
//	                without padding (host: DNS name, IPv4, or [IPv6]; port 1-65535)
//	5  fingerprint  SHA-256 of the CA certificate's DER, base64url without
//	                padding (43 characters)
//
// base64url is RFC 4648 §5 without '=' padding and with zero trailing bits, so
// a token has exactly one text form and ParseToken(t.String()) == t. Parsing
// trims surrounding whitespace and rejects anything else out of form with a
// *TokenError naming the field ("join token: field 4 (address): ..."); errors
// never repeat the secret. The version history is kept at TokenPrefix.
//
// # Joining and rotation
//
// A sidecar dials the token's address with JoinClientTLS(token.CAFingerprint):
// no client certificate; the server must present a chain holding the CA whose
// SHA-256 is the fingerprint and a leaf signed by it with path /control. From
// that CA (PinnedCA, TrustDomainOf) the sidecar learns its trust bundle and
// trust domain, creates a key (NewKey) and a CSR (NewCSR), sends them with the
// token's id and secret (the control plane checks Token.SecretMatches), and
// turns the answer into an SVID with ParseSVID. It then holds the SVID in a
// Source and renews at RenewAt (2/3 of the lifetime), calling Source.Update.
//
// # TLS
//
// All configurations are TLS 1.3 only. MeshServerTLS and MeshClientTLS are
// built with go-spiffe's spiffetls/tlsconfig and read the certificate from
// the Source on every handshake, so rotation needs no restart and never
// touches live connections. Both sides require an SVID that chains to the
// bundle and is a member of the trust domain; which member answered or called
// is the caller's check (PeerID). ControlServerTLS serves the control plane's
// certificate and verifies a client certificate only if one is given, so
// Join works without one; handlers check the caller per call.
//
// # Concurrency
//
// CA is immutable and safe for concurrent use. Source is safe for concurrent
// use; Update swaps the SVID atomically. Token is a value.
package identity
