package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// This file decodes a JSON document straight into an OPA ast.Value. Request
// bodies are decoded on every Check, and going through encoding/json into
// `any` first and then through ast.InterfaceToValue builds every value twice
// (plus a map per object); decoding directly builds each value once.
//
// The result must be exactly what the old path gave — policies see it as
// input.parsed_body — so the decoder follows encoding/json (as of Go 1.27,
// backed by encoding/json/v2 with the v1 options) wherever the JSON grammar
// leaves a choice:
//
//   - numbers keep their literal text, as json.Number does, and go through the
//     same ast.InternedIntNumberTermFromString and ast.NumberChecked calls as
//     ast.InterfaceToValue (so an exponent OPA cannot hold is an error too);
//   - a repeated object key keeps the last value, as assigning into a map does;
//   - invalid UTF-8 inside a string is not an error: each invalid byte becomes
//     U+FFFD, and so does a \u escape of a surrogate that is not the first
//     half of a valid \uXXXX\uXXXX pair (the escape after it is then read on
//     its own);
//   - only space, tab, CR and LF are whitespace, raw control characters in
//     strings are errors, and anything but whitespace after the first value
//     is an error;
//   - containers nest at most maxJSONDepth deep, the limit of encoding/json.
//
// Allocation is what the old path spent its time on, so: each container is
// built once at its final size from a shared stack of pending values; a
// string without escapes is one conversion of the input bytes, one with
// escapes is built at its final size; repeated object keys share one value
// (per document only, nothing is interned globally).

// maxJSONDepth is how deeply arrays and objects may nest; encoding/json
// accepts 10000 levels and rejects 10001. The decoder recurses a fixed number
// of calls per level, so this also bounds its stack (a few MiB at most).
const maxJSONDepth = 10000

// smallObject is the member count up to which duplicate keys are found by a
// linear scan; larger objects use a map so that the check stays linear.
const smallObject = 16

var (
	errJSONTrailing = errors.New("trailing data after the first value")
	errJSONDepth    = errors.New("exceeded max depth")
)

// decodeJSONValue decodes data, which must hold exactly one JSON value with
// optional whitespace around it, into an ast.Value.
func decodeJSONValue(data []byte) (ast.Value, error) {
	d := jsonDecoder{data: data}
	d.skipSpace()
	if d.pos == len(d.data) {
		return nil, io.EOF
	}
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return nil, errJSONTrailing
	}
	return v, nil
}

// jsonDecoder holds the input and scratch space reused across the values of
// one document; it is not shared between documents.
type jsonDecoder struct {
	data  []byte
	pos   int
	depth int

	// stack holds the finished elements of every array and the members of
	// every object (key, value, key, value, …) still being decoded; each
	// container owns the tail from where it started. Collecting them here
	// lets the container be built once at its close, at its exact size.
	stack []ast.Value
	// pairs is the argument buffer for ast.NewObject, which copies it.
	pairs [][2]*ast.Term
	// keys[:nkeys] holds the first distinct plain object keys of the
	// document, see key; a fixed array, so the cache costs no allocation.
	keys  [keyCacheSize]ast.Value
	nkeys int
}

// keyCacheSize bounds the per-document key cache (and so the linear search
// in it): enough for the keys of a chat request's messages and tools.
const keyCacheSize = 32

