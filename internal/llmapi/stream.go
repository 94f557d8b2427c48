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
	// *.done and response.completed events, which EditEvent rewrites.
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
func DecodeEvent(api API, ev Event) (Delta, error) { return decodeEvent(api, ev, false) }

// DecodeEventMeta is DecodeEvent without the text: Text stays empty (HasText
// still says whether the event carries output text) and ToolCall nil. It
// serves callers that read the strings of an event with FilterEvent and
// need only its usage, end and error, without decoding the text twice.
func DecodeEventMeta(api API, ev Event) (Delta, error) { return decodeEvent(api, ev, true) }

func decodeEvent(api API, ev Event, meta bool) (Delta, error) {
	p := ParseEvent(api, ev)
	return p.decode(meta)
}

// ParsedEvent is one stream event validated once, so that reading what it
// reports (Meta), what it closes (Ends) and filtering its strings (Filter)
// do not validate it again each. It is the cheap way for a proxy to do all
// three; DecodeEvent, DecodeEventMeta, EventEnds and FilterEvent are the
// same operations on an event not yet parsed.
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

// Meta is DecodeEventMeta of the event.
func (p *ParsedEvent) Meta() (Delta, error) { return p.decode(true) }

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

// textSpanOf locates the output text DecodeEvent reports as Delta.Text.
func textSpanOf(api API, d []byte, name string) (vspan, bool) {
	switch streamKind(api, d, name) {
	case OpenAIChat, OpenAICompletions:
		it := iterObject(d, 0)
		var v vspan
		found := false
		for it.next() {
			if string(it.keyRaw()) != "choices" {
				continue
			}
			ct := iterArray(d, it.v.s)
			if !ct.next() {
				continue
			}
			found = false
			cit := iterObject(d, ct.v.s)
			for cit.next() {
				switch string(cit.keyRaw()) {
				case "text":
					v, found = cit.v, kindOf(d, cit.v) == '"'
				case "delta":
					if c, ok := member(d, cit.v, "content"); ok {
						v, found = c, kindOf(d, c) == '"'
					}
				}
			}
		}
		return v, found
	case OpenAIResponses:
		top := vspan{0, len(d)}
		typ := memberRaw(d, top, "type")
		if len(typ) == 0 {
			typ = []byte(name)
		}
		if string(typ) != "response.output_text.delta" {
			return vspan{}, false
		}
		v, ok := member(d, top, "delta")
		return v, ok && kindOf(d, v) == '"'
	case AnthropicMessages:
		top := vspan{0, len(d)}
		typ := memberRaw(d, top, "type")
		if len(typ) == 0 {
			typ = []byte(name)
		}
		if string(typ) != "content_block_delta" {
			return vspan{}, false
		}
		delta, ok := member(d, top, "delta")
		if !ok || string(memberRaw(d, delta, "type")) != "text_delta" {
			return vspan{}, false
		}
		v, ok := member(d, delta, "text")
		return v, ok && kindOf(d, v) == '"'
	}
	return vspan{}, false
}

// withData returns ev with new data and Raw re-encoded.
func withData(ev Event, data []byte) Event {
	out := Event{Name: ev.Name, ID: ev.ID, Data: data}
	out.Raw = out.Encode()
	return out
}

// WithText returns ev with its output text (the text DecodeEvent reports)
// replaced by text; everything else in the JSON is kept byte for byte and
// Raw is re-encoded with Encode. It fails with ErrNoText when ev carries no
// output text.
func WithText(api API, ev Event, text string) (Event, error) {
	d, _, err := eventJSON(ev)
	if err != nil && genericStream(api) {
		return withData(ev, []byte(text)), nil
	}
	if err != nil {
		return Event{}, fmt.Errorf("replace %s event text: %w", api, err)
	}
	if len(d) == 0 || d[0] != '{' {
		return Event{}, fmt.Errorf("replace %s event text: %w", api, ErrNoText)
	}
	v, ok := textSpanOf(api, d, ev.Name)
	if !ok {
		return Event{}, fmt.Errorf("replace %s event text: %w", api, ErrNoText)
	}
	q := quote(text)
	data := make([]byte, 0, len(d)-(v.e-v.s)+len(q))
	data = append(append(append(data, d[:v.s]...), q...), d[v.e:]...)
	return withData(ev, data), nil
}

