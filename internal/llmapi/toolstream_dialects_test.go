package llmapi

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

// assembleFramed is assemble for any framing: the calls in the order they
// completed ("id name args", "(end)" when CompleteAll closed them) and, per
// event, whether it touched a call. Errors end the stream.
func assembleFramed(api API, fr Framing, b []byte, split int) (done []string, touched []bool, err error) {
	a := NewToolCallAssembler(api)
	p := NewStreamParser(fr, api, 1<<16)
	emit := func(ev Event) error {
		pe := ParseEvent(api, ev)
		tc, comp, err := a.Observe(&pe)
		if err != nil {
			return err
		}
		touched = append(touched, len(tc) > 0)
		for _, i := range comp {
			c := a.Calls()[i]
			if !c.Complete {
				panic("completed call not complete")
			}
			done = append(done, c.ID+" "+c.Name+" "+c.Arguments)
		}
		return nil
	}
	if split > 0 && split < len(b) {
		if err := p.Feed(b[:split], emit); err != nil {
			return done, touched, err
		}
		b = b[split:]
	}
	if err := p.Feed(b, emit); err != nil {
		return done, touched, err
	}
	for _, i := range a.CompleteAll() {
		c := a.Calls()[i]
		done = append(done, c.ID+" "+c.Name+" "+c.Arguments+" (end)")
	}
	if a.Open() {
		panic("open after CompleteAll")
	}
	return done, touched, nil
}

// frames encodes event-stream messages: {event type, payload}; a type
// starting with "!" is an exception of that type.
func frames(t testing.TB, evs ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, e := range evs {
		hs := newEventHeaders(e[0])
		if name, ok := strings.CutPrefix(e[0], "!"); ok {
			hs = exceptionHeaders(name)
		}
		if err := eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: hs, Payload: []byte(e[1])}); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// invokeFrames wraps Anthropic events as InvokeModelWithResponseStream does.
func invokeFrames(t testing.TB, inner ...string) []byte {
	evs := make([][2]string, len(inner))
	for i, s := range inner {
		evs[i] = [2]string{"chunk", `{"bytes":"` + b64(s) + `","p":"abc"}`}
	}
	return frames(t, evs...)
}

const (
	geminiToolSSE = `data: {"candidates": [{"content": {"parts": [{"text": "Let me fetch it."}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash"}

data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "fetch_url","args": {"url": "https://x.example/"}}},{"functionCall": {"id": "c2","name": "now","args": {}}}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash"}

data: {"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 11,"totalTokenCount": 19}}

`
	geminiToolArray = `[{"candidates": [{"content": {"parts": [{"text": "Let me fetch it."}],"role": "model"},"index": 0}]}
,
{"candidates": [{"content": {"parts": [{"function_call": {"name": "fetch_url","args": {"url": "https://x.example/"}}}],"role": "model"},"finishReason": "STOP","index": 1}]}
]`
)

