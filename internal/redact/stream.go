package redact

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// Scanner is what redaction needs of detect.Scanner: findings with byte
// offsets into the scanned text. Scan must depend on its text alone (as
// detect's does), or a Stream's output would depend on how input was split.
// A detect.Scanner used only for redaction can disable the injection
// detector, which is most of a scan's cost.
type Scanner interface {
	Scan(text string) detect.Result
}

var _ Scanner = (*detect.Scanner)(nil)

// termHolder is what a Scanner with content-safety phrases offers a Stream
// (detect.Scanner does): whether text, the input before a possible early
// cut, ends with the beginning of a phrase, which the cut would split
// between two scans.
type termHolder interface {
	HoldsTermPrefix(text []byte) bool
}

var _ termHolder = (*detect.Scanner)(nil)

// codeScanner is what a Scanner that sanitises answers' markup offers a
// Stream (detect.Scanner does): a scan of a window given the code state
// (fenced blocks, inline code spans) at its start, which the Stream carries
// from window to window, since a window cannot see the fence it may be in.
type codeScanner interface {
	ScanCode(text string, st detect.CodeState, final bool) detect.Result
	SanitizesMarkup() bool
}

var _ codeScanner = (*detect.Scanner)(nil)

// Stream defaults and limits.
const (
	// DefaultStep is the default number of bytes released per full window
	// (text without a quiet cut, see Stream): small enough that a client
	// sees text flow, large enough that the scan of each window is
	// amortised over several tokens.
	DefaultStep = 64
	// DefaultLookahead is the default number of bytes a full window holds
	// back beyond its cut: longer than any credential format detect knows
	// short of PEM blocks. Step+Lookahead bounds what a Stream holds.
	DefaultLookahead = 512
	// MaxWindow bounds Step+Lookahead, and with it the memory a Stream holds.
	MaxWindow = 1 << 20
)

// ErrClosed is returned by Write after Close: the stream's output is final,
// and accepting more text would release it unscanned or not at all.
var ErrClosed = errors.New("redact: write to a closed stream")

// StreamOptions configures a Stream. The zero value uses the defaults.
type StreamOptions struct {
	// Step is the number of bytes released per full window (default
	// DefaultStep). A larger step scans less often; a smaller one releases
	// text without quiet cuts sooner.
	Step int
	// Lookahead is the number of bytes a full window holds back beyond its
	// cut (default DefaultLookahead): a finding that starts before a cut is
	// seen whole, and so redacted whole, when it is at most Lookahead bytes
	// long. Text with quiet cuts leaves sooner; Step+Lookahead bounds how
	// long a run without one is held.
	Lookahead int
	// Literals are exact strings (value → type) reported as findings with
	// Detector DetectorCanary, such as canary tokens planted in a system
	// prompt; an empty type means CanaryType. They are found even when split
	// across writes. Empty values and values longer than Lookahead are
	// errors: the first matches everywhere, the second could straddle a cut.
	Literals map[string]string
}

// Validate reports the first bad field.
func (o StreamOptions) Validate() error {
	o = o.withDefaults()
	switch {
	case o.Step < 0:
		return fmt.Errorf("redact: StreamOptions.Step %d is negative", o.Step)
	case o.Lookahead < 0:
		return fmt.Errorf("redact: StreamOptions.Lookahead %d is negative", o.Lookahead)
	case o.Step+o.Lookahead < utf8.UTFMax:
		return fmt.Errorf("redact: StreamOptions.Step+Lookahead %d is less than %d: a window must hold a whole character", o.Step+o.Lookahead, utf8.UTFMax)
	case o.Step > MaxWindow || o.Lookahead > MaxWindow || o.Step+o.Lookahead > MaxWindow:
		return fmt.Errorf("redact: StreamOptions.Step+Lookahead %d exceeds %d", o.Step+o.Lookahead, MaxWindow)
	}
	for v := range o.Literals {
		if v == "" {
			return errors.New("redact: StreamOptions.Literals has an empty value")
		}
		if len(v) > o.Lookahead {
			return fmt.Errorf("redact: StreamOptions.Literals value of %d bytes is longer than Lookahead %d", len(v), o.Lookahead)
		}
	}
	return nil
}

