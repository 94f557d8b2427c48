package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func post(t *testing.T, srv *httptest.Server, path, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestBuffered(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newHandler(0))
	defer srv.Close()
	resp := post(t, srv, "/v1/chat/completions",
		`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"mail bob@example.com"}]}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("content-type"); ct != "application/json" {
		t.Errorf("content-type = %q", ct)
	}
	var got struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage usage `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Object != "chat.completion" || got.Model != "gpt-4o-mini" || len(got.Choices) != 1 {
		t.Fatalf("got %+v", got)
	}
	c := got.Choices[0]
	if c.Message.Role != "assistant" || c.FinishReason != "stop" || !strings.Contains(c.Message.Content, "bob@example.com") {
		t.Errorf("choice = %+v, want the assistant echoing the last user message", c)
	}
	if got.Usage.TotalTokens != got.Usage.PromptTokens+got.Usage.CompletionTokens || got.Usage.PromptTokens == 0 {
		t.Errorf("usage = %+v", got.Usage)
	}
}

// events reads an SSE body into its data payloads.
func events(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			out = append(out, data)
		} else if line != "" {
			t.Errorf("unexpected SSE line %q", line)
		}
	}
	return out
}

func TestStreamed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		wantUsage bool
	}{
		{"without usage", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hello there"}]}`, false},
		{"with usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},
			"messages":[{"role":"user","content":[{"type":"text","text":"hello "},{"type":"text","text":"there"}]}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(newHandler(0))
			defer srv.Close()
			resp := post(t, srv, "/v1/chat/completions", tt.body)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("content-type") != "text/event-stream" {
				t.Fatalf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("content-type"))
			}
			evs := events(t, resp.Body)
			if len(evs) < 3 || evs[len(evs)-1] != "[DONE]" {
				t.Fatalf("events = %q, want chunks then [DONE]", evs)
			}
			var content strings.Builder
			var sawStop, sawUsage bool
			for _, e := range evs[:len(evs)-1] {
				var c struct {
					Object  string `json:"object"`
					Choices []struct {
						Delta struct {
							Content string `json:"content"`
						} `json:"delta"`
						FinishReason *string `json:"finish_reason"`
					} `json:"choices"`
					Usage *usage `json:"usage"`
				}
				if err := json.Unmarshal([]byte(e), &c); err != nil {
					t.Fatalf("event %q: %v", e, err)
				}
				if c.Object != "chat.completion.chunk" {
					t.Errorf("object = %q", c.Object)
				}
				for _, ch := range c.Choices {
					content.WriteString(ch.Delta.Content)
					if ch.FinishReason != nil && *ch.FinishReason == "stop" {
						sawStop = true
					}
				}
				if c.Usage != nil {
					sawUsage = true
					if len(c.Choices) != 0 {
						t.Errorf("usage chunk has choices: %q", e)
					}
				}
			}
			if want := "This is stubllm. You said: hello there"; content.String() != want {
				t.Errorf("joined deltas = %q, want %q", content.String(), want)
			}
			if !sawStop {
				t.Error("no chunk with finish_reason stop")
			}
			if sawUsage != tt.wantUsage {
				t.Errorf("usage chunk present = %v, want %v", sawUsage, tt.wantUsage)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newHandler(0))
	defer srv.Close()
	tests := []struct {
		name, path, body string
		want             int
	}{
		{"malformed JSON", "/v1/chat/completions", `{"model":`, http.StatusBadRequest},
		{"no messages", "/v1/chat/completions", `{"model":"m"}`, http.StatusBadRequest},
		{"unknown route", "/v1/nope", `{}`, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, srv, tt.path, tt.body)
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			var e struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
				} `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Errorf("error body not in OpenAI's shape: %+v, %v", e, err)
			}
		})
	}
}
