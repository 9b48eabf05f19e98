package mux

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock is one decoded header block: a HEADERS frame and its
// CONTINUATIONs. The read loop owns the one block of its connection and
// reuses its field slice, so a block is valid only until the next is read.
type headerBlock struct {
	streamID  uint32
	endStream bool
	// truncated: the block was over the connection's header list limit;
	// fields holds what came before the limit.
	truncated bool
	fields    []hpack.HeaderField

	remain     uint32 // header list budget left (RFC 9113 §6.5.2 sizes)
	invalid    error  // first malformed field; the rest are not kept
	sawRegular bool
	pseudo     uint8 // pseudo-header fields seen, as pseudoBits
}

// pseudoBits numbers the pseudo-header fields, to find duplicates and
// mixed request and response fields without allocating.
var pseudoBits = map[string]uint8{
	":method": 1 << 0, ":path": 1 << 1, ":scheme": 1 << 2, ":authority": 1 << 3, ":protocol": 1 << 4,
	":status": 1 << 5,
}

const responsePseudo = 1 << 5

var errPseudoAfterRegular = errors.New("pseudo-header field after a regular one")

// emit is the HPACK decoder's callback for each field of the block being
// read. It applies RFC 9113 §8.2 and §8.3 (what x/net's ReadMetaHeaders
// checks) and the header list limit.
func (b *headerBlock) emit(d *hpack.Decoder, f hpack.HeaderField) {
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		// The value may be a secret: not in the error.
		b.invalid = fmt.Errorf("invalid value of header field %q", f.Name)
	case strings.HasPrefix(f.Name, ":"):
		bit := pseudoBits[f.Name]
		switch {
		case b.sawRegular:
			b.invalid = errPseudoAfterRegular
		case bit == 0:
			b.invalid = fmt.Errorf("unknown pseudo-header field %q", f.Name)
		case b.pseudo&bit != 0:
			b.invalid = fmt.Errorf("duplicate pseudo-header field %q", f.Name)
		case (b.pseudo|bit)&responsePseudo != 0 && (b.pseudo|bit)&^responsePseudo != 0:
			b.invalid = errors.New("request and response pseudo-header fields mixed")
		}
		b.pseudo |= bit
	default:
		b.sawRegular = true
		if !validFieldName(f.Name) {
			b.invalid = fmt.Errorf("invalid header field name %q", f.Name)
		}
	}
	if b.invalid != nil {
		d.SetEmitEnabled(false)
		return
	}
	size := f.Size()
	if size > b.remain {
		b.truncated = true
		b.remain = 0
		d.SetEmitEnabled(false)
		return
	}
	b.remain -= size
	b.fields = append(b.fields, f)
}

// validFieldName: a token in lower case, as HTTP/2 requires.
func validFieldName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// readFrame reads the next frame; for HEADERS it also reads the whole
// header block, returned as blk.
func (c *conn) readFrame() (f http2.Frame, blk *headerBlock, err error) {
	f, err = c.rf.ReadFrame()
	if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
		blk, err = c.readHeaderBlock(hf)
	}
	return f, blk, err
}

// readHeaderBlock decodes the block that f starts into c.blk, reading its
// CONTINUATION frames. The Framer has already checked that nothing else
// comes between them. A malformed field is a stream error; a block that
// cannot be decoded, or a fragment far beyond the limit, is a connection
// error, as in x/net's ReadMetaHeaders.
func (c *conn) readHeaderBlock(f *http2.HeadersFrame) (*headerBlock, error) {
	b := &c.blk
	max := c.rf.MaxHeaderListSize
	*b = headerBlock{
		streamID: f.StreamID, endStream: f.StreamEnded(),
		fields: b.fields[:0], remain: max,
	}
	c.hdec.SetEmitEnabled(true)
	frag, ended := f.HeaderBlockFragment(), f.HeadersEnded()
	for {
		// Do not decode much more than will be kept: past the limit, or
		// after a malformed field, further fragments end the connection.
		allowed := 2 * (int64(b.remain) + int64(max))
		if b.truncated {
			allowed = 0
		}
		if int64(len(frag)) > allowed || b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := c.hdec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		next, err := c.rf.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := next.(*http2.ContinuationFrame) // the Framer checks the order
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := c.hdec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: b.streamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	return b, nil
}