func (o StreamOptions) withDefaults() StreamOptions {
	if o.Step == 0 {
		o.Step = DefaultStep
	}
	if o.Lookahead == 0 {
		o.Lookahead = DefaultLookahead
	}
	return o
}

// Window is what one Write or Close released.
type Window struct {
	// Text is the redacted text released now; it may be empty.
	Text string
	// Findings are every finding inside the released text, whether a rule
	// matched it or not, including canary literals, sorted by ByteStart.
	// Their offsets (ByteStart/ByteEnd in bytes, Start/End in code points)
	// are relative to the released text BEFORE redaction, that is to the
	// input starting at byte Offset; no finding straddles two releases.
	Findings []detect.Finding
	// Redactions is the number of spans replaced in Text.
	Redactions int
	// Offset is the input byte offset of the first byte released now, so that
	// Offset+Finding.ByteStart locates a finding in the whole stream.
	Offset int
}

// Stream redacts a text that arrives in pieces (the text content of SSE
// events), releasing only what can no longer become part of a finding.
//
// Most text leaves early: at a quiet cut, a position after a space (or
// after a character of a script written without spaces, or non-ASCII
// punctuation) that follows quietSpan bytes of inert text (letters, marks,
// spaces, prose punctuation; no digit, '@', ':', '=', quote, dash run,
// hidden or format character), with no private key open before it and no
// beginning of a literal (a canary) at its end. No finding of detect spans
// such a position, so the text before it is scanned, with leftContext
// released bytes before it for context ("my password is", "call me on"),
// redacted and released, at least minSegment bytes at a time. What is held
// is then the suffix that may still be, or lead up to, a finding: the
// digits of a number that may grow into a phone, card or IBAN, a partial
// e-mail, key or token, an open quote or key block, the start of a canary;
// for ordinary prose, a word or two.
//
// Where no quiet cut comes within Step+Lookahead bytes (a long token, a key
// block, a table of numbers), text leaves in full windows as before: with
// o the input offset of the first unreleased byte and W = Step+Lookahead,
// once input[o:o+W] has arrived it is scanned as one window (shortened to
// end on a whole character), a cut c is computed from the window's bytes,
// its findings and the findings carried from the previous window,
// input[o:o+c] is redacted and released, and o advances by c. The cut is
// Step backed off to a character boundary, moved back to the start of a
// group of overlapping findings that straddles it, or, when that group
// starts the window, forward to its end. Findings past the cut are carried
// into the next window, which starts at the cut and so contains them, and
// no early release cuts through a carried finding. Every two windows
// release at least Step-3 bytes, so a scan costs at most about 2*W/(Step-3)
// times the bytes released. A finding longer than Lookahead that straddles
// a cut may be seen only in part. Close releases the remainder as a last
// window.
//
// The concatenation of everything released (Write outputs, then Close
// output) depends on the concatenated input alone: it is byte-identical
// however the input was split, including splits inside a UTF-8 character.
// Whether a position is a quiet cut depends on the input before it alone,
// and full windows are content-defined, so the sequence of windows is a
// function of the input, and so is the output (given a Scanner whose Scan
// is a function of its text). A Stream is not safe for concurrent use.
type Stream struct {
	r      *Redactor
	sc     Scanner
	terms  termHolder // sc, when it matches phrases; else nil
	code   codeScanner
	step   int
	window int
	lits   []literal

	buf    []byte // pending input is buf[off:], after up to leftContext released bytes
	off    int
	pos    int              // input offset of buf[off]
	carry  []detect.Finding // findings past the last cut, relative to buf[off:]
	closed bool
	// inKey: a private key's BEGIN line was released (redacted) without
	// its END line; input is dropped up to and including the END line.
	inKey bool
	// searched is how far into the pending text quietCut found no quiet
	// position, so that a run of small writes is not searched again.
	searched int
	// text collects the text one Write releases.
	text []byte
	// The code state (see detect.CodeState), when code is set: lag is the
	// state before buf[lagPos], kept at max(0, off-leftContext), where a
	// window's left context starts; qst is the state before buf[qpos],
	// where quietCut's search resumes (qpos < 0: unknown).
	lag    detect.CodeState
	lagPos int
	spans  [][2]int         // scratch for codeCut
	merged []detect.Finding // scratch for codeCut
	qst    detect.CodeState
	qpos   int

	// Scratch reused by scan: findings, their report flags, and spares
	// for sorting them together.
	work, sorted      []detect.Finding
	report, sortedRep []bool
	idx               []int
}

