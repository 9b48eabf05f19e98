package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// chunks is a reader that returns its chunks one Read at a time and then err.
type chunks struct {
	parts [][]byte
	err   error
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, c.err
	}
	n := copy(p, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if len(c.parts[0]) == 0 {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func TestVerifyingReader(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10000) // several chunks
	sum := sha256.Sum256(body)
	pass := func(s [32]byte, n int64) error {
		if s != sum || n != int64(len(body)) {
			return omitted("digest_mismatch", "test")
		}
		return nil
	}
	fail := func([32]byte, int64) error { return omitted("digest_mismatch", "test") }
	for _, tc := range []struct {
		name    string
		src     io.Reader
		hold    bool
		check   checkFunc
		wantErr bool
		// maxOut bounds what may be delivered before the error when the
		// body fails: with hold, the last chunk is never released.
		maxOut int
	}{
		{name: "hold, whole body passes", src: bytes.NewReader(body), hold: true, check: pass},
		{name: "stream, whole body passes", src: bytes.NewReader(body), check: pass},
		{name: "hold, one byte at a time", src: iotest.OneByteReader(bytes.NewReader(body)), hold: true, check: pass},
		{name: "hold, check fails: tail withheld", src: &chunks{parts: [][]byte{body[:40000], body[40000:]}, err: io.EOF}, hold: true, check: fail, wantErr: true, maxOut: len(body) - 1},
		{name: "hold, source breaks: tail withheld", src: &chunks{parts: [][]byte{body[:30000], body[30000:50000]}, err: io.ErrUnexpectedEOF}, hold: true, check: pass, wantErr: true, maxOut: 30000},
		{name: "stream, check fails at the end", src: bytes.NewReader(body), check: fail, wantErr: true, maxOut: len(body)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifyingReader(tc.src, newMeter(), tc.hold, tc.check)
			got, err := io.ReadAll(v)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("read %d bytes and a clean end; want an error", len(got))
				}
				if len(got) > tc.maxOut {
					t.Fatalf("delivered %d bytes before the error; want at most %d (tail withheld)", len(got), tc.maxOut)
				}
				if _, _, rerr := v.result(); rerr == nil {
					t.Fatal("result: no failure recorded")
				}
				return
			}
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("got %d bytes, err %v; want the whole body", len(got), err)
			}
			s, n, rerr := v.result()
			if rerr != nil || s != sum || n != int64(len(body)) {
				t.Fatalf("result: %x %d %v", s, n, rerr)
			}
		})
	}
}

func TestVerifyingReaderCloseSettles(t *testing.T) {
	v := newVerifyingReader(&chunks{parts: [][]byte{[]byte("abc")}, err: io.EOF}, newMeter(), true, func([32]byte, int64) error { return nil })
	v.Close()
	if _, _, err := v.result(); err == nil {
		t.Fatal("a body closed before its end must count as failed")
	}
}

func TestAsOmission(t *testing.T) {
	if om := asOmission(errors.New("x"), 0); om.kind != "unconfirmed" {
		t.Errorf("nothing arrived: got %s, want unconfirmed", om.kind)
	}
	if om := asOmission(errors.New("x"), 10); om.kind != "truncated" {
		t.Errorf("part arrived: got %s, want truncated", om.kind)
	}
	if om := asOmission(omitted("misrouted", "d"), 10); om.kind != "misrouted" {
		t.Errorf("an omission passes as is: got %s", om.kind)
	}
}

func TestEndedEmptyGivesCheckTheEmptyDigest(t *testing.T) {
	var got [32]byte
	v := endedEmpty(func(sum [32]byte, n int64) error {
		got = sum
		if n != 0 {
			t.Errorf("check saw %d bytes", n)
		}
		return omitted("digest_mismatch", "refused")
	})
	if _, _, err := v.result(); err == nil || got != sha256.Sum256(nil) {
		t.Fatalf("result err %v, check saw %x: want the refusal over the empty digest", err, got)
	}
	if n, err := v.Read(make([]byte, 1)); n != 0 || err == nil || err == io.EOF {
		t.Errorf("Read = %d, %v: want the refusal, never a clean EOF", n, err)
	}
	if sum, n, err := endedEmpty(nil).result(); err != nil || n != 0 || sum != sha256.Sum256(nil) {
		t.Errorf("nil check: %x %d %v", sum, n, err)
	}
}
