package llmapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Message is one turn of text the model will read. Policy scans Content for
// injections, PII and secrets; Role lets it weigh system prompts, user input
// and tool output differently.
type Message struct {
	// Role is the sender as the API names it ("system", "developer",
	// "user", "assistant"), or "tool" for tool output (OpenAI tool
	// messages, Anthropic tool_result blocks, Responses
	// function_call_output items).
	Role string
	// Content is the text of string content, or every text part of the
	// turn joined with "\n". Tool-call arguments sent back in the history
	// are included, because the model reads them too.
	Content string
}

// ToolCall is a call of a tool or function by the model, in a response or
// in the history of a request. Policy uses it to allow or deny tools.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string // JSON text, possibly partial in stream deltas
}

// Tool is a tool or function a request declares: what the model is offered
// to call. Policy allows or denies tools by Name; Description is the text the
// model reads about it (and the detectors scan, as text outside the
// conversation).
type Tool struct {
	// Name is function.name or custom.name (OpenAI chat), name (Responses,
	// Anthropic, legacy functions), else the type of a built-in tool
	// without a name (web_search_preview, code_interpreter).
	Name string
	// Type is the declared type ("function", "custom", a built-in type),
	// "" when the declaration has none (Anthropic client tools).
	Type        string
	Description string
}

// RoleTool is the Message role of tool output (OpenAI tool messages and
// legacy function messages, Anthropic tool_result blocks, Responses
// function_call_output items): data a tool returned, which the model reads
// but nobody vouches for. The doors scan it apart from the prompt
// (ToolResultText), so that policy can be stricter with it.
const RoleTool = "tool"

// Request is what policy needs to know about an LLM request body.
type Request struct {
	API API
	// Provider names who serves the API (ProviderOpenAI, ProviderBedrock,
	// …), set from the path by ApplyPath; "" when unknown.
	Provider string
	Model    string
	Stream   bool
	// MaxTokens is max_tokens, max_completion_tokens or max_output_tokens
	// (whichever the API uses), 0 when absent, null or negative, and
	// saturated at math.MaxInt64 for absurd values such as 1e400.
	MaxTokens int64
	// Choices is how many answers the model generates, each up to
	// MaxTokens: n (OpenAI chat and completions) or best_of (completions,
	// generated server-side), whichever is larger; 1 when absent or not a
	// positive number. A token reservation is Choices × MaxTokens.
	Choices int64
	// IncludeUsage is stream_options.include_usage (OpenAI): without it a
	// streamed response reports no token usage.
	IncludeUsage bool
	// Messages holds every text the model will read: the conversation in
	// the order the API presents it to the model (system prompt first,
	// then the turns), then one RoleOther message with every other string
	// of the body outside the safe list (see Skipped). Generic JSON bodies
	// yield one "user" message per string value; text bodies yield the
	// whole body.
	Messages []Message
	// Tools are the tools or functions the request declares, in order.
	Tools []Tool
	// ToolCalls are the tool calls present in the conversation history.
	ToolCalls []ToolCall

	uncapped bool // see Capped
}

// ParseRequest reads a request body of api. A body of a known API that is
// not a JSON object yields an error wrapping ErrMalformed; fields of
// unexpected types are ignored, since the upstream rejects such requests
// anyway and policy should still see what can be read. Generic bodies never
// fail.
func ParseRequest(api API, body []byte) (*Request, error) {
	sc := reqScanner{b: body, meta: true}
	if err := sc.scan(api); err != nil {
		return nil, fmt.Errorf("parse %s request: %w", api, err)
	}
	return &Request{
		API:          api,
		Model:        sc.model,
		Stream:       sc.stream,
		MaxTokens:    sc.maxTokens,
		Choices:      max(sc.choices, 1),
		IncludeUsage: sc.includeUsage,
		Messages:     sc.texts.messages(body),
		Tools:        sc.tools,
		ToolCalls:    sc.toolCalls,
		uncapped:     sc.uncapped,
	}, nil
}

