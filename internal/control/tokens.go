package control

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tally-mesh/tally/internal/identity"
)

// Files of the data directory besides the CA's.
const (
	JoinTokenFile  = "join-token"  // the default join token, one line; 0600
	AdminTokenFile = "admin-token" // bearer token of the writing REST endpoints; 0600
	TokensFile     = "tokens.json" // every join token's id, secret hash and state; 0600
	HTTPAddrFile   = "http-addr"   // the bound --http-addr, one line
)

// Errors of join token checks. Their text is what a refused sidecar sees.
var (
	ErrTokenUnknown  = errors.New("join token unknown or secret mismatch")
	ErrTokenExpired  = errors.New("join token expired")
	ErrTokenRevoked  = errors.New("join token revoked")
	ErrTokenNotFound = errors.New("no such join token")
)

// tokensVersion is the version of the tokens.json format:
//
//	{"version": 1, "tokens": [{"id": "0a1b2c3d", "secret_sha256": "<64 hex>",
//	  "created_at": RFC 3339, "expires_at": RFC 3339 or absent (never),
//	  "revoked": bool, "revoked_at": RFC 3339 or absent, "default": bool}]}
//
// Only a SHA-256 of each secret is kept; the default token's secret lives in
// the join-token file, which is how the control plane hands it to operators.
const tokensVersion = 1

type tokensFile struct {
	Version int           `json:"version"`
	Tokens  []storedToken `json:"tokens"`
}

