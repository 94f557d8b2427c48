package exchange_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/exchange"
)

// modServer is a real HTTP server speaking the OpenAI moderations API: it
// flags any input containing "kill" (category violence), or fails with 503
// while down. It keeps every input it was sent.
type modServer struct {
	srv    *httptest.Server
	down   atomic.Bool
	mu     sync.Mutex
	inputs []string
}

func newModServer(t *testing.T) *modServer {
	t.Helper()
	s := &modServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Input string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.inputs = append(s.inputs, in.Input)
		s.mu.Unlock()
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		flagged := strings.Contains(in.Input, "kill")
		_ = json.NewEncoder(w).Encode(map[string]any{"results": []any{map[string]any{
			"flagged": flagged, "categories": map[string]bool{"violence": flagged}, "category_scores": map[string]float64{"violence": 0.5}}}})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *modServer) sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.inputs...)
}

func (s *modServer) moderator(t *testing.T, failClosed bool) *detect.Moderator {
	t.Helper()
	m, err := detect.NewModerator(detect.ModerationConfig{URL: s.srv.URL, Timeout: time.Second, FailClosed: failClosed, CacheSize: -1}, s.srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const modRequest = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}`

// chatStream is an OpenAI chat completions stream whose deltas are parts.
func chatStream(parts ...string) []byte {
	var b strings.Builder
	for _, p := range parts {
		d, _ := json.Marshal(p)
		fmt.Fprintf(&b, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s}}]}\n\n", d)
	}
	b.WriteString("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	return []byte(b.String())
}

// streamedText is the text of the deltas a client received.
func streamedText(out []byte) string {
	var text strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		var ev struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && json.Unmarshal([]byte(data), &ev) == nil {
			for _, c := range ev.Choices {
				text.WriteString(c.Delta.Content)
			}
		}
	}
	return text.String()
}

// TestModerationWholeAnswer: a whole answer the moderation model flags is
// denied in the API's error shape (moderation_flagged); a clean one, and
// one the model could not judge under fail-open, pass unchanged; under
// fail-closed no verdict is moderation_unavailable.
func TestModerationWholeAnswer(t *testing.T) {
	srv := newModServer(t)
	answer := func(text string) []byte {
		return []byte(`{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` + text + `"},"finish_reason":"stop"}]}`)
	}
	for _, tc := range []struct {
		name       string
		failClosed bool
		down       bool
		text       string
		reason     string // "" : allowed
		status     int
	}{
		{"flagged", false, false, "here is how to kill him", "moderation_flagged", 403},
		{"clean", false, false, "Paris is the capital of France", "", 0},
		{"down, fail-open", false, true, "here is how to kill him", "", 0},
		{"down, fail-closed", true, true, "Paris is the capital of France", "moderation_unavailable", 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.down.Store(tc.down)
			c, key := newCore(t, exchange.Options{Moderator: srv.moderator(t, tc.failClosed)})
			ctx := context.Background()
			x := c.Start("test")
			defer x.End(ctx)
			if res, err := x.RequestHeaders(ctx, head(key, "/v1/chat/completions", true)); err != nil || res.Deny != nil {
				t.Fatalf("request headers: %+v %v", res.Deny, err)
			}
			if res, err := x.RequestBody(ctx, []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)); err != nil || res.Deny != nil {
				t.Fatalf("request body: %+v %v", res.Deny, err)
			}
			if _, err := x.ResponseHeaders(ctx, 200, map[string]string{"content-type": "application/json"}, false); err != nil {
				t.Fatal(err)
			}
			before := len(srv.sent())
			res, err := x.ResponseBody(ctx, answer(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if sent := srv.sent(); len(sent) != before+1 || sent[len(sent)-1] != tc.text {
				t.Errorf("moderation inputs %q, want one call with the answer's text", sent[before:])
			}
			if tc.reason == "" {
				if res.Deny != nil {
					t.Fatalf("denied %+v, want the answer through", res.Deny)
				}
				return
			}
			if res.Deny == nil || res.Deny.Reason != tc.reason || res.Deny.Status != tc.status {
				t.Fatalf("deny %+v, want %s %d", res.Deny, tc.reason, tc.status)
			}
			var e struct {
				Error struct{ Message, Type, Code string } `json:"error"`
			}
			if err := json.Unmarshal(res.Deny.Body, &e); err != nil || e.Error.Message == "" || strings.Contains(string(res.Deny.Body), "kill") {
				t.Errorf("deny body %s: want OpenAI's error shape without the answer (%v)", res.Deny.Body, err)
			}
		})
	}
}

