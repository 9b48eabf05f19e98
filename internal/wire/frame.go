package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// FrameType is the first byte of a TCP frame. The frame layout is in the
// package documentation:
//
//	frame = type:uint8 | length:uint32 big-endian | payload[length]
type FrameType uint8

// Frame types of framing version 1.
const (
	// FrameData: payload = 1..maxData raw bytes of the stream.
	FrameData FrameType = 0x01
	// FrameFin: payload = count:uint64 BE | sha256:32 (40 bytes). The
	// sender closed its direction after count bytes with that digest.
	FrameFin FrameType = 0x02
	// FrameFinAck: payload = count:uint64 BE | sha256:32 | mac:32 (72
	// bytes). The receiver got exactly count bytes with that digest; mac is
	// the receipt over it.
	FrameFinAck FrameType = 0x03
	// FrameReset: payload = 0..MaxReason bytes of UTF-8 reason. The sender
	// aborts its direction.
	FrameReset FrameType = 0x04
)

// Frame sizes.
const (
	// FrameHeaderLen is the length of type and length fields.
	FrameHeaderLen = 5
	// MaxData is the default limit of a DATA payload, used by
	// NewFrameReader when it is given maxData <= 0.
	MaxData = 64 << 10
	// MaxReason is the longest RESET reason in bytes.
	MaxReason = 256

	finLen    = 8 + 32      // FIN payload
	finAckLen = 8 + 32 + 32 // FIN_ACK payload
)

var (
	// ErrBadFrame is wrapped by errors about frames that break the
	// framing rules: unknown type, a length the type does not allow, a
	// reason that is not UTF-8.
	ErrBadFrame = errors.New("bad frame")
	// ErrFrameTooLarge is wrapped by errors about DATA frames longer than
	// the reader's limit.
	ErrFrameTooLarge = errors.New("frame too large")
)

func (t FrameType) String() string {
	switch t {
	case FrameData:
		return "DATA"
	case FrameFin:
		return "FIN"
	case FrameFinAck:
		return "FIN_ACK"
	case FrameReset:
		return "RESET"
	}
	return "0x" + strconv.FormatUint(uint64(t)|0x100, 16)[1:]
}

// Frame is one decoded TCP frame. Which fields mean something depends on
// Type: Data for DATA (the bytes) and RESET (the reason); Count and Digest
// for FIN; Count, Digest and MAC for FIN_ACK.
type Frame struct {
	Type   FrameType
	Data   []byte
	Count  uint64
	Digest [32]byte
	MAC    [32]byte
}

// AppendFrame appends the encoding of f to dst. It does not check f: a DATA
// frame must hold 1 to the peer's maxData bytes and a RESET reason at most
// MaxReason bytes of UTF-8, or the peer's FrameReader refuses it. A Type
// other than the four known ones is encoded with Data as its payload, which
// is useful only to tests.
func AppendFrame(dst []byte, f Frame) []byte {
	switch f.Type {
	case FrameFin:
		dst = appendHeader(dst, f.Type, finLen)
		dst = binary.BigEndian.AppendUint64(dst, f.Count)
		return append(dst, f.Digest[:]...)
	case FrameFinAck:
		dst = appendHeader(dst, f.Type, finAckLen)
		dst = binary.BigEndian.AppendUint64(dst, f.Count)
		dst = append(dst, f.Digest[:]...)
		return append(dst, f.MAC[:]...)
	default:
		dst = appendHeader(dst, f.Type, uint32(len(f.Data)))
		return append(dst, f.Data...)
	}
}

func appendHeader(dst []byte, t FrameType, n uint32) []byte {
	return binary.BigEndian.AppendUint32(append(dst, byte(t)), n)
}

// frameError is a framing failure at a byte offset of the stream.
type frameError struct {
	off int64
	msg string
	err error // ErrBadFrame, ErrFrameTooLarge or io.ErrUnexpectedEOF
}

func (e *frameError) Error() string {
	return "wire: frame at offset " + strconv.FormatInt(e.off, 10) + ": " + e.msg
}

func (e *frameError) Unwrap() error { return e.err }

// FrameReader reads frames from a stream. It buffers, so it may read past
// the frame it returns; nothing else should read the stream. It is not safe
// for concurrent use.
type FrameReader struct {
	r       io.Reader
	maxData int

	buf        []byte
	rpos, wpos int   // buffered, unread bytes are buf[rpos:wpos]
	off        int64 // stream offset of buf[rpos]
	readErr    error // error of the last Read, returned once buffered bytes run out
	err        error // sticky error of ReadFrame
}

// NewFrameReader returns a FrameReader of r. DATA payloads longer than
// maxData bytes are refused with ErrFrameTooLarge; maxData <= 0 means
// MaxData.
func NewFrameReader(r io.Reader, maxData int) *FrameReader {
	if maxData <= 0 {
		maxData = MaxData
	}
	return &FrameReader{r: r, maxData: maxData}
}

