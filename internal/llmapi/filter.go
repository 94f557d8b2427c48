package llmapi

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// SafeKey reports whether the string values of JSON members named key pass
// to the client unfiltered in answers of the known APIs. Everything else an
// answer carries — output text, refusals, reasoning and thinking, tool-call
// arguments and inputs, logprob tokens, annotations, and every field this
// package does not know — is offered to the output filter, because a field
// Bulwark does not read is exactly where a leak would go.
//
// The safe fields are identifiers, enums and opaque data the upstream (not
// the model's text) produces, which redaction would only corrupt:
//
//	id, object, type, role, model, status, finish_reason, stop_reason,
//	call_id, item_id, tool_call_id, response_id, previous_response_id,
//	system_fingerprint, service_tier, signature, encrypted_content,
//	obfuscation, b64_json, partial_image_b64
//
// Numbers, booleans and null are never filtered. The list does not apply
// beneath members named "input" or "metadata" (a tool_use input is what the
// model wrote; metadata is the caller's), nor anywhere in Generic bodies,
// whose shape Bulwark does not know. README's "What the output filter
// reads" section repeats this list; keep them in step.
func SafeKey(key string) bool {
	switch key {
	case "id", "object", "type", "role", "model", "status", "finish_reason", "stop_reason",
		"call_id", "item_id", "tool_call_id", "response_id", "previous_response_id",
		"system_fingerprint", "service_tier", "signature", "encrypted_content",
		"obfuscation", "b64_json", "partial_image_b64":
		return true
	}
	return false
}

// opaqueKey reports whether the safe list stops applying beneath key.
func opaqueKey(key []byte) bool {
	return string(key) == "input" || string(key) == "metadata"
}

// logprobKey reports whether key holds per-token logprobs, whose token
// strings repeat the answer's text piece by piece.
func logprobKey(key []byte) bool {
	return string(key) == "logprobs" || string(key) == "top_logprobs"
}

// visitKind says what a walk found.
type visitKind uint8

const (
	visitText  visitKind = iota // a string to filter
	visitToken                  // a logprob token string
	visitBytes                  // a logprob bytes array, or a legacy top_logprobs object keyed by tokens
	visitEcho                   // a string the answer echoes from the request (Responses instructions)
)

// hasMember reports whether the object at b[s] has a member named name.
func hasMember(b []byte, s int, name string) bool {
	it := iterObject(b, s)
	for it.next() {
		if string(it.keyRaw()) == name {
			return true
		}
	}
	return false
}

// blankValue is what a blanked logprob token, bytes array or token map
// becomes: an empty value of the same kind.
func blankValue(first byte) []byte {
	switch first {
	case '[':
		return []byte("[]")
	case '{':
		return []byte("{}")
	}
	return []byte(`""`)
}

// frame is one open container of a walk.
type frame struct {
	obj    bool
	ckey   []byte // the member name holding the container
	key    []byte // objects: the member being read
	opaque bool   // beneath input or metadata
	lp     bool   // beneath logprobs
}

