package detect

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var _ Clock = (*fakeClock)(nil)

func TestRemoteClassify(t *testing.T) {
	t.Parallel()
	var mode atomic.Value // "ok", "slow", "500", "bad"
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Text string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		switch mode.Load() {
		case "slow":
			time.Sleep(200 * time.Millisecond)
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "bad":
			w.Write([]byte(`{"score": 7}`))
			return
		}
		score := 0.1
		if in.Text == "attack" {
			score = 0.93
		}
		json.NewEncoder(w).Encode(map[string]float64{"score": score})
	}))
	t.Cleanup(srv.Close)
	clock := &fakeClock{t: time.Unix(0, 0)}
	r, err := NewRemote(RemoteConfig{Name: "guard", URL: srv.URL, Timeout: 50 * time.Millisecond, BreakerFailures: 2, BreakerCooldown: time.Minute}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name    string
		mode    string
		advance time.Duration
		text    string
		want    RemoteSignal
	}{
		{"ok", "ok", 0, "attack", RemoteSignal{Score: 0.93, OK: true}},
		{"timeout fails closed", "slow", 0, "x", RemoteSignal{Score: 1, Error: "timeout"}},
		{"status opens circuit", "500", 0, "x", RemoteSignal{Score: 1, Error: "status"}},
		{"open circuit short-circuits", "ok", 0, "x", RemoteSignal{Score: 1, Error: "circuit_open"}},
		{"half-open trial succeeds", "ok", 2 * time.Minute, "benign", RemoteSignal{Score: 0.1, OK: true}},
		{"bad response", "bad", 0, "x", RemoteSignal{Score: 1, Error: "bad_response"}},
	}
	for _, s := range steps {
		mode.Store(s.mode)
		clock.Advance(s.advance)
		if got := r.Classify(ctx, s.text); got != s.want {
			t.Errorf("%s: Classify = %+v, want %+v", s.name, got, s.want)
		}
	}
}

func TestRemoteConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  RemoteConfig
		ok   bool
	}{
		{"valid", RemoteConfig{Name: "g", URL: "http://127.0.0.1:9/score"}, true},
		{"no name", RemoteConfig{URL: "http://x/"}, false},
		{"bad scheme", RemoteConfig{Name: "g", URL: "ftp://x/"}, false},
		{"bad mode", RemoteConfig{Name: "g", URL: "http://x/", FailureMode: "maybe"}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	r, err := NewRemote(RemoteConfig{Name: "g", URL: "http://127.0.0.1:1/", FailureMode: FailOpen, Timeout: 50 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Classify(context.Background(), "x"); got.OK || got.Score != 0 {
		t.Errorf("fail-open transport error = %+v, want score 0 not ok", got)
	}
}
