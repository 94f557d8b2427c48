package llmapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

func dialectFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "dialects", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDescribePath(t *testing.T) {
	for _, c := range []struct {
		path string
		want PathInfo
	}{
		{"/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse", PathInfo{BedrockConverse, ProviderBedrock, "anthropic.claude-3-5-sonnet-20240620-v1:0", false}},
		{"/model/us.amazon.nova-pro-v1:0/converse-stream", PathInfo{BedrockConverse, ProviderBedrock, "us.amazon.nova-pro-v1:0", true}},
		{"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.x/converse", PathInfo{BedrockConverse, ProviderBedrock, "arn:aws:bedrock:us-east-1:123:inference-profile/us.x", false}},
		{"/model/anthropic.claude-v2/invoke", PathInfo{BedrockInvoke, ProviderBedrock, "anthropic.claude-v2", false}},
		{"/model/anthropic.claude-v2/invoke-with-response-stream", PathInfo{BedrockInvoke, ProviderBedrock, "anthropic.claude-v2", true}},
		{"/model/x/other", PathInfo{Generic, "", "", false}},
		{"/v1beta/models/gemini-2.5-flash:generateContent", PathInfo{GeminiGenerate, ProviderGemini, "gemini-2.5-flash", false}},
		{"/v1beta/models/gemini-2.5-flash:streamGenerateContent", PathInfo{GeminiGenerate, ProviderGemini, "gemini-2.5-flash", true}},
		{"/v1beta/models/gemini-2.5-flash:countTokens", PathInfo{Generic, ProviderGemini, "gemini-2.5-flash", false}},
		{"/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent", PathInfo{GeminiGenerate, ProviderVertex, "gemini-2.0-flash", true}},
		{"/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict", PathInfo{AnthropicMessages, ProviderVertex, "claude-sonnet-4@20250514", false}},
		{"/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict", PathInfo{AnthropicMessages, ProviderVertex, "claude-sonnet-4@20250514", true}},
		{"/openai/deployments/gpt4o-prod/chat/completions", PathInfo{OpenAIChat, ProviderAzure, "gpt4o-prod", false}},
		{"/openai/deployments/emb/embeddings", PathInfo{OpenAIEmbeddings, ProviderAzure, "emb", false}},
		{"/openai/v1/chat/completions", PathInfo{OpenAIChat, ProviderAzure, "", false}},
		{"/v1/chat/completions", PathInfo{OpenAIChat, ProviderOpenAI, "", false}},
		{"/v1/messages", PathInfo{AnthropicMessages, ProviderAnthropic, "", false}},
		{"/v1/files", PathInfo{Generic, "", "", false}},
	} {
		if got := DescribePath(c.path); got != c.want {
			t.Errorf("DescribePath(%q) = %+v, want %+v", c.path, got, c.want)
		}
		if got := DetectAPI(c.path); got != c.want.API {
			t.Errorf("DetectAPI(%q) = %s, want %s", c.path, got, c.want.API)
		}
	}
}

