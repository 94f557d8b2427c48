package exchange_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/bulwark-ai/bulwark/internal/exchange"
)

// BenchmarkStreamChunkDialects: the exchange's cost for one streamed chunk
// carrying one delta of the same text, per dialect: an OpenAI chat SSE
// event, a Gemini SSE event and streamed-array element, a Bedrock
// ConverseStream event-stream frame. Each run is one long answer, chunk
// after chunk, with redaction on (the default policy's rules).
func BenchmarkStreamChunkDialects(b *testing.B) {
	const text = " the quarterly"
	frame := func(typ string, payload string) []byte {
		var buf bytes.Buffer
		hs := eventstream.Headers{
			{Name: ":event-type", Value: eventstream.StringValue(typ)},
			{Name: ":content-type", Value: eventstream.StringValue("application/json")},
			{Name: ":message-type", Value: eventstream.StringValue("event")},
		}
		_ = eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: hs, Payload: []byte(payload)})
		return buf.Bytes()
	}
	gemini := `{"candidates":[{"content":{"parts":[{"text":"` + text + `"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash","responseId":"mAitaLmkHPPlz7IPvtfUqQ4"}`
	for _, bc := range []struct {
		name, path, body, ct string
		first, chunk         []byte
	}{
		{"openai", "/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "text/event-stream",
			nil, []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"` + text + `"},"finish_reason":null}]}` + "\n\n")},
		{"gemini_sse", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`, "text/event-stream",
			nil, []byte("data: " + gemini + "\r\n\r\n")},
		{"gemini_array", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`, "application/json",
			[]byte("[" + gemini), []byte("\n,\r\n" + gemini)},
		{"bedrock_converse", "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse-stream", `{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`, "application/vnd.amazon.eventstream",
			nil, frame("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"`+text+`"},"p":"abcdefghijklmnop"}`)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			c, key := newCore(b, exchange.Options{})
			x := c.Start("bench")
			defer x.End(ctx)
			if res, err := x.RequestHeaders(ctx, head(key, bc.path, true)); err != nil || res.Deny != nil {
				b.Fatal(err)
			}
			if res, err := x.RequestBody(ctx, []byte(bc.body)); err != nil || res.Deny != nil {
				b.Fatal(err)
			}
			if res, err := x.ResponseHeaders(ctx, 200, map[string]string{"content-type": bc.ct}, false); err != nil || res.ReadBody != exchange.BodyStreamed {
				b.Fatal(res, err)
			}
			if bc.first != nil {
				if _, err := x.ResponseChunk(ctx, bc.first, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.chunk)))
			for b.Loop() {
				res, err := x.ResponseChunk(ctx, bc.chunk, false)
				if err != nil || res.Cut != nil {
					b.Fatal(res.Cut, err)
				}
			}
		})
	}
}
