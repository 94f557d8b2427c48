package llmapi

import (
	"bytes"
	"net/http"
	"strconv"
)

// AWS Bedrock Runtime: Converse / ConverseStream, and InvokeModel /
// InvokeModelWithResponseStream with the Anthropic messages body.
//
// Converse request: {"system":[{"text"}], "messages":[{"role","content":[
// {"text"} | {"toolUse":{"toolUseId","name","input"}} | {"toolResult":
// {"toolUseId","content":[{"text"}|{"json"}]}} | {"document"} | …]}],
// "inferenceConfig":{"maxTokens",…}, "toolConfig":{"tools":[{"toolSpec":
// {"name","description","inputSchema"}}]}}; the model is in the path.
// Answer: {"output":{"message":{"role","content":[…]}}, "stopReason",
// "usage":{"inputTokens","outputTokens","totalTokens"}}. Stream events (the
// :event-type header names them; the payload is the member's object):
// messageStart, contentBlockStart {"start":{"toolUse"}}, contentBlockDelta
// {"delta":{"text"|"toolUse":{"input"}|"reasoningContent":{"text"}}},
// contentBlockStop, messageStop {"stopReason"}, metadata {"usage"}; every
// payload may carry "p", random padding against traffic analysis.
// Errors: {"message"} with the type in x-amzn-ErrorType; in a stream an
// exception message (:exception-type).

var bedrockConverse = dialect{
	scanRequest: (*reqScanner).converse,
	clamp:       func(ed *editor, top *topFields, limit int64) { ed.clampIn(top, "inferenceConfig", "maxTokens", limit) },
	systemSuffix: func(ed *editor, top *topFields, suffix string) {
		ed.appendBlock(top, "system", "", suffix)
	},
	scanResponse: (*respScanner).converse,
	decodeEvent:  decodeConverseEvent,
	filterEvent:  (*eventFilter).converseEvent,
	ends:         converseEnds,
	channelEvent: converseChannelEvent,
	toolEvent:    converseToolEvent,
	errorBody:    bedrockErrorBody,
	errorEvent:   bedrockErrorEvent,
}

// bedrockInvoke is Anthropic's messages API behind Bedrock's paths, errors
// and event-stream framing (each event's JSON base64 in {"bytes"}).
var bedrockInvoke = dialect{
	scanRequest: func(r *reqScanner) {
		// scan read model, stream and tools already; the token cap is
		// the model family's (bedrock_models.go).
		if r.meta {
			f := invokeFamilyOf(r.b, &r.top)
			r.maxTokens = r.invokeMaxTokens(f)
			r.uncapped = f == familyUnknown
		}
		r.anthropic()
		r.templatePrompts()
	},
	// Every family's cap is edited in its own field; only an Anthropic
	// body is suffixed: InvokeModel carries every model's native body, and
	// Bedrock rejects fields a model does not define (Titan's texts are
	// read, and redacted, as unknown JSON; Llama's and Mistral's prompts
	// by their chat template, bedrock_template.go).
	clamp: invokeClamp,
	systemSuffix: func(ed *editor, top *topFields, suffix string) {
		if invokeFamilyOf(ed.b, top) == familyAnthropic {
			ed.systemSuffix(AnthropicMessages, top, suffix)
		}
	},
	scanResponse: func(r *respScanner, top vspan) {
		r.object(AnthropicMessages, top)
		if r.meta && (r.usage == nil || *r.usage == Usage{}) {
			// Not Anthropic's usage (Nova's camelCase one reads as zero).
			if u := invokeUsage(r.b, top); u != nil || r.usage == nil {
				r.usage = u
			}
		}
	},
	decodeEvent: func(ev Event, d []byte, meta bool) Delta {
		if isException(ev) {
			return Delta{Error: true, Done: true}
		}
		out := decodeAnthropicEvent(d, ev.Name, meta)
		if out.Usage == nil && len(d) > 0 {
			// Other models' chunks; every model's last one carries
			// amazon-bedrock-invocationMetrics.
			out.Usage = invokeUsage(d, vspan{0, len(d)})
		}
		return out
	},
	filterEvent: func(f *eventFilter, ev Event) {
		if isException(ev) {
			f.whole(vspan{0, len(f.b)}, nil)
			return
		}
		f.anthropicEvent()
	},
	ends: func(ev Event, d []byte) (bool, []int) {
		if isException(ev) {
			return true, nil
		}
		if len(d) == 0 {
			return false, nil
		}
		p := ParsedEvent{api: AnthropicMessages, ev: ev, d: d}
		return p.Ends()
	},
	channelEvent: func(template Event, ch Channel, text string) (Event, error) {
		ev, err := ChannelEvent(AnthropicMessages, Event{Data: []byte("{}")}, ch, text)
		if err != nil {
			return Event{}, err
		}
		out := Event{Name: ev.Name, Data: ev.Data,
			wire: newWire(newEventHeaders("chunk"), true)}
		out.Raw = out.Encode()
		return out, nil
	},
	toolEvent: func(a *ToolCallAssembler, ev Event, d []byte) {
		if isException(ev) {
			a.completeAll()
			return
		}
		p := ParsedEvent{api: AnthropicMessages, ev: ev, d: d}
		a.builtinEvent(&p)
	},
	errorBody:  bedrockErrorBody,
	errorEvent: bedrockErrorEvent,
}

