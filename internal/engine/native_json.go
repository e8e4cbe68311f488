package engine

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonKind is the kind of a scalar JSON value.
type jsonKind int

const (
	jsonNull jsonKind = iota
	jsonString
	jsonNumber
	jsonBool
)

// jsonScanner reads flat JSON objects (keys to scalars) from buf, strictly
// by RFC 8259; anything else (a nested value, a control character in a
// string, an escaped surrogate half or NUL) fails the scan, and the input
// then goes to DuckDB. It is several times faster than encoding/json's
// Decoder.Token, which dominated the native path's time.
type jsonScanner struct {
	buf []byte
	pos int
}

func (s *jsonScanner) skipSpace() {
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n':
			s.pos++
		default:
			return
		}
	}
}

// consume skips white space and then c, reporting whether it was there.
func (s *jsonScanner) consume(c byte) bool {
	s.skipSpace()
	if s.pos < len(s.buf) && s.buf[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// atEnd reports whether only white space is left.
func (s *jsonScanner) atEnd() bool {
	s.skipSpace()
	return s.pos == len(s.buf)
}

// object reads one object, calling field for each key and value (for a
// boolean, text is "true" or "false"; for a number, its text).
func (s *jsonScanner) object(field func(key string, kind jsonKind, text string) bool) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	for {
		s.skipSpace()
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return false
		}
		s.skipSpace()
		kind, text, ok := s.scalar()
		if !ok || !field(key, kind, text) {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// scalar reads a string, number, true, false or null.
func (s *jsonScanner) scalar() (jsonKind, string, bool) {
	if s.pos >= len(s.buf) {
		return 0, "", false
	}
	switch c := s.buf[s.pos]; {
	case c == '"':
		v, ok := s.str()
		return jsonString, v, ok
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.pos
		for s.pos < len(s.buf) {
			c := s.buf[s.pos]
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				s.pos++
				continue
			}
			break
		}
		text := string(s.buf[start:s.pos])
		return jsonNumber, text, isJSONNumber(text)
	}
	for _, lit := range []struct {
		text string
		kind jsonKind
	}{{"true", jsonBool}, {"false", jsonBool}, {"null", jsonNull}} {
		if len(s.buf)-s.pos >= len(lit.text) && string(s.buf[s.pos:s.pos+len(lit.text)]) == lit.text {
			s.pos += len(lit.text)
			return lit.kind, lit.text, true
		}
	}
	return 0, "", false
}

// str reads a string at the position.
func (s *jsonScanner) str() (string, bool) {
	if s.pos >= len(s.buf) || s.buf[s.pos] != '"' {
		return "", false
	}
	s.pos++
	start := s.pos
	// Fast path: no escapes.
	for s.pos < len(s.buf) {
		c := s.buf[s.pos]
		if c == '"' {
			v := string(s.buf[start:s.pos])
			s.pos++
			return v, true
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", false
		}
		s.pos++
	}
	out := append([]byte(nil), s.buf[start:s.pos]...)
	for s.pos < len(s.buf) {
		c := s.buf[s.pos]
		switch {
		case c == '"':
			s.pos++
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(s.buf) {
			return "", false
		}
		e := s.buf[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xDC00 || s.pos+1 >= len(s.buf) || s.buf[s.pos] != '\\' || s.buf[s.pos+1] != 'u' {
					return "", false
				}
				s.pos += 2
				r2, ok := s.hex4()
				if !ok {
					return "", false
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return "", false
				}
			}
			if r == 0 {
				return "", false
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (s *jsonScanner) hex4() (rune, bool) {
	if s.pos+4 > len(s.buf) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(s.buf[s.pos:s.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	s.pos += 4
	return rune(n), true
}
