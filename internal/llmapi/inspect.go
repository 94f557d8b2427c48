package llmapi

import (
	"bytes"
	"encoding/base64"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// RoleOther is the Message role of request text outside the conversation:
// tool and function descriptions, parameter schemas, response_format
// schemas, message names, prediction content, text files sent as data:
// URLs, and every string of a field this package does not know. The model
// reads them (or an upstream may), so they are inspected by default;
// callers that filter roles should always scan RoleOther.
const RoleOther = ""

// safeKeys are the members whose string values are not offered to the
// detectors, at any depth of a known API's request: identifiers, enums and
// names the APIs restrict to identifier characters. A value is skipped only
// when it also looks like one (see identifierShaped): a sentence or an
// e-mail address in a safe field is still inspected. This list is
// documented in README.md (Detectors: what is inspected).
var safeKeys = map[string]bool{
	"model": true, "role": true, "type": true, "id": true, "object": true, "status": true,
	"name": true, "call_id": true, "tool_call_id": true, "tool_use_id": true, "item_id": true,
	"previous_response_id": true, "response_id": true, "file_id": true, "custom_id": true,
	"tool_choice": true, "service_tier": true, "reasoning_effort": true, "effort": true,
	"verbosity": true, "truncation": true, "encoding_format": true, "media_type": true,
	"mime_type": true, "detail": true, "format": true, "voice": true, "modalities": true,
	"include": true, "version": true, "prompt_cache_key": true, "safety_identifier": true,
	"summary": true, "method": true,
}

// Skipped reports whether the request sweep leaves the string value of a
// member named key unread: key is on the safe list and value is
// identifier-shaped. Tests use it to know what may reach an upstream.
func Skipped(key, value string) bool {
	return safeKeys[key] && identifierShaped([]byte(value))
}

// maxIdentifier bounds what counts as an identifier-shaped value.
const maxIdentifier = 128

// identifierShaped reports whether s (a string token's raw content) is a
// short run of letters, digits and _ - . : / + = — what ids, enums, model
// names and media types look like, and what prose, e-mail addresses and
// injected instructions do not.
func identifierShaped(raw []byte) bool {
	if len(raw) == 0 || len(raw) > maxIdentifier {
		return false
	}
	for _, c := range raw {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '-', c == '.', c == ':', c == '/', c == '+', c == '=':
		default:
			return false
		}
	}
	return true
}

// minBase64File is the shortest bare base64 string (a "data" or
// "file_data" member) decoded as a file: a shorter one is more likely a
// credential in base64's alphabet and is scanned as it stands, since a
// secret that happened to decode to text would otherwise be read only
// decoded.
const minBase64File = 64

// maxBinaryScan is the length up to which a string that decodes to binary
// (an image or PDF sent as base64) is still scanned as it stands: a short
// one may be a credential in base64's alphabet, a long one is a file.
const maxBinaryScan = 4096

// sweep adds every string value of the body that the API walk did not
// collect and that is not an identifier in a safe field, in document
// order, as one RoleOther message. This is what makes the request side
// inspect by default: a field the walk does not know (a description, a
// schema, a new API field) is still read by the detectors and still
// redacted.
func (r *reqScanner) sweep() {
	b := r.b
	covered := r.coveredRanges()
	ci := 0
	first := true
	eachMemberString(b, r.top.obj, func(key []byte, s vspan) {
		for ci < len(covered) && covered[ci].e <= s.s {
			ci++
		}
		if ci < len(covered) && covered[ci].s <= s.s {
			return // already read by the API walk
		}
		if skipValue(b, key, s) {
			return
		}
		if first {
			// All swept strings form one message, after the conversation.
			r.texts.boundary()
			first = false
		}
		r.addValue(RoleOther, key, s)
	})
}

// skipValue reports whether the string token s of member key is left
// unread by the sweep: it is empty, or an identifier in a safe field (see
// Skipped).
func skipValue(b, key []byte, s vspan) bool {
	return s.e-s.s <= 2 || safeKeys[string(key)] && identifierShaped(b[s.s+1:s.e-1])
}

// coveredRanges returns the spans the API walk collected, sorted by start.
func (r *reqScanner) coveredRanges() []vspan {
	spans := r.texts.spans
	if len(spans) == 0 {
		return nil
	}
	out := make([]vspan, len(spans))
	for i, t := range spans {
		out[i] = t.v
	}
	if !slices.IsSortedFunc(out, func(a, b vspan) int { return a.s - b.s }) {
		slices.SortFunc(out, func(a, b vspan) int { return a.s - b.s })
	}
	return out
}

// addValue adds the string s of member key, decoding a data: URL or a
// base64 file payload when what it carries is text. A binary payload is
// not scanned (the detectors read text) unless it is short.
func (r *reqScanner) addValue(role string, key []byte, s vspan) {
	b := r.b
	raw := b[s.s+1 : s.e-1]
	switch {
	case hasPrefixFold(raw, "data:"):
		if kind, ok := dataURLKind(unquote(b[s.s:s.e])); ok {
			if kind != textString || s.e-s.s <= maxBinaryScan {
				r.texts.add(role, s, kind)
			}
			return
		}
	case (string(key) == "data" || string(key) == "file_data") && len(raw) >= minBase64File && isBase64(raw):
		if _, ok := decodeText(raw); ok {
			r.texts.add(role, s, textBase64)
		} else if s.e-s.s <= maxBinaryScan {
			r.texts.add(role, s, textString)
		}
		return
	}
	r.texts.add(role, s, textString)
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && strings.EqualFold(string(b[:len(p)]), p)
}

