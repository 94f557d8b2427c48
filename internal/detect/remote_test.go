package detect

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bulwark-ai/bulwark/test/fixture/fakeclock"
)

var _ Clock = (*fakeclock.Clock)(nil)

// classifier is a real HTTP remote classifier whose behaviour a test
// switches: "ok" scores "attack" 0.93 (label injection) and anything else
// 0.1 (label benign); "hang" answers only when the client gives up; "500"
// and "bad" fail.
type classifier struct {
	srv   *httptest.Server
	mode  atomic.Value
	calls atomic.Int64
}

func newClassifier(t *testing.T) *classifier {
	t.Helper()
	c := &classifier{}
	c.mode.Store("ok")
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.calls.Add(1)
		var in struct{ Text string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		switch c.mode.Load() {
		case "hang":
			<-r.Context().Done() // the client's deadline ends the call
			return
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "bad":
			_, _ = w.Write([]byte(`{"score": 7}`))
			return
		}
		out := map[string]any{"score": 0.1, "label": "benign"}
		if in.Text == "attack" {
			out = map[string]any{"score": 0.93, "label": "injection"}
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func TestRemoteClassifyAndBreaker(t *testing.T) {
	t.Parallel()
	cl := newClassifier(t)
	clock := fakeclock.New(time.Unix(0, 0))
	reg := prometheus.NewRegistry()
	r, err := NewRemote(RemoteConfig{URL: cl.srv.URL, Timeout: 50 * time.Millisecond, Threshold: 0.8,
		BreakerFailures: 2, BreakerCooldown: time.Minute}, cl.srv.Client(), clock, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name     string
		mode     string
		advance  time.Duration
		text     string
		want     RemoteVerdict
		sent     bool    // the call reached the classifier
		breaker  float64 // bulwark_remote_classifier_breaker_open after the step
		opens    float64 // bulwark_remote_classifier_breaker_opens_total after the step
		resultOf string  // the calls_total result label this step counts under
	}{
		{"verdict", "ok", 0, "attack", RemoteVerdict{Available: true, Score: 0.93, Detected: true, Label: "injection"}, true, 0, 0, "ok"},
		{"below threshold", "ok", 0, "hello", RemoteVerdict{Available: true, Score: 0.1, Label: "benign"}, true, 0, 0, "ok"},
		{"timeout", "hang", 0, "x", RemoteVerdict{Error: "timeout"}, true, 0, 0, "timeout"},
		{"second failure opens the breaker", "500", 0, "x", RemoteVerdict{Error: "status"}, true, 1, 1, "status"},
		{"open breaker sends nothing", "ok", 0, "attack", RemoteVerdict{Error: "circuit_open"}, false, 1, 1, "circuit_open"},
		{"still open before the cooldown ends", "ok", 59 * time.Second, "attack", RemoteVerdict{Error: "circuit_open"}, false, 1, 1, "circuit_open"},
		{"failed trial opens it again", "bad", 2 * time.Second, "x", RemoteVerdict{Error: "bad_response"}, true, 1, 2, "bad_response"},
		{"open again", "ok", 0, "attack", RemoteVerdict{Error: "circuit_open"}, false, 1, 2, "circuit_open"},
		{"successful trial closes it", "ok", time.Minute, "attack", RemoteVerdict{Available: true, Score: 0.93, Detected: true, Label: "injection"}, true, 0, 2, "ok"},
		{"closed: one failure does not open it", "500", 0, "x", RemoteVerdict{Error: "status"}, true, 0, 2, "status"},
		{"closed", "ok", 0, "hello", RemoteVerdict{Available: true, Score: 0.1, Label: "benign"}, true, 0, 2, "ok"},
	}
	for _, s := range steps {
		cl.mode.Store(s.mode)
		clock.Advance(s.advance)
		before := cl.calls.Load()
		countBefore := testutil.ToFloat64(r.metrics.calls.WithLabelValues(s.resultOf))
		if got := r.Classify(ctx, s.text); got != s.want {
			t.Errorf("%s: Classify = %+v, want %+v", s.name, got, s.want)
		}
		if sent := cl.calls.Load() > before; sent != s.sent {
			t.Errorf("%s: call sent = %v, want %v", s.name, sent, s.sent)
		}
		if got := testutil.ToFloat64(r.metrics.breakerOpen); got != s.breaker {
			t.Errorf("%s: breaker_open = %v, want %v", s.name, got, s.breaker)
		}
		if got := testutil.ToFloat64(r.metrics.breakerOpens); got != s.opens {
			t.Errorf("%s: breaker_opens_total = %v, want %v", s.name, got, s.opens)
		}
		if got := testutil.ToFloat64(r.metrics.calls.WithLabelValues(s.resultOf)) - countBefore; got != 1 {
			t.Errorf("%s: calls_total{result=%q} went up by %v, want 1", s.name, s.resultOf, got)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "bulwark_remote_classifier_calls_total", "bulwark_remote_classifier_breaker_open",
		"bulwark_remote_classifier_breaker_opens_total"); err != nil || n != 9 {
		t.Errorf("registered series = %d (%v), want 9 (seven results, the gauge, the counter)", n, err)
	}
}

// A caller that goes away mid-call says nothing about the classifier: it
// must not count towards opening the breaker.
func TestRemoteCanceledCallerIsNoFailure(t *testing.T) {
	t.Parallel()
	cl := newClassifier(t)
	cl.mode.Store("hang")
	r, err := NewRemote(RemoteConfig{URL: cl.srv.URL, Timeout: time.Minute, BreakerFailures: 1}, cl.srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for cl.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if got := r.Classify(ctx, "x"); got != (RemoteVerdict{Error: "canceled"}) {
		t.Fatalf("cancelled call = %+v, want canceled", got)
	}
	cl.mode.Store("ok")
	if got := r.Classify(context.Background(), "attack"); !got.Available {
		t.Errorf("after a cancelled call = %+v, want a verdict (breaker still closed)", got)
	}
}

// RemoteScanner's verdict joins the local detectors' signals; a failing
// classifier leaves the local signals whole and the verdict unavailable.
func TestRemoteScannerSignals(t *testing.T) {
	t.Parallel()
	cl := newClassifier(t)
	local, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRemote(RemoteConfig{URL: cl.srv.URL, Timeout: 50 * time.Millisecond}, cl.srv.Client(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := WithRemote(local, r)
	const text = "attack"
	tests := []struct {
		name string
		mode string
		want RemoteVerdict
	}{
		{"verdict", "ok", RemoteVerdict{Available: true, Score: 0.93, Detected: true, Label: "injection"}},
		{"timeout", "hang", RemoteVerdict{Error: "timeout"}},
		{"error status", "500", RemoteVerdict{Error: "status"}},
	}
	for _, tt := range tests {
		cl.mode.Store(tt.mode)
		res, err := sc.ScanContext(context.Background(), text)
		if err != nil {
			t.Fatalf("%s: ScanContext: %v", tt.name, err)
		}
		sig := res.Signals()
		if sig.RemoteClassifier == nil || *sig.RemoteClassifier != tt.want {
			t.Errorf("%s: signals.remote_classifier = %+v, want %+v", tt.name, sig.RemoteClassifier, tt.want)
		}
		if sig.Length.Bytes != len(text) {
			t.Errorf("%s: local signals missing: length %+v", tt.name, sig.Length)
		}
	}
	if res, _ := local.ScanContext(context.Background(), text); res.Signals().RemoteClassifier != nil {
		t.Error("a scanner without a remote classifier reports signals.remote_classifier")
	}
}

func TestRemoteConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  RemoteConfig
		ok   bool
	}{
		{"valid", RemoteConfig{URL: "http://127.0.0.1:9/score"}, true},
		{"no url", RemoteConfig{}, false},
		{"bad scheme", RemoteConfig{URL: "ftp://x/"}, false},
		{"threshold above 1", RemoteConfig{URL: "http://x/", Threshold: 1.5}, false},
		{"negative timeout", RemoteConfig{URL: "http://x/", Timeout: -time.Second}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	r, err := NewRemote(RemoteConfig{URL: "http://127.0.0.1:1/", Timeout: 50 * time.Millisecond}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Classify(context.Background(), "x"); got.Available || got.Score != 0 || got.Error != "transport" {
		t.Errorf("transport error = %+v, want unavailable, score 0, error transport", got)
	}
}
