// Package redact rewrites the spans that detectors find (PII, secrets,
// canary tokens) in prompts and model outputs before they leave Bulwark, so
// that an upstream model or a downstream client never sees the values.
//
// A Redactor applies Rules to findings in a whole text (Apply, Text). A Stream
// does the same for text that arrives in pieces, such as the deltas of a
// server-sent-events response, where a secret may be split across events: it
// holds back only the suffix that could still be (or lead up to) a finding,
// a word or two of ordinary prose and at most a bounded window, and releases
// the rest. Its output depends on the concatenated input
// alone, never on how that input was split into events, so the same
// response is redacted byte for byte the same however it is chunked.
//
// Redactor is safe for concurrent use; a Stream belongs to one response.
package redact

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// Action says how a matched span is rewritten.
type Action string

const (
	// Replace writes "[REDACTED:<TYPE>]": readers (and the model) learn what
	// kind of value was there, which keeps the text coherent, but not the value.
	Replace Action = "replace"
	// Mask writes '*' for every rune of the value, keeping the last four runes
	// of values of twelve runes or more, so that a card or account number
	// stays recognisable to its owner ("***************1111") and nothing else.
	Mask Action = "mask"
	// Hash writes "[<TYPE>:<16 hex digits>]", the start of HMAC-SHA256(key,
	// value): equal values give equal tokens, so a conversation or an audit
	// trail stays correlatable without revealing the value. Without a key it is
	// plain SHA-256, which is guessable for low-entropy values such as phone
	// numbers; configure a key in production.
	Hash Action = "hash"
	// Remove deletes the span: what the markup detector finds (an unsafe
	// link's destination and brackets, an image from a host outside the
	// allow-list, script-like HTML) is markup, not a value a reader needs
	// to know was there; the link's text stays.
	Remove Action = "remove"
)

// DetectorCanary is the Finding.Detector of literal matches (canary tokens
// planted in system prompts or documents), so that rules and policies can
// tell a leaked canary from a detector's finding.
const DetectorCanary = "canary"

// CanaryType is the Finding.Type of a literal configured with an empty type,
// so that every canary finding has a type to count by.
const CanaryType = "CANARY"

// Rule selects findings to redact and says how. A finding matches when its
// Detector equals Detector and, if Types is not empty, its Type is one of
// Types.
type Rule struct {
	// Detector is the Finding.Detector the rule applies to:
	// detect.DetectorPII, detect.DetectorSecrets, DetectorCanary,
	// detect.DetectorHidden. Empty matches every detector, for a catch-all
	// last rule. Compared case-insensitively.
	Detector string
	// Types restricts the rule to these Finding.Type values (EMAIL_ADDRESS,
	// AWS_ACCESS_KEY_ID, ...), compared case-insensitively; empty means every
	// type of the detector.
	Types []string
	// Action is applied to matching findings. Empty or unknown actions act as
	// Replace, so that a typo in configuration redacts rather than leaks;
	// Rules.Validate reports them.
	Action Action
}

// Rules is an ordered rule list: the first matching rule decides a finding's
// action, and when findings overlap, the earliest rule among them decides the
// merged span's type and action, so operators express priority by order.
type Rules []Rule

// Validate reports the first rule with an unknown action, naming it by index,
// so that configuration errors surface at load time instead of as silent
// Replace.
func (r Rules) Validate() error {
	for i, rule := range r {
		switch rule.Action {
		case Replace, Mask, Hash, Remove:
		default:
			return fmt.Errorf("redact: rules[%d] (detector %q): unknown action %q (want %q, %q, %q or %q)", i, rule.Detector, rule.Action, Replace, Mask, Hash, Remove)
		}
	}
	return nil
}

// Action reports the first matching rule's action for a finding, and false
// when no rule matches (the finding is then left in the text).
func (r Rules) Action(f detect.Finding) (Action, bool) {
	i := r.match(f)
	if i < 0 {
		return "", false
	}
	return r[i].action(), true
}

// match returns the index of the first rule matching f, or -1.
func (r Rules) match(f detect.Finding) int {
	for i := range r {
		rule := &r[i]
		if rule.Detector != "" && !strings.EqualFold(rule.Detector, f.Detector) {
			continue
		}
		if len(rule.Types) == 0 {
			return i
		}
		for _, t := range rule.Types {
			if strings.EqualFold(t, f.Type) {
				return i
			}
		}
	}
	return -1
}

func (rule *Rule) action() Action {
	switch rule.Action {
	case Mask, Hash, Remove:
		return rule.Action
	default:
		return Replace
	}
}