// walkStrings calls visit for every string value inside b[v.s:v.e] that the
// output filter must see (string values whose member name is on the safe
// list are skipped when safe is set), and for logprob tokens and bytes
// arrays. key is the member name holding v ("" at the top). It is a linear
// scan with an explicit stack, so nesting depth costs no call stack.
func walkStrings(b []byte, v vspan, key []byte, safe bool, visit func(k visitKind, s vspan)) {
	if v.s < 0 || v.e > len(b) || v.s >= v.e {
		return
	}
	var arr [16]frame
	stack := arr[:0]
	opaque0, lp0 := opaqueKey(key), logprobKey(key)
	cur := func() ([]byte, bool, bool) {
		if len(stack) == 0 {
			return key, false, false
		}
		t := &stack[len(stack)-1]
		if t.obj {
			return t.key, t.opaque, t.lp
		}
		return t.ckey, t.opaque, t.lp
	}
	for i := v.s; i < v.e; {
		switch c := b[i]; c {
		case '"':
			end := stringEnd(b, i)
			if end < 0 || end > v.e {
				return
			}
			if n := len(stack); n > 0 && stack[n-1].obj {
				if j := skipWS(b, end); j < len(b) && b[j] == ':' {
					stack[n-1].key = keyBytes(b[i:end])
					i = end
					continue
				}
			}
			k, opaque, lp := cur()
			switch {
			case lp && (string(k) == "token" || string(k) == "tokens"):
				visit(visitToken, vspan{i, end})
			case safe && !opaque && !lp && SafeKey(string(k)):
			default:
				visit(visitText, vspan{i, end})
			}
			i = end
		case '{', '[':
			k, opaque, lp := cur()
			if len(stack) == 0 {
				opaque, lp = opaque0, lp0
			}
			if lp && (c == '[' && string(k) == "bytes" || c == '{' && string(k) == "top_logprobs" && !hasMember(b, i, "token")) {
				// A bytes array, or a legacy completions top_logprobs
				// entry, whose member names are the tokens. What is inside
				// is still walked (a blanked container's edits win).
				if end := valueEnd(b, i); end > i && end <= v.e {
					visit(visitBytes, vspan{i, end})
				}
			}
			stack = append(stack, frame{obj: c == '{', ckey: k, opaque: opaque || opaqueKey(k), lp: lp || logprobKey(k)})
			i++
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			i++
		default:
			i++
		}
	}
}

// view is unquote without a copy for the common token with no escape and
// valid UTF-8: a string sharing the event's bytes, which are never written
// after parsing. Deltas are short and numerous; copying each costs an
// allocation per event.
func view(tok []byte) string {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return ""
	}
	in := tok[1 : len(tok)-1]
	if len(in) == 0 || bytes.IndexByte(in, '\\') >= 0 || !utf8.Valid(in) {
		return unquote(tok)
	}
	return unsafe.String(unsafe.SliceData(in), len(in)) // #nosec G103 -- event data is read-only once parsed
}

