package llmapi

import (
	"bytes"
	"fmt"
)

// JSONArrayParser splits a JSON array that arrives element by element
// (Gemini's streamGenerateContent without alt=sse: "[{…}\n,\r\n{…}\n]") into
// Events: Data is one element (an object), Raw the separator bytes before it
// ("[", ",", white space) and the element. The closing "]" comes as a last
// Event without Data, whose Raw is what preceded it and the bracket, so that
// text held for the stream can be released before it. Anything else at the
// top level fails with ErrMalformed.
//
// A parser belongs to one stream and is not safe for concurrent use. After
// Feed returns an error the parser is spent.
type JSONArrayParser struct {
	// MaxEventBytes bounds one element (0: DefaultMaxEventBytes).
	MaxEventBytes int

	buf      []byte
	pos      int  // scan position in buf
	elem     int  // start of the element being read in buf, -1 outside one
	depth    int  // nesting depth inside the element
	inStr    bool // inside a string
	esc      bool // after a backslash inside a string
	opened   bool // the '[' has been seen
	closed   bool // the ']' has been seen
	elements int  // elements emitted
	err      error
}

func (p *JSONArrayParser) max() int {
	if p.MaxEventBytes > 0 {
		return p.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

// Feed parses chunk and calls emit for every complete element and for the
// closing bracket.
func (p *JSONArrayParser) Feed(chunk []byte, emit func(Event) error) error {
	if p.err != nil {
		return p.err
	}
	if p.buf == nil {
		p.elem = -1
	}
	p.buf = append(p.buf, chunk...)
	if err := p.scan(emit); err != nil {
		p.err = err
		return err
	}
	return nil
}

func (p *JSONArrayParser) scan(emit func(Event) error) error {
	b := p.buf
	start := 0 // start of the bytes not yet emitted
	i := p.pos
	for i < len(b) {
		c := b[i]
		if p.elem < 0 {
			switch {
			case isWS(c):
			case c == '[' && !p.opened:
				p.opened = true
			case c == ',' && p.opened && !p.closed && p.elements > 0:
			case c == '{' && p.opened && !p.closed:
				// The common case: the whole element is here. One pass
				// validates it and finds its end.
				if end, ok := validValue(b, i); ok {
					if err := p.emit(emit, b[start:end], b[i:end]); err != nil {
						return err
					}
					p.elements++
					start, i = end, end
					continue
				}
				p.elem, p.depth = i, 1
			case c == ']' && p.opened && !p.closed:
				p.closed = true
				if err := p.emit(emit, b[start:i+1], nil); err != nil {
					return err
				}
				start = i + 1
			default:
				return fmt.Errorf("%w: unexpected %q in a streamed JSON array", ErrMalformed, c)
			}
			i++
			continue
		}
		switch {
		case p.esc:
			p.esc = false
		case p.inStr:
			switch c {
			case '\\':
				p.esc = true
			case '"':
				p.inStr = false
			}
		case c == '"':
			p.inStr = true
		case c == '{' || c == '[':
			p.depth++
		case c == '}' || c == ']':
			p.depth--
			if p.depth == 0 {
				elem := b[p.elem : i+1]
				if !validJSON(elem) {
					return fmt.Errorf("%w: array element is not JSON", ErrMalformed)
				}
				if err := p.emit(emit, b[start:i+1], elem); err != nil {
					return err
				}
				p.elements++
				p.elem = -1
				start = i + 1
			}
		}
		i++
	}
	// Keep what is not emitted; positions move with it.
	n := copy(b, b[start:])
	p.buf = b[:n]
	p.pos = i - start
	if p.elem >= 0 {
		p.elem -= start
	}
	if n > p.max() {
		return fmt.Errorf("%w: more than %d bytes pending", ErrEventTooLarge, p.max())
	}
	return nil
}

// emit sends one element (data not nil) or the closing bracket.
func (p *JSONArrayParser) emit(emit func(Event) error, raw, data []byte) error {
	if len(raw) > p.max() {
		return fmt.Errorf("%w: %d bytes", ErrEventTooLarge, len(raw))
	}
	if emit == nil {
		return nil
	}
	raw = bytes.Clone(raw)
	w := &arrayWire{prefix: raw[:len(raw)-len(data)]}
	ev := Event{Raw: raw, wire: w}
	if data != nil {
		ev.Data = raw[len(raw)-len(data):]
		ev.valid = ev.Data // every element emitted was validated
	} else {
		w.closing = true
	}
	if err := emit(ev); err != nil {
		return fmt.Errorf("json array emit: %w", err)
	}
	return nil
}

// Pending returns a copy of the bytes of the incomplete element held back.
func (p *JSONArrayParser) Pending() []byte { return bytes.Clone(p.buf) }

// ErrorEvent is an error element that closes the array.
func (p *JSONArrayParser) ErrorEvent(api API, status int, reason, message string) []byte {
	if d := dialectOf(api); d != nil {
		out := d.errorEvent(FramingJSONArray, status, reason, message)
		// Nothing forwarded yet, not even the '[' (it leads the first
		// element's bytes): the error opens the array too.
		if p.elements == 0 {
			return append([]byte{'['}, out[1:]...) // "," becomes "["
		}
		return out
	}
	return ErrorEventStatus(api, status, reason, message)
}

// arrayWire frames one element of a streamed JSON array: the separator that
// preceded it, then the element.
type arrayWire struct {
	prefix  []byte
	closing bool // the closing bracket, which has no element
}

func (w *arrayWire) encode(e Event) []byte {
	out := make([]byte, 0, len(w.prefix)+len(e.Data))
	out = append(out, w.prefix...)
	return append(out, e.Data...)
}

// isArrayClose reports whether ev is the closing bracket of a streamed
// JSON array.
func isArrayClose(ev Event) bool {
	w, ok := ev.wire.(*arrayWire)
	return ok && w.closing
}

// inArray reports whether ev is an element of a streamed JSON array.
func inArray(ev Event) bool {
	_, ok := ev.wire.(*arrayWire)
	return ok
}