// Redactor rewrites findings in text according to Rules. It is immutable
// after New and safe for concurrent use; a nil *Redactor redacts nothing.
type Redactor struct {
	rules Rules
	// keyed says Hash is HMAC-SHA256 with the key folded into ipad and
	// opad (RFC 2104), precomputed so that hashing a span allocates nothing.
	keyed      bool
	ipad, opad [sha256.BlockSize]byte
}

// New builds a Redactor. key is the HMAC key for Hash (nil or empty means
// plain SHA-256). rules and key are copied, so later changes by the caller do
// not race with redaction.
func New(rules Rules, key []byte) *Redactor {
	r := &Redactor{rules: make(Rules, len(rules))}
	for i, rule := range rules {
		rule.Types = slices.Clone(rule.Types)
		r.rules[i] = rule
	}
	if len(key) > 0 {
		r.keyed = true
		if len(key) > sha256.BlockSize {
			k := sha256.Sum256(key)
			key = k[:]
		}
		copy(r.ipad[:], key)
		copy(r.opad[:], key)
		for i := range r.ipad {
			r.ipad[i] ^= 0x36
			r.opad[i] ^= 0x5c
		}
	}
	return r
}

// digest is HMAC-SHA256(key, value), or SHA-256(value) without a key.
func (r *Redactor) digest(value string) [sha256.Size]byte {
	var scratch [256]byte // values up to 192 bytes are hashed without allocating
	if !r.keyed {
		return sha256.Sum256(append(scratch[:0], value...))
	}
	inner := sha256.Sum256(append(append(scratch[:0], r.ipad[:]...), value...))
	return sha256.Sum256(append(append(scratch[:0], r.opad[:]...), inner[:]...))
}

// span is one matched finding reduced to what rewriting needs.
type span struct {
	start, end int
	rule       int
	typ        string
}

// Apply redacts findings in text and reports how many spans it replaced.
// Findings carry byte offsets into text (ByteStart, ByteEnd); Start and End
// are ignored. Findings that no rule matches are left alone, and so are
// findings outside text or with ByteStart >= ByteEnd. Offsets inside a UTF-8
// character are widened to whole characters. Overlapping matched findings
// are merged into their union and rewritten once, with the type and action
// of the earliest rule among them (the earliest finding on a tie). findings
// need not be sorted.
func (r *Redactor) Apply(text string, findings []detect.Finding) (string, int) {
	if r == nil || len(findings) == 0 || len(r.rules) == 0 {
		return text, 0
	}
	var stack [8]span
	spans := stack[:0]
	for i := range findings {
		f := &findings[i]
		bs, be, ok := bounds(text, f.ByteStart, f.ByteEnd)
		if !ok {
			continue
		}
		ri := r.rules.match(*f)
		if ri < 0 {
			continue
		}
		spans = append(spans, span{start: bs, end: be, rule: ri, typ: f.Type})
	}
	if len(spans) == 0 {
		return text, 0
	}
	slices.SortStableFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })

	var b strings.Builder
	b.Grow(len(text) + 24*len(spans))
	pos, n := 0, 0
	for i := 0; i < len(spans); {
		g := spans[i]
		start, end := g.start, g.end
		j := i + 1
		for ; j < len(spans) && spans[j].start < end; j++ {
			end = max(end, spans[j].end)
			if spans[j].rule < g.rule {
				g = spans[j]
			}
		}
		b.WriteString(text[pos:start])
		r.rewrite(&b, r.rules[g.rule].action(), g.typ, text[start:end])
		pos, n, i = end, n+1, j
	}
	b.WriteString(text[pos:])
	return b.String(), n
}

// rewrite writes the replacement for value.
func (r *Redactor) rewrite(b *strings.Builder, a Action, typ, value string) {
	if typ == "" {
		typ = "UNKNOWN"
	}
	switch a {
	case Remove:
	case Mask:
		n := utf8.RuneCountInString(value)
		tail := ""
		if n >= 12 {
			i := len(value)
			for k := 0; k < 4; k++ {
				_, size := utf8.DecodeLastRuneInString(value[:i])
				i -= size
			}
			tail, n = value[i:], n-4
		}
		for k := 0; k < n; k++ {
			b.WriteByte('*')
		}
		b.WriteString(tail)
	case Hash:
		sum := r.digest(value)
		var hx [16]byte
		hex.Encode(hx[:], sum[:8])
		b.WriteByte('[')
		b.WriteString(typ)
		b.WriteByte(':')
		b.Write(hx[:])
		b.WriteByte(']')
	default:
		b.WriteString("[REDACTED:")
		b.WriteString(typ)
		b.WriteByte(']')
	}
}

