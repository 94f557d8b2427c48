package extproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// The property the output filter keeps: whatever the shape of an answer of
// a supported API — buffered or streamed, split anywhere, with unknown
// fields at any depth — a secret or an e-mail address planted in any string
// of it never reaches the client, unless that string is on the documented
// safe list (llmapi.SafeKey). The generator below builds plausible answers
// of each API (several choices, tool calls, logprobs, refusals, reasoning,
// thinking, annotations, Responses snapshots) and plants one value either in
// one string, or, for a streamed incremental text, in the text before it is
// split into deltas, so that the value straddles events.

// secretKind is what gets planted.
type secretKind int

const (
	plantEmail secretKind = iota
	plantAWS
	plantPEM
)

// planted is one value and the substrings that must not reach the client.
type planted struct {
	text   string
	probes []string
}

func newSecret(rng *rand.Rand, k secretKind) planted {
	const up32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	pick := func(alpha string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[rng.IntN(len(alpha))]
		}
		return string(b)
	}
	switch k {
	case plantAWS:
		// Draw until the detector recognises the key: the property is about
		// where values are looked for, not the detector's recall, which
		// rejects low-entropy ids.
		body := pick(up32, 16)
		for len(answerScanner().Scan("AKIA"+body).Findings) == 0 {
			body = pick(up32, 16)
		}
		return planted{text: "AKIA" + body, probes: []string{"AKIA" + body, body}}
	case plantPEM:
		var lines []string
		for range 25 {
			lines = append(lines, pick(b64, 64))
		}
		p := planted{text: "-----BEGIN RSA PRIVATE KEY-----\n" + strings.Join(lines, "\n") + "\n-----END RSA PRIVATE KEY-----"}
		for _, l := range lines {
			p.probes = append(p.probes, l[:20])
		}
		return p
	}
	user := "jane.doe" + pick("0123456789", 4)
	return planted{text: user + "@corpmail.io", probes: []string{user + "@corpmail.io"}}
}

// answerScanner is the real detector, built once.
var answerScanner = sync.OnceValue(func() *detect.Scanner {
	sc, err := detect.New(detect.Config{})
	if err != nil {
		panic(err) // the default configuration always builds
	}
	return sc
})

var words = strings.Fields("the quarterly report covers revenue churn and hiring plans for the next year " +
	"please find attached a summary of the meeting notes with action items for each team")

// prose returns a few words of ordinary text.
func prose(rng *rand.Rand) string {
	n := 3 + rng.IntN(10)
	w := make([]string, n)
	for i := range w {
		w[i] = words[rng.IntN(len(words))]
	}
	return strings.Join(w, " ")
}

// unknownValue is a random JSON value for a field Bulwark does not know.
func unknownValue(rng *rand.Rand, depth int) any {
	switch k := rng.IntN(6); {
	case k == 0 && depth < 3:
		m := map[string]any{}
		for range 1 + rng.IntN(3) {
			m[[]string{"id", "text", "note", "detail", "list", "type"}[rng.IntN(6)]] = unknownValue(rng, depth+1)
		}
		return m
	case k == 1 && depth < 3:
		a := make([]any, 1+rng.IntN(3))
		for i := range a {
			a[i] = unknownValue(rng, depth+1)
		}
		return a
	case k == 2:
		return rng.IntN(1000)
	case k == 3:
		return rng.IntN(2) == 0
	}
	return prose(rng)
}

// sprinkle adds unknown members to some objects of v.
func sprinkle(rng *rand.Rand, v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, c := range x {
			sprinkle(rng, c)
		}
		if rng.IntN(4) == 0 {
			x[[]string{"x_note", "x_meta", "debug_info", "provider_extra"}[rng.IntN(4)]] = unknownValue(rng, 0)
		}
	case []any:
		for _, c := range x {
			sprinkle(rng, c)
		}
	}
}

// slot is one string of a generated document and whether the safe list
// lets it through.
type slot struct {
	set  func(string)
	safe bool
}

// slots lists every string of v, marking those the documented rule keeps
// unfiltered: a safe member name, not beneath input or metadata, not in
// logprobs, in a known API's answer.
func slots(v any, key string, known, opaque, lp bool, out *[]slot) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok && s != "" {
				*out = append(*out, slot{set: func(n string) { x[k] = n }, safe: known && !opaque && !lp && llmapi.SafeKey(k)})
				continue
			}
			slots(c, k, known, opaque || k == "input" || k == "metadata", lp || k == "logprobs" || k == "top_logprobs", out)
		}
	case []any:
		for i, c := range x {
			if s, ok := c.(string); ok && s != "" {
				*out = append(*out, slot{set: func(n string) { x[i] = n }, safe: known && !opaque && !lp && llmapi.SafeKey(key)})
				continue
			}
			slots(c, key, known, opaque, lp, out)
		}
	}
}

