package detect

// The fast paths of the detectors (litSet in place of Aho-Corasick for the
// prefilters, segment skipping in decodeEmbedded, trigger skipping in
// scanPII, the rune property cache in clean and fold, reordered checks in
// genericAssignment, cached entropy terms, ...) must not change any result.
// This file keeps the implementations they replaced, verbatim but renamed
// ...Ref, and compares the two on generated text (TestFastPathsMatchReference)
// and under the fuzzer (FuzzFastPaths).

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

var (
	_ = netip.ParseAddr
	_ = norm.NFKC
	_ = unicode.ToLower
	_ = strings.ToLower
)

// ---- reference implementations (as they were before the fast paths) ----

// clean builds the cleaned view of text into s.clean / s.omap, records hidden
// characters in h and findings (merged runs) via s.addHidden.
func (s *scratch) cleanRef(text string, h *HiddenText, report bool) view {
	if s.ascii {
		return view{b: unsafeBytes(text)}
	}
	out := slices.Grow(s.cleanBuf[:0], len(text)+len(text)/8)
	omap := slices.Grow(s.omap[:0], len(text)+len(text)/8)
	var prev rune = -1 // previous kept rune
	runStart, runEnd, runKind := -1, -1, hkNone
	flush := func() {
		if runStart >= 0 && report {
			switch runKind {
			case hkTag:
				s.addFinding(detHidden, "TAG_CHARACTERS", runStart, runEnd, 1)
			case hkBidi:
				s.addFinding(detHidden, "BIDI_CONTROL", runStart, runEnd, 1)
			case hkZW:
				s.addFinding(detHidden, "ZERO_WIDTH", runStart, runEnd, 0.8)
			case hkVS:
				s.addFinding(detHidden, "VARIATION_SELECTOR_SMUGGLING", runStart, runEnd, 1)
			}
		}
		runStart, runKind = -1, hkNone
	}
	mark := func(kind hiddenKind, i, j int) {
		if runStart >= 0 && (runKind != kind || runEnd != i) {
			flush()
		}
		if runStart < 0 {
			runStart, runKind = i, kind
		}
		runEnd = j
	}
	vsRun := 0
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			if runStart >= 0 && runEnd != i {
				flush()
			}
			// Copy the whole ASCII run at once.
			j := i + 1
			for j < len(text) && text[j] < utf8.RuneSelf {
				j++
			}
			n0 := len(out)
			out = append(out, text[i:j]...)
			omap = slices.Grow(omap, j-i)[:n0+j-i]
			for k := range j - i {
				omap[n0+k] = int32(i + k)
			}
			prev = rune(text[j-1])
			i = j
			vsRun = 0
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		j := i + size
		if r == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
			omap = append(omap, int32(i), int32(i), int32(i))
			prev = r
			i = j
			continue
		}
		switch classifyHidden(r) {
		case hkTag:
			h.TagChars++
			if r >= 0xE0020 && r <= 0xE007E && len(s.smuggled) < maxDecodeBytes {
				s.smuggled = append(s.smuggled, byte(r-0xE0000))
				h.DecodedLen++
			}
			mark(hkTag, i, j)
			i = j
			continue
		case hkBidi:
			h.Bidi++
			mark(hkBidi, i, j)
			i = j
			continue
		case hkMark:
			i = j
			continue
		case hkSoftHyphen:
			h.ZeroWidth++
			i = j
			continue
		case hkZW:
			h.ZeroWidth++
			// Suspicious when it splits ASCII words or comes in runs.
			nextASCII := j < len(text) && isASCIIAlnum(text[j])
			if (prev >= 0 && prev < utf8.RuneSelf && isASCIIAlnum(byte(prev)) && nextASCII) || (runStart >= 0 && runKind == hkZW && runEnd == i) {
				mark(hkZW, i, j)
			} else if j < len(text) {
				if r2, _ := utf8.DecodeRuneInString(text[j:]); classifyHidden(r2) == hkZW {
					mark(hkZW, i, j)
				}
			}
			i = j
			continue
		case hkJoiner:
			nr, _ := utf8.DecodeRuneInString(text[j:])
			if j < len(text) && prev >= utf8.RuneSelf && nr >= utf8.RuneSelf {
				// Emoji ZWJ sequences, Indic and Arabic-script joiners: keep.
				out = append(out, text[i:j]...)
				for k := i; k < j; k++ {
					omap = append(omap, int32(i))
				}
				i = j
				continue
			}
			h.ZeroWidth++
			mark(hkZW, i, j)
			i = j
			continue
		case hkVS:
			vsRun++
			legit := vsRun == 1 && prev >= 0 && isEmojiOrIdeo(prev)
			if !legit {
				h.VariationSelectors++
				if len(s.smuggled) < maxDecodeBytes {
					s.smuggled = append(s.smuggled, vsByte(r))
					h.DecodedLen++
				}
				if vsRun >= 2 {
					mark(hkVS, i, j)
				}
			}
			i = j
			continue
		}
		vsRun = 0
		if runStart >= 0 && runEnd != i {
			flush()
		}
		n0 := len(out)
		// NFKC of a single rune without allocating: compatibility
		// decompositions (fullwidth, ligatures, math letters, circled digits)
		// are applied; canonical composites (é) stay as they are, which is
		// what NFKC recomposes them to.
		if f, changed := foldRune(r); changed && r < copyLen {
			if f == "" {
				i = j
				continue
			}
			out = append(out, f...)
		} else if r < copyLen {
			out = append(out, text[i:j]...)
		} else if d := norm.NFKC.PropertiesString(text[i:j]).Decomposition(); d != nil && norm.NFC.PropertiesString(text[i:j]).Decomposition() == nil {
			out = append(out, d...)
		} else {
			out = append(out, text[i:j]...)
		}
		for k := n0; k < len(out); k++ {
			omap = append(omap, int32(i))
		}
		prev = r
		i = j
	}
	flush()
	s.cleanBuf, s.omap = out, omap
	return view{b: out, omap: omap}
}

