package detect

import (
	"sync"
	"unicode"
	"unicode/utf8"
)

// uniTabLen bounds the runes (Latin, Greek, Cyrillic, Hebrew, Arabic,
// Indic, Thai and other alphabets) whose properties clean and fold read
// from uniTab instead of the unicode and norm tables, which are binary
// searches.
const uniTabLen = 0x3000

// uniTab caches, for runes below uniTabLen, what clean and fold
// ask of each rune. Every entry is computed by the very functions it
// replaces; a rune whose answers do not fit is marked ufSlow and takes the
// original path.
type uniTab struct {
	lower [uniTabLen]uint16 // unicode.ToLower(r), which lowerRune(r) equals
	flags [uniTabLen]uint8
	// copy has bit r set, for r below copyLen, when clean copies r
	// unchanged: foldRune(r) reports no change.
	copy [copyLen / 64]uint64
	// repl holds, for the other runes below copyLen, what clean writes
	// instead (foldRune; empty: the rune is dropped): replIdx indexes
	// replStr for runes below uniTabLen (accented letters, marks), the map
	// holds the rest.
	replIdx [uniTabLen]uint16
	replStr []string
	repl    map[rune]string
}

// copyLen bounds the runes of uniTab.copy: the Basic Multilingual Plane and
// the next, which holds most emoji and the mathematical letters.
const copyLen = 0x20000

const (
	ufWord       = 1 << iota // isWordRune(r)
	ufSpace                  // unicode.IsSpace(r)
	ufConfusable             // fold counts r as a look-alike letter
	ufSlow                   // not cached
)

// uniTables is built once, by New (or the first use).
var uniTables = sync.OnceValue(func() *uniTab {
	t := new(uniTab)
	for r := rune(0); r < uniTabLen; r++ {
		lr := unicode.ToLower(r)
		if lr != lowerRune(r) || lr >= 1<<16 || r >= 0xD800 && r < 0xE000 {
			t.flags[r] = ufSlow
			continue
		}
		t.lower[r] = uint16(lr)
		var f uint8
		if isWordRune(r) {
			f |= ufWord
		}
		if unicode.IsSpace(r) {
			f |= ufSpace
		}
		if r >= utf8.RuneSelf && (r < 0x530 || r == 0x1D22) {
			if homoglyph(lr) != lr {
				f |= ufConfusable
			}
		}
		t.flags[r] = f
	}
	t.repl = make(map[rune]string)
	for r := rune(0); r < copyLen; r++ {
		if r >= 0xD800 && r < 0xE000 {
			continue // surrogates: never decoded
		}
		if f, changed := foldRune(r); changed {
			if r < uniTabLen {
				t.replStr = append(t.replStr, f)
				t.replIdx[r] = uint16(len(t.replStr)) // #nosec G115 -- at most uniTabLen entries
			} else {
				t.repl[r] = f
			}
		} else {
			t.copy[r/64] |= 1 << (r % 64)
		}
	}
	return t
})

// replacement returns what clean writes for r when it does not copy r
// (foldRune); ok is false for runes the table does not hold.
func (t *uniTab) replacement(r rune) (string, bool) {
	if u := uint32(r); u < uniTabLen {
		if k := t.replIdx[u]; k != 0 {
			return t.replStr[k-1], true
		}
		return "", false
	}
	s, ok := t.repl[r]
	return s, ok
}

// copyAsIs reports whether clean copies r unchanged (see uniTab.copy);
// false for runes the table does not hold.
func (t *uniTab) copyAsIs(r rune) bool {
	u := uint32(r)
	return u < copyLen && t.copy[u/64]>>(u%64)&1 != 0
}

// flagsOf returns r's table flags, or ufSlow when the table does not hold
// r; it inlines.
func (t *uniTab) flagsOf(r rune) uint8 {
	if u := uint32(r); u < uniTabLen {
		return t.flags[u]
	}
	return ufSlow
}

// runeFlagsSlow computes, for a rune the table does not hold, the flags
// fold reads from it (ufWord, ufSpace, ufConfusable).
func runeFlagsSlow(r rune) uint8 {
	var f uint8
	if isWordRune(r) {
		f |= ufWord
	}
	if unicode.IsSpace(r) {
		f |= ufSpace
	}
	if r >= utf8.RuneSelf && (r < 0x530 || r == 0x1D22) {
		if lr := unicode.ToLower(r); homoglyph(lr) != lr {
			f |= ufConfusable
		}
	}
	return f
}

// toLower is lowerRune, which equals unicode.ToLower, from the table when
// it holds r.
func (t *uniTab) toLower(r rune) rune {
	if t.flagsOf(r)&ufSlow == 0 {
		return rune(t.lower[uint16(r)%uniTabLen])
	}
	return lowerRune(r)
}

// toLowerExact is unicode.ToLower, from the table when it holds r.
func (t *uniTab) toLowerExact(r rune) rune {
	if t.flagsOf(r)&ufSlow == 0 {
		return rune(t.lower[uint16(r)%uniTabLen])
	}
	return unicode.ToLower(r)
}

// slowRune remembers the answers for the last rune the table does not hold:
// text repeating one such rune (CJK punctuation, U+FFFD from invalid bytes)
// then costs one lookup rather than binary searches per byte.
type slowRune struct {
	fr, lr rune // the runes the answers are for; -1 for none
	f      uint8
	l      rune
}

func newSlowRune() slowRune { return slowRune{fr: -1, lr: -1} }

// flags is runeFlagsSlow(r).
func (c *slowRune) flags(r rune) uint8 {
	if r != c.fr {
		c.fr, c.f = r, runeFlagsSlow(r)
	}
	return c.f
}

// lower is unicode.ToLower(r).
func (c *slowRune) lower(r rune) rune {
	if r != c.lr {
		c.lr, c.l = r, unicode.ToLower(r)
	}
	return c.l
}
