package detect

// Code in answers (issue 27, do no harm): a markdown renderer shows the
// content of a fenced code block or an inline code span as text, so the
// links, images and HTML written there (a coding assistant's "<img src=...>"
// example) are neither fetched nor followed and need no sanitising. The
// sanitiser skips markup that starts in code, as CommonMark reads it, but
// only where it is sure: a region it calls code must be code for any
// CommonMark renderer, or an attacker could hide an image from it by
// making it think so. Where the block structure is one it does not model
// exactly, it stops skipping anything for the rest of the answer
// ("poisoned": everything is sanitised, as before).
//
// CodeState is a byte-at-a-time automaton, so a stream carries it from one
// window to the next (the state at a window's start is the state after
// every byte before it, however the text was cut):
//
//   - A fence opens on a line that starts, at column 0 and outside any
//     container, with 3+ backticks or tildes (a backtick fence's info
//     string holds no backtick); its content starts after that line and
//     runs to a closing line (up to 3 spaces, the same character at least
//     as many times, then only spaces or tabs) or, unclosed, to the end of
//     the answer. Such a fence is top-level in CommonMark whatever came
//     before (a fence line is never a lazy continuation), so it is closed
//     only by its closing line.
//   - A line outside a fence whose first content (after white space and
//     list or quote markers) is '<' (an HTML block, inside which fences and
//     backticks mean nothing) or a fence run that is indented or inside a
//     container (a fence whose closing this automaton cannot place)
//     poisons the state.
//   - An inline code span is a backtick run closed by the next run of the
//     same length on the same line, with no '|' inside (a table splits
//     cells first). An opener is taken only when nothing earlier in its
//     paragraph could make CommonMark pair backticks differently: no run
//     left unpaired at a line's end, and no '<', '\\' or ']' before it on
//     its line outside a span (raw HTML, autolinks, escapes and link
//     destinations take backticks away from code spans). Otherwise no span
//     is taken until a blank line (or a fence) ends the paragraph.
type CodeState struct {
	mode  uint8 // codeOutside, codeFence, codePoison
	fch   byte  // the open fence's character
	flen  int32 // and its length
	phase uint8 // how far the current line's shape has been read
	lead  int32 // leading columns of the line
	mark  bool  // a list or quote marker in the lead
	rch   byte  // the fence-like run at the line's start
	run   int32
	info  bool // a backtick fence's info string holds a backtick
	blank bool // the line so far is spaces and tabs

	taint  bool  // no code spans until the paragraph ends
	unsure bool  // this line: no code spans from here on
	pend   int32 // the open span's backtick count, 0: none
	bad    bool  // the open span does not count as code
	pipe   bool  // the open span holds '|'
	tick   int32 // the backtick run being read
	open   int   // where the open span starts (scanner use only)
	fstart int   // where the open fence's content starts (scanner use only)
}

const (
	codeOutside = iota
	codeFence
	codePoison
)

// Line phases.
const (
	phLead  = iota // leading white space and container markers
	phRun          // a run of '`' or '~' at the line's start
	phTrail        // after a closing run: spaces and tabs only
	phText         // anything else
)

// Advance moves the state past p (input that is not the end of the
// answer).
func (st *CodeState) Advance(p []byte) {
	for _, c := range p {
		st.step(c, -1, nil) // -1: record no region
	}
}

// InSpan reports whether an inline code span that would count as code is
// open (its closer not yet seen), or a backtick run is being read: a
// stream must not release text here, since whether what follows the
// opener is code depends on input not yet arrived.
func (st *CodeState) InSpan() bool {
	return st.mode == codeOutside && (st.pend > 0 && !st.bad || st.tick > 0)
}

// codeSpan is a byte range of code.
type codeSpan struct {
	s, e   int
	inline bool
}

// codeRanges returns the code regions of text, read from state st; final
// says text ends the answer (a closing run at its very end counts).
func codeRanges(text string, st CodeState, final bool) []codeSpan {
	return appendCodeRanges(nil, text, st, final)
}

