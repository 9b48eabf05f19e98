package wire

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

func fin(count uint64, body string) Frame {
	return Frame{Type: FrameFin, Count: count, Digest: sha256.Sum256([]byte(body))}
}

func finAck(count uint64, body string) Frame {
	f := fin(count, body)
	f.Type = FrameFinAck
	for i := range f.MAC {
		f.MAC[i] = byte(i)
	}
	return f
}

// concat encodes frames back to back.
func concat(frames ...Frame) []byte {
	var b []byte
	for _, f := range frames {
		b = AppendFrame(b, f)
	}
	return b
}

func TestAppendFrameLayout(t *testing.T) {
	digest := sha256.Sum256([]byte("hello"))
	var mac [32]byte
	mac[0], mac[31] = 0xaa, 0xbb
	tests := []struct {
		name string
		f    Frame
		want []byte
	}{
		{name: "data", f: Frame{Type: FrameData, Data: []byte("hi")}, want: []byte{0x01, 0, 0, 0, 2, 'h', 'i'}},
		{
			name: "fin",
			f:    Frame{Type: FrameFin, Count: 5, Digest: digest},
			want: append([]byte{0x02, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 5}, digest[:]...),
		},
		{
			name: "fin ack",
			f:    Frame{Type: FrameFinAck, Count: 1 << 40, Digest: digest, MAC: mac},
			want: append(append([]byte{0x03, 0, 0, 0, 72, 0, 0, 1, 0, 0, 0, 0, 0}, digest[:]...), mac[:]...),
		},
		{name: "reset", f: Frame{Type: FrameReset, Data: []byte("bye")}, want: []byte{0x04, 0, 0, 0, 3, 'b', 'y', 'e'}},
		{name: "reset without reason", f: Frame{Type: FrameReset}, want: []byte{0x04, 0, 0, 0, 0}},
		{name: "fin ignores data", f: Frame{Type: FrameFin, Data: []byte("x")}, want: append([]byte{0x02, 0, 0, 0, 40}, make([]byte, 40)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendFrame([]byte{0xff}, tt.f); !bytes.Equal(got, append([]byte{0xff}, tt.want...)) {
				t.Errorf("AppendFrame() = %x, want ff%x", got, tt.want)
			}
		})
	}
}