// bounds validates a byte span against text and widens it to whole UTF-8
// characters, so that a rewrite never leaves half a character behind.
func bounds(text string, bs, be int) (int, int, bool) {
	if bs < 0 || be > len(text) || bs >= be {
		return 0, 0, false
	}
	for k := 0; k < utf8.UTFMax-1 && bs > 0 && !utf8.RuneStart(text[bs]); k++ {
		bs--
	}
	for k := 0; k < utf8.UTFMax-1 && be < len(text) && !utf8.RuneStart(text[be]); k++ {
		be++
	}
	return bs, be, true
}

// Text redacts a whole text, such as a buffered request or response body:
// it scans text once with sc (nil skips scanning), adds exact matches of the
// literals (value → type, Detector DetectorCanary; empty values are
// ignored), and applies the rules. It returns the redacted text, every
// finding (matched by a rule or not, sorted by ByteStart, offsets into the
// original text) for policy signals, and the number of spans replaced.
func (r *Redactor) Text(sc Scanner, text string, literals map[string]string) (string, []detect.Finding, int) {
	var finds []detect.Finding
	if sc != nil {
		finds = appendClean(nil, sc.Scan(text).Findings, text)
	}
	if len(literals) > 0 {
		finds = appendLiterals(finds, text, compileLiterals(literals))
	}
	sortFindings(finds)
	setCodePoints(finds, text, 0)
	out, n := r.Apply(text, finds)
	return out, finds, n
}

// literal is one string reported as a canary finding, with its
// normalised form (see normalise).
type literal struct {
	value, typ string
	norm       string
	// buf holds norm when it fits, so that compiling a canary-sized
	// literal costs no allocation beyond the slice.
	buf [48]byte
}

// compileLiterals turns the literal map into a slice sorted by value, so
// that matching does not depend on map iteration order. Empty values are
// dropped: they would match everywhere.
func compileLiterals(m map[string]string) []literal {
	lits := make([]literal, 0, len(m))
	for v, t := range m {
		if v == "" {
			continue
		}
		if t == "" {
			t = CanaryType
		}
		lits = append(lits, literal{value: v, typ: t})
	}
	slices.SortFunc(lits, func(a, b literal) int { return strings.Compare(a.value, b.value) })
	// After sorting, which moves the elements: norm may point into buf.
	for i := range lits {
		l := &lits[i]
		n := appendNormal(l.buf[:0], l.value)
		if len(n) <= len(l.buf) && len(n) > 0 && &n[0] == &l.buf[0] {
			l.norm = unsafe.String(&l.buf[0], len(n)) // #nosec G103 -- buf is never written again
		} else {
			l.norm = string(n)
		}
	}
	return lits
}

// ContainsLiteral reports whether text contains lit as appendLiterals
// matches it: exactly, or in its normalised form.
func ContainsLiteral(text, lit string) bool {
	if lit == "" {
		return false
	}
	return len(appendLiterals(nil, text, compileLiterals(map[string]string{lit: ""}))) > 0
}

// fold maps a character to the form literals are compared in: fullwidth
// ASCII to ASCII, then lower case. It reports false for characters that do
// not count (anything but letters and digits).
func fold(r rune) (rune, bool) {
	if r < utf8.RuneSelf {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r, true
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A'), true
		}
		return r, false
	}
	if r >= 0xFF01 && r <= 0xFF5E { // fullwidth forms of ASCII
		return fold(r - (0xFF01 - 0x21))
	}
	if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
		return r, false
	}
	return unicode.ToLower(r), true
}

// appendNormal appends the normalised form of s to dst: its letters and
// digits, folded (see fold), the form a literal is matched in, so that a
// canary written upper-cased, spaced out ("b w c - 1 2 …"), with
// punctuation, zero-width or other format characters between its
// characters, or in fullwidth forms, still matches.
func appendNormal(dst []byte, s string) []byte {
	for _, r := range s {
		if f, ok := fold(r); ok {
			dst = utf8.AppendRune(dst, f)
		}
	}
	return dst
}

