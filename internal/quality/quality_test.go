package quality

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNormalizeFinish(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"stop": FinishStop, "end_turn": FinishStop, "STOP": FinishStop, "completed": FinishStop,
		"length": FinishLength, "max_tokens": FinishLength, "MAX_TOKENS": FinishLength, "incomplete": FinishLength,
		"tool_calls": FinishToolCalls, "tool_use": FinishToolCalls, "function_call": FinishToolCalls,
		"content_filter": FinishContentFilter, "SAFETY": FinishContentFilter, "guardrail_intervened": FinishContentFilter,
		"failed": FinishError, "": FinishNone, "pause_turn": FinishOther,
	} {
		if got := NormalizeFinish(in); got != want {
			t.Errorf("NormalizeFinish(%q) = %q, want %q", in, got, want)
		}
	}
}

const personSchema = `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`

func TestParseFormat(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(secret, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body      string
		json, schema    bool
		schemaErrSubstr string
	}{
		{"no format", `{"model":"m","messages":[]}`, false, false, ""},
		{"json_object", `{"response_format":{"type":"json_object"}}`, true, false, ""},
		{"text format is not JSON", `{"response_format":{"type":"text"}}`, false, false, ""},
		{"chat json_schema", `{"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":` + personSchema + `}}}`, true, true, ""},
		{"responses text.format", `{"text":{"format":{"type":"json_schema","name":"p","schema":` + personSchema + `}}}`, true, true, ""},
		{"gemini mime type", `{"generationConfig":{"responseMimeType":"application/json"}}`, true, false, ""},
		{"gemini json schema", `{"generationConfig":{"responseMimeType":"application/json","responseJsonSchema":` + personSchema + `}}`, true, true, ""},
		{"a file reference is not followed", `{"response_format":{"type":"json_schema","json_schema":{"schema":{"$ref":"file://` + secret + `"}}}}`, true, false, "not followed"},
		{"bad schema", `{"response_format":{"type":"json_schema","json_schema":{"schema":{"type":17}}}}`, true, false, "schema"},
	} {
		f, err := ParseFormat([]byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if f.JSON != tc.json || (f.Schema != nil) != tc.schema || !strings.Contains(f.SchemaError, tc.schemaErrSubstr) ||
			(tc.schemaErrSubstr == "" && f.SchemaError != "") {
			t.Errorf("%s: got JSON %v schema %v error %q", tc.name, f.JSON, f.Schema != nil, f.SchemaError)
		}
	}
	if _, err := ParseFormat([]byte(`{"response_format": [`)); err == nil {
		t.Error("malformed body read without error")
	}
}

func TestAssess(t *testing.T) {
	t.Parallel()
	schema, _ := ParseFormat([]byte(`{"response_format":{"type":"json_schema","json_schema":{"schema":` + personSchema + `}}}`))
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		a     Answer
		check func(Signals) bool
	}{
		{"stop", Answer{Status: 200, Text: "Paris.", FinishReason: "stop"},
			func(s Signals) bool {
				return s.FinishReason == FinishStop && !s.Empty && !s.Truncated && !s.Refusal.Detected
			}},
		{"empty", Answer{Status: 200, Text: "  ", FinishReason: "stop"}, func(s Signals) bool { return s.Empty }},
		{"tool call only is not empty", Answer{Status: 200, Calls: 1, FinishReason: "tool_calls"},
			func(s Signals) bool { return !s.Empty && s.FinishReason == FinishToolCalls }},
		{"truncated by reason", Answer{Status: 200, Text: "a", FinishReason: "length"}, func(s Signals) bool { return s.Truncated }},
		{"truncated at the cap", Answer{Status: 200, Text: "a", FinishReason: "stop", MaxTokens: 10, OutputTokens: 10},
			func(s Signals) bool { return s.Truncated }},
		{"refusal", Answer{Status: 200, Text: "I'm sorry, but I can't help with that."}, func(s Signals) bool { return s.Refusal.Detected }},
		{"error status", Answer{Status: 500, Text: `{"error":"x"}`}, func(s Signals) bool { return s.FinishReason == FinishError && !s.Empty }},
		{"json valid", Answer{Status: 200, Text: `{"name":"a","age":3}`, Format: schema},
			func(s Signals) bool { return s.JSONRequested && s.JSONValid }},
		{"json not json", Answer{Status: 200, Text: `{"name":`, Format: schema},
			func(s Signals) bool { return !s.JSONValid && s.JSONError == "not_json" }},
		{"json schema mismatch", Answer{Status: 200, Text: `{"name":"a","age":"3"}`, Format: schema},
			func(s Signals) bool { return !s.JSONValid && s.JSONError == "schema_mismatch" }},
		{"json trailing data", Answer{Status: 200, Text: `{"name":"a","age":3} extra`, Format: Format{JSON: true}},
			func(s Signals) bool { return !s.JSONValid }},
		{"timing", Answer{Status: 200, Text: "x", OutputTokens: 100, Start: t0, FirstToken: t0.Add(500 * time.Millisecond), End: t0.Add(2500 * time.Millisecond)},
			func(s Signals) bool { return s.TimeToFirstToken == 500*time.Millisecond && s.TokensPerSecond == 50 }},
	} {
		if s := Assess(tc.a); !tc.check(s) {
			t.Errorf("%s: %+v", tc.name, s)
		}
	}
}

