package pipeline

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// Detector turns prompt text into signals.
type Detector interface {
	Scan(text string) detect.Result
}

var _ Detector = (*detect.Scanner)(nil)

var (
	keySignals  = ast.StringTerm("signals")
	keyMessages = ast.StringTerm("messages")
	keyContent  = ast.StringTerm("content")
	keyText     = ast.StringTerm("text")
	keyPrompt   = ast.StringTerm("prompt")
	keyInput    = ast.StringTerm("input")
	keySystem   = ast.StringTerm("system")
	keyParsed   = ast.StringTerm("parsed_body")
)

// maxPromptBytes bounds the text handed to the detectors from one request.
const maxPromptBytes = 1 << 20

// PromptText collects the text an LLM request sends to the model, from the
// shapes of the common APIs: OpenAI chat (messages[].content as a string or
// as parts with "text"), completions ("prompt"), responses and embeddings
// ("input"), and Anthropic messages ("system" plus messages). Unknown shapes
// yield "". It is a stop-gap until the llmapi stage parses bodies fully.
func PromptText(body ast.Value) string {
	obj, ok := body.(ast.Object)
	if !ok {
		return ""
	}
	var b strings.Builder
	for _, k := range []*ast.Term{keySystem, keyPrompt, keyInput, keyMessages} {
		if t := obj.Get(k); t != nil {
			collectText(&b, t.Value, 0)
		}
	}
	return b.String()
}

func collectText(b *strings.Builder, v ast.Value, depth int) {
	if depth > 8 || b.Len() >= maxPromptBytes {
		return
	}
	switch x := v.(type) {
	case ast.String:
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		s := string(x)
		if room := maxPromptBytes - b.Len(); len(s) > room {
			s = s[:room]
		}
		b.WriteString(s)
	case *ast.Array:
		x.Foreach(func(e *ast.Term) { collectText(b, e.Value, depth+1) })
	case ast.Object:
		for _, k := range []*ast.Term{keyContent, keyText, keyInput} {
			if t := x.Get(k); t != nil {
				collectText(b, t.Value, depth+1)
			}
		}
	}
}

// signalsValue renders detector signals as input.signals.
func signalsValue(s detect.Signals) ast.Value {
	counts := func(tc []detect.TypeCount) *ast.Term {
		terms := make([]*ast.Term, len(tc))
		for i, c := range tc {
			terms[i] = ast.ObjectTerm(
				[2]*ast.Term{ast.StringTerm("type"), ast.StringTerm(c.Type)},
				[2]*ast.Term{ast.StringTerm("count"), ast.IntNumberTerm(c.Count)})
		}
		return ast.ArrayTerm(terms...)
	}
	rules := make([]*ast.Term, len(s.PromptInjection.Rules))
	for i, r := range s.PromptInjection.Rules {
		rules[i] = ast.StringTerm(r)
	}
	h := s.HiddenText
	return ast.NewObject(
		[2]*ast.Term{ast.StringTerm("prompt_injection"), ast.ObjectTerm(
			[2]*ast.Term{ast.StringTerm("score"), ast.FloatNumberTerm(s.PromptInjection.Score)},
			[2]*ast.Term{ast.StringTerm("detected"), ast.BooleanTerm(s.PromptInjection.Detected)},
			[2]*ast.Term{ast.StringTerm("rules"), ast.ArrayTerm(rules...)})},
		[2]*ast.Term{ast.StringTerm("pii"), counts(s.PII)},
		[2]*ast.Term{ast.StringTerm("secrets"), counts(s.Secrets)},
		[2]*ast.Term{ast.StringTerm("hidden_text"), ast.ObjectTerm(
			[2]*ast.Term{ast.StringTerm("detected"), ast.BooleanTerm(h.Detected)},
			[2]*ast.Term{ast.StringTerm("tag_chars"), ast.IntNumberTerm(h.TagChars)},
			[2]*ast.Term{ast.StringTerm("bidi"), ast.IntNumberTerm(h.Bidi)},
			[2]*ast.Term{ast.StringTerm("zero_width"), ast.IntNumberTerm(h.ZeroWidth)},
			[2]*ast.Term{ast.StringTerm("homoglyphs"), ast.IntNumberTerm(h.Homoglyphs)},
			[2]*ast.Term{ast.StringTerm("encoded"), ast.IntNumberTerm(h.Encoded)})},
		[2]*ast.Term{ast.StringTerm("length"), ast.ObjectTerm(
			[2]*ast.Term{ast.StringTerm("chars"), ast.IntNumberTerm(s.Length.Chars)},
			[2]*ast.Term{ast.StringTerm("bytes"), ast.IntNumberTerm(s.Length.Bytes)},
			[2]*ast.Term{ast.StringTerm("estimated_tokens"), ast.IntNumberTerm(s.Length.EstimatedTokens)})},
	)
}