// NewStream starts redacting one streamed text with sc, which must not be
// nil. It fails only for invalid options.
func (r *Redactor) NewStream(sc Scanner, opt StreamOptions) (*Stream, error) {
	if sc == nil {
		return nil, errors.New("redact: NewStream needs a Scanner")
	}
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	opt = opt.withDefaults()
	th, _ := sc.(termHolder)
	cs, _ := sc.(codeScanner)
	if cs != nil && !cs.SanitizesMarkup() {
		cs = nil // no markup read: the code state would change nothing
	}
	return &Stream{
		r:      r,
		sc:     sc,
		terms:  th,
		code:   cs,
		qpos:   -1,
		step:   opt.Step,
		window: opt.Step + opt.Lookahead,
		lits:   compileLiterals(opt.Literals),
	}, nil
}

// Write adds p to the stream and returns what can now be released. The only
// error is ErrClosed, for a Write after Close (misuse); the text is then
// dropped.
func (s *Stream) Write(p []byte) (Window, error) {
	if s == nil || s.closed {
		return Window{}, ErrClosed
	}
	s.buf = append(s.buf, p...)
	return s.drain(false), nil
}

// WriteString is Write for a string, saving the caller a conversion.
func (s *Stream) WriteString(p string) (Window, error) {
	if s == nil || s.closed {
		return Window{}, ErrClosed
	}
	s.buf = append(s.buf, p...)
	return s.drain(false), nil
}

// Close releases everything held, redacted, and ends the stream. Later
// calls return an empty Window.
func (s *Stream) Close() Window {
	if s == nil || s.closed {
		return Window{}
	}
	s.closed = true
	w := s.drain(true)
	s.buf, s.carry, s.text, s.off = nil, nil, nil, 0
	s.work, s.sorted, s.report, s.sortedRep, s.idx = nil, nil, nil, nil, nil
	return w
}

// Held is the number of input bytes received but not yet released. Between
// calls it is less than Step+Lookahead, and for ordinary prose a few words.
func (s *Stream) Held() int {
	if s == nil {
		return 0
	}
	return len(s.buf) - s.off
}

// Hold-back bounds of the early release (see Stream).
const (
	// minSegment is the fewest bytes an early release carries: fewer scans
	// for the same text, and a bound on how far behind a client runs
	// (minSegment plus the distance to the next quiet cut).
	minSegment = 24
	// quietSpan is how many bytes before a cut must be inert text (letters,
	// spaces, prose punctuation): no finding of detect's spans inert text
	// and a space, and every finding released this way had at least this
	// much right context (a phone's context word lies within 12 bytes).
	quietSpan = 24
	// leftContext is how many released bytes an early release scans before
	// its text, so that context ("my password is", "call me on", an
	// identifier before "=") still counts across the cut.
	leftContext = 64
)

