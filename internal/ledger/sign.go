package ledger

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

var hasher = rfc6962.DefaultHasher

// rangeFactory builds compact ranges with RFC 6962 node hashing.
var rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}

// emptyRoot is the RFC 6962 root of the empty tree: SHA-256("").
var emptyRoot = sha256.Sum256(nil)

// BatchRoot is the RFC 6962 Merkle root of a batch of leaves taken as a tree
// of its own (leaf 0 is leaves[0]), the value a [BatchStatement] signs.
// The root of no leaves is SHA-256("").
func BatchRoot(leaves [][]byte) [32]byte {
	var b RootBuilder
	for _, l := range leaves {
		b.Add(l)
	}
	return b.Root()
}

// RootBuilder computes [BatchRoot] one leaf at a time, for a caller that
// encodes leaves as it goes. The zero value is an empty batch.
type RootBuilder struct {
	r *compact.Range
	n uint64
}

// Add appends a leaf; b keeps only its hash.
func (b *RootBuilder) Add(leaf []byte) {
	b.addHash(LeafHash(leaf))
}

func (b *RootBuilder) addHash(h [32]byte) {
	if b.r == nil {
		b.r = rangeFactory.NewEmptyRange(0)
	}
	_ = b.r.Append(h[:], nil) // cannot fail on a range that starts at 0
	b.n++
}

// rootOfHashes is the batch root of leaves given by their leaf hashes.
func rootOfHashes(leafHashes [][32]byte) [32]byte {
	var b RootBuilder
	for i := range leafHashes {
		b.addHash(leafHashes[i])
	}
	return b.Root()
}

// Len is the number of leaves added.
func (b *RootBuilder) Len() uint64 { return b.n }

// Root is the batch root of the leaves added so far.
func (b *RootBuilder) Root() [32]byte {
	if b.r == nil {
		return emptyRoot
	}
	return rootOf(b.r)
}

// rootOf is the root hash of a compact range that starts at 0.
func rootOf(r *compact.Range) [32]byte {
	root, _ := r.GetRootHash(nil)
	if root == nil {
		return emptyRoot
	}
	return [32]byte(root)
}

// batchPrefix starts the signed message of a batch; it names the version.
const batchPrefix = "tally-batch/v1\x00"

// BatchStatement is what a sidecar signs about one upload batch: that the
// leaves it derived from that batch's records have this RFC 6962 root.
//
// The statement names the batch (instance and batch sequence number), not
// its place in the log: a sidecar cannot know where the control plane will
// append it. The ledger stores each signature with the log range [start,
// end) it covers, and [Verify] recomputes the root over exactly those
// leaves, so a signature moved to other leaves, or leaves moved under it,
// fail.
type BatchStatement struct {
	InstanceID string    // the signing sidecar's instance (at most MaxString bytes)
	BatchSeq   uint64    // its upload batch number
	SignedAt   time.Time // when it signed; the chain is verified at this time
	Count      uint64    // number of leaves
	Root       [32]byte  // BatchRoot of the leaves
}

