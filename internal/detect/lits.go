package detect

import (
	"encoding/binary"
	mbits "math/bits"
)

// litSet finds every occurrence of a set of literals, each matched either
// exactly or ignoring ASCII case, optionally only at the start of a word.
// It is the prefilter for secrets and for the injection rules' keywords.
//
// An Aho-Corasick walk costs a dependent table load per byte and rarely
// returns to its root state in prose, where most letters start some
// literal. litSet instead tests each position on its own, against two
// 64 Kibit filters: one of the (hashed) first three bytes of the literals
// of three bytes or more, together with whether the previous byte is a
// letter or digit, and one of the first two bytes of the shorter literals.
// Where a filter passes (a few percent of positions in prose and code) it
// compares the literals that share the position's first bytes. Built once,
// read-only afterwards.
type litSet struct {
	pats  []string
	lower []string // pats, ASCII lower-cased
	info  []litInfo
	fold  []bool // literal matches ignoring ASCII case
	// word marks literals that only match where no ASCII letter or digit
	// precedes them.
	word    []bool
	anyWord bool
	// filt holds the two filters: bits [0, 1<<16) are the hashed first
	// three bytes (see bloomHash) of literals of three bytes or more, bits
	// [1<<16, 1<<17) the first two bytes (b0 | b1<<8) of shorter ones.
	filt [2 << 16 / 64]uint64
	// pairs is the first, cheaper filter, tested at every position: for
	// the two bytes at a position (b0 | b1<<8), a mask over the groups
	// (grpBit) of the third byte of the literals starting with them, all
	// ones for shorter literals. Case variants fall into one group.
	pairs *[1 << 16]uint8
	// rank[w] counts the bits set in filt before word w; lists[r] holds the
	// literals behind the r-th set bit.
	rank  [2 << 16 / 64]uint16
	lists [][]int32
}

const bloomMul = 0x9E3779B1

// bloomHash hashes three bytes (b0 | b1<<8 | b2<<16) and a flag (bit 24:
// the previous byte is an ASCII letter or digit) to 16 bits.
func bloomHash(x uint32) uint32 { return x * bloomMul >> 16 }

// newLitSet builds the set; fold[id] selects case-insensitive matching and
// word[id] (nil: none) matching at word starts only.
func newLitSet(pats []string, fold, word []bool) *litSet {
	ls := &litSet{pats: pats, fold: fold, word: word, pairs: new([1 << 16]uint8)}
	if word == nil {
		ls.word = make([]bool, len(pats))
	}
	for _, w := range ls.word {
		ls.anyWord = ls.anyWord || w
	}
	ls.info = make([]litInfo, len(pats))
	for id, p := range pats {
		b := []byte(p)
		for i, c := range b {
			b[i] = lowerASCII(c)
		}
		ls.lower = append(ls.lower, string(b))
		L := &ls.info[id]
		L.n, L.fold, L.word = int32(len(p)), fold[id], ls.word[id]
		h := p
		if L.fold {
			h = string(b)
		}
		for k := 0; k < len(h) && k < 8; k++ {
			L.head |= uint64(h[k]) << (8 * k)
			L.mask |= 0xFF << (8 * k)
		}
	}
	variants := func(c byte, f bool) []byte {
		if l := lowerASCII(c); f && 'a' <= l && l <= 'z' {
			return []byte{l, l - 'a' + 'A'}
		}
		return []byte{c}
	}
	byBit := map[uint32][]int32{}
	set := func(k uint32, id int) {
		ls.filt[k>>6] |= 1 << (k & 63)
		if l := byBit[k]; len(l) == 0 || l[len(l)-1] != int32(id) {
			byBit[k] = append(l, int32(id))
		}
	}
	for id, p := range pats {
		f := fold[id]
		if len(p) > 0 {
			for _, a := range variants(p[0], f) {
				if len(p) == 1 {
					for b := 0; b < 256; b++ {
						ls.pairs[uint16(a)|uint16(b)<<8] = 0xFF
					}
					continue
				}
				for _, b := range variants(p[1], f) {
					m := uint8(0xFF)
					if len(p) > 2 {
						m = grpBit[p[2]]
					}
					ls.pairs[uint16(a)|uint16(b)<<8] |= m
				}
			}
		}
		switch {
		case len(p) == 0:
		case len(p) == 1:
			for _, a := range variants(p[0], f) {
				for b := 0; b < 256; b++ {
					set(1<<16|uint32(a)|uint32(b)<<8, id)
				}
			}
		case len(p) == 2:
			for _, a := range variants(p[0], f) {
				for _, b := range variants(p[1], f) {
					set(1<<16|uint32(a)|uint32(b)<<8, id)
				}
			}
		default:
			flags := []uint32{0, 1 << 24}
			if ls.word[id] || !ls.anyWord {
				flags = flags[:1]
			}
			for _, a := range variants(p[0], f) {
				for _, b := range variants(p[1], f) {
					for _, c := range variants(p[2], f) {
						for _, fl := range flags {
							set(bloomHash(fl|uint32(a)|uint32(b)<<8|uint32(c)<<16), id)
						}
					}
				}
			}
		}
	}
	r := 0
	for w, bits := range ls.filt {
		ls.rank[w] = uint16(r)
		for ; bits != 0; bits &= bits - 1 {
			ls.lists = append(ls.lists, byBit[uint32(w)<<6|uint32(mbits.TrailingZeros64(bits))])
			r++
		}
	}
	return ls
}

