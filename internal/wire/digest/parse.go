package digest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds a strict RFC 8941 / RFC 9651 Dictionary scanner that
// accepts only Byte Sequence member values. It walks the field in place and
// allocates nothing unless it fails (or meets a Display String parameter).

// syntaxError is a parse failure at a byte offset of the field value.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return "content-digest: offset " + strconv.Itoa(e.off) + ": " + e.msg
}

func (e *syntaxError) Unwrap() error { return ErrMalformed }

func errAt(off int, format string, args ...any) error {
	return &syntaxError{off: off, msg: fmt.Sprintf(format, args...)}
}

// member is one dictionary member: its key and the validated base64 text of
// its Byte Sequence value, padding included, colons excluded.
type member struct {
	key   string
	value string
}

type scanner struct {
	s       string
	i       int // next byte to read
	end     int // end of the field less trailing whitespace
	started bool
}

func newScanner(s string) scanner {
	i, end := 0, len(s)
	for i < end && isOWS(s[i]) {
		i++
	}
	for end > i && isOWS(s[end-1]) {
		end--
	}
	return scanner{s: s, i: i, end: end}
}

// next returns the next member; ok is false at the end of the field.
func (sc *scanner) next() (m member, ok bool, err error) {
	if sc.started {
		sc.skipOWS()
		if sc.i == sc.end {
			return member{}, false, nil
		}
		if c := sc.s[sc.i]; c != ',' {
			return member{}, false, errAt(sc.i, "expected ',' or end of field after member, found %s", char(c))
		}
		comma := sc.i
		sc.i++
		sc.skipOWS()
		if sc.i == sc.end {
			return member{}, false, errAt(comma, "trailing ',' with no member after it")
		}
	} else {
		sc.started = true
		if sc.i == sc.end {
			return member{}, false, nil
		}
	}

	keyOff := sc.i
	key, err := sc.key()
	if err != nil {
		return member{}, false, err
	}
	if sc.i == sc.end || sc.s[sc.i] != '=' {
		if sc.i < sc.end {
			switch c := sc.s[sc.i]; {
			case c >= 'A' && c <= 'Z':
				return member{}, false, errAt(sc.i, "uppercase %s in key (keys are lowercase)", char(c))
			case c != ',' && c != ';' && !isOWS(c):
				return member{}, false, errAt(sc.i, "invalid character %s in key", char(c))
			}
		}
		return member{}, false, errAt(keyOff, "member %q has no value, want a byte sequence", key)
	}
	sc.i++ // '='
	if sc.i == sc.end || sc.s[sc.i] != ':' {
		return member{}, false, errAt(sc.i, "member %q: value is %s, want a byte sequence", key, sc.itemKind())
	}
	value, err := sc.byteSeq()
	if err != nil {
		return member{}, false, err
	}
	if err := sc.params(); err != nil {
		return member{}, false, err
	}
	return member{key: key, value: value}, true, nil
}

func (sc *scanner) skipOWS() {
	for sc.i < sc.end && isOWS(sc.s[sc.i]) {
		sc.i++
	}
}

// key parses key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ).
func (sc *scanner) key() (string, error) {
	start := sc.i
	if sc.i == sc.end {
		return "", errAt(sc.i, "expected key, found end of field")
	}
	if c := sc.s[sc.i]; !isLower(c) && c != '*' {
		if c >= 'A' && c <= 'Z' {
			return "", errAt(sc.i, "expected key, found uppercase %s (keys are lowercase)", char(c))
		}
		return "", errAt(sc.i, "expected key (lowercase letter or '*'), found %s", char(c))
	}
	sc.i++
	for sc.i < sc.end && isKeyChar(sc.s[sc.i]) {
		sc.i++
	}
	return sc.s[start:sc.i], nil
}

// itemKind names the kind of the bare item at sc.i, for errors.
func (sc *scanner) itemKind() string {
	if sc.i == sc.end {
		return "missing"
	}
	switch c := sc.s[sc.i]; {
	case c == '(':
		return "an inner list"
	case c == '"':
		return "a string"
	case c == '-' || isDigit(c):
		return "a number"
	case c == '?':
		return "a boolean"
	case c == '@':
		return "a date"
	case c == '%':
		return "a display string"
	case c == '*' || isAlpha(c):
		return "a token"
	default:
		return "invalid (starts with " + char(c) + ")"
	}
}

