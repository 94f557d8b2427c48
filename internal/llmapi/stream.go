package llmapi

import (
	"bytes"
	"fmt"
	"strconv"
)

// Delta is what one stream event carries, normalised across APIs, so that
// output policy can follow a stream event by event.
type Delta struct {
	// Text is the output text this event adds and HasText whether it adds
	// any (an empty string counts): OpenAI chat choices[0].delta.content,
	// completions choices[0].text, Responses "response.output_text.delta"
	// delta, Anthropic content_block_delta text_delta text. Only these
	// events are incremental; Responses repeats the full text in its
	// *.done and response.completed events, which FilterEvent filters too.
	Text    string
	HasText bool
	// Index is the choice index (OpenAI chat, completions), output_index
	// (Responses) or content block index (Anthropic).
	Index int
	// FinishReason is choices[0].finish_reason (OpenAI), the response
	// status of a terminal Responses event, or message_delta's
	// stop_reason (Anthropic).
	FinishReason string
	// Usage is what this event reports, nil when nothing: OpenAI's final
	// usage chunk, the usage of a terminal Responses event, Anthropic's
	// message_start (input and initial output tokens) and message_delta
	// (cumulative output tokens). Accumulate with Usage.Merge: the values
	// are running totals, so later events replace earlier ones.
	Usage *Usage
	// Done marks the end of the stream: OpenAI "data: [DONE]", Anthropic
	// message_stop, Responses response.completed (also response.incomplete
	// and response.failed, which end it too).
	Done bool
	// ToolCall is partial tool call information: OpenAI
	// choices[0].delta.tool_calls[0] (id and name first, then argument
	// fragments), Anthropic content_block_start tool_use (id, name) and
	// input_json_delta (argument fragments), Responses
	// output_item.added function_call and function_call_arguments.delta.
	ToolCall *ToolCall
	// Error means the upstream sent an error event (an OpenAI chunk with
	// "error", an Anthropic or Responses "error" event, response.failed).
	Error bool
	// UsageOnly marks OpenAI's usage chunk: no choice, only usage. It is the
	// extra chunk stream_options.include_usage asks for, which a client
	// that did not ask may not expect (its choices array is empty).
	UsageOnly bool
}

// eventJSON returns the trimmed data of ev, whether it is OpenAI's [DONE]
// sentinel, and an error wrapping ErrMalformed when it is neither empty,
// [DONE] nor valid JSON.
func eventJSON(ev Event) (d []byte, done bool, err error) {
	t := trimSpan(ev.Data)
	d = ev.Data[t.s:t.e]
	if len(d) == 0 {
		return nil, false, nil
	}
	if string(d) == "[DONE]" {
		return nil, true, nil
	}
	if len(ev.valid) == len(d) && &ev.valid[0] == &d[0] {
		return d, false, nil // validated by the parser
	}
	if !validJSON(d) {
		return nil, false, fmt.Errorf("%w: event data is not JSON", ErrMalformed)
	}
	return d, false, nil
}

// genericStream reports whether api reads events by shape: plain-text
// data of a Generic stream is itself the output text, as a Generic text
// body is, so that output policy still sees it.
func genericStream(api API) bool { return api == Generic || !api.known() }

// streamKind resolves Generic streams by their shape: Responses and
// Anthropic events carry a "type", anything else is read as OpenAI chat,
// the shape most compatible servers speak.
func streamKind(api API, d []byte, name string) API {
	if !genericStream(api) {
		return api
	}
	if len(d) == 0 || d[0] != '{' {
		return OpenAIChat
	}
	typ := memberRaw(d, vspan{0, len(d)}, "type")
	if len(typ) == 0 {
		typ = []byte(name)
	}
	switch {
	case bytes.HasPrefix(typ, []byte("response.")):
		return OpenAIResponses
	case bytes.HasPrefix(typ, []byte("message_")), bytes.HasPrefix(typ, []byte("content_block_")), string(typ) == "ping":
		return AnthropicMessages
	}
	return OpenAIChat
}