// keyBytes returns a member name token's content, unescaped when needed.
func keyBytes(tok []byte) []byte {
	raw := tok[1 : len(tok)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	return []byte(unquote(tok))
}

// filterEdits collects the splices of one filtered document.
type filterEdits struct {
	b       []byte
	patches []patch
	tokens  []vspan // logprob tokens and bytes arrays, blanked when asked
	changed bool
}

// text filters the string token at s with fn.
func (f *filterEdits) text(s vspan, fn func(string) string) {
	old := unquote(f.b[s.s:s.e])
	if old == "" {
		return
	}
	if nw := fn(old); nw != old {
		f.patches = append(f.patches, patch{s: s.s, e: s.e, text: quote(nw)})
		f.changed = true
	}
}

// blank replaces every logprob token with "" and bytes array with [].
func (f *filterEdits) blank() {
	for _, t := range f.tokens {
		f.patches = append(f.patches, patch{s: t.s, e: t.e, text: blankValue(f.b[t.s])})
	}
}

// FilteredText returns every text of a response body that EditResponse
// filters, joined with "\n", for the detectors: all strings of a Generic
// JSON body, the whole of a non-JSON Generic body, and for the known APIs
// every string not on the safe list (see SafeKey), logprob tokens
// included — except the Responses API's echo of the request's instructions,
// which is the request's own text (EditResponse still filters it). A known
// API's body that is not a JSON object fails with ErrMalformed.
func FilteredText(api API, body []byte) (string, error) {
	var sb strings.Builder
	err := eachFiltered(api, body, func(k visitKind, s vspan) {
		if k == visitBytes || k == visitEcho {
			return
		}
		if sb.Len() > 0 {
			sb.WriteByte('\n')
		}
		sb.WriteString(unquote(body[s.s:s.e]))
	}, func(raw string) { sb.WriteString(raw) })
	if err != nil {
		return "", fmt.Errorf("read %s response: %w", api, err)
	}
	return sb.String(), nil
}

// eachFiltered walks a response body as FilteredText describes; raw gets
// a non-JSON Generic body.
func eachFiltered(api API, body []byte, visit func(visitKind, vspan), raw func(string)) error {
	top := trimSpan(body)
	if api == Generic || !api.known() {
		if top.s == top.e {
			return nil
		}
		if !validJSON(body) {
			raw(string(body))
			return nil
		}
		walkStrings(body, top, nil, false, visit)
		return nil
	}
	if !validJSON(body) {
		return fmt.Errorf("%w: invalid JSON", ErrMalformed)
	}
	if kindOf(body, top) != '{' {
		return fmt.Errorf("%w: top level is not an object", ErrMalformed)
	}
	if api == OpenAIResponses {
		walkResponseObject(body, top, visit)
		return nil
	}
	walkStrings(body, top, nil, true, visit)
	return nil
}

// walkResponseObject walks a Responses response object, whose
// "instructions" echo the request's (Bulwark's canary suffix included): its
// strings are reported as visitEcho.
func walkResponseObject(b []byte, obj vspan, visit func(visitKind, vspan)) {
	it := iterObject(b, obj.s)
	for it.next() {
		k := it.keyRaw()
		if string(k) == "instructions" {
			walkStrings(b, it.v, k, true, func(vk visitKind, s vspan) {
				if vk == visitText {
					vk = visitEcho
				}
				visit(vk, s)
			})
			continue
		}
		walkStrings(b, it.v, k, true, visit)
	}
}

// EditResponse rewrites a response body of api for the client: fn is
// applied to every string FilteredText reads, each separately, and its
// result replaces that string. When fn changes anything, every logprob
// token becomes "" and every logprob bytes array [] (the logprob numbers
// stay), because tokens repeat the text piece by piece and a value split
// over several tokens cannot be redacted token by token. Like EditRequest
// it splices into the original bytes, keeps everything else byte for byte,
// and returns body itself and false when nothing changed. A non-JSON
// Generic body is passed to fn whole.
func EditResponse(api API, body []byte, fn func(text string) string) ([]byte, bool, error) {
	if fn == nil {
		if _, err := FilteredText(api, body); err != nil {
			return nil, false, fmt.Errorf("edit %s response: %w", api, err)
		}
		return body, false, nil
	}
	f := filterEdits{b: body}
	var rawOut *string
	err := eachFiltered(api, body, func(k visitKind, s vspan) {
		if k == visitToken || k == visitBytes {
			f.tokens = append(f.tokens, s)
		}
		if k != visitBytes {
			f.text(s, fn)
		}
	}, func(raw string) {
		nw := fn(raw)
		rawOut = &nw
	})
	if err != nil {
		return nil, false, fmt.Errorf("edit %s response: %w", api, err)
	}
	if rawOut != nil {
		if *rawOut == string(body) {
			return body, false, nil
		}
		return []byte(*rawOut), true, nil
	}
	if !f.changed {
		return body, false, nil
	}
	// Token edits are replaced by blanking: keep only the other patches.
	kept := f.patches[:0]
	for _, p := range f.patches {
		if !inSpans(f.tokens, p) {
			kept = append(kept, p)
		}
	}
	f.patches = kept
	f.blank()
	out, err := applyPatches(body, f.patches)
	if err != nil {
		return nil, false, fmt.Errorf("edit %s response: %w", api, err)
	}
	if !validJSON(out) {
		return nil, false, fmt.Errorf("edit %s response: rewrite produced invalid JSON", api)
	}
	return out, true, nil
}

// inSpans reports whether p lies inside one of spans.
func inSpans(spans []vspan, p patch) bool {
	for _, s := range spans {
		if s.s <= p.s && p.e <= s.e {
			return true
		}
	}
	return false
}

// ResponseAPI picks the API whose shape the answer to a request for path
// has, for answers whose request body was not read (GET, DELETE): stored
// responses (/v1/responses/{id}) and stored chat completions
// (/v1/chat/completions/{id}) have the shapes of their APIs; anything else,
// lists and file contents included, is Generic, whose every string is
// filtered.
func ResponseAPI(path string) API {
	path = strings.TrimRight(path, "/")
	if api := DetectAPI(path); api != Generic {
		return api
	}
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return Generic
	}
	parent, id := path[:i], path[i+1:]
	switch {
	case strings.HasSuffix(parent, "/responses") && strings.HasPrefix(id, "resp"):
		return OpenAIResponses
	case strings.HasSuffix(parent, "/chat/completions") && strings.HasPrefix(id, "chatcmpl"):
		return OpenAIChat
	}
	return Generic
}

