package llmapi

import (
	"testing"
)

// BenchmarkDialectChunk is what the stream path does with one chunk
// carrying one delta of the same text, per framing: split it into events,
// read its usage and ends, filter its strings (the text replaced, so the
// event is re-encoded in its framing).
func BenchmarkDialectChunk(b *testing.B) {
	const text = " the quarterly"
	gemini := `{"candidates":[{"content":{"parts":[{"text":"` + text + `"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash","responseId":"mAitaLmkHPPlz7IPvtfUqQ4"}`
	for _, bc := range []struct {
		name  string
		api   API
		fr    Framing
		first []byte
		chunk []byte
	}{
		{"openai", OpenAIChat, FramingSSE, nil, []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"` + text + `"},"finish_reason":null}]}` + "\n\n")},
		{"gemini_sse", GeminiGenerate, FramingSSE, nil, []byte("data: " + gemini + "\r\n\r\n")},
		{"gemini_array", GeminiGenerate, FramingJSONArray, []byte("[" + gemini), []byte("\n,\r\n" + gemini)},
		{"bedrock_converse", BedrockConverse, FramingEventStream, nil, encodeMessage(newEventHeaders("contentBlockDelta"), []byte(`{"contentBlockIndex":0,"delta":{"text":"`+text+`"},"p":"abcdefghijklmnop"}`))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := NewStreamParser(bc.fr, bc.api, 0)
			var out []byte
			fn := func(ch Channel, s string) string {
				if ch.Field != "" {
					return ""
				}
				return s
			}
			emit := func(ev Event) error {
				pe := ParseEvent(bc.api, ev)
				if _, err := pe.Meta(); err != nil {
					return err
				}
				pe.Ends()
				nev, _, err := pe.Filter(true, fn)
				out = append(out[:0], nev.Raw...)
				return err
			}
			if bc.first != nil {
				if err := p.Feed(bc.first, emit); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.chunk)))
			for b.Loop() {
				if err := p.Feed(bc.chunk, emit); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
