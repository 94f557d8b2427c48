package exchange

import (
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/internal/quality"
)

// maxQualityText bounds the streamed answer text kept for the quality
// signals: the size of a body inspected whole (refusal reads only the
// start; JSON validity needs all of it, and past the bound only JSON-ness
// of what was kept is judged).
func (x *Session) maxQualityText() int { return x.c.opts.MaxBodyBytes }

// qualityState follows a streamed answer for its quality signals.
type qualityState struct {
	text       strings.Builder
	finish     string
	firstToken time.Time
	overflow   bool
}

// noteDelta records what one stream event says about the answer's quality.
func (x *Session) noteDelta(d *llmapi.Delta) {
	if x.c.opts.Quality == nil || x.llmReq == nil {
		return
	}
	q := &x.resp.quality
	if d.FinishReason != "" {
		q.finish = d.FinishReason
	}
	if d.HasText && d.Text != "" {
		if q.firstToken.IsZero() {
			q.firstToken = time.Now()
		}
		if q.text.Len()+len(d.Text) <= x.maxQualityText() {
			q.text.WriteString(d.Text)
		} else {
			q.overflow = true
		}
	}
}

// streamQuality judges a streamed answer at its end and counts it.
func (x *Session) streamQuality() {
	if x.c.opts.Quality == nil || x.llmReq == nil || x.resp == nil {
		return
	}
	rs := x.resp
	q := &rs.quality
	calls := 0
	if rs.tools != nil {
		calls = len(rs.tools.Calls())
	}
	a := quality.Answer{Status: rs.status, Text: q.text.String(), Calls: calls, FinishReason: q.finish,
		MaxTokens: x.llmReq.MaxTokens, Format: x.format, Start: x.gen.forwardedAt, FirstToken: q.firstToken, End: time.Now()}
	if rs.haveUsage {
		a.OutputTokens = rs.usage.CompletionTokens
	}
	if q.overflow {
		a.Format = quality.Format{} // not all of it was kept: JSON validity is not judged
	}
	x.c.opts.Quality.Observe(x.llmReq.Model, quality.Assess(a))
}

// bodyQuality judges an answer read whole, counts it and returns its
// signals for input.response.quality (nil when not an LLM answer or
// quality is off).
func (x *Session) bodyQuality(r *llmapi.Response, usage *llmapi.Usage) *quality.Signals {
	if x.c.opts.Quality == nil || x.llmReq == nil || r == nil {
		return nil
	}
	a := quality.Answer{Status: x.resp.status, Text: r.Text, Calls: len(r.ToolCalls), FinishReason: r.FinishReason,
		MaxTokens: x.llmReq.MaxTokens, Format: x.format, Start: x.gen.forwardedAt, End: time.Now()}
	if usage != nil {
		a.OutputTokens = usage.CompletionTokens
	}
	s := quality.Assess(a)
	x.c.opts.Quality.Observe(x.llmReq.Model, s)
	return &s
}

var (
	keyResponse       = ast.StringTerm("response")
	keyQuality        = ast.StringTerm("quality")
	kFinishReason     = ast.StringTerm("finish_reason")
	kEmpty            = ast.StringTerm("empty")
	kRefusal          = ast.StringTerm("refusal")
	kDetected         = ast.StringTerm("detected")
	kScore            = ast.StringTerm("score")
	kRules            = ast.StringTerm("rules")
	kTruncated        = ast.StringTerm("truncated")
	kJSON             = ast.StringTerm("json")
	kRequested        = ast.StringTerm("requested")
	kValid            = ast.StringTerm("valid")
	kError            = ast.StringTerm("error")
	kTTFTms           = ast.StringTerm("time_to_first_token_ms")
	kTokensPerSecond  = ast.StringTerm("tokens_per_second")
	kSchemaCompileErr = ast.StringTerm("schema_error")
)

// addQuality sets input.response.quality:
//
//	{finish_reason, empty, refusal: {detected, score, rules}, truncated,
//	 json: {requested, valid, error, schema_error}, time_to_first_token_ms,
//	 tokens_per_second}
func addQuality(in ast.Object, s *quality.Signals, f quality.Format) {
	if s == nil {
		return
	}
	resp := in.Get(keyResponse)
	if resp == nil {
		return
	}
	obj, ok := resp.Value.(ast.Object)
	if !ok {
		return
	}
	rules := make([]*ast.Term, len(s.Refusal.Rules))
	for i, r := range s.Refusal.Rules {
		rules[i] = ast.StringTerm(r)
	}
	obj.Insert(keyQuality, ast.ObjectTerm(
		[2]*ast.Term{kFinishReason, ast.StringTerm(s.FinishReason)},
		[2]*ast.Term{kEmpty, ast.BooleanTerm(s.Empty)},
		[2]*ast.Term{kRefusal, ast.ObjectTerm(
			[2]*ast.Term{kDetected, ast.BooleanTerm(s.Refusal.Detected)},
			[2]*ast.Term{kScore, ast.FloatNumberTerm(s.Refusal.Score)},
			[2]*ast.Term{kRules, ast.ArrayTerm(rules...)},
		)},
		[2]*ast.Term{kTruncated, ast.BooleanTerm(s.Truncated)},
		[2]*ast.Term{kJSON, ast.ObjectTerm(
			[2]*ast.Term{kRequested, ast.BooleanTerm(s.JSONRequested)},
			[2]*ast.Term{kValid, ast.BooleanTerm(s.JSONValid)},
			[2]*ast.Term{kError, ast.StringTerm(s.JSONError)},
			[2]*ast.Term{kSchemaCompileErr, ast.StringTerm(f.SchemaError)},
		)},
		[2]*ast.Term{kTTFTms, ast.IntNumberTerm(int(s.TimeToFirstToken.Milliseconds()))},
		[2]*ast.Term{kTokensPerSecond, ast.FloatNumberTerm(s.TokensPerSecond)},
	))
}