// list returns the literals behind filter bit k, which is set.
func (ls *litSet) list(k uint32) []int32 {
	w := k >> 6
	return ls.lists[int(ls.rank[w])+mbits.OnesCount64(ls.filt[w]&(1<<(k&63)-1))]
}

func (ls *litSet) npats() int { return len(ls.pats) }

// scan calls fn(id, start) for every occurrence of literal id starting at
// byte start, in increasing order of start. fn returns false to stop early.
//
// The filter loop runs on its own and hands over batches of candidate
// positions: with no call inside it, its state stays in registers.
func (ls *litSet) scan(text []byte, fn func(id, start int) bool) {
	var cand [64]int32
	for i := 0; i < len(text); {
		var n int
		if ls.anyWord {
			n, i = ls.filterWords(text, i, &cand)
		} else {
			n, i = ls.filter(text, i, &cand)
		}
		for _, p := range cand[:n] {
			if !ls.at(text, int(p), fn) {
				return
			}
		}
	}
}

// grpBit puts a byte in one of eight groups, by its low three bits (so
// that both ASCII cases of a letter share one).
var grpBit = func() (t [256]uint8) {
	for c := range t {
		t[c] = 1 << (c & 7)
	}
	return t
}()

// filter stores in cand the positions from i on where a literal may start
// (by the pairs filter), until cand is full, and returns their number and
// where to go on from. The last three positions of text are always
// candidates (at pads them).
func (ls *litSet) filter(text []byte, i int, cand *[64]int32) (int, int) {
	pairs := ls.pairs
	_ = pairs[0] // one nil check, not one per byte
	n := 0
	if i+3 < len(text) {
		// t[k-2], t[k-1] and t[k] are b0, b1 and b2 at i+k-2: the compiler
		// reads the first two as one 16-bit load, without bounds checks.
		t := text[i : len(text)-1]
		for k := 2; k < len(t); k++ {
			if pairs[uint16(t[k-2])|uint16(t[k-1])<<8]&grpBit[t[k]] != 0 {
				cand[n] = int32(i + k - 2)
				n++
				if n == len(cand) {
					return n, i + k - 1
				}
			}
		}
		i = len(text) - 3
	}
	for ; i < len(text) && n < len(cand); i++ {
		cand[n] = int32(i)
		n++
	}
	return n, i
}

// filterWords is filter for sets with word-start literals. A literal that
// starts with an ASCII letter or digit is one of them (newInjector), so a
// position between two such bytes starts none.
//
// Eight positions at a time, it first drops those (most positions in
// prose) with a SWAR test of the eight bytes and the one before them; the
// pairs filter then runs on the rest.
func (ls *litSet) filterWords(text []byte, i int, cand *[64]int32) (int, int) {
	pairs := ls.pairs
	_ = pairs[0] // one nil check, not one per byte
	n := 0
	// Blocks of eight positions that all lie before the last three.
	for ; i+8 <= len(text)-3; i += 8 {
		var prev uint64 // bit 7: the byte before the block is alphanumeric
		if i > 0 {
			prev = uint64(alnumMask[text[i-1]] & 0x80)
		}
		a := alnum8(binary.LittleEndian.Uint64(text[i:]))
		for m := ^(a & (a<<8 | prev)) & swarHigh; m != 0; m &= m - 1 {
			p := i + mbits.TrailingZeros64(m)/8
			t := text[p : p+3]
			if pairs[uint16(t[0])|uint16(t[1])<<8]&grpBit[t[2]] != 0 {
				cand[n] = int32(p)
				n++
				if n == len(cand) {
					return n, p + 1
				}
			}
		}
	}
	if i+3 < len(text) {
		// x holds the bytes at p-1 .. p+2 (p = i+m): the byte before p and
		// b0, b1, b2 at p.
		var prev uint32
		if i > 0 {
			prev = uint32(text[i-1])
		}
		x := prev<<8 | uint32(text[i])<<16 | uint32(text[i+1])<<24
		for m, c := range text[i+2 : len(text)-1] {
			x = x>>8 | uint32(c)<<24
			// Without a branch on the second condition: mid-word hits of
			// the first are common in prose.
			if pairs[uint16(x>>8)]&grpBit[x>>24]&^(alnumMask[uint8(x)]&alnumMask[uint8(x>>8)]) != 0 {
				cand[n] = int32(i + m)
				n++
				if n == len(cand) {
					return n, i + m + 1
				}
			}
		}
		i = len(text) - 3
	}
	for ; i < len(text) && n < len(cand); i++ {
		cand[n] = int32(i)
		n++
	}
	return n, i
}