// frameTests are streams and what a FrameReader with limit 16 makes of
// them. wantErr is empty for a stream that ends cleanly with io.EOF.
var frameTests = []struct {
	name      string
	stream    []byte
	want      []Frame
	wantErr   string
	wantErrIs error
}{
	{name: "empty stream"},
	{
		name:   "data then fin",
		stream: concat(Frame{Type: FrameData, Data: []byte("hello ")}, Frame{Type: FrameData, Data: []byte("world")}, fin(11, "hello world")),
		want:   []Frame{{Type: FrameData, Data: []byte("hello ")}, {Type: FrameData, Data: []byte("world")}, fin(11, "hello world")},
	},
	{
		name:   "fin ack",
		stream: concat(finAck(0, "")),
		want:   []Frame{finAck(0, "")},
	},
	{
		name:   "reset",
		stream: concat(Frame{Type: FrameData, Data: []byte("x")}, Frame{Type: FrameReset, Data: []byte("upstream died ✝")}),
		want:   []Frame{{Type: FrameData, Data: []byte("x")}, {Type: FrameReset, Data: []byte("upstream died ✝")}},
	},
	{
		name:   "empty reset",
		stream: concat(Frame{Type: FrameReset}),
		want:   []Frame{{Type: FrameReset, Data: []byte{}}},
	},
	{
		name:   "data at limit",
		stream: concat(Frame{Type: FrameData, Data: []byte("0123456789abcdef")}),
		want:   []Frame{{Type: FrameData, Data: []byte("0123456789abcdef")}},
	},
	{
		name:      "data over limit",
		stream:    concat(Frame{Type: FrameData, Data: []byte("x")}, Frame{Type: FrameData, Data: []byte("0123456789abcdefg")}),
		want:      []Frame{{Type: FrameData, Data: []byte("x")}},
		wantErr:   "wire: frame at offset 6: DATA length 17 exceeds limit 16",
		wantErrIs: ErrFrameTooLarge,
	},
	{
		name:      "huge length is refused before reading",
		stream:    []byte{0x01, 0xff, 0xff, 0xff, 0xff},
		wantErr:   "wire: frame at offset 0: DATA length 4294967295 exceeds limit 16",
		wantErrIs: ErrFrameTooLarge,
	},
	{
		name:      "empty data",
		stream:    []byte{0x01, 0, 0, 0, 0},
		wantErr:   "wire: frame at offset 0: empty DATA frame",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "unknown type",
		stream:    concat(fin(0, ""), Frame{Type: 7, Data: []byte("?")}),
		want:      []Frame{fin(0, "")},
		wantErr:   "wire: frame at offset 45: unknown type 0x07",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "type zero",
		stream:    []byte{0, 0, 0, 0, 0},
		wantErr:   "unknown type 0x00",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "short fin",
		stream:    append([]byte{0x02, 0, 0, 0, 39}, make([]byte, 39)...),
		wantErr:   "wire: frame at offset 0: bad length 39 for FIN, want 40",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "fin ack with fin length",
		stream:    append([]byte{0x03, 0, 0, 0, 40}, make([]byte, 40)...),
		wantErr:   "bad length 40 for FIN_ACK, want 72",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "long reset",
		stream:    concat(Frame{Type: FrameReset, Data: bytes.Repeat([]byte("x"), 257)}),
		wantErr:   "RESET reason of 257 bytes exceeds 256",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "reset not utf-8",
		stream:    concat(Frame{Type: FrameReset, Data: []byte("bad \xff")}),
		wantErr:   "wire: frame at offset 0: RESET reason is not valid UTF-8",
		wantErrIs: ErrBadFrame,
	},
	{
		name:      "truncated header",
		stream:    append(concat(Frame{Type: FrameData, Data: []byte("ab")}), 0x01, 0, 0),
		want:      []Frame{{Type: FrameData, Data: []byte("ab")}},
		wantErr:   "wire: frame at offset 7: stream ends in frame header (3 of 5 bytes)",
		wantErrIs: io.ErrUnexpectedEOF,
	},
	{
		name:      "truncated payload",
		stream:    concat(fin(3, "abc"))[:20],
		wantErr:   "wire: frame at offset 0: stream ends in FIN payload (15 of 40 bytes)",
		wantErrIs: io.ErrUnexpectedEOF,
	},
}

// readAll reads frames until an error, copying each frame's Data.
func readAll(r io.Reader, maxData int) ([]Frame, error) {
	fr := NewFrameReader(r, maxData)
	var frames []Frame
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if again, err2 := fr.ReadFrame(); err2 != err || !reflect.DeepEqual(again, Frame{}) {
				return frames, fmt.Errorf("error not sticky: first %v, then %v", err, err2)
			}
			return frames, err
		}
		if f.Data != nil {
			f.Data = bytes.Clone(f.Data)
		}
		frames = append(frames, f)
	}
}

// readers wraps a stream in the readers every test feeds frames through.
var readers = []struct {
	name string
	wrap func([]byte) io.Reader
}{
	{name: "whole", wrap: func(b []byte) io.Reader { return bytes.NewReader(b) }},
	{name: "byte by byte", wrap: func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	{name: "half", wrap: func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
	{name: "data with EOF", wrap: func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
}

func TestFrameReader(t *testing.T) {
	for _, tt := range frameTests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				got, err := readAll(rd.wrap(tt.stream), 16)
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("frames = %+v, want %+v", got, tt.want)
				}
				if tt.wantErr == "" {
					if err != io.EOF {
						t.Errorf("final error = %v, want io.EOF", err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("final error = %v, want it to contain %q", err, tt.wantErr)
				}
				if !errors.Is(err, tt.wantErrIs) {
					t.Errorf("final error = %v, want it to wrap %v", err, tt.wantErrIs)
				}
			})
		}
	}
}

