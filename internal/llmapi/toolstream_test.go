package llmapi

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// assemble feeds a whole SSE stream through the parser and an assembler and
// returns the calls, each rendered "id name args complete", in the order
// they completed, plus for each event whether it touched a call.
func assemble(t testing.TB, api API, stream string, split int) (done []string, touched []bool) {
	t.Helper()
	a := NewToolCallAssembler(api)
	var p SSEParser
	emit := func(ev Event) error {
		pe := ParseEvent(api, ev)
		tc, comp, err := a.Observe(&pe)
		if err != nil {
			return err
		}
		touched = append(touched, len(tc) > 0)
		for _, i := range comp {
			c := a.Calls()[i]
			done = append(done, fmt.Sprintf("%s %s %s", c.ID, c.Name, c.Arguments))
		}
		return nil
	}
	b := []byte(stream)
	if split > 0 && split < len(b) {
		if err := p.Feed(b[:split], emit); err != nil {
			t.Fatal(err)
		}
		b = b[split:]
	}
	if err := p.Feed(b, emit); err != nil {
		t.Fatal(err)
	}
	for _, i := range a.CompleteAll() {
		c := a.Calls()[i]
		done = append(done, fmt.Sprintf("%s %s %s (end)", c.ID, c.Name, c.Arguments))
	}
	if a.Open() {
		t.Fatal("calls still open after CompleteAll")
	}
	return done, touched
}

func sse(events ...string) string {
	var sb strings.Builder
	for _, e := range events {
		sb.WriteString(e)
		sb.WriteString("\n\n")
	}
	return sb.String()
}

const (
	chatToolStream = `data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me look."},"finish_reason":null}]}

data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"fetch_url","arguments":""}}]},"finish_reason":null}]}

data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"url\":"}}]},"finish_reason":null}]}

data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"https://x.example/\"}"}}]},"finish_reason":null}]}

data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"send_mail","arguments":"{\"to\":\"bob\"}"}}]},"finish_reason":null}]}

data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: [DONE]

`
	responsesToolStream = `event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_r","name":"fetch_url","arguments":""}}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":2,"item_id":"fc_1","output_index":0,"delta":"{\"url\":\"https"}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":3,"item_id":"fc_1","output_index":0,"delta":"://x.example/\"}"}

event: response.function_call_arguments.done
data: {"type":"response.function_call_arguments.done","sequence_number":4,"item_id":"fc_1","output_index":0,"arguments":"{\"url\":\"https://x.example/\"}"}

event: response.output_item.done
data: {"type":"response.output_item.done","sequence_number":5,"output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_r","name":"fetch_url","arguments":"{\"url\":\"https://x.example/\"}"}}

event: response.completed
data: {"type":"response.completed","sequence_number":6,"response":{"status":"completed","output":[{"type":"function_call","id":"fc_1","call_id":"call_r","name":"fetch_url","arguments":"{\"url\":\"https://x.example/\"}"}]}}

`
	anthropicToolStream = `event: message_start
data: {"type":"message_start","message":{"id":"msg_1","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"fetch_url","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"url\": \"https://x"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":".example/\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30}}

event: message_stop
data: {"type":"message_stop"}

`
)

func TestToolCallAssembler(t *testing.T) {
	for _, tc := range []struct {
		name    string
		api     API
		stream  string
		want    []string
		touched []bool
	}{
		{"openai chat, two calls complete at finish_reason", OpenAIChat, chatToolStream,
			[]string{`call_a fetch_url {"url":"https://x.example/"}`, `call_b send_mail {"to":"bob"}`},
			[]bool{false, true, true, true, true, true, false}},
		{"openai chat legacy function_call", OpenAIChat, sse(
			`data: {"choices":[{"index":0,"delta":{"function_call":{"name":"f","arguments":"{\"a\""}}}]}`,
			`data: {"choices":[{"index":0,"delta":{"function_call":{"arguments":":1}"}}}]}`,
			`data: {"choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}`),
			[]string{` f {"a":1}`}, []bool{true, true, true}},
		{"openai chat, escaped member names still seen", OpenAIChat, sse(
			`data: {"choices":[{"index":0,"delta":{"tool\u005fcalls":[{"index":0,"id":"c1","function":{"name":"rm","arguments":"{}"}}]}}]}`),
			[]string{`c1 rm {} (end)`}, []bool{true}},
		{"openai chat, stream cut mid-call", OpenAIChat, sse(
			`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"rm","arguments":"{\"pa"}}]}}]}`),
			[]string{`c1 rm {"pa (end)`}, []bool{true}},
		{"openai chat, text only", OpenAIChat, sse(
			`data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}`,
			`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`, `data: [DONE]`),
			nil, []bool{false, false, false}},
		{"responses function call", OpenAIResponses, responsesToolStream,
			[]string{`call_r fetch_url {"url":"https://x.example/"}`}, []bool{true, true, true, true, false, false}},
		{"responses call seen only in the final response", OpenAIResponses, sse(
			`event: response.completed` + "\n" + `data: {"type":"response.completed","response":{"status":"completed","output":[{"type":"function_call","call_id":"c9","name":"rm","arguments":"{}"}]}}`),
			[]string{`c9 rm {}`}, []bool{true}},
		{"anthropic tool_use blocks", AnthropicMessages, anthropicToolStream,
			[]string{`toolu_1 fetch_url {"url": "https://x.example/"}`, `toolu_2 now {}`},
			[]bool{false, false, false, false, true, true, true, true, true, true, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, touched := assemble(t, tc.api, tc.stream, 0)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if fmt.Sprint(touched) != fmt.Sprint(tc.touched) {
				t.Errorf("touched %v, want %v", touched, tc.touched)
			}
			// Chunking cannot change what is assembled.
			for split := 1; split < len(tc.stream); split++ {
				if g, _ := assemble(t, tc.api, tc.stream, split); strings.Join(g, "\n") != strings.Join(got, "\n") {
					t.Fatalf("split at %d: %v, want %v", split, g, got)
				}
			}
		})
	}
}

