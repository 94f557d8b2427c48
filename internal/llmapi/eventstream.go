package llmapi

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"

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

	buf     []byte
	dec     *eventstream.Decoder
	rd      bytes.Reader
	headers map[string]*esHeaders // header blocks seen, by their bytes
	err     error
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

// event decodes one complete message. The prelude's lengths and both
// CRCs are checked here, with the standard library's CRC32 (IEEE), on every
// message; the headers are decoded by the SDK's decoder, which checks the
// whole message again, the first time a header block is seen: a stream
// repeats a handful of byte-identical header blocks (one per event type),
// so later messages reuse what the SDK read.
func (p *EventStreamParser) event(raw []byte) (Event, error) {
	total := len(raw)
	hlen := int(binary.BigEndian.Uint32(raw[4:]))
	if hlen > total-esMinLen {
		return Event{}, fmt.Errorf("%w: event-stream headers longer than the message", ErrMalformed)
	}
	if crc32.ChecksumIEEE(raw[:8]) != binary.BigEndian.Uint32(raw[8:]) {
		return Event{}, fmt.Errorf("%w: event-stream prelude CRC mismatch", ErrMalformed)
	}
	if crc32.ChecksumIEEE(raw[:total-4]) != binary.BigEndian.Uint32(raw[total-4:]) {
		return Event{}, fmt.Errorf("%w: event-stream message CRC mismatch", ErrMalformed)
	}
	hb := raw[esPrelude : esPrelude+hlen]
	h, ok := p.headers[string(hb)]
	if !ok {
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
		h = newESHeaders(msg.Headers, bytes.Clone(hb))
		if p.headers == nil {
			p.headers = make(map[string]*esHeaders, 8)
		}
		if len(p.headers) < maxHeaderBlocks {
			p.headers[string(h.raw)] = h
		}
	}
	w := &esWire{h: h}
	ev := Event{Raw: raw, Data: raw[esPrelude+hlen : total-4 : total-4], wire: w, Name: h.name}
	if p.Wrapped && h.msgType == "event" {
		if inner, ok := unwrapBytes(ev.Data); ok {
			w.wrapped = true
			ev.Data = inner
		}
	}
	return ev, nil
}

// maxHeaderBlocks bounds the header blocks a parser remembers; a stream
// that keeps varying its headers has the rest decoded each time.
const maxHeaderBlocks = 32

// esHeaders is one decoded header block: the SDK's headers, their bytes
// as they came (to re-frame an edited message with them unchanged), the
// message type and the event's name.
type esHeaders struct {
	hs      eventstream.Headers
	raw     []byte
	msgType string
	name    string
}

func newESHeaders(hs eventstream.Headers, raw []byte) *esHeaders {
	h := &esHeaders{hs: hs, raw: raw, msgType: headerString(hs, ":message-type")}
	switch h.msgType {
	case "exception":
		h.name = headerString(hs, ":exception-type")
	case "error":
		h.name = headerString(hs, ":error-code")
	default:
		h.name = headerString(hs, ":event-type")
	}
	return h
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

// esWire is the framing of one event-stream message: its header block,
// kept as it came, and whether Data is wrapped in {"bytes": …}.
type esWire struct {
	h       *esHeaders
	wrapped bool
}

// encode frames e.Data as a message with the original header block and
// fresh CRCs.
func (w *esWire) encode(e Event) []byte {
	payload := e.Data
	if w.wrapped {
		payload = append([]byte(`{"bytes":`), quote(base64.StdEncoding.EncodeToString(e.Data))...)
		payload = append(payload, '}')
	}
	return frameMessage(w.h.raw, payload)
}

// frameMessage frames a header block (as the SDK's EncodeHeaders writes
// it) and a payload: the prelude (total length, headers length, their
// CRC32), the headers, the payload and the CRC32 of all of it.
func frameMessage(headers, payload []byte) []byte {
	total := esMinLen + len(headers) + len(payload)
	out := make([]byte, 8, total)
	binary.BigEndian.PutUint32(out, uint32(total))            // #nosec G115 -- bounded by MaxEventBytes
	binary.BigEndian.PutUint32(out[4:], uint32(len(headers))) // #nosec G115 -- the SDK bounds header blocks
	out = binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out))
	out = append(out, headers...)
	out = append(out, payload...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out))
}

// encodeMessage frames a message Bulwark makes, its headers encoded by the
// SDK.
func encodeMessage(hs eventstream.Headers, payload []byte) []byte {
	var hb bytes.Buffer
	// EncodeHeaders fails only on names or values too long to frame, which
	// the fixed headers Bulwark writes never are.
	if err := eventstream.EncodeHeaders(&hb, hs); err != nil {
		return nil
	}
	return frameMessage(hb.Bytes(), payload)
}

// newWire is the framing of a message Bulwark makes.
func newWire(hs eventstream.Headers, wrapped bool) *esWire {
	var hb bytes.Buffer
	_ = eventstream.EncodeHeaders(&hb, hs) // see encodeMessage
	return &esWire{h: newESHeaders(hs, hb.Bytes()), wrapped: wrapped}
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
	return ok && (w.h.msgType == "exception" || w.h.msgType == "error")
}
