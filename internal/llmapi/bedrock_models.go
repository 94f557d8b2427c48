package llmapi

import "strconv"

// InvokeModel carries each model's native body, and Bedrock rejects fields
// a model does not define: the token cap and the usage are read, and the
// cap edited, per model family, recognised by the body's shape (the path's
// model id may be an ARN or an inference profile, which name no family).
//
//	family     recognised by                        token cap
//	Anthropic  anthropic_version, or messages        max_tokens (also Mistral chat, AI21 Jamba, DeepSeek)
//	Nova       schemaVersion or inferenceConfig      inferenceConfig.max_new_tokens
//	Titan      inputText or textGenerationConfig     textGenerationConfig.maxTokenCount
//	Llama      max_gen_len                           max_gen_len
//	other      max_tokens (Mistral, Cohere prompts)  max_tokens
//
// The cap is added where absent for Anthropic, Nova and Titan, whose
// field is known from the shape; for the others it is lowered when over the
// limit. A body of no known family is not capped (Request.Capped is false),
// so quota is reserved at the policy's default rather than at a cap the
// model never saw.

type invokeFamily uint8

const (
	familyUnknown invokeFamily = iota
	familyAnthropic
	familyNova
	familyTitan
	familyLlama
	familyMaxTokens
)

// invokeFamilyOf recognises the model family of an InvokeModel body.
func invokeFamilyOf(b []byte, top *topFields) invokeFamily {
	has := func(name string) bool { _, ok := member(b, top.obj, name); return ok }
	switch {
	case has("anthropic_version"):
		return familyAnthropic
	case has("schemaVersion"), has("inferenceConfig"):
		return familyNova
	case len(top.f[kMessages]) > 0:
		return familyAnthropic
	case has("inputText"), has("textGenerationConfig"):
		return familyTitan
	case has("max_gen_len"):
		return familyLlama
	case len(top.f[kMaxTokens]) > 0:
		return familyMaxTokens
	}
	return familyUnknown
}

// invokeMaxTokens reads the family's token cap (0 when absent).
func (r *reqScanner) invokeMaxTokens(f invokeFamily) int64 {
	b := r.b
	var v vspan
	var ok bool
	switch f {
	case familyAnthropic, familyMaxTokens:
		v, ok = r.top.last(kMaxTokens)
	case familyNova:
		if c, found := member(b, r.top.obj, "inferenceConfig"); found {
			v, ok = member(b, c, "max_new_tokens")
		}
	case familyTitan:
		if c, found := member(b, r.top.obj, "textGenerationConfig"); found {
			v, ok = member(b, c, "maxTokenCount")
		}
	case familyLlama:
		v, ok = member(b, r.top.obj, "max_gen_len")
	}
	if !ok {
		return 0
	}
	n, _ := intAt(b, v)
	return max(n, 0)
}

// invokeClamp caps an InvokeModel body's token limit in its family's field.
func invokeClamp(ed *editor, top *topFields, limit int64) {
	switch invokeFamilyOf(ed.b, top) {
	case familyAnthropic:
		ed.clamp(AnthropicMessages, top, limit)
	case familyNova:
		ed.clampIn(top, "inferenceConfig", "max_new_tokens", limit)
	case familyTitan:
		ed.clampIn(top, "textGenerationConfig", "maxTokenCount", limit)
	case familyLlama:
		ed.lower(top, "max_gen_len", limit)
	case familyMaxTokens:
		ed.lower(top, "max_tokens", limit)
	}
}

// lower replaces every top-level member name whose value is over limit.
func (ed *editor) lower(top *topFields, name string, limit int64) {
	it := iterObject(ed.b, top.obj.s)
	for it.next() {
		if string(it.keyRaw()) == name && !withinLimit(ed.b, it.v, limit) {
			ed.replace(it.v, strconv.AppendInt(nil, limit, 10))
		}
	}
}

// invokeUsage reads the usage a non-Anthropic InvokeModel answer reports:
// Nova's usage {inputTokens, outputTokens}, Titan's inputTextTokenCount
// and results[].tokenCount, Llama's prompt_token_count and
// generation_token_count, Cohere's meta.billed_units, and the
// amazon-bedrock-invocationMetrics every model's last streamed chunk
// carries. nil when it reports none.
func invokeUsage(b []byte, top vspan) *Usage {
	var u Usage
	found := false
	set := func(dst *int64, v vspan) {
		if n, ok := intAt(b, v); ok {
			*dst, found = n, true
		}
	}
	it := iterObject(b, top.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "usage":
			if bu := bedrockUsage(b, it.v); bu != nil && (bu.PromptTokens > 0 || bu.CompletionTokens > 0) {
				return bu
			}
		case "amazon-bedrock-invocationMetrics":
			if v, ok := member(b, it.v, "inputTokenCount"); ok {
				set(&u.PromptTokens, v)
			}
			if v, ok := member(b, it.v, "outputTokenCount"); ok {
				set(&u.CompletionTokens, v)
			}
		case "inputTextTokenCount", "prompt_token_count":
			set(&u.PromptTokens, it.v)
		case "generation_token_count":
			set(&u.CompletionTokens, it.v)
		case "results":
			rt := iterArray(b, it.v.s)
			var out int64
			for rt.next() {
				if v, ok := member(b, rt.v, "tokenCount"); ok {
					if n, ok := intAt(b, v); ok {
						out, found = out+n, true
					}
				}
			}
			if out > 0 {
				u.CompletionTokens = out
			}
		case "meta":
			if bu, ok := member(b, it.v, "billed_units"); ok {
				if v, ok := member(b, bu, "input_tokens"); ok {
					set(&u.PromptTokens, v)
				}
				if v, ok := member(b, bu, "output_tokens"); ok {
					set(&u.CompletionTokens, v)
				}
			}
		}
	}
	if !found {
		return nil
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return &u
}

// Bedrock reports every InvokeModel's (and Converse's) token counts in
// these response headers too.
const (
	headerBedrockInputTokens  = "x-amzn-bedrock-input-token-count"  // #nosec G101 -- a header name, not a credential
	headerBedrockOutputTokens = "x-amzn-bedrock-output-token-count" // #nosec G101 -- a header name, not a credential
)

// HeaderUsage is the usage a response's headers report (lower-cased
// names): Bedrock's x-amzn-bedrock-input-token-count and
// x-amzn-bedrock-output-token-count, which InvokeModel sends for every
// model, whatever its body says. nil for other APIs or without them.
func HeaderUsage(api API, h map[string]string) *Usage {
	if api != BedrockInvoke && api != BedrockConverse {
		return nil
	}
	in, err1 := strconv.ParseInt(h[headerBedrockInputTokens], 10, 64)
	out, err2 := strconv.ParseInt(h[headerBedrockOutputTokens], 10, 64)
	if err1 != nil && err2 != nil || in < 0 || out < 0 {
		return nil
	}
	return &Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out}
}