// alnum8 flags, in bit 7 of each of the eight bytes of x, the ASCII
// letters and digits (isASCIIAlnum). Each byte is tested on its own.
func alnum8(x uint64) uint64 {
	return (swarIn(x, '0', '9') | swarIn(x|0x20*swarOnes, 'a', 'z')) &^ x & swarHigh
}

// alnumMask is 0xFF for ASCII letters and digits, 0 for other bytes.
var alnumMask = func() (t [256]uint8) {
	for c := range t {
		if isASCIIAlnum(byte(c)) {
			t[c] = 0xFF
		}
	}
	return t
}()

// alnumTab is isASCIIAlnum as a table.
var alnumTab = func() (t [256]bool) {
	for c := range t {
		t[c] = isASCIIAlnum(byte(c))
	}
	return t
}()

// litInfo is what at needs to reject a literal quickly.
type litInfo struct {
	head, mask uint64 // first (up to) eight bytes, lower-cased when folding; their mask
	n          int32  // length
	fold, word bool
}

// lower8 lower-cases the ASCII letters among eight bytes (as lowerASCII
// does each): bit 7 of each byte's sum flags the range, without carries
// between bytes.
func lower8(x uint64) uint64 {
	const ones = 0x0101010101010101
	low7 := x & (0x7F * ones)
	geA := low7 + (0x80-'A')*ones
	gtZ := low7 + (0x80-'Z'-1)*ones
	upper := geA &^ gtZ &^ x & (0x80 * ones)
	return x | upper>>2
}

// at verifies the literals that may start at i.
func (ls *litSet) at(text []byte, i int, fn func(id, start int) bool) bool {
	var raw uint64 // the eight bytes at i, zero-padded
	if i+8 <= len(text) {
		raw = binary.LittleEndian.Uint64(text[i:])
	} else {
		for k := 0; i+k < len(text); k++ {
			raw |= uint64(text[i+k]) << (8 * k)
		}
	}
	x := uint32(raw) & 0xFFFFFF
	prevAlnum := false
	if ls.anyWord && i > 0 {
		x |= alnumFlag[text[i-1]]
		prevAlnum = alnumTab[text[i-1]]
	}
	lo := lower8(raw)
	rest := len(text) - i
	for _, b := range [2]uint32{1<<16 | x&0xFFFF, bloomHash(x)} {
		if ls.filt[b>>6]>>(b&63)&1 == 0 {
			continue
		}
		for _, id := range ls.list(b) {
			L := &ls.info[id]
			v := raw
			if L.fold {
				v = lo
			}
			if v&L.mask != L.head || int(L.n) > rest || prevAlnum && L.word {
				continue
			}
			if L.n > 8 && !ls.matchTail(text, int(id), i) {
				continue
			}
			if !fn(int(id), i) {
				return false
			}
		}
	}
	return true
}

// matchTail verifies literal id at i past its first eight bytes.
func (ls *litSet) matchTail(text []byte, id, i int) bool {
	p := ls.pats[id]
	t := text[i+8 : i+len(p)]
	if !ls.fold[id] {
		return string(t) == p[8:]
	}
	lp := ls.lower[id][8:]
	for k := 0; k < len(lp); k++ {
		if lowerTab[t[k]] != lp[k] {
			return false
		}
	}
	return true
}

// alnumFlag is the bloomHash flag for a preceding byte.
var alnumFlag = func() (t [256]uint32) {
	for c := range t {
		if isASCIIAlnum(byte(c)) {
			t[c] = 1 << 24
		}
	}
	return t
}()