func TestDialectRequests(t *testing.T) {
	for _, c := range []struct {
		api       API
		fixture   string
		path      string
		model     string
		maxTokens int64
		tools     []Tool
		calls     []ToolCall
		roles     []string // of the conversation messages, in order
		contains  []string // texts the detectors must read
		clamped   string   // what a clamp to 100 writes
	}{
		{BedrockConverse, "bedrock_converse_request.json", "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
			"anthropic.claude-3-haiku-20240307-v1:0", 4096, []Tool{{Name: "lookup_invoice", Type: "function", Description: "Find an invoice by customer"}},
			[]ToolCall{{ID: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", Name: "lookup_invoice", Arguments: `{"customer":"Jane Doe"}`}},
			[]string{"system", "user", "assistant", "tool", RoleOther},
			[]string{"You are a billing assistant.", "jane.doe@corpmail.io", "Jane Doe", "paid by card", "invoice INV-7", "Find an invoice by customer"},
			`"maxTokens": 100`},
		{GeminiGenerate, "gemini_request.json", "/v1beta/models/gemini-2.5-flash:generateContent",
			"gemini-2.5-flash", 8192, []Tool{{Name: "find_flights", Type: "function", Description: "Search flights"}},
			[]ToolCall{{Name: "find_flights", Arguments: `{"to":"LIS","passenger":"Jane"}`}},
			[]string{"system", "user", "assistant", "tool", RoleOther},
			[]string{"You are a helpful travel agent.", "jane.doe@corpmail.io", "one seat left", "Search flights"},
			`"maxOutputTokens": 100`},
	} {
		t.Run(string(c.api), func(t *testing.T) {
			body := dialectFixture(t, c.fixture)
			r, err := ParseRequest(c.api, body)
			if err != nil {
				t.Fatal(err)
			}
			r.ApplyPath(c.path)
			if r.Model != c.model || r.MaxTokens != c.maxTokens || !reflect.DeepEqual(r.Tools, c.tools) || !reflect.DeepEqual(r.ToolCalls, c.calls) {
				t.Errorf("model %q max %d tools %v calls %+v", r.Model, r.MaxTokens, r.Tools, r.ToolCalls)
			}
			var roles []string
			for _, m := range r.Messages {
				roles = append(roles, m.Role)
			}
			if !reflect.DeepEqual(roles, c.roles) {
				t.Errorf("roles %q, want %q", roles, c.roles)
			}
			// Tool results (role "tool") are scanned apart from the prompt.
			text := r.PromptText(nil) + "\n" + r.ToolResultText(nil)
			for _, s := range c.contains {
				if !strings.Contains(text, s) {
					t.Errorf("prompt and tool-result text lack %q:\n%s", s, text)
				}
			}
			// Redaction reaches every text the detectors read, and only those.
			out, changed, err := EditRequest(c.api, body, RequestEdit{Text: func(_, s string) string {
				return strings.ReplaceAll(s, "jane.doe@corpmail.io", "[EMAIL]")
			}, ClampMaxTokens: 100})
			if err != nil || !changed {
				t.Fatalf("edit: %v %v", changed, err)
			}
			if bytes.Contains(out, []byte("jane.doe")) || !bytes.Contains(out, []byte("[EMAIL]")) || !bytes.Contains(out, []byte(c.clamped)) || !json.Valid(out) {
				t.Errorf("edited body:\n%s", out)
			}
			if !Clamps(c.api) {
				t.Error("Clamps false")
			}
			// A clamp above the limit leaves it alone; one where the field
			// is missing adds it.
			if out, changed, _ := EditRequest(c.api, body, RequestEdit{ClampMaxTokens: 1 << 20}); changed || !bytes.Equal(out, body) {
				t.Errorf("clamp above the limit changed the body")
			}
			out, _, err = EditRequest(c.api, []byte(`{}`), RequestEdit{ClampMaxTokens: 7})
			if r2, _ := ParseRequest(c.api, out); err != nil || r2 == nil || r2.MaxTokens != 7 {
				t.Errorf("clamp of an empty body: %s %v", out, err)
			}
		})
	}
}

func TestDialectResponses(t *testing.T) {
	for _, c := range []struct {
		api    API
		file   string
		text   string
		finish string
		usage  Usage
		call   ToolCall
	}{
		{BedrockConverse, "bedrock_converse_response.json", "Sent to bob.smith@corpmail.io.", "tool_use", Usage{125, 60, 185, 0},
			ToolCall{ID: "tooluse_2", Name: "send_mail", Arguments: `{"to":"bob"}`}},
		{GeminiGenerate, "gemini_response.json", "Booked. Confirmation sent to bob.smith@corpmail.io.", "STOP", Usage{21, 12, 33, 0},
			ToolCall{Name: "send_mail", Arguments: `{"to":"bob"}`}},
	} {
		body := dialectFixture(t, c.file)
		r, err := ParseResponse(c.api, body)
		if err != nil {
			t.Fatal(err)
		}
		if r.Text != c.text || r.FinishReason != c.finish || r.Usage == nil || *r.Usage != c.usage || len(r.ToolCalls) != 1 || r.ToolCalls[0] != c.call {
			t.Errorf("%s: %+v usage %+v", c.api, r, r.Usage)
		}
		out, changed, err := EditResponse(c.api, body, func(s string) string { return strings.ReplaceAll(s, "bob.smith@corpmail.io", "[EMAIL]") })
		if err != nil || !changed || bytes.Contains(out, []byte("bob.smith")) {
			t.Errorf("%s: edit %s %v", c.api, out, err)
		}
	}
}

// converseStream frames the recorded-shape ConverseStream fixture with the
// AWS SDK's encoder.
func converseStream(t testing.TB) []byte {
	t.Helper()
	var evs [][2]json.RawMessage
	if err := json.Unmarshal(dialectFixture(t, "bedrock_converse_stream.json"), &evs); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, e := range evs {
		var name string
		_ = json.Unmarshal(e[0], &name)
		var compact bytes.Buffer
		_ = json.Compact(&compact, e[1])
		if err := eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: newEventHeaders(name), Payload: compact.Bytes()}); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// checkFrames decodes b as event-stream messages with the SDK's decoder
// (which checks both CRCs) and returns their event types and payloads.
func checkFrames(t testing.TB, b []byte) (names []string, payloads []string) {
	t.Helper()
	r := bytes.NewReader(b)
	dec := eventstream.NewDecoder()
	for r.Len() > 0 {
		m, err := dec.Decode(r, nil)
		if err != nil {
			t.Fatalf("frame %d: %v", len(names), err)
		}
		names = append(names, headerString(m.Headers, ":event-type")+headerString(m.Headers, ":exception-type"))
		payloads = append(payloads, string(m.Payload))
	}
	return names, payloads
}

// TestEventStreamChunking: every split of a ConverseStream yields the same
// events, each Raw the exact frame, and decoding them gives the text, the
// tool call and the usage.
func TestEventStreamChunking(t *testing.T) {
	stream := converseStream(t)
	feed := func(chunks ...[]byte) []Event {
		var p EventStreamParser
		var evs []Event
		for _, c := range chunks {
			if err := p.Feed(c, func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		if len(p.Pending()) != 0 {
			t.Fatalf("pending %d bytes", len(p.Pending()))
		}
		return evs
	}
	whole := feed(stream)
	if len(whole) != 10 {
		t.Fatalf("%d events", len(whole))
	}
	var raw []byte
	var text string
	var usage Usage
	var calls []ToolCall
	for _, ev := range whole {
		raw = append(raw, ev.Raw...)
		d, err := DecodeEvent(BedrockConverse, ev)
		if err != nil {
			t.Fatal(err)
		}
		text += d.Text
		usage.Merge(d.Usage)
		if d.ToolCall != nil {
			calls = append(calls, *d.ToolCall)
		}
	}
	if !bytes.Equal(raw, stream) || text != "Your key is AKIAZ7QR4WXYB2M5N3PD and the rest is fine." || usage != (Usage{31, 17, 48, 0}) || len(calls) != 2 || calls[0].Name != "send_mail" || calls[1].Arguments != `{"to":"bob"}` {
		t.Errorf("text %q usage %+v calls %+v", text, usage, calls)
	}
	for i := 1; i < len(stream); i++ {
		if got := feed(stream[:i], stream[i:]); !reflect.DeepEqual(eventsRaw(got), eventsRaw(whole)) {
			t.Fatalf("split at %d differs", i)
		}
	}
	// Byte by byte.
	var chunks [][]byte
	for i := range stream {
		chunks = append(chunks, stream[i:i+1])
	}
	if got := feed(chunks...); !reflect.DeepEqual(eventsRaw(got), eventsRaw(whole)) {
		t.Fatal("byte-by-byte differs")
	}
}

func eventsRaw(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Name + "|" + string(e.Data) + "|" + string(e.Raw)
	}
	return out
}

// TestEventStreamFilter: a filtered event is re-framed with valid CRCs and
// its original headers; the padding is not offered to the filter; channels
// are the content blocks; a synthesised event and an exception are valid
// frames.
func TestEventStreamFilter(t *testing.T) {
	var p EventStreamParser
	var evs []Event
	if err := p.Feed(converseStream(t), func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	var out []byte
	var seen []Channel
	for _, ev := range evs {
		nev, _, err := FilterEvent(BedrockConverse, ev, true, func(ch Channel, s string) string {
			if strings.HasPrefix(s, "abcd") {
				t.Errorf("padding offered to the filter: %q", s)
			}
			if ch.Field != "" {
				seen = append(seen, ch)
			}
			return strings.ToUpper(s)
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, nev.Raw...)
	}
	names, payloads := checkFrames(t, out)
	if len(names) != 10 || names[1] != "contentBlockDelta" || !strings.Contains(payloads[1], `"YOUR KEY IS AKIA"`) || !strings.Contains(payloads[1], `"p":"abcdefghijkl"`) {
		t.Errorf("frames %q %q", names, payloads)
	}
	want := []Channel{{FieldText, 0, 0}, {FieldText, 0, 0}, {FieldText, 0, 0}, {FieldToolUseInput, 1, 0}}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("channels %+v", seen)
	}
	if all, idx := EventEnds(BedrockConverse, evs[4]); all || !reflect.DeepEqual(idx, []int{0}) {
		t.Errorf("contentBlockStop ends %v %v", all, idx)
	}
	if all, _ := EventEnds(BedrockConverse, evs[8]); !all {
		t.Error("messageStop does not end the stream")
	}
	ev, err := ChannelEvent(BedrockConverse, evs[3], Channel{Field: FieldText, Index: 0}, "held \"text\"")
	if err != nil {
		t.Fatal(err)
	}
	names, payloads = checkFrames(t, ev.Raw)
	if names[0] != "contentBlockDelta" || payloads[0] != `{"contentBlockIndex":0,"delta":{"text":"held \"text\""}}` {
		t.Errorf("synthesised %q %q", names, payloads)
	}
	exc := p.ErrorEvent(BedrockConverse, 403, "secret_leak", "stopped")
	names, payloads = checkFrames(t, exc)
	if names[0] != "validationException" || !strings.Contains(payloads[0], `"message":"stopped"`) {
		t.Errorf("exception %q %q", names, payloads)
	}
	var q EventStreamParser
	var got []Event
	if err := q.Feed(exc, func(ev Event) error { got = append(got, ev); return nil }); err != nil || len(got) != 1 {
		t.Fatal(err)
	}
	if d, _ := DecodeEvent(BedrockConverse, got[0]); !d.Error {
		t.Error("exception not decoded as an error")
	}
}

// TestEventStreamCorrupt: a flipped bit anywhere in a message is caught
// by a CRC (or the prelude's lengths) and fails with ErrMalformed, never a
// panic or a silently forwarded frame.
func TestEventStreamCorrupt(t *testing.T) {
	stream := converseStream(t)
	first := int(uint32(stream[0])<<24 | uint32(stream[1])<<16 | uint32(stream[2])<<8 | uint32(stream[3]))
	for i := 0; i < first; i++ {
		bad := bytes.Clone(stream)
		bad[i] ^= 0x10
		var p EventStreamParser
		n := 0
		err := p.Feed(bad, func(Event) error { n++; return nil })
		if i >= 4 && err == nil {
			t.Fatalf("bit flip at %d not detected", i)
		}
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrEventTooLarge) {
			t.Fatalf("flip at %d: %v", i, err)
		}
		if err != nil && n != 0 {
			t.Fatalf("flip at %d: %d events emitted before the bad one", i, n)
		}
	}
	// The CRC is the IEEE one the SDK computes.
	if crc32.ChecksumIEEE(stream[:8]) != uint32(stream[8])<<24|uint32(stream[9])<<16|uint32(stream[10])<<8|uint32(stream[11]) {
		t.Error("prelude CRC")
	}
	var p EventStreamParser
	p.MaxEventBytes = 64
	if err := p.Feed(stream, nil); !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("oversized message: %v", err)
	}
}

// TestBedrockInvokeStream: InvokeModelWithResponseStream wraps each
// Anthropic event in {"bytes": base64}; events are read and filtered as
// Anthropic's and re-wrapped.
func TestBedrockInvokeStream(t *testing.T) {
	var buf bytes.Buffer
	for _, inner := range []string{
		`{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}`,
		`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello jane"}}`,
		`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}`,
		`{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":5}}`,
	} {
		payload := `{"bytes":"` + b64(inner) + `","p":"abcdef"}`
		_ = eventstream.NewEncoder().Encode(&buf, eventstream.Message{Headers: newEventHeaders("chunk"), Payload: []byte(payload)})
	}
	p := EventStreamParser{Wrapped: true}
	var evs []Event
	if err := p.Feed(buf.Bytes(), func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	var u Usage
	var text string
	for _, ev := range evs {
		d, err := DecodeEvent(BedrockInvoke, ev)
		if err != nil {
			t.Fatal(err)
		}
		u.Merge(d.Usage)
		text += d.Text
	}
	if text != "Hello jane" || u != (Usage{12, 5, 17, 0}) {
		t.Errorf("text %q usage %+v", text, u)
	}
	nev, changed, err := FilterEvent(BedrockInvoke, evs[1], true, func(_ Channel, s string) string { return strings.ReplaceAll(s, "jane", "[NAME]") })
	if err != nil || !changed {
		t.Fatal(err)
	}
	_, payloads := checkFrames(t, nev.Raw)
	inner, ok := unwrapBytes([]byte(payloads[0]))
	if !ok || string(inner) != `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello [NAME]"}}` {
		t.Errorf("re-wrapped %s", payloads[0])
	}
	if all, _ := EventEnds(BedrockInvoke, evs[3]); !all {
		t.Error("message_stop does not end the stream")
	}
}

// TestGeminiStreams: the SSE and streamed-array framings of
// streamGenerateContent, split at every byte, give the same events; text,
// usage and the closing bracket are read; a filtered element keeps its
// separator.
func TestGeminiStreams(t *testing.T) {
	sse := dialectFixture(t, "gemini_stream_sse.txt")
	arr := dialectFixture(t, "gemini_stream_array.json")
	for _, c := range []struct {
		fr   Framing
		body []byte
		n    int
	}{{FramingSSE, sse, 3}, {FramingJSONArray, arr, 3}} {
		feed := func(chunks ...[]byte) []Event {
			p := NewStreamParser(c.fr, GeminiGenerate, 0)
			var evs []Event
			for _, ch := range chunks {
				if err := p.Feed(ch, func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
					t.Fatal(err)
				}
			}
			return evs
		}
		whole := feed(c.body)
		if len(whole) != c.n {
			t.Fatalf("framing %d: %d events", c.fr, len(whole))
		}
		for i := 1; i < len(c.body); i++ {
			if got := feed(c.body[:i], c.body[i:]); !reflect.DeepEqual(eventsRaw(got), eventsRaw(whole)) {
				t.Fatalf("framing %d: split at %d differs", c.fr, i)
			}
		}
		var text string
		var u Usage
		var raw []byte
		for _, ev := range whole {
			raw = append(raw, ev.Raw...)
			d, err := DecodeEvent(GeminiGenerate, ev)
			if err != nil {
				t.Fatal(err)
			}
			text += d.Text
			u.Merge(d.Usage)
		}
		if !bytes.Equal(raw, c.body) || !strings.HasPrefix(text, "Write to bob.smith@corpmail.io about it") || u.TotalTokens != 19 || u.CompletionTokens != 11 {
			t.Errorf("framing %d: text %q usage %+v", c.fr, text, u)
		}
		nev, changed, err := FilterEvent(GeminiGenerate, whole[1], true, func(ch Channel, s string) string {
			if ch.Field == FieldText {
				return strings.ToUpper(s)
			}
			return s
		})
		if err != nil || !changed || !bytes.Contains(nev.Raw, []byte("ITH@CORPMAIL.IO")) {
			t.Fatalf("framing %d: filter %s %v", c.fr, nev.Raw, err)
		}
		if c.fr == FramingJSONArray {
			if !bytes.HasPrefix(nev.Raw, []byte("\n,\r\n{")) {
				t.Errorf("separator lost: %q", nev.Raw[:8])
			}
			if all, _ := EventEnds(GeminiGenerate, whole[2]); !all || whole[2].Data != nil {
				t.Errorf("closing bracket %q does not end the stream", whole[2].Raw)
			}
		} else if all, idx := EventEnds(GeminiGenerate, whole[2]); all || !reflect.DeepEqual(idx, []int{0}) {
			t.Errorf("finishReason ends %v %v", all, idx)
		}
	}
	// An error element closes the array; a bad top level is malformed.
	var p JSONArrayParser
	if err := p.Feed([]byte(`[{"a":1}`), nil); err != nil {
		t.Fatal(err)
	}
	e := p.ErrorEvent(GeminiGenerate, 403, "pii", "stopped")
	if !json.Valid(append([]byte(`[{"a":1}`), e...)) {
		t.Errorf("error element %q does not close the array", e)
	}
	var q JSONArrayParser
	if err := q.Feed([]byte(`[{"a":1} x`), nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: %v", err)
	}
}

// TestBedrockInvokeOtherModels: InvokeModel bodies of other models are not
// given Anthropic's fields (Bedrock would reject them), their cap is
// lowered in their own field, and their text is still read and redacted.
func TestBedrockInvokeOtherModels(t *testing.T) {
	body := []byte(`{"inputText":"Mail jane.doe@corpmail.io","textGenerationConfig":{"maxTokenCount":4096}}`)
	out, changed, err := EditRequest(BedrockInvoke, body, RequestEdit{ClampMaxTokens: 10, SystemSuffix: "S",
		Text: func(_, s string) string { return strings.ReplaceAll(s, "jane.doe@corpmail.io", "[EMAIL]") }})
	if err != nil || !changed || string(out) != `{"inputText":"Mail [EMAIL]","textGenerationConfig":{"maxTokenCount":10}}` {
		t.Errorf("got %s %v", out, err)
	}
}

func TestDialectErrorShapes(t *testing.T) {
	var g struct {
		Error struct {
			Code    int
			Message string
			Status  string
		}
	}
	if err := json.Unmarshal(ErrorBody(GeminiGenerate, 403, "prompt_injection", "denied"), &g); err != nil || g.Error.Code != 403 || g.Error.Status != "PERMISSION_DENIED" || g.Error.Message != "denied" {
		t.Errorf("gemini %+v %v", g, err)
	}
	var b struct{ Message, Reason string }
	if err := json.Unmarshal(ErrorBody(BedrockConverse, 429, "token_quota", "slow down"), &b); err != nil || b.Message != "slow down" || b.Reason != "token_quota" {
		t.Errorf("bedrock %+v %v", b, err)
	}
	if h := ErrorHeaders(BedrockConverse, 429); len(h) != 1 || h[0][1] != "ThrottlingException" {
		t.Errorf("bedrock headers %v", h)
	}
	if h := ErrorHeaders(OpenAIChat, 403); h != nil {
		t.Errorf("openai headers %v", h)
	}
}

func TestStreamFraming(t *testing.T) {
	for _, c := range []struct {
		api      API
		ct, path string
		want     Framing
	}{
		{OpenAIChat, "text/event-stream; charset=utf-8", "/v1/chat/completions", FramingSSE},
		{BedrockConverse, "application/vnd.amazon.eventstream", "/model/m/converse-stream", FramingEventStream},
		{GeminiGenerate, "application/json; charset=UTF-8", "/v1beta/models/g:streamGenerateContent", FramingJSONArray},
		{GeminiGenerate, "text/event-stream", "/v1beta/models/g:streamGenerateContent?alt=sse", FramingSSE},
		{GeminiGenerate, "application/json", "/v1beta/models/g:generateContent", FramingNone},
		{OpenAIChat, "application/json", "/v1/chat/completions", FramingNone},
	} {
		if got := StreamFraming(c.api, c.ct, c.path); got != c.want {
			t.Errorf("%s %s %s: %d, want %d", c.api, c.ct, c.path, got, c.want)
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestDialectSystemSuffix: the canary suffix lands in each dialect's system
// prompt, which is created when the request has none, and the detectors
// see it as system text.
func TestDialectSystemSuffix(t *testing.T) {
	for _, c := range []struct {
		api        API
		body, want string
	}{
		{BedrockConverse, `{"messages":[]}`, `{"messages":[],"system":[{"text":"S"}]}`},
		{BedrockConverse, `{"system":[{"text":"a"}],"messages":[]}`, `{"system":[{"text":"a"},{"text":"S"}],"messages":[]}`},
		{GeminiGenerate, `{"contents":[]}`, `{"contents":[],"systemInstruction":{"parts":[{"text":"S"}]}}`},
		{GeminiGenerate, `{"systemInstruction":{"parts":[{"text":"a"}]}}`, `{"systemInstruction":{"parts":[{"text":"a"},{"text":"S"}]}}`},
		{GeminiGenerate, `{"system_instruction":{"role":"system"}}`, `{"system_instruction":{"role":"system","parts":[{"text":"S"}]}}`},
		{BedrockInvoke, `{"max_tokens":5,"messages":[]}`, `{"max_tokens":5,"messages":[],"system":"S"}`},
		{BedrockInvoke, `{"anthropic_version":"bedrock-2023-05-31"}`, `{"anthropic_version":"bedrock-2023-05-31","system":"S"}`},
	} {
		out, _, err := EditRequest(c.api, []byte(c.body), RequestEdit{SystemSuffix: "S"})
		if err != nil || string(out) != c.want {
			t.Errorf("%s %s: got %s, want %s (%v)", c.api, c.body, out, c.want, err)
		}
		r, _ := ParseRequest(c.api, out)
		if r == nil || len(r.Messages) == 0 || r.Messages[0].Role != "system" || !strings.HasSuffix(r.Messages[0].Content, "S") {
			t.Errorf("%s: system prompt not read: %+v", c.api, r)
		}
		if !HasSystemPrompt(c.api) {
			t.Errorf("%s: HasSystemPrompt false", c.api)
		}
	}
}