// converse reads the system prompt, the messages, the tools and the
// output-token limit of a Converse request.
func (r *reqScanner) converse() {
	b := r.b
	it := iterObject(b, r.top.obj.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "system":
			r.texts.boundary()
			r.converseBlocks("system", it.v, 0)
		case "messages":
			mt := iterArray(b, it.v.s)
			for mt.next() {
				if kindOf(b, mt.v) != '{' {
					continue
				}
				r.texts.boundary()
				role := roleAt(b, mt.v)
				if c, ok := member(b, mt.v, "content"); ok {
					r.converseBlocks(role, c, 0)
				}
			}
		case "inferenceConfig":
			if v, ok := member(b, it.v, "maxTokens"); ok && r.meta {
				if n, ok := intAt(b, v); ok {
					r.maxTokens = max(n, 0)
				}
			}
		case "toolConfig":
			if tools, ok := member(b, it.v, "tools"); ok && r.meta {
				tt := iterArray(b, tools.s)
				for tt.next() {
					if spec, ok := member(b, tt.v, "toolSpec"); ok {
						if name := memberString(b, spec, "name"); name != "" {
							r.tools = append(r.tools, Tool{Name: name, Type: "function", Description: memberString(b, spec, "description")})
						}
					}
				}
			}
		}
	}
}

// converseBlocks reads content blocks: text, toolUse input (as JSON
// text), toolResult content (role "tool", one level deep, as the API
// allows), reasoning text and plain-text documents.
func (r *reqScanner) converseBlocks(role string, v vspan, depth int) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		if kindOf(b, it.v) != '{' {
			continue
		}
		bt := iterObject(b, it.v.s)
		for bt.next() {
			switch string(bt.keyRaw()) {
			case "text":
				r.texts.addString(b, role, bt.v)
			case "json":
				r.texts.add(role, bt.v, textJSON)
			case "toolUse":
				tc := ToolCall{ID: memberString(b, bt.v, "toolUseId"), Name: memberString(b, bt.v, "name")}
				if in, ok := member(b, bt.v, "input"); ok {
					r.texts.add(role, in, textJSON)
					if r.meta {
						tc.Arguments = compactJSON(b[in.s:in.e])
					}
				}
				r.addToolCall(tc)
			case "toolResult":
				if c, ok := member(b, bt.v, "content"); ok && depth == 0 {
					r.converseBlocks("tool", c, depth+1)
				}
			case "reasoningContent":
				if rt, ok := member(b, bt.v, "reasoningText"); ok {
					if t, ok := member(b, rt, "text"); ok {
						r.texts.addString(b, role, t)
					}
				}
			}
		}
	}
}

