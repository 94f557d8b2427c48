package envoy

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestProviderKeysStripped: Azure OpenAI's api-key and Gemini's
// x-goog-api-key are credentials: with strip set they leave the policy
// input (headers and header_map alike), as Bulwark's own do.
func TestProviderKeysStripped(t *testing.T) {
	h := map[string]string{":path": "/openai/deployments/d/chat/completions", "api-key": "azure-secret", "x-goog-api-key": "goog-secret", "accept": "*/*"}
	req := HeadersCheckRequest(h, nil, nil)
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "api-key", RawValue: []byte("azure-secret")}, {Key: "accept", RawValue: []byte("*/*")}}}
	req.Attributes.Request.Http.HeaderMap = hm
	Credentials(req, true)
	got := req.GetAttributes().GetRequest().GetHttp()
	if _, ok := got.GetHeaders()["api-key"]; ok {
		t.Error("api-key left in the headers")
	}
	if _, ok := got.GetHeaders()["x-goog-api-key"]; ok {
		t.Error("x-goog-api-key left in the headers")
	}
	if len(got.GetHeaderMap().GetHeaders()) != 1 || got.GetHeaderMap().GetHeaders()[0].GetKey() != "accept" {
		t.Errorf("header_map %v", got.GetHeaderMap().GetHeaders())
	}
	if got.GetHeaders()["accept"] != "*/*" {
		t.Error("other headers touched")
	}
}