// TestModerationStream: a streamed answer is asked about every window of
// text (with the overlap) and at its end. A flagged window ends the stream
// with an error event before the flagged text reaches the client; a
// flagged end withholds what was still held; a clean answer passes whole
// whatever the chunking; a moderation server that is down never cuts the
// stream under fail-open, and does under fail-closed.
func TestModerationStream(t *testing.T) {
	srv := newModServer(t)
	clean := make([]string, 40)
	for i := range clean {
		clean[i] = fmt.Sprintf("word%02d ", i) // 7 bytes each: 280 bytes
	}
	flaggedMid := append(append([]string{}, clean[:20]...), "then kill ")
	flaggedMid = append(flaggedMid, clean[20:]...)
	flaggedEnd := []string{"a short answer that says kill"}
	// "kill" early in a window that fills 200 bytes later: the redaction
	// stream would have released it long before the window is asked about.
	flaggedEarly := append(append(append([]string{}, clean[:5]...), "kill "), clean[5:]...)
	for _, tc := range []struct {
		name       string
		parts      []string
		failClosed bool
		down       bool
		cut        string // the error event's reason; "": not cut
		minCalls   int
		window     int // 0: 100
	}{
		{"clean", clean, false, false, "", 3, 0},
		{"flagged in a window", flaggedMid, false, false, "moderation_flagged", 2, 0},
		{"flagged at the end", flaggedEnd, false, false, "moderation_flagged", 1, 0},
		{"flagged early in a window", flaggedEarly, false, false, "moderation_flagged", 1, 250},
		{"down, fail-open", flaggedMid, false, true, "", 0, 0}, // the breaker opens: fewer calls
		{"down, fail-closed", clean, true, true, "moderation_unavailable", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.down.Store(tc.down)
			window := tc.window
			if window == 0 {
				window = 100
			}
			c, key := newCore(t, exchange.Options{Moderator: srv.moderator(t, tc.failClosed), ModerationWindow: window, StreamLookahead: 64, StreamStep: 16})
			stream := chatStream(tc.parts...)
			var outs []string
			for _, size := range []int{len(stream), 13, 1} {
				var chunks [][]byte
				for b := stream; len(b) > 0; b = b[min(size, len(b)):] {
					chunks = append(chunks, b[:min(size, len(b))])
				}
				before := len(srv.sent())
				out := streamOnce(t, c, key, "/v1/chat/completions", modRequest, "text/event-stream", chunks...)
				outs = append(outs, string(out))
				if calls := len(srv.sent()) - before; calls < tc.minCalls {
					t.Errorf("chunks of %d: %d moderation calls, want at least %d", size, calls, tc.minCalls)
				}
				text := streamedText(out)
				if tc.cut == "" {
					if text != strings.Join(tc.parts, "") || strings.Contains(string(out), "error") {
						t.Errorf("chunks of %d: client got %q, want the whole answer", size, out)
					}
					continue
				}
				if strings.Contains(text, "kill") || !strings.Contains(string(out), tc.cut) {
					t.Errorf("chunks of %d: client got %q, want it cut with %s before the flagged text", size, out, tc.cut)
				}
			}
			if tc.cut == "" && (outs[0] != outs[1] || outs[1] != outs[2]) {
				t.Errorf("output depends on the chunking:\n%q\n%q\n%q", outs[0], outs[1], outs[2])
			}
		})
	}
	// Every byte of a clean answer was sent: the windows cover the text.
	srv.down.Store(false)
	c, key := newCore(t, exchange.Options{Moderator: srv.moderator(t, false), ModerationWindow: 100})
	before := len(srv.sent())
	streamOnce(t, c, key, "/v1/chat/completions", modRequest, "text/event-stream", chatStream(clean...))
	var seen strings.Builder
	for i, in := range srv.sent()[before:] {
		if i > 0 {
			// Each window after the first starts with the overlap: the
			// previous window's tail, which seen already ends with.
			if !strings.HasSuffix(seen.String(), in[:min(len(in), 256)]) && !strings.HasPrefix(in, seen.String()[max(0, seen.Len()-256):]) {
				t.Errorf("window %d %q does not start with the previous window's tail", i, in)
			}
			in = in[min(len(in), min(256, seen.Len())):]
		}
		seen.WriteString(in)
	}
	if seen.String() != strings.Join(clean, "") {
		t.Errorf("the windows cover %q, want the whole answer", seen.String())
	}
}
