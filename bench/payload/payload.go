// Package payload holds the fixed response bodies of the benchmark backend, so that
// the backend and the probe that checks a proxy chain agree on every byte.
package payload

// Size is one response size the backend serves at /Name.
type Size struct {
	Name  string // path element, "1k"
	Bytes int    // body length
}

// Sizes are the bodies the backend serves.
var Sizes = []Size{
	{Name: "1k", Bytes: 1 << 10},
	{Name: "64k", Bytes: 64 << 10},
}

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"

// Body returns the body of n bytes: a fixed, position-dependent pattern, so a reordered
// or truncated body does not compare equal.
func Body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[(i*7+i/len(alphabet))%len(alphabet)]
	}
	return b
}
