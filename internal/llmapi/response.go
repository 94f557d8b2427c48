package llmapi

import (
	"fmt"
)

// Usage is the token usage an upstream reports, normalised across APIs so
// that rate limits and budgets can charge it. Anthropic's input_tokens and
// output_tokens and the Responses API's input_tokens and output_tokens map
// to PromptTokens and CompletionTokens; TotalTokens is reported or, when
// absent, their sum.
//
// CachedTokens are input tokens served from the provider's prompt cache,
// counted in PromptTokens too: OpenAI's prompt_tokens_details.cached_tokens
// and the Responses API's input_tokens_details.cached_tokens (already part
// of their input counts), Anthropic's cache_read_input_tokens (which its
// input_tokens leaves out: they are added to PromptTokens, as are
// cache_creation_input_tokens, so PromptTokens is every input token the
// model read).
type Usage struct {
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
	CachedTokens     int64
}

// Merge folds the usage carried by one stream event into u, which
// accumulates the whole stream. Upstreams report running totals, not
// increments (Anthropic's message_delta output_tokens is cumulative; OpenAI
// sends one final usage chunk), so each non-zero field of d replaces the
// field of u, and TotalTokens becomes the larger of the reported total and
// PromptTokens+CompletionTokens. A nil d changes nothing.
func (u *Usage) Merge(d *Usage) {
	if u == nil || d == nil {
		return
	}
	if d.PromptTokens > 0 {
		u.PromptTokens = d.PromptTokens
	}
	if d.CompletionTokens > 0 {
		u.CompletionTokens = d.CompletionTokens
	}
	if d.CachedTokens > 0 {
		u.CachedTokens = d.CachedTokens
	}
	u.TotalTokens = max(d.TotalTokens, u.PromptTokens+u.CompletionTokens)
}

// Response is what policy needs to know about a complete (non-streamed)
// response body.
type Response struct {
	Model string
	// ID is the answer's id (OpenAI, Responses and Anthropic "id"), for
	// telemetry (gen_ai.response.id).
	ID string
	// Text is the output text: per choice (OpenAI chat, completions), per
	// output_text part (Responses) or per text block (Anthropic), joined
	// with "\n". Generic JSON yields every string value; text bodies the
	// whole body.
	Text string
	// FinishReason is the first choice's finish_reason (OpenAI), the
	// response status (Responses) or stop_reason (Anthropic).
	FinishReason string
	ToolCalls    []ToolCall
	// Usage is nil when the body reports none.
	Usage *Usage
}

// ParseResponse reads a response body of api. A body of a known API that
// is not a JSON object yields an error wrapping ErrMalformed; Generic bodies
// never fail.
func ParseResponse(api API, body []byte) (*Response, error) {
	sc := respScanner{b: body, meta: true}
	if err := sc.scan(api); err != nil {
		return nil, fmt.Errorf("parse %s response: %w", api, err)
	}
	return &Response{
		Model:        sc.model,
		ID:           sc.id,
		Text:         sc.texts.joined(body),
		FinishReason: sc.finish,
		ToolCalls:    sc.toolCalls,
		Usage:        sc.usage,
	}, nil
}

// respScanner walks a response body, collecting the output text spans and,
// when meta is set, the fields ParseResponse reports.
type respScanner struct {
	b     []byte
	meta  bool
	texts textCollector

	model     string
	id        string
	finish    string
	finishSet bool
	toolCalls []ToolCall
	usage     *Usage
}

func (r *respScanner) scan(api API) error {
	b := r.b
	if api == Generic || !api.known() {
		r.generic()
		return nil
	}
	if !validJSON(b) {
		return fmt.Errorf("%w: invalid JSON", ErrMalformed)
	}
	top := trimSpan(b)
	if kindOf(b, top) != '{' {
		return fmt.Errorf("%w: top level is not an object", ErrMalformed)
	}
	if d := dialectOf(api); d != nil {
		d.scanResponse(r, top)
		return nil
	}
	r.object(api, top)
	return nil
}

// object reads the response object at top, which may be nested (the
// "response" of a Responses stream event).
func (r *respScanner) object(api API, top vspan) {
	b := r.b
	it := iterObject(b, top.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "model":
			r.model, _ = strAt(b, it.v)
		case "id":
			if r.meta {
				r.id, _ = strAt(b, it.v)
			}
		case "usage":
			if r.meta {
				r.usage = readUsage(b, it.v)
			}
		case "choices":
			if api == OpenAIChat || api == OpenAICompletions {
				r.choices(it.v)
			}
		case "output":
			if api == OpenAIResponses {
				r.output(it.v)
			}
		case "status":
			if api == OpenAIResponses {
				r.finish, _ = strAt(b, it.v)
			}
		case "content":
			if api == AnthropicMessages {
				r.anthropicContent(it.v)
			}
		case "stop_reason":
			if api == AnthropicMessages {
				r.finish, _ = strAt(b, it.v)
			}
		}
	}
}

// readUsage reads a usage object in any API's vocabulary; nil when v is
// not an object.
func readUsage(b []byte, v vspan) *Usage {
	if kindOf(b, v) != '{' {
		return nil
	}
	var u Usage
	var cacheRead, cacheWrite int64
	it := iterObject(b, v.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "prompt_tokens_details", "input_tokens_details":
			if c, ok := member(b, it.v, "cached_tokens"); ok {
				if n, ok := intAt(b, c); ok && n > 0 {
					u.CachedTokens = n
				}
			}
			continue
		}
		n, ok := intAt(b, it.v)
		if !ok {
			continue
		}
		switch string(it.keyRaw()) {
		case "prompt_tokens", "input_tokens":
			u.PromptTokens = n
		case "completion_tokens", "output_tokens":
			u.CompletionTokens = n
		case "total_tokens":
			u.TotalTokens = n
		case "cache_read_input_tokens":
			cacheRead = max(n, 0)
		case "cache_creation_input_tokens":
			cacheWrite = max(n, 0)
		}
	}
	if cacheRead+cacheWrite > 0 {
		// Anthropic's input_tokens leaves out the cached input.
		u.PromptTokens += cacheRead + cacheWrite
		u.CachedTokens = cacheRead
	}
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return &u
}