// ReadFrame reads the next frame. The Data slice of the frame it returns
// is valid until the next call.
//
// ReadFrame returns io.EOF only when the stream ends at a frame boundary;
// a stream that ends inside a frame gives an error wrapping
// io.ErrUnexpectedEOF. Frames that break the rules give an error wrapping
// ErrBadFrame or ErrFrameTooLarge. Errors name the frame's byte offset in
// the stream and what was wrong. After an error, every later call returns
// the same error.
func (fr *FrameReader) ReadFrame() (Frame, error) {
	if fr.err != nil {
		return Frame{}, fr.err
	}
	f, err := fr.readFrame()
	if err != nil {
		fr.err = err
	}
	return f, err
}

func (fr *FrameReader) readFrame() (Frame, error) {
	start := fr.off
	if err := fr.fill(FrameHeaderLen); err != nil {
		if err != io.EOF {
			return Frame{}, fmt.Errorf("wire: frame at offset %d: reading header: %w", start, err)
		}
		if n := fr.wpos - fr.rpos; n > 0 {
			return Frame{}, &frameError{start, fmt.Sprintf("stream ends in frame header (%d of %d bytes)", n, FrameHeaderLen), io.ErrUnexpectedEOF}
		}
		return Frame{}, io.EOF
	}
	hdr := fr.buf[fr.rpos : fr.rpos+FrameHeaderLen]
	t := FrameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])

	switch t {
	case FrameData:
		if n == 0 {
			return Frame{}, &frameError{start, "empty DATA frame", ErrBadFrame}
		}
		if uint64(n) > uint64(fr.maxData) {
			return Frame{}, &frameError{start, fmt.Sprintf("DATA length %d exceeds limit %d", n, fr.maxData), ErrFrameTooLarge}
		}
	case FrameFin:
		if n != finLen {
			return Frame{}, &frameError{start, fmt.Sprintf("bad length %d for FIN, want %d", n, finLen), ErrBadFrame}
		}
	case FrameFinAck:
		if n != finAckLen {
			return Frame{}, &frameError{start, fmt.Sprintf("bad length %d for FIN_ACK, want %d", n, finAckLen), ErrBadFrame}
		}
	case FrameReset:
		if n > MaxReason {
			return Frame{}, &frameError{start, fmt.Sprintf("RESET reason of %d bytes exceeds %d", n, MaxReason), ErrBadFrame}
		}
	default:
		return Frame{}, &frameError{start, fmt.Sprintf("unknown type 0x%02x", uint8(t)), ErrBadFrame}
	}

	total := FrameHeaderLen + int(n)
	if err := fr.fill(total); err != nil {
		if err != io.EOF {
			return Frame{}, fmt.Errorf("wire: frame at offset %d: reading %v payload: %w", start, t, err)
		}
		got := fr.wpos - fr.rpos - FrameHeaderLen
		return Frame{}, &frameError{start, fmt.Sprintf("stream ends in %v payload (%d of %d bytes)", t, got, n), io.ErrUnexpectedEOF}
	}
	p := fr.buf[fr.rpos+FrameHeaderLen : fr.rpos+total]

	f := Frame{Type: t}
	switch t {
	case FrameData:
		f.Data = p
	case FrameFin, FrameFinAck:
		f.Count = binary.BigEndian.Uint64(p)
		copy(f.Digest[:], p[8:])
		if t == FrameFinAck {
			copy(f.MAC[:], p[40:])
		}
	case FrameReset:
		if !utf8.Valid(p) {
			return Frame{}, &frameError{start, "RESET reason is not valid UTF-8", ErrBadFrame}
		}
		f.Data = p
	}
	fr.rpos += total
	fr.off += int64(total)
	return f, nil
}

// minBuf is the size of a FrameReader's first buffer. It doubles as needed
// up to the largest frame the reader accepts.
const minBuf = 4 << 10

// fill reads until at least n bytes are buffered. It returns io.EOF if the
// stream ends first, with what it got still buffered.
func (fr *FrameReader) fill(n int) error {
	if fr.wpos-fr.rpos >= n {
		return nil
	}
	if fr.rpos+n > len(fr.buf) {
		fr.makeRoom(n)
	}
	empty := 0
	for fr.wpos-fr.rpos < n {
		if fr.readErr != nil {
			return fr.readErr
		}
		m, err := fr.r.Read(fr.buf[fr.wpos:])
		if m < 0 || m > len(fr.buf)-fr.wpos {
			return errors.New("wire: reader returned an invalid count")
		}
		fr.wpos += m
		if err != nil {
			fr.readErr = err
			continue
		}
		if m == 0 {
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// makeRoom moves the buffered bytes to the front of the buffer, first
// growing it if it is shorter than n.
func (fr *FrameReader) makeRoom(n int) {
	buffered := fr.buf[fr.rpos:fr.wpos]
	if n > len(fr.buf) {
		largest := FrameHeaderLen + max(fr.maxData, MaxReason, finAckLen)
		size := min(max(n, minBuf, 2*len(fr.buf)), largest)
		nb := make([]byte, size)
		copy(nb, buffered)
		fr.buf = nb
	} else {
		copy(fr.buf, buffered)
	}
	fr.wpos -= fr.rpos
	fr.rpos = 0
}
