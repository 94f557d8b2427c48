package llmapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

var dialectAPIs = []API{BedrockConverse, BedrockInvoke, GeminiGenerate}

// FuzzEventStreamParser: any bytes, split anywhere, give the same events
// and the same error as unsplit; every event's Raw is a frame the SDK's
// decoder accepts, re-encoding an event gives a valid frame that parses
// back to it, and a stream that parsed is the concatenation of its Raws.
func FuzzEventStreamParser(f *testing.F) {
	stream := converseStream(f)
	f.Add(stream, uint16(100), false)
	f.Add(stream[:50], uint16(13), true)
	f.Add(bedrockErrorEvent(FramingEventStream, 403, "r", "m"), uint16(1), false)
	f.Add([]byte("\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb\x7d\x98\xc8\xff"), uint16(3), false) // empty message
	f.Fuzz(func(t *testing.T, data []byte, split uint16, wrapped bool) {
		feed := func(chunks ...[]byte) ([]Event, error) {
			p := EventStreamParser{MaxEventBytes: 4096, Wrapped: wrapped}
			var evs []Event
			var err error
			for _, c := range chunks {
				if err = p.Feed(c, func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
					break
				}
			}
			return evs, err
		}
		i := int(split) % (len(data) + 1)
		whole, werr := feed(data)
		parts, perr := feed(data[:i], data[i:])
		if (werr == nil) != (perr == nil) {
			t.Fatalf("split at %d: errors differ: %v vs %v", i, werr, perr)
		}
		if werr != nil && !errors.Is(werr, ErrMalformed) && !errors.Is(werr, ErrEventTooLarge) {
			t.Fatalf("error %v", werr)
		}
		if !reflect.DeepEqual(eventsRaw(whole), eventsRaw(parts)) {
			t.Fatalf("split at %d: events differ", i)
		}
		var all []byte
		for _, ev := range whole {
			all = append(all, ev.Raw...)
			checkFrames(t, ev.Raw)
			re := ev.Encode()
			checkFrames(t, re)
			back, err := feed(re)
			if err != nil || len(back) != 1 || back[0].Name != ev.Name || !bytes.Equal(back[0].Data, ev.Data) {
				t.Fatalf("re-encode: %v %d", err, len(back))
			}
			// Reading and filtering never panic.
			for _, api := range dialectAPIs {
				_, _ = DecodeEvent(api, ev)
				EventEnds(api, ev)
				_, _, _ = FilterEvent(api, ev, true, func(_ Channel, s string) string { return strings.ToUpper(s) })
			}
		}
		if !bytes.HasPrefix(data, all) {
			t.Fatal("Raws are not the stream's bytes")
		}
		// Differential: every message the SDK's decoder accepts, in order,
		// this parser accepts too (within its size bound).
		r := bytes.NewReader(data)
		for n := 0; r.Len() > 0; n++ {
			before := r.Len()
			if _, err := eventstream.NewDecoder().Decode(r, nil); err != nil {
				break
			}
			size := before - r.Len()
			if size > 4096 {
				break // over the parser's bound: it stops here, rightly
			}
			if n >= len(whole) {
				t.Fatalf("the SDK accepts message %d (%d bytes), the parser stopped at %d: %v", n, size, len(whole), werr)
			}
			if start := len(data) - before; !bytes.Equal(whole[n].Raw, data[start:start+size]) {
				t.Fatalf("message %d: the parser's bytes differ from the SDK's", n)
			}
		}
	})
}

