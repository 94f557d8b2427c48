package detect

import "slices"

// matcher is an Aho-Corasick automaton over bytes, ASCII case-insensitive:
// one pass over the text reports every occurrence of every literal, by end
// offset. It finds placeholder and stop words in short values (contains),
// and the injection keywords when they overflow maxKwHits (their order is
// then part of the result). The prefilters over whole texts are litSets,
// which test positions independently instead of walking a chain of table
// loads. Built once, read-only afterwards, so it is safe for concurrent use.
type matcher struct {
	class   [256]uint8 // byte -> alphabet class; 0 means "not in any pattern"
	nclass  int
	shift   uint     // log2 of the row stride (nclass rounded up to a power of two)
	next    []uint16 // state<<shift + class -> next state | outFlag
	out     [][]int32
	lengths []int
	start   [256]bool // bytes that leave the root state
	// pair has bit a<<8|b set when some pattern starts with bytes a, b
	// (either ASCII case), or with a alone: in the root state, a position
	// whose pair is clear starts no match and is skipped without walking
	// the automaton. Matches are the same, reported in the same order:
	// no pattern occurrence can start there, and none spans it from before.
	pair  *[1 << 16 / 64]uint64
	lossy bool // some bytes share a class: verify matches
	pats  []string
}

// maxClasses bounds the alphabet, so rows are at most 32 entries wide.
const maxClasses = 32

// newMatcher builds the automaton for pats. Pattern ids are indices into pats.
func newMatcher(pats []string) *matcher {
	m := &matcher{}
	lower := func(b byte) byte {
		if 'A' <= b && b <= 'Z' {
			return b + 'a' - 'A'
		}
		return b
	}
	// Classes: the maxClasses-1 most frequent pattern bytes get their own
	// class; rarer ones share classes, and matches are then verified
	// against the literal. Small rows keep the table in cache.
	var freq [256]int
	for _, p := range pats {
		for i := 0; i < len(p); i++ {
			freq[lower(p[i])]++
		}
	}
	var order []int
	for c := 0; c < 256; c++ {
		if freq[c] > 0 && !('A' <= c && c <= 'Z') {
			order = append(order, c)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return freq[b] - freq[a] })
	n := 1
	for k, c := range order {
		if n < maxClasses {
			m.class[c] = uint8(n)
			n++
			continue
		}
		m.lossy = true
		m.class[c] = uint8(1 + k%(maxClasses-1))
	}
	for c := 'A'; c <= 'Z'; c++ {
		m.class[c] = m.class[c+'a'-'A']
	}
	m.pats = pats
	m.nclass = n
	m.lengths = make([]int, len(pats))
	// Trie.
	next := make([]int32, n) // state 0 row
	out := [][]int32{nil}
	for id, p := range pats {
		m.lengths[id] = len(p)
		s := int32(0)
		for i := 0; i < len(p); i++ {
			c := int32(m.class[lower(p[i])])
			t := next[s*int32(n)+c]
			if t == 0 {
				t = int32(len(out))
				out = append(out, nil)
				next = append(next, make([]int32, n)...)
				next[s*int32(n)+c] = t
			}
			s = t
		}
		out[s] = append(out[s], int32(id))
	}
	// Failure links by BFS, folded into a full transition table.
	fail := make([]int32, len(out))
	queue := make([]int32, 0, len(out))
	for c := 1; c < n; c++ {
		if t := next[c]; t != 0 {
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		out[s] = append(out[s], out[fail[s]]...)
		for c := 1; c < n; c++ {
			t := next[s*int32(n)+int32(c)]
			f := next[fail[s]*int32(n)+int32(c)]
			if t != 0 {
				fail[t] = f
				queue = append(queue, t)
			} else {
				next[s*int32(n)+int32(c)] = f
			}
		}
	}
	m.shift = 0
	for 1<<m.shift < n {
		m.shift++
	}
	for c := 0; c < 256; c++ {
		m.start[c] = next[m.class[c]] != 0
	}
	m.pair = new([1 << 16 / 64]uint64)
	cases := func(c byte) []byte {
		c = lower(c)
		if 'a' <= c && c <= 'z' {
			return []byte{c, c - 'a' + 'A'}
		}
		return []byte{c}
	}
	for _, p := range pats {
		if len(p) == 0 {
			continue
		}
		for _, a := range cases(p[0]) {
			if len(p) == 1 {
				for b := 0; b < 256; b++ {
					m.setPair(a, byte(b))
				}
				continue
			}
			for _, b := range cases(p[1]) {
				m.setPair(a, b)
			}
		}
	}
	if len(out) >= outFlag {
		// Not reachable with the built-in pattern sets; keep the matcher
		// total by matching nothing rather than wrapping state numbers.
		m.next = make([]uint16, 1<<m.shift)
		m.out = [][]int32{nil}
		m.start = [256]bool{}
		m.pair = new([1 << 16 / 64]uint64)
		return m
	}
	stride := 1 << m.shift
	m.next = make([]uint16, len(out)*stride)
	for st := range out {
		for c := 0; c < n; c++ {
			t := next[st*n+c]
			v := uint16(t)
			if len(out[t]) > 0 {
				v |= outFlag
			}
			m.next[st*stride+c] = v
		}
	}
	m.out = out
	return m
}

func (m *matcher) setPair(a, b byte) {
	k := uint(a)<<8 | uint(b)
	m.pair[k>>6] |= 1 << (k & 63)
}

// skipRoot returns the first position at or after i where a match may
// start (see matcher.pair), or len(text).
func (m *matcher) skipRoot(text []byte, i int) int {
	pair := m.pair
	for ; i+1 < len(text); i++ {
		k := uint(text[i])<<8 | uint(text[i+1])
		if pair[k>>6]&(1<<(k&63)) != 0 {
			return i
		}
	}
	if i < len(text) && !m.start[text[i]] {
		i++
	}
	return i
}

// outFlag marks a transition into a state with outputs.
const outFlag = 1 << 15

// scan calls fn(id, end) for every match of pattern id ending at byte end
// (exclusive). fn returns false to stop early.
func (m *matcher) scan(text []byte, fn func(id int, end int) bool) {
	sh := m.shift
	s := uint32(0)
	next := m.next
	for i := 0; i < len(text); i++ {
		if s == 0 {
			// In the root state, skip positions that start no pattern.
			if i = m.skipRoot(text, i); i == len(text) {
				return
			}
		}
		t := uint32(next[s<<sh|uint32(m.class[text[i]])])
		s = t &^ outFlag
		if t&outFlag != 0 {
			for _, id := range m.out[s] {
				if m.lossy && !m.verify(text, int(id), i+1) {
					continue
				}
				if !fn(int(id), i+1) {
					return
				}
			}
		}
	}
}

// contains reports whether any pattern occurs in text.
func (m *matcher) contains(text []byte) bool {
	found := false
	m.scan(text, func(int, int) bool {
		found = true
		return false // the first (verified) match answers
	})
	return found
}

// verify checks pattern id against the text ending at end, ignoring ASCII case.
func (m *matcher) verify(text []byte, id, end int) bool {
	p := m.pats[id]
	st := end - len(p)
	if st < 0 {
		return false
	}
	for k := 0; k < len(p); k++ {
		if lowerASCII(text[st+k]) != lowerASCII(p[k]) {
			return false
		}
	}
	return true
}
