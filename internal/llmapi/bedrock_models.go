package llmapi

import (
	"strconv"
	"strings"
)

// InvokeModel carries each model's native body, and Bedrock rejects fields
// a model does not define: the token cap and the usage are read, and the
// cap edited, per model family, recognised by the body's shape (the path's
// model id only when the shape names none: a provisioned-throughput or
// application-inference-profile ARN names no family).
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
// limit. A body whose shape names no family (a Llama or Mistral prompt
// without its cap field) takes the family the path's model id names
// (invokeFamilyOfModel), and the cap is added in that family's field. A
// body of neither is not capped (Request.Capped is false), so quota is
// reserved at the policy's default rather than at a cap the model never
// saw.

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

// invokeFamilyOfModel is the family a Bedrock model id names, for a body
// whose shape names none: a foundation model id (meta.llama3-1-70b-
// instruct-v1:0), a cross-region inference profile id (us.meta.llama…,
// eu.mistral.…), or an ARN of either (…:foundation-model/<id>,
// …:inference-profile/<id>). Only families whose cap field is documented
// and which generate text are named: provisioned-throughput and
// application-inference-profile ARNs, embedding models and anything else
// are familyUnknown.
func invokeFamilyOfModel(id string) invokeFamily {
	if strings.HasPrefix(id, "arn:") {
		parts := strings.SplitN(id, ":", 6) // arn:partition:bedrock:region:account:type/id
		if len(parts) < 6 {
			return familyUnknown
		}
		kind, rest, ok := strings.Cut(parts[5], "/")
		if !ok || (kind != "foundation-model" && kind != "inference-profile") {
			return familyUnknown
		}
		id = rest
	}
	if f := modelFamily(id); f != familyUnknown {
		return f
	}
	// A cross-region inference profile: a geography (us, eu, apac,
	// us-gov, global, …) before the model id.
	if geo, rest, ok := strings.Cut(id, "."); ok && geo != "" && !strings.ContainsAny(geo, "/:") {
		return modelFamily(rest)
	}
	return familyUnknown
}

// modelFamily maps a foundation model id's provider and model prefix to
// its family (see the table above): Llama's max_gen_len; max_tokens for
// Mistral (text and chat), Cohere Command (text and R), AI21 Jamba and
// DeepSeek.
func modelFamily(id string) invokeFamily {
	for _, m := range [...]struct {
		prefix string
		f      invokeFamily
	}{
		{"meta.llama", familyLlama},
		{"mistral.", familyMaxTokens},
		{"cohere.command", familyMaxTokens},
		{"ai21.jamba", familyMaxTokens},
		{"deepseek.", familyMaxTokens},
	} {
		if strings.HasPrefix(id, m.prefix) {
			return m.f
		}
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

// invokeClamp caps an InvokeModel body's token limit in its family's
// field: the shape's family, else the family of the path's model id
// (editor.model), whose field is added.
func invokeClamp(ed *editor, top *topFields, limit int64) {
	f := invokeFamilyOf(ed.b, top)
	if f == familyUnknown {
		switch invokeFamilyOfModel(ed.model) {
		case familyLlama:
			ed.setMember(top, "max_gen_len", limit)
		case familyMaxTokens:
			ed.setMember(top, "max_tokens", limit)
		}
		return
	}
	switch f {
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

// setMember adds the top-level member name with value limit (the shape
// having none: invokeFamilyOf found no cap field).
func (ed *editor) setMember(top *topFields, name string, limit int64) {
	ed.insertMember(top.obj, top.members > 0, name, strconv.AppendInt(nil, limit, 10))
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