// TextEvent synthesises a new event carrying text, modelled on template (a
// text event of the same stream): it keeps the template's SSE name and id
// and its identifying fields (OpenAI id, object, created, model and the
// choice index; Responses item_id, output_index, content_index; Anthropic
// index). Bulwark uses it to flush text it held back before the event that
// ends the stream.
func TextEvent(api API, template Event, text string) (Event, error) {
	d, _, err := eventJSON(template)
	if err != nil && genericStream(api) {
		return withData(template, []byte(text)), nil
	}
	if err != nil {
		return Event{}, fmt.Errorf("synthesise %s text event: %w", api, err)
	}
	if len(d) == 0 || d[0] != '{' {
		return Event{}, fmt.Errorf("synthesise %s text event: template is not a JSON object: %w", api, ErrMalformed)
	}
	top := vspan{0, len(d)}
	switch kind := streamKind(api, d, template.Name); kind {
	case OpenAIChat, OpenAICompletions:
		index := []byte("0")
		var choices vspan
		hasChoices := false
		ed := editor{b: d}
		it := iterObject(d, 0)
		for it.next() {
			switch string(it.keyRaw()) {
			case "choices":
				choices, hasChoices = it.v, true
				if ct := iterArray(d, it.v.s); ct.next() {
					if i, ok := member(d, ct.v, "index"); ok {
						if n, ok := intAt(d, i); ok {
							index = strconv.AppendInt(nil, n, 10)
						}
					}
				}
			case "usage", "error":
				if kindOf(d, it.v) != 'n' {
					ed.replace(it.v, []byte("null"))
				}
			}
		}
		choice := append([]byte(`[{"index":`), index...)
		if kind == OpenAICompletions || (api != OpenAIChat && isCompletionsChunk(d)) {
			choice = append(choice, `,"text":`...)
			choice = appendQuote(choice, text)
			choice = append(choice, `,"logprobs":null,"finish_reason":null}]`...)
		} else {
			choice = append(choice, `,"delta":{"content":`...)
			choice = appendQuote(choice, text)
			choice = append(choice, `},"finish_reason":null}]`...)
		}
		if hasChoices {
			ed.replace(choices, choice)
		} else {
			ed.insertMember(top, it.n > 0, "choices", choice)
		}
		data, _, err := ed.result(api)
		if err != nil {
			return Event{}, fmt.Errorf("synthesise %s text event: %w", api, err)
		}
		return withData(template, data), nil
	case OpenAIResponses:
		typ := memberRaw(d, top, "type")
		if len(typ) == 0 {
			typ = []byte(template.Name)
		}
		if string(typ) != "response.output_text.delta" {
			return Event{}, fmt.Errorf("synthesise %s text event: template is not an output_text delta: %w", api, ErrNoText)
		}
		ed := editor{b: d}
		hasDelta := false
		it := iterObject(d, 0)
		for it.next() {
			switch string(it.keyRaw()) {
			case "delta":
				hasDelta = true
				ed.replace(it.v, quote(text))
			case "logprobs":
				if kindOf(d, it.v) == '[' {
					ed.replace(it.v, []byte("[]"))
				}
			}
		}
		if !hasDelta {
			ed.insertMember(top, it.n > 0, "delta", quote(text))
		}
		data, _, err := ed.result(api)
		if err != nil {
			return Event{}, fmt.Errorf("synthesise %s text event: %w", api, err)
		}
		return withData(template, data), nil
	case AnthropicMessages:
		index := []byte("0")
		if i, ok := member(d, top, "index"); ok {
			if n, ok := intAt(d, i); ok {
				index = strconv.AppendInt(nil, n, 10)
			}
		}
		data := append([]byte(`{"type":"content_block_delta","index":`), index...)
		data = append(data, `,"delta":{"type":"text_delta","text":`...)
		data = appendQuote(data, text)
		data = append(data, "}}"...)
		return withData(Event{Name: "content_block_delta", ID: template.ID}, data), nil
	}
	return Event{}, fmt.Errorf("synthesise %s text event: %w", api, ErrNoText)
}

