package detect

import "slices"

// Signals is a Result in the shape of the policy input's "signals" object
// (DESIGN.md, policy contract). It holds counts and scores only, never the
// matched text, so it is safe to log and to pass to policy.
type Signals struct {
	PromptInjection InjectionSignal `json:"prompt_injection"`
	PII             []TypeCount     `json:"pii"`
	Secrets         []TypeCount     `json:"secrets"`
	HiddenText      HiddenSignal    `json:"hidden_text"`
	Length          LengthSignal    `json:"length"`
	// CanaryLeak is set by ext_proc when a response contains the canary it
	// planted in the request's system prompt: the model revealed its
	// instructions. Scan alone never sets it (it does not know the canary).
	CanaryLeak bool `json:"canary_leak"`
	// RemoteClassifier is the remote classifier's verdict, present only
	// when one is configured (remote_classifier_url).
	RemoteClassifier *RemoteVerdict `json:"remote_classifier,omitempty"`
	// Moderation is the moderation model's verdict, present only when one
	// is configured (moderation_url) and there was text to moderate. The
	// pipeline (prompts) and the exchange (answers) set it; Scan never does.
	Moderation *ModerationVerdict `json:"moderation,omitempty"`
	// ContentSafety lists the content-safety matches (category and span,
	// never the matched text), in text order.
	ContentSafety []ContentMatch `json:"content_safety"`
	// Markup counts the unsafe links, images and HTML in an answer by
	// reason (the Markup* types).
	Markup []TypeCount `json:"markup"`
}

// ContentMatch is one entry of signals.content_safety: a term of Category
// matched the code points [Start, End) of the scanned text.
type ContentMatch struct {
	Category string `json:"category"`
	Start    int    `json:"start"`
	End      int    `json:"end"`
}

// InjectionSignal is signals.prompt_injection.
type InjectionSignal struct {
	Score    float64  `json:"score"`
	Detected bool     `json:"detected"`
	Rules    []string `json:"rules"`
}

// TypeCount counts the findings of one type.
type TypeCount struct {
	Type  string `json:"type"`
	Count int    `json:"count"`
}

// HiddenSignal is signals.hidden_text.
type HiddenSignal struct {
	Detected           bool `json:"detected"`
	TagChars           int  `json:"tag_chars"`
	DecodedLen         int  `json:"decoded_len"`
	Bidi               int  `json:"bidi"`
	ZeroWidth          int  `json:"zero_width"`
	VariationSelectors int  `json:"variation_selectors"`
	Homoglyphs         int  `json:"homoglyphs"`
	Encoded            int  `json:"encoded"`
}

// LengthSignal is signals.length.
type LengthSignal struct {
	Chars           int `json:"chars"`
	Bytes           int `json:"bytes"`
	EstimatedTokens int `json:"estimated_tokens"`
}

// Signals summarises r for policy input. Slices are never nil, so they
// encode as [] rather than null.
func (r Result) Signals() Signals {
	s := Signals{
		PromptInjection: InjectionSignal{
			Score:    r.PromptInjection.Score,
			Detected: r.PromptInjection.Detected,
			Rules:    r.PromptInjection.Rules,
		},
		PII:           []TypeCount{},
		Secrets:       []TypeCount{},
		ContentSafety: []ContentMatch{},
		Markup:        []TypeCount{},
		HiddenText: HiddenSignal{
			TagChars:           r.HiddenText.TagChars,
			DecodedLen:         r.HiddenText.DecodedLen,
			Bidi:               r.HiddenText.Bidi,
			ZeroWidth:          r.HiddenText.ZeroWidth,
			VariationSelectors: r.HiddenText.VariationSelectors,
			Homoglyphs:         r.HiddenText.Homoglyphs,
			Encoded:            r.HiddenText.Encoded,
		},
		Length:           LengthSignal{Chars: r.Length.Chars, Bytes: r.Length.Bytes, EstimatedTokens: r.Length.EstimatedTokens},
		RemoteClassifier: r.Remote,
	}
	if s.PromptInjection.Rules == nil {
		s.PromptInjection.Rules = []string{}
	}
	for _, f := range r.Findings {
		switch f.Detector {
		case DetectorPII:
			s.PII = addCount(s.PII, f.Type)
		case DetectorSecrets:
			s.Secrets = addCount(s.Secrets, f.Type)
		case DetectorHidden:
			s.HiddenText.Detected = true
		case DetectorContent:
			s.ContentSafety = append(s.ContentSafety, ContentMatch{Category: f.Type, Start: f.Start, End: f.End})
		case DetectorMarkup:
			s.Markup = addCount(s.Markup, f.Type)
		}
	}
	return s
}

func addCount(c []TypeCount, typ string) []TypeCount {
	if i := slices.IndexFunc(c, func(x TypeCount) bool { return x.Type == typ }); i >= 0 {
		c[i].Count++
		return c
	}
	return append(c, TypeCount{Type: typ, Count: 1})
}