// appendCodeRanges is codeRanges appending to out.
func appendCodeRanges(out []codeSpan, text string, st CodeState, final bool) []codeSpan {
	if st.mode == codePoison {
		return out
	}
	if st.mode == codeOutside && st.pend == 0 && st.tick == 0 && st.run == 0 && !hasCodeMark(text) {
		return out
	}
	out, _ = codeScan(out, text, st, final)
	return out
}

// codeScan is appendCodeRanges, with the state at text's end.
func codeScan(out []codeSpan, text string, st CodeState, final bool) ([]codeSpan, CodeState) {
	st.open, st.fstart = -1, 0 // an open span or fence from before text starts at 0
	if st.pend > 0 {
		st.bad = true // its opener is not in text: do not guess
	}
	for i := 0; i < len(text); i++ {
		if i = skipPlain(&st, text, i); i < len(text) {
			out = st.step(text[i], i, out)
		}
	}
	if final && st.mode == codeOutside && st.tick > 0 && st.tick == st.pend && !st.bad && !st.pipe && st.open >= 0 {
		out = append(out, codeSpan{st.open, len(text), true})
	}
	if st.mode == codeFence && st.fstart < len(text) {
		out = append(out, codeSpan{st.fstart, len(text), false})
	}
	return out, st
}

// InlineSpans appends to dst the byte ranges of text, read from state st,
// that are inline code spans, with, when one is open at text's end, its
// range to the end: a stream's full window must not be cut inside one,
// since the next window could not tell it is code.
func InlineSpans(text string, st CodeState, dst [][2]int) [][2]int {
	rs, end := codeScan(nil, text, st, false)
	for _, r := range rs {
		if r.inline {
			dst = append(dst, [2]int{r.s, r.e})
		}
	}
	if end.InSpan() {
		o := end.open
		if end.pend == 0 || o < 0 {
			o = len(text) - int(end.tick) // a run being read
		}
		if o >= 0 {
			dst = append(dst, [2]int{o, len(text)})
		}
	}
	return dst
}

// plainByte marks the bytes that change no state in a line's text outside
// a fence when no backtick run is being read.
var plainByte = func() (t [256]bool) {
	for i := range t {
		t[i] = true
	}
	for _, c := range "\n`<\\]|" {
		t[c] = false
	}
	return t
}()

// skipPlain returns the first position from i whose byte may change st:
// in a line's text (its shape read), only line ends inside a fence, and
// line ends, backticks and the bytes that make spans unsure outside.
func skipPlain[T ~string | ~[]byte](st *CodeState, t T, i int) int {
	if st.mode == codePoison {
		return len(t) // nothing changes a poisoned state
	}
	if st.phase != phText || st.tick != 0 {
		return i
	}
	switch st.mode {
	case codeFence:
		for i < len(t) && t[i] != '\n' {
			i++
		}
	case codeOutside:
		for i < len(t) && plainByte[t[i]] {
			i++
		}
	}
	return i
}

func hasCodeMark(text string) bool {
	for i := 0; i < len(text); i++ {
		if text[i] == '`' || text[i] == '~' {
			return true
		}
	}
	return false
}

// step reads byte c at position i, appending to out (when not nil or when
// a region ends) the code regions that end here.
func (st *CodeState) step(c byte, i int, out []codeSpan) []codeSpan {
	if st.mode == codePoison {
		return out
	}
	if c == '\n' {
		return st.endLine(i, out)
	}
	if c != ' ' && c != '\t' && c != '\r' {
		st.blank = false
	}
	if st.mode == codeFence {
		st.fenceLine(c)
		return out
	}
	st.outsideLine(c)
	if st.mode == codePoison {
		return out
	}
	// Inline code spans.
	if c == '`' {
		st.tick++
		return out
	}
	if st.tick > 0 {
		out = st.runEnd(i, out)
	}
	if st.pend > 0 {
		if c == '|' {
			st.pipe = true
		}
		return out
	}
	if c == '<' || c == '\\' || c == ']' {
		st.unsure = true
	}
	return out
}