func TestToolCallAssemblerBounds(t *testing.T) {
	a := NewToolCallAssembler(OpenAIChat)
	a.MaxCalls = 2
	var err error
	for i := range 3 {
		pe := ParseEvent(OpenAIChat, Event{Data: fmt.Appendf(nil, `{"choices":[{"index":0,"delta":{"tool_calls":[{"index":%d,"id":"c","function":{"name":"f"}}]}}]}`, i)})
		_, _, err = a.Observe(&pe)
	}
	if err != ErrTooManyToolCalls {
		t.Fatalf("3 calls past a bound of 2: err %v", err)
	}
	b := NewToolCallAssembler(OpenAIChat)
	b.MaxArgumentBytes = 8
	pe := ParseEvent(OpenAIChat, Event{Data: []byte(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"0123456789"}}]}}]}`)})
	if _, _, err := b.Observe(&pe); err != ErrTooManyToolCalls {
		t.Fatalf("10 argument bytes past a bound of 8: err %v", err)
	}
}

// FuzzToolCallAssembler: any bytes, split anywhere, never panic, give the
// same calls whatever the split, and leave no call open after CompleteAll.
func FuzzToolCallAssembler(f *testing.F) {
	for _, s := range []string{chatToolStream, responsesToolStream, anthropicToolStream} {
		f.Add([]byte(s), uint16(7), uint8(0))
		f.Add([]byte(s), uint16(100), uint8(1))
		f.Add([]byte(s), uint16(3), uint8(2))
		f.Add([]byte(s), uint16(50), uint8(3))
	}
	apis := []API{OpenAIChat, OpenAIResponses, AnthropicMessages, Generic}
	f.Fuzz(func(t *testing.T, data []byte, split uint16, apiSel uint8) {
		api := apis[int(apiSel)%len(apis)]
		whole, _ := assembleBytes(api, data, 0)
		parts, _ := assembleBytes(api, data, int(split))
		if !bytes.Equal([]byte(strings.Join(whole, "\n")), []byte(strings.Join(parts, "\n"))) {
			t.Fatalf("split at %d changed the calls:\n%q\n%q", split, whole, parts)
		}
	})
}

// assembleBytes is assemble without a testing.TB, for the fuzzer: errors
// end the stream as they would end a proxied one.
func assembleBytes(api API, b []byte, split int) ([]string, error) {
	a := NewToolCallAssembler(api)
	p := SSEParser{MaxEventBytes: 1 << 16}
	var done []string
	emit := func(ev Event) error {
		pe := ParseEvent(api, ev)
		_, comp, err := a.Observe(&pe)
		if err != nil {
			return err
		}
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
			return done, err
		}
		b = b[split:]
	}
	if err := p.Feed(b, emit); err != nil {
		return done, err
	}
	for _, i := range a.CompleteAll() {
		c := a.Calls()[i]
		done = append(done, c.ID+" "+c.Name+" "+c.Arguments+" (end)")
	}
	if a.Open() {
		panic("open after CompleteAll")
	}
	return done, nil
}

// TestToolResultTextApart: tool output of every API is the tool-result
// text, never the prompt's; declared tools carry their descriptions.
func TestToolResultTextApart(t *testing.T) {
	for _, tc := range []struct {
		api          API
		body         string
		prompt, tool string
		tools        []Tool
	}{
		{OpenAIChat, `{"messages":[{"role":"user","content":"Weather?"},{"role":"tool","tool_call_id":"c","content":"18C"},{"role":"function","name":"f","content":"old"}],"tools":[{"type":"function","function":{"name":"w","description":"Weather now."}}]}`,
			"Weather?\nWeather now.", "18C\nold", []Tool{{Name: "w", Type: "function", Description: "Weather now."}}},
		{OpenAIResponses, `{"input":[{"role":"user","content":"Weather?"},{"type":"function_call_output","call_id":"c","output":"18C"}],"tools":[{"type":"function","name":"w","description":"Weather now."}]}`,
			"Weather?\nWeather now.", "18C", []Tool{{Name: "w", Type: "function", Description: "Weather now."}}},
		{AnthropicMessages, `{"messages":[{"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"18C"}]}]}],"tools":[{"name":"w","description":"Weather now.","input_schema":{}}]}`,
			"Weather?\nWeather now.", "18C", []Tool{{Name: "w", Description: "Weather now."}}},
	} {
		t.Run(string(tc.api), func(t *testing.T) {
			r, err := ParseRequest(tc.api, []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.PromptText(nil); got != tc.prompt {
				t.Errorf("PromptText %q, want %q", got, tc.prompt)
			}
			if got := r.ToolResultText(nil); got != tc.tool {
				t.Errorf("ToolResultText %q, want %q", got, tc.tool)
			}
			if got := r.ToolResultText(func(role string) bool { return role == "user" }); got != "" {
				t.Errorf("ToolResultText with tool not scanned: %q", got)
			}
			if fmt.Sprint(r.Tools) != fmt.Sprint(tc.tools) {
				t.Errorf("Tools %+v, want %+v", r.Tools, tc.tools)
			}
		})
	}
}