// drain releases what can be released: early releases at quiet cuts,
// full windows where no quiet cut comes, and, when final, the remainder.
func (s *Stream) drain(final bool) Window {
	out := Window{Offset: s.pos}
	s.text = s.text[:0]
	released, cps := 0, 0
	for {
		pend := s.buf[s.off:]
		if s.inKey {
			n, done := keyEnd(pend, final)
			released += n
			cps += utf8.RuneCount(pend[:n])
			s.off += n
			s.pos += n
			if !done {
				break
			}
			s.inKey = false
			s.carry = s.carry[:0]
			s.searched = 0
			continue
		}
		if len(pend) == 0 {
			break
		}
		c := s.quietCut()
		if c == 0 && len(pend) < s.window && !final {
			break
		}
		var ws string
		ctx := 0 // bytes of left context at the start of ws
		fallback := c == 0 && len(pend) >= s.window
		if fallback {
			ws = unsafe.String(&s.buf[s.off], completeEnd(pend[:s.window])) // #nosec G103 -- read only while buf is not written
		} else {
			// An early release, or the remainder at Close.
			if c == 0 {
				c = len(pend)
			}
			ctx = s.off - max(0, s.off-leftContext)
			ws = unsafe.String(&s.buf[s.off-ctx], ctx+c) // #nosec G103 -- as above
		}
		wsStart := s.off - ctx
		finds, report := s.scan(ws, ctx, wsStart, final && wsStart+len(ws) == len(s.buf))
		if fallback {
			finds, report = s.wordEdges(finds, report, ws)
		}
		if !fallback {
			// An early release or the remainder: the window ends at the
			// cut, so nothing is carried past it.
			k := s.clip(finds, report, ctx)
			finds, report = finds[:k], report[:k]
			for i := range finds {
				finds[i].ByteStart -= ctx
				finds[i].ByteEnd -= ctx
			}
		} else {
			c = s.cut(ws, finds)
			if s.code != nil {
				c = s.codeCut(ws, finds, c)
			}
		}
		k := 0
		for k < len(finds) && finds[k].ByteStart < c {
			k++
		}
		rel := ws[ctx : ctx+c]
		text, n := s.r.Apply(rel, finds[:k])
		if fallback && k > 0 && openKey(rel, finds[:k]) {
			// A private key longer than the window: its BEGIN line and first
			// lines were redacted here; drop the rest up to its END line,
			// which no later window would recognise as part of a key.
			s.inKey = true
		}
		if k > 0 {
			setCodePoints(finds[:k], rel, cps)
			for i, f := range finds[:k] {
				if report[i] {
					f.ByteStart += released
					f.ByteEnd += released
					out.Findings = append(out.Findings, f)
				}
			}
		}
		s.carry = s.carry[:0]
		for _, f := range finds[k:] {
			if f.Detector == detect.DetectorMarkup && s.code != nil {
				// The next window, which starts at the cut, reads the
				// construct again with the code state there: one seen here
				// in a code span this window could not see closed must not
				// be redacted for that.
				continue
			}
			f.ByteStart -= c
			f.ByteEnd -= c
			s.carry = append(s.carry, f)
		}
		s.text = append(s.text, text...)
		out.Redactions += n
		released += c
		cps += utf8.RuneCountInString(rel)
		s.off += c
		s.pos += c
		s.searched = 0
	}
	if len(s.text) > 0 {
		out.Text = string(s.text)
	}
	if keep := s.off - leftContext; keep > 0 {
		if s.code != nil {
			s.codeAt(keep) // the lag state moves to the new buf[0]
			s.lagPos -= keep
			if s.qpos -= keep; s.qpos < 0 {
				s.qpos = -1
			}
		}
		// Keep leftContext released bytes before the pending text.
		if cap(s.buf) > 4*s.window {
			// A large Write grew the buffer; do not hold its memory for the
			// rest of the stream.
			s.buf = append(make([]byte, 0, 2*s.window+leftContext), s.buf[keep:]...)
		} else {
			s.buf = s.buf[:copy(s.buf, s.buf[keep:])]
		}
		s.off -= keep
	}
	return out
}

// clip keeps, in place, of a window's sorted findings and their report
// flags, those that reach past its ctx bytes of left context, starting no
// earlier than ctx (a finding that began in released text is redacted from
// the cut on, and was reported then); it returns how many it kept.
func (s *Stream) clip(finds []detect.Finding, report []bool, ctx int) int {
	k := 0
	for i, f := range finds {
		if f.ByteEnd <= ctx {
			continue
		}
		rep := report[i]
		if f.ByteStart < ctx {
			f.ByteStart, rep = ctx, false
		}
		finds[k], report[k] = f, rep
		k++
	}
	return k
}