// clampIn caps the integer member field of the top-level object objKey,
// adding either when absent.
func (ed *editor) clampIn(top *topFields, objKey, field string, limit int64) {
	b := ed.b
	val := strconv.AppendInt(nil, limit, 10)
	obj := append(append(append([]byte(`{"`), field...), `":`...), val...)
	obj = append(obj, '}')
	found := false
	it := iterObject(b, top.obj.s)
	for it.next() {
		if string(it.keyRaw()) != objKey {
			continue
		}
		found = true
		if kindOf(b, it.v) != '{' {
			ed.replace(it.v, obj)
			continue
		}
		present := false
		ft := iterObject(b, it.v.s)
		for ft.next() {
			if string(ft.keyRaw()) == field {
				present = true
				if !withinLimit(b, ft.v, limit) {
					ed.replace(ft.v, val)
				}
			}
		}
		if !present {
			ed.insertMember(it.v, ft.n > 0, field, val)
		}
	}
	if !found {
		ed.insertMember(top.obj, top.members > 0, objKey, obj)
	}
}

// appendBlock appends {"text": suffix} to the array of text blocks at the
// top-level member key (within its member inner when inner is set: Gemini's
// systemInstruction.parts), creating what is missing. A value of another
// kind is replaced.
func (ed *editor) appendBlock(top *topFields, key, inner, suffix string) {
	b := ed.b
	block := append(append([]byte(`{"text":`), quote(suffix)...), '}')
	arr := append(append([]byte{'['}, block...), ']')
	wrap := func() []byte {
		if inner == "" {
			return arr
		}
		return append(append(append([]byte(`{"`), inner...), `":`...), append(arr, '}')...)
	}
	found := false
	it := iterObject(b, top.obj.s)
	for it.next() {
		if string(it.keyRaw()) != key {
			continue
		}
		found = true
		v := it.v
		if inner != "" {
			if kindOf(b, v) != '{' {
				ed.replace(v, wrap())
				continue
			}
			p, ok := member(b, v, inner)
			if !ok {
				n := iterObject(b, v.s)
				for n.next() {
				}
				ed.insertMember(v, n.n > 0, inner, arr)
				continue
			}
			v = p
		}
		if kindOf(b, v) != '[' {
			ed.replace(v, arr)
			continue
		}
		ed.appendElem(v, block)
	}
	if !found {
		ed.insertMember(top.obj, top.members > 0, key, wrap())
	}
}

// converse reads a Converse answer.
func (r *respScanner) converse(top vspan) {
	b := r.b
	it := iterObject(b, top.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "output":
			if msg, ok := member(b, it.v, "message"); ok {
				if c, ok := member(b, msg, "content"); ok {
					r.converseContent(c)
				}
			}
		case "stopReason":
			r.finish, _ = strAt(b, it.v)
		case "usage":
			if r.meta {
				r.usage = bedrockUsage(b, it.v)
			}
		}
	}
}

func (r *respScanner) converseContent(v vspan) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		bt := iterObject(b, it.v.s)
		for bt.next() {
			switch string(bt.keyRaw()) {
			case "text":
				r.texts.addString(b, "assistant", bt.v)
			case "toolUse":
				if r.meta {
					tc := ToolCall{ID: memberString(b, bt.v, "toolUseId"), Name: memberString(b, bt.v, "name")}
					if in, ok := member(b, bt.v, "input"); ok {
						tc.Arguments = compactJSON(b[in.s:in.e])
					}
					r.toolCalls = append(r.toolCalls, tc)
				}
			}
		}
	}
}