// Every prefix of a valid stream reads as the frames it holds whole,
// then io.EOF at a frame boundary or io.ErrUnexpectedEOF inside a frame.
func TestFrameReaderShortStreams(t *testing.T) {
	frames := []Frame{
		{Type: FrameData, Data: []byte("abc")},
		fin(3, "abc"),
		finAck(7, "defgijk"),
		{Type: FrameReset, Data: []byte("why")},
	}
	var stream []byte
	ends := map[int]int{0: 0} // frame boundary offset -> frames before it
	for i, f := range frames {
		stream = AppendFrame(stream, f)
		ends[len(stream)] = i + 1
	}
	for k := 0; k <= len(stream); k++ {
		for _, rd := range readers {
			got, err := readAll(rd.wrap(stream[:k]), 0)
			n, boundary := ends[k]
			if !boundary {
				n = len(got)
			}
			if !reflect.DeepEqual(got, frames[:n]) && !(n == 0 && got == nil) {
				t.Errorf("prefix %d (%s): frames = %+v, want %+v", k, rd.name, got, frames[:n])
			}
			if boundary && err != io.EOF {
				t.Errorf("prefix %d (%s): error = %v, want io.EOF", k, rd.name, err)
			}
			if !boundary && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("prefix %d (%s): error = %v, want io.ErrUnexpectedEOF", k, rd.name, err)
			}
		}
	}
}

// A read error other than EOF is returned with the frame's offset, after
// the frames read before it.
func TestFrameReaderReadError(t *testing.T) {
	boom := errors.New("connection reset")
	stream := concat(Frame{Type: FrameData, Data: []byte("abc")}, fin(3, "abc"))
	r := io.MultiReader(bytes.NewReader(stream[:20]), iotest.ErrReader(boom))
	got, err := readAll(r, 0)
	if want := []Frame{{Type: FrameData, Data: []byte("abc")}}; !reflect.DeepEqual(got, want) {
		t.Errorf("frames = %+v, want %+v", got, want)
	}
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "frame at offset 8: reading FIN payload") {
		t.Errorf("error = %v, want it to wrap %v and name offset 8", err, boom)
	}
}

// Large frames grow the buffer; the limit bounds it.
func TestFrameReaderLargeFrames(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), MaxData/10)
	var stream []byte
	for i := range 5 {
		stream = AppendFrame(stream, Frame{Type: FrameData, Data: big[:len(big)-i]})
		stream = AppendFrame(stream, Frame{Type: FrameData, Data: []byte("x")})
	}
	for _, rd := range readers {
		got, err := readAll(rd.wrap(stream), 0)
		if err != io.EOF || len(got) != 10 {
			t.Fatalf("%s: read %d frames, %v; want 10, io.EOF", rd.name, len(got), err)
		}
		for i := 0; i < 10; i += 2 {
			if !bytes.Equal(got[i].Data, big[:len(big)-i/2]) {
				t.Fatalf("%s: frame %d differs", rd.name, i)
			}
		}
	}
	fr := NewFrameReader(bytes.NewReader(stream), 0)
	for range 10 {
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if got, limit := len(fr.buf), FrameHeaderLen+MaxData; got > limit {
		t.Errorf("buffer grew to %d bytes, want at most %d", got, limit)
	}
}