// byteSeq parses a Byte Sequence at sc.i (which holds ':') and returns the
// base64 text between the colons after checking its alphabet and padding.
func (sc *scanner) byteSeq() (string, error) {
	start := sc.i + 1
	j := start
	for ; j < sc.end; j++ {
		c := sc.s[j]
		if c == ':' {
			break
		}
		if c != '=' && b64[c] == invalid {
			return "", errAt(j, "invalid character %s in byte sequence (want base64 or ':')", char(c))
		}
	}
	if j == sc.end {
		return "", errAt(j, "expected ':' to end byte sequence")
	}
	v := sc.s[start:j]
	sc.i = j + 1

	// RFC 8941 §4.2.7: recipients synthesize missing padding and accept
	// non-zero pad bits, but the text must otherwise be base64.
	p := len(v)
	for p > 0 && v[p-1] == '=' {
		p--
	}
	if k := strings.IndexByte(v[:p], '='); k >= 0 {
		return "", errAt(start+k, "'=' padding in the middle of byte sequence")
	}
	pad := len(v) - p
	var ok bool
	switch p % 4 {
	case 0:
		ok = pad == 0
	case 1:
		return "", errAt(start, "invalid base64: %d characters cannot encode whole bytes", p)
	case 2:
		ok = pad == 0 || pad == 2
	case 3:
		ok = pad == 0 || pad == 1
	}
	if !ok {
		want := [4]string{"none", "", "two '=' or none", "one '=' or none"}[p%4]
		return "", errAt(start+p, "bad base64 padding: %d characters take %s, found %d", p, want, pad)
	}
	return v, nil
}

// params parses *( ";" *SP key [ "=" bare-item ] ) and discards it.
func (sc *scanner) params() error {
	for sc.i < sc.end && sc.s[sc.i] == ';' {
		sc.i++
		for sc.i < sc.end && sc.s[sc.i] == ' ' {
			sc.i++
		}
		if _, err := sc.key(); err != nil {
			return err
		}
		if sc.i < sc.end && sc.s[sc.i] == '=' {
			sc.i++
			if err := sc.bareItem(); err != nil {
				return err
			}
		}
	}
	return nil
}

// bareItem parses and discards any RFC 9651 bare item.
func (sc *scanner) bareItem() error {
	if sc.i == sc.end {
		return errAt(sc.i, "expected parameter value, found end of field")
	}
	switch c := sc.s[sc.i]; {
	case c == '-' || isDigit(c):
		_, err := sc.number()
		return err
	case c == '"':
		return sc.str()
	case c == '*' || isAlpha(c):
		sc.i++
		for sc.i < sc.end && (isTchar(sc.s[sc.i]) || sc.s[sc.i] == ':' || sc.s[sc.i] == '/') {
			sc.i++
		}
		return nil
	case c == ':':
		_, err := sc.byteSeq()
		return err
	case c == '?':
		sc.i++
		if sc.i == sc.end || (sc.s[sc.i] != '0' && sc.s[sc.i] != '1') {
			return errAt(sc.i, "expected '0' or '1' after '?' of boolean")
		}
		sc.i++
		return nil
	case c == '@':
		off := sc.i
		sc.i++
		dec, err := sc.number()
		if err != nil {
			return err
		}
		if dec {
			return errAt(off, "date is not an integer")
		}
		return nil
	case c == '%':
		return sc.displayString()
	default:
		return errAt(sc.i, "invalid parameter value starting with %s", char(c))
	}
}

// number parses an Integer or Decimal and reports whether it was a Decimal.
func (sc *scanner) number() (decimal bool, err error) {
	start := sc.i
	if sc.i < sc.end && sc.s[sc.i] == '-' {
		sc.i++
	}
	if sc.i == sc.end || !isDigit(sc.s[sc.i]) {
		return false, errAt(sc.i, "expected digit in number")
	}
	n, dot := 0, -1 // n counts digits and the '.', as RFC 9651 §4.2.4 does
loop:
	for sc.i < sc.end {
		c := sc.s[sc.i]
		switch {
		case isDigit(c):
		case c == '.' && dot < 0:
			if n > 12 {
				return false, errAt(start, "decimal has more than 12 integer digits")
			}
			dot = n
		default:
			break loop
		}
		n++
		sc.i++
		if dot < 0 && n > 15 {
			return false, errAt(start, "integer has more than 15 digits")
		}
		if dot >= 0 && n > 16 {
			return false, errAt(start, "decimal has more than 16 characters")
		}
	}
	if dot < 0 {
		return false, nil
	}
	if dot == n-1 {
		return true, errAt(sc.i-1, "decimal ends with '.'")
	}
	if n-dot-1 > 3 {
		return true, errAt(start, "decimal has more than 3 fractional digits")
	}
	return true, nil
}