// quietCut returns where an early release of the pending text would end,
// or 0: the first quiet position (see quiet) at least minSegment bytes
// (but less than the window) into it, and past every finding carried from
// the last window. Whether a position is quiet depends on the input before
// it alone, so the cuts, and with them the output, are a function of the
// input whatever its split. At Close, when no quiet cut comes, the caller
// releases the rest.
func (s *Stream) quietCut() int {
	pend := len(s.buf) - s.off
	lo := min(minSegment, max(1, s.window/2))
	for _, f := range s.carry {
		lo = max(lo, f.ByteEnd)
	}
	lo = max(lo, s.searched)
	hi := min(pend, s.window-1)
	if s.code != nil && lo <= hi {
		// No cut inside an inline code span whose closer has not come:
		// whether the text after its opener is code depends on it.
		if s.qpos < 0 || s.qpos > s.off+lo || s.qpos < s.lagPos {
			s.qst, s.qpos = s.codeAt(s.off+lo), s.off+lo
		}
		s.qst.Advance(s.buf[s.qpos : s.off+lo])
		s.qpos = s.off + lo
		for p := lo; p <= hi; p++ {
			if !s.qst.InSpan() && s.quiet(s.off+p) {
				return p
			}
			if p < pend {
				s.qst.Advance(s.buf[s.off+p : s.off+p+1])
				s.qpos++
			}
		}
		s.searched = max(lo, hi+1)
		return 0
	}
	for p := lo; p <= hi; p++ {
		if s.quiet(s.off + p) {
			return p
		}
	}
	// Nothing quiet up to hi: later input cannot change that.
	s.searched = max(lo, hi+1)
	return 0
}

// scan returns the findings of window ws sorted by ByteStart, and which of
// them to report. They are the scanner's, the literals', and those carried
// from the previous window (the text past its cut, which starts this
// window): a carried finding was seen with left context this window lacks
// (the "password is" before a value), so it is still cut around and
// redacted. It is reported only when no finding of its detector that is
// already reported overlaps it (fresh ones first), so that one value is not
// counted twice; exact duplicates of fresh findings are dropped.
func (s *Stream) scan(ws string, ctx, at int, final bool) ([]detect.Finding, []bool) {
	var res detect.Result
	if s.code != nil {
		res = s.code.ScanCode(ws, s.codeAt(at), final)
	} else {
		res = s.sc.Scan(ws)
	}
	w := appendClean(s.work[:0], res.Findings, ws)
	w = appendLiterals(w, ws, s.lits)
	sortFindings(w)
	fresh := len(w)
	rep := s.report[:0]
	for range fresh {
		rep = append(rep, true)
	}
	for _, f := range s.carry {
		f.ByteStart += ctx
		f.ByteEnd = min(f.ByteEnd+ctx, len(ws))
		if f.ByteStart < 0 || f.ByteStart >= f.ByteEnd || slices.ContainsFunc(w[:fresh], func(g detect.Finding) bool { return sameSpan(f, g) }) {
			continue
		}
		dup := false
		for i, g := range w {
			if rep[i] && g.Detector == f.Detector && g.ByteStart < f.ByteEnd && f.ByteStart < g.ByteEnd {
				dup = true
				break
			}
		}
		w = append(w, f)
		rep = append(rep, !dup)
	}
	if len(w) > fresh {
		// Sort findings and flags together, stably, by ByteStart.
		idx := s.idx[:0]
		for i := range w {
			idx = append(idx, i)
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(w[a].ByteStart, w[b].ByteStart) })
		sw, sr := s.sorted[:0], s.sortedRep[:0]
		for _, i := range idx {
			sw, sr = append(sw, w[i]), append(sr, rep[i])
		}
		s.idx, s.sorted, s.sortedRep = idx, w, rep
		w, rep = sw, sr
	}
	s.work, s.report = w, rep
	return w, rep
}

// codeCut moves the cut c of the full window ws (with its sorted
// findings) out of an inline code span, as cut does out of a finding: a
// span cut in two would not be code in either window (the next one starts
// after its opener), so the stream would sanitise what a buffered answer
// keeps.
func (s *Stream) codeCut(ws string, finds []detect.Finding, c int) int {
	spans := detect.InlineSpans(ws, s.codeAt(s.off), s.spans[:0])
	s.spans = spans
	straddles := false
	for _, sp := range spans {
		if sp[0] < c && c < sp[1] {
			straddles = true
		}
	}
	if !straddles {
		return c
	}
	m := append(s.merged[:0], finds...)
	for _, sp := range spans {
		m = append(m, detect.Finding{ByteStart: sp[0], ByteEnd: sp[1]})
	}
	slices.SortStableFunc(m, func(a, b detect.Finding) int { return cmp.Compare(a.ByteStart, b.ByteStart) })
	s.merged = m
	return s.cut(ws, m)
}