// Channel names one incremental text of a stream: the deltas that
// concatenate into one value on the client, such as one choice's content or
// one tool call's arguments. Every channel needs its own redaction stream,
// because a value may be split over its deltas. Field is the member the
// deltas arrive in; Index the choice (OpenAI), output_index (Responses) or
// content block index (Anthropic); Sub the tool call index (OpenAI
// tool_calls) or content_index / summary_index (Responses).
type Channel struct {
	Field      string
	Index, Sub int
}

// The Channel fields of each API's incremental texts.
const (
	FieldText             = "text"              // completions choices[].text; Anthropic text_delta
	FieldContent          = "content"           // chat delta.content
	FieldRefusal          = "refusal"           // chat delta.refusal
	FieldReasoning        = "reasoning"         // chat delta.reasoning (OpenRouter, vLLM)
	FieldReasoningContent = "reasoning_content" // chat delta.reasoning_content (DeepSeek, vLLM)
	FieldArguments        = "arguments"         // chat delta.tool_calls[].function.arguments
	FieldFunctionCall     = "function_call"     // chat delta.function_call.arguments (legacy)
	FieldThinking         = "thinking"          // Anthropic thinking_delta
	FieldPartialJSON      = "partial_json"      // Anthropic input_json_delta
	FieldData             = "data"              // the data of a non-JSON Generic event
	// FieldEcho marks a whole string that echoes the request rather than
	// anything the model wrote: the Responses API's instructions, repeated
	// in its response.* events (with Bulwark's canary suffix).
	FieldEcho = "echo"
)

// FilterEvent rewrites one stream event for the client. fn is called for
// every string of the event the output filter must see, in document order:
// with the delta's Channel for incremental texts (content, refusal and
// reasoning deltas, tool-call argument deltas of every choice; Responses
// *.delta events; Anthropic text, thinking and input_json deltas), and with
// the zero Channel for every other string not on the safe list (see
// SafeKey), which the event carries whole (Responses *.done and snapshot
// events, Anthropic content_block_start, unknown fields), and with FieldEcho
// for whole strings that echo the request. Empty strings are skipped. The string fn returns replaces the text.
//
// When blankLogprobs is set, every logprob token becomes "" and every bytes
// array [] without fn seeing them: in a stream the tokens arrive before the
// text they repeat has been released, so they cannot be checked against it.
// Raw is re-encoded only when something changed.
func FilterEvent(api API, ev Event, blankLogprobs bool, fn func(ch Channel, text string) string) (Event, bool, error) {
	p := ParseEvent(api, ev)
	return p.Filter(blankLogprobs, fn)
}

// Filter is FilterEvent of the event.
func (p *ParsedEvent) Filter(blankLogprobs bool, fn func(ch Channel, text string) string) (Event, bool, error) {
	api, ev, d, err := p.api, p.ev, p.d, p.err
	if err != nil && genericStream(api) {
		if old := string(ev.Data); old != "" {
			if nw := fn(Channel{Field: FieldData}, old); nw != old {
				return withData(ev, []byte(nw)), true, nil
			}
		}
		return ev, false, nil
	}
	if err != nil {
		return ev, false, fmt.Errorf("filter %s event: %w", api, err)
	}
	if len(d) == 0 || d[0] != '{' {
		return ev, false, nil
	}
	f := eventFilter{filterEdits: filterEdits{b: d}, fn: fn, blank: blankLogprobs}
	switch streamKind(api, d, ev.Name) {
	case OpenAIChat, OpenAICompletions:
		f.chatChunk()
	case OpenAIResponses:
		f.responsesEvent(ev.Name)
	case AnthropicMessages:
		f.anthropicEvent()
	default:
		if dl := dialectOf(api); dl != nil {
			dl.filterEvent(&f, ev)
			break
		}
		f.whole(vspan{0, len(d)}, nil)
	}
	if len(f.patches) == 0 {
		return ev, false, nil
	}
	data, err := applyPatches(d, f.patches)
	if err != nil {
		return ev, false, fmt.Errorf("filter %s event: %w", api, err)
	}
	return withData(ev, data), true, nil
}

