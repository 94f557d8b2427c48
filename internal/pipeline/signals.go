package pipeline

import (
	"context"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// Detector turns prompt text into signals. ScanContext stops with an error
// wrapping ctx's when ctx ends, so a request that has gone costs no more CPU.
type Detector interface {
	ScanContext(ctx context.Context, text string) (detect.Result, error)
}

var _ Detector = (*detect.Scanner)(nil)

// Moderator gives a moderation model's verdict on text. It never fails: no
// verdict is a verdict with Available false.
type Moderator interface {
	Moderate(ctx context.Context, text string) detect.ModerationVerdict
}

var _ Moderator = (*detect.Moderator)(nil)

var keySignals = ast.StringTerm("signals")

// Keys of input.signals, built once.
var (
	kPromptInjection = ast.StringTerm("prompt_injection")
	kScore           = ast.StringTerm("score")
	kDetected        = ast.StringTerm("detected")
	kRules           = ast.StringTerm("rules")
	kPII             = ast.StringTerm("pii")
	kSecrets         = ast.StringTerm("secrets")
	kType            = ast.StringTerm("type")
	kCount           = ast.StringTerm("count")
	kHiddenText      = ast.StringTerm("hidden_text")
	kTagChars        = ast.StringTerm("tag_chars")
	kBidi            = ast.StringTerm("bidi")
	kZeroWidth       = ast.StringTerm("zero_width")
	kHomoglyphs      = ast.StringTerm("homoglyphs")
	kEncoded         = ast.StringTerm("encoded")
	kLength          = ast.StringTerm("length")
	kChars           = ast.StringTerm("chars")
	kBytes           = ast.StringTerm("bytes")
	kEstimatedTokens = ast.StringTerm("estimated_tokens")
	kCanaryLeak      = ast.StringTerm("canary_leak")
	kRemote          = ast.StringTerm("remote_classifier")
	kAvailable       = ast.StringTerm("available")
	kLabel           = ast.StringTerm("label")
	kError           = ast.StringTerm("error")
	kToolResults     = ast.StringTerm("tool_results")
	kModeration      = ast.StringTerm("moderation")
	kFlagged         = ast.StringTerm("flagged")
	kCategories      = ast.StringTerm("categories")
	kScores          = ast.StringTerm("scores")
	kCached          = ast.StringTerm("cached")
	kFailureMode     = ast.StringTerm("failure_mode")
	kContentSafety   = ast.StringTerm("content_safety")
	kCategory        = ast.StringTerm("category")
	kStart           = ast.StringTerm("start")
	kEnd             = ast.StringTerm("end")
	kMarkup          = ast.StringTerm("markup")
)

// contentMatches renders signals.content_safety: [{category, start, end}].
func contentMatches(ms []detect.ContentMatch) *ast.Term {
	terms := make([]*ast.Term, len(ms))
	for i, m := range ms {
		terms[i] = ast.ObjectTerm([2]*ast.Term{kCategory, ast.StringTerm(m.Category)},
			[2]*ast.Term{kStart, ast.IntNumberTerm(m.Start)}, [2]*ast.Term{kEnd, ast.IntNumberTerm(m.End)})
	}
	return ast.ArrayTerm(terms...)
}

func typeCounts(tc []detect.TypeCount) *ast.Term {
	terms := make([]*ast.Term, len(tc))
	for i, c := range tc {
		terms[i] = ast.ObjectTerm([2]*ast.Term{kType, ast.StringTerm(c.Type)}, [2]*ast.Term{kCount, ast.IntNumberTerm(c.Count)})
	}
	return ast.ArrayTerm(terms...)
}

// signalsValue renders detector signals as input.signals (and, for the
// request's tool results, as input.signals.tool_results, the same shape).
func signalsValue(s detect.Signals) ast.Object {
	rules := make([]*ast.Term, len(s.PromptInjection.Rules))
	for i, r := range s.PromptInjection.Rules {
		rules[i] = ast.StringTerm(r)
	}
	h := s.HiddenText
	obj := ast.NewObject(
		[2]*ast.Term{kPromptInjection, ast.ObjectTerm(
			[2]*ast.Term{kScore, ast.FloatNumberTerm(s.PromptInjection.Score)},
			[2]*ast.Term{kDetected, ast.BooleanTerm(s.PromptInjection.Detected)},
			[2]*ast.Term{kRules, ast.ArrayTerm(rules...)})},
		[2]*ast.Term{kPII, typeCounts(s.PII)},
		[2]*ast.Term{kSecrets, typeCounts(s.Secrets)},
		[2]*ast.Term{kHiddenText, ast.ObjectTerm(
			[2]*ast.Term{kDetected, ast.BooleanTerm(h.Detected)},
			[2]*ast.Term{kTagChars, ast.IntNumberTerm(h.TagChars)},
			[2]*ast.Term{kBidi, ast.IntNumberTerm(h.Bidi)},
			[2]*ast.Term{kZeroWidth, ast.IntNumberTerm(h.ZeroWidth)},
			[2]*ast.Term{kHomoglyphs, ast.IntNumberTerm(h.Homoglyphs)},
			[2]*ast.Term{kEncoded, ast.IntNumberTerm(h.Encoded)})},
		[2]*ast.Term{kLength, ast.ObjectTerm(
			[2]*ast.Term{kChars, ast.IntNumberTerm(s.Length.Chars)},
			[2]*ast.Term{kBytes, ast.IntNumberTerm(s.Length.Bytes)},
			[2]*ast.Term{kEstimatedTokens, ast.IntNumberTerm(s.Length.EstimatedTokens)})},
		[2]*ast.Term{kCanaryLeak, ast.BooleanTerm(s.CanaryLeak)},
		[2]*ast.Term{kContentSafety, contentMatches(s.ContentSafety)},
		[2]*ast.Term{kMarkup, typeCounts(s.Markup)},
	)
	if r := s.RemoteClassifier; r != nil {
		obj.Insert(kRemote, ast.ObjectTerm(
			[2]*ast.Term{kAvailable, ast.BooleanTerm(r.Available)},
			[2]*ast.Term{kScore, ast.FloatNumberTerm(r.Score)},
			[2]*ast.Term{kDetected, ast.BooleanTerm(r.Detected)},
			[2]*ast.Term{kLabel, ast.StringTerm(r.Label)},
			[2]*ast.Term{kError, ast.StringTerm(r.Error)}))
	}
	if m := s.Moderation; m != nil {
		obj.Insert(kModeration, moderationValue(m))
	}
	return obj
}

// moderationValue renders the moderation verdict as
// input.signals.moderation.
func moderationValue(m *detect.ModerationVerdict) *ast.Term {
	cats := make([]*ast.Term, len(m.Categories))
	for i, c := range m.Categories {
		cats[i] = ast.StringTerm(c)
	}
	scores := ast.NewObject()
	for k, v := range m.Scores {
		scores.Insert(ast.StringTerm(k), ast.FloatNumberTerm(v))
	}
	return ast.ObjectTerm(
		[2]*ast.Term{kAvailable, ast.BooleanTerm(m.Available)},
		[2]*ast.Term{kFlagged, ast.BooleanTerm(m.Flagged)},
		[2]*ast.Term{kCategories, ast.ArrayTerm(cats...)},
		[2]*ast.Term{kScores, ast.NewTerm(scores)},
		[2]*ast.Term{kError, ast.StringTerm(m.Error)},
		[2]*ast.Term{kCached, ast.BooleanTerm(m.Cached)},
		[2]*ast.Term{kFailureMode, ast.StringTerm(m.FailureMode)})
}
