package llmapi

import (
	"bytes"
	"cmp"
	"errors"
	"math"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// The helpers in this file read JSON that validJSON has already
// accepted. They locate values by byte offsets so that callers can splice
// replacements into the original document. They never index out of range
// even on invalid input; they report failure with -1 or false instead.

// vspan is the byte range [s, e) of one JSON value inside a document.
type vspan struct{ s, e int }

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// trimSpan returns the span of b without surrounding JSON whitespace.
func trimSpan(b []byte) vspan {
	s, e := 0, len(b)
	for s < e && isWS(b[s]) {
		s++
	}
	for e > s && isWS(b[e-1]) {
		e--
	}
	return vspan{s, e}
}

// stringEnd returns the offset just past the string token starting at
// b[i] (which must be '"'), or -1. Short strings (most keys and stream
// deltas) are scanned byte by byte; long ones with IndexByte.
func stringEnd(b []byte, i int) int {
	j := i + 1
	for lim := min(len(b), i+32); j < lim; j++ {
		switch b[j] {
		case '"':
			return j + 1
		case '\\':
			j++
		}
	}
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		n := 0
		for p := q - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
	return -1
}

// valueEnd returns the offset just past the JSON value starting at b[i], or
// -1. It is iterative, so nesting depth costs no stack.
func valueEnd(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				e := stringEnd(b, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || c == ':' || isWS(c) {
				break
			}
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// objIter walks the members of one JSON object.
type objIter struct {
	b      []byte
	i      int
	ks, ke int // key token, quotes included
	v      vspan
	n      int // members seen so far
}

// iterObject starts walking the object whose '{' is at b[s]. If b[s] is not
// '{' the iterator yields nothing.
func iterObject(b []byte, s int) objIter {
	if s < 0 || s >= len(b) || b[s] != '{' {
		return objIter{b: b, i: len(b) + 1}
	}
	return objIter{b: b, i: s + 1}
}

func (it *objIter) next() bool {
	b := it.b
	if it.i > len(b) {
		return false
	}
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		it.i = len(b) + 1
		return false
	}
	ke := stringEnd(b, i)
	if ke < 0 {
		it.i = len(b) + 1
		return false
	}
	j := skipWS(b, ke)
	if j >= len(b) || b[j] != ':' {
		it.i = len(b) + 1
		return false
	}
	vs := skipWS(b, j+1)
	ve := valueEnd(b, vs)
	if ve < 0 {
		it.i = len(b) + 1
		return false
	}
	it.ks, it.ke, it.v, it.i = i, ke, vspan{vs, ve}, ve
	it.n++
	return true
}

// keyRaw returns the key's bytes between the quotes when they contain no
// escape, so that a switch on string(keyRaw) does not allocate; escaped keys
// are unescaped (and allocate).
func (it *objIter) keyRaw() []byte {
	raw := it.b[it.ks+1 : it.ke-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	return []byte(unquote(it.b[it.ks:it.ke]))
}

// arrIter walks the elements of one JSON array.
type arrIter struct {
	b []byte
	i int
	v vspan
	n int
}

func iterArray(b []byte, s int) arrIter {
	if s < 0 || s >= len(b) || b[s] != '[' {
		return arrIter{b: b, i: len(b) + 1}
	}
	return arrIter{b: b, i: s + 1}
}

func (it *arrIter) next() bool {
	b := it.b
	if it.i > len(b) {
		return false
	}
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] == ']' {
		it.i = len(b) + 1
		return false
	}
	e := valueEnd(b, i)
	if e < 0 {
		it.i = len(b) + 1
		return false
	}
	it.v, it.i = vspan{i, e}, e
	it.n++
	return true
}

// kindOf returns the first byte of the value at v ('"', '{', '[', 't', 'f',
// 'n' or a number's first byte), or 0 for an empty span.
func kindOf(b []byte, v vspan) byte {
	if v.s < 0 || v.s >= len(b) || v.e <= v.s {
		return 0
	}
	return b[v.s]
}

// strAt returns the string at v and whether v is a string.
func strAt(b []byte, v vspan) (string, bool) {
	if kindOf(b, v) != '"' {
		return "", false
	}
	return unquote(b[v.s:v.e]), true
}

// rawStrAt returns the content of the string at v for comparison: the
// bytes between the quotes when there is no escape (no allocation), else
// the unescaped text. It returns nil when v is not a string.
func rawStrAt(b []byte, v vspan) []byte {
	if kindOf(b, v) != '"' || v.e-v.s < 2 {
		return nil
	}
	in := b[v.s+1 : v.e-1]
	if bytes.IndexByte(in, '\\') < 0 {
		return in
	}
	return []byte(unquote(b[v.s:v.e]))
}

// intAt returns the number at v as an int64, saturating beyond the range.
func intAt(b []byte, v vspan) (int64, bool) {
	c := kindOf(b, v)
	if c != '-' && (c < '0' || c > '9') {
		return 0, false
	}
	tok := string(b[v.s:v.e])
	if n, err := strconv.ParseInt(tok, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(tok, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	switch {
	case math.IsNaN(f):
		return 0, false
	case f >= math.MaxInt64:
		return math.MaxInt64, true
	case f <= math.MinInt64:
		return math.MinInt64, true
	}
	return int64(f), true
}

// boolAt reports whether the value at v is the literal true.
func boolAt(b []byte, v vspan) bool {
	return v.e-v.s == 4 && string(b[v.s:v.e]) == "true"
}

// unquote decodes a JSON string token (quotes included) the way
// encoding/json does: invalid UTF-8 and unpaired surrogates become U+FFFD.
// It returns "" for anything that is not a string token.
func unquote(tok []byte) string {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return ""
	}
	in := tok[1 : len(tok)-1]
	if bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
		return string(in)
	}
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); {
		// Copy the run up to the next escape in one go.
		k := bytes.IndexByte(in[i:], '\\')
		if k < 0 {
			k = len(in) - i
		}
		out = appendValidUTF8(out, in[i:i+k])
		i += k
		if i+1 >= len(in) {
			break
		}
		switch in[i+1] {
		case '"', '\\', '/':
			out = append(out, in[i+1])
			i += 2
		case 'b':
			out = append(out, '\b')
			i += 2
		case 'f':
			out = append(out, '\f')
			i += 2
		case 'n':
			out = append(out, '\n')
			i += 2
		case 'r':
			out = append(out, '\r')
			i += 2
		case 't':
			out = append(out, '\t')
			i += 2
		case 'u':
			r, ok := hex4(in, i+2)
			if !ok {
				return ownedString(out)
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(-1), false
				if i+1 < len(in) && in[i] == '\\' && in[i+1] == 'u' {
					r2, ok2 = hex4(in, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					i += 6
					r = dec
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return ownedString(out)
		}
	}
	return ownedString(out)
}

// ownedString converts a buffer that nothing else references into a string
// without copying it.
func ownedString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b)) // #nosec G103 -- b is owned and never written again, as unsafe.String requires
}

// appendValidUTF8 appends s, replacing each invalid byte with U+FFFD as
// encoding/json does.
func appendValidUTF8(dst, s []byte) []byte {
	if utf8.Valid(s) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// appendQuote appends s as a JSON string token. Unlike encoding/json it
// does not escape <, > and &, so text round-trips readably; like it, it
// replaces invalid UTF-8 with U+FFFD and escapes U+2028 and U+2029.
func appendQuote(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// quote returns s as a JSON string token.
func quote(s string) []byte { return appendQuote(make([]byte, 0, len(s)+2), s) }

// eachStringValue calls fn with the span of every string value (not key)
// inside b[v.s:v.e], at any depth, in document order. It is a linear scan,
// so hostile nesting costs no stack.
func eachStringValue(b []byte, v vspan, fn func(vspan)) {
	if v.s < 0 || v.e > len(b) {
		return
	}
	for i := v.s; i < v.e; {
		if b[i] != '"' {
			i++
			continue
		}
		end := stringEnd(b, i)
		if end < 0 || end > v.e {
			return
		}
		if j := skipWS(b, end); j >= len(b) || b[j] != ':' {
			fn(vspan{i, end})
		}
		i = end
	}
}

// patch replaces b[s:e] with text; s == e inserts.
type patch struct {
	s, e int
	text []byte
}

var errOverlap = errors.New("overlapping edits")

// applyPatches returns b with the patches applied. Patches are sorted by
// position (stably, so insertions at one offset keep their order) and must
// not overlap.
func applyPatches(b []byte, ps []patch) ([]byte, error) {
	sortPatches(ps)
	n := len(b)
	for i, p := range ps {
		if p.s < 0 || p.e < p.s || p.e > len(b) || (i > 0 && p.s < ps[i-1].e) {
			return nil, errOverlap
		}
		n += len(p.text) - (p.e - p.s)
	}
	out := make([]byte, 0, n)
	at := 0
	for _, p := range ps {
		out = append(out, b[at:p.s]...)
		out = append(out, p.text...)
		at = p.e
	}
	return append(out, b[at:]...), nil
}

// sortPatches sorts stably by (s, e), so that several insertions at one
// offset keep the order in which they were made.
func sortPatches(ps []patch) {
	slices.SortStableFunc(ps, func(a, b patch) int {
		if c := cmp.Compare(a.s, b.s); c != 0 {
			return c
		}
		return cmp.Compare(a.e, b.e)
	})
}
