package detect

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// HiddenText summarises invisible or direction-changing characters found in
// the original text. They are removed from the normalised view; the counts
// and the decoded smuggled text let policies decide.
type HiddenText struct {
	// TagChars counts Unicode tag characters (U+E0000..U+E007F), the block
	// used to smuggle invisible ASCII instructions.
	TagChars int
	// DecodedLen is the length in bytes of the text decoded from tag
	// characters and variation-selector smuggling.
	DecodedLen int
	// Bidi counts bidirectional embedding, override and isolate controls
	// (U+202A..U+202E, U+2066..U+2069).
	Bidi int
	// ZeroWidth counts zero-width and invisible characters removed
	// (ZWSP, word joiner, BOM, soft hyphen, fillers, and ZWJ/ZWNJ outside
	// emoji and complex scripts).
	ZeroWidth int
	// VariationSelectors counts variation selectors used outside their
	// legitimate places (after emoji or CJK ideographs).
	VariationSelectors int
	// Homoglyphs counts Cyrillic/Greek look-alike letters folded to Latin
	// inside words that mix scripts.
	Homoglyphs int
	// Encoded counts embedded base64, hex or percent-encoded runs that
	// decoded to text and were scanned too.
	Encoded int
}

// Any reports whether anything hidden was found.
func (h HiddenText) Any() bool {
	return h.TagChars > 0 || h.Bidi > 0 || h.ZeroWidth > 0 || h.VariationSelectors > 0
}

// Limits on decoding embedded encodings, so that pathological input stays bounded.
const (
	maxDecodeDepth = 2
	maxDecodeBytes = 64 << 10
	minB64Run      = 16
	minHexRun      = 16
)

// view is the cleaned text with a map back to the original bytes.
type view struct {
	b    []byte  // cleaned text (NFKC per rune, invisible characters removed)
	omap []int32 // omap[i] is the original byte offset of cleaned byte i; nil: identity
}

// origSpan maps a cleaned byte span to the original text.
func (v *view) origSpan(orig string, start, end int) (int, int) {
	if v.omap == nil {
		return start, end
	}
	os := int(v.omap[start])
	last := int(v.omap[end-1])
	_, size := utf8.DecodeRuneInString(orig[last:])
	return os, last + size
}