func converseToolStream(t testing.TB) []byte {
	return frames(t,
		[2]string{"messageStart", `{"role":"assistant","p":"abc"}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Let me look."},"p":"ab"}`},
		[2]string{"contentBlockStop", `{"contentBlockIndex":0}`},
		[2]string{"contentBlockStart", `{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tu_1","name":"fetch_url"}},"p":"abcd"}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"url\":"}}}`},
		[2]string{"contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"https://x.example/\"}"}}}`},
		[2]string{"contentBlockStop", `{"contentBlockIndex":1}`},
		[2]string{"contentBlockStart", `{"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"tu_2","name":"now"}}}`},
		[2]string{"contentBlockStop", `{"contentBlockIndex":2}`},
		[2]string{"messageStop", `{"stopReason":"tool_use"}`},
		[2]string{"metadata", `{"usage":{"inputTokens":3,"outputTokens":9,"totalTokens":12}}`},
	)
}

// TestDialectToolCallAssembler: Bedrock Converse and InvokeModel (Anthropic
// inside) and Gemini (SSE and the streamed array) tool calls are assembled
// with id, name and arguments, complete when their API says so, and the
// result does not depend on where the bytes are split.
func TestDialectToolCallAssembler(t *testing.T) {
	for _, tc := range []struct {
		name    string
		api     API
		fr      Framing
		stream  []byte
		want    []string
		touched []bool
	}{
		{"converse, arguments over deltas, two blocks", BedrockConverse, FramingEventStream, converseToolStream(t),
			[]string{`tu_1 fetch_url {"url":"https://x.example/"}`, `tu_2 now `},
			[]bool{false, false, false, true, true, true, true, true, true, false, false}},
		{"converse fixture", BedrockConverse, FramingEventStream, converseStream(t),
			[]string{`tooluse_x1 send_mail {"to":"bob"}`},
			[]bool{false, false, false, false, false, true, true, true, false, false}},
		{"converse cut by an exception mid-call", BedrockConverse, FramingEventStream, frames(t,
			[2]string{"contentBlockStart", `{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"tu_1","name":"rm"}}}`},
			[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"pa"}}}`},
			[2]string{"!throttlingException", `{"message":"slow down"}`}),
			[]string{`tu_1 rm {"pa`}, []bool{true, true, true}},
		{"converse toolUse delta without its start, escaped key", BedrockConverse, FramingEventStream, frames(t,
			[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"tool\u0055se":{"input":"{}"}}}`}),
			[]string{`  {} (end)`}, []bool{true}},
		{"converse text only", BedrockConverse, FramingEventStream, frames(t,
			[2]string{"contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"toolUse is a word"}}`},
			[2]string{"contentBlockStop", `{"contentBlockIndex":0}`}),
			nil, []bool{false, false}},
		{"invoke model, Anthropic tool_use inside", BedrockInvoke, FramingEventStream, invokeFrames(t,
			`{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}`,
			`{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"fetch_url","input":{}}}`,
			`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"url\": \"https://x"}}`,
			`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":".example/\"}"}}`,
			`{"type":"content_block_stop","index":0}`,
			`{"type":"message_stop"}`),
			[]string{`toolu_1 fetch_url {"url": "https://x.example/"}`}, []bool{false, true, true, true, true, false}},
		{"gemini sse, two calls in one chunk", GeminiGenerate, FramingSSE, []byte(geminiToolSSE),
			[]string{` fetch_url {"url":"https://x.example/"}`, `c2 now {}`}, []bool{false, true, false}},
		{"gemini array, snake_case, candidate index", GeminiGenerate, FramingJSONArray, []byte(geminiToolArray),
			[]string{` fetch_url {"url":"https://x.example/"}`}, []bool{false, true, false}},
		{"gemini escaped key", GeminiGenerate, FramingSSE, []byte(`data: {"candidates":[{"content":{"parts":[{"function\u0043all":{"name":"rm","args":{"p":1}}}]}}]}` + "\n\n"),
			[]string{` rm {"p":1}`}, []bool{true}},
		{"gemini text mentioning functionCall", GeminiGenerate, FramingSSE, []byte(`data: {"candidates":[{"content":{"parts":[{"text":"a functionCall part"}]}}]}` + "\n\n"),
			nil, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, touched, err := assembleFramed(tc.api, tc.fr, tc.stream, 0)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if fmt.Sprint(touched) != fmt.Sprint(tc.touched) {
				t.Errorf("touched %v, want %v", touched, tc.touched)
			}
			for split := 1; split < len(tc.stream); split++ {
				g, _, err := assembleFramed(tc.api, tc.fr, tc.stream, split)
				if err != nil || strings.Join(g, "\n") != strings.Join(got, "\n") {
					t.Fatalf("split at %d: %v %v, want %v", split, g, err, got)
				}
			}
		})
	}
}

// FuzzDialectToolCalls: any bytes in any dialect's framing, split anywhere,
// never panic and give the same calls whatever the split.
func FuzzDialectToolCalls(f *testing.F) {
	type kind struct {
		api API
		fr  Framing
	}
	kinds := []kind{{BedrockConverse, FramingEventStream}, {BedrockInvoke, FramingEventStream}, {GeminiGenerate, FramingSSE}, {GeminiGenerate, FramingJSONArray}}
	f.Add(converseToolStream(f), uint16(40), uint8(0))
	f.Add(converseStream(f), uint16(300), uint8(0))
	f.Add(invokeFrames(f, `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}`), uint16(20), uint8(1))
	f.Add([]byte(geminiToolSSE), uint16(150), uint8(2))
	f.Add([]byte(geminiToolArray), uint16(90), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, split uint16, sel uint8) {
		k := kinds[int(sel)%len(kinds)]
		whole, _, werr := assembleFramed(k.api, k.fr, data, 0)
		parts, _, perr := assembleFramed(k.api, k.fr, data, int(split))
		if (werr == nil) != (perr == nil) {
			return // a malformed stream fails at a point that depends on the split
		}
		if werr == nil && strings.Join(whole, "\n") != strings.Join(parts, "\n") {
			t.Fatalf("split at %d changed the calls:\n%q\n%q", split, whole, parts)
		}
	})
}