// tokens are chat-style logprobs for text.
func tokens(text string) []any {
	var out []any
	for _, w := range strings.SplitAfter(text, " ") {
		if w == "" {
			continue
		}
		out = append(out, map[string]any{"token": w, "logprob": -0.5, "bytes": []byte(w),
			"top_logprobs": []any{map[string]any{"token": w, "logprob": -0.5, "bytes": []byte(w)}}})
	}
	return out
}

// bytesOf keeps []byte as a JSON array of numbers, as the APIs send bytes.
func bytesOf(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			x[k] = bytesOf(c)
		}
	case []any:
		for i, c := range x {
			x[i] = bytesOf(c)
		}
	case []byte:
		a := make([]any, len(x))
		for i, c := range x {
			a[i] = int(c)
		}
		return a
	}
	return v
}

func args(rng *rand.Rand) string {
	b, _ := json.Marshal(map[string]any{"recipient": prose(rng), "body": prose(rng)})
	return string(b)
}

// answer is a generated buffered answer.
func answer(rng *rand.Rand, api llmapi.API) map[string]any {
	var doc map[string]any
	switch api {
	case llmapi.OpenAIChat:
		var choices []any
		for i := range 1 + rng.IntN(3) {
			content := prose(rng)
			choices = append(choices, map[string]any{"index": i, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": content, "refusal": prose(rng), "reasoning_content": prose(rng),
					"tool_calls":  []any{map[string]any{"id": "call_1", "type": "function", "function": map[string]any{"name": "send_mail", "arguments": args(rng)}}},
					"annotations": []any{map[string]any{"type": "url_citation", "url_citation": map[string]any{"url": "https://docs.test/a", "title": prose(rng)}}}},
				"logprobs": map[string]any{"content": tokens(content)}})
		}
		doc = map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o", "system_fingerprint": "fp_1",
			"choices": choices, "usage": map[string]any{"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}
	case llmapi.OpenAICompletions:
		text := prose(rng)
		toks := strings.SplitAfter(text, " ")
		var tl, top []any
		for _, tk := range toks {
			tl = append(tl, tk)
			top = append(top, map[string]any{tk: -0.5})
		}
		doc = map[string]any{"id": "cmpl-1", "object": "text_completion", "model": "gpt-3.5-turbo-instruct",
			"choices": []any{map[string]any{"index": 0, "text": text, "finish_reason": "length",
				"logprobs": map[string]any{"tokens": tl, "top_logprobs": top}}}}
	case llmapi.OpenAIResponses:
		text := prose(rng)
		doc = map[string]any{"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-4o",
			"output": []any{
				map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{map[string]any{"type": "summary_text", "text": prose(rng)}}},
				map[string]any{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": []any{
					map[string]any{"type": "output_text", "text": text, "annotations": []any{}, "logprobs": tokens(text)},
					map[string]any{"type": "refusal", "refusal": prose(rng)}}},
				map[string]any{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "send_mail", "arguments": args(rng), "status": "completed"}},
			"usage": map[string]any{"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}}
	case llmapi.AnthropicMessages:
		doc = map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
			"content": []any{
				map[string]any{"type": "thinking", "thinking": prose(rng), "signature": "c2lnbmF0dXJl"},
				map[string]any{"type": "text", "text": prose(rng), "citations": []any{map[string]any{"type": "char_location", "cited_text": prose(rng), "document_title": prose(rng)}}},
				map[string]any{"type": "tool_use", "id": "toolu_1", "name": "send_mail", "input": map[string]any{"to": prose(rng), "nested": map[string]any{"id": prose(rng)}}}},
			"stop_reason": "end_turn", "usage": map[string]any{"input_tokens": 5, "output_tokens": 9}}
	default:
		doc = map[string]any{"object": "list", "data": []any{unknownValue(rng, 0), unknownValue(rng, 0)}, "id": prose(rng)}
	}
	sprinkle(rng, doc)
	return doc
}