// codeAt returns the code state before buf[i], for i at or after where the
// current window's left context starts, moving the lag state up to there.
func (s *Stream) codeAt(i int) detect.CodeState {
	if lo := max(0, s.off-leftContext); lo > s.lagPos {
		s.lag.Advance(s.buf[s.lagPos:lo])
		s.lagPos = lo
	}
	st := s.lag
	st.Advance(s.buf[s.lagPos:max(i, s.lagPos)])
	return st
}

// sameSpan reports whether f and g are the same finding, whatever their
// code point offsets and scores.
func sameSpan(f, g detect.Finding) bool {
	return f.Detector == g.Detector && f.Type == g.Type && f.ByteStart == g.ByteStart && f.ByteEnd == g.ByteEnd
}

// cut chooses how many bytes of the full window ws to release, from ws and
// its sorted findings alone: Step backed off to a character boundary, moved
// to the start of the group of overlapping findings that straddles it, or,
// when that group starts at 0, to the group's end. The result is in
// [1, len(ws)], so every window makes progress.
func (s *Stream) cut(ws string, finds []detect.Finding) int {
	c := min(s.step, len(ws))
	if c < len(ws) && !utf8.RuneStart(ws[c]) {
		i := c
		for k := 0; k < utf8.UTFMax-1 && i > 0 && !utf8.RuneStart(ws[i]); k++ {
			i--
		}
		if utf8.RuneStart(ws[i]) {
			c = i
		}
	}
	if c == 0 {
		_, c = utf8.DecodeRuneInString(ws)
	}
	for i := 0; i < len(finds); {
		st, en := finds[i].ByteStart, finds[i].ByteEnd
		j := i + 1
		for ; j < len(finds) && finds[j].ByteStart < en; j++ {
			en = max(en, finds[j].ByteEnd)
		}
		if st >= c {
			break
		}
		if c < en {
			if st > 0 {
				return st
			}
			return min(en, len(ws))
		}
		i = j
	}
	return c
}

// openKey reports whether a finding of a released window is a private key
// that runs to the window's end without its END line.
func openKey(rel string, finds []detect.Finding) bool {
	for _, f := range finds {
		if f.Type == "PRIVATE_KEY" && f.ByteEnd >= len(rel) && !strings.Contains(rel[f.ByteStart:], "-----END ") {
			return true
		}
	}
	return false
}

// pemEndMax bounds the END line's label ("-----END ENCRYPTED PRIVATE
// KEY-----" has 25 bytes between the dashes), as detect's pemKey does.
const pemEndMax = 60

// keyEnd returns how many bytes of pend, the input after an open private
// key, to drop, and whether the key has ended: through the first
// "-----END " line's closing dashes (or the end of that line, or pemEndMax
// bytes of label), holding back a tail that could be the start of the
// marker until more input arrives. The result is a function of the input,
// whatever its split, so chunking invariance holds; final drops everything
// of an unterminated key.
func keyEnd(pend []byte, final bool) (int, bool) {
	const marker = "-----END "
	k := bytes.Index(pend, []byte(marker))
	if k < 0 {
		if final {
			return len(pend), true
		}
		return max(0, len(pend)-(len(marker)-1)), false
	}
	for e := k + len(marker); ; e++ {
		if e-k-len(marker) >= pemEndMax {
			return e, true
		}
		if e >= len(pend) || pend[e] == '-' && e+5 > len(pend) {
			if final {
				return len(pend), true
			}
			return k, false
		}
		if pend[e] == '\n' {
			return e, true
		}
		if string(pend[e:min(e+5, len(pend))]) == "-----" {
			return e + 5, true
		}
	}
}

// completeEnd returns len(b) shortened by an incomplete UTF-8 character at
// its end, looking only at b, so that a window never ends inside a character
// whatever bytes follow.
func completeEnd(b []byte) int {
	n := len(b)
	for i := n - 1; i >= 0 && i >= n-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return n
		}
	}
	return n
}

