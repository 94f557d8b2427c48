package extproc_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/bulwark-ai/bulwark/internal/extproc"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// maxTrail is how far the text a client has received may trail what the
// model sent, for ordinary prose (issue 27).
const maxTrail = 64

// chatDelta is one Chat Completions chunk carrying text.
func chatDelta(text string) []byte {
	q, _ := json.Marshal(text)
	return []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":` + string(q) + `},"finish_reason":null}]}` + "\n\n")
}

// chatEnd closes a Chat Completions stream.
var chatEnd = []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n")

// clientText is the text of the Chat Completions chunks in an SSE body
// Bulwark sent the client.
func clientText(tb testing.TB, body []byte) string {
	tb.Helper()
	var b strings.Builder
	for _, line := range strings.Split(string(body), "\n") {
		d, ok := strings.CutPrefix(line, "data: ")
		if !ok || d == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			tb.Fatalf("client event is not JSON: %v: %s", err, d)
		}
		for _, ch := range c.Choices {
			b.WriteString(ch.Delta.Content)
		}
	}
	return b.String()
}

// streamed is what a client saw of one streamed answer: its text, and
// after each upstream event how many bytes of text the model had sent and
// the client had received.
type streamed struct {
	text           string
	sent, received []int
}

// streamAnswer streams text in pieces through f's ext_proc, one SSE event
// per piece and one ext_proc body chunk per event.
func streamAnswer(tb testing.TB, f *stack, pieces []string) streamed {
	tb.Helper()
	st := openStream(tb, f)
	var out streamed
	var got strings.Builder
	sent := 0
	send := func(body []byte, end bool) {
		if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: end}}}); err != nil {
			tb.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			tb.Fatal(err)
		}
		rb := resp.GetResponseBody()
		if rb == nil {
			tb.Fatalf("response %v is not a body response", resp)
		}
		m := rb.GetResponse().GetBodyMutation()
		switch {
		case m == nil:
			got.WriteString(clientText(tb, body)) // passed unchanged
		case m.GetClearBody():
		default:
			got.WriteString(clientText(tb, m.GetBody()))
		}
	}
	for _, p := range pieces {
		send(chatDelta(p), false)
		sent += len(p)
		out.sent = append(out.sent, sent)
		out.received = append(out.received, got.Len())
	}
	send(chatEnd, true)
	out.text = got.String()
	return out
}

// tokenPieces splits text into pieces of 1 to 12 bytes (whole characters),
// as a model's tokens come.
func tokenPieces(text string, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 27))
	var out []string
	for len(text) > 0 {
		n := min(len(text), 1+rng.IntN(12))
		for n < len(text) && !utf8.RuneStart(text[n]) {
			n++
		}
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}

// TestStreamTrailsProse streams ordinary prose (English and ten other
// languages) through the real ext_proc server: after every upstream event
// the client's text trails the model's by at most maxTrail bytes, and it
// arrives unchanged. Values split over events are still redacted.
func TestStreamTrailsProse(t *testing.T) {
	prose, err := os.ReadFile("../redact/testdata/prose.txt")
	if err != nil {
		t.Fatal(err)
	}
	f := newStack(t, extproc.Options{})
	for seed := range uint64(3) {
		got := streamAnswer(t, f, tokenPieces(string(prose), seed))
		if got.text != string(prose) {
			t.Fatalf("seed %d: prose changed:\n got %q\nwant %q", seed, got.text, prose)
		}
		worst := 0
		for i := range got.sent {
			trail := got.sent[i] - got.received[i]
			worst = max(worst, trail)
			if trail > maxTrail {
				t.Fatalf("seed %d: after %d bytes sent the client had %d: trails by %d > %d", seed, got.sent[i], got.received[i], trail, maxTrail)
			}
		}
		t.Logf("seed %d: %d events, trail at most %d bytes", seed, len(got.sent), worst)
	}

	for _, tt := range []struct{ name, value string }{
		{"email", "jane.doe@mailbox.org"},
		{"phone", "+1 415 555 0132"},
		{"aws key", "AKIA" + "Q3MZ7VXW2NLT8RHD"},
		{"password", "my password is Tr0ub4dor&3xq"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := string(prose[:300]) + " Note: " + tt.value + " for the record. " + string(prose[300:600])
			for seed := range uint64(5) {
				got := streamAnswer(t, f, tokenPieces(text, seed))
				probe := tt.value[max(0, len(tt.value)-12):]
				if strings.Contains(got.text, probe) {
					t.Fatalf("seed %d: %q reached the client: %q", seed, probe, got.text)
				}
				if got.text == text {
					t.Fatalf("seed %d: answer passed unredacted", seed)
				}
			}
		})
	}
}