// bedrockUsage reads {"inputTokens","outputTokens","totalTokens"}.
func bedrockUsage(b []byte, v vspan) *Usage {
	if kindOf(b, v) != '{' {
		return nil
	}
	var u Usage
	it := iterObject(b, v.s)
	for it.next() {
		n, ok := intAt(b, it.v)
		if !ok {
			continue
		}
		switch string(it.keyRaw()) {
		case "inputTokens":
			u.PromptTokens = n
		case "outputTokens":
			u.CompletionTokens = n
		case "totalTokens":
			u.TotalTokens = n
		}
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return &u
}

// The Channel fields of Converse stream deltas.
const (
	FieldToolUseInput  = "toolUse.input"         // Converse delta.toolUse.input
	FieldReasoningText = "reasoningContent.text" // Converse delta.reasoningContent.text
)

func decodeConverseEvent(ev Event, d []byte, meta bool) Delta {
	var out Delta
	if isException(ev) {
		out.Error, out.Done = true, true
		return out
	}
	top := vspan{0, len(d)}
	out.Index = memberInt(d, top, "contentBlockIndex", 0)
	switch ev.Name {
	case "contentBlockDelta":
		delta, ok := member(d, top, "delta")
		if !ok {
			break
		}
		if t, ok := member(d, delta, "text"); ok {
			out.Text, out.HasText = textAt(d, t, meta)
		}
		if tu, ok := member(d, delta, "toolUse"); ok && !meta {
			out.ToolCall = &ToolCall{Arguments: memberString(d, tu, "input")}
		}
	case "contentBlockStart":
		if st, ok := member(d, top, "start"); ok && !meta {
			if tu, ok := member(d, st, "toolUse"); ok {
				out.ToolCall = &ToolCall{ID: memberString(d, tu, "toolUseId"), Name: memberString(d, tu, "name")}
			}
		}
	case "messageStop":
		out.FinishReason = memberString(d, top, "stopReason")
	case "metadata":
		if u, ok := member(d, top, "usage"); ok {
			out.Usage = bedrockUsage(d, u)
		}
		out.Done = true
	}
	return out
}

// converseEvent filters a Converse stream event: text, tool input and
// reasoning deltas are channels of their content block; the padding "p"
// is left alone (it is random, and not the model's).
func (f *eventFilter) converseEvent(ev Event) {
	d := f.b
	idx := memberInt(d, vspan{0, len(d)}, "contentBlockIndex", 0)
	it := iterObject(d, 0)
	for it.next() {
		k := it.keyRaw()
		switch {
		case string(k) == "p":
		case string(k) == "delta" && ev.Name == "contentBlockDelta" && kindOf(d, it.v) == '{':
			dt := iterObject(d, it.v.s)
			for dt.next() {
				dk := dt.keyRaw()
				switch string(dk) {
				case "text":
					f.delta(dt.v, dk, Channel{Field: FieldText, Index: idx})
				case "toolUse":
					f.nestedDelta(dt.v, dk, "input", Channel{Field: FieldToolUseInput, Index: idx})
				case "reasoningContent":
					f.nestedDelta(dt.v, dk, "text", Channel{Field: FieldReasoningText, Index: idx})
				default:
					f.whole(dt.v, dk)
				}
			}
		default:
			f.whole(it.v, k)
		}
	}
}

// nestedDelta filters member field of the object v as a delta of ch and
// everything else of v whole.
func (f *eventFilter) nestedDelta(v vspan, key []byte, field string, ch Channel) {
	d := f.b
	if kindOf(d, v) != '{' {
		f.whole(v, key)
		return
	}
	it := iterObject(d, v.s)
	for it.next() {
		k := it.keyRaw()
		if string(k) == field {
			f.delta(it.v, k, ch)
			continue
		}
		f.whole(it.v, k)
	}
}

func converseEnds(ev Event, d []byte) (bool, []int) {
	if isException(ev) {
		return true, nil
	}
	switch ev.Name {
	case "messageStop", "metadata":
		return true, nil
	case "contentBlockStop":
		if len(d) == 0 {
			return false, nil
		}
		return false, []int{memberInt(d, vspan{0, len(d)}, "contentBlockIndex", 0)}
	}
	return false, nil
}

// converseChannelEvent synthesises a contentBlockDelta carrying text on ch.
func converseChannelEvent(_ Event, ch Channel, text string) (Event, error) {
	out := append([]byte(`{"contentBlockIndex":`), strconv.Itoa(ch.Index)...)
	out = append(out, `,"delta":{`...)
	switch ch.Field {
	case FieldToolUseInput:
		out = append(out, `"toolUse":{"input":`...)
		out = appendQuote(out, text)
		out = append(out, '}')
	case FieldReasoningText:
		out = append(out, `"reasoningContent":{"text":`...)
		out = appendQuote(out, text)
		out = append(out, '}')
	default:
		out = append(out, `"text":`...)
		out = appendQuote(out, text)
	}
	out = append(out, "}}"...)
	ev := Event{Name: "contentBlockDelta", Data: out,
		wire: newWire(newEventHeaders("contentBlockDelta"), false)}
	ev.Raw = ev.Encode()
	return ev, nil
}

// bedrockErrorType names the error for a status as Bedrock does (the
// x-amzn-ErrorType header and the exception's type).
func bedrockErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return "AccessDeniedException"
	case status == http.StatusNotFound:
		return "ResourceNotFoundException"
	case status == http.StatusTooManyRequests:
		return "ThrottlingException"
	case status == http.StatusServiceUnavailable:
		return "ServiceUnavailableException"
	case status >= 500:
		return "InternalServerException"
	}
	return "ValidationException"
}