type storedToken struct {
	ID           string     `json:"id"`
	SecretSHA256 string     `json:"secret_sha256"`
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	Revoked      bool       `json:"revoked"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	Default      bool       `json:"default,omitempty"`
}

// TokenInfo is a join token as GET /api/v1/tokens lists it. ExpiresAt is nil
// for a token that never expires (the default join token).
type TokenInfo struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	Revoked   bool       `json:"revoked"`
	Default   bool       `json:"default"`
}

// tokenStore holds the join tokens and persists them in tokens.json. It is
// safe for concurrent use.
type tokenStore struct {
	path string

	mu     sync.Mutex // guards following
	tokens []storedToken
	// defaultSecret is the default token's secret, recovered from the
	// join-token file; empty until one is known.
	defaultSecret string
}

// loadTokens reads dir/tokens.json (absent: no tokens) and recovers the
// default token's secret from dir/join-token if that file still holds the
// default token.
func loadTokens(dir string) (*tokenStore, error) {
	ts := &tokenStore{path: filepath.Join(dir, TokensFile)}
	b, err := os.ReadFile(ts.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", ts.path, err)
	default:
		var f tokensFile
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", ts.path, err)
		}
		if f.Version != tokensVersion {
			return nil, fmt.Errorf("decoding %s: version %d, want %d", ts.path, f.Version, tokensVersion)
		}
		for i, t := range f.Tokens {
			if len(t.ID) != 8 || !isLowerHex(t.ID) || len(t.SecretSHA256) != 64 || !isLowerHex(t.SecretSHA256) {
				return nil, fmt.Errorf("decoding %s: token %d: malformed id or secret_sha256", ts.path, i)
			}
		}
		ts.tokens = f.Tokens
	}
	jp := filepath.Join(dir, JoinTokenFile)
	jb, err := os.ReadFile(jp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", jp, err)
	default:
		// A join-token file that does not parse or does not match is
		// replaced by a fresh default token (see ensureDefault).
		if tok, err := identity.ParseToken(string(jb)); err == nil {
			if d := ts.defaultToken(); d != nil && d.ID == tok.ID && hashMatches(d.SecretSHA256, tok.Secret) {
				ts.defaultSecret = tok.Secret
			}
		}
	}
	return ts, nil
}

// defaultToken returns the default token's entry, nil if none.
// ts.mu must be held or ts not yet shared.
func (ts *tokenStore) defaultToken() *storedToken {
	for i := range ts.tokens {
		if ts.tokens[i].Default {
			return &ts.tokens[i]
		}
	}
	return nil
}

// ensureDefault returns the default join token for the control plane at addr:
// the existing one if its secret is known, else a new one, which replaces
// (revokes) an old default whose secret was lost with its file.
func (ts *tokenStore) ensureDefault(addr string, fp [32]byte, now time.Time) (identity.Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if d := ts.defaultToken(); d != nil && ts.defaultSecret != "" {
		return identity.Token{ID: d.ID, Secret: ts.defaultSecret, Addr: addr, CAFingerprint: fp}, nil
	}
	tok, err := ts.newTokenLocked(addr, fp)
	if err != nil {
		return identity.Token{}, err
	}
	prev := slices.Clone(ts.tokens)
	if d := ts.defaultToken(); d != nil {
		d.Default = false
		if !d.Revoked {
			d.Revoked, d.RevokedAt = true, &now
		}
	}
	ts.tokens = append(ts.tokens, storedToken{
		ID:           tok.ID,
		SecretSHA256: hashSecret(tok.Secret),
		CreatedAt:    now.UTC(),
		Default:      true,
	})
	if err := ts.saveLocked(); err != nil {
		ts.tokens = prev
		return identity.Token{}, err
	}
	ts.defaultSecret = tok.Secret
	return tok, nil
}

// create adds a join token for the control plane at addr that expires after
// ttl.
func (ts *tokenStore) create(addr string, fp [32]byte, ttl time.Duration, now time.Time) (identity.Token, TokenInfo, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	tok, err := ts.newTokenLocked(addr, fp)
	if err != nil {
		return identity.Token{}, TokenInfo{}, err
	}
	exp := now.Add(ttl).UTC()
	st := storedToken{
		ID:           tok.ID,
		SecretSHA256: hashSecret(tok.Secret),
		CreatedAt:    now.UTC(),
		ExpiresAt:    &exp,
	}
	ts.tokens = append(ts.tokens, st)
	if err := ts.saveLocked(); err != nil {
		ts.tokens = ts.tokens[:len(ts.tokens)-1]
		return identity.Token{}, TokenInfo{}, err
	}
	return tok, st.info(), nil
}

// newTokenLocked returns a token whose id no stored token has.
func (ts *tokenStore) newTokenLocked(addr string, fp [32]byte) (identity.Token, error) {
	for range 16 {
		tok, err := identity.NewToken(addr, fp)
		if err != nil {
			return identity.Token{}, err
		}
		if !slices.ContainsFunc(ts.tokens, func(t storedToken) bool { return t.ID == tok.ID }) {
			return tok, nil
		}
	}
	return identity.Token{}, errors.New("creating join token: no free id after 16 tries")
}

// revoke revokes the token with id; revoking a revoked token is not an error.
func (ts *tokenStore) revoke(id string, now time.Time) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	i := slices.IndexFunc(ts.tokens, func(t storedToken) bool { return t.ID == id })
	if i < 0 {
		return ErrTokenNotFound
	}
	t := &ts.tokens[i]
	if t.Revoked {
		return nil
	}
	at := now.UTC()
	t.Revoked, t.RevokedAt = true, &at
	if err := ts.saveLocked(); err != nil {
		t.Revoked, t.RevokedAt = false, nil
		return err
	}
	return nil
}

// check reports whether id and secret name a live token; the error is one of
// ErrTokenUnknown, ErrTokenExpired and ErrTokenRevoked, possibly wrapped.
// Expiry and revocation are only told to a caller that knows the secret.
func (ts *tokenStore) check(id, secret string, now time.Time) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	i := slices.IndexFunc(ts.tokens, func(t storedToken) bool { return t.ID == id })
	if i < 0 || !hashMatches(ts.tokens[i].SecretSHA256, secret) {
		return ErrTokenUnknown
	}
	t := ts.tokens[i]
	switch {
	case t.Revoked:
		return fmt.Errorf("%w: token %s was revoked at %s", ErrTokenRevoked, t.ID, t.RevokedAt.Format(time.RFC3339))
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return fmt.Errorf("%w: token %s expired at %s", ErrTokenExpired, t.ID, t.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// list returns every token, oldest first.
func (ts *tokenStore) list() []TokenInfo {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]TokenInfo, len(ts.tokens))
	for i, t := range ts.tokens {
		out[i] = t.info()
	}
	return out
}

func (t storedToken) info() TokenInfo {
	return TokenInfo{ID: t.ID, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Revoked: t.Revoked, Default: t.Default}
}

func (ts *tokenStore) saveLocked() error {
	b, err := json.MarshalIndent(tokensFile{Version: tokensVersion, Tokens: ts.tokens}, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", ts.path, err)
	}
	return writeFileAtomic(ts.path, append(b, '\n'))
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// hashMatches reports in constant time whether secret hashes to want (hex).
func hashMatches(want, secret string) bool {
	if secret == "" {
		return false
	}
	got := hashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// loadOrCreateAdminToken returns the admin token of dir/admin-token, creating
// it (32 random bytes, base64url without padding, mode 0600) if absent.
func loadOrCreateAdminToken(dir string) (string, error) {
	p := filepath.Join(dir, AdminTokenFile)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return "", fmt.Errorf("reading %s: token is %d characters, want at least 16; remove the file to create a new one", p, len(tok))
		}
		return tok, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("creating admin token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := writeFileAtomic(p, []byte(tok+"\n")); err != nil {
		return "", err
	}
	return tok, nil
}

// writeFileAtomic writes data to path with mode 0600 through a temporary file
// in the same directory and a rename, so readers see the old or the new
// content, never a part.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