// quiet reports whether the input may be cut before buf[i] without more
// input: no finding can reach across the cut or still change before it.
// It looks only at buf[:i] (and the position of the pending text), so its
// answer never changes as input arrives. The cut must follow a space (or a
// character of a script written without spaces, or non-ASCII punctuation),
// after quietSpan bytes of inert text (see inert); no private key may be
// open in the scanned text; and the letters and digits before the cut must
// not end with the beginning of a literal (a canary split over events).
func (s *Stream) quiet(i int) bool {
	b := s.buf
	if i <= 0 || !boundary(b[:i]) {
		return false
	}
	if !inert(b[max(0, i-quietSpan):i]) {
		return false
	}
	if openBlock(b[max(0, s.off-leftContext):i]) || openValue(b[max(0, s.off-leftContext):i]) {
		return false
	}
	for k := range s.lits {
		if literalPrefixAtEnd(b[:i], s.lits[k].norm) {
			return false
		}
	}
	if s.terms != nil && s.terms.HoldsTermPrefix(b[:i]) {
		return false
	}
	return true
}

// wordEdges drops, from a full window's findings (ws starts at s.off, with
// no left context), the content-safety matches the window's edges made:
// one at the window's start that a word character before it continues,
// and one at its end that a word character after it continues. The scan
// of the window takes its edges for word boundaries; the stream knows
// better. A real match at an edge is found again by the next window,
// which starts at or before it.
func (s *Stream) wordEdges(finds []detect.Finding, report []bool, ws string) ([]detect.Finding, []bool) {
	k := 0
	for i, f := range finds {
		if f.Detector == detect.DetectorContent {
			if f.ByteStart == 0 && s.off > 0 && wordRune(lastRune(s.buf[:s.off])) {
				continue
			}
			if f.ByteEnd == len(ws) && s.off+len(ws) < len(s.buf) && wordRune(firstRune(s.buf[s.off+len(ws):])) {
				continue
			}
		}
		finds[k], report[k] = f, report[i]
		k++
	}
	return finds[:k], report[:k]
}

func lastRune(b []byte) rune  { r, _ := utf8.DecodeLastRune(b); return r }
func firstRune(b []byte) rune { r, _ := utf8.DecodeRune(b); return r }

func wordRune(r rune) bool {
	return r != utf8.RuneError && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r))
}

// boundary reports whether b ends where a word ends: after ASCII white
// space, after non-ASCII punctuation, or after a character of a script
// written without spaces between words (Han, kana, Hangul, Thai).
func boundary(b []byte) bool {
	switch c := b[len(b)-1]; c {
	case ' ', '\n', '\t', '\r':
		return true
	default:
		if c < utf8.RuneSelf {
			return false
		}
	}
	r, size := utf8.DecodeLastRune(b)
	if r == utf8.RuneError && size <= 1 {
		return false
	}
	if r >= 0xFF01 && r <= 0xFF5E {
		return false // fullwidth ASCII: the detectors read it as ASCII
	}
	return unicode.IsPunct(r) || unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul, unicode.Thai)
}

