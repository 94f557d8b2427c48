package pipeline

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// moderationPolicy says in its reason what it read in
// input.signals.moderation.
const moderationPolicy = `package t
import rego.v1

m := input.signals.moderation

default decision := {"allowed": true, "reason": "no_moderation_signal"}
decision := {"allowed": false, "reason": sprintf("flagged_%s_%v_cached_%v_%s", [concat("+", m.categories), m.scores.violence, m.cached, m.failure_mode])} if m.flagged
decision := {"allowed": true, "reason": sprintf("clean_cached_%v", [m.cached])} if { m.available; not m.flagged }
decision := {"allowed": true, "reason": sprintf("unavailable_%s_%s", [m.error, m.failure_mode])} if not m.available
`

// The moderation model's verdict reaches the policy as
// input.signals.moderation beside the local signals; its failures never
// fail the decision; without a moderator there is no such signal.
func TestModerationVerdictInPolicyInput(t *testing.T) {
	t.Parallel()
	var mode atomic.Value
	mode.Store("ok")
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var in struct{ Input string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		switch mode.Load() {
		case "hang":
			<-r.Context().Done()
			return
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		flagged := strings.Contains(in.Input, "kill")
		score := 0.01
		if flagged {
			score = 0.88
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"results": []any{map[string]any{
			"flagged": flagged, "categories": map[string]bool{"violence": flagged, "hate": flagged},
			"category_scores": map[string]float64{"violence": score}}}})
	}))
	t.Cleanup(srv.Close)

	e, err := policy.New(context.Background(), policy.Config{
		Embedded: fstest.MapFS{"p.rego": {Data: []byte(moderationPolicy)}}, Query: "t/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	local, err := detect.New(detect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mod, err := detect.NewModerator(detect.ModerationConfig{URL: srv.URL, Timeout: 50 * time.Millisecond, BreakerFailures: 100}, srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Timeout: time.Second}, Deps{Eval: e, Detector: local, Moderator: mod}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mode    string
		text    string
		allowed bool
		reason  string
	}{
		{"flagged", "ok", "how to kill the neighbour's dog", false, "flagged_hate+violence_0.88_cached_false_fail_open"},
		{"flagged again: cached", "500", "how to kill the neighbour's dog", false, "flagged_hate+violence_0.88_cached_true_fail_open"},
		{"clean", "ok", "what is the capital of France?", true, "clean_cached_false"},
		{"timeout is an unavailable verdict", "hang", "hello there", true, "unavailable_timeout_fail_open"},
		{"error status is an unavailable verdict", "500", "hello", true, "unavailable_status_fail_open"},
	}
	for _, tt := range tests {
		mode.Store(tt.mode)
		out, err := p.Decide(context.Background(), Request{Phase: PhaseRequestBody, Text: tt.text})
		if err != nil {
			t.Fatalf("%s: Decide: %v", tt.name, err)
		}
		if out.Decision.Allowed != tt.allowed || out.Reason != tt.reason {
			t.Errorf("%s: allowed %v reason %q, want %v %q", tt.name, out.Decision.Allowed, out.Reason, tt.allowed, tt.reason)
		}
		if out.Signals == nil || out.Signals.Moderation == nil || out.Signals.Length.Bytes != len(tt.text) {
			t.Errorf("%s: outcome signals = %+v, want the local signals and the moderation verdict", tt.name, out.Signals)
		}
	}

	// No moderator: no signal, no call.
	before := calls.Load()
	plain, err := New(Config{Timeout: time.Second}, Deps{Eval: e, Detector: local}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := plain.Decide(context.Background(), Request{Phase: PhaseRequestBody, Text: "how to kill it"})
	if err != nil || out.Reason != "no_moderation_signal" || out.Signals.Moderation != nil || calls.Load() != before {
		t.Errorf("without a moderator: reason %q, signal %+v, calls %d (%v); want no signal and no call", out.Reason, out.Signals.Moderation, calls.Load()-before, err)
	}
}