// DecodeEvent reads one stream event of api. Events without data, and
// events of kinds that carry nothing of interest, yield a zero Delta. Data
// that is not JSON (other than [DONE]) yields an error wrapping
// ErrMalformed, except in Generic streams, where such data is itself the
// output text (as a Generic text body is). Generic JSON events are read as
// Responses or Anthropic events when their "type" says so, else as OpenAI
// chat chunks, the shape most compatible servers speak.
func DecodeEvent(api API, ev Event) (Delta, error) {
	p := ParseEvent(api, ev)
	return p.decode(false)
}

// ParsedEvent is one stream event validated once, so that reading what it
// reports (Meta), what it closes (Ends) and filtering its strings (Filter)
// do not validate it again each. It is the cheap way for a proxy to do all
// three; DecodeEvent, EventEnds and FilterEvent are the same operations on
// an event not yet parsed.
type ParsedEvent struct {
	api  API
	ev   Event
	d    []byte
	done bool
	err  error
}

// ParseEvent validates ev as an event of api.
func ParseEvent(api API, ev Event) ParsedEvent {
	d, done, err := eventJSON(ev)
	return ParsedEvent{api: api, ev: ev, d: d, done: done, err: err}
}

// Meta is DecodeEvent of the event without the text: Text stays empty
// (HasText still says whether the event carries output text) and ToolCall
// nil. It serves callers that read the strings of an event with Filter and
// need only its usage, end and error, without decoding the text twice.
func (p *ParsedEvent) Meta() (Delta, error) { return p.decode(true) }

// Full is Meta plus Delta.Text, the output text the event adds: for a
// caller that keeps the answer's text (the quality signals). It costs
// the text's copy.
func (p *ParsedEvent) Full() (Delta, error) { return p.decode(false) }

// Ident returns the answer's model and id where the event names them: every
// OpenAI chat or completions chunk, Anthropic's message_start, the Responses
// events that carry the response (response.created, response.completed).
// It is for telemetry (gen_ai.response.model, gen_ai.response.id): a caller
// asks until it has both, so the events after pay nothing.
func (p *ParsedEvent) Ident() (model, id string) {
	d := p.d
	if p.err != nil || p.done || len(d) == 0 || d[0] != '{' {
		return "", ""
	}
	top := vspan{0, len(d)}
	switch p.api {
	case OpenAIChat, OpenAICompletions:
		return memberString(d, top, "model"), memberString(d, top, "id")
	case OpenAIResponses:
		if r, ok := member(d, top, "response"); ok && kindOf(d, r) == '{' {
			return memberString(d, r, "model"), memberString(d, r, "id")
		}
	case AnthropicMessages:
		if m, ok := member(d, top, "message"); ok && kindOf(d, m) == '{' {
			return memberString(d, m, "model"), memberString(d, m, "id")
		}
	}
	return "", ""
}

func (p *ParsedEvent) decode(meta bool) (Delta, error) {
	api, ev, d, done, err := p.api, p.ev, p.d, p.done, p.err
	if err != nil && genericStream(api) {
		if meta {
			return Delta{HasText: true}, nil
		}
		return Delta{Text: string(ev.Data), HasText: true}, nil
	}
	if err != nil {
		return Delta{}, fmt.Errorf("decode %s event: %w", api, err)
	}
	if done {
		return Delta{Done: true}, nil
	}
	if len(d) == 0 {
		if api == AnthropicMessages && ev.Name == "message_stop" {
			return Delta{Done: true}, nil
		}
		return Delta{}, nil
	}
	if d[0] != '{' {
		return Delta{}, nil
	}
	if dl := dialectOf(api); dl != nil {
		return dl.decodeEvent(ev, d, meta), nil
	}
	switch streamKind(api, d, ev.Name) {
	case OpenAIChat, OpenAICompletions:
		return decodeChatChunk(d, meta), nil
	case OpenAIResponses:
		return decodeResponsesEvent(d, ev.Name, meta), nil
	case AnthropicMessages:
		return decodeAnthropicEvent(d, ev.Name, meta), nil
	}
	return Delta{}, nil
}