func isASCII(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if binary.LittleEndian.Uint64(unsafeBytes(s[i:i+8]))&0x8080808080808080 != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

type hiddenKind uint8

const (
	hkNone hiddenKind = iota
	hkTag
	hkBidi
	hkMark // bidi marks: removed silently
	hkZW
	hkSoftHyphen
	hkJoiner // ZWJ / ZWNJ: legitimate between non-ASCII runes
	hkVS     // variation selector
)

func classifyHidden(r rune) hiddenKind {
	switch {
	case r >= 0xE0000 && r <= 0xE007F:
		return hkTag
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069:
		return hkBidi
	case r == 0x200E || r == 0x200F || r == 0x061C:
		return hkMark
	case r == 0x200B || r == 0x2060 || (r >= 0x2061 && r <= 0x2064) || r == 0xFEFF ||
		r == 0x180E || r == 0x034F || r == 0x115F || r == 0x1160 || r == 0x3164 || r == 0xFFA0 ||
		r == 0x17B4 || r == 0x17B5:
		return hkZW
	case r == 0x00AD:
		return hkSoftHyphen
	case r == 0x200C || r == 0x200D:
		return hkJoiner
	case r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0100 && r <= 0xE01EF:
		return hkVS
	}
	return hkNone
}

func isASCIIAlnum(c byte) bool { return asciiClass[c]-acLetter < 2 }

// vsByte decodes a variation selector to the byte it smuggles.
func vsByte(r rune) byte {
	if r <= 0xFE0F {
		return byte(r - 0xFE00)
	}
	return byte(r - 0xE0100 + 16)
}

func isEmojiOrIdeo(r rune) bool {
	return r >= 0x2190 && (unicode.Is(unicode.So, r) || unicode.Is(unicode.Han, r) || r >= 0x1F000 ||
		unicode.Is(unicode.Sk, r) || r == 0x20E3)
}

// clean builds the cleaned view of text into s.clean / s.omap, records hidden
// characters in h and findings (merged runs) via s.addHidden.
func (s *scratch) clean(text string, h *HiddenText, report bool) view {
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
		if noCompat(r) {
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

// homoglyph folds Cyrillic and Greek letters that look like Latin ones.
func homoglyph(r rune) rune {
	switch r {
	case 'а', 'α':
		return 'a'
	case 'в', 'β':
		return 'b'
	case 'с', 'ϲ':
		return 'c'
	case 'ԁ':
		return 'd'
	case 'е', 'ε', 'ё':
		return 'e'
	case 'һ', 'η':
		return 'h'
	case 'і', 'ι', 'ї':
		return 'i'
	case 'ј':
		return 'j'
	case 'к', 'κ':
		return 'k'
	case 'ӏ':
		return 'l'
	case 'м':
		return 'm'
	case 'п':
		return 'n'
	case 'о', 'ο', 'σ':
		return 'o'
	case 'р', 'ρ':
		return 'p'
	case 'ԛ':
		return 'q'
	case 'г':
		return 'r'
	case 'ѕ':
		return 's'
	case 'т', 'τ':
		return 't'
	case 'υ':
		return 'u'
	case 'ν':
		return 'v'
	case 'ԝ', 'ω':
		return 'w'
	case 'х', 'χ':
		return 'x'
	case 'у', 'γ':
		return 'y'
	case 'ᴢ':
		return 'z'
	}
	return r
}

func leet(c byte) byte {
	switch c {
	case '0':
		return 'o'
	case '1':
		return 'i'
	case '3':
		return 'e'
	case '4', '@':
		return 'a'
	case '5', '$':
		return 's'
	case '7', '+':
		return 't'
	case '8':
		return 'b'
	}
	return c
}

func isWordRune(r rune) bool {
	switch {
	case r < utf8.RuneSelf:
		return isASCIIAlnum(byte(r)) || r == '@' || r == '$'
	case r >= 0x3040 && r <= 0x30FF, r >= 0x4E00 && r <= 0x9FFF, r >= 0xAC00 && r <= 0xD7A3:
		return true // kana, CJK ideographs, Hangul syllables
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r)
}

// lowerRune is unicode.ToLower with a fast path for caseless scripts.
func lowerRune(r rune) rune {
	if r >= 0x2E80 && r < 0xA640 || r >= 0xAC00 && r < 0xD7B0 {
		return r // CJK, kana, Hangul and other caseless blocks
	}
	return unicode.ToLower(r)
}

// fold appends the matching form of src to dst: lower case, whitespace runs
// collapsed, look-alike letters folded in mixed-script words, leetspeak folded
// in words that mix letters and digits, and spaced-out letters ("i g n o r e")
// joined.
func fold(dst, src []byte, h *HiddenText) []byte {
	var st foldStats
	return foldStat(dst, src, h, &st)
}

// foldStats reports what fold saw that later passes can use.
type foldStats struct {
	// long is set when a word of minEncodedWord or more ASCII letters and
	// digits, or a '%', occurred: only then can an encoded run be present.
	long bool
	// spaced is set when four single letters followed each other
	// ("i g n o r e"): only then can joinSpaced change anything.
	spaced  bool
	singles int
}

// minEncodedWord is the alphanumeric stretch whose presence turns decoding
// on, when it also holds a digit or an inner capital (long ordinary words,
// such as German compounds, do not). Hex runs are unbroken; '+' and '/' make up 1/32 of base64, so a
// base64 run of any length almost always holds a stretch this long, while
// ordinary words rarely reach it.
const minEncodedWord = 12

// foldStat is fold that also fills st.
func foldStat(dst, src []byte, h *HiddenText, st *foldStats) []byte {
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

// joinSpaced joins runs of at least four single letters separated by
// spaces ("i g n o r e" -> "ignore") in place and returns the new slice. In
// such a run a double space (kept by fold after a single letter) marks a
// word boundary: "y o u  a r e" -> "you are".
func joinSpaced(b []byte) []byte {
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

// decodeEmbedded finds base64, hex and percent-encoded runs in src and
// appends their decoded text (when it looks like text) to dst, each preceded
// by a newline. Bounded by maxDecodeBytes in total.
func decodeEmbedded(dst, src []byte, tmp []byte, h *HiddenText) ([]byte, []byte) {
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
		case pct == 0 && len(run) >= minB64Run && hasB64Mix(run):
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

func isB64Byte(c byte) bool { return b64Class[c] }

var b64Class = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		t[c] = 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '+' || b == '/' || b == '-' || b == '_'
	}
	return t
}()

func isHexByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hasB64Mix rejects plain words: base64 of text mixes cases and digits.
func hasB64Mix(run []byte) bool {
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

func appendB64Decoded(dst, run []byte) ([]byte, bool) {
	// Trim to a multiple of 4 after stripping padding; accept std and URL alphabets.
	for len(run) > 0 && run[len(run)-1] == '=' {
		run = run[:len(run)-1]
	}
	enc := base64.RawStdEncoding
	for _, c := range run {
		if c == '-' || c == '_' {
			enc = base64.RawURLEncoding
			break
		}
	}
	run = run[:len(run)-len(run)%4]
	n := enc.DecodedLen(len(run))
	if cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	m, err := enc.Decode(dst[:n], run)
	if err != nil {
		return dst[:0], false
	}
	return dst[:m], true
}

func appendPercentDecoded(dst, run []byte) ([]byte, bool) {
	for i := 0; i < len(run); i++ {
		if run[i] == '%' && i+2 < len(run) && isHexByte(run[i+1]) && isHexByte(run[i+2]) {
			dst = append(dst, unhex(run[i+1])<<4|unhex(run[i+2]))
			i += 2
			continue
		}
		dst = append(dst, run[i])
	}
	return dst, true
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// looksLikeText accepts valid UTF-8 whose runes are mostly printable and
// which contains letters.
func looksLikeText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	var bad, letters, n int
	for _, r := range unsafeString(b) {
		n++
		switch {
		case r == '\n' || r == '\r' || r == '\t':
		case r < 0x20 || r == 0x7f || r == utf8.RuneError:
			bad++
		case unicode.IsLetter(r):
			letters++
		}
	}
	return bad*20 <= n && letters*2 >= n
}

func isLower(c byte) bool    { return 'a' <= c && c <= 'z' }
func isWordByte(c byte) bool { return isASCIIAlnum(c) || c >= utf8.RuneSelf }

// ASCII byte classes for the fold fast path.
const (
	acOther = iota
	acLetter
	acDigit
	acLeet // '@' and '$' inside words
	acSpace
	acNewline
)

var asciiClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = acLetter
		t[c-'a'+'A'] = acLetter
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = acDigit
	}
	t['@'], t['$'] = acLeet, acLeet
	t[' '], t['\t'], t['\r'], t['\f'], t['\v'] = acSpace, acSpace, acSpace, acSpace, acSpace
	t['\n'] = acNewline
	return t
}()

// lowerTab lower-cases ASCII; leetTab also folds leetspeak digits.
var lowerTab, leetTab = func() (lo, le [256]byte) {
	for c := 0; c < 256; c++ {
		lo[c] = lowerASCII(byte(c))
		le[c] = leet(lo[c])
	}
	return lo, le
}()

func hasUpper(b []byte) bool {
	for _, c := range b {
		if isUpper(c) {
			return true
		}
	}
	return false
}

// noCompat reports blocks without compatibility-only decompositions
// (checked against golang.org/x/text/unicode/norm), so that clean can skip
// the normalisation tables for most running text in those scripts.
func noCompat(r rune) bool {
	switch {
	case r >= 0x400 && r <= 0x52F, // Cyrillic
		r >= 0x590 && r <= 0x5FF,   // Hebrew
		r >= 0x900 && r <= 0x97F,   // Devanagari
		r >= 0x3041 && r <= 0x3096, // Hiragana
		r >= 0x30A1 && r <= 0x30FA, // Katakana
		r >= 0x4E00 && r <= 0x9FFF, // CJK unified ideographs
		r >= 0xAC00 && r <= 0xD7A3: // Hangul syllables
		return true
	}
	return false
}