// BenchmarkStreamProse streams prose through ext_proc one small event per
// iteration and reports, beside the cost per event, how soon text reaches
// the client: ttft-bytes is how many bytes the model had sent when the
// client first received text, held-max-B and held-mean-B how far the
// client's text trailed the model's after each event.
func BenchmarkStreamProse(b *testing.B) {
	prose, err := os.ReadFile("../redact/testdata/prose.txt")
	if err != nil {
		b.Fatal(err)
	}
	pieces := tokenPieces(string(prose), 1)
	f := newStack(b, extproc.Options{})
	st := openStream(b, f)
	events := make([][]byte, len(pieces))
	for i, p := range pieces {
		events[i] = chatDelta(p)
	}
	var ttft, worst, sum, n, first int
	sent, received, k := 0, 0, 0
	first = -1
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if k == len(events) {
			if first >= 0 {
				ttft = max(ttft, first)
			}
			if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: chatEnd, EndOfStream: true}}}); err != nil {
				b.Fatal(err)
			}
			if _, err := st.Recv(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			st = openStream(b, f)
			b.StartTimer()
			k, sent, received, first = 0, 0, 0, -1
		}
		if err := st.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: events[k]}}}); err != nil {
			b.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		sent += len(pieces[k])
		m := resp.GetResponseBody().GetResponse().GetBodyMutation()
		switch {
		case m == nil:
			received += len(pieces[k])
		case !m.GetClearBody():
			received += len(clientText(b, m.GetBody()))
		}
		if received > 0 && first < 0 {
			first = sent
		}
		worst, sum, n = max(worst, sent-received), sum+sent-received, n+1
		k++
		b.StartTimer()
	}
	if first >= 0 {
		ttft = max(ttft, first)
	}
	b.ReportMetric(float64(ttft), "ttft-bytes")
	b.ReportMetric(float64(worst), "held-max-B")
	b.ReportMetric(float64(sum)/float64(max(n, 1)), "held-mean-B")
}

// responsesEvents is a Responses stream of two messages, each text in
// deltas, numbered from 0 as the API numbers its events.
func responsesEvents(texts ...string) []byte {
	var b strings.Builder
	seq := 0
	ev := func(name string, v map[string]any) {
		v["type"], v["sequence_number"] = name, seq
		seq++
		j, _ := json.Marshal(v)
		b.WriteString("event: " + name + "\ndata: " + string(j) + "\n\n")
	}
	ev("response.created", map[string]any{"response": map[string]any{"id": "resp_1", "object": "response", "status": "in_progress", "output": []any{}}})
	for i, text := range texts {
		id := "msg_" + string(rune('a'+i))
		ev("response.output_item.added", map[string]any{"output_index": i, "item": map[string]any{"type": "message", "id": id, "role": "assistant", "content": []any{}}})
		ev("response.content_part.added", map[string]any{"item_id": id, "output_index": i, "content_index": 0, "part": map[string]any{"type": "output_text", "text": ""}})
		for _, p := range tokenPieces(text, uint64(i)) {
			ev("response.output_text.delta", map[string]any{"item_id": id, "output_index": i, "content_index": 0, "delta": p, "logprobs": []any{}})
		}
		ev("response.output_text.done", map[string]any{"item_id": id, "output_index": i, "content_index": 0, "text": text})
		ev("response.content_part.done", map[string]any{"item_id": id, "output_index": i, "content_index": 0, "part": map[string]any{"type": "output_text", "text": text}})
		ev("response.output_item.done", map[string]any{"output_index": i, "item": map[string]any{"type": "message", "id": id, "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}}}}})
	}
	ev("response.completed", map[string]any{"response": map[string]any{"id": "resp_1", "object": "response", "status": "completed", "output": []any{},
		"usage": map[string]any{"input_tokens": 5, "output_tokens": 20, "total_tokens": 25}}})
	return []byte(b.String())
}

// TestResponsesSequenceNumbers: the events Bulwark inserts into a Responses
// stream to release held-back text are numbered after the last event the
// client saw, and later events are renumbered, so that sequence_number
// strictly increases (by one, as upstream's did) over the whole stream;
// the text arrives whole. Each message ends inside a word and the second
// with a number, so text is held at each close.
func TestResponsesSequenceNumbers(t *testing.T) {
	f := newStack(t, extproc.Options{})
	texts := []string{"The answer is in the attached report, see page", "Call the desk on extension 4471"}
	body := responsesEvents(texts...)
	for _, cuts := range [][]int{nil, {17, 400, 401, 1200}} {
		up := envoysim.Upstream{Status: 200, Headers: map[string]string{"content-type": "text/event-stream"}, Chunks: envoysim.Split(body, cuts...)}
		res, err := envoysim.Run(context.Background(), f.client, envoysim.DefaultFilter,
			f.request("/v1/responses", `{"model":"m","stream":true,"input":"hi"}`), func(envoysim.Forwarded) envoysim.Upstream { return up })
		if err != nil || res.Immediate != nil {
			t.Fatalf("cuts %v: %v %+v", cuts, err, res.Immediate)
		}
		var seqs []int
		var text strings.Builder
		inserted := 0
		for _, block := range strings.Split(string(res.Body), "\n\n") {
			_, d, ok := strings.Cut(block, "data: ")
			if !ok {
				continue
			}
			var ev struct {
				Type  string `json:"type"`
				Seq   *int   `json:"sequence_number"`
				Delta string `json:"delta"`
			}
			if err := json.Unmarshal([]byte(d), &ev); err != nil {
				t.Fatalf("cuts %v: event is not JSON: %s", cuts, d)
			}
			if ev.Seq == nil {
				t.Fatalf("cuts %v: event without sequence_number: %s", cuts, d)
			}
			seqs = append(seqs, *ev.Seq)
			text.WriteString(ev.Delta)
		}
		for i := range seqs {
			if i > 0 && seqs[i] != seqs[i-1]+1 {
				t.Errorf("cuts %v: sequence numbers %v: %d follows %d", cuts, seqs, seqs[i], seqs[i-1])
				break
			}
		}
		upstream := strings.Count(string(body), "\n\n")
		inserted = len(seqs) - upstream
		if inserted < 1 {
			t.Errorf("cuts %v: %d events for %d upstream: no held text was released in an event of its own (test does not test)", cuts, len(seqs), upstream)
		}
		if want := strings.Join(texts, ""); text.String() != want {
			t.Errorf("cuts %v: text %q, want %q", cuts, text.String(), want)
		}
	}
}