// A model that refuses 2 % of the time is quiet; when it starts refusing
// most answers, one jump is reported (and the gauge set), not one per answer.
func TestMonitorJump(t *testing.T) {
	t.Parallel()
	var jumps []Jump
	reg := prometheus.NewRegistry()
	m, err := NewMonitor(MonitorConfig{OnJump: func(j Jump) { jumps = append(jumps, j) }}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ok := Signals{FinishReason: FinishStop}
	ref := Signals{FinishReason: FinishStop}
	ref.Refusal.Detected = true
	for i := range 500 {
		if i%50 == 0 {
			m.Observe("gpt-x", ref)
		} else {
			m.Observe("gpt-x", ok)
		}
	}
	if len(jumps) != 0 {
		t.Fatalf("jumps at the baseline: %+v", jumps)
	}
	for range 40 {
		m.Observe("gpt-x", ref)
	}
	if len(jumps) != 1 || jumps[0].Signal != "refusal" || jumps[0].Model != "gpt-x" {
		t.Fatalf("jumps = %+v, want one refusal jump", jumps)
	}
	if got := testutil.ToFloat64(m.jumpGauge.WithLabelValues("gpt-x", "refusal")); got != 1 {
		t.Fatalf("jump gauge %v", got)
	}
	if got := testutil.ToFloat64(m.refusals.WithLabelValues("gpt-x")); got != 50 {
		t.Fatalf("refusals counted %v, want 50", got)
	}
	// Another model is judged on its own baseline.
	for range 60 {
		m.Observe("other", ok)
	}
	if len(jumps) != 1 {
		t.Fatalf("jumps = %+v", jumps)
	}
}

func FuzzParseFormat(f *testing.F) {
	f.Add([]byte(`{"response_format":{"type":"json_schema","json_schema":{"schema":` + personSchema + `}}}`))
	f.Add([]byte(`{"generationConfig":{"responseMimeType":"application/json"}}`))
	f.Add([]byte(`{"format":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fm, err := ParseFormat(body)
		if err != nil && (fm.JSON || fm.Schema != nil) {
			t.Fatalf("error %v with a format %+v", err, fm)
		}
		if fm.Schema != nil {
			_ = Assess(Answer{Status: 200, Text: string(body), Format: fm})
		}
	})
}

// BenchmarkAnswerQuality is what judging one ordinary 1 KiB answer costs
// an exchange: the format check of a 4 KiB request naming none, Assess
// (refusal detector included) and the Monitor's counting.
func BenchmarkAnswerQuality(b *testing.B) {
	req := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("please summarise the report ", 146) + `"}]}`)
	answer := strings.Repeat("The quarterly report shows revenue growth of 12% and three main risks. ", 14)
	m, err := NewMonitor(MonitorConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		f, _ := ParseFormat(req)
		s := Assess(Answer{Status: 200, Text: answer, FinishReason: "stop", MaxTokens: 1024, OutputTokens: 200, Format: f})
		m.Observe("gpt-4o", s)
	}
}