// Capped reports whether EditRequest's ClampMaxTokens caps this request:
// its API has a token cap (Clamps), and the body is of a shape whose cap
// field is known (an InvokeModel body of an unknown model family is not).
func (r *Request) Capped() bool { return Clamps(r.API) && !r.uncapped }

// textKind says how a text span is stored in the body.
type textKind uint8

const (
	textString  textKind = iota // a JSON string token
	textJSON                    // a JSON value read as its compact text (Anthropic tool_use input)
	textRaw                     // raw bytes of a non-JSON body
	textDataURL                 // a JSON string holding a data: URL whose payload is text
	textBase64                  // a JSON string holding base64 whose payload is text
	textTurn                    // bytes [a, z) of a JSON string's text: one turn of a chat-template prompt
)

// textSpan locates one text the model reads. Spans with the same group
// form one Message.
type textSpan struct {
	role  string
	group int
	v     vspan
	kind  textKind
	a, z  int    // textTurn: the turn's range in the string's text
	turn  string // textTurn: the turn's text, sharing the prompt's decoded bytes
}

// textCollector gathers text spans. Reading (ParseRequest, ParseResponse)
// and rewriting (EditRequest, EditResponse) share it, which is what
// guarantees that edits reach exactly the texts policy saw.
type textCollector struct {
	spans []textSpan
	group int
	role  string
	open  bool
}

// boundary ends the current message: the next text starts a new one.
func (c *textCollector) boundary() { c.open = false }

func (c *textCollector) add(role string, v vspan, kind textKind) {
	if !c.open || role != c.role {
		c.group++
		c.open, c.role = true, role
	}
	c.spans = append(c.spans, textSpan{role: role, group: c.group, v: v, kind: kind})
}

// addString adds v if it is a string.
func (c *textCollector) addString(b []byte, role string, v vspan) {
	if kindOf(b, v) == '"' {
		c.add(role, v, textString)
	}
}

// spanText returns the text of one span.
func spanText(b []byte, t textSpan) string {
	switch t.kind {
	case textString:
		return unquote(b[t.v.s:t.v.e])
	case textJSON:
		return compactJSON(b[t.v.s:t.v.e])
	case textDataURL:
		s, _ := dataURLText(unquote(b[t.v.s:t.v.e]))
		return s
	case textBase64:
		s, _ := decodeText(b[t.v.s+1 : t.v.e-1])
		return s
	case textTurn:
		return t.turn
	default:
		return string(b[t.v.s:t.v.e])
	}
}

func compactJSON(raw []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return string(raw)
	}
	return buf.String()
}

// messages joins the spans of each group into one Message.
func (c *textCollector) messages(b []byte) []Message {
	if len(c.spans) == 0 {
		return nil
	}
	out := make([]Message, 0, c.group)
	for i := 0; i < len(c.spans); {
		j := i + 1
		for j < len(c.spans) && c.spans[j].group == c.spans[i].group {
			j++
		}
		out = append(out, Message{Role: c.spans[i].role, Content: joinSpans(b, c.spans[i:j])})
		i = j
	}
	return out
}

// joinSpans returns the texts of spans joined with "\n".
func joinSpans(b []byte, spans []textSpan) string {
	switch len(spans) {
	case 0:
		return ""
	case 1:
		return spanText(b, spans[0])
	}
	var sb strings.Builder
	for i, t := range spans {
		if i > 0 {
			sb.WriteByte('\n')
		}
		sb.WriteString(spanText(b, t))
	}
	return sb.String()
}

// joined returns every span's text joined with "\n".
func (c *textCollector) joined(b []byte) string { return joinSpans(b, c.spans) }

// topKey indexes the top-level request fields this package reads.
type topKey uint8

