package llmapi

import (
	"mime"
	"strings"
)

// Framing is how a streamed answer splits into events. OpenAI and
// Anthropic stream server-sent events; Bedrock streams AWS's binary
// event-stream messages; Gemini streams server-sent events with alt=sse and
// otherwise one JSON array whose elements arrive one by one.
type Framing uint8

// The framings.
const (
	FramingNone        Framing = iota // not a stream: the answer is read whole
	FramingSSE                        // text/event-stream
	FramingEventStream                // application/vnd.amazon.eventstream
	FramingJSONArray                  // a JSON array streamed element by element
)

// wire encodes an event in a framing other than SSE; Event.Encode uses it.
type wire interface {
	encode(e Event) []byte
}

// StreamParser splits a streamed answer into events, incrementally: chunk
// boundaries are arbitrary and feeding the same bytes in any split yields
// the same events. Every event's Raw is its exact bytes; events a caller
// rewrites are re-encoded in the stream's framing (Event.Encode).
type StreamParser interface {
	// Feed parses chunk and calls emit for every event it completes, in
	// order. An error from emit stops parsing and is returned wrapped;
	// input that is not the framing fails with ErrMalformed, an event over
	// the bound with ErrEventTooLarge, and the parser is then spent.
	Feed(chunk []byte, emit func(Event) error) error
	// ErrorEvent is an error that ends the stream, in api's shape and the
	// stream's framing: the status line has gone, so it travels in-band.
	ErrorEvent(api API, status int, reason, message string) []byte
}

// StreamFraming picks the framing of an answer from its content type and,
// for Gemini, the request path: streamGenerateContent without alt=sse
// answers application/json, a JSON array streamed element by element.
func StreamFraming(api API, contentType, path string) Framing {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	switch mt {
	case "text/event-stream":
		return FramingSSE
	case "application/vnd.amazon.eventstream":
		return FramingEventStream
	case "application/json", "":
		if api == GeminiGenerate {
			path, _, _ = strings.Cut(path, "?")
			if DescribePath(path).Stream {
				return FramingJSONArray
			}
		}
	}
	return FramingNone
}

// NewStreamParser returns the parser of a framing (nil for FramingNone).
// maxEventBytes bounds one event (0: DefaultMaxEventBytes).
func NewStreamParser(fr Framing, api API, maxEventBytes int) StreamParser {
	switch fr {
	case FramingSSE:
		return &SSEParser{MaxEventBytes: maxEventBytes}
	case FramingEventStream:
		return &EventStreamParser{MaxEventBytes: maxEventBytes, Wrapped: api == BedrockInvoke}
	case FramingJSONArray:
		return &JSONArrayParser{MaxEventBytes: maxEventBytes}
	}
	return nil
}

// ErrorEvent is ErrorEventStatus: SSE events carry the error in api's shape.
func (p *SSEParser) ErrorEvent(api API, status int, reason, message string) []byte {
	if d := dialectOf(api); d != nil {
		return d.errorEvent(FramingSSE, status, reason, message)
	}
	return ErrorEventStatus(api, status, reason, message)
}

// defaultFraming is the framing an API's streams usually have, for
// ErrorEventStatus, which is not told.
func defaultFraming(api API) Framing {
	switch api {
	case BedrockConverse, BedrockInvoke:
		return FramingEventStream
	}
	return FramingSSE
}
