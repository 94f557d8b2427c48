package llmapi

import (
	"bytes"
	"fmt"
	"strings"
)

// Event is one server-sent event as it crossed the wire. Raw keeps the
// exact bytes so that a proxy can forward events it does not change
// untouched; the parsed fields serve everything else.
type Event struct {
	// Name is the value of the last "event:" field ("" when absent; the
	// SSE default type "message" is not filled in).
	Name string
	// Data is the values of the "data:" fields joined with "\n"; nil when
	// the event has no data field. It may share memory with Raw: treat both
	// as read-only.
	Data []byte
	// ID is the value of the last "id:" field.
	ID string
	// Raw is the exact original bytes of this event, including its
	// blank-line terminator. Concatenating Raw of every emitted event and
	// then Pending gives back exactly the bytes fed. Events made by this
	// package (FilterEvent, ChannelEvent) carry Encode's output instead.
	Raw []byte
	// wire is how an event that is not SSE is framed (a Bedrock
	// event-stream message, a streamed JSON array element); nil for SSE.
	wire wire
	// valid is Data when the parser already validated it as JSON (a
	// streamed array element), so that reading it does not validate it
	// again; it no longer applies once Data is replaced.
	valid []byte
}

// DefaultMaxEventBytes bounds one pending SSE event when
// SSEParser.MaxEventBytes is 0.
const DefaultMaxEventBytes = 1 << 20

// feedPiece bounds how much of one chunk the parser buffers at a time, so
// that a huge chunk cannot make the pending buffer exceed MaxEventBytes by
// more than this.
const feedPiece = 64 << 10

// SSEParser splits a byte stream into server-sent events incrementally.
// Chunk boundaries are arbitrary (inside a line, inside "\r\n", inside a
// UTF-8 character), as Envoy delivers them: feeding the same bytes in any
// split yields the same events. It accepts "\n", "\r\n" and "\r" line
// endings, comment lines (": …"), the optional single space after a
// field's colon, and multi-line data. Blocks that carry no field (comment
// keep-alives, stray blank lines) are emitted too, with only Raw set, so
// that a proxy forwards them.
//
// A parser belongs to one stream and is not safe for concurrent use. Its
// zero value is ready. After Feed returns an error the parser is spent:
// every later call returns the same error.
type SSEParser struct {
	// MaxEventBytes bounds one event, terminator included (0 means
	// DefaultMaxEventBytes). A longer event fails with ErrEventTooLarge
	// whether or not it has completed, so the parser never holds more
	// than MaxEventBytes plus one 64 KiB piece of a chunk.
	MaxEventBytes int

	buf       []byte // bytes of the pending event
	pos       int    // scan position in buf
	lineStart int    // start of the current line in buf
	skipLF    bool   // the previous line ended with '\r': a '\n' next completes it
	started   bool   // an event has been emitted (a BOM can only lead the first)
	err       error
}