// skipSpace skips the four bytes JSON allows as whitespace.
func (d *jsonDecoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// value decodes the value starting at d.pos, which must not be whitespace.
func (d *jsonDecoder) value() (ast.Value, error) {
	if d.pos >= len(d.data) {
		return nil, io.ErrUnexpectedEOF
	}
	switch c := d.data[d.pos]; c {
	case '{':
		return d.object()
	case '[':
		return d.array()
	case '"':
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		return ast.String(s), nil
	case 't':
		return d.literal("true", ast.InternedBooleanTrueValue)
	case 'f':
		return d.literal("false", ast.InternedBooleanFalseValue)
	case 'n':
		return d.literal("null", ast.NullValue)
	default:
		if c == '-' || isDigit(c) {
			return d.number()
		}
		return nil, d.syntaxError(d.pos, "looking for beginning of value")
	}
}

// literal decodes true, false or null, whose first byte was seen, as v.
func (d *jsonDecoder) literal(word string, v ast.Value) (ast.Value, error) {
	for i := range len(word) {
		p := d.pos + i
		if p >= len(d.data) {
			return nil, io.ErrUnexpectedEOF
		}
		if d.data[p] != word[i] {
			return nil, d.syntaxError(p, "in literal "+word)
		}
	}
	d.pos += len(word)
	return v, nil
}

// isDigit reports whether c is an ASCII decimal digit.
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// number decodes -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? and keeps its
// text, as json.Number did.
func (d *jsonDecoder) number() (ast.Value, error) {
	data, start, i := d.data, d.pos, d.pos
	if data[i] == '-' {
		i++
	}
	digits := func(what string) error {
		if i >= len(data) {
			return io.ErrUnexpectedEOF
		}
		if !isDigit(data[i]) {
			return d.syntaxError(i, what)
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
		return nil
	}
	switch {
	case i >= len(data):
		return nil, io.ErrUnexpectedEOF
	case data[i] == '0':
		i++
	default:
		if err := digits("in numeric literal"); err != nil {
			return nil, err
		}
	}
	integer := i
	if i < len(data) && data[i] == '.' {
		i++
		if err := digits("after decimal point in numeric literal"); err != nil {
			return nil, err
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if err := digits("in exponent of numeric literal"); err != nil {
			return nil, err
		}
	}
	d.pos = i
	text := data[start:i]
	// The interned terms are the integers "-1" to "512"; the short,
	// non-escaping conversion for the lookup does not allocate.
	if integer == i && len(text) <= 3 {
		if t := ast.InternedIntNumberTermFromString(string(text)); t != nil {
			return t.Value, nil
		}
	}
	n, err := ast.NumberChecked(string(text))
	if err != nil {
		return nil, err
	}
	return n, nil
}

// plainASCII marks the bytes a string copies as they are: printable ASCII
// other than the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := ' '; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str decodes the string starting at d.pos. A string with neither escapes
// nor invalid UTF-8, by far the common case, is a single conversion of the
// input bytes.
func (d *jsonDecoder) str() (string, error) {
	data := d.data
	start := d.pos + 1
	i := start
	for {
		for i < len(data) && plainASCII[data[i]] {
			i++
		}
		if i >= len(data) {
			return "", io.ErrUnexpectedEOF
		}
		switch c := data[i]; {
		case c == '"':
			d.pos = i + 1
			return string(data[start:i]), nil
		case c == '\\':
			return d.strSlow(start, i)
		case c < ' ':
			return "", d.syntaxError(i, "in string literal")
		default:
			_, size := utf8.DecodeRune(data[i:])
			if size == 1 {
				return d.strSlow(start, i)
			}
			i += size
		}
	}
}

// strSlow finishes a string that needs rewriting: data[start:i] is plain
// text, and data[i] is a backslash or the first byte of invalid UTF-8.
// The result is built at the size of the escaped text, which is at least
// that of the decoded text unless invalid UTF-8 is replaced.
func (d *jsonDecoder) strSlow(start, i int) (string, error) {
	data := d.data
	var b strings.Builder
	b.Grow(quotedLen(data[i:]) + i - start)
	b.Write(data[start:i])
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return b.String(), nil
		case c == '\\':
			if i+1 >= len(data) {
				return "", io.ErrUnexpectedEOF
			}
			switch e := data[i+1]; e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, ok := hex4(data, i+2)
				if !ok {
					return "", d.escapeError(i)
				}
				i += 6
				if utf16.IsSurrogate(r) {
					// Only a high half followed by an escaped low half makes a
					// rune; otherwise this escape alone becomes U+FFFD and the
					// next one is read on its own.
					r2, ok := rune(-1), false
					if i+1 < len(data) && data[i] == '\\' && data[i+1] == 'u' {
						r2, ok = hex4(data, i+2)
					}
					if r = utf16.DecodeRune(r, r2); ok && r != utf8.RuneError {
						i += 6
					}
				}
				b.WriteRune(r)
				continue
			default:
				return "", d.escapeError(i)
			}
			i += 2
		case c < ' ':
			return "", d.syntaxError(i, "in string literal")
		case c < utf8.RuneSelf:
			// Copy the run of plain ASCII up to the next byte that needs a look.
			j := i + 1
			for j < len(data) && plainASCII[data[j]] {
				j++
			}
			b.Write(data[i:j])
			i = j
		default:
			if _, size := utf8.DecodeRune(data[i:]); size > 1 {
				b.Write(data[i : i+size])
				i += size
			} else {
				b.WriteString("\uFFFD")
				i++
			}
		}
	}
	return "", io.ErrUnexpectedEOF
}

// quotedLen is the length of the string body at the start of data, up to its
// closing quote (or the end of data): the first quote not escaped by an odd
// run of backslashes.
func quotedLen(data []byte) int {
	i := 0
	for {
		q := bytes.IndexByte(data[i:], '"')
		if q < 0 {
			return len(data)
		}
		i += q
		n := 0
		for n < i && data[i-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			return i
		}
		i++
	}
}

// hex4 reads the four hex digits of a \u escape at data[i:i+4].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// enter and leave bracket each array and object, enforcing maxJSONDepth.
func (d *jsonDecoder) enter() error {
	d.depth++
	if d.depth > maxJSONDepth {
		return errJSONDepth
	}
	if d.stack == nil {
		// Enough for typical request bodies without regrowing.
		d.stack = make([]ast.Value, 0, 64)
	}
	d.pos++ // the opening bracket
	d.skipSpace()
	return nil
}

func (d *jsonDecoder) leave() { d.depth-- }