// runEnd ends the backtick run that ends before i.
func (st *CodeState) runEnd(i int, out []codeSpan) []codeSpan {
	n := st.tick
	st.tick = 0
	if st.pend > 0 {
		if n == st.pend {
			if !st.bad && !st.pipe && st.open >= 0 {
				out = append(out, codeSpan{st.open, i, true})
			}
			st.pend, st.bad, st.pipe = 0, false, false
		}
		return out
	}
	st.pend, st.open = n, i-int(n)
	st.bad = st.taint || st.unsure
	if st.bad {
		st.taint = true
	}
	return out
}

// outsideLine reads the shape of a line outside a fence.
func (st *CodeState) outsideLine(c byte) {
	switch st.phase {
	case phLead:
		switch {
		case c == ' ':
			st.lead++
		case c == '\t':
			st.lead += 4
		case c == '>' || c == '-' || c == '+' || c == '*' || c == '.' || c == ')' || '0' <= c && c <= '9':
			st.mark = true
		case c == '<':
			st.mode = codePoison
		case c == '`' || c == '~':
			st.phase, st.rch, st.run = phRun, c, 1
		default:
			st.phase = phText
		}
	case phRun:
		if c == st.rch {
			st.run++
			return
		}
		st.phase = phText
		if st.run >= 3 {
			if st.lead > 0 || st.mark {
				st.mode = codePoison
				return
			}
			st.phase = phTrail // an opener: its info string follows
			st.info = st.rch == '`' && c == '`'
		}
	case phTrail:
		if st.rch == '`' && c == '`' {
			st.info = true
		}
	}
}

// fenceLine reads the shape of a line inside a fence: is it its closer?
func (st *CodeState) fenceLine(c byte) {
	switch st.phase {
	case phLead:
		switch {
		case c == ' ':
			st.lead++
		case c == '\t':
			st.lead += 4
		case c == st.fch:
			st.phase, st.run = phRun, 1
		default:
			st.phase = phText
		}
	case phRun:
		switch {
		case c == st.fch:
			st.run++
		case c == ' ' || c == '\t' || c == '\r':
			st.phase = phTrail
		default:
			st.phase = phText
		}
	case phTrail:
		if c != ' ' && c != '\t' && c != '\r' {
			st.phase = phText
		}
	}
}

// endLine ends the line at the '\n' at i.
func (st *CodeState) endLine(i int, out []codeSpan) []codeSpan {
	switch st.mode {
	case codeFence:
		if (st.phase == phRun || st.phase == phTrail) && st.run >= st.flen && st.lead <= 3 {
			if i >= 0 {
				out = append(out, codeSpan{st.fstart, i + 1, false})
			}
			st.mode = codeOutside
			st.taint = false
		}
	case codeOutside:
		if st.tick > 0 {
			out = st.runEnd(i, out)
		}
		opener := st.run >= 3 && st.lead == 0 && !st.mark && (st.phase == phRun || st.phase == phTrail && !st.info)
		if st.phase == phRun && st.run >= 3 && (st.lead > 0 || st.mark) {
			st.mode = codePoison
			return out
		}
		if st.pend > 0 {
			st.taint = true // unpaired: CommonMark may pair it on a later line
		}
		st.pend, st.bad, st.pipe, st.unsure = 0, false, false, false
		if st.blank {
			st.taint = false
		}
		if opener {
			st.mode, st.fch, st.flen, st.fstart = codeFence, st.rch, st.run, i+1
			st.taint = false
		}
	}
	st.phase, st.lead, st.mark, st.rch, st.run, st.info, st.blank = phLead, 0, false, 0, 0, false, true
	return out
}