func (r *respScanner) generic() {
	b := r.b
	v := trimSpan(b)
	if v.s == v.e {
		return
	}
	if !validJSON(b) {
		r.texts.add("assistant", vspan{0, len(b)}, textRaw)
		return
	}
	eachStringValue(b, v, func(s vspan) { r.texts.add("assistant", s, textString) })
	if b[v.s] == '{' {
		r.model = memberString(b, v, "model")
		if u, ok := member(b, v, "usage"); ok && r.meta {
			r.usage = readUsage(b, u)
		}
	}
}

// choices reads OpenAI chat choices[].message (content, tool_calls) and
// completions choices[].text, plus the first finish_reason.
func (r *respScanner) choices(v vspan) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		if kindOf(b, it.v) != '{' {
			continue
		}
		r.texts.boundary()
		ct := iterObject(b, it.v.s)
		for ct.next() {
			switch string(ct.keyRaw()) {
			case "text":
				r.texts.addString(b, "assistant", ct.v)
			case "finish_reason":
				if !r.finishSet {
					r.finish, _ = strAt(b, ct.v)
					r.finishSet = true
				}
			case "message":
				mt := iterObject(b, ct.v.s)
				for mt.next() {
					switch string(mt.keyRaw()) {
					case "content":
						r.textParts(mt.v)
					case "tool_calls":
						if r.meta {
							tc := iterArray(b, mt.v.s)
							for tc.next() {
								r.toolCalls = append(r.toolCalls, openAIToolCall(b, tc.v))
							}
						}
					case "function_call":
						if r.meta {
							r.toolCalls = append(r.toolCalls, openAIToolCall(b, mt.v))
						}
					}
				}
			}
		}
	}
}

// textParts reads string content or an array of parts with "text".
func (r *respScanner) textParts(v vspan) {
	b := r.b
	switch kindOf(b, v) {
	case '"':
		r.texts.add("assistant", v, textString)
	case '[':
		it := iterArray(b, v.s)
		for it.next() {
			if t, ok := member(b, it.v, "text"); ok {
				r.texts.addString(b, "assistant", t)
			}
		}
	}
}

// openAIToolCall reads {"id", "function": {"name", "arguments"}} or a
// legacy {"name", "arguments"}.
func openAIToolCall(b []byte, v vspan) ToolCall {
	var tc ToolCall
	read := func(fn vspan) {
		it := iterObject(b, fn.s)
		for it.next() {
			switch string(it.keyRaw()) {
			case "name":
				tc.Name, _ = strAt(b, it.v)
			case "arguments", "input":
				tc.Arguments, _ = strAt(b, it.v)
			}
		}
	}
	it := iterObject(b, v.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "id":
			tc.ID, _ = strAt(b, it.v)
		case "function", "custom":
			read(it.v)
		}
	}
	if tc.Name == "" && tc.Arguments == "" {
		read(v)
	}
	return tc
}

// output reads Responses output items: message content output_text parts
// and function_call items.
func (r *respScanner) output(v vspan) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		r.outputItem(it.v)
	}
}

// outputItem reads one Responses output item.
func (r *respScanner) outputItem(item vspan) {
	b := r.b
	if kindOf(b, item) != '{' {
		return
	}
	r.texts.boundary()
	switch memberString(b, item, "type") {
	case "message":
		if c, ok := member(b, item, "content"); ok {
			pt := iterArray(b, c.s)
			for pt.next() {
				if memberString(b, pt.v, "type") != "output_text" {
					continue
				}
				if t, ok := member(b, pt.v, "text"); ok {
					r.texts.addString(b, "assistant", t)
				}
			}
		}
	case "function_call", "custom_tool_call":
		if r.meta {
			tc := ToolCall{
				ID:   memberString(b, item, "call_id"),
				Name: memberString(b, item, "name"),
			}
			if tc.ID == "" {
				tc.ID = memberString(b, item, "id")
			}
			tc.Arguments = memberString(b, item, "arguments")
			if tc.Arguments == "" {
				tc.Arguments = memberString(b, item, "input")
			}
			r.toolCalls = append(r.toolCalls, tc)
		}
	}
}

// anthropicContent reads content blocks: text and tool_use.
func (r *respScanner) anthropicContent(v vspan) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		r.anthropicBlock(it.v)
	}
}

// anthropicBlock reads one content block.
func (r *respScanner) anthropicBlock(blk vspan) {
	b := r.b
	if kindOf(b, blk) != '{' {
		return
	}
	switch memberString(b, blk, "type") {
	case "text":
		if t, ok := member(b, blk, "text"); ok {
			r.texts.addString(b, "assistant", t)
		}
	case "tool_use", "server_tool_use":
		if r.meta {
			tc := ToolCall{ID: memberString(b, blk, "id"), Name: memberString(b, blk, "name")}
			if in, ok := member(b, blk, "input"); ok {
				tc.Arguments = compactJSON(b[in.s:in.e])
			}
			r.toolCalls = append(r.toolCalls, tc)
		}
	}
}