func (sc *scanner) str() error {
	start := sc.i
	sc.i++
	for sc.i < sc.end {
		c := sc.s[sc.i]
		sc.i++
		switch {
		case c == '\\':
			if sc.i == sc.end {
				break
			}
			if e := sc.s[sc.i]; e != '"' && e != '\\' {
				return errAt(sc.i, "invalid escape %s in string", char(e))
			}
			sc.i++
		case c == '"':
			return nil
		case c < 0x20 || c > 0x7e:
			return errAt(sc.i-1, "invalid character %s in string", char(c))
		}
	}
	return errAt(start, "unterminated string")
}

func (sc *scanner) displayString() error {
	start := sc.i
	sc.i++
	if sc.i == sc.end || sc.s[sc.i] != '"' {
		return errAt(sc.i, "expected '\"' after '%%' of display string")
	}
	sc.i++
	var arr [64]byte
	buf := arr[:0]
	for sc.i < sc.end {
		c := sc.s[sc.i]
		sc.i++
		switch {
		case c == '%':
			if sc.i+2 > sc.end || !isLowerHex(sc.s[sc.i]) || !isLowerHex(sc.s[sc.i+1]) {
				return errAt(sc.i-1, "'%%' in display string not followed by two lowercase hex digits")
			}
			buf = append(buf, unhex(sc.s[sc.i])<<4|unhex(sc.s[sc.i+1]))
			sc.i += 2
		case c == '"':
			if !utf8.Valid(buf) {
				return errAt(start, "display string is not valid UTF-8")
			}
			return nil
		case c < 0x20 || c > 0x7e:
			return errAt(sc.i-1, "invalid character %s in display string", char(c))
		default:
			buf = append(buf, c)
		}
	}
	return errAt(start, "unterminated display string")
}

const (
	b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	invalid     = 0xff
)

// b64 maps a standard base64 character to its 6-bit value, others to invalid.
var b64 = func() (t [256]byte) {
	for i := range t {
		t[i] = invalid
	}
	for i := range len(b64Alphabet) {
		t[b64Alphabet[i]] = byte(i)
	}
	return t
}()

// decodedLen returns the number of bytes the validated base64 text v holds.
func decodedLen(v string) int {
	p := len(v)
	for p > 0 && v[p-1] == '=' {
		p--
	}
	return p * 3 / 4
}

// decodeBase64 decodes the validated base64 text v into dst, which must be
// decodedLen(v) bytes long. Non-zero pad bits are dropped.
func decodeBase64(dst []byte, v string) {
	p := len(v)
	for p > 0 && v[p-1] == '=' {
		p--
	}
	i, j := 0, 0
	for ; i+4 <= p; i += 4 {
		x := uint32(b64[v[i]])<<18 | uint32(b64[v[i+1]])<<12 | uint32(b64[v[i+2]])<<6 | uint32(b64[v[i+3]])
		dst[j], dst[j+1], dst[j+2] = byte(x>>16), byte(x>>8), byte(x)
		j += 3
	}
	switch p - i {
	case 2:
		x := uint32(b64[v[i]])<<18 | uint32(b64[v[i+1]])<<12
		dst[j] = byte(x >> 16)
	case 3:
		x := uint32(b64[v[i]])<<18 | uint32(b64[v[i+1]])<<12 | uint32(b64[v[i+2]])<<6
		dst[j], dst[j+1] = byte(x>>16), byte(x>>8)
	}
}

func isOWS(c byte) bool      { return c == ' ' || c == '\t' }
func isDigit(c byte) bool    { return c >= '0' && c <= '9' }
func isLower(c byte) bool    { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool    { return isLower(c) || (c >= 'A' && c <= 'Z') }
func isLowerHex(c byte) bool { return isDigit(c) || (c >= 'a' && c <= 'f') }
func isKeyChar(c byte) bool {
	return isLower(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*'
}
func unhex(c byte) byte {
	if isDigit(c) {
		return c - '0'
	}
	return c - 'a' + 10
}

// isTchar reports whether c is an RFC 9110 tchar.
func isTchar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// char describes a byte for an error message.
func char(c byte) string {
	if c > 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	if c == ' ' {
		return "space"
	}
	return fmt.Sprintf("byte 0x%02x", c)
}
