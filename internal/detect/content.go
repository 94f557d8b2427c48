package detect

import (
	"errors"
	"fmt"
	mbits "math/bits"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Content-safety rules (issue 19): named categories of terms and phrases,
// each for the request direction (prompts), the response direction
// (answers) or both, with an action the policy carries out (deny, redact or
// flag). The terms are matched on a matching view of the text built from
// the detectors' clean view (zero-width and tag characters removed, width
// and compatibility forms, look-alike letters), then lower-cased, with
// Cyrillic and Greek look-alikes folded in words that mix them with Latin
// letters (or that consist of look-alikes alone), white space runs
// collapsed to one space and spaced-out letters ("b a d w o r d") joined.
// Terms go through the same folding, so a term matches however the text
// disguises it. Matches are whole words: a term that starts (ends) with a
// letter or digit of a script written with spaces must not be preceded
// (followed) by one. All terms of a direction share one multi-pattern
// matcher (litSet), so a scan costs about the same with ten terms or ten
// thousand.

// DetectorContent is the Finding.Detector of content-safety matches; their
// Type is the category's name.
const DetectorContent = "content_safety"

// Direction is the side of an exchange a Scanner reads: prompts or answers.
type Direction string

// The two directions of content-safety categories.
const (
	DirectionRequest  Direction = "request"
	DirectionResponse Direction = "response"
)

// ContentAction is what the default policy does with a category's matches.
type ContentAction string

// The actions a category may name.
const (
	ContentDeny   ContentAction = "deny"
	ContentRedact ContentAction = "redact"
	ContentFlag   ContentAction = "flag"
)

// ContentCategory is one category of the policy data's
// content_safety.categories.
type ContentCategory struct {
	// Name is the category's key; it is the findings' Type.
	Name string
	// Terms are words or phrases, in any script.
	Terms []string
	// Directions are DirectionRequest and/or DirectionResponse.
	Directions []Direction
	// Action is deny, redact or flag.
	Action ContentAction
}

// Limits on content-safety rules, so that policy data cannot make a
// matcher that is slow to build or to run.
const (
	// MaxContentTerms bounds the terms of all categories together.
	MaxContentTerms = 100_000
	// MaxTermBytes bounds one term's matching form.
	MaxTermBytes = 256
)

// ContentRules is the compiled form of the content-safety categories: one
// matcher per direction. It is immutable after NewContentRules and safe for
// concurrent use; a nil *ContentRules matches nothing.
//
// It also holds the output sanitisation settings (OutputSpec): both come
// from policy data and both apply to the text a Scanner reads.
type ContentRules struct {
	dirs  [2]*termMatcher // request, response
	links *linkPolicy     // answers' links; nil: not sanitised
}

// ContentSource supplies the content-safety rules in force; Scan asks once
// per scan, so a source that reloads (policy.Engine, from policy data)
// takes effect on the next scan.
type ContentSource interface {
	ContentRules() *ContentRules
}

// ContentRules makes fixed rules their own source.
func (c *ContentRules) ContentRules() *ContentRules { return c }

var _ ContentSource = (*ContentRules)(nil)

// termMatcher is the matcher of one direction.
type termMatcher struct {
	set   *litSet
	terms []string // matching forms, by litSet id
	cat   []string // winning category of each term
	score []float64
	// prefixes holds the proper prefixes of terms that end where a
	// streamed answer may be cut early (after a space, or after a
	// character of a script written without spaces): a Stream holds text
	// that ends with one (HoldsTermPrefix). maxPrefix is the longest.
	prefixes  map[string]struct{}
	maxPrefix int
	// lastWords are the last words of the prefixes that end with a space
	// ("nerve" of "nerve "), for HoldsTermPrefix's quick answer; cjk is
	// set when some prefix ends otherwise (a script without spaces).
	lastWords map[string]struct{}
	cjk       bool
}

// actionScore ranks actions: where two categories' matches overlap, the
// stronger action's finding is kept (finish keeps the higher score).
func actionScore(a ContentAction) float64 {
	switch a {
	case ContentDeny:
		return 1
	case ContentRedact:
		return 0.9
	}
	return 0.8
}

// NewContentRules validates the categories and compiles their matchers.
// Errors name the category and the index of a bad term, never the term (it
// may be something nobody wants in a log). A term in several categories of
// one direction counts for the strongest action's (deny, then redact, then
// flag; ties by name).
func NewContentRules(cats []ContentCategory, out OutputSpec) (*ContentRules, error) {
	cats = slices.Clone(cats)
	slices.SortFunc(cats, func(a, b ContentCategory) int { return strings.Compare(a.Name, b.Name) })
	type entry struct {
		cat   string
		score float64
	}
	var byDir [2]map[string]entry
	total := 0
	sc := new(scratch)
	for _, c := range cats {
		if c.Name == "" {
			return nil, errors.New("a category has an empty name")
		}
		switch c.Action {
		case ContentDeny, ContentRedact, ContentFlag:
		default:
			return nil, fmt.Errorf("%s.action must be deny, redact or flag, got %q", c.Name, c.Action)
		}
		if len(c.Directions) == 0 {
			return nil, fmt.Errorf("%s.directions must name request and/or response", c.Name)
		}
		var dirs []int
		for i, d := range c.Directions {
			switch d {
			case DirectionRequest:
				dirs = append(dirs, 0)
			case DirectionResponse:
				dirs = append(dirs, 1)
			default:
				return nil, fmt.Errorf("%s.directions[%d] must be request or response, got %q", c.Name, i, d)
			}
		}
		total += len(c.Terms)
		if total > MaxContentTerms {
			return nil, fmt.Errorf("more than %d terms in all", MaxContentTerms)
		}
		for i, t := range c.Terms {
			m := sc.termForm(t)
			switch {
			case m == "":
				return nil, fmt.Errorf("%s.terms[%d] is empty once normalised", c.Name, i)
			case len(m) < 2:
				return nil, fmt.Errorf("%s.terms[%d] is a single character: it would match far more than meant", c.Name, i)
			case len(m) > MaxTermBytes:
				return nil, fmt.Errorf("%s.terms[%d] is longer than %d bytes", c.Name, i, MaxTermBytes)
			}
			sc2 := actionScore(c.Action)
			forms := []string{m}
			if j := joinedForm(m); j != "" {
				// "n e r v e a g e n t" and "nerveagent" join the words.
				forms = append(forms, j)
			}
			for _, d := range dirs {
				if byDir[d] == nil {
					byDir[d] = map[string]entry{}
				}
				for _, f := range forms {
					if old, ok := byDir[d][f]; !ok || sc2 > old.score || sc2 == old.score && c.Name < old.cat {
						byDir[d][f] = entry{cat: c.Name, score: sc2}
					}
				}
			}
		}
	}
	cr := &ContentRules{}
	if out.Sanitize {
		lp, err := newLinkPolicy(out.AllowedLinkHosts)
		if err != nil {
			return nil, fmt.Errorf("output.allowed_link_hosts: an entry %w", err)
		}
		cr.links = lp
	}
	for d, terms := range byDir {
		if len(terms) == 0 {
			continue
		}
		tm := &termMatcher{prefixes: map[string]struct{}{}, lastWords: map[string]struct{}{}}
		for t := range terms {
			tm.terms = append(tm.terms, t)
		}
		slices.Sort(tm.terms)
		fold := make([]bool, len(tm.terms))
		word := make([]bool, len(tm.terms))
		for i, t := range tm.terms {
			e := terms[t]
			tm.cat = append(tm.cat, e.cat)
			tm.score = append(tm.score, e.score)
			word[i] = isASCIIAlnum(t[0])
			for k := 1; k < len(t); k++ {
				if !cutAfter(t[:k], t[k]) {
					continue
				}
				tm.prefixes[t[:k]] = struct{}{}
				tm.maxPrefix = max(tm.maxPrefix, k)
				if p := t[:k]; p[len(p)-1] == ' ' {
					w := p[:len(p)-1]
					tm.lastWords[w[strings.LastIndexByte(w, ' ')+1:]] = struct{}{}
				} else {
					tm.cjk = true
				}
			}
		}
		tm.set = newLitSet(tm.terms, fold, word)
		bits := 0
		for _, w := range tm.set.filt {
			bits += mbits.OnesCount64(w)
		}
		if bits >= 1<<16 {
			return nil, errors.New("too many distinct term beginnings for one matcher")
		}
		cr.dirs[d] = tm
	}
	return cr, nil
}

// matcher returns the matcher of direction d, or nil.
func (c *ContentRules) matcher(d Direction) *termMatcher {
	if c == nil {
		return nil
	}
	switch d {
	case DirectionRequest:
		return c.dirs[0]
	case DirectionResponse:
		return c.dirs[1]
	}
	return nil
}

// Empty reports whether no category applies to direction d.
func (c *ContentRules) Empty(d Direction) bool { return c.matcher(d) == nil }

// termForm is the matching form of a term: the matching view of its clean
// view, without leading and trailing spaces.
func (s *scratch) termForm(t string) string {
	s.reset(t)
	var h HiddenText
	v := s.clean(t, &h, false)
	b, _ := appendMatchView(nil, nil, v.b)
	return strings.TrimSpace(string(b))
}

// noSpaceScript reports whether r belongs to a script written without
// spaces between words (or whose words take suffixes without a space):
// terms in it match inside longer runs of letters.
func noSpaceScript(r rune) bool {
	switch {
	case r < 0x0E00:
		return false
	case r >= 0x3040 && r <= 0x30FF, r >= 0x4E00 && r <= 0x9FFF, r >= 0xAC00 && r <= 0xD7A3, r >= 0x3400 && r <= 0x4DBF:
		return true
	}
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul, unicode.Thai,
		unicode.Lao, unicode.Khmer, unicode.Myanmar, unicode.Tibetan)
}