const (
	kMessages topKey = iota
	kSystem
	kPrompt
	kSuffix
	kInput
	kInstructions
	kTools
	kFunctions
	kModel
	kStream
	kStreamOptions
	kMaxTokens
	kMaxCompletionTokens
	kMaxOutputTokens
	kN
	kBestOf
	numTopKeys
	kNone = numTopKeys
)

func topKeyOf(k []byte) topKey {
	switch string(k) {
	case "messages":
		return kMessages
	case "system":
		return kSystem
	case "prompt":
		return kPrompt
	case "suffix":
		return kSuffix
	case "input":
		return kInput
	case "instructions":
		return kInstructions
	case "tools":
		return kTools
	case "functions":
		return kFunctions
	case "model":
		return kModel
	case "stream":
		return kStream
	case "stream_options":
		return kStreamOptions
	case "max_tokens":
		return kMaxTokens
	case "max_completion_tokens":
		return kMaxCompletionTokens
	case "max_output_tokens":
		return kMaxOutputTokens
	case "n":
		return kN
	case "best_of":
		return kBestOf
	}
	return kNone
}

// topFields records every occurrence of the interesting top-level members.
type topFields struct {
	obj     vspan
	members int
	f       [numTopKeys][]vspan
}

// last returns the last occurrence of k, the one Python and JavaScript
// parsers keep.
func (t *topFields) last(k topKey) (vspan, bool) {
	if n := len(t.f[k]); n > 0 {
		return t.f[k][n-1], true
	}
	return vspan{}, false
}

// readTop validates b as a JSON object and records its top-level members.
func readTop(b []byte) (topFields, error) {
	var t topFields
	if !validJSON(b) {
		return t, fmt.Errorf("%w: invalid JSON", ErrMalformed)
	}
	t.obj = trimSpan(b)
	if kindOf(b, t.obj) != '{' {
		return t, fmt.Errorf("%w: top level is not an object", ErrMalformed)
	}
	it := iterObject(b, t.obj.s)
	for it.next() {
		if k := topKeyOf(it.keyRaw()); k != kNone {
			t.f[k] = append(t.f[k], it.v)
		}
	}
	t.members = it.n
	return t, nil
}

// member returns the last member named name of the object at obj.
func member(b []byte, obj vspan, name string) (vspan, bool) {
	var v vspan
	found := false
	it := iterObject(b, obj.s)
	for it.next() {
		if string(it.keyRaw()) == name {
			v, found = it.v, true
		}
	}
	return v, found
}

// memberRaw returns the content of the string member name of obj for
// comparison (see rawStrAt), or nil.
func memberRaw(b []byte, obj vspan, name string) []byte {
	if v, ok := member(b, obj, name); ok {
		return rawStrAt(b, v)
	}
	return nil
}

// roleAt returns the role string of a message, without allocating for the
// roles the APIs define.
func roleAt(b []byte, obj vspan) string {
	v, ok := member(b, obj, "role")
	if !ok || kindOf(b, v) != '"' {
		return ""
	}
	switch string(b[v.s:v.e]) {
	case `"user"`:
		return "user"
	case `"assistant"`:
		return "assistant"
	case `"system"`:
		return "system"
	case `"developer"`:
		return "developer"
	case `"tool"`:
		return "tool"
	case `"function"`:
		return "function"
	}
	return unquote(b[v.s:v.e])
}

// memberString returns the string member name of obj, or "".
func memberString(b []byte, obj vspan, name string) string {
	if v, ok := member(b, obj, name); ok {
		s, _ := strAt(b, v)
		return s
	}
	return ""
}

// memberInt returns the integer member name of obj (see intAt), or def
// when it is absent or not a number.
func memberInt(b []byte, obj vspan, name string, def int) int {
	if v, ok := member(b, obj, name); ok {
		if n, ok := intAt(b, v); ok {
			return int(n)
		}
	}
	return def
}

