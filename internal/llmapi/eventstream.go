package llmapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// AWS event-stream framing (application/vnd.amazon.eventstream), which
// Bedrock's ConverseStream and InvokeModelWithResponseStream answer in:
// every message is a 12-byte prelude (total length, headers length, CRC32
// of both), binary headers (:event-type, :content-type, :message-type,
// :exception-type), the payload and a CRC32 of everything before it. The
// framing itself is the AWS SDK for Go v2's: this file only finds message
// boundaries across chunks and maps messages to Events.

// Minimum and header sizes of an event-stream message.
const (
	esPrelude = 12 // total length, headers length, prelude CRC
	esMinLen  = esPrelude + 4
)

// EventStreamParser splits an AWS event stream into Events: Name is the
// :event-type header (or :exception-type for an exception), Data the
// payload (for InvokeModelWithResponseStream, Wrapped: the base64 "bytes"
// of the payload decoded, the Anthropic event it carries), Raw the exact
// message. An edited Event is re-framed with valid CRCs by Encode. A
// message whose prelude or CRC does not check out fails with ErrMalformed:
// Bulwark does not forward what it could not read.
//
// A parser belongs to one stream and is not safe for concurrent use. After
// Feed returns an error the parser is spent.
type EventStreamParser struct {
	// MaxEventBytes bounds one message (0: DefaultMaxEventBytes).
	MaxEventBytes int
	// Wrapped: payloads are {"bytes": base64 of the event}, as
	// InvokeModelWithResponseStream sends them.
	Wrapped bool

	buf []byte
	dec *eventstream.Decoder
	rd  bytes.Reader
	err error
}

func (p *EventStreamParser) max() int {
	if p.MaxEventBytes > 0 {
		return p.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

// Feed parses chunk and calls emit for every complete message.
func (p *EventStreamParser) Feed(chunk []byte, emit func(Event) error) error {
	if p.err != nil {
		return p.err
	}
	p.buf = append(p.buf, chunk...)
	start := 0
	for len(p.buf)-start >= esPrelude {
		total := int(binary.BigEndian.Uint32(p.buf[start:]))
		if total < esMinLen {
			p.err = fmt.Errorf("%w: event-stream message of %d bytes", ErrMalformed, total)
			return p.err
		}
		if total > p.max() {
			p.err = fmt.Errorf("%w: event-stream message of %d bytes", ErrEventTooLarge, total)
			return p.err
		}
		if len(p.buf)-start < total {
			break
		}
		raw := bytes.Clone(p.buf[start : start+total])
		start += total
		ev, err := p.event(raw)
		if err != nil {
			p.err = err
			return err
		}
		if emit != nil {
			if err := emit(ev); err != nil {
				p.err = fmt.Errorf("event-stream emit: %w", err)
				return p.err
			}
		}
	}
	n := copy(p.buf, p.buf[start:])
	p.buf = p.buf[:n]
	if n > p.max() {
		p.err = fmt.Errorf("%w: more than %d bytes pending", ErrEventTooLarge, p.max())
		return p.err
	}
	return nil
}

// Pending returns a copy of the bytes of the incomplete message held back.
func (p *EventStreamParser) Pending() []byte { return bytes.Clone(p.buf) }

// event decodes one complete message.
func (p *EventStreamParser) event(raw []byte) (Event, error) {
	if p.dec == nil {
		p.dec = eventstream.NewDecoder()
	}
	p.rd.Reset(raw)
	msg, err := p.dec.Decode(&p.rd, nil)
	if err != nil {
		return Event{}, fmt.Errorf("%w: event-stream message: %v", ErrMalformed, err)
	}
	if p.rd.Len() != 0 {
		return Event{}, fmt.Errorf("%w: event-stream message longer than its prelude says", ErrMalformed)
	}
	w := &esWire{headers: msg.Headers}
	ev := Event{Raw: raw, Data: msg.Payload, wire: w}
	w.msgType = headerString(msg.Headers, ":message-type")
	switch w.msgType {
	case "exception":
		ev.Name = headerString(msg.Headers, ":exception-type")
	case "error":
		ev.Name = headerString(msg.Headers, ":error-code")
	default:
		ev.Name = headerString(msg.Headers, ":event-type")
	}
	if p.Wrapped && w.msgType == "event" {
		if inner, ok := unwrapBytes(msg.Payload); ok {
			w.wrapped = true
			ev.Data = inner
		}
	}
	if ev.Data == nil {
		ev.Data = []byte{}
	}
	return ev, nil
}

// headerString returns a string header's value, "" when absent or not a
// string.
func headerString(hs eventstream.Headers, name string) string {
	if v, ok := hs.Get(name).(eventstream.StringValue); ok {
		return string(v)
	}
	return ""
}

// unwrapBytes decodes {"bytes": base64} into what it carries.
func unwrapBytes(payload []byte) ([]byte, bool) {
	if !validJSON(payload) {
		return nil, false
	}
	top := trimSpan(payload)
	if kindOf(payload, top) != '{' {
		return nil, false
	}
	v, ok := member(payload, top, "bytes")
	if !ok || kindOf(payload, v) != '"' {
		return nil, false
	}
	s, _ := strAt(payload, v)
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, false
	}
	return out, true
}

// esWire is the framing of one event-stream message: its headers, kept as
// they came, and whether Data is wrapped in {"bytes": …}.
type esWire struct {
	headers eventstream.Headers
	msgType string
	wrapped bool
}

// encode frames e.Data as a message with the original headers and fresh
// CRCs.
func (w *esWire) encode(e Event) []byte {
	payload := e.Data
	if w.wrapped {
		payload = append([]byte(`{"bytes":`), quote(base64.StdEncoding.EncodeToString(e.Data))...)
		payload = append(payload, '}')
	}
	return encodeMessage(w.headers, payload)
}

// encodeMessage frames one event-stream message.
func encodeMessage(hs eventstream.Headers, payload []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(payload) + 128)
	// Encode fails only on header values too long to frame, which the
	// headers of a decoded message and of newEventHeaders never are.
	if err := eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: hs, Payload: payload}); err != nil {
		return nil
	}
	return buf.Bytes()
}

// newEventHeaders are the headers of an event Bulwark synthesises.
func newEventHeaders(eventType string) eventstream.Headers {
	return eventstream.Headers{
		{Name: ":event-type", Value: eventstream.StringValue(eventType)},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue("event")},
	}
}

// exceptionHeaders are the headers of an exception Bulwark sends to end
// a stream.
func exceptionHeaders(exceptionType string) eventstream.Headers {
	return eventstream.Headers{
		{Name: ":exception-type", Value: eventstream.StringValue(exceptionType)},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue("exception")},
	}
}

// ErrorEvent is an exception message in the framing of the stream.
func (p *EventStreamParser) ErrorEvent(api API, status int, reason, message string) []byte {
	if d := dialectOf(api); d != nil {
		return d.errorEvent(FramingEventStream, status, reason, message)
	}
	return ErrorEventStatus(api, status, reason, message)
}

// isException reports whether ev is an event-stream exception or error
// message.
func isException(ev Event) bool {
	w, ok := ev.wire.(*esWire)
	return ok && (w.msgType == "exception" || w.msgType == "error")
}