// isTermWordRune reports whether r continues a word for the boundary test:
// a letter, digit or mark (isWordRune without its ASCII '@' and '$').
func isTermWordRune(r rune) bool {
	if r < utf8.RuneSelf {
		return isASCIIAlnum(byte(r))
	}
	if f := uniTables().flagsOf(r); f&ufSlow == 0 {
		return f&ufWord != 0
	}
	if r >= 0x3040 && r <= 0x30FF || r >= 0x4E00 && r <= 0x9FFF || r >= 0xAC00 && r <= 0xD7A3 {
		return true
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

// isLookalike reports whether r, lower-cased, is a Cyrillic or Greek
// look-alike of a Latin letter (homoglyph folds it).
func isLookalike(r rune) bool {
	if f := uniTables().flagsOf(r); f&ufSlow == 0 {
		return f&ufConfusable != 0
	}
	lr := lowerRune(r)
	return homoglyph(lr) != lr
}

// appendMatchView appends the matching view of clean (a clean view) to dst
// and, to m, for each byte appended, the offset in clean of the character
// it came from. m must be as long as dst.
func appendMatchView(dst []byte, m []int32, clean []byte) ([]byte, []int32) {
	dst = slices.Grow(dst, len(clean))
	n0 := len(dst)
	// singles counts the one-letter ASCII words in a row (white space
	// between them): only four or more make joinSingles worth running.
	singles, spaced := 0, false
	for i := 0; i < len(clean); {
		c := clean[i]
		if c < utf8.RuneSelf && !mvSpace[c] {
			// A run of ASCII bytes other than white space: lower-cased
			// as it is copied (no look-alike to fold in ASCII words).
			j := i + 1
			for j < len(clean) && clean[j] < utf8.RuneSelf && !mvSpace[clean[j]] {
				j++
			}
			if j < len(clean) && clean[j] >= utf8.RuneSelf {
				// The word may go on in another script: back off to its
				// start, which the general path below classifies.
				k := j
				for k > i && isASCIIAlnum(clean[k-1]) {
					k--
				}
				j = k
			}
			if j > i {
				if j-i == 1 && isLetterByte(c) {
					if singles++; singles >= 4 {
						spaced = true
					}
				} else {
					singles = 0
				}
				n := len(dst)
				dst = slices.Grow(dst, j-i)[:n+j-i]
				m = slices.Grow(m, j-i)[:len(m)+j-i]
				mm := m[len(m)-(j-i):]
				for k := i; k < j; k++ {
					dst[n+k-i] = lowerTab[clean[k]]
					mm[k-i] = int32(k)
				}
				i = j
				continue
			}
		}
		if c < utf8.RuneSelf {
			switch {
			case mvSpace[c]:
				if n := len(dst); n > n0 && dst[n-1] != ' ' {
					dst = append(dst, ' ')
					m = append(m, int32(i))
				}
				i++
				continue
			case !isASCIIAlnum(c):
				dst = append(dst, c)
				m = append(m, int32(i))
				i++
				continue
			}
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(clean[i:])
			if unicode.IsSpace(r) {
				if n := len(dst); n > n0 && dst[n-1] != ' ' {
					dst = append(dst, ' ')
					m = append(m, int32(i))
				}
				i += size
				continue
			}
			if !isTermWordRune(r) {
				before := len(dst)
				dst = utf8.AppendRune(dst, lowerRune(r))
				for range len(dst) - before {
					m = append(m, int32(i))
				}
				i += size
				continue
			}
		}
		singles = 0
		// A word: classify it, then write it lower-cased, folding
		// look-alikes when it mixes them with Latin letters or holds only
		// look-alikes.
		j := i
		latin, confusable, other := 0, 0, 0
		for j < len(clean) {
			r, sz := rune(clean[j]), 1
			if clean[j] >= utf8.RuneSelf {
				r, sz = utf8.DecodeRune(clean[j:])
			}
			if !isTermWordRune(r) {
				break
			}
			switch {
			case r < utf8.RuneSelf:
				if !('0' <= r && r <= '9') {
					latin++
				}
			case isLookalike(r):
				confusable++
			case unicode.IsLetter(r):
				other++
			}
			j += sz
		}
		glyphs := confusable > 0 && (latin > 0 || other == 0)
		for k := i; k < j; {
			r, sz := rune(clean[k]), 1
			if clean[k] >= utf8.RuneSelf {
				r, sz = utf8.DecodeRune(clean[k:])
			}
			if r < utf8.RuneSelf {
				dst = append(dst, lowerTab[byte(r)])
				m = append(m, int32(k))
				k++
				continue
			}
			lr := uniTables().toLower(r)
			if glyphs {
				lr = homoglyph(lr)
			}
			before := len(dst)
			dst = utf8.AppendRune(dst, lr)
			for range len(dst) - before {
				m = append(m, int32(k))
			}
			k += sz
		}
		i = j
	}
	if !spaced {
		return dst, m
	}
	return joinSingles(dst, m, clean, n0)
}

// joinSingles joins, in dst[n0:] and its map, runs of four or more single
// ASCII letters each separated by one space in clean ("b a d w o r d" ->
// "badword"); a wider gap in clean marks a word boundary inside the run,
// which stays a space.
func joinSingles(dst []byte, m []int32, clean []byte, n0 int) ([]byte, []int32) {
	b := dst[n0:]
	if !hasSingleRun(b) {
		return dst, m
	}
	single := func(p int) bool {
		return p < len(b) && isLetterByte(b[p]) && (p == 0 || !isWordByte(b[p-1])) && (p+1 == len(b) || !isWordByte(b[p+1]))
	}
	// Find runs first; most texts have none.
	w := 0
	changed := false
	mm := m[len(m)-len(b):]
	for i := 0; i < len(b); {
		if !single(i) {
			b[w], mm[w] = b[i], mm[i]
			w++
			i++
			continue
		}
		k, n := i, 1
		for k+2 < len(b) && b[k+1] == ' ' && single(k+2) {
			k += 2
			n++
		}
		if n < 4 {
			for ; i <= k; i++ {
				b[w], mm[w] = b[i], mm[i]
				w++
			}
			continue
		}
		changed = true
		for p := i; p <= k; p++ {
			if b[p] == ' ' {
				// One space in clean between the letters: joined.
				if int(mm[p+1])-int(mm[p-1]) == 2 {
					continue
				}
			}
			b[w], mm[w] = b[p], mm[p]
			w++
		}
		i = k + 1
	}
	if !changed {
		return dst, m
	}
	return dst[:n0+w], m[:len(m)-len(b)+w]
}

// cutAfter reports whether a streamed text may be cut early between p and
// the byte next (redact's quiet cuts): after a space, after non-ASCII
// punctuation, or after a character of a script written without spaces.
func cutAfter(p string, next byte) bool {
	if p[len(p)-1] == ' ' {
		return true
	}
	if !utf8.RuneStart(next) || p[len(p)-1] < utf8.RuneSelf {
		return false
	}
	r, _ := utf8.DecodeLastRuneInString(p)
	return noSpaceScript(r) || unicode.IsPunct(r)
}

// scanContent adds the content-safety matches of tm in the clean view.
func (s *scratch) scanContent(tm *termMatcher) {
	s.mbuf, s.mmap = appendMatchView(s.mbuf[:0], s.mmap[:0], s.view.b)
	mv, mm := s.mbuf, s.mmap
	tm.set.scan(mv, func(id, start int) bool {
		end := start + len(tm.terms[id])
		if !termBounded(mv, start, end) {
			return true
		}
		cs := int(mm[start])
		last := int(mm[end-1])
		_, size := utf8.DecodeRune(s.view.b[last:])
		s.addClean(DetectorContent, tm.cat[id], cs, last+size, tm.score[id])
		return true
	})
}

// termBounded reports whether the match mv[start:end] is a whole word
// (phrase): no word character continues it on a side where the term's own
// character needs a boundary.
func termBounded(mv []byte, start, end int) bool {
	if start > 0 {
		first, _ := utf8.DecodeRune(mv[start:])
		prev, _ := utf8.DecodeLastRune(mv[:start])
		if isTermWordRune(first) && !noSpaceScript(first) && isTermWordRune(prev) {
			return false
		}
	}
	if end < len(mv) {
		last, _ := utf8.DecodeLastRune(mv[:end])
		next, _ := utf8.DecodeRune(mv[end:])
		if isTermWordRune(last) && !noSpaceScript(last) && isTermWordRune(next) {
			return false
		}
	}
	return true
}

// HoldsTermPrefix reports whether text, the part of a streamed answer
// before a possible early cut, ends with the beginning of a content-safety
// phrase of the response direction ("... bad " of "bad word"), or with a
// spaced-out single letter: cut there, the phrase would be split between
// two scans and missed. redact.Stream asks it before each early cut.
func (sc *Scanner) HoldsTermPrefix(text []byte) bool {
	if sc.cfg.Content == nil {
		return false
	}
	tm := sc.cfg.Content.ContentRules().matcher(sc.cfg.Direction)
	if tm == nil {
		return false
	}
	// "x " at the end: letters spaced out may continue.
	if n := len(text); n >= 2 && isSpaceByte(text[n-1]) && isLetterByte(text[n-2]) && (n == 2 || !isWordByte(text[n-3])) {
		return true
	}
	if len(tm.prefixes) == 0 {
		return false
	}
	if !tm.cjk {
		// Quick answer for text ending with an ASCII word and white space:
		// unless the word ends some prefix, nothing can.
		e := len(text)
		for e > 0 && isSpaceByte(text[e-1]) {
			e--
		}
		st := e
		for st > 0 && isASCIIAlnum(text[st-1]) {
			st--
		}
		if e < len(text) && st < e && e-st <= 64 && (st == 0 || text[st-1] < utf8.RuneSelf && !isASCIIAlnum(text[st-1])) {
			var buf [64]byte
			w := buf[:e-st]
			for k := range w {
				w[k] = lowerTab[text[st+k]]
			}
			if _, ok := tm.lastWords[string(w)]; !ok {
				return false
			}
		}
	}
	tail := text[max(0, len(text)-(2*tm.maxPrefix+32)):]
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	s := sc.pool.Get().(*scratch)
	defer sc.release(s)
	s.reset(unsafeString(tail))
	var h HiddenText
	v := s.clean(unsafeString(tail), &h, false)
	mv, _ := appendMatchView(s.mbuf[:0], s.mmap[:0], v.b)
	s.mbuf = mv
	for k := 0; k < len(mv); k++ {
		if len(mv)-k > tm.maxPrefix {
			continue
		}
		if !utf8.RuneStart(mv[k]) {
			continue
		}
		if k > 0 && mv[k-1] != ' ' {
			prev, _ := utf8.DecodeLastRune(mv[:k])
			if !noSpaceScript(prev) && isTermWordRune(prev) {
				continue
			}
		}
		if _, ok := tm.prefixes[string(mv[k:])]; ok {
			return true
		}
	}
	return false
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// joinedForm is a phrase of ASCII words written without its spaces
// ("nerve agent" -> "nerveagent"), as spaced-out letters and run-together
// words read; "" for a single word or a phrase with other characters.
func joinedForm(m string) string {
	if !strings.Contains(m, " ") {
		return ""
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c != ' ' && !isLetterByte(c) {
			return ""
		}
	}
	return strings.ReplaceAll(m, " ", "")
}

// mvSpace marks the ASCII white space the matching view collapses.
var mvSpace = func() (t [256]bool) {
	for _, c := range " \t\n\r\f\v" {
		t[c] = true
	}
	return t
}()

// hasSingleRun reports whether b may hold four single letters in a row
// ("a b c d"): a letter between spaces, then another two bytes on.
func hasSingleRun(b []byte) bool {
	run := 0
	for i := 0; i+1 < len(b); i++ {
		if b[i+1] == ' ' && isLetterByte(b[i]) && (i == 0 || b[i-1] == ' ') {
			if run++; run >= 4 {
				return true
			}
			i++ // the space
			continue
		}
		if b[i] != ' ' {
			run = 0
		}
	}
	return run >= 3 && len(b) > 0 && isLetterByte(b[len(b)-1])
}