// foldStat is fold that also fills st.
func foldStatRef(dst, src []byte, h *HiddenText, st *foldStats) []byte {
	dst = slices.Grow(dst, len(src)+1)
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			switch asciiClass[c] {
			case acSpace, acNewline:
				// Collapse whitespace runs to one space, or one newline
				// when the run holds a newline.
				nl := false
				i0 := i
				for i < len(src) && (asciiClass[src[i]] == acSpace || asciiClass[src[i]] == acNewline) {
					nl = nl || src[i] == '\n'
					i++
				}
				if n := len(dst); n > 0 && dst[n-1] != ' ' && dst[n-1] != '\n' {
					switch {
					case nl:
						dst = append(dst, '\n')
					case i-i0 >= 2 && isLower(dst[n-1]) && (n == 1 || !isWordByte(dst[n-2])):
						// Keep a word gap in spaced-out text for joinSpaced.
						dst = append(dst, ' ', ' ')
					default:
						dst = append(dst, ' ')
					}
				} else if nl && n > 0 && dst[n-1] == ' ' {
					dst[n-1] = '\n'
				}
				continue
			case acOther:
				if c == '%' {
					st.long = true
				}
				st.singles = 0
				dst = append(dst, c)
				i++
				continue
			}
			// ASCII word fast path.
			j := i
			digits := 0
			for j < len(src) {
				k := asciiClass[src[j]]
				if k-acLetter > acLeet-acLetter { // not letter, digit or leet symbol
					break
				}
				digits += int(k >> 1) // acDigit and acLeet
				j++
			}
			letters := j - i - digits
			if j-i == 1 && letters == 1 {
				st.singles++
				if st.singles >= 4 {
					st.spaced = true
				}
			} else {
				st.singles = 0
			}
			if j-i >= minEncodedWord && !st.long && (digits > 0 || hasUpper(src[i+1:j])) {
				st.long = true
			}
			if j == len(src) || src[j] < utf8.RuneSelf {
				n0 := len(dst)
				dst = slices.Grow(dst, j-i)[:n0+j-i]
				w, word := dst[n0:], src[i:j]
				tab := &lowerTab
				if digits > 0 && letters >= 2 {
					tab = &leetTab
				}
				for k, c := range word {
					w[k] = tab[c]
				}
				i = j
				continue
			}
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(unsafeString(src[i:]))
		}
		if !isWordRune(r) {
			if unicode.IsSpace(r) {
				if n := len(dst); n > 0 && dst[n-1] != ' ' && dst[n-1] != '\n' {
					dst = append(dst, ' ')
				}
			} else {
				dst = utf8.AppendRune(dst, unicode.ToLower(r))
			}
			i += size
			continue
		}
		// A word: find its end and classify.
		j := i
		var latin, digits, letters, confusable int
		for j < len(src) {
			r, sz := rune(src[j]), 1
			if src[j] >= utf8.RuneSelf {
				r, sz = utf8.DecodeRuneInString(unsafeString(src[j:]))
			}
			if !isWordRune(r) {
				break
			}
			switch {
			case r < utf8.RuneSelf && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'):
				latin++
				letters++
			case r < utf8.RuneSelf:
				digits++
			default:
				letters++
				if r < 0x530 || r == 0x1D22 { // Greek and Cyrillic hold the look-alikes
					if lr := unicode.ToLower(r); homoglyph(lr) != lr {
						confusable++
					}
				}
			}
			j += sz
		}
		foldGlyphs := confusable > 0 && latin > 0
		foldLeet := digits > 0 && latin > 0 && latin+confusable >= 2
		for k := i; k < j; {
			r, sz := rune(src[k]), 1
			if src[k] >= utf8.RuneSelf {
				r, sz = utf8.DecodeRuneInString(unsafeString(src[k:]))
			}
			if r < utf8.RuneSelf {
				b := byte(r)
				if 'A' <= b && b <= 'Z' {
					b += 'a' - 'A'
				} else if foldLeet {
					b = leet(b)
				}
				dst = append(dst, b)
			} else {
				lr := lowerRune(r)
				if foldGlyphs {
					if g := homoglyph(lr); g != lr {
						lr = g
						if h != nil {
							h.Homoglyphs++
						}
					}
				}
				dst = utf8.AppendRune(dst, lr)
			}
			k += sz
		}
		i = j
	}
	return dst
}