// reqScanner walks a request body once per API shape, collecting text spans
// and, when meta is set, the fields ParseRequest reports.
type reqScanner struct {
	b     []byte
	meta  bool
	top   topFields
	texts textCollector

	model        string
	stream       bool
	includeUsage bool
	maxTokens    int64
	uncapped     bool
	choices      int64
	tools        []Tool
	toolCalls    []ToolCall
}

func (r *reqScanner) scan(api API) error {
	if api == Generic || !api.known() {
		r.generic()
		return nil
	}
	top, err := readTop(r.b)
	if err != nil {
		return err
	}
	r.top = top
	if r.meta {
		r.readMeta(api)
	}
	switch api {
	case OpenAIChat:
		r.chat()
	case OpenAICompletions, OpenAIEmbeddings:
		r.promptLike(api)
	case OpenAIResponses:
		r.responses()
	case AnthropicMessages:
		r.anthropic()
	default:
		if d := dialectOf(api); d != nil {
			d.scanRequest(r)
		}
	}
	r.sweep()
	return nil
}

// known reports whether api is one of the defined constants; unknown values
// are treated as Generic so that their text is still visible.
func (a API) known() bool {
	switch a {
	case OpenAIChat, OpenAICompletions, OpenAIResponses, OpenAIEmbeddings, AnthropicMessages, Generic:
		return true
	}
	return dialectOf(a) != nil
}

// maxTokenKeys lists, per API, the fields that bound the output length, in
// the order ParseRequest consults them.
func maxTokenKeys(api API) []topKey {
	switch api {
	case OpenAIChat:
		return []topKey{kMaxTokens, kMaxCompletionTokens}
	case OpenAICompletions, AnthropicMessages:
		return []topKey{kMaxTokens}
	case OpenAIResponses:
		return []topKey{kMaxOutputTokens}
	case Generic:
		return []topKey{kMaxTokens, kMaxCompletionTokens, kMaxOutputTokens}
	}
	return nil
}

func (r *reqScanner) readMeta(api API) {
	b, t := r.b, &r.top
	if v, ok := t.last(kModel); ok {
		r.model, _ = strAt(b, v)
	}
	if v, ok := t.last(kStream); ok {
		r.stream = boolAt(b, v)
	}
	if v, ok := t.last(kStreamOptions); ok {
		if u, ok := member(b, v, "include_usage"); ok {
			r.includeUsage = boolAt(b, u)
		}
	}
	for _, k := range maxTokenKeys(api) {
		v, ok := t.last(k)
		if !ok {
			continue
		}
		if n, ok := intAt(b, v); ok {
			r.maxTokens = max(n, 0)
			break
		}
	}
	if api == OpenAIChat || api == OpenAICompletions || api == Generic {
		for _, k := range []topKey{kN, kBestOf} {
			if v, ok := t.last(k); ok {
				if n, ok := intAt(b, v); ok && n > r.choices {
					r.choices = n
				}
			}
		}
	}
	for _, k := range []topKey{kTools, kFunctions} {
		for _, v := range t.f[k] {
			it := iterArray(b, v.s)
			for it.next() {
				if t := toolDef(b, it.v); t.Name != "" {
					r.tools = append(r.tools, t)
				}
			}
		}
	}
}

// toolDef reads one declared tool: its name is function.name or
// custom.name (OpenAI chat), name (Responses, Anthropic, legacy functions),
// else the type of a built-in tool; its description is beside the name.
func toolDef(b []byte, tool vspan) Tool {
	var t Tool
	var name, nested, desc, nestedDesc string
	it := iterObject(b, tool.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "name":
			name, _ = strAt(b, it.v)
		case "description":
			desc, _ = strAt(b, it.v)
		case "function", "custom":
			if s := memberString(b, it.v, "name"); s != "" {
				nested = s
				nestedDesc = memberString(b, it.v, "description")
			}
		case "type":
			t.Type, _ = strAt(b, it.v)
		}
	}
	switch {
	case nested != "":
		t.Name, t.Description = nested, nestedDesc
	case name != "":
		t.Name, t.Description = name, desc
	default:
		t.Name = t.Type
	}
	return t
}