func split(rng *rand.Rand, text string) []string {
	var out []string
	for len(text) > 0 {
		n := min(len(text), 1+rng.IntN(12))
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}

// stream generates a streamed answer of api. secret, when not empty, is
// planted into one incremental text (chosen at random) before it is split.
func stream(rng *rand.Rand, api llmapi.API, secret string) []any {
	texts := make([]string, 0, 8)
	text := func() int {
		texts = append(texts, prose(rng)+" ")
		return len(texts) - 1
	}
	// Reserve the channels first, so the secret can go into any of them.
	var plan []int
	switch api {
	case llmapi.OpenAIChat:
		for range 2 * 3 { // two choices: content, reasoning, tool arguments
			plan = append(plan, text())
		}
	case llmapi.OpenAICompletions:
		plan = append(plan, text(), text())
	case llmapi.OpenAIResponses, llmapi.AnthropicMessages:
		plan = append(plan, text(), text(), text())
	}
	if secret != "" {
		i := plan[rng.IntN(len(plan))]
		cut := strings.LastIndexByte(texts[i][:len(texts[i])-1], ' ') + 1
		texts[i] = texts[i][:cut] + secret + " " + texts[i][cut:]
	}
	var evs []any
	switch api {
	case llmapi.OpenAIChat:
		chunk := func(i int, delta map[string]any, extra map[string]any) map[string]any {
			c := map[string]any{"index": i, "delta": delta, "finish_reason": nil}
			for k, v := range extra {
				c[k] = v
			}
			return map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": []any{c}}
		}
		var per [2][]map[string]any
		for i := range 2 {
			per[i] = append(per[i], chunk(i, map[string]any{"role": "assistant", "content": ""}, nil))
			for _, p := range split(rng, texts[3*i+1]) {
				per[i] = append(per[i], chunk(i, map[string]any{"reasoning_content": p}, nil))
			}
			for _, p := range split(rng, texts[3*i]) {
				per[i] = append(per[i], chunk(i, map[string]any{"content": p}, map[string]any{"logprobs": map[string]any{"content": tokens(p)}}))
			}
			per[i] = append(per[i], chunk(i, map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": "call_1", "type": "function",
				"function": map[string]any{"name": "send_mail", "arguments": ""}}}}, nil))
			for _, p := range split(rng, texts[3*i+2]) {
				per[i] = append(per[i], chunk(i, map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]any{"arguments": p}}}}, nil))
			}
			fin := chunk(i, map[string]any{}, nil)
			fin["choices"].([]any)[0].(map[string]any)["finish_reason"] = "tool_calls"
			per[i] = append(per[i], fin)
		}
		for len(per[0])+len(per[1]) > 0 { // interleave the two choices
			if len(per[0]) > 0 && len(per[1]) > 0 && rng.IntN(3) == 0 {
				// One chunk carrying both choices, as n=2 servers send.
				both := per[0][0]
				both["choices"] = append(both["choices"].([]any), per[1][0]["choices"].([]any)...)
				evs = append(evs, both)
				per[0], per[1] = per[0][1:], per[1][1:]
				continue
			}
			i := rng.IntN(2)
			if len(per[i]) == 0 {
				i = 1 - i
			}
			evs = append(evs, per[i][0])
			per[i] = per[i][1:]
		}
		evs = append(evs, map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": []any{},
			"usage": map[string]any{"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}}, "[DONE]")
	case llmapi.OpenAICompletions:
		for i := range 2 {
			for _, p := range split(rng, texts[i]) {
				evs = append(evs, map[string]any{"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": []any{map[string]any{
					"index": i, "text": p, "finish_reason": nil, "logprobs": map[string]any{"tokens": []any{p}, "top_logprobs": []any{map[string]any{p: -0.1}}}}}})
			}
			evs = append(evs, map[string]any{"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": []any{map[string]any{"index": i, "text": "", "finish_reason": "stop"}}})
		}
		evs = append(evs, "[DONE]")
	case llmapi.OpenAIResponses:
		ev := func(typ string, m map[string]any) map[string]any { m["type"] = typ; return m }
		reasoning := map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{map[string]any{"type": "summary_text", "text": texts[0]}}}
		msg := map[string]any{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
			"content": []any{map[string]any{"type": "output_text", "text": texts[1], "annotations": []any{}}}}
		fc := map[string]any{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "send_mail", "arguments": texts[2], "status": "completed"}
		evs = append(evs, ev("response.created", map[string]any{"response": map[string]any{"id": "resp_1", "object": "response", "status": "in_progress", "output": []any{}}}),
			ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{}}}))
		for _, p := range split(rng, texts[0]) {
			evs = append(evs, ev("response.reasoning_summary_text.delta", map[string]any{"item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": p}))
		}
		evs = append(evs, ev("response.reasoning_summary_text.done", map[string]any{"item_id": "rs_1", "output_index": 0, "summary_index": 0, "text": texts[0]}),
			ev("response.output_item.done", map[string]any{"output_index": 0, "item": reasoning}),
			ev("response.output_item.added", map[string]any{"output_index": 1, "item": map[string]any{"type": "message", "id": "msg_1", "role": "assistant", "content": []any{}}}),
			ev("response.content_part.added", map[string]any{"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": map[string]any{"type": "output_text", "text": ""}}))
		for _, p := range split(rng, texts[1]) {
			evs = append(evs, ev("response.output_text.delta", map[string]any{"item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": p, "logprobs": tokens(p)}))
		}
		evs = append(evs, ev("response.output_text.done", map[string]any{"item_id": "msg_1", "output_index": 1, "content_index": 0, "text": texts[1]}),
			ev("response.content_part.done", map[string]any{"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": map[string]any{"type": "output_text", "text": texts[1]}}),
			ev("response.output_item.done", map[string]any{"output_index": 1, "item": msg}),
			ev("response.output_item.added", map[string]any{"output_index": 2, "item": map[string]any{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "send_mail", "arguments": ""}}))
		for _, p := range split(rng, texts[2]) {
			evs = append(evs, ev("response.function_call_arguments.delta", map[string]any{"item_id": "fc_1", "output_index": 2, "delta": p}))
		}
		evs = append(evs, ev("response.function_call_arguments.done", map[string]any{"item_id": "fc_1", "output_index": 2, "arguments": texts[2]}),
			ev("response.output_item.done", map[string]any{"output_index": 2, "item": fc}),
			ev("response.completed", map[string]any{"response": map[string]any{"id": "resp_1", "object": "response", "status": "completed",
				"output": []any{reasoning, msg, fc}, "usage": map[string]any{"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}}}))
	case llmapi.AnthropicMessages:
		ev := func(typ string, m map[string]any) map[string]any { m["type"] = typ; return m }
		evs = append(evs, ev("message_start", map[string]any{"message": map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
			"content": []any{}, "usage": map[string]any{"input_tokens": 5, "output_tokens": 1}}}))
		blocks := []struct {
			start       map[string]any
			dtype, name string
		}{
			{map[string]any{"type": "thinking", "thinking": "", "signature": ""}, "thinking_delta", "thinking"},
			{map[string]any{"type": "text", "text": ""}, "text_delta", "text"},
			{map[string]any{"type": "tool_use", "id": "toolu_1", "name": "send_mail", "input": map[string]any{}}, "input_json_delta", "partial_json"},
		}
		for i, b := range blocks {
			evs = append(evs, ev("content_block_start", map[string]any{"index": i, "content_block": b.start}))
			for _, p := range split(rng, texts[i]) {
				evs = append(evs, ev("content_block_delta", map[string]any{"index": i, "delta": map[string]any{"type": b.dtype, b.name: p}}))
			}
			if i == 0 {
				evs = append(evs, ev("content_block_delta", map[string]any{"index": i, "delta": map[string]any{"type": "signature_delta", "signature": "c2ln"}}))
			}
			evs = append(evs, ev("content_block_stop", map[string]any{"index": i}))
		}
		evs = append(evs, ev("message_delta", map[string]any{"delta": map[string]any{"stop_reason": "end_turn"}, "usage": map[string]any{"output_tokens": 9}}),
			ev("message_stop", map[string]any{}))
	}
	for _, e := range evs {
		sprinkle(rng, e)
	}
	return evs
}

// sse encodes events as an SSE body; Anthropic and Responses events carry
// their type as the event name too.
func sse(evs []any) []byte {
	var b bytes.Buffer
	for _, e := range evs {
		if s, ok := e.(string); ok {
			fmt.Fprintf(&b, "data: %s\n\n", s)
			continue
		}
		j, _ := json.Marshal(bytesOf(e))
		if typ, ok := e.(map[string]any)["type"].(string); ok {
			fmt.Fprintf(&b, "event: %s\n", typ)
		}
		fmt.Fprintf(&b, "data: %s\n\n", j)
	}
	return b.Bytes()
}

var answerPaths = map[llmapi.API]string{
	llmapi.OpenAIChat:        "/v1/chat/completions",
	llmapi.OpenAICompletions: "/v1/completions",
	llmapi.OpenAIResponses:   "/v1/responses",
	llmapi.AnthropicMessages: "/v1/messages",
	llmapi.Generic:           "/v1/files/file-1/content",
}

// answerCase runs one generated case on f and fails t if the planted value
// reached the client. Even seeds are buffered answers, odd ones streamed.
func answerCase(t testing.TB, f *stack, api llmapi.API, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, uint64(len(api))))
	kind := secretKind(rng.IntN(3))
	sec := newSecret(rng, kind)
	streamed := seed%2 == 1 && api != llmapi.Generic
	var body []byte
	where := ""
	if !streamed {
		doc := answer(rng, api)
		var ss []slot
		slots(doc, "", api != llmapi.Generic, false, false, &ss)
		ss = slices.DeleteFunc(ss, func(s slot) bool { return s.safe })
		i := rng.IntN(len(ss))
		ss[i].set(prose(rng) + " " + sec.text + " " + prose(rng))
		body, _ = json.Marshal(bytesOf(doc))
		where = "buffered"
	} else if rng.IntN(2) == 0 {
		body = sse(stream(rng, api, sec.text)) // in an incremental text, split over deltas
		where = "streamed, split over deltas"
	} else {
		evs := stream(rng, api, "")
		var ss []slot
		for _, e := range evs {
			slots(e, "", true, false, false, &ss)
		}
		ss = slices.DeleteFunc(ss, func(s slot) bool { return s.safe })
		ss[rng.IntN(len(ss))].set(prose(rng) + " " + sec.text + " " + prose(rng))
		body = sse(evs)
		where = "streamed, in one string"
	}
	var req envoysim.Request
	switch {
	case api == llmapi.Generic:
		req = envoysim.Request{Method: "GET", Path: answerPaths[api], Headers: map[string]string{"authorization": "Bearer " + f.key}}
	case streamed:
		req = f.request(answerPaths[api], `{"model":"m","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi"}],"prompt":"hi","input":"hi"}`)
	default:
		req = f.request(answerPaths[api], `{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"}],"prompt":"hi","input":"hi"}`)
	}
	ct := "application/json"
	if streamed {
		ct = "text/event-stream"
	}
	var cuts []int
	for range rng.IntN(30) {
		cuts = append(cuts, 1+rng.IntN(len(body)-1))
	}
	slices.Sort(cuts)
	up := envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": ct}, Chunks: envoysim.Split(body, cuts...)}
	res, err := envoysim.Run(context.Background(), f.client, envoysim.DefaultFilter, req, func(envoysim.Forwarded) envoysim.Upstream { return up })
	if err != nil {
		t.Fatalf("%s seed %d (%s): %v", api, seed, where, err)
	}
	if res.Immediate != nil {
		t.Fatalf("%s seed %d (%s): refused %d %s", api, seed, where, res.Status, res.Body)
	}
	for _, p := range sec.probes {
		if bytes.Contains(res.Body, []byte(p)) {
			t.Fatalf("%s seed %d (%s): %q reached the client:\n%s", api, seed, where, p, res.Body)
		}
	}
	if streamed {
		for _, line := range strings.Split(string(res.Body), "\n") {
			d, ok := strings.CutPrefix(line, "data: ")
			if ok && d != "[DONE]" && !json.Valid([]byte(d)) {
				t.Fatalf("%s seed %d: event is not JSON: %s", api, seed, d)
			}
		}
	} else if !json.Valid(res.Body) {
		t.Fatalf("%s seed %d: answer is not JSON: %s", api, seed, res.Body)
	}
}

var answerAPIs = []llmapi.API{llmapi.OpenAIChat, llmapi.OpenAICompletions, llmapi.OpenAIResponses, llmapi.AnthropicMessages, llmapi.Generic}

// TestAnswersNeverLeakPlantedValues is the property test: a fixed set of
// seeds per API, buffered and streamed.
func TestAnswersNeverLeakPlantedValues(t *testing.T) {
	f := newStack(t, extproc.Options{})
	n := uint64(40)
	if testing.Short() {
		n = 10
	}
	for _, api := range answerAPIs {
		t.Run(string(api), func(t *testing.T) {
			for seed := range n {
				answerCase(t, f, api, seed)
			}
		})
	}
}

// FuzzAnswersNeverLeakPlantedValues explores more seeds: go test -fuzz.
func FuzzAnswersNeverLeakPlantedValues(f *testing.F) {
	for i := range 8 {
		f.Add(uint64(i), uint8(i))
	}
	st := newStack(f, extproc.Options{})
	f.Fuzz(func(t *testing.T, seed uint64, which uint8) {
		answerCase(t, st, answerAPIs[int(which)%len(answerAPIs)], seed)
	})
}