// decodeEmbedded finds base64, hex and percent-encoded runs in src and
// appends their decoded text (when it looks like text) to dst, each preceded
// by a newline. Bounded by maxDecodeBytes in total.
func decodeEmbeddedRef(dst, src []byte, tmp []byte, h *HiddenText) ([]byte, []byte) {
	for i := 0; i < len(src) && len(dst) < maxDecodeBytes; {
		c := src[i]
		if !isB64Byte(c) && c != '%' {
			i++
			continue
		}
		// Cheap pre-check: a run must reach the minimum length.
		if c != '%' && (i+minB64Run > len(src) || !isB64Byte(src[i+minB64Run/2]) || !isB64Byte(src[i+minB64Run-1])) {
			for i < len(src) && isB64Byte(src[i]) {
				i++
			}
			continue
		}
		j := i
		hexOnly, pct := true, 0
		for j < len(src) && (isB64Byte(src[j]) || src[j] == '%' || src[j] == '=') {
			if src[j] == '%' {
				pct++
			} else if !isHexByte(src[j]) {
				hexOnly = false
			}
			j++
		}
		run := src[i:j]
		i = j
		var ok bool
		tmp = tmp[:0]
		switch {
		case pct >= 2:
			tmp, ok = appendPercentDecoded(tmp, run)
		case hexOnly && pct == 0 && len(run) >= minHexRun && len(run)%2 == 0:
			if cap(tmp) < len(run)/2 {
				tmp = make([]byte, 0, len(run)/2)
			}
			n, err := hex.Decode(tmp[:len(run)/2], run)
			tmp, ok = tmp[:n], err == nil
		case pct == 0 && len(run) >= minB64Run && hasB64MixRef(run):
			tmp, ok = appendB64Decoded(tmp, run)
		}
		if !ok || len(tmp) < 4 || !looksLikeText(tmp) {
			continue
		}
		if h != nil {
			h.Encoded++
		}
		if len(tmp) > maxDecodeBytes-len(dst) {
			tmp = tmp[:maxDecodeBytes-len(dst)]
		}
		dst = append(dst, '\n')
		dst = append(dst, tmp...)
	}
	return dst, tmp
}

// hasB64Mix rejects plain words: base64 of text mixes cases and digits.
func hasB64MixRef(run []byte) bool {
	var up, low, dig int
	for _, c := range run {
		switch {
		case 'A' <= c && c <= 'Z':
			up++
		case 'a' <= c && c <= 'z':
			low++
		case '0' <= c && c <= '9':
			dig++
		}
	}
	return up > 0 && low > 0 && (dig > 0 || up*4 > len(run))
}

// scanPII finds the six Presidio pattern types in one pass over b. Candidates
// start only at token boundaries and are confirmed by validators (Luhn,
// mod-97, SSN ranges, IP parsing).
func (s *scratch) scanPIIRef(b []byte, minScore float64) {
	add := func(typ string, i, j int, score float64) {
		if score >= minScore {
			s.addClean(detPII, typ, i, j, score)
		}
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '@' {
			if st, en, ok := matchEmail(b, i); ok {
				add(TypeEmail, st, en, 1.0)
				i = en - 1
			}
			continue
		}
		if i > 0 && identTab[b[i-1]] {
			// Inside a word: jump to its end ('@' and separators stop the jump).
			if isASCIIAlnum(c) {
				for i+1 < len(b) && identTab[b[i+1]] {
					i++
				}
			}
			continue
		}
		if i >= 2 && (b[i-1] == '.' || b[i-1] == '-') && isDigit(b[i-2]) {
			continue // inside a dotted or dashed number
		}
		switch {
		case isDigit(c) || c == '+' || c == '(':
			if en, typ, score := matchNumeric(b, i); en > i {
				add(typ, i, en, score)
				i = en - 1
				continue
			}
			if isDigit(c) {
				// Do not restart inside a rejected chain of digit groups.
				j := i
				for j < len(b) && (isDigit(b[j]) || (b[j] == ' ' || b[j] == '-' || b[j] == '.') && j+1 < len(b) && isDigit(b[j+1])) {
					j++
				}
				if j > i+1 && !(j < len(b) && b[j] == ':') {
					i = j - 1
					continue
				}
			}
			if (isHexByte(c) || c == ':') && colonSoon(b, i) {
				if en, ok := matchIPv6Ref(b, i); ok {
					add(TypeIPAddress, i, en, 0.95)
					i = en - 1
				}
			}
		case isLetter(c):
			if i+3 < len(b) && isDigit(b[i+2]) && isDigit(b[i+3]) {
				if en, ok := matchIBAN(b, i); ok {
					add(TypeIBAN, i, en, 1.0)
					i = en - 1
					continue
				}
			}
			if isHexByte(c) && colonSoon(b, i) {
				if en, ok := matchIPv6Ref(b, i); ok {
					add(TypeIPAddress, i, en, 0.95)
					i = en - 1
				}
			}
		case c == ':':
			if i+1 < len(b) && b[i+1] == ':' {
				if en, ok := matchIPv6Ref(b, i); ok {
					add(TypeIPAddress, i, en, 0.95)
					i = en - 1
				}
			}
		}
	}
}