func (r *reqScanner) addToolCall(tc ToolCall) {
	if r.meta {
		r.toolCalls = append(r.toolCalls, tc)
	}
}

// generic reads any body: every string value of JSON, or the whole text.
func (r *reqScanner) generic() {
	b := r.b
	v := trimSpan(b)
	if v.s == v.e {
		return
	}
	if !validJSON(b) {
		r.texts.add("user", vspan{0, len(b)}, textRaw)
		return
	}
	eachMemberString(b, v, func(key []byte, s vspan) {
		r.texts.boundary()
		r.addValue("user", key, s)
	})
	if r.meta && b[v.s] == '{' {
		if top, err := readTop(b); err == nil {
			r.top = top
			r.readMeta(Generic)
		}
	}
}

// chat reads OpenAI chat messages: string or part content, tool calls.
func (r *reqScanner) chat() {
	b := r.b
	for _, ms := range r.top.f[kMessages] {
		it := iterArray(b, ms.s)
		for it.next() {
			if kindOf(b, it.v) != '{' {
				continue
			}
			r.texts.boundary()
			role := roleAt(b, it.v)
			mt := iterObject(b, it.v.s)
			for mt.next() {
				switch string(mt.keyRaw()) {
				case "content":
					r.parts(role, mt.v)
				case "tool_calls":
					tc := iterArray(b, mt.v.s)
					for tc.next() {
						r.chatToolCall(role, tc.v)
					}
				case "function_call":
					r.chatToolCall(role, mt.v)
				}
			}
		}
	}
}

// parts reads content that is a string or an array of parts; each part's
// "text" (text, input_text, output_text) and "refusal" strings are text.
func (r *reqScanner) parts(role string, v vspan) {
	b := r.b
	switch kindOf(b, v) {
	case '"':
		r.texts.add(role, v, textString)
	case '[':
		it := iterArray(b, v.s)
		for it.next() {
			switch kindOf(b, it.v) {
			case '"':
				r.texts.add(role, it.v, textString)
			case '{':
				pt := iterObject(b, it.v.s)
				for pt.next() {
					switch string(pt.keyRaw()) {
					case "text", "refusal":
						r.texts.addString(b, role, pt.v)
					}
				}
			}
		}
	}
}

// chatToolCall reads {"id", "function": {"name", "arguments"}} (also
// "custom": {"name", "input"}) or a legacy function_call {"name",
// "arguments"}; the arguments are text the model reads.
func (r *reqScanner) chatToolCall(role string, v vspan) {
	b := r.b
	if kindOf(b, v) != '{' {
		return
	}
	var tc ToolCall
	readFn := func(fn vspan) {
		it := iterObject(b, fn.s)
		for it.next() {
			switch string(it.keyRaw()) {
			case "name":
				tc.Name, _ = strAt(b, it.v)
			case "arguments", "input":
				if s, ok := strAt(b, it.v); ok {
					tc.Arguments = s
					r.texts.add(role, it.v, textString)
				}
			}
		}
	}
	it := iterObject(b, v.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "id":
			tc.ID, _ = strAt(b, it.v)
		case "function", "custom":
			readFn(it.v)
		}
	}
	if tc.Name == "" && tc.Arguments == "" {
		readFn(v) // legacy function_call
	}
	r.addToolCall(tc)
}

// promptLike reads completions "prompt" and "suffix" and embeddings
// "input": a string or an array of strings (token arrays are skipped).
func (r *reqScanner) promptLike(api API) {
	b := r.b
	keys := []topKey{kPrompt, kSuffix}
	if api == OpenAIEmbeddings {
		keys = []topKey{kInput}
	}
	for _, k := range keys {
		for _, v := range r.top.f[k] {
			switch kindOf(b, v) {
			case '"':
				r.texts.boundary()
				r.texts.add("user", v, textString)
			case '[':
				it := iterArray(b, v.s)
				for it.next() {
					if kindOf(b, it.v) == '"' {
						r.texts.boundary()
						r.texts.add("user", it.v, textString)
					}
				}
			}
		}
	}
}