// Message is the canonical byte string the signature covers (version 1):
//
//	offset  size  field
//	0       15    "tally-batch/v1\x00"
//	15      2     n = len(InstanceID), uint16 big-endian
//	17      n     InstanceID
//	17+n    8     BatchSeq, uint64 big-endian
//	25+n    8     SignedAt, int64 unix nanoseconds big-endian
//	33+n    8     Count, uint64 big-endian
//	41+n    32    Root
//
// The signature is ECDSA P-256 over SHA-256(Message), ASN.1 DER encoded.
// Version history: v1 is the only version; a new one changes the prefix.
func (s *BatchStatement) Message() []byte {
	b := make([]byte, 0, len(batchPrefix)+2+len(s.InstanceID)+8*3+32)
	b = append(b, batchPrefix...)
	b = appendString(b, s.InstanceID)
	b = binary.BigEndian.AppendUint64(b, s.BatchSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(s.SignedAt.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, s.Count)
	return append(b, s.Root[:]...)
}

// BatchSignature is a sidecar's signature of a [BatchStatement], with the
// certificate chain of the key that made it. The ledger keeps it beside the
// leaves it covers.
type BatchSignature struct {
	BatchStatement
	// Chain is the signer's certificate chain, DER, leaf first (the
	// sidecar's X.509-SVID and any intermediates, without the root).
	Chain [][]byte
	// Signature is ECDSA P-256 with SHA-256 over Message, ASN.1 DER.
	Signature []byte
}

// ErrBadBatchSignature is wrapped by the errors of [VerifyBatchSignature]
// and [BatchSignature.Verify].
var ErrBadBatchSignature = errors.New("signature does not verify")

// SignBatch signs the batch of leaves as the sidecar whose key and
// certificate chain (DER, leaf first) are given. The key must be ECDSA P-256
// and match the leaf certificate. instance and batchSeq name the upload
// batch; signedAt is recorded in the statement.
func SignBatch(key crypto.Signer, chain [][]byte, instance string, batchSeq uint64, signedAt time.Time, leaves [][]byte) (*BatchSignature, error) {
	return SignBatchRoot(key, chain, instance, batchSeq, signedAt, uint64(len(leaves)), BatchRoot(leaves))
}

// SignBatchRoot is [SignBatch] for a batch whose root the caller computed
// (with a [RootBuilder]) over count leaves.
func SignBatchRoot(key crypto.Signer, chain [][]byte, instance string, batchSeq uint64, signedAt time.Time, count uint64, root [32]byte) (*BatchSignature, error) {
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing batch: key is %T, want ECDSA P-256", key.Public())
	}
	if len(chain) == 0 {
		return nil, errors.New("signing batch: empty certificate chain")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("signing batch: parsing leaf certificate: %w", err)
	}
	if lp, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !lp.Equal(pub) {
		return nil, errors.New("signing batch: key does not match the leaf certificate")
	}
	if len(instance) > MaxString {
		return nil, fmt.Errorf("signing batch: instance id of %d bytes, more than %d", len(instance), MaxString)
	}
	s := &BatchSignature{
		BatchStatement: BatchStatement{
			InstanceID: instance,
			BatchSeq:   batchSeq,
			SignedAt:   time.Unix(0, signedAt.UnixNano()),
			Count:      count,
			Root:       root,
		},
		Chain: chain,
	}
	d := sha256.Sum256(s.Message())
	s.Signature, err = key.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing batch: %w", err)
	}
	return s, nil
}

// VerifyBatchSignature checks that sig signs exactly these leaves and that
// its signer's certificate chained to roots at the time of signing (the
// certificate may have expired since). It returns the signer's leaf
// certificate, whose URI SAN names the sidecar's identity.
func VerifyBatchSignature(sig *BatchSignature, leaves [][]byte, roots *x509.CertPool) (*x509.Certificate, error) {
	return VerifyBatchSignatureHashes(sig, LeafHashes(leaves), roots)
}

// VerifyBatchSignatureHashes is [VerifyBatchSignature] for leaves the
// caller has hashed already ([LeafHashes]).
func VerifyBatchSignatureHashes(sig *BatchSignature, leafHashes [][32]byte, roots *x509.CertPool) (*x509.Certificate, error) {
	if got := uint64(len(leafHashes)); got != sig.Count {
		return nil, fmt.Errorf("%w: signed %d leaves, got %d", ErrBadBatchSignature, sig.Count, got)
	}
	if rootOfHashes(leafHashes) != sig.Root {
		return nil, fmt.Errorf("%w: the leaves' root differs from the signed root", ErrBadBatchSignature)
	}
	return sig.Verify(roots)
}

// Verify checks the signature over the statement as it stands (not against
// any leaves: see [VerifyBatchSignature]) and the signer's chain to roots at
// SignedAt. It returns the signer's leaf certificate.
func (s *BatchSignature) Verify(roots *x509.CertPool) (*x509.Certificate, error) {
	if len(s.Chain) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrBadBatchSignature)
	}
	certs := make([]*x509.Certificate, len(s.Chain))
	for i, der := range s.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrBadBatchSignature, i, err)
		}
		certs[i] = c
	}
	if err := checkSignedBy(s, certs[0]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBatchSignature, err)
	}
	if roots == nil {
		return nil, fmt.Errorf("%w: no CA pool to check the signer against", ErrBadBatchSignature)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   s.SignedAt,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: signer certificate at %s: %w", ErrBadBatchSignature, s.SignedAt.UTC().Format(time.RFC3339), err)
	}
	return certs[0], nil
}

// checkSignedBy checks the ECDSA signature of s with cert's key.
func checkSignedBy(s *BatchSignature, cert *x509.Certificate) error {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return errors.New("signer key is not ECDSA P-256")
	}
	d := sha256.Sum256(s.Message())
	if !ecdsa.VerifyASN1(pub, d[:], s.Signature) {
		return errors.New("ECDSA signature is invalid")
	}
	return nil
}