// eventFilter rewrites one event's JSON.
type eventFilter struct {
	filterEdits
	fn    func(Channel, string) string
	blank bool
	// skip ends the last blanked container: nothing inside it is edited
	// again.
	skip int
	// echo: the strings being filtered whole echo the request (FieldEcho).
	echo bool
}

// whole filters every string of v (held by member key) as whole text.
func (f *eventFilter) whole(v vspan, key []byte) {
	switch kindOf(f.b, v) {
	case '{', '[':
	case '"':
		if !SafeKey(string(key)) { // input, metadata and logprobs are never safe keys
			f.text(v, f.wholeFn)
		}
		return
	default:
		return // numbers, true, false, null
	}
	walkStrings(f.b, v, key, true, func(k visitKind, s vspan) {
		if s.s < f.skip {
			return
		}
		switch {
		case k == visitText:
			f.text(s, f.wholeFn)
		case !f.blank:
			if k == visitToken {
				f.text(s, f.wholeFn)
			}
		case k == visitBytes || f.b[s.s+1] != '"':
			f.patches = append(f.patches, patch{s: s.s, e: s.e, text: blankValue(f.b[s.s])})
			f.skip = s.e
		}
	})
}

func (f *eventFilter) wholeFn(s string) string {
	if f.echo {
		return f.fn(Channel{Field: FieldEcho}, s)
	}
	return f.fn(Channel{}, s)
}

// delta filters the string at v as a delta of ch, or whole when it is not
// a string.
func (f *eventFilter) delta(v vspan, key []byte, ch Channel) {
	if kindOf(f.b, v) != '"' {
		f.whole(v, key)
		return
	}
	old := view(f.b[v.s:v.e])
	if old == "" {
		return
	}
	if nw := f.fn(ch, old); nw != old {
		f.patches = append(f.patches, patch{s: v.s, e: v.e, text: quote(nw)})
	}
}

// chatChunk reads an OpenAI chat or completions chunk: every choice.
func (f *eventFilter) chatChunk() {
	d := f.b
	it := iterObject(d, 0)
	for it.next() {
		if string(it.keyRaw()) != "choices" || kindOf(d, it.v) != '[' {
			f.whole(it.v, it.keyRaw())
			continue
		}
		ct := iterArray(d, it.v.s)
		for pos := 0; ct.next(); pos++ {
			if kindOf(d, ct.v) != '{' {
				f.whole(ct.v, []byte("choices"))
				continue
			}
			f.choice(ct.v, memberInt(d, ct.v, "index", pos))
		}
	}
}

// choice reads one streamed choice.
func (f *eventFilter) choice(c vspan, idx int) {
	d := f.b
	it := iterObject(d, c.s)
	for it.next() {
		k := it.keyRaw()
		switch string(k) {
		case "text":
			f.delta(it.v, k, Channel{Field: FieldText, Index: idx})
		case "delta":
			if kindOf(d, it.v) != '{' {
				f.whole(it.v, k)
				continue
			}
			dt := iterObject(d, it.v.s)
			for dt.next() {
				dk := dt.keyRaw()
				switch string(dk) {
				case "content":
					f.delta(dt.v, dk, Channel{Field: FieldContent, Index: idx})
				case "refusal":
					f.delta(dt.v, dk, Channel{Field: FieldRefusal, Index: idx})
				case "reasoning":
					f.delta(dt.v, dk, Channel{Field: FieldReasoning, Index: idx})
				case "reasoning_content":
					f.delta(dt.v, dk, Channel{Field: FieldReasoningContent, Index: idx})
				case "tool_calls":
					f.toolCalls(dt.v, idx)
				case "function_call":
					f.functionCall(dt.v, dk, Channel{Field: FieldFunctionCall, Index: idx})
				default:
					f.whole(dt.v, dk)
				}
			}
		default:
			f.whole(it.v, k)
		}
	}
}

