package detect

import "slices"

// matcher is an Aho-Corasick automaton over bytes, ASCII case-insensitive.
// It is the shared multi-pattern prefilter: one pass over the text reports
// every occurrence of every literal, and the detectors verify candidates.
// Built once, read-only afterwards, so it is safe for concurrent use.
type matcher struct {
	class   [256]uint8 // byte -> alphabet class; 0 means "not in any pattern"
	nclass  int
	shift   uint     // log2 of the row stride (nclass rounded up to a power of two)
	next    []uint16 // state<<shift + class -> next state | outFlag
	out     [][]int32
	lengths []int
	start   [256]bool // bytes that leave the root state
	lossy   bool      // some bytes share a class: verify matches
	pats    []string
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
	if len(out) >= outFlag {
		// Not reachable with the built-in pattern sets; keep the matcher
		// total by matching nothing rather than wrapping state numbers.
		m.next = make([]uint16, 1<<m.shift)
		m.out = [][]int32{nil}
		m.start = [256]bool{}
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
			// In the root state, skip bytes that start no pattern.
			for i < len(text) && !m.start[text[i]] {
				i++
			}
			if i == len(text) {
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

// npats is the number of patterns the matcher was built with.
func (m *matcher) npats() int { return len(m.lengths) }

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

// scanGrams is scan without root skipping that also sums the model's
// weights over text (4-grams and words, exactly as featurize emits them) and
// counts the features: the automaton's table walk is latency-bound and the
// weight lookups are independent, so they overlap in one pass.
func (m *matcher) scanGrams(text []byte, w []int16, wshift uint, fn func(id int, end int) bool) (int64, int) {
	sh := m.shift
	s := uint32(0)
	next := m.next
	var sum int64
	n := 0
	if len(text) >= 4 {
		n = len(text) - 3
	}
	h, wordLen := uint32(2166136261), 0
	stop := false
	for i := 0; i < len(text); i++ {
		c := text[i]
		if i+4 <= len(text) {
			sum += int64(w[charGram(text[i:i+4])>>wshift])
		}
		if isFoldWordByte(c) {
			if wordLen < 64 {
				h = (h ^ uint32(c)) * 16777619
			}
			wordLen++
		} else if wordLen > 0 {
			sum += int64(w[mix(h^seedWord)>>wshift])
			n++
			h, wordLen = 2166136261, 0
		}
		t := uint32(next[s<<sh|uint32(m.class[c])])
		s = t &^ outFlag
		if t&outFlag != 0 && !stop {
			for _, id := range m.out[s] {
				if m.lossy && !m.verify(text, int(id), i+1) {
					continue
				}
				if !fn(int(id), i+1) {
					stop = true
					break
				}
			}
		}
	}
	if wordLen > 0 {
		sum += int64(w[mix(h^seedWord)>>wshift])
		n++
	}
	return sum, n
}