// isCompletionsChunk reports whether a chunk's first choice carries "text"
// rather than "delta" (a completions stream read as Generic).
func isCompletionsChunk(d []byte) bool {
	c, ok := member(d, vspan{0, len(d)}, "choices")
	if !ok {
		return false
	}
	ct := iterArray(d, c.s)
	if !ct.next() {
		return false
	}
	_, ok = member(d, ct.v, "text")
	return ok
}

// EditEvent applies fn to every output text in one stream event and reports
// whether anything changed: every choice's delta content or text (OpenAI),
// the text_delta of a content_block_delta and any text in
// content_block_start or message_start (Anthropic), and for Responses both
// the output_text delta and the full texts repeated by
// response.output_text.done, content_part.*, output_item.* and the
// response.* snapshot events — which a redactor that only rewrites deltas
// would otherwise leak. Raw is re-encoded only when something changed.
func EditEvent(api API, ev Event, fn func(text string) string) (Event, bool, error) {
	d, _, err := eventJSON(ev)
	if err != nil && genericStream(api) {
		if old := string(ev.Data); fn != nil {
			if nw := fn(old); nw != old {
				return withData(ev, []byte(nw)), true, nil
			}
		}
		return ev, false, nil
	}
	if err != nil {
		return ev, false, fmt.Errorf("edit %s event: %w", api, err)
	}
	if len(d) == 0 || d[0] != '{' || fn == nil {
		return ev, false, nil
	}
	r := respScanner{b: d}
	top := vspan{0, len(d)}
	switch streamKind(api, d, ev.Name) {
	case OpenAIChat, OpenAICompletions:
		if c, ok := member(d, top, "choices"); ok {
			ct := iterArray(d, c.s)
			for ct.next() {
				if t, ok := member(d, ct.v, "text"); ok {
					r.texts.addString(d, "assistant", t)
				}
				if dl, ok := member(d, ct.v, "delta"); ok {
					if t, ok := member(d, dl, "content"); ok {
						r.texts.addString(d, "assistant", t)
					}
				}
			}
		}
	case OpenAIResponses:
		typ := memberString(d, top, "type")
		if typ == "" {
			typ = ev.Name
		}
		it := iterObject(d, 0)
		for it.next() {
			switch k := string(it.keyRaw()); {
			case k == "delta" && typ == "response.output_text.delta",
				k == "text" && typ == "response.output_text.done":
				r.texts.addString(d, "assistant", it.v)
			case k == "part":
				if memberString(d, it.v, "type") == "output_text" {
					if t, ok := member(d, it.v, "text"); ok {
						r.texts.addString(d, "assistant", t)
					}
				}
			case k == "item":
				r.outputItem(it.v)
			case k == "response":
				r.object(OpenAIResponses, it.v)
			}
		}
	case AnthropicMessages:
		it := iterObject(d, 0)
		for it.next() {
			switch string(it.keyRaw()) {
			case "delta":
				if memberString(d, it.v, "type") == "text_delta" {
					if t, ok := member(d, it.v, "text"); ok {
						r.texts.addString(d, "assistant", t)
					}
				}
			case "content_block":
				r.anthropicBlock(it.v)
			case "message":
				if c, ok := member(d, it.v, "content"); ok {
					r.anthropicContent(c)
				}
			}
		}
	}
	ed := editor{b: d}
	for _, t := range r.texts.spans {
		ed.text(t, func(_, s string) string { return fn(s) })
	}
	data, changed, err := ed.result(api)
	if err != nil {
		return ev, false, fmt.Errorf("edit %s event: %w", api, err)
	}
	if !changed {
		return ev, false, nil
	}
	return withData(ev, data), true, nil
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