// toolCalls reads delta.tool_calls: each call's arguments are a channel.
func (f *eventFilter) toolCalls(v vspan, idx int) {
	d := f.b
	if kindOf(d, v) != '[' {
		f.whole(v, []byte("tool_calls"))
		return
	}
	it := iterArray(d, v.s)
	for pos := 0; it.next(); pos++ {
		if kindOf(d, it.v) != '{' {
			f.whole(it.v, []byte("tool_calls"))
			continue
		}
		sub := memberInt(d, it.v, "index", pos)
		ct := iterObject(d, it.v.s)
		for ct.next() {
			k := ct.keyRaw()
			if string(k) == "function" || string(k) == "custom" {
				f.functionCall(ct.v, k, Channel{Field: FieldArguments, Index: idx, Sub: sub})
				continue
			}
			f.whole(ct.v, k)
		}
	}
}

// functionCall reads {"name", "arguments"}: arguments (or a custom tool's
// input) are the channel ch.
func (f *eventFilter) functionCall(v vspan, key []byte, ch Channel) {
	d := f.b
	if kindOf(d, v) != '{' {
		f.whole(v, key)
		return
	}
	it := iterObject(d, v.s)
	for it.next() {
		k := it.keyRaw()
		if string(k) == "arguments" || string(k) == "input" {
			f.delta(it.v, k, ch)
			continue
		}
		f.whole(it.v, k)
	}
}

// responsesEvent reads a Responses stream event: the "delta" of every
// *.delta event (output text, refusal, reasoning, function-call arguments,
// custom tool input, transcripts) is a channel; audio deltas are binary.
func (f *eventFilter) responsesEvent(name string) {
	d := f.b
	top := vspan{0, len(d)}
	typ := memberRaw(d, top, "type")
	if len(typ) == 0 {
		typ = []byte(name)
	}
	deltaCh := bytes.HasSuffix(typ, []byte(".delta")) && string(typ) != "response.audio.delta"
	var ch Channel
	if deltaCh {
		ch.Field = responsesField(typ)
		ch.Index = memberInt(d, top, "output_index", 0)
		for _, sub := range [...]string{"content_index", "summary_index"} {
			if v, ok := member(d, top, sub); ok {
				n, _ := intAt(d, v)
				ch.Sub = int(n)
			}
		}
	}
	it := iterObject(d, 0)
	for it.next() {
		k := it.keyRaw()
		switch {
		case string(k) == "delta" && deltaCh:
			f.delta(it.v, k, ch)
		case string(k) == "delta" && string(typ) == "response.audio.delta":
		case string(k) == "response" && kindOf(d, it.v) == '{':
			rt := iterObject(d, it.v.s)
			for rt.next() {
				rk := rt.keyRaw()
				if string(rk) == "instructions" {
					f.echo = true
					f.whole(rt.v, rk)
					f.echo = false
					continue
				}
				f.whole(rt.v, rk)
			}
		default:
			f.whole(it.v, k)
		}
	}
}

// responsesField names the channel of a Responses delta type without
// allocating for the common ones.
func responsesField(typ []byte) string {
	switch string(typ) {
	case "response.output_text.delta":
		return "response.output_text.delta"
	case "response.refusal.delta":
		return "response.refusal.delta"
	case "response.reasoning_summary_text.delta":
		return "response.reasoning_summary_text.delta"
	case "response.reasoning_text.delta":
		return "response.reasoning_text.delta"
	case "response.function_call_arguments.delta":
		return "response.function_call_arguments.delta"
	}
	return string(typ)
}