// responses reads OpenAI Responses "instructions", "input" items and
// prompt template variables.
func (r *reqScanner) responses() {
	b := r.b
	for _, v := range r.top.f[kInstructions] {
		r.responsesInput(v, "system")
	}
	for _, v := range r.top.f[kPrompt] {
		if vars, ok := member(b, v, "variables"); ok {
			it := iterObject(b, vars.s)
			for it.next() {
				r.texts.boundary()
				switch kindOf(b, it.v) {
				case '"':
					r.texts.add("user", it.v, textString)
				case '{':
					if t, ok := member(b, it.v, "text"); ok {
						r.texts.addString(b, "user", t)
					}
				}
			}
		}
	}
	for _, v := range r.top.f[kInput] {
		r.responsesInput(v, "user")
	}
}

func (r *reqScanner) responsesInput(v vspan, role string) {
	b := r.b
	switch kindOf(b, v) {
	case '"':
		r.texts.boundary()
		r.texts.add(role, v, textString)
	case '[':
		it := iterArray(b, v.s)
		for it.next() {
			r.texts.boundary()
			r.responsesItem(it.v, role)
		}
	}
}

// responsesItem reads one input item: a message (content string or parts),
// a function_call (arguments), a function_call_output (output), or a bare
// text part.
func (r *reqScanner) responsesItem(v vspan, defRole string) {
	b := r.b
	switch kindOf(b, v) {
	case '"':
		r.texts.add(defRole, v, textString)
		return
	case '{':
	default:
		return
	}
	typ := memberString(b, v, "type")
	switch typ {
	case "function_call", "custom_tool_call":
		var tc ToolCall
		var id string
		it := iterObject(b, v.s)
		for it.next() {
			switch string(it.keyRaw()) {
			case "call_id":
				tc.ID, _ = strAt(b, it.v)
			case "id":
				id, _ = strAt(b, it.v)
			case "name":
				tc.Name, _ = strAt(b, it.v)
			case "arguments", "input":
				if s, ok := strAt(b, it.v); ok {
					tc.Arguments = s
					r.texts.add("assistant", it.v, textString)
				}
			}
		}
		if tc.ID == "" {
			tc.ID = id
		}
		r.addToolCall(tc)
	case "function_call_output", "custom_tool_call_output":
		if o, ok := member(b, v, "output"); ok {
			r.parts("tool", o)
		}
	case "", "message":
		role := roleAt(b, v)
		if role == "" {
			role = defRole
		}
		it := iterObject(b, v.s)
		for it.next() {
			if string(it.keyRaw()) == "content" {
				r.parts(role, it.v)
			}
		}
	case "input_text", "output_text", "text":
		if t, ok := member(b, v, "text"); ok {
			r.texts.addString(b, defRole, t)
		}
	}
}

// anthropic reads the system prompt and the messages' content blocks.
func (r *reqScanner) anthropic() {
	b := r.b
	for _, v := range r.top.f[kSystem] {
		r.texts.boundary()
		r.anthropicBlocks("system", v, 0)
	}
	for _, ms := range r.top.f[kMessages] {
		it := iterArray(b, ms.s)
		for it.next() {
			if kindOf(b, it.v) != '{' {
				continue
			}
			r.texts.boundary()
			role := roleAt(b, it.v)
			mt := iterObject(b, it.v.s)
			for mt.next() {
				if string(mt.keyRaw()) == "content" {
					r.anthropicBlocks(role, mt.v, 0)
				}
			}
		}
	}
}