// FuzzJSONArrayParser: any bytes, split anywhere, give the same elements and
// error; each element is valid JSON; Raws are the stream's bytes in order.
func FuzzJSONArrayParser(f *testing.F) {
	f.Add(dialectFixture(f, "gemini_stream_array.json"), uint16(40))
	f.Add([]byte(`[{"a":"]}\"{"},{"b":[1,{}]}]`), uint16(9))
	f.Add([]byte(` [ ]`), uint16(2))
	f.Add([]byte(`[{"a":1},]`), uint16(5))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		feed := func(chunks ...[]byte) ([]Event, error) {
			p := JSONArrayParser{MaxEventBytes: 4096}
			var evs []Event
			var err error
			for _, c := range chunks {
				if err = p.Feed(c, func(ev Event) error { evs = append(evs, ev); return nil }); err != nil {
					break
				}
			}
			return evs, err
		}
		i := int(split) % (len(data) + 1)
		whole, werr := feed(data)
		parts, perr := feed(data[:i], data[i:])
		if (werr == nil) != (perr == nil) {
			t.Fatalf("split at %d: errors differ: %v vs %v", i, werr, perr)
		}
		if werr != nil && !errors.Is(werr, ErrMalformed) && !errors.Is(werr, ErrEventTooLarge) {
			t.Fatalf("error %v", werr)
		}
		if !reflect.DeepEqual(eventsRaw(whole), eventsRaw(parts)) {
			t.Fatalf("split at %d: events differ", i)
		}
		var all []byte
		for _, ev := range whole {
			all = append(all, ev.Raw...)
			if ev.Data != nil && !json.Valid(ev.Data) {
				t.Fatalf("element %q is not JSON", ev.Data)
			}
			if !bytes.Equal(ev.Encode(), ev.Raw) {
				t.Fatalf("re-encode %q != %q", ev.Encode(), ev.Raw)
			}
			_, _ = DecodeEvent(GeminiGenerate, ev)
			_, _, _ = FilterEvent(GeminiGenerate, ev, true, func(_ Channel, s string) string { return s + "\"" })
		}
		if !bytes.HasPrefix(data, all) {
			t.Fatal("Raws are not the stream's bytes")
		}
	})
}

// FuzzDialectRequest: parsing, redacting and clamping requests of the
// provider dialects never fails on a JSON object, keeps JSON valid, and a
// clamp holds.
func FuzzDialectRequest(f *testing.F) {
	f.Add(uint8(0), dialectFixture(f, "bedrock_converse_request.json"), int64(100))
	f.Add(uint8(2), dialectFixture(f, "gemini_request.json"), int64(5))
	f.Add(uint8(1), []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":900,"messages":[{"role":"user","content":"hi"}]}`), int64(50))
	f.Add(uint8(2), []byte(`{"generation_config":{"max_output_tokens":"9"},"contents":[{"parts":[{"text":"x"}]}]}`), int64(3))
	f.Add(uint8(0), []byte(`{"inferenceConfig":null,"messages":[{"content":[{"toolResult":{"content":[{"toolResult":{}}]}}]}]}`), int64(3))
	// InvokeModel bodies of other model families (bedrock_models.go).
	f.Add(uint8(1), []byte(`{"inputText":"hi","textGenerationConfig":{"maxTokenCount":4096}}`), int64(10))
	f.Add(uint8(1), []byte(`{"prompt":"hi","max_gen_len":2048}`), int64(10))
	f.Add(uint8(1), []byte(`{"message":"hi","max_tokens":2048}`), int64(10))
	// Chat-template prompts (bedrock_template.go), escaped and repeated.
	f.Add(uint8(1), []byte(`{"prompt":"\u003cs\u003e[INST] a\u00e9 [/INST] b\u003c/s\u003e[INST] c [/INST]","prompt":"[INST]x[/INST]","max_tokens":9}`), int64(10))
	f.Add(uint8(1), []byte(`{"prompt":"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\ns<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nu<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n","max_gen_len":9}`), int64(10))
	f.Add(uint8(1), []byte(`{"schemaVersion":"messages-v1","messages":[],"inferenceConfig":{"max_new_tokens":1e9}}`), int64(10))
	f.Fuzz(func(t *testing.T, idx uint8, body []byte, clamp int64) {
		api := dialectAPIs[int(idx)%len(dialectAPIs)]
		_, err := ParseRequest(api, body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v", err)
			}
			if sp := trimSpan(body); json.Valid(body) && body[sp.s] == '{' {
				t.Fatalf("valid object rejected: %v", err)
			}
			return
		}
		out, changed, err := EditRequest(api, body, RequestEdit{Text: func(_, s string) string { return s }})
		if err != nil || changed || !bytes.Equal(out, body) {
			t.Fatalf("identity edit: %v %v", changed, err)
		}
		out, _, err = EditRequest(api, body, RequestEdit{ClampMaxTokens: clamp, Text: func(_, s string) string { return "<" + s + ">" }})
		if err != nil {
			t.Fatalf("edit: %v", err)
		}
		if json.Valid(body) && !json.Valid(out) {
			t.Fatalf("edit broke JSON: %s", out)
		}
		if clamp > 0 {
			r, err := ParseRequest(api, out)
			if err != nil || r.MaxTokens > clamp {
				t.Fatalf("clamp %d: %v %v in %s", clamp, r, err, out)
			}
		}
	})
}