// array decodes the array starting at d.pos.
func (d *jsonDecoder) array() (ast.Value, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.leave()
	start := len(d.stack)
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		return ast.NewArray(), nil
	}
	for {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.stack = append(d.stack, v)
		d.skipSpace()
		if d.pos >= len(d.data) {
			return nil, io.ErrUnexpectedEOF
		}
		c := d.data[d.pos]
		d.pos++
		if c == ']' {
			break
		}
		if c != ',' {
			return nil, d.syntaxError(d.pos-1, "after array element")
		}
		d.skipSpace()
	}
	elems := d.stack[start:]
	// One block of terms and one of pointers, as ast.InterfaceToValue does.
	terms := make([]ast.Term, len(elems))
	ptrs := make([]*ast.Term, len(elems))
	for i, v := range elems {
		terms[i].Value = v
		ptrs[i] = &terms[i]
	}
	d.stack = d.stack[:start]
	return ast.NewArray(ptrs...), nil
}

// object decodes the object starting at d.pos.
func (d *jsonDecoder) object() (ast.Value, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.leave()
	start := len(d.stack)
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return ast.NewObject(), nil
	}
	for {
		if d.pos >= len(d.data) {
			return nil, io.ErrUnexpectedEOF
		}
		if d.data[d.pos] != '"' {
			return nil, d.syntaxError(d.pos, "looking for beginning of object key string")
		}
		key, err := d.key()
		if err != nil {
			return nil, err
		}
		d.skipSpace()
		if d.pos >= len(d.data) {
			return nil, io.ErrUnexpectedEOF
		}
		if d.data[d.pos] != ':' {
			return nil, d.syntaxError(d.pos, "after object key")
		}
		d.pos++
		d.skipSpace()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.stack = append(d.stack, key, v)
		d.skipSpace()
		if d.pos >= len(d.data) {
			return nil, io.ErrUnexpectedEOF
		}
		c := d.data[d.pos]
		d.pos++
		if c == '}' {
			break
		}
		if c != ',' {
			return nil, d.syntaxError(d.pos-1, "after object key:value pair")
		}
		d.skipSpace()
	}
	members := d.stack[start:]
	n := dedupeMembers(members)
	// ast.NewObject keeps no reference to its arguments, so the pairs buffer
	// is reused; the terms are one block, as in ast.InterfaceToValue.
	terms := make([]ast.Term, 2*n)
	if cap(d.pairs) < n {
		d.pairs = make([][2]*ast.Term, 0, max(n, 16))
	}
	pairs := d.pairs[:0]
	for i := range n {
		terms[2*i].Value = members[2*i]
		terms[2*i+1].Value = members[2*i+1]
		pairs = append(pairs, [2]*ast.Term{&terms[2*i], &terms[2*i+1]})
	}
	obj := ast.NewObject(pairs...)
	d.pairs = pairs[:0]
	d.stack = d.stack[:start]
	return obj, nil
}

// dedupeMembers compacts members (key, value, key, value, …) so that each key
// appears once, at its first position, holding its last value — what
// decoding into a map[string]any gives — and returns the number of members
// kept. ast.NewObject itself must not see a key twice.
func dedupeMembers(members []ast.Value) int {
	n := len(members) / 2
	kept := 0
	if n <= smallObject {
	next:
		for i := range n {
			k := members[2*i].(ast.String)
			for j := range kept {
				if members[2*j].(ast.String) == k {
					members[2*j+1] = members[2*i+1]
					continue next
				}
			}
			members[2*kept], members[2*kept+1] = members[2*i], members[2*i+1]
			kept++
		}
		return kept
	}
	index := make(map[ast.String]int, n)
	for i := range n {
		k := members[2*i].(ast.String)
		if j, ok := index[k]; ok {
			members[2*j+1] = members[2*i+1]
			continue
		}
		index[k] = kept
		members[2*kept], members[2*kept+1] = members[2*i], members[2*i+1]
		kept++
	}
	return kept
}

// key decodes the object key starting at d.pos. Request bodies repeat the
// same few keys (role, content, type, …) in every element of an array, so a
// key without escapes is looked up among those already seen in this
// document, which then share one value instead of allocating their own.
func (d *jsonDecoder) key() (ast.Value, error) {
	data := d.data
	start := d.pos + 1
	end := start
	for end < len(data) && plainASCII[data[end]] {
		end++
	}
	if end < len(data) && data[end] == '"' {
		for _, k := range d.keys[:d.nkeys] {
			if string(k.(ast.String)) == string(data[start:end]) {
				d.pos = end + 1
				return k, nil
			}
		}
	}
	s, err := d.str()
	if err != nil {
		return nil, err
	}
	k := ast.Value(ast.String(s))
	if d.pos == end+1 && d.nkeys < keyCacheSize {
		d.keys[d.nkeys] = k
		d.nkeys++
	}
	return k, nil
}

// syntaxError reports the byte at offset i, in the words encoding/json uses.
func (d *jsonDecoder) syntaxError(i int, context string) error {
	r, _ := utf8.DecodeRune(d.data[i:])
	return fmt.Errorf("invalid character %q %s (offset %d)", r, context, i)
}

// escapeError reports the escape sequence starting at offset i.
func (d *jsonDecoder) escapeError(i int) error {
	end := min(i+6, len(d.data))
	if d.data[i+1] != 'u' {
		end = i + 2
	}
	return fmt.Errorf("invalid escape sequence %q in string (offset %d)", d.data[i:end], i)
}