func (p *SSEParser) max() int {
	if p.MaxEventBytes > 0 {
		return p.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

// Feed parses chunk and calls emit (if not nil) for every event it
// completes, in order.
// An error from emit stops parsing and is returned (wrapped); ErrEventTooLarge
// is returned when the pending event exceeds MaxEventBytes.
func (p *SSEParser) Feed(chunk []byte, emit func(Event) error) error {
	if p.err != nil {
		return p.err
	}
	for len(chunk) > 0 {
		n := min(len(chunk), feedPiece)
		p.buf = append(p.buf, chunk[:n]...)
		chunk = chunk[n:]
		if err := p.scan(emit); err != nil {
			p.err = err
			return err
		}
	}
	return nil
}

// Flush ends the stream: an event whose final blank line was a lone "\r"
// at the very end of the input is held back by Feed (a "\n" might have
// followed); Flush emits it. Bytes of an incomplete event stay in Pending.
func (p *SSEParser) Flush(emit func(Event) error) error {
	if p.err != nil {
		return p.err
	}
	if n := len(p.buf); n > 0 && p.pos == n-1 && p.lineStart == n-1 && p.buf[n-1] == '\r' {
		raw := p.buf
		p.buf, p.pos, p.lineStart = p.buf[:0], 0, 0
		if err := p.dispatch(raw, emit); err != nil {
			p.err = err
			return err
		}
	}
	return nil
}

// Pending returns a copy of the bytes of the incomplete event held back. At
// the end of a stream the caller decides whether to forward them.
func (p *SSEParser) Pending() []byte {
	return bytes.Clone(p.buf)
}

// scan finds the complete events in p.buf, emits them and keeps the rest.
func (p *SSEParser) scan(emit func(Event) error) error {
	buf := p.buf
	start, i, ls := 0, p.pos, p.lineStart
	for i < len(buf) {
		c := buf[i]
		if p.skipLF {
			p.skipLF = false
			if c == '\n' {
				i++
				ls = i
				continue
			}
		}
		if c != '\n' && c != '\r' {
			k := lineEnd(buf[i:])
			if k < 0 {
				i = len(buf)
				break
			}
			i += k
			continue
		}
		if i == ls { // a blank line ends the event
			end := i + 1
			if c == '\r' {
				if end == len(buf) {
					break // wait: a '\n' may complete this terminator
				}
				if buf[end] == '\n' {
					end++
				}
			}
			if err := p.dispatch(buf[start:end], emit); err != nil {
				return err
			}
			start, i, ls = end, end, end
			continue
		}
		if c == '\r' {
			p.skipLF = true
		}
		i++
		ls = i
	}
	n := copy(buf, buf[start:])
	p.buf, p.pos, p.lineStart = buf[:n], i-start, ls-start
	if n > p.max() {
		return fmt.Errorf("%w: more than %d bytes pending", ErrEventTooLarge, p.max())
	}
	return nil
}

// lineEnd returns the index of the first '\r' or '\n' in b, or -1.
func lineEnd(b []byte) int {
	k := bytes.IndexByte(b, '\n')
	if k < 0 {
		return bytes.IndexByte(b, '\r')
	}
	if r := bytes.IndexByte(b[:k], '\r'); r >= 0 {
		return r
	}
	return k
}

func (p *SSEParser) dispatch(raw []byte, emit func(Event) error) error {
	if len(raw) > p.max() {
		return fmt.Errorf("%w: %d bytes", ErrEventTooLarge, len(raw))
	}
	first := !p.started
	p.started = true
	if emit == nil {
		return nil
	}
	if err := emit(parseEvent(bytes.Clone(raw), first)); err != nil {
		return fmt.Errorf("sse emit: %w", err)
	}
	return nil
}

var bom = []byte("\xef\xbb\xbf")

// parseEvent reads the fields of one complete event. raw is owned by the
// event; a single data line is a sub-slice of it.
func parseEvent(raw []byte, first bool) Event {
	ev := Event{Raw: raw}
	rest := raw
	if first {
		rest = bytes.TrimPrefix(rest, bom)
	}
	var data []byte
	dataLines := 0
	for len(rest) > 0 {
		k := lineEnd(rest)
		line := rest
		if k >= 0 {
			line = rest[:k]
			if rest[k] == '\r' && k+1 < len(rest) && rest[k+1] == '\n' {
				k++
			}
			rest = rest[k+1:]
		} else {
			rest = nil
		}
		if len(line) == 0 || line[0] == ':' {
			continue
		}
		field, value := line, line[len(line):]
		if c := bytes.IndexByte(line, ':'); c >= 0 {
			field, value = line[:c], line[c+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			ev.Name = eventName(value)
		case "data":
			dataLines++
			if dataLines == 1 {
				data = value[:len(value):len(value)]
			} else {
				if dataLines == 2 {
					data = append(make([]byte, 0, len(data)+len(value)+1), data...)
				}
				data = append(append(data, '\n'), value...)
			}
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.ID = string(value)
			}
		}
	}
	if dataLines > 0 {
		ev.Data = data
	}
	return ev
}

// eventName returns the event type, without allocating for the names the
// supported APIs use.
func eventName(v []byte) string {
	switch string(v) {
	case "message_start":
		return "message_start"
	case "content_block_start":
		return "content_block_start"
	case "content_block_delta":
		return "content_block_delta"
	case "content_block_stop":
		return "content_block_stop"
	case "message_delta":
		return "message_delta"
	case "message_stop":
		return "message_stop"
	case "ping":
		return "ping"
	case "error":
		return "error"
	case "response.created":
		return "response.created"
	case "response.in_progress":
		return "response.in_progress"
	case "response.output_item.added":
		return "response.output_item.added"
	case "response.output_item.done":
		return "response.output_item.done"
	case "response.content_part.added":
		return "response.content_part.added"
	case "response.content_part.done":
		return "response.content_part.done"
	case "response.output_text.delta":
		return "response.output_text.delta"
	case "response.output_text.done":
		return "response.output_text.done"
	case "response.function_call_arguments.delta":
		return "response.function_call_arguments.delta"
	case "response.function_call_arguments.done":
		return "response.function_call_arguments.done"
	case "response.completed":
		return "response.completed"
	}
	return string(v)
}

// Encode returns the canonical encoding of e; events of another framing
// (Bedrock's event stream, a streamed JSON array) are encoded in it.
// For SSE: "event: X\n" if Name is set,
// "id: X\n" if ID is set, one "data: " line per line of Data, then the
// blank line. Line breaks inside Name and ID are dropped so that a field
// can never split the event. Comments and the original line endings are
// not kept; forward Raw to keep them.
func (e Event) Encode() []byte {
	if e.wire != nil {
		return e.wire.encode(e)
	}
	out := make([]byte, 0, len(e.Name)+len(e.ID)+len(e.Data)+24)
	if e.Name != "" {
		out = append(out, "event: "...)
		out = appendFieldValue(out, e.Name)
		out = append(out, '\n')
	}
	if e.ID != "" {
		out = append(out, "id: "...)
		out = appendFieldValue(out, e.ID)
		out = append(out, '\n')
	}
	if e.Data != nil {
		rest := e.Data
		for {
			k := lineEnd(rest)
			line := rest
			if k >= 0 {
				line = rest[:k]
			}
			out = append(out, "data: "...)
			out = append(out, line...)
			out = append(out, '\n')
			if k < 0 {
				break
			}
			if rest[k] == '\r' && k+1 < len(rest) && rest[k+1] == '\n' {
				k++
			}
			rest = rest[k+1:]
		}
	}
	return append(out, '\n')
}

func appendFieldValue(dst []byte, s string) []byte {
	if !strings.ContainsAny(s, "\r\n") {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '\r' && s[i] != '\n' {
			dst = append(dst, s[i])
		}
	}
	return dst
}
