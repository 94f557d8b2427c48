package pipeline

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// BenchmarkDecidePromptNoModeration is a request_body decision on a 4 KiB
// prompt with the detectors and no moderation model: the moderation
// feature must add no work and no allocation when it is not configured
// (compare allocs/op with the commit before it).
func BenchmarkDecidePromptNoModeration(b *testing.B) {
	const pol = `package t
import rego.v1
decision := {"allowed": true, "reason": "ok"} if input.signals.prompt_injection.score < 0.9
`
	e, err := policy.New(context.Background(), policy.Config{
		Embedded: fstest.MapFS{"p.rego": {Data: []byte(pol)}}, Query: "t/decision"}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := detect.New(detect.Config{})
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{Timeout: time.Second}, Deps{Eval: e, Detector: sc}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	text := ""
	for len(text) < 4096 {
		text += "Please summarise the quarterly report for the board and list the three main risks. "
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, err := p.Decide(ctx, Request{Phase: PhaseRequestBody, Text: text})
		if err != nil || !out.Decision.Allowed {
			b.Fatal(out.Reason, err)
		}
	}
}