func decodeChatChunk(d []byte, meta bool) Delta {
	var out Delta
	choice := false
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "choices":
			ct := iterArray(d, it.v.s)
			if ct.next() {
				choice = true
				readChoice(d, ct.v, &out, meta)
			}
		case "usage":
			out.Usage = readUsage(d, it.v)
		case "error":
			if c := kindOf(d, it.v); c != 'n' && c != 'f' {
				out.Error = true
			}
		}
	}
	out.UsageOnly = !choice && out.Usage != nil && !out.Error
	return out
}

func readChoice(d []byte, c vspan, out *Delta, meta bool) {
	it := iterObject(d, c.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "index":
			if n, ok := intAt(d, it.v); ok {
				out.Index = int(n)
			}
		case "finish_reason":
			out.FinishReason, _ = strAt(d, it.v)
		case "text":
			out.Text, out.HasText = textAt(d, it.v, meta)
		case "delta":
			if meta {
				if c, ok := member(d, it.v, "content"); ok {
					out.HasText = kindOf(d, c) == '"'
				}
				continue
			}
			dt := iterObject(d, it.v.s)
			for dt.next() {
				switch string(dt.keyRaw()) {
				case "content":
					out.Text, out.HasText = strAt(d, dt.v)
				case "tool_calls":
					tc := iterArray(d, dt.v.s)
					if tc.next() {
						call := openAIToolCall(d, tc.v)
						out.ToolCall = &call
					}
				case "function_call":
					call := openAIToolCall(d, dt.v)
					out.ToolCall = &call
				}
			}
		}
	}
}

func decodeResponsesEvent(d []byte, name string, meta bool) Delta {
	var out Delta
	var typ []byte
	var delta, item, resp, outIdx vspan
	var hasDelta, hasItem, hasResp bool
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "type":
			typ = rawStrAt(d, it.v)
		case "delta":
			delta, hasDelta = it.v, true
		case "item":
			item, hasItem = it.v, true
		case "response":
			resp, hasResp = it.v, true
		case "output_index":
			outIdx = it.v
		}
	}
	if len(typ) == 0 {
		typ = []byte(name)
	}
	if n, ok := intAt(d, outIdx); ok {
		out.Index = int(n)
	}
	switch string(typ) {
	case "response.output_text.delta":
		if hasDelta {
			out.Text, out.HasText = textAt(d, delta, meta)
		}
	case "response.function_call_arguments.delta", "response.custom_tool_call_input.delta":
		if hasDelta && !meta {
			s, _ := strAt(d, delta)
			out.ToolCall = &ToolCall{Arguments: s}
		}
	case "response.output_item.added":
		if hasItem && !meta {
			switch string(memberRaw(d, item, "type")) {
			case "function_call", "custom_tool_call":
				out.ToolCall = &ToolCall{
					ID:        memberString(d, item, "call_id"),
					Name:      memberString(d, item, "name"),
					Arguments: memberString(d, item, "arguments"),
				}
			}
		}
	case "response.completed", "response.incomplete", "response.failed":
		out.Done = true
		out.Error = string(typ) == "response.failed"
		if hasResp {
			out.FinishReason = memberString(d, resp, "status")
			if u, ok := member(d, resp, "usage"); ok {
				out.Usage = readUsage(d, u)
			}
		}
	case "error":
		out.Error = true
	}
	return out
}