// A reader that keeps returning 0, nil does not hang ReadFrame.
func TestFrameReaderNoProgress(t *testing.T) {
	fr := NewFrameReader(zeroReader{}, 0)
	if _, err := fr.ReadFrame(); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("ReadFrame() = %v, want io.ErrNoProgress", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestFrameTypeString(t *testing.T) {
	for typ, want := range map[FrameType]string{FrameData: "DATA", FrameFin: "FIN", FrameFinAck: "FIN_ACK", FrameReset: "RESET", 0: "0x00", 0xab: "0xab"} {
		if got := typ.String(); got != want {
			t.Errorf("FrameType(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

func TestFrameNoAllocs(t *testing.T) {
	stream := concat(Frame{Type: FrameData, Data: bytes.Repeat([]byte("x"), 1000)}, fin(1000, ""))
	r := bytes.NewReader(stream)
	fr := NewFrameReader(r, 0)
	fr.ReadFrame() // allocates the buffer
	buf := make([]byte, 0, 2048)
	n := testing.AllocsPerRun(100, func() {
		r.Reset(stream)
		fr.rpos, fr.wpos, fr.err, fr.readErr = 0, 0, nil, nil
		if _, err := fr.ReadFrame(); err != nil {
			panic(err)
		}
		if _, err := fr.ReadFrame(); err != nil {
			panic(err)
		}
		buf = AppendFrame(buf[:0], fin(1000, ""))
	})
	if n != 0 {
		t.Errorf("ReadFrame and AppendFrame allocate %v times, want 0", n)
	}
}

func FuzzFrameReader(f *testing.F) {
	for _, tt := range frameTests {
		f.Add(tt.stream)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		const limit = 64
		got, err := readAll(bytes.NewReader(stream), limit)
		if err == nil {
			t.Fatal("readAll ended without error")
		}
		if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrBadFrame) && !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		// Frames re-encode to exactly the bytes they were read from.
		re := concat(got...)
		if !bytes.HasPrefix(stream, re) {
			t.Fatalf("re-encoded frames %x are not a prefix of the stream %x", re, stream)
		}
		if err == io.EOF && len(re) != len(stream) {
			t.Fatalf("io.EOF after %d of %d bytes", len(re), len(stream))
		}
		// Feeding the stream in pieces changes nothing.
		for _, rd := range readers[1:] {
			got2, err2 := readAll(rd.wrap(stream), limit)
			if !reflect.DeepEqual(got, got2) {
				t.Fatalf("%s: frames %+v, want %+v", rd.name, got2, got)
			}
			if err.Error() != err2.Error() {
				t.Fatalf("%s: error %v, want %v", rd.name, err2, err)
			}
		}
	})
}

func FuzzFrameRoundTrip(f *testing.F) {
	f.Add(uint8(FrameData), []byte("hello"), uint64(5), []byte("digest"), []byte("mac"))
	f.Add(uint8(FrameFin), []byte(nil), uint64(1<<63), []byte("d"), []byte(nil))
	f.Add(uint8(FrameFinAck), []byte(nil), uint64(0), []byte("d"), []byte("m"))
	f.Add(uint8(FrameReset), []byte("reason"), uint64(0), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte, count uint64, digest, mac []byte) {
		in := Frame{Type: FrameType(typ%4 + 1)}
		switch in.Type {
		case FrameData:
			if len(data) == 0 || len(data) > MaxData {
				return
			}
			in.Data = data
		case FrameReset:
			if len(data) > MaxReason || !utf8.Valid(data) {
				return
			}
			in.Data = data
		case FrameFinAck:
			copy(in.MAC[:], mac)
			fallthrough
		case FrameFin:
			in.Count = count
			copy(in.Digest[:], digest)
		}
		stream := AppendFrame(nil, in)
		for _, rd := range readers {
			fr := NewFrameReader(rd.wrap(stream), 0)
			out, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("%s: ReadFrame(AppendFrame(%+v)) = %v", rd.name, in, err)
			}
			if in.Type == FrameReset && in.Data == nil {
				in.Data = []byte{}
			}
			if !reflect.DeepEqual(out, in) {
				t.Fatalf("%s: ReadFrame(AppendFrame(%+v)) = %+v", rd.name, in, out)
			}
			if _, err := fr.ReadFrame(); err != io.EOF {
				t.Fatalf("%s: second ReadFrame = %v, want io.EOF", rd.name, err)
			}
		}
	})
}

func BenchmarkReadFrame(b *testing.B) {
	data := bytes.Repeat([]byte("x"), 32<<10)
	var stream []byte
	for range 16 {
		stream = AppendFrame(stream, Frame{Type: FrameData, Data: data})
	}
	r := bytes.NewReader(stream)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(stream)
		fr := NewFrameReader(r, 0)
		for {
			if _, err := fr.ReadFrame(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	data := bytes.Repeat([]byte("x"), 32<<10)
	buf := make([]byte, 0, len(data)+FrameHeaderLen)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = AppendFrame(buf[:0], Frame{Type: FrameData, Data: data})
	}
}