// inert reports whether b, the text just before a cut, is text no finding
// is made of across a space: letters, marks, white space, symbols and
// prose punctuation, in any script. Digits (phones, cards, IBANs, ids),
// '@', ':', '=', quotes (a quoted value may hold spaces), '+', '\\',
// brackets, dash runs (PEM armour), control and format characters (hidden
// text), variation selectors and invalid bytes are not. b may start inside
// a character.
func inert(b []byte) bool {
	i := 0
	for i < len(b) && !utf8.RuneStart(b[i]) {
		i++
	}
	for i < len(b) {
		c := b[i]
		if c < utf8.RuneSelf {
			if !inertASCII(b, i) {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return false
		}
		switch {
		case r >= 0xFF01 && r <= 0xFF5E:
			// Fullwidth ASCII, which the detectors fold to ASCII.
			a := byte(r - (0xFF01 - 0x21))
			if !inertByte(a) {
				return false
			}
		case r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0000:
			return false // variation selectors, tags: hidden text
		case unicode.IsDigit(r), unicode.Is(unicode.Cf, r), unicode.Is(unicode.Co, r), unicode.IsControl(r):
			return false
		case unicode.IsLetter(r), unicode.IsMark(r), unicode.IsSpace(r), unicode.IsPunct(r), unicode.IsSymbol(r):
		default:
			return false
		}
		i += size
	}
	return true
}

// inertASCII is inert for the ASCII byte b[i], with its neighbours: an
// apostrophe inside a word ("don't") and a single dash are inert.
func inertASCII(b []byte, i int) bool {
	switch c := b[i]; c {
	case '\'':
		return i > 0 && i+1 < len(b) && isASCIILetter(b[i-1]) && isASCIILetter(b[i+1])
	case '-':
		return (i == 0 || b[i-1] != '-') && (i+1 >= len(b) || b[i+1] != '-')
	default:
		return inertByte(c)
	}
}

// inertByte is inert for one ASCII byte out of context.
func inertByte(c byte) bool {
	switch {
	case isASCIILetter(c):
		return true
	case c == ' ', c == '\n', c == '\t', c == '\r':
		return true
	}
	switch c {
	case '.', ',', ';', '!', '?', '(', ')', '*', '#', '_', '/', '&', '~', '^', '-':
		return true
	}
	return false
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// openBlock reports whether b holds the start of a private key block whose
// end b does not hold: such a block may span any number of quiet-looking
// lines, so it is released by full windows (see Stream).
func openBlock(b []byte) bool {
	for _, m := range [...]struct{ open, close string }{
		{"-----BEGIN", "-----END"},
		{"PuTTY-User-Key-File", "Private-MAC"},
	} {
		if !bytes.Contains(b, []byte(m.open)) {
			continue
		}
		if k := bytes.LastIndex(b, []byte(m.open)); !bytes.Contains(b[k:], []byte(m.close)) {
			return true
		}
	}
	return false
}

// openValue reports whether the last line of b has an open quoted value:
// a quote after '=', ':', '(', ',' or '[' (an assignment or an argument)
// that is not closed. A quoted password may hold spaces and plain words, so
// it is held whole, up to the window bound.
func openValue(b []byte) bool {
	if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
		b = b[k+1:]
	}
	var open byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case open != 0 && c == '\\':
			i++ // an escaped character does not close the value
		case open != 0:
			if c == open {
				open = 0
			}
		case c == '"' || c == '`' || c == '\'':
			j := i
			for j > 0 && (b[j-1] == ' ' || b[j-1] == '\t') {
				j--
			}
			if j > 0 && strings.IndexByte("=:(,[", b[j-1]) >= 0 {
				open = c
			}
		}
	}
	return open != 0
}

// literalPrefixAtEnd reports whether the letters and digits at the end of
// b, folded as literals are matched, end with a proper prefix of norm (a
// literal's normal form): the literal may be completed by the next event.
func literalPrefixAtEnd(b []byte, norm string) bool {
	var buf [96]rune
	want := utf8.RuneCountInString(norm) - 1
	if want > len(buf) {
		return true // longer than this check reads: never cut early
	}
	// rev holds the folded letters and digits before the end, last first.
	rev := buf[:0]
	for i := len(b); i > 0 && len(rev) < want; {
		r := rune(b[i-1])
		if r < utf8.RuneSelf {
			i--
		} else {
			var size int
			r, size = utf8.DecodeLastRune(b[:i])
			i -= size
		}
		if f, ok := fold(r); ok {
			if len(rev) == 0 && !strings.ContainsRune(norm, f) {
				return false // the last character is in no prefix
			}
			rev = append(rev, f)
		}
	}
	first, _ := utf8.DecodeRuneInString(norm)
	for j := len(rev) - 1; j >= 0; j-- {
		if rev[j] != first {
			continue
		}
		// rev[j], rev[j-1], ..., rev[0] against the start of norm.
		pos, m := 0, j
		for ; m >= 0; m-- {
			r, size := utf8.DecodeRuneInString(norm[pos:])
			if r != rev[m] {
				break
			}
			pos += size
		}
		if m < 0 {
			return true
		}
	}
	return false
}
