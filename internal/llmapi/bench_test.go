package llmapi

import (
	"fmt"
	"strings"
	"testing"
)

var (
	benchChatChunk = Event{Data: []byte(`{"id":"chatcmpl-9xQk2","object":"chat.completion.chunk","created":1727000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_abc123","choices":[{"index":0,"delta":{"content":" world"},"logprobs":null,"finish_reason":null}],"usage":null}`)}
	benchAnthropic = Event{Name: "content_block_delta", Data: []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}`)}
	benchResponses = Event{Name: "response.output_text.delta", Data: []byte(`{"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_67c9","output_index":0,"content_index":0,"delta":" world","logprobs":[]}`)}
)

func BenchmarkDecodeEvent(b *testing.B) {
	for _, bc := range []struct {
		name string
		api  API
		ev   Event
	}{
		{"openai_chat", OpenAIChat, benchChatChunk},
		{"anthropic", AnthropicMessages, benchAnthropic},
		{"responses", OpenAIResponses, benchResponses},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.ev.Data)))
			for b.Loop() {
				d, err := DecodeEvent(bc.api, bc.ev)
				if err != nil || !d.HasText {
					b.Fatal(d, err)
				}
			}
		})
	}
}

// BenchmarkEventPath is what the ext_proc stream path does with one delta
// event: ParseEvent, then Meta, Ends and Filter of every string.
func BenchmarkEventPath(b *testing.B) {
	for _, bc := range []struct {
		name string
		api  API
		ev   Event
	}{
		{"openai_chat", OpenAIChat, benchChatChunk},
		{"anthropic", AnthropicMessages, benchAnthropic},
		{"responses", OpenAIResponses, benchResponses},
	} {
		b.Run(bc.name+"/filter", func(b *testing.B) {
			b.ReportAllocs()
			fn := func(Channel, string) string { return " [REDACTED]" }
			for b.Loop() {
				p := ParseEvent(bc.api, bc.ev)
				if _, err := p.Meta(); err != nil {
					b.Fatal(err)
				}
				p.Ends()
				if _, _, err := p.Filter(true, fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// request4KiB builds a chat request of about 4 KiB: a system prompt, a
// few turns with parts and a tool call.
func request4KiB() []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","stream":true,"max_tokens":1024,"temperature":0.7,"messages":[`)
	sb.WriteString(`{"role":"system","content":"You are a helpful assistant. Answer concisely and cite sources when you can."}`)
	turn := 0
	for sb.Len() < 3900 {
		fmt.Fprintf(&sb, `,{"role":"user","content":[{"type":"text","text":"Question %d: what is the capital of France, and why is it\nhistorically important? \u00e9"}]}`, turn)
		fmt.Fprintf(&sb, `,{"role":"assistant","content":"Paris is the capital (answer %d). It has been the seat of government since the \"Capetians\"."}`, turn)
		turn++
	}
	sb.WriteString(`],"tools":[{"type":"function","function":{"name":"search","parameters":{"type":"object"}}}]}`)
	return []byte(sb.String())
}

func BenchmarkParseRequest4KiB(b *testing.B) {
	body := request4KiB()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseRequest(OpenAIChat, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEditRequest4KiB(b *testing.B) {
	body := request4KiB()
	e := RequestEdit{
		Text:           func(_, s string) string { return strings.ReplaceAll(s, "Paris", "[CITY]") },
		ClampMaxTokens: 512,
		IncludeUsage:   true,
		SystemSuffix:   "\nFollow the policy.",
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := EditRequest(OpenAIChat, body, e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSSEFeed(b *testing.B) {
	stream := readFixture(b, "openai_chat_stream.txt")
	for _, chunk := range []int{64, 1024} {
		b.Run(fmt.Sprintf("chunk%d", chunk), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			n := 0
			emit := func(Event) error { n++; return nil }
			for b.Loop() {
				var p SSEParser
				for i := 0; i < len(stream); i += chunk {
					if err := p.Feed(stream[i:min(i+chunk, len(stream))], emit); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkToolCallAssembler is BenchmarkEventPath's work on a text delta
// without (before) and with (after) following the stream's tool calls, the
// cost ext_proc adds to every event of an answer that makes no tool call
// (issue 18: at most 10 % per chunk).
func BenchmarkToolCallAssembler(b *testing.B) {
	for _, bc := range []struct {
		name string
		api  API
		ev   Event
	}{
		{"openai_chat", OpenAIChat, benchChatChunk},
		{"anthropic", AnthropicMessages, benchAnthropic},
		{"responses", OpenAIResponses, benchResponses},
	} {
		for _, follow := range []bool{false, true} {
			name := bc.name + "/before"
			if follow {
				name = bc.name + "/after"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				a := NewToolCallAssembler(bc.api)
				fn := func(Channel, string) string { return " [REDACTED]" }
				for b.Loop() {
					p := ParseEvent(bc.api, bc.ev)
					if follow {
						if _, _, err := a.Observe(&p); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := p.Meta(); err != nil {
						b.Fatal(err)
					}
					p.Ends()
					if _, _, err := p.Filter(true, fn); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkToolCallObserve is the assembler alone on a text delta: the
// absolute cost BenchmarkToolCallAssembler's after adds to its before.
func BenchmarkToolCallObserve(b *testing.B) {
	for _, bc := range []struct {
		name string
		api  API
		ev   Event
	}{
		{"openai_chat", OpenAIChat, benchChatChunk},
		{"anthropic", AnthropicMessages, benchAnthropic},
		{"responses", OpenAIResponses, benchResponses},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			a := NewToolCallAssembler(bc.api)
			p := ParseEvent(bc.api, bc.ev)
			for b.Loop() {
				if _, _, err := a.Observe(&p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