// anthropicEvent reads an Anthropic event: text, thinking and input_json
// deltas are channels of their content block.
func (f *eventFilter) anthropicEvent() {
	d := f.b
	idx := memberInt(d, vspan{0, len(d)}, "index", 0)
	it := iterObject(d, 0)
	for it.next() {
		k := it.keyRaw()
		if string(k) != "delta" || kindOf(d, it.v) != '{' {
			f.whole(it.v, k)
			continue
		}
		var field string
		switch string(memberRaw(d, it.v, "type")) {
		case "text_delta":
			field = FieldText
		case "thinking_delta":
			field = FieldThinking
		case "input_json_delta":
			field = FieldPartialJSON
		}
		dt := iterObject(d, it.v.s)
		for dt.next() {
			dk := dt.keyRaw()
			if field != "" && string(dk) == field {
				f.delta(dt.v, dk, Channel{Field: field, Index: idx})
				continue
			}
			f.whole(dt.v, dk)
		}
	}
}

// EventEnds reports which channels an event closes, so that text still
// held for them can be released before it: every channel (all) at the end
// of the stream or on an error (OpenAI [DONE] or an error chunk, Responses
// response.completed, .incomplete, .failed and error, Anthropic
// message_delta, message_stop and error), or the channels of the listed
// indexes (an OpenAI choice with a finish_reason, a Responses *.done event's
// output_index, an Anthropic content_block_stop).
func EventEnds(api API, ev Event) (all bool, idx []int) {
	p := ParseEvent(api, ev)
	return p.Ends()
}

// Ends is EventEnds of the event.
func (p *ParsedEvent) Ends() (all bool, idx []int) {
	api, ev, d, done, err := p.api, p.ev, p.d, p.done, p.err
	if done {
		return true, nil
	}
	if dl := dialectOf(api); dl != nil {
		if err != nil || len(d) > 0 && d[0] != '{' {
			return false, nil
		}
		return dl.ends(ev, d)
	}
	if err != nil || len(d) == 0 {
		return ev.Name == "message_stop", nil
	}
	if d[0] != '{' {
		return false, nil
	}
	top := vspan{0, len(d)}
	switch streamKind(api, d, ev.Name) {
	case OpenAIChat, OpenAICompletions:
		it := iterObject(d, 0)
		for it.next() {
			switch string(it.keyRaw()) {
			case "error":
				if c := kindOf(d, it.v); c != 'n' && c != 'f' {
					return true, nil
				}
			case "choices":
				ct := iterArray(d, it.v.s)
				for pos := 0; ct.next(); pos++ {
					fr, ok := member(d, ct.v, "finish_reason")
					if !ok || kindOf(d, fr) != '"' || fr.e-fr.s <= 2 {
						continue
					}
					idx = append(idx, memberInt(d, ct.v, "index", pos))
				}
			}
		}
		return false, idx
	case OpenAIResponses:
		typ := memberRaw(d, top, "type")
		if len(typ) == 0 {
			typ = []byte(ev.Name)
		}
		switch string(typ) {
		case "response.completed", "response.incomplete", "response.failed", "error":
			return true, nil
		}
		if bytes.HasSuffix(typ, []byte(".done")) {
			if v, ok := member(d, top, "output_index"); ok {
				if n, ok := intAt(d, v); ok {
					return false, []int{int(n)}
				}
			}
			return true, nil
		}
	case AnthropicMessages:
		typ := memberRaw(d, top, "type")
		if len(typ) == 0 {
			typ = []byte(ev.Name)
		}
		switch string(typ) {
		case "message_delta", "message_stop", "error":
			return true, nil
		case "content_block_stop":
			return false, []int{memberInt(d, top, "index", 0)}
		}
	}
	return false, nil
}

