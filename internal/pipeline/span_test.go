package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
	"github.com/bulwark-ai/bulwark/internal/telemetry"
)

// TestAnnotate: annotate puts the decision's identifiers, verdict, principal, signal
// summaries and limits on the span, and nothing that is text or credential.
func TestAnnotate(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tr := telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	_, span := tr.Tracer.Start(context.Background(), "bulwark.check")
	out := Outcome{
		DecisionID:     "0b6c6f5e-0000-4000-8000-000000000001",
		Decision:       policy.Decision{Allowed: false, HTTPStatus: 429, Reason: "rate_limited", Message: "secret-ish message"},
		Reason:         "rate_limited",
		PolicyRevision: "0cddf8025a84ea87",
		Principal:      identity.Principal{ID: "alice", Kind: identity.KindAPIKey, Tenant: "acme", Claims: map[string]any{"key_id": "k1"}},
		Signals: &detect.Signals{PromptInjection: detect.InjectionSignal{Score: 0.97, Detected: true, Rules: []string{"instruction_override"}},
			PII: []detect.TypeCount{{Type: "EMAIL_ADDRESS", Count: 2}}, Secrets: []detect.TypeCount{{Type: "GITHUB_TOKEN", Count: 1}}},
		RateLimit: &ratelimit.Result{Limits: []ratelimit.LimitState{{Name: "requests_per_minute", Key: "{acme}:alice", Exceeded: true}}},
	}
	annotate(span, out, nil, func(s string) string { return s })
	span.End()
	got := map[string]attribute.Value{}
	for _, kv := range rec.Ended()[0].Attributes() {
		got[string(kv.Key)] = kv.Value
	}
	want := map[string]string{
		"bulwark.decision_id":                    out.DecisionID,
		"bulwark.allowed":                        "false",
		"bulwark.reason":                         "rate_limited",
		"http.response.status_code":              "429",
		"bulwark.principal.id":                   "alice",
		"bulwark.principal.kind":                 "api_key",
		"bulwark.policy_revision":                "0cddf8025a84ea87",
		"bulwark.signals.prompt_injection.score": "0.97",
		"bulwark.signals.prompt_injection.rules": `["instruction_override"]`,
		"bulwark.signals.pii.count":              "2",
		"bulwark.signals.pii.types":              `["EMAIL_ADDRESS=2"]`,
		"bulwark.signals.secrets.types":          `["GITHUB_TOKEN=1"]`,
		"bulwark.limits.exceeded":                `["requests_per_minute"]`,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g.String() != v {
			t.Errorf("%s = %q, want %q", k, got[k].String(), v)
		}
	}
	for k, v := range got {
		if s := v.String(); strings.Contains(s, "secret-ish") || strings.Contains(s, "{acme}:alice") || strings.Contains(s, "k1") {
			t.Errorf("attribute %s carries %q", k, s)
		}
	}
}

// TestDecideAnnotatesCallersSpan: Decide puts the decision on the recording
// span the door passed in ctx, errors included, so the doors only start and
// end it.
func TestDecideAnnotatesCallersSpan(t *testing.T) {
	var gateErr error
	p := newPipeline(t, Config{AuditGate: func() error { return gateErr }}, true, Deps{})
	tests := []struct {
		name       string
		gate       error
		c          string
		wantAttrs  map[string]string
		wantStatus codes.Code
	}{
		{"allow", nil, "principal", map[string]string{"bulwark.allowed": "true", "bulwark.reason": "anonymous",
			"bulwark.principal.kind": "anonymous", "bulwark.limits.degraded": ""}, codes.Unset},
		{"deny", nil, "deny", map[string]string{"bulwark.allowed": "false", "bulwark.reason": "nope",
			"http.response.status_code": "403"}, codes.Unset},
		{"limits", nil, "two", map[string]string{"bulwark.allowed": "true", "bulwark.reason": "ok",
			"bulwark.limits.degraded": "false"}, codes.Unset},
		{"no decision", audit.ErrUnavailable, "principal", map[string]string{"bulwark.allowed": "false"}, codes.Error},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gateErr = tc.gate
			rec := tracetest.NewSpanRecorder()
			tr := telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
			ctx, span := tr.Tracer.Start(context.Background(), "bulwark.check")
			out, err := p.Decide(ctx, Request{Phase: PhaseRequestHeaders,
				Input: ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm(tc.c)})})
			span.End()
			if !errors.Is(err, tc.gate) {
				t.Fatalf("err = %v, want %v", err, tc.gate)
			}
			ended := rec.Ended()
			if len(ended) != 1 {
				t.Fatalf("got %d spans, want 1", len(ended))
			}
			got := map[string]string{}
			for _, kv := range ended[0].Attributes() {
				got[string(kv.Key)] = kv.Value.String()
			}
			if got["bulwark.decision_id"] != out.DecisionID || out.DecisionID == "" {
				t.Errorf("bulwark.decision_id = %q, want %q", got["bulwark.decision_id"], out.DecisionID)
			}
			for k, v := range tc.wantAttrs {
				if g, ok := got[k]; v == "" && ok {
					t.Errorf("%s = %q, want absent", k, g)
				} else if v != "" && g != v {
					t.Errorf("%s = %q, want %q", k, g, v)
				}
			}
			if s := ended[0].Status().Code; s != tc.wantStatus {
				t.Errorf("status = %v, want %v", s, tc.wantStatus)
			}
		})
	}
}