// anthropicBlocks reads string content or content blocks: text, tool_use
// input (as JSON text), tool_result content (role "tool") and plain-text
// documents. Nested content (tool results, documents) is read one level
// deep, which is all the API allows, so hostile nesting cannot make the
// walk quadratic.
func (r *reqScanner) anthropicBlocks(role string, v vspan, depth int) {
	b := r.b
	switch kindOf(b, v) {
	case '"':
		r.texts.add(role, v, textString)
		return
	case '[':
	default:
		return
	}
	it := iterArray(b, v.s)
	for it.next() {
		blk := it.v
		if kindOf(b, blk) != '{' {
			continue
		}
		switch memberString(b, blk, "type") {
		case "text":
			bt := iterObject(b, blk.s)
			for bt.next() {
				if string(bt.keyRaw()) == "text" {
					r.texts.addString(b, role, bt.v)
				}
			}
		case "tool_use", "server_tool_use":
			var tc ToolCall
			bt := iterObject(b, blk.s)
			for bt.next() {
				switch string(bt.keyRaw()) {
				case "id":
					tc.ID, _ = strAt(b, bt.v)
				case "name":
					tc.Name, _ = strAt(b, bt.v)
				case "input":
					r.texts.add(role, bt.v, textJSON)
					if r.meta {
						tc.Arguments = compactJSON(b[bt.v.s:bt.v.e])
					}
				}
			}
			r.addToolCall(tc)
		case "tool_result":
			bt := iterObject(b, blk.s)
			for bt.next() {
				if string(bt.keyRaw()) == "content" && depth == 0 {
					r.anthropicBlocks("tool", bt.v, depth+1)
				}
			}
		case "document":
			if src, ok := member(b, blk, "source"); ok {
				switch memberString(b, src, "type") {
				case "text":
					if d, ok := member(b, src, "data"); ok {
						r.texts.addString(b, role, d)
					}
				case "content":
					if c, ok := member(b, src, "content"); ok && depth == 0 {
						r.anthropicBlocks(role, c, depth+1)
					}
				}
			}
		}
	}
}

// PromptText is the text the detectors read from a request as the prompt:
// the content of every message whose role scan accepts (every role when
// scan is nil), joined with "\n", and always the RoleOther message, which a
// role filter cannot turn off. Tool output (RoleTool, and legacy "function"
// messages) is not part of it: ToolResultText holds it, scanned apart. Both
// Envoy doors derive the scanned texts from these two, so the same body gets
// the same signals whichever door it came through.
func (r *Request) PromptText(scan func(role string) bool) string {
	return r.joinText(func(m Message) bool {
		return !toolRole(m.Role) && (scan == nil || m.Role == RoleOther || scan(m.Role))
	})
}

// ToolResultText is the text of the tool results the request carries
// (RoleTool and legacy "function" messages) that scan accepts, joined with
// "\n": untrusted data the model will read, which the detectors scan apart
// from the prompt (input.signals.tool_results).
func (r *Request) ToolResultText(scan func(role string) bool) string {
	return r.joinText(func(m Message) bool {
		return toolRole(m.Role) && (scan == nil || scan(RoleTool))
	})
}

// toolRole reports whether role is tool output.
func toolRole(role string) bool { return role == RoleTool || role == "function" }

// joinText joins the non-empty contents of the messages keep accepts.
func (r *Request) joinText(keep func(Message) bool) string {
	n, count := 0, 0
	var only string
	for _, m := range r.Messages {
		if m.Content != "" && keep(m) {
			n += len(m.Content) + 1
			count++
			only = m.Content
		}
	}
	if count <= 1 {
		return only // no copy: a long prompt is often one message
	}
	var b strings.Builder
	b.Grow(n) // one allocation, not a doubling series, for a multi-MiB prompt
	for _, m := range r.Messages {
		if m.Content == "" || !keep(m) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(m.Content)
	}
	return b.String()
}