// Checkpoint is the body of a C2SP tlog-checkpoint: the log's origin, its
// size and its RFC 6962 root at that size. Its text form ([Checkpoint.String])
// is
//
//	<origin>\n
//	<size, decimal, no leading zeros>\n
//	<root, standard base64 with padding>\n
//	<extension line>\n ... (optional, each non-empty)
//
// and is the text of a signed note (golang.org/x/mod/sumdb/note) whose one
// signature is the log's Ed25519 key, named like the origin. This package
// writes no extension lines and keeps those it parses.
type Checkpoint struct {
	Origin     string
	Size       uint64
	Root       [32]byte
	Extensions []string // extension lines, without their newlines
}

// String returns the checkpoint body, ending in a newline.
func (c Checkpoint) String() string {
	var b strings.Builder
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root[:]))
	b.WriteByte('\n')
	for _, e := range c.Extensions {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.String()
}

// ErrBadCheckpoint is wrapped by the errors of [ParseCheckpoint] and
// [OpenCheckpoint].
var ErrBadCheckpoint = errors.New("bad checkpoint")

// ParseCheckpoint parses a checkpoint body (the text of the signed note,
// without signatures). It is strict: the origin must be non-empty, the size
// decimal without sign or leading zeros, the root canonical standard base64
// of 32 bytes, every line (extensions too) non-empty and valid UTF-8 without
// control characters, and the text must end with a newline.
func ParseCheckpoint(text string) (Checkpoint, error) {
	bad := func(line int, format string, args ...any) (Checkpoint, error) {
		return Checkpoint{}, fmt.Errorf("%w: line %d: %s", ErrBadCheckpoint, line, fmt.Sprintf(format, args...))
	}
	if !strings.HasSuffix(text, "\n") {
		return Checkpoint{}, fmt.Errorf("%w: does not end with a newline", ErrBadCheckpoint)
	}
	lines := strings.Split(text[:len(text)-1], "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: %d lines, want at least 3", ErrBadCheckpoint, len(lines))
	}
	for i, l := range lines {
		if l == "" {
			return bad(i+1, "empty")
		}
		for _, r := range l {
			if r < 0x20 || r == 0x7f || r == '\uFFFD' {
				return bad(i+1, "control character or invalid UTF-8 %q", r)
			}
		}
	}
	var c Checkpoint
	c.Origin = lines[0]
	s := lines[1]
	if s != "0" && (s[0] == '0' || strings.Trim(s, "0123456789") != "") {
		return bad(2, "size %q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return bad(2, "size %q: %v", s, err)
	}
	c.Size = n
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return bad(3, "root %q is not 32 bytes of standard base64", lines[2])
	}
	c.Root = [32]byte(root)
	if len(lines) > 3 {
		c.Extensions = lines[3:]
	}
	return c, nil
}

// OpenCheckpoint verifies a signed checkpoint with the verifier key (note
// verifier format, "<name>+<hash>+<key>") and parses its body. The origin
// must equal the key's name.
func OpenCheckpoint(signed []byte, verifierKey string) (Checkpoint, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("parsing verifier key: %w", err)
	}
	return openCheckpoint(signed, v)
}

func openCheckpoint(signed []byte, v note.Verifier) (Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: origin %q is not the key's name %q", ErrBadCheckpoint, c.Origin, v.Name())
	}
	return c, nil
}

// signCheckpoint returns the signed note of c.
func signCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.String()}, s)
}

// verifierKeyOf derives the note verifier key of an Ed25519 note signer key
// ("PRIVATE+KEY+<name>+<hash>+<key>").
func verifierKeyOf(skey string) (string, error) {
	if _, err := note.NewSigner(skey); err != nil {
		return "", fmt.Errorf("parsing signer key: %w", err)
	}
	parts := strings.SplitN(skey, "+", 5) // the base64 key may hold '+'
	if len(parts) != 5 {
		return "", errors.New("parsing signer key: malformed")
	}
	k, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(k) != 1+ed25519.SeedSize || k[0] != 1 {
		return "", errors.New("parsing signer key: not an Ed25519 key")
	}
	pub := ed25519.NewKeyFromSeed(k[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// keyName is the name in a note signer or verifier key.
func keyName(key string) string {
	key = strings.TrimPrefix(key, "PRIVATE+KEY+")
	name, _, _ := strings.Cut(key, "+")
	return name
}

// equalHash compares a 32-byte array with a slice.
func equalHash(a [32]byte, b []byte) bool { return bytes.Equal(a[:], b) }
