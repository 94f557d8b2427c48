package redact

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

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

// Stream defaults and limits.
const (
	// DefaultStep is the default number of bytes released per window: small
	// enough that a client sees text flow, large enough that the scan of each
	// window is amortised over several tokens.
	DefaultStep = 64
	// DefaultLookahead is the default number of bytes held back beyond each
	// cut: longer than any credential format detect knows short of PEM blocks.
	DefaultLookahead = 512
	// MaxWindow bounds Step+Lookahead, and with it the memory a Stream holds.
	MaxWindow = 1 << 20
)

// ErrClosed is returned by Write after Close: the stream's output is final,
// and accepting more text would release it unscanned or not at all.
var ErrClosed = errors.New("redact: write to a closed stream")

// StreamOptions configures a Stream. The zero value uses the defaults.
type StreamOptions struct {
	// Step is the number of bytes released per window (default
	// DefaultStep). A larger step scans less often; a smaller one releases
	// text sooner.
	Step int
	// Lookahead is the number of bytes held back beyond each cut (default
	// DefaultLookahead): a finding that starts before a cut is seen whole,
	// and so redacted whole, when it is at most Lookahead bytes long.
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
// The concatenation of everything released (Write outputs, then Close
// output) depends on the concatenated input alone: it is byte-identical
// however the input was split, including splits inside a UTF-8 character.
// That holds because windows are content-defined, never "whatever has
// arrived": with o the input offset of the first unreleased byte and
// W = Step+Lookahead, as soon as input[o:o+W] has arrived it is scanned as
// one window (shortened to end on a whole character, judged from those
// bytes alone), a cut c is computed from the window's bytes, its findings
// and the findings carried from the previous window, input[o:o+c] is
// redacted and released, and o advances by c. Close releases the remainder,
// always shorter than W, as a last window. The sequence of windows is thus a
// function of the input, and so is the output (given a Scanner whose Scan is
// a function of its text).
//
// The cut is Step backed off to a character boundary, moved back to the
// start of a group of overlapping findings that straddles it, or, when that
// group starts the window, forward to its end. Findings past the cut are
// carried into the next window, which starts at the cut and so contains
// them: context seen before a cut (the "password is" before a value) still
// counts after it, and a group moved back to is at the start of the next
// window, so every two windows release at least Step-3 bytes and a scan
// costs at most about 2*W/(Step-3) times the bytes released.
//
// A finding longer than Lookahead that straddles a cut may be seen only in
// part. A Stream is not safe for concurrent use.
type Stream struct {
	r      *Redactor
	sc     Scanner
	step   int
	window int
	lits   []literal

	buf    []byte // pending input is buf[off:]
	off    int
	pos    int              // input offset of buf[off]
	carry  []detect.Finding // findings past the last cut, relative to buf[off:]
	closed bool
	// inKey: a private key's BEGIN line was released (redacted) without
	// its END line; input is dropped up to and including the END line.
	inKey bool

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
	return &Stream{
		r:      r,
		sc:     sc,
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
	s.buf, s.carry = nil, nil
	s.work, s.sorted, s.report, s.sortedRep, s.idx = nil, nil, nil, nil, nil
	return w
}

// Held is the number of input bytes received but not yet released. Between
// calls it is less than Step+Lookahead.
func (s *Stream) Held() int {
	if s == nil {
		return 0
	}
	return len(s.buf) - s.off
}

// drain releases every full window held and, when final, the remainder.
func (s *Stream) drain(final bool) Window {
	out := Window{Offset: s.pos}
	var b strings.Builder
	released, cps, nwin := 0, 0, 0
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
			continue
		}
		if len(pend) == 0 || (!final && len(pend) < s.window) {
			break
		}
		last := len(pend) < s.window
		var ws string
		if last {
			ws = string(pend)
		} else {
			ws = string(pend[:completeEnd(pend[:s.window])])
		}
		finds, report := s.scan(ws)
		c := len(ws)
		if !last {
			c = s.cut(ws, finds)
		}
		k := 0
		for k < len(finds) && finds[k].ByteStart < c {
			k++
		}
		rel := ws[:c]
		text, n := s.r.Apply(rel, finds[:k])
		if !last && k > 0 && openKey(rel, finds[:k]) {
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
			f.ByteStart -= c
			f.ByteEnd -= c
			s.carry = append(s.carry, f)
		}
		switch nwin {
		case 0:
			out.Text = text
		case 1:
			b.WriteString(out.Text)
			fallthrough
		default:
			b.WriteString(text)
		}
		nwin++
		out.Redactions += n
		released += c
		cps += utf8.RuneCountInString(rel)
		s.off += c
		s.pos += c
	}
	if nwin > 1 {
		out.Text = b.String()
	}
	if s.off > 0 {
		if cap(s.buf) > 4*s.window {
			// A large Write grew the buffer; do not hold its memory for the
			// rest of the stream.
			s.buf = append(make([]byte, 0, 2*s.window), s.buf[s.off:]...)
		} else {
			s.buf = s.buf[:copy(s.buf, s.buf[s.off:])]
		}
		s.off = 0
	}
	return out
}

// scan returns the findings of window ws sorted by ByteStart, and which of
// them to report. They are the scanner's, the literals', and those carried
// from the previous window (the text past its cut, which starts this
// window): a carried finding was seen with left context this window lacks
// (the "password is" before a value), so it is still cut around and
// redacted. It is reported only when no finding of its detector that is
// already reported overlaps it (fresh ones first), so that one value is not
// counted twice; exact duplicates of fresh findings are dropped.
func (s *Stream) scan(ws string) ([]detect.Finding, []bool) {
	w := appendClean(s.work[:0], s.sc.Scan(ws).Findings, ws)
	w = appendLiterals(w, ws, s.lits)
	sortFindings(w)
	fresh := len(w)
	rep := s.report[:0]
	for range fresh {
		rep = append(rep, true)
	}
	for _, f := range s.carry {
		f.ByteEnd = min(f.ByteEnd, len(ws))
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
