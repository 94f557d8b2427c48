package api

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

func TestRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    *bulwarkv1.Decision
		want codes.Code // OK: the denial is an answer
	}{
		{"allowed", &bulwarkv1.Decision{Allowed: true}, codes.OK},
		{"missing credential", &bulwarkv1.Decision{HttpStatus: 401, Phase: phaseRequestHeaders, Reason: "missing_credential"}, codes.Unauthenticated},
		{"401 in a later phase", &bulwarkv1.Decision{HttpStatus: 401, Phase: phaseRequestBody}, codes.Unauthenticated},
		{"role not allowed", &bulwarkv1.Decision{HttpStatus: 403, Phase: phaseRequestHeaders, Reason: "role_not_allowed"}, codes.PermissionDenied},
		{"route not found", &bulwarkv1.Decision{HttpStatus: 404, Phase: phaseRequestHeaders}, codes.PermissionDenied},
		{"request rate", &bulwarkv1.Decision{HttpStatus: 429, Phase: phaseRequestHeaders, Headers: map[string]string{"retry-after": "3"}}, codes.ResourceExhausted},
		{"token quota", &bulwarkv1.Decision{HttpStatus: 429, Phase: phaseRequestBody}, codes.ResourceExhausted},
		{"limiter fails closed", &bulwarkv1.Decision{HttpStatus: 503, Phase: phaseRequestHeaders}, codes.Unavailable},
		{"redaction failed", &bulwarkv1.Decision{HttpStatus: 500, Phase: phaseRequestBody}, codes.Internal},
		{"prompt injection", &bulwarkv1.Decision{HttpStatus: 403, Phase: phaseRequestBody, Reason: "prompt_injection"}, codes.OK},
		{"model not allowed", &bulwarkv1.Decision{HttpStatus: 403, Phase: phaseRequestBody}, codes.OK},
		{"answer blocked", &bulwarkv1.Decision{HttpStatus: 403, Phase: phaseResponseBody}, codes.OK},
		{"stream cut", &bulwarkv1.Decision{Phase: phaseResponseBodyChunk, Reason: "canary_leak"}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := refusal(tc.d)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
			if err == nil {
				return
			}
			var info *errdetails.ErrorInfo
			var retry *errdetails.RetryInfo
			for _, d := range status.Convert(err).Details() {
				switch v := d.(type) {
				case *errdetails.ErrorInfo:
					info = v
				case *errdetails.RetryInfo:
					retry = v
				}
			}
			if info == nil || info.GetDomain() != ErrorDomain || info.GetMetadata()["phase"] != tc.d.GetPhase() {
				t.Fatalf("ErrorInfo %v", info)
			}
			if (tc.d.GetHeaders()["retry-after"] != "") != (retry != nil) {
				t.Fatalf("RetryInfo %v for headers %v", retry, tc.d.GetHeaders())
			}
		})
	}
}

func TestValidRequestBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		api        llmapi.API
		wantErr    string // "" when valid
	}{
		{"chat", `{"model":"m","messages":[]}`, llmapi.OpenAIChat, ""},
		{"chat with max_tokens and stream", `{"model":"m","messages":[],"max_tokens":5,"stream":true}`, llmapi.OpenAIChat, ""},
		{"null model", `{"model":null,"messages":[]}`, llmapi.OpenAIChat, ""},
		{"completions with a string prompt", `{"model":"m","prompt":"hi"}`, llmapi.OpenAICompletions, ""},
		{"responses with a string input", `{"model":"m","input":"hi"}`, llmapi.OpenAIResponses, ""},
		{"generic object", `{"anything":1}`, llmapi.Generic, ""},
		{"empty", ` `, llmapi.OpenAIChat, "is empty"},
		{"array", `[]`, llmapi.OpenAIChat, "not a JSON object"},
		{"truncated", `{"model":`, llmapi.OpenAIChat, "not a JSON object"},
		{"no messages", `{"model":"m"}`, llmapi.OpenAIChat, `without "messages"`},
		{"messages a string", `{"model":"m","messages":"hi"}`, llmapi.AnthropicMessages, "must be an array"},
		{"prompt a number", `{"model":"m","prompt":3}`, llmapi.OpenAICompletions, "an array or a string"},
		{"max_tokens a string", `{"model":"m","messages":[],"max_tokens":"5"}`, llmapi.OpenAIChat, `"max_tokens" must be a number`},
		{"stream a string", `{"model":"m","messages":[],"stream":"yes"}`, llmapi.OpenAIChat, `"stream" must be a boolean`},
		{"too large", `{"model":"m","messages":[],"x":"` + strings.Repeat("a", 100) + `"}`, llmapi.OpenAIChat, "at most 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			max := 1 << 20
			if tc.name == "too large" {
				max = 64
			}
			err := validRequestBody(max, "body", tc.api, tc.body)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected %v", err)
			case tc.wantErr != "" && (status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want INVALID_ARGUMENT with %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidHeaders(t *testing.T) {
	t.Parallel()
	for h, ok := range map[string]bool{"x-tenant": true, "traceparent": true, "X-Upper": false, "x y": false,
		"authorization": false, "x-api-key": false, "content-length": false, ":path": false} {
		err := validHeaders(map[string]string{h: "v"})
		if (err == nil) != ok {
			t.Errorf("header %q: %v, want ok=%v", h, err, ok)
		}
	}
	if err := validHeaders(map[string]string{"x-a": "v\r\nx-b: w"}); err == nil {
		t.Error("CRLF in a value accepted")
	}
}

func TestGRPCCodeName(t *testing.T) {
	t.Parallel()
	for c, want := range map[codes.Code]string{codes.OK: "ok", codes.PermissionDenied: "permission_denied",
		codes.FailedPrecondition: "failed_precondition", codes.Unauthenticated: "unauthenticated"} {
		if got := grpcCodeName(c); got != want {
			t.Errorf("grpcCodeName(%v) = %q, want %q", c, got, want)
		}
	}
}
