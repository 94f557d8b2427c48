package llmapi

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestErrorBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		api     API
		status  int
		reason  string
		message string
		want    string
	}{
		{"openai 403", OpenAIChat, 403, "prompt_injection", "Request blocked by policy.",
			`{"error":{"message":"Request blocked by policy.","type":"permission_error","code":"prompt_injection","param":null}}`},
		{"openai 400", OpenAIResponses, 400, "bad", "m", `{"error":{"message":"m","type":"invalid_request_error","code":"bad","param":null}}`},
		{"openai 401", OpenAIEmbeddings, 401, "r", "m", `{"error":{"message":"m","type":"authentication_error","code":"r","param":null}}`},
		{"openai 404", OpenAICompletions, 404, "r", "m", `{"error":{"message":"m","type":"not_found_error","code":"r","param":null}}`},
		{"openai 413", OpenAIChat, 413, "r", "m", `{"error":{"message":"m","type":"invalid_request_error","code":"r","param":null}}`},
		{"openai 429", OpenAIChat, 429, "rate_limited", "slow down", `{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limited","param":null}}`},
		{"openai 503", OpenAIChat, 503, "r", "m", `{"error":{"message":"m","type":"server_error","code":"r","param":null}}`},
		{"openai empty reason", OpenAIChat, 400, "", "m", `{"error":{"message":"m","type":"invalid_request_error","code":null,"param":null}}`},
		{"generic is openai style", Generic, 403, "r", "m", `{"error":{"message":"m","type":"permission_error","code":"r","param":null}}`},
		{"openai escaping", OpenAIChat, 403, `a"b`, "line\n<tag> & \u2028", `{"error":{"message":"line\n<tag> & \u2028","type":"permission_error","code":"a\"b","param":null}}`},
		{"anthropic 400", AnthropicMessages, 400, "r", "m", `{"type":"error","error":{"type":"invalid_request_error","message":"m"}}`},
		{"anthropic 401", AnthropicMessages, 401, "r", "m", `{"type":"error","error":{"type":"authentication_error","message":"m"}}`},
		{"anthropic 403", AnthropicMessages, 403, "r", "m", `{"type":"error","error":{"type":"permission_error","message":"m"}}`},
		{"anthropic 404", AnthropicMessages, 404, "r", "m", `{"type":"error","error":{"type":"not_found_error","message":"m"}}`},
		{"anthropic 413", AnthropicMessages, 413, "r", "m", `{"type":"error","error":{"type":"request_too_large","message":"m"}}`},
		{"anthropic 429", AnthropicMessages, 429, "r", "m", `{"type":"error","error":{"type":"rate_limit_error","message":"m"}}`},
		{"anthropic 500", AnthropicMessages, 500, "r", "m", `{"type":"error","error":{"type":"api_error","message":"m"}}`},
		{"anthropic 529", AnthropicMessages, 529, "r", "m", `{"type":"error","error":{"type":"overloaded_error","message":"m"}}`},
		{"anthropic other 4xx", AnthropicMessages, 422, "r", "m", `{"type":"error","error":{"type":"invalid_request_error","message":"m"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := ErrorBody(tt.api, tt.status, tt.reason, tt.message)
			if !json.Valid(got) {
				t.Fatalf("invalid JSON: %s", got)
			}
			if !jsonEqual(t, got, []byte(tt.want)) {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	// Invalid UTF-8 in a message still yields valid JSON.
	if got := ErrorBody(OpenAIChat, 403, "\xff", "\xfe"); !json.Valid(got) {
		t.Errorf("invalid UTF-8: %s", got)
	}
}

func TestErrorEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		api      API
		wantName string
		wantData string
	}{
		{OpenAIChat, "", `{"error":{"message":"stopped","type":"permission_error","code":"pii","param":null}}`},
		{OpenAICompletions, "", `{"error":{"message":"stopped","type":"permission_error","code":"pii","param":null}}`},
		{Generic, "", `{"error":{"message":"stopped","type":"permission_error","code":"pii","param":null}}`},
		{OpenAIResponses, "error", `{"type":"error","code":"pii","message":"stopped","param":null,"error":{"message":"stopped","type":"permission_error","code":"pii","param":null}}`},
		{AnthropicMessages, "error", `{"type":"error","error":{"type":"permission_error","message":"stopped"}}`},
	}
	for _, tt := range tests {
		raw := ErrorEvent(tt.api, "pii", "stopped")
		if !strings.HasSuffix(string(raw), "\n\n") {
			t.Errorf("%s: event not terminated: %q", tt.api, raw)
		}
		evs, pending, err := feedAll(t, 0, raw)
		if err != nil || len(evs) != 1 || len(pending) != 0 {
			t.Fatalf("%s: parse: %v %d events, pending %q", tt.api, err, len(evs), pending)
		}
		if evs[0].Name != tt.wantName || !jsonEqual(t, evs[0].Data, []byte(tt.wantData)) {
			t.Errorf("%s: got %q %s, want %q %s", tt.api, evs[0].Name, evs[0].Data, tt.wantName, tt.wantData)
		}
		d, err := DecodeEvent(tt.api, evs[0])
		if err != nil || !d.Error {
			t.Errorf("%s: DecodeEvent = %+v, %v; want Error", tt.api, d, err)
		}
	}
	got := ErrorEventStatus(AnthropicMessages, 429, "r", "m")
	evs, _, _ := feedAll(t, 0, got)
	var v struct{ Error map[string]string }
	if err := json.Unmarshal(evs[0].Data, &v); err != nil || !reflect.DeepEqual(v.Error, map[string]string{"type": "rate_limit_error", "message": "m"}) {
		t.Errorf("ErrorEventStatus: %s %v", evs[0].Data, err)
	}
}