// ChannelEvent synthesises an event carrying text on channel ch, modelled
// on template (the last event of that channel): Bulwark releases the text it
// held for a channel this way before the event that closes it. Only the
// template's identifying fields are kept (OpenAI id, object, created,
// model, system_fingerprint; Responses type, item_id and indexes, with
// every other string blanked; Anthropic's index); names and ids of tool
// calls are not repeated, since clients concatenate what deltas carry.
func ChannelEvent(api API, template Event, ch Channel, text string) (Event, error) {
	if ch.Field == FieldData {
		return withData(template, []byte(text)), nil
	}
	if dl := dialectOf(api); dl != nil {
		return dl.channelEvent(template, ch, text)
	}
	d, _, err := eventJSON(template)
	if err != nil || len(d) == 0 || d[0] != '{' {
		return Event{}, fmt.Errorf("synthesise %s event: template is not a JSON object: %w", api, ErrMalformed)
	}
	switch streamKind(api, d, template.Name) {
	case OpenAIChat, OpenAICompletions:
		out := make([]byte, 0, len(text)+160)
		out = append(out, '{')
		it := iterObject(d, 0)
		for it.next() {
			switch string(it.keyRaw()) {
			case "id", "object", "created", "model", "system_fingerprint":
				out = append(out, d[it.ks:it.ke]...)
				out = append(out, ':')
				out = append(out, d[it.v.s:it.v.e]...)
				out = append(out, ',')
			}
		}
		out = append(out, `"choices":[{"index":`...)
		out = strconv.AppendInt(out, int64(ch.Index), 10)
		switch ch.Field {
		case FieldText:
			out = append(out, `,"text":`...)
			out = appendQuote(out, text)
			out = append(out, `,"logprobs":null`...)
		case FieldArguments:
			out = append(out, `,"delta":{"tool_calls":[{"index":`...)
			out = strconv.AppendInt(out, int64(ch.Sub), 10)
			out = append(out, `,"function":{"arguments":`...)
			out = appendQuote(out, text)
			out = append(out, `}}]}`...)
		case FieldFunctionCall:
			out = append(out, `,"delta":{"function_call":{"arguments":`...)
			out = appendQuote(out, text)
			out = append(out, `}}`...)
		default:
			out = append(out, `,"delta":{`...)
			out = appendQuote(out, ch.Field)
			out = append(out, ':')
			out = appendQuote(out, text)
			out = append(out, '}')
		}
		out = append(out, `,"finish_reason":null}]}`...)
		return withData(template, out), nil
	case OpenAIResponses:
		var ps []patch
		hasDelta := false
		it := iterObject(d, 0)
		for it.next() {
			k := it.keyRaw()
			switch string(k) {
			case "delta":
				hasDelta = true
				ps = append(ps, patch{s: it.v.s, e: it.v.e, text: quote(text)})
			case "logprobs":
				ps = append(ps, patch{s: it.v.s, e: it.v.e, text: []byte("[]")})
			default:
				walkStrings(d, it.v, k, true, func(_ visitKind, s vspan) {
					ps = append(ps, patch{s: s.s, e: s.e, text: blankValue(d[s.s])})
				})
			}
		}
		if !hasDelta {
			return Event{}, fmt.Errorf("synthesise %s event: template has no delta: %w", api, ErrNoText)
		}
		data, err := applyPatches(d, ps)
		if err != nil {
			return Event{}, fmt.Errorf("synthesise %s event: %w", api, err)
		}
		return withData(template, data), nil
	case AnthropicMessages:
		var dtyp string
		switch ch.Field {
		case FieldThinking:
			dtyp = "thinking_delta"
		case FieldPartialJSON:
			dtyp = "input_json_delta"
		default:
			dtyp = "text_delta"
		}
		out := append([]byte(`{"type":"content_block_delta","index":`), strconv.Itoa(ch.Index)...)
		out = append(out, `,"delta":{"type":"`...)
		out = append(out, dtyp...)
		out = append(out, `",`...)
		out = appendQuote(out, ch.Field)
		out = append(out, ':')
		out = appendQuote(out, text)
		out = append(out, "}}"...)
		return withData(Event{Name: "content_block_delta", ID: template.ID}, out), nil
	}
	return Event{}, fmt.Errorf("synthesise %s event: %w", api, ErrNoText)
}