// appendLiterals appends a finding for every non-overlapping occurrence of
// each literal in text, matched on the normalised view (see normalise) and
// reported over the original bytes from its first to its last character;
// a literal without letters or digits matches exactly. It allocates nothing
// beyond the findings.
func appendLiterals(dst []detect.Finding, text string, lits []literal) []detect.Finding {
	for _, l := range lits {
		if l.norm == "" {
			dst = appendExact(dst, text, l)
			continue
		}
		first, _ := utf8.DecodeRuneInString(l.norm)
		if first >= utf8.RuneSelf {
			// Every character is a candidate start.
			for i := 0; i < len(text); {
				dst, i = matchAt(dst, text, i, &l, first)
			}
			continue
		}
		// Candidate starts are the few bytes a match can begin with: the
		// first character in either case, or the lead byte of a character
		// that may fold to it. Each is found with a fast byte search, and
		// each next position is searched again only once passed.
		lo := l.norm[0] // first < utf8.RuneSelf: one ASCII byte
		up := lo
		if up >= 'a' && up <= 'z' {
			up -= 'a' - 'A'
		}
		leads := [...]byte{lo, up, 0xEF, 0xE2, 0xC4}
		var next [len(leads)]int
		for k := range next {
			next[k] = -1
		}
		for i := 0; i < len(text); {
			at := len(text)
			for k, c := range leads {
				if next[k] < i && next[k] != len(text) {
					if j := strings.IndexByte(text[i:], c); j >= 0 {
						next[k] = i + j
					} else {
						next[k] = len(text)
					}
				}
				at = min(at, next[k])
			}
			if at == len(text) {
				break
			}
			dst, i = matchAt(dst, text, at, &l, first)
		}
	}
	return dst
}

// matchAt tries a match of l starting at the character at text[at:], whose
// folded form must be first (the first character of l.norm). It appends the
// finding when l matches there and returns where the search goes on: after
// the match, or after that character.
func matchAt(dst []detect.Finding, text string, at int, l *literal, first rune) ([]detect.Finding, int) {
	r, size := utf8.DecodeRuneInString(text[at:])
	if f, ok := fold(r); ok && f == first {
		if end, ok := matchFrom(text, at, l.norm); ok {
			return append(dst, detect.Finding{Detector: DetectorCanary, Type: l.typ, ByteStart: at, ByteEnd: end, Score: 1}), end
		}
	}
	return dst, at + size
}

// matchFrom reports whether the folded letters and digits of text from i
// on begin with norm, and where the last of them ends.
func matchFrom(text string, i int, norm string) (int, bool) {
	j, end := 0, i
	for k := i; k < len(text) && j < len(norm); {
		r, size := utf8.DecodeRuneInString(text[k:])
		k += size
		f, ok := fold(r)
		if !ok {
			continue
		}
		n, nsize := utf8.DecodeRuneInString(norm[j:])
		if f != n {
			return 0, false
		}
		j += nsize
		end = k
	}
	return end, j == len(norm)
}

// appendExact appends a finding for every exact occurrence of l.
func appendExact(dst []detect.Finding, text string, l literal) []detect.Finding {
	for off := 0; off <= len(text)-len(l.value); {
		i := strings.Index(text[off:], l.value)
		if i < 0 {
			break
		}
		bs := off + i
		dst = append(dst, detect.Finding{Detector: DetectorCanary, Type: l.typ, ByteStart: bs, ByteEnd: bs + len(l.value), Score: 1})
		off = bs + len(l.value)
	}
	return dst
}

// appendClean appends the findings that lie inside text, widened to whole
// characters, dropping the rest, so that a misbehaving Scanner cannot make
// later slicing panic.
func appendClean(dst, finds []detect.Finding, text string) []detect.Finding {
	for _, f := range finds {
		bs, be, ok := bounds(text, f.ByteStart, f.ByteEnd)
		if !ok {
			continue
		}
		f.ByteStart, f.ByteEnd = bs, be
		dst = append(dst, f)
	}
	return dst
}

// sortFindings orders findings by ByteStart, keeping the relative order of
// equal starts (scanner findings before literals).
func sortFindings(f []detect.Finding) {
	if !slices.IsSortedFunc(f, cmpStart) {
		slices.SortStableFunc(f, cmpStart)
	}
}

func cmpStart(a, b detect.Finding) int { return cmp.Compare(a.ByteStart, b.ByteStart) }

// setCodePoints sets Start and End from the byte offsets of findings sorted
// by ByteStart, counting code points of text as Go does (an invalid byte is
// one), plus base.
func setCodePoints(finds []detect.Finding, text string, base int) {
	pos, cp := 0, base
	for i := range finds {
		f := &finds[i]
		cp += utf8.RuneCountInString(text[pos:f.ByteStart])
		pos = f.ByteStart
		f.Start = cp
		f.End = cp + utf8.RuneCountInString(text[f.ByteStart:f.ByteEnd])
	}
}