func matchIPv6Ref(b []byte, i int) (int, bool) {
	// A colon must come within the first five bytes.
	k := i
	for k < len(b) && k-i < 5 && b[k] != ':' {
		k++
	}
	if k >= len(b) || b[k] != ':' {
		return 0, false
	}
	j := i
	colons, hexd := 0, 0
	for j < len(b) && j-i < 45 {
		c := b[j]
		if isHexByte(c) {
			hexd++
		} else if c == ':' {
			colons++
		} else if c != '.' {
			break
		}
		j++
	}
	for j > i && (b[j-1] == '.' || (b[j-1] == ':' && (j-2 < i || b[j-2] != ':'))) {
		if b[j-1] == ':' {
			colons--
		}
		j--
	}
	if colons < 2 || hexd < 2 || j < len(b) && (isASCIIAlnum(b[j]) || b[j] == '_') {
		return 0, false
	}
	a, err := netip.ParseAddr(unsafeString(b[i:j]))
	if err != nil || !a.Is6() {
		return 0, false
	}
	return j, true
}

// entropy is the Shannon entropy of v in bits per byte.
func entropyRef(v []byte) float64 {
	if len(v) == 0 {
		return 0
	}
	var counts [256]int
	for _, c := range v {
		counts[c]++
	}
	h := 0.0
	n := float64(len(v))
	for _, k := range counts {
		if k > 0 {
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// isPlaceholder reports documentation placeholders such as
// AKIAIOSFODNN7EXAMPLE or "your_api_key".
func isPlaceholderRef(v []byte) bool {
	for _, p := range placeholders {
		if containsFold(v, p) {
			return true
		}
	}
	return false
}

// isVarRef reports values that reference a variable rather than hold a
// secret: $VAR, ${VAR}, %VAR%, {{ var }}, <var>, env lookups, code calls.
func isVarRefRef(v []byte) bool {
	if len(v) == 0 {
		return true
	}
	switch v[0] {
	case '$', '%', '<', '{', '[', '(', '@', '&', '*':
		return true
	}
	for _, p := range []string{"env", "getenv", "process.", "os.", "config.", "settings.", "secrets.", "vault:", "self.", "this.", "args.", "request."} {
		if len(v) >= len(p) && strings.EqualFold(string(v[:len(p)]), p) {
			return true
		}
	}
	return false
}

// genericAssignment is the generic secret check as scanSecrets runs it
// (genericValue, then genericVerify), for one hit and without the memo.
func genericAssignment(b []byte, ks, ke int) (int, int, string, float64, bool) {
	g, ok := genericValue(b, ks, ke, nil)
	if !ok {
		return 0, 0, "", 0, false
	}
	typ, score, ok := genericVerify(b[g.st:g.en], b[g.is:g.ie], g.password)
	if !ok {
		return 0, 0, "", 0, false
	}
	return int(g.st), int(g.en), typ, score, true
}

// genericAssignmentRef verifies "identifier op value" around a keyword at
// [ks, ke): the keyword must sit inside an identifier, followed by an
// assignment operator and a value that is neither a variable reference nor a
// placeholder and, for non-password keywords, random-looking.
func genericAssignmentRef(b []byte, ks, ke int) (int, int, string, float64, bool) {
	// Identifier bounds.
	is := ks
	for is > 0 && isIdentByte(b[is-1]) && ks-is < 40 {
		is--
	}
	ie := ke
	for ie < len(b) && isIdentByte(b[ie]) && ie-ke < 40 {
		ie++
	}
	ident := b[is:ie]
	for _, w := range genericStop {
		if containsFold(ident, w) {
			return 0, 0, "", 0, false
		}
	}
	if containsFold(ident, "author") && !containsFold(ident, "authoriz") {
		return 0, 0, "", 0, false
	}
	kw := b[ks:ke]
	if len(kw) <= 4 {
		// Short keywords must end the identifier and start a word in it.
		if ie != ke || (ks > is && isLetter(b[ks-1]) && !(isUpper(b[ks]) && !isUpper(b[ks-1]))) {
			return 0, 0, "", 0, false
		}
	}
	password := containsFold(ident, "pass") || containsFold(ident, "pw") || containsFold(ident, "psw") ||
		containsFold(ident, "pssw") || containsFold(kw, "contrase") || containsFold(kw, "senha")
	// Command-line flags and macro definitions take a value after a space.
	flag := len(ident) > 0 && ident[0] == '-' || precededByWordRef(b, is, "define") || precededByWordRef(b, is, "set") ||
		precededByWordRef(b, is, "global")
	st, en, ok := assignedValueMemo(b, ie, password, flag, nil)
	if !ok {
		return 0, 0, "", 0, false
	}
	v := b[st:en]
	if len(v) < 4 || len(v) > 4096 || isVarRefRef(v) || isPlaceholderRef(v) || allSame(v) || isCodeValue(v) {
		return 0, 0, "", 0, false
	}
	lv := strings.ToLower(string(v))
	switch lv {
	case "true", "false", "yes", "no", "on", "off", "required", "optional", "string", "str", "int", "bool",
		"password", "secret", "token", "hidden", "masked", "empty", "value", "admin", "user", "default", "test",
		"keep", "none", "null", "nil", "your", "the", "is", "was", "for":
		return 0, 0, "", 0, false
	}
	if password {
		if len(v) < 6 || entropyRef(v) < 2.3 || isWordsOnly(v) {
			return 0, 0, "", 0, false
		}
		return st, en, TypePassword, 0.8, true
	}
	if len(v) < 12 || entropyRef(v) < 3.2 || !(allClasses(v) || len(v) >= 20 && entropyRef(v) >= 3.5 && mixedClasses(v)) || isWordsOnly(v) {
		return 0, 0, "", 0, false
	}
	return st, en, TypeGenericSecret, 0.7, true
}

// precededByWord reports whether word (ASCII, any case) and spaces come
// right before position i.
func precededByWordRef(b []byte, i int, word string) bool {
	j := i
	for j > 0 && (b[j-1] == ' ' || b[j-1] == '\t') {
		j--
	}
	if j == i || j < len(word) {
		return false
	}
	return strings.EqualFold(string(b[j-len(word):j]), word) && (j == len(word) || !isASCIIAlnum(b[j-len(word)-1]))
}

func measureRef(text string, ascii bool) Length {
	l := Length{Bytes: len(text)}
	if ascii {
		l.Chars = len(text)
		l.EstimatedTokens = (len(text) + 3) / 4
		return l
	}
	nascii, cjk, other := 0, 0, 0
	for _, r := range text {
		l.Chars++
		switch {
		case r < utf8.RuneSelf:
			nascii++
		case r >= 0x3040 && r <= 0x30FF, r >= 0x3400 && r <= 0x9FFF, r >= 0xAC00 && r <= 0xD7AF, r >= 0xF900 && r <= 0xFAFF, r >= 0x20000 && r <= 0x3FFFF:
			// Kana, CJK ideographs, Hangul: about one token each.
			cjk++
		default:
			other++
		}
	}
	l.EstimatedTokens = (nascii+3)/4 + cjk + (other+1)/2
	return l
}

// joinSpaced joins runs of at least four single letters separated by
// spaces ("i g n o r e" -> "ignore") in place and returns the new slice. In
// such a run a double space (kept by fold after a single letter) marks a
// word boundary: "y o u  a r e" -> "you are".
func joinSpacedRef(b []byte) []byte {
	single := func(p int) bool {
		return p < len(b) && isLower(b[p]) && (p == 0 || !isWordByte(b[p-1])) && (p+1 == len(b) || !isWordByte(b[p+1]))
	}
	w := 0
	for i := 0; i < len(b); {
		if single(i) {
			k, n := i, 0
			for {
				n++
				if k+2 < len(b) && b[k+1] == ' ' && single(k+2) {
					k += 2
					continue
				}
				if k+3 < len(b) && b[k+1] == ' ' && b[k+2] == ' ' && single(k+3) {
					k += 3
					continue
				}
				break
			}
			end := k + 1
			if n >= 4 {
				for m := i; m < end; m++ {
					if b[m] == ' ' {
						if b[m+1] == ' ' {
							b[w] = ' '
							w++
							m++
						}
						continue
					}
					b[w] = b[m]
					w++
				}
				i = end
				continue
			}
		}
		b[w] = b[i]
		w++
		i++
	}
	return b[:w]
}

// refSecretCands is the secrets prefilter as it was: one Aho-Corasick pass
// over the rule prefixes and generic keywords, case-sensitive rules
// checked afterwards. It returns (start, id) pairs.
func refSecretCands(m *matcher, b []byte) [][2]int {
	n := len(secretRules)
	var out [][2]int
	m.scan(b, func(id, end int) bool {
		var l int
		if id < n {
			r := &secretRules[id]
			l = len(r.prefix)
			if !r.fold && string(b[end-l:end]) != r.prefix {
				return true
			}
		} else {
			l = len(genericKeywords[id-n])
		}
		out = append(out, [2]int{end - l, id})
		return true
	})
	return out
}

var refSecretMatcher = func() *matcher {
	pats := make([]string, 0, len(secretRules)+len(genericKeywords))
	for _, r := range secretRules {
		pats = append(pats, r.prefix)
	}
	pats = append(pats, genericKeywords...)
	return newMatcher(pats)
}()

func sortedPairs(p [][2]int) [][2]int {
	slices.SortFunc(p, func(a, b [2]int) int {
		if c := cmp.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return cmp.Compare(a[1], b[1])
	})
	return p
}

func sortedHits(h []kwHit) []kwHit {
	h = slices.Clone(h)
	slices.SortFunc(h, func(a, b kwHit) int {
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.end, b.end); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	return h
}

// checkFastPaths compares every fast path with its reference on text.
func checkFastPaths(t *testing.T, sc *Scanner, text string) {
	t.Helper()
	fail := func(what string, got, want any) {
		t.Helper()
		t.Fatalf("%s differs on %q:\n got %v\nwant %v", what, text, got, want)
	}
	// Length.
	if got, want := measure(text, isASCII(text)), measureRef(text, isASCII(text)); got != want {
		fail("measure", got, want)
	}
	if got, want := runeCount(text), utf8.RuneCountInString(text); got != want {
		fail("runeCount", got, want)
	}
	// Clean view.
	s1, s2 := new(scratch), new(scratch)
	s1.reset(text)
	s2.reset(text)
	var h1, h2 HiddenText
	v1 := s1.clean(text, &h1, true)
	v2 := s2.cleanRef(text, &h2, true)
	if !bytes.Equal(v1.b, v2.b) || !slices.Equal(v1.omap, v2.omap) || (v1.omap == nil) != (v2.omap == nil) {
		fail("clean", v1, v2)
	}
	if h1 != h2 || !bytes.Equal(s1.smuggled, s2.smuggled) || !slices.Equal(s1.finds, s2.finds) {
		fail("clean (hidden)", []any{h1, s1.smuggled, s1.finds}, []any{h2, s2.smuggled, s2.finds})
	}
	s1.view, s2.view = v1, v2
	b := v1.b
	// Fold, on the clean view and on raw bytes (decoded text is folded too).
	for _, src := range [][]byte{b, []byte(text)} {
		var st1, st2 foldStats
		var g1, g2 HiddenText
		f1 := foldStat(nil, src, &g1, &st1)
		f2 := foldStatRef(nil, src, &g2, &st2)
		if !bytes.Equal(f1, f2) || st1 != st2 || g1 != g2 {
			fail("foldStat", []any{string(f1), st1, g1}, []any{string(f2), st2, g2})
		}
		if j1, j2 := joinSpaced(slices.Clone(f1)), joinSpacedRef(slices.Clone(f1)); !bytes.Equal(j1, j2) {
			fail("joinSpaced", string(j1), string(j2))
		}
	}
	// Decoding.
	{
		var g1, g2 HiddenText
		d1, _ := decodeEmbedded(nil, b, nil, &g1)
		d2, _ := decodeEmbeddedRef(nil, b, nil, &g2)
		if !bytes.Equal(d1, d2) || g1 != g2 {
			fail("decodeEmbedded", []any{d1, g1}, []any{d2, g2})
		}
	}
	// PII.
	s1.finds, s2.finds = s1.finds[:0], s2.finds[:0]
	s1.scanPII(b, 0.3)
	s2.scanPIIRef(b, 0.3)
	if !slices.Equal(s1.finds, s2.finds) {
		fail("scanPII", s1.finds, s2.finds)
	}
	for i := range b {
		want := i
		for want < len(b) && !piiTrigger[b[want]] {
			want++
		}
		if got := nextTrigger(b, i); got != want {
			fail(fmt.Sprintf("nextTrigger from %d", i), got, want)
		}
		e1, ok1 := matchIPv6(b, i)
		e2, ok2 := matchIPv6Ref(b, i)
		if e1 != e2 || ok1 != ok2 {
			fail(fmt.Sprintf("matchIPv6 at %d", i), e1, e2)
		}
	}
	// Secrets prefilter and the generic assignment check.
	var got [][2]int
	sc.secrets.scan(b, func(id, start int) bool {
		got = append(got, [2]int{start, id})
		return true
	})
	want := refSecretCands(refSecretMatcher, b)
	if !reflect.DeepEqual(sortedPairs(got), sortedPairs(want)) {
		fail("secrets prefilter", got, want)
	}
	for _, c := range want {
		if c[1] < len(secretRules) {
			continue
		}
		ks, ke := c[0], c[0]+len(genericKeywords[c[1]-len(secretRules)])
		a1, b1, t1, sc1, ok1 := genericAssignment(b, ks, ke)
		a2, b2, t2, sc2, ok2 := genericAssignmentRef(b, ks, ke)
		if a1 != a2 || b1 != b2 || t1 != t2 || sc1 != sc2 || ok1 != ok2 {
			fail(fmt.Sprintf("genericAssignment at %d", ks), []any{a1, b1, t1, sc1, ok1}, []any{a2, b2, t2, sc2, ok2})
		}
	}
	// The value-end memo (shared by the hits in their scan order) finds the
	// values a fresh search finds.
	var vm valueMemo
	for _, c := range sortedPairs(want) {
		if c[1] < len(secretRules) {
			continue
		}
		ks, ke := c[0], c[0]+len(genericKeywords[c[1]-len(secretRules)])
		g1, ok1 := genericValue(b, ks, ke, &vm)
		g2, ok2 := genericValue(b, ks, ke, nil)
		if g1 != g2 || ok1 != ok2 {
			fail(fmt.Sprintf("genericValue with memo at %d", ks), []any{g1, ok1}, []any{g2, ok2})
		}
	}
	for i := 0; i < len(b); i += 7 {
		v := b[i:min(len(b), i+1+i%48)]
		if e1, e2 := entropy(v), entropyRef(v); e1 != e2 && !(math.IsNaN(e1) && math.IsNaN(e2)) {
			fail("entropy", e1, e2)
		}
		if p1, p2 := isPlaceholder(v), isPlaceholderRef(v); p1 != p2 {
			fail(fmt.Sprintf("isPlaceholder(%q)", v), p1, p2)
		}
		if r1, r2 := isVarRef(v), isVarRefRef(v); r1 != r2 {
			fail(fmt.Sprintf("isVarRef(%q)", v), r1, r2)
		}
		for _, w := range []string{"define", "set", "global"} {
			if p1, p2 := precededByWord(b, i, w), precededByWordRef(b, i, w); p1 != p2 {
				fail("precededByWord", p1, p2)
			}
		}
	}
	// Injection keywords and the model's sums.
	f := sc.foldText(s1, &h1)
	if k1, k2 := sortedHits(sc.inj.keywordHits(f, s1)), sortedHits(sc.inj.keywordHitsAC(f, nil)); !slices.Equal(k1, k2) {
		fail("keyword hits", k1, k2)
	}
	q := sc.inj.q
	ws, nw := wordSum(f, q.w, 16)
	s16, n16 := sums16(f, (*[1 << 16]int16)(q.w))
	if s16 != gramSum(f, q.w, 16)+ws || n16 != nw {
		fail("sums16", []any{s16, n16}, []any{gramSum(f, q.w, 16) + ws, nw})
	}
	for _, win := range []int{4, 5, 16, 100, windowLen} {
		if len(f) < 2*win {
			continue
		}
		a, h, t := q.dotWindows(f, win)
		if a != q.dot(f) || h != q.dot(f[:win]) || t != q.dot(f[len(f)-win:]) {
			fail(fmt.Sprintf("dotWindows(%d)", win), []float64{a, h, t}, []float64{q.dot(f), q.dot(f[:win]), q.dot(f[len(f)-win:])})
		}
	}
	for i := 0; i+8 <= len(b); i++ {
		x := uint64(0)
		for k := 7; k >= 0; k-- {
			x = x<<8 | uint64(lowerASCII(b[i+k]))
		}
		if got := lower8(leUint64(b[i:])); got != x {
			fail("lower8", got, x)
		}
		word, dig := wordMasks(leUint64(b[i:]))
		for k := range 8 {
			c := b[i+k]
			cls := asciiClass[c]
			isWord := c < utf8.RuneSelf && cls >= acLetter && cls <= acLeet
			isDig := c < utf8.RuneSelf && (cls == acDigit || cls == acLeet)
			if (word>>(8*k+7)&1 == 1) != isWord || (dig>>(8*k+7)&1 == 1) != isDig {
				fail(fmt.Sprintf("wordMasks byte %d of %q", k, b[i:i+8]), []uint64{word, dig}, []bool{isWord, isDig})
			}
		}
	}
}

func leUint64(b []byte) uint64 {
	var x uint64
	for k := 7; k >= 0; k-- {
		x = x<<8 | uint64(b[k])
	}
	return x
}

// genText builds text with the shapes every detector looks at, their near
// misses, and hostile Unicode.
func genText(rng *rand.Rand, n int) string {
	var words []string
	for _, r := range injRules {
		for _, g := range r.groups {
			words = append(words, g...)
		}
	}
	for _, r := range secretRules {
		words = append(words, r.prefix)
	}
	words = append(words, genericKeywords...)
	words = append(words, placeholders...)
	words = append(words, "the", "a", "I", "of", "Hello", "WORLD", "café", "naïve", "Straße", "Привет", "мир", "Ιgnore", "іgnore", "你好",
		"世界", "ｆｕｌｌ", "ﬁle", "e\u0301", "1gn0r3", "p4ssw0rd", "i g n o r e", "y o u  a r e  n o w", "a b c", "A B C D E", "x  y  z  w", "version 1.2.3.4", "v2.0.1", "call me", "tel:",
		"10:30:00", "fe80::1", "dead:beef::1", "cafe::", "::abcd", "abcd:ef01:2345:6789:abcd:ef01:2345:6789", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "a:b:c:d:e:f:0:1:2", "::", ":::", "DE89 3704 0044 0532 0130 00",
		"gb82west12345698765432", "4111-1111-1111-1111", "378282246310005", "054-28-6917", "123-45-6789", "+1 (415) 555-0132",
		"+44 20 7946 0958", "2023-01-15", "15.01.2023", "jane.doe@example.org", "x@y", "@@", "%41%42%43", "%zz%", "==", "SELECT", "PASSWORD 'x'")
	alnum := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	rnd := func(k int, alpha string) string {
		b := make([]byte, k)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	seps := []string{" ", " ", " ", "  ", "   ", "\n", "\n\n", "\t", " \n ", "=", " = ", ": ", ":", "\"", "'", "`", ",", ".", ";", "(", ")",
		"{", "}", "[", "]", "<", ">", "/", "\\", "%", "|", "?", "!", "#", "-", "_", "+", "@", "$", "&", "*", "~", "^",
		"\u200b", "\u200d", "\u00ad", "\u202e", "\u2066", "\ufe0f", "\U000E0041", "\U000E0020", "\U000E0100", "👩\u200d💻",
		"\xff", "\xc3", "\xe2\x80", "\u3000", "\u00a0", "\u2028", "。", "、", "«", "»", "—"}
	var b strings.Builder
	for b.Len() < n {
		switch rng.IntN(12) {
		case 0, 1, 2, 3:
			w := words[rng.IntN(len(words))]
			switch rng.IntN(4) {
			case 0:
				w = strings.ToUpper(w)
			case 1:
				w = strings.ToLower(w)
			}
			b.WriteString(w)
		case 4:
			b.WriteString(rnd(1+rng.IntN(60), alnum+"_-"))
		case 5:
			raw := []byte(genWords(rng, words, 2+rng.IntN(8)))
			switch rng.IntN(3) {
			case 0:
				b.WriteString(base64.StdEncoding.EncodeToString(raw))
			case 1:
				b.WriteString(hex.EncodeToString(raw))
			default:
				for _, c := range raw {
					fmt.Fprintf(&b, "%%%02X", c)
				}
			}
		case 6:
			switch rng.IntN(3) {
			case 0:
				fmt.Fprintf(&b, "%d", rng.IntN(1<<rng.IntN(60)))
			case 1: // IPv6-like: hex groups, maybe letters only, maybe "::"
				groups := 2 + rng.IntN(7)
				for g := range groups {
					if g > 0 {
						b.WriteString([]string{":", ":", ":", "::"}[rng.IntN(4)])
					}
					b.WriteString(rnd(1+rng.IntN(4), []string{"abcdef", "0123456789abcdefABCDEF"}[rng.IntN(2)]))
				}
			default: // IBAN-like
				b.WriteString(rnd(2, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") + rnd(2, "0123456789") + rnd(4+rng.IntN(26), alnum+" "))
			}
		case 7:
			w := genericKeywords[rng.IntN(len(genericKeywords))]
			fmt.Fprintf(&b, "%s%s%s", w, seps[rng.IntN(16)], rnd(rng.IntN(40), alnum+"!#$%&*+-./:<=>?@^_~"))
		case 8:
			r := secretRules[rng.IntN(len(secretRules))]
			b.WriteString(r.prefix + rnd(r.min+rng.IntN(r.max-r.min+2), alnum+"_-"))
		default:
			b.WriteString(seps[rng.IntN(len(seps))])
		}
		if rng.IntN(3) > 0 {
			b.WriteString(seps[rng.IntN(6)])
		}
	}
	return b.String()
}

func genWords(rng *rand.Rand, words []string, k int) string {
	parts := make([]string, k)
	for i := range parts {
		parts[i] = words[rng.IntN(len(words))]
	}
	return strings.Join(parts, " ")
}

func TestFastPathsMatchReference(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	rng := rand.New(rand.NewPCG(11, 12))
	n := 1500
	if testing.Short() {
		n = 200
	}
	for i := 0; i < n; i++ {
		checkFastPaths(t, sc, genText(rng, 1+rng.IntN(1200)))
	}
	for _, s := range fuzzSeeds {
		checkFastPaths(t, sc, s)
	}
	if c := benchCorpus(); c.real {
		// Some rows of the shared data, when it is there.
		for _, rows := range c.sources {
			for i := 0; i < len(rows); i += max(1, len(rows)/150) {
				checkFastPaths(t, sc, rows[i][:min(len(rows[i]), 8192)])
			}
		}
	}
}

// FuzzFastPaths compares the fast paths with their references on any input.
func FuzzFastPaths(f *testing.F) {
	addSeeds(f)
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		f.Add(genText(rng, 300))
	}
	sc, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		checkFastPaths(t, sc, text)
	})
}
