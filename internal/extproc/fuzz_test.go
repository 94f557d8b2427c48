package extproc_test

import (
	"context"
	"slices"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/exchange"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// FuzzExchange drives whole exchanges with arbitrary request bodies and
// arbitrary, arbitrarily split response streams: every message must get
// exactly one answer of the matching type (or an immediate response), and
// nothing may panic.
func FuzzExchange(f *testing.F) {
	f.Add("/v1/chat/completions", []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"mail a@b.io"}]}`),
		"text/event-stream", []byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi a@b.io\"}}]}\n\ndata: [DONE]\n\n"), uint16(7))
	f.Add("/v1/messages", []byte(`{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`),
		"text/event-stream", []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"y\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), uint16(30))
	f.Add("/v1/responses", []byte(`{"model":"m","input":[{"role":"user","content":"hi"}]}`),
		"application/json", []byte(`{"output":[{"type":"message","content":[{"type":"output_text","text":"ok"}]}],"usage":{"input_tokens":1}}`), uint16(0))
	f.Add("/x", []byte("plain text"), "text/plain", []byte("answer"), uint16(3))
	fx := newStack(f, extproc.Options{}, exchange.Options{MaxBodyBytes: 1 << 16, MaxEventBytes: 1 << 12})
	f.Fuzz(func(t *testing.T, path string, reqBody []byte, contentType string, stream []byte, cut uint16) {
		if len(path) == 0 || path[0] != '/' {
			path = "/" + path
		}
		req := fx.request(path, string(reqBody))
		var cuts []int
		for i := 1; len(stream) > 0 && i < 6; i++ {
			cuts = append(cuts, (int(cut)*i)%len(stream))
		}
		_, err := envoysim.Run(context.Background(), fx.client, envoysim.DefaultFilter, req, func(envoysim.Forwarded) envoysim.Upstream {
			return envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": contentType}, Chunks: envoysim.Split(stream, sortedInts(cuts)...)}
		})
		if err != nil {
			t.Fatalf("exchange failed: %v", err)
		}
	})
}

func sortedInts(a []int) []int {
	slices.Sort(a)
	return a
}