func decodeAnthropicEvent(d []byte, name string, meta bool) Delta {
	var out Delta
	var typ []byte
	var delta, block, msg, usage vspan
	var hasDelta, hasBlock, hasMsg, hasUsage bool
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "type":
			typ = rawStrAt(d, it.v)
		case "index":
			if n, ok := intAt(d, it.v); ok {
				out.Index = int(n)
			}
		case "delta":
			delta, hasDelta = it.v, true
		case "content_block":
			block, hasBlock = it.v, true
		case "message":
			msg, hasMsg = it.v, true
		case "usage":
			usage, hasUsage = it.v, true
		}
	}
	if len(typ) == 0 {
		typ = []byte(name)
	}
	switch string(typ) {
	case "content_block_delta":
		if !hasDelta {
			break
		}
		var dtyp []byte
		var text, partial vspan
		var hasText, hasPartial bool
		dt := iterObject(d, delta.s)
		for dt.next() {
			switch string(dt.keyRaw()) {
			case "type":
				dtyp = rawStrAt(d, dt.v)
			case "text":
				text, hasText = dt.v, true
			case "partial_json":
				partial, hasPartial = dt.v, true
			}
		}
		switch {
		case string(dtyp) == "text_delta" && hasText:
			out.Text, out.HasText = textAt(d, text, meta)
		case string(dtyp) == "input_json_delta" && hasPartial && !meta:
			s, _ := strAt(d, partial)
			out.ToolCall = &ToolCall{Arguments: s}
		}
	case "content_block_start":
		if hasBlock && !meta {
			switch string(memberRaw(d, block, "type")) {
			case "tool_use", "server_tool_use":
				out.ToolCall = &ToolCall{ID: memberString(d, block, "id"), Name: memberString(d, block, "name")}
			}
		}
	case "message_start":
		if hasMsg {
			if u, ok := member(d, msg, "usage"); ok {
				out.Usage = readUsage(d, u)
			}
		}
	case "message_delta":
		if hasDelta {
			out.FinishReason = memberString(d, delta, "stop_reason")
		}
		if hasUsage {
			out.Usage = readUsage(d, usage)
		}
	case "message_stop":
		out.Done = true
	case "error":
		out.Error = true
	}
	return out
}

// textAt is strAt, or with meta only whether v is a string.
func textAt(b []byte, v vspan, meta bool) (string, bool) {
	if meta {
		return "", kindOf(b, v) == '"'
	}
	return strAt(b, v)
}

// withData returns ev with new data and Raw re-encoded.
func withData(ev Event, data []byte) Event {
	out := Event{Name: ev.Name, ID: ev.ID, Data: data, wire: ev.wire}
	out.Raw = out.Encode()
	return out
}

// SequenceNumber returns the sequence_number of a Responses stream event
// (a top-level integer member), and whether it has one. Responses clients
// order and resume streams by it.
func SequenceNumber(ev Event) (int64, bool) {
	d, _, err := eventJSON(ev)
	if err != nil || len(d) == 0 || d[0] != '{' {
		return 0, false
	}
	v, ok := member(d, vspan{0, len(d)}, "sequence_number")
	if !ok {
		return 0, false
	}
	return intAt(d, v)
}

// WithSequenceNumber returns ev with its sequence_number set to n, the rest
// of its JSON kept byte for byte. Bulwark renumbers a Responses stream into
// which it inserted events (the text it held back), so that the numbers a
// client sees keep increasing. It fails with ErrMalformed when ev has no
// integer sequence_number.
func WithSequenceNumber(ev Event, n int64) (Event, error) {
	d, _, err := eventJSON(ev)
	if err != nil || len(d) == 0 || d[0] != '{' {
		return Event{}, fmt.Errorf("renumber event: not a JSON object: %w", ErrMalformed)
	}
	v, ok := member(d, vspan{0, len(d)}, "sequence_number")
	if !ok {
		return Event{}, fmt.Errorf("renumber event: no sequence_number: %w", ErrMalformed)
	}
	if _, ok := intAt(d, v); !ok {
		return Event{}, fmt.Errorf("renumber event: sequence_number is not an integer: %w", ErrMalformed)
	}
	data := make([]byte, 0, len(d)+20)
	data = append(data, d[:v.s]...)
	data = strconv.AppendInt(data, n, 10)
	data = append(data, d[v.e:]...)
	return withData(ev, data), nil
}
