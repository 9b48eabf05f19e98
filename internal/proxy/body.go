package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync"
	"time"
)

const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// omission is a detected loss: its kind is one of SPEC.md's omission kinds.
type omission struct {
	kind   string
	detail string
}

func (o *omission) Error() string { return o.kind + ": " + o.detail }

func omitted(kind, detail string) *omission { return &omission{kind: kind, detail: detail} }

// meter hashes and counts the bytes of one body as they pass.
type meter struct {
	h hash.Hash
	n int64
}

func newMeter() meter { return meter{h: sha256.New()} }

func (m *meter) add(p []byte) {
	m.h.Write(p)
	m.n += int64(len(p))
}

func (m *meter) sum() (s [32]byte) {
	m.h.Sum(s[:0])
	return s
}

// checkFunc verifies a finished body: its digest and length. A non-nil
// error means the body must not be delivered as complete.
type checkFunc func(sum [32]byte, n int64) error

// verifyingReader delivers a body while hashing it. With hold set it
// withholds the most recent chunk until the next one arrives, so the tail
// is released only after check passed at the end; without hold (gRPC, whose
// messages must flow) only the end of the stream is withheld. If the source
// fails or check fails, Read returns that error instead of io.EOF, so
// whoever reads never mistakes a partial body for a whole one.
type verifyingReader struct {
	src   io.Reader
	check checkFunc
	hold  bool
	m     meter

	held  []byte // withheld bytes (hold mode)
	out   []byte // released bytes not yet copied out
	spare []byte
	err   error // terminal, for Read: io.EOF after a passed check, else the failure
	done  chan struct{}
	once  sync.Once
	// The outcome, fixed once (by the reader at the end, or by fail).
	final    error
	finalSum [32]byte
	finalN   int64
}

func newVerifyingReader(src io.Reader, m meter, hold bool, check checkFunc) *verifyingReader {
	v := &verifyingReader{src: src, check: check, hold: hold, m: m, done: make(chan struct{})}
	return v
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	for {
		if len(v.out) > 0 {
			n := copy(p, v.out)
			v.out = v.out[n:]
			return n, nil
		}
		if v.err != nil {
			return 0, v.err
		}
		if !v.hold {
			n, err := v.src.Read(p)
			v.m.add(p[:n])
			if err != nil {
				v.finish(err)
				if n > 0 {
					return n, nil
				}
				return 0, v.err
			}
			return n, nil
		}
		if v.spare == nil {
			v.spare = make([]byte, chunkSize)
			v.held = make([]byte, 0, chunkSize)
		}
		n, err := v.src.Read(v.spare[:chunkSize])
		if n > 0 {
			v.m.add(v.spare[:n])
			// Release what was held; hold the new chunk.
			v.out, v.held, v.spare = v.held, v.spare[:n], v.held[:0:chunkSize]
		}
		if err != nil {
			v.finish(err)
			if v.err == io.EOF {
				v.out = append(v.out, v.held...)
				v.held = nil
			}
		}
	}
}

// emptySum is the SHA-256 of no bytes, the digest of every empty body.
var emptySum = sha256.Sum256(nil)

// endedEmpty is the verifyingReader of an empty body, already ended with
// check's verdict (nil check: accepted), without hashing anything.
// The accepted ones are all alike and never change once ended, so they
// share one.
func endedEmpty(check checkFunc) *verifyingReader {
	var err error
	if check != nil {
		err = check(emptySum, 0)
	}
	if err == nil {
		return acceptedEmpty
	}
	v := &verifyingReader{src: http.NoBody, done: make(chan struct{})}
	v.finishWith(err, emptySum)
	return v
}

var acceptedEmpty = func() *verifyingReader {
	v := &verifyingReader{src: http.NoBody, done: make(chan struct{})}
	v.finishWith(io.EOF, emptySum)
	return v
}()

// finish records the end of the source: a clean EOF that passes check
// becomes io.EOF; anything else is the failure.
func (v *verifyingReader) finish(srcErr error) { v.finishWith(srcErr, v.m.sum()) }

func (v *verifyingReader) finishWith(srcErr error, sum [32]byte) {
	if srcErr == io.EOF && v.check != nil {
		srcErr = v.check(sum, v.m.n)
		if srcErr == nil {
			srcErr = io.EOF
		}
	}
	v.err = srcErr
	v.settle(srcErr, sum, v.m.n)
}

// settle fixes the outcome seen by result, once.
func (v *verifyingReader) settle(err error, sum [32]byte, n int64) {
	v.once.Do(func() {
		if err == io.EOF {
			err = nil
		}
		v.final, v.finalSum, v.finalN = err, sum, n
		close(v.done)
	})
}

// result waits until the body ended and returns its digest, length and
// failure (nil when the check passed).
func (v *verifyingReader) result() ([32]byte, int64, error) {
	<-v.done
	return v.finalSum, v.finalN, v.final
}

// failure returns the body's failure if it has ended with one, else nil.
func (v *verifyingReader) failure() error {
	if !v.ended() {
		return nil
	}
	return v.final
}

// resultWithin is result, but gives up after d: a body not finished by then
// counts as cut short.
func (v *verifyingReader) resultWithin(d time.Duration) ([32]byte, int64, error) {
	if v.ended() {
		return v.result()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-v.done:
	case <-t.C:
		v.fail(fmt.Errorf("body not finished %v after the response", d))
	}
	return v.result()
}

// fail ends the body from outside (the stream was abandoned); the reader
// itself may still be running, so only the outcome is settled here.
func (v *verifyingReader) fail(err error) {
	v.settle(err, [32]byte{}, -1)
}

// ended reports whether the body has ended (passed or failed).
func (v *verifyingReader) ended() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// Close settles a body abandoned before its end as failed. The buffers are
// left to the garbage collector: a transport may still be inside Read.
func (v *verifyingReader) Close() error {
	if !v.ended() {
		v.fail(errBodyClosed)
	}
	return nil
}

var errBodyClosed = errors.New("body closed before its end")

// readUpTo reads src into buf until EOF or until more than limit bytes were
// read. It reports whether src ended within limit.
func readUpTo(buf *bytes.Buffer, src io.Reader, limit int64, m *meter) (ended bool, err error) {
	lr := io.LimitedReader{R: src, N: limit + 1}
	for {
		if buf.Available() < 4096 {
			buf.Grow(4096)
		}
		b := buf.AvailableBuffer()
		n, rerr := lr.Read(b[:cap(b)])
		if n > 0 {
			m.add(b[:n])
			buf.Write(b[:n])
		}
		if rerr == io.EOF {
			return lr.N > 0, nil
		}
		if rerr != nil {
			return false, rerr
		}
	}
}