// FuzzDialectEvent frames any event type and payload as a valid
// event-stream message (and as a Gemini SSE event), so that the dialects'
// readers and filters see arbitrary JSON behind valid CRCs: decoding, ends
// and filtering never panic or fail on a JSON object, a filtered event is
// a valid frame, and Meta agrees with DecodeEvent.
func FuzzDialectEvent(f *testing.F) {
	var p EventStreamParser
	_ = p.Feed(converseStream(f), func(ev Event) error { f.Add(uint8(0), ev.Name, ev.Data); return nil })
	f.Add(uint8(1), "chunk", []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}`))
	f.Add(uint8(2), "", []byte(`{"candidates":[{"content":{"parts":[{"text":"a"},{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"}],"usageMetadata":{"totalTokenCount":3}}`))
	f.Add(uint8(1), "chunk", []byte(`{"outputText":"x","amazon-bedrock-invocationMetrics":{"inputTokenCount":1,"outputTokenCount":2}}`))
	f.Fuzz(func(t *testing.T, idx uint8, name string, payload []byte) {
		api := dialectAPIs[int(idx)%len(dialectAPIs)]
		hdr := newEventHeaders(name)
		if len(name) > 255 || len(payload) > 1<<16 {
			return
		}
		frame := encodeMessage(hdr, payload)
		if frame == nil {
			return
		}
		var evs []Event
		p := EventStreamParser{Wrapped: api == BedrockInvoke}
		if err := p.Feed(frame, func(ev Event) error { evs = append(evs, ev); return nil }); err != nil || len(evs) != 1 {
			t.Fatalf("own frame rejected: %v", err)
		}
		for _, ev := range []Event{evs[0], {Name: name, Data: payload}} {
			d, err := DecodeEvent(api, ev)
			pe := ParseEvent(api, ev)
			m, merr := pe.Meta()
			if (err == nil) != (merr == nil) {
				t.Fatalf("Meta and DecodeEvent disagree: %v %v", err, merr)
			}
			if err == nil {
				d.Text, d.ToolCall = "", nil
				if !reflect.DeepEqual(d, m) {
					t.Fatalf("Meta %+v != DecodeEvent %+v", m, d)
				}
			}
			EventEnds(api, ev)
			nev, changed, err := FilterEvent(api, ev, true, func(_ Channel, s string) string { return "[" + s + "]" })
			if err != nil && json.Valid(payload) && trimSpan(payload).e > 0 && payload[trimSpan(payload).s] == '{' && ev.wire == nil {
				t.Fatalf("filter of a JSON object failed: %v", err)
			}
			if changed {
				if ev.wire != nil {
					checkFrames(t, nev.Raw)
				}
				if !json.Valid(nev.Data) {
					t.Fatalf("filtered data is not JSON: %s", nev.Data)
				}
			}
		}
	})
}