// ErrorHeaders are the headers a denial in api's shape carries besides its
// content type: Bedrock names the error type in x-amzn-ErrorType, which the
// AWS SDKs read first.
func ErrorHeaders(api API, status int) [][2]string {
	switch api {
	case BedrockConverse, BedrockInvoke:
		return [][2]string{{"x-amzn-errortype", bedrockErrorType(status)}}
	}
	return nil
}

// bedrockErrorBody is {"message":…,"reason":…}: the AWS SDKs take the type
// from x-amzn-ErrorType (ErrorHeaders) and the message from the body.
func bedrockErrorBody(status int, reason, message string) []byte {
	b := append([]byte(nil), `{"message":`...)
	b = appendQuote(b, message)
	if reason != "" {
		b = append(b, `,"reason":`...)
		b = appendQuote(b, reason)
	}
	return append(b, '}')
}

// bedrockErrorEvent ends an event stream with an exception of the
// ConverseStream union (validationException, throttlingException,
// internalServerException, serviceUnavailableException).
func bedrockErrorEvent(fr Framing, status int, reason, message string) []byte {
	typ := bedrockErrorType(status)
	switch typ {
	case "ThrottlingException", "InternalServerException", "ServiceUnavailableException":
	default:
		typ = "ValidationException"
	}
	typ = string(typ[0]+'a'-'A') + typ[1:]
	body := bedrockErrorBody(status, reason, message)
	if fr != FramingEventStream {
		b := append([]byte("event: "+typ+"\ndata: "), body...)
		return append(b, "\n\n"...)
	}
	return encodeMessage(exceptionHeaders(typ), body)
}

// converseToolEvent follows the tool calls of a ConverseStream: a
// contentBlockStart with start.toolUse (toolUseId, name) opens the call of
// its content block, contentBlockDelta delta.toolUse.input fragments are
// its arguments, contentBlockStop completes it; messageStop, metadata and
// an exception complete every call. A toolUse delta whose start was not
// seen opens a call without a name, which policy can refuse.
func converseToolEvent(a *ToolCallAssembler, ev Event, d []byte) {
	if isException(ev) {
		a.completeAll()
		return
	}
	switch ev.Name {
	case "messageStop", "metadata":
		a.completeAll()
		return
	case "contentBlockStart", "contentBlockStop":
	case "contentBlockDelta":
		// The common case: a text delta while no call is open.
		if a.open == 0 && !bytes.Contains(d, []byte(`toolUse`)) && !hasUnicodeEscape(d) {
			return
		}
	default:
		return
	}
	if len(d) == 0 || d[0] != '{' {
		return
	}
	top := vspan{0, len(d)}
	k := ToolCallKey{Index: memberInt(d, top, "contentBlockIndex", 0)}
	switch ev.Name {
	case "contentBlockStart":
		st, ok := member(d, top, "start")
		if !ok {
			return
		}
		tu, ok := member(d, st, "toolUse")
		if !ok || kindOf(d, tu) != '{' {
			return
		}
		i := a.call(k)
		if i < 0 {
			return
		}
		a.touch(i)
		a.setIdentity(i, memberString(d, tu, "toolUseId"), memberString(d, tu, "name"))
	case "contentBlockDelta":
		delta, ok := member(d, top, "delta")
		if !ok {
			return
		}
		tu, ok := member(d, delta, "toolUse")
		if !ok {
			if i := a.find(k); i >= 0 {
				a.touch(i) // another delta of the call's block still belongs to it
			}
			return
		}
		i := a.find(k)
		if i < 0 {
			if i = a.call(k); i < 0 {
				return
			}
		}
		a.touch(i)
		if in, ok := member(d, tu, "input"); ok && kindOf(d, in) == '"' {
			a.appendArgs(i, rawStrAt(d, in))
		}
	case "contentBlockStop":
		if i := a.find(k); i >= 0 {
			a.complete(i)
		}
	}
}