// dataURLKind reports how to read a data: URL: textDataURL when its
// payload decodes to text, textString (the URL as it stands) when it is
// binary; ok is false when s is not a well-formed data: URL.
func dataURLKind(s string) (textKind, bool) {
	_, _, _, ok := splitDataURL(s)
	if !ok {
		return 0, false
	}
	if _, ok := dataURLText(s); ok {
		return textDataURL, true
	}
	return textString, true
}

// splitDataURL splits "data:[<media type>][;base64],<payload>" into its
// header (up to and including the comma), whether it is base64, and the
// payload.
func splitDataURL(s string) (header string, b64 bool, payload string, ok bool) {
	if len(s) < 5 || !strings.EqualFold(s[:5], "data:") {
		return "", false, "", false
	}
	comma := strings.IndexByte(s, ',')
	if comma < 0 {
		return "", false, "", false
	}
	header, payload = s[:comma+1], s[comma+1:]
	meta := strings.ToLower(header[:len(header)-1])
	return header, strings.HasSuffix(meta, ";base64"), payload, true
}

// dataURLText returns the text a data: URL carries, when it is text (valid
// UTF-8 without NUL bytes), whatever media type it claims: a text file
// labelled image/png is still text to a model that reads it.
func dataURLText(s string) (string, bool) {
	_, b64, payload, ok := splitDataURL(s)
	if !ok {
		return "", false
	}
	if b64 {
		return decodeText([]byte(payload))
	}
	t, err := url.PathUnescape(payload)
	if err != nil || !isText([]byte(t)) {
		return "", false
	}
	return t, true
}

// encodeDataURL rebuilds a data: URL of the same header around text.
func encodeDataURL(orig, text string) string {
	header, b64, _, _ := splitDataURL(orig)
	if b64 {
		return header + base64.StdEncoding.EncodeToString([]byte(text))
	}
	return header + url.PathEscape(text)
}

// sniffLen is how many base64 characters are decoded to decide whether a
// payload is text before decoding all of it.
const sniffLen = 1368 // 1026 bytes

// decodeText decodes standard base64 (padded or not) and returns it when
// it is text. A payload whose first kilobyte is binary is rejected without
// decoding the rest, so a large image costs little.
func decodeText(raw []byte) (string, bool) {
	enc := base64.StdEncoding
	if len(raw)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	if len(raw) > sniffLen && enc == base64.StdEncoding {
		head := make([]byte, enc.DecodedLen(sniffLen))
		n, err := enc.Decode(head, raw[:sniffLen])
		if err != nil || !isTextPrefix(head[:n]) {
			return "", false
		}
	}
	out := make([]byte, enc.DecodedLen(len(raw)))
	n, err := enc.Decode(out, raw)
	if err != nil || !isText(out[:n]) {
		return "", false
	}
	return ownedString(out[:n]), true
}

func isBase64(raw []byte) bool {
	for _, c := range raw {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '+', c == '/', c == '=':
		default:
			return false
		}
	}
	return true
}

// isText reports whether b is UTF-8 without NUL bytes.
func isText(b []byte) bool { return bytes.IndexByte(b, 0) < 0 && utf8.Valid(b) }

// isTextPrefix is isText for a prefix cut at any byte: a rune split at the
// end is allowed.
func isTextPrefix(b []byte) bool {
	if bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return !utf8.FullRune(b[i:])
		}
		i += size
	}
	return true
}

// eachMemberString calls fn with every string value inside the container
// at v, at any depth, in document order, with the key of the member that
// holds it: the member itself, or for an array element the member holding
// the array (nil at the top or inside nested arrays without one). It is
// one linear pass with an explicit stack, so hostile nesting costs no Go
// stack.
func eachMemberString(b []byte, v vspan, fn func(key []byte, s vspan)) {
	if v.s < 0 || v.e > len(b) || v.s >= v.e {
		return
	}
	type frame struct {
		obj bool
		key []byte
	}
	var buf [16]frame
	stack := buf[:0]
	var lastKey []byte
	// holder is the key of the member a value at the current depth
	// belongs to.
	holder := func() []byte {
		n := len(stack)
		switch {
		case n == 0:
			return nil
		case stack[n-1].obj:
			return lastKey
		}
		return stack[n-1].key
	}
	for i := v.s; i < v.e; {
		switch b[i] {
		case '"':
			end := stringEnd(b, i)
			if end < 0 || end > v.e {
				return
			}
			if j := skipWS(b, end); j < len(b) && b[j] == ':' {
				lastKey = b[i+1 : end-1]
				if bytes.IndexByte(lastKey, '\\') >= 0 {
					lastKey = []byte(unquote(b[i:end]))
				}
			} else {
				fn(holder(), vspan{i, end})
			}
			i = end
			continue
		case '{', '[':
			stack = append(stack, frame{obj: b[i] == '{', key: holder()})
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
		i++
	}
}
