package detect

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	mbits "math/bits"
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
	e := last + size
	// Marks the view dropped after the span's last character belong to
	// it: redacting the span removes them too.
	for e < len(orig) && orig[e] >= 0xCC {
		r, sz := utf8.DecodeRuneInString(orig[e:])
		if !dropMark(r) {
			break
		}
		e += sz
	}
	return os, e
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

// asciiRun returns the length of the run of ASCII bytes at the start of s,
// eight bytes at a time.
func asciiRun(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if binary.LittleEndian.Uint64(unsafeBytes(s[i:i+8]))&0x8080808080808080 != 0 {
			break
		}
	}
	for i < len(s) && s[i] < utf8.RuneSelf {
		i++
	}
	return i
}

// runeCount is utf8.RuneCountInString with ASCII runs counted eight bytes
// at a time.
func runeCount(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			k := asciiRun(s[i:])
			n += k
			i += k
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return n
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
	ut := uniTables()
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
			j := i + 1 + asciiRun(text[i+1:])
			n0 := len(out)
			out = append(out, text[i:j]...)
			omap = slices.Grow(omap, j-i)[:n0+j-i]
			fillSeq(omap[n0:], int32(i))
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
		// The matching form of the rune (foldRune, matchfold.go) without
		// allocating: most runes are copied; the others come from the
		// table; above it, NFKC's compatibility decompositions.
		if ut.copyAsIs(r) {
			out = append(out, text[i:j]...)
		} else if f, ok := ut.replacement(r); ok {
			if f == "" {
				i = j // a decorating combining mark: dropped
				continue
			}
			if isFlipRune(r) {
				s.flips++
			}
			out = append(out, f...)
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

// fillSeq sets o[k] = base+k, four at a time.
func fillSeq(o []int32, base int32) {
	k := 0
	for ; k+4 <= len(o); k += 4 {
		q := o[k : k+4 : k+4]
		b := base + int32(k)
		q[0], q[1], q[2], q[3] = b, b+1, b+2, b+3
	}
	for ; k < len(o); k++ {
		o[k] = base + int32(k)
	}
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
	var ut *uniTab // fetched at the first non-ASCII rune
	slow := newSlowRune()
outer:
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			switch asciiClass[c] {
			case acSpace, acNewline:
				// Collapse whitespace runs to one space, or one newline
				// when the run holds a newline.
				nlBits := uint8(0)
				i0 := i
				for ; i < len(src); i++ {
					k := asciiClass[src[i]]
					if k < acSpace {
						break
					}
					nlBits |= k // acNewline is the only odd class from acSpace up
				}
				nl := nlBits&1 != 0
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
			// ASCII word fast path: classify and lower-case in one pass,
			// into dst's spare capacity (kept only if the word ends in
			// ASCII). The punctuation and the single space between two such
			// words are written here too, as the cases above would, so
			// that prose stays in this loop.
			for {
				n0 := len(dst)
				if cap(dst)-n0 < len(src)-i {
					dst = slices.Grow(dst, len(src)-i)
				}
				sw := src[i:]
				w := dst[n0 : n0+len(sw)]
				w = w[:len(sw)]
				m := 0
				digits := 0
				// Eight bytes at a time while they last: the word's end is
				// the first byte outside the word classes, and all eight are
				// written lower-cased (past the word, into spare capacity).
				for m+8 <= len(sw) {
					x := binary.LittleEndian.Uint64(sw[m:])
					word, dig := wordMasks(x)
					binary.LittleEndian.PutUint64(w[m:], lower8(x))
					if word == 0x8080808080808080 {
						digits += mbits.OnesCount64(dig)
						m += 8
						continue
					}
					n := mbits.TrailingZeros64(^word&0x8080808080808080) / 8
					digits += mbits.OnesCount64(dig & (1<<(8*n) - 1))
					m += n
					goto wordEnd
				}
				for ; m < len(sw); m++ {
					c := sw[m]
					k := asciiClass[c]
					if k-acLetter > acLeet-acLetter { // not letter, digit or leet symbol
						break
					}
					digits += int(k >> 1) // acDigit and acLeet
					w[m] = lowerTab[c]
				}
			wordEnd:
				j := i + m
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
				if j < len(src) && src[j] >= utf8.RuneSelf {
					break // the word goes on in another script: the general path
				}
				dst = dst[:n0+m]
				if digits > 0 && letters >= 2 {
					w = w[:m]
					for k, c := range sw[:m] {
						w[k] = leetTab[c]
					}
				}
				i = j
				// Punctuation after the word, then maybe one space: what the
				// cases above would do, as long as another word follows.
				for i < len(src) && src[i] < utf8.RuneSelf && asciiClass[src[i]] == acOther {
					if src[i] == '%' {
						st.long = true
					}
					st.singles = 0
					dst = append(dst, src[i])
					i++
				}
				if i+1 < len(src) && src[i] == ' ' && asciiClass[src[i+1]]-acLetter <= acLeet-acLetter {
					dst = append(dst, ' ')
					i++
				}
				if i < len(src) && asciiClass[src[i]]-acLetter <= acLeet-acLetter {
					continue
				}
				continue outer
			}
			c = src[i]
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(unsafeString(src[i:]))
		}
		if ut == nil {
			ut = uniTables()
		}
		tf := ut.flagsOf(r)
		f := tf
		if tf&ufSlow != 0 {
			f = slow.flags(r)
		}
		if f&ufWord == 0 {
			if f&ufSpace != 0 {
				if n := len(dst); n > 0 && dst[n-1] != ' ' && dst[n-1] != '\n' {
					dst = append(dst, ' ')
				}
			} else if tf&ufSlow != 0 {
				dst = utf8.AppendRune(dst, slow.lower(r))
			} else {
				dst = utf8.AppendRune(dst, ut.toLowerExact(r))
			}
			i += size
			continue
		}
		// A word: find its end and classify it, writing its lower-case
		// form on the way; a word that mixes scripts or letters and digits
		// is written again below, folded.
		j := i
		n0 := len(dst)
		var latin, digits, letters, confusable int
		for j < len(src) {
			r, sz := rune(src[j]), 1
			if src[j] >= utf8.RuneSelf {
				r, sz = utf8.DecodeRuneInString(unsafeString(src[j:]))
			}
			tf := ut.flagsOf(r)
			f := tf
			if tf&ufSlow != 0 {
				f = slow.flags(r)
			}
			if f&ufWord == 0 {
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
				if f&ufConfusable != 0 { // Greek and Cyrillic hold the look-alikes
					confusable++
				}
			}
			if r < utf8.RuneSelf {
				dst = append(dst, lowerTab[byte(r)])
			} else {
				lr := rune(ut.lower[uint16(r)%uniTabLen])
				if tf&ufSlow != 0 {
					lr = lowerRune(r)
				}
				dst = utf8.AppendRune(dst, lr)
			}
			j += sz
		}
		foldGlyphs := confusable > 0 && latin > 0
		foldLeet := digits > 0 && latin > 0 && latin+confusable >= 2
		if !foldGlyphs && !foldLeet {
			i = j
			continue
		}
		dst = dst[:n0]
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
				lr := ut.toLower(r)
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
	// Bytes outside joined runs stay as they are: they are moved in bulk
	// (w < i only after a first join), and the scan jumps between single
	// letters.
	w := 0
	for i := 0; i < len(b); {
		p := nextSingle(b, i)
		if p == len(b) {
			w += copy(b[w:], b[i:])
			break
		}
		k, n := p, 0
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
		if n < 4 {
			// Not a run: the letter stays; look on from the next byte.
			w += copy(b[w:], b[i:p+1])
			i = p + 1
			continue
		}
		w += copy(b[w:], b[i:p])
		for m := p; m < end; m++ {
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
	}
	return b[:w]
}

// nextSingle returns the first position from i of a lower-case ASCII
// letter with no word byte (isWordByte) on either side, or len(b). The
// test is three table lookups and no branch per byte.
func nextSingle(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	prev := byte(' ') // before the start: no word byte
	if i > 0 {
		prev = b[i-1]
	}
	cur := b[i]
	for k, next := range b[i+1:] {
		if lowerMask[cur]&^wordMask[prev]&^wordMask[next] != 0 {
			return i + k
		}
		prev, cur = cur, next
	}
	if lowerMask[cur]&^wordMask[prev] != 0 {
		return len(b) - 1
	}
	return len(b)
}

// lowerMask and wordMask are isLower and isWordByte as 0xFF/0 masks.
var lowerMask, wordMask = func() (lo, wd [256]uint8) {
	for c := range lo {
		if isLower(byte(c)) {
			lo[c] = 0xFF
		}
		if isWordByte(byte(c)) {
			wd[c] = 0xFF
		}
	}
	return lo, wd
}()

// decodeEmbedded finds base64, hex and percent-encoded runs in src and
// appends their decoded text (when it looks like text) to dst, each preceded
// by a newline. Bounded by maxDecodeBytes in total.
func decodeEmbedded(dst, src []byte, tmp []byte, h *HiddenText) ([]byte, []byte) {
	// The scan below passes through every byte outside base64, '%' and
	// '=' (a run never spans one), so the segments between such bytes are
	// decoded independently; a segment shorter than the shortest run that
	// decodes, with fewer than two '%', decodes to nothing. Only the others
	// are scanned, found by a loop without data-dependent branches.
	for from := 0; from < len(src) && len(dst) < maxDecodeBytes; {
		st, end := nextEncodedSegment(src, from)
		if st < 0 {
			break
		}
		dst, tmp = decodeSegment(dst, src, tmp, h, st, end)
		from = end
	}
	return dst, tmp
}

// segClass marks bytes of encoded segments: bit 0 base64 bytes, '%' and
// '='; bit 1 '%'.
var segClass = func() (t [256]uint8) {
	for c := range t {
		if b64Class[c] || c == '=' {
			t[c] = 1
		}
	}
	t['%'] = 3
	return t
}()

// nextEncodedSegment returns the first segment (maximal run of segClass
// bytes) at or after from that is at least min(minB64Run, minHexRun) long
// or holds two '%' (or a few more: any segment decodes as it would in a
// full scan), or -1. from must not be inside a segment.
//
// Blocks of eight bytes without a '%' are classified at once, with SWAR:
// the score only grows by one per segment byte there.
func nextEncodedSegment(src []byte, from int) (int, int) {
	const need = min(minB64Run, minHexRun)
	// score counts a segment's bytes, a '%' as need/2+1 of them, and
	// restarts after each separator.
	score := 0
	for p := from; p < len(src); {
		if p+8 <= len(src) {
			// seg and pct flag (bit 7 of each byte) the bytes that segClass
			// marks and the '%' among them. (low7 ^ c*swarOnes) + m has
			// bit 7 clear in the bytes whose low seven bits are c.
			const m = 0x7F * swarOnes
			x := binary.LittleEndian.Uint64(src[p:])
			low7 := x & m
			pct := ^((low7 ^ '%'*swarOnes) + m) &^ x & swarHigh
			if pct == 0 {
				other := ^((low7 ^ '+'*swarOnes + m) & (low7 ^ '/'*swarOnes + m) & (low7 ^ '-'*swarOnes + m) &
					(low7 ^ '_'*swarOnes + m) & (low7 ^ '='*swarOnes + m))
				seg := alnum8(x) | other&^x&swarHigh
				sep := ^seg & swarHigh
				if sep == 0 {
					if score+8 >= need {
						return segmentAround(src, from, p+need-score-1)
					}
					score += 8
				} else {
					if first := mbits.TrailingZeros64(sep) / 8; score+first >= need {
						return segmentAround(src, from, p+need-score-1)
					}
					score = mbits.LeadingZeros64(sep) / 8 // the bytes after the last separator
				}
				p += 8
				continue
			}
		}
		// Byte by byte: a block with a '%', and the last bytes.
		for end := min(p+8, len(src)); p < end; p++ {
			c := src[p]
			score = (score + int(segInc[c])) & int(segMask[c])
			if score >= need {
				return segmentAround(src, from, p)
			}
		}
	}
	return -1, len(src)
}

// segmentAround returns the segment holding src[p], not reaching before from.
func segmentAround(src []byte, from, p int) (int, int) {
	st := p
	for st > from && segClass[src[st-1]] != 0 {
		st--
	}
	e := p + 1
	for e < len(src) && segClass[src[e]] != 0 {
		e++
	}
	return st, e
}

// segInc and segMask drive nextEncodedSegment's score.
var segInc, segMask = func() (inc [256]uint8, mask [256]int32) {
	for c := range inc {
		switch {
		case c == '%':
			inc[c], mask[c] = min(minB64Run, minHexRun)/2+1, -1
		case segClass[c] != 0:
			inc[c], mask[c] = 1, -1
		}
	}
	return inc, mask
}()

// decodeSegment decodes the runs of src[i:end], a segment.
func decodeSegment(dst, src []byte, tmp []byte, h *HiddenText, i, end int) ([]byte, []byte) {
	for i < end && len(dst) < maxDecodeBytes {
		// Skip bytes that start no run.
		for i < end && !decStart[src[i]] {
			i++
		}
		if i == end {
			break
		}
		c := src[i]
		if c != '%' {
			// A short base64-alphabet run not followed by '%' or '='
			// decodes to nothing, whichever way it is looked at below.
			e := i + 1
			for e < len(src) && b64Class[src[e]] {
				e++
			}
			if e-i < min(minB64Run, minHexRun) && (e == len(src) || src[e] != '%' && src[e] != '=') {
				i = e
				continue
			}
		}
		// Cheap pre-check: a run must reach the minimum length.
		if c != '%' && (i+minB64Run > len(src) || !b64Class[src[i+minB64Run/2]] || !b64Class[src[i+minB64Run-1]]) {
			for i < len(src) && b64Class[src[i]] {
				i++
			}
			continue
		}
		// The run is the rest of the segment: base64 bytes, '%' and '='.
		run := src[i:end]
		i = end
		pct := bytes.Count(run, []byte{'%'})
		var ok bool
		tmp = tmp[:0]
		switch {
		case pct >= 2:
			tmp, ok = appendPercentDecoded(tmp, run)
		case pct == 0 && len(run) >= minHexRun && len(run)%2 == 0 && allHex(run):
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

// decStart marks the bytes that may start an encoded run: base64 bytes and '%'.
var decStart = func() (t [256]bool) {
	t = b64Class
	t['%'] = true
	return t
}()

func isHexByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func allHex(run []byte) bool {
	for _, c := range run {
		if !isHexByte(c) {
			return false
		}
	}
	return true
}

// hasB64Mix rejects plain words: base64 of text mixes cases and digits.
func hasB64Mix(run []byte) bool {
	var up, low, dig int
	for k, c := range run {
		if k&7 == 7 && up > 0 && low > 0 && dig > 0 {
			return true // the answer cannot change
		}
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

// wordMasks flags, in bit 7 of each of the eight bytes of x, the bytes
// of the ASCII word classes (letters, digits, '@', '$': acLetter, acDigit,
// acLeet) in word and those that count as digits (acDigit, acLeet) in dig.
// Each byte is tested on its own: no carry crosses bytes.
//
// It is swarIn and swarEq written out on the low seven bits, which each
// step keeps below 0x100 per byte; short enough to be inlined.
func wordMasks(x uint64) (word, dig uint64) {
	low7 := x & (0x7F * swarOnes)
	notAt := (low7 ^ '@'*swarOnes) + 0x7F*swarOnes // bit 7 clear: '@'
	notDollar := (low7 ^ '$'*swarOnes) + 0x7F*swarOnes
	digit := (low7 + (0x80-'0')*swarOnes) &^ (low7 + (0x7F-'9')*swarOnes)
	lc := low7 | 0x20*swarOnes
	letter := (lc + (0x80-'a')*swarOnes) &^ (lc + (0x7F-'z')*swarOnes)
	dig = (digit | ^notAt | ^notDollar) &^ x & swarHigh
	return dig | letter&^x&swarHigh, dig
}

const swarOnes, swarHigh = 0x0101010101010101, 0x8080808080808080

// swarIn flags (bit 7) the bytes of v whose low seven bits lie in
// [lo, hi] (lo <= hi < 0x80); clear the flags of bytes from 0x80 with &^ v.
func swarIn(v uint64, lo, hi byte) uint64 {
	low7 := v & (0x7F * swarOnes)
	return (low7 + (0x80-uint64(lo))*swarOnes) &^ (low7 + (0x7F-uint64(hi))*swarOnes) & swarHigh
}

// swarEq flags (bit 7) the bytes of v equal to c.
func swarEq(v uint64, c byte) uint64 {
	t := v ^ uint64(c)*swarOnes
	return ^((t&(0x7F*swarOnes) + 0x7F*swarOnes) | t) & swarHigh
}

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
