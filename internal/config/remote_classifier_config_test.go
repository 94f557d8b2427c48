package config

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// TestRemoteClassifierSettings: the remote classifier loads from the file,
// BULWARK_* variables and flags, is off by default, reaches
// detect.RemoteConfig whole, and bad values name their field without
// echoing the URL (it may carry a token).
func TestRemoteClassifierSettings(t *testing.T) {
	if d := Default(); d.RemoteClassifierURL != "" || d.RemoteClassifierTimeout != 150*time.Millisecond {
		t.Fatalf("default remote classifier: url %q timeout %s, want off and 150ms", d.RemoteClassifierURL, d.RemoteClassifierTimeout)
	}
	file := filepath.Join(t.TempDir(), "bulwark.yaml")
	if err := os.WriteFile(file, []byte("remote_classifier_url: http://guard:8000/score\nremote_classifier_breaker_cooldown: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--remote-classifier-threshold", "0.7"},
		[]string{"BULWARK_REMOTE_CLASSIFIER_TIMEOUT=80ms", "BULWARK_REMOTE_CLASSIFIER_BREAKER_FAILURES=3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := detect.RemoteConfig{URL: "http://guard:8000/score", Timeout: 80 * time.Millisecond, Threshold: 0.7,
		BreakerFailures: 3, BreakerCooldown: 30 * time.Second}
	if got := cfg.RemoteClassifierConfig(); got != want {
		t.Fatalf("RemoteClassifierConfig = %+v, want %+v", got, want)
	}
	if err := want.Validate(); err != nil {
		t.Fatalf("loaded config is not a valid detect.RemoteConfig: %v", err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		field string
	}{
		{"not http", []string{"--remote-classifier-url", "ftp://token@guard/score"}, "remote_classifier_url"},
		{"zero timeout", []string{"--remote-classifier-timeout", "0s"}, "remote_classifier_timeout"},
		{"long timeout", []string{"--remote-classifier-timeout", "1m"}, "remote_classifier_timeout"},
		{"threshold above 1", []string{"--remote-classifier-threshold", "1.5"}, "remote_classifier_threshold"},
		{"no breaker", []string{"--remote-classifier-breaker-failures", "0"}, "remote_classifier_breaker_failures"},
		{"zero cooldown", []string{"--remote-classifier-breaker-cooldown", "0s"}, "remote_classifier_breaker_cooldown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, nil, io.Discard)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "token") {
				t.Errorf("error echoes the URL: %v", err)
			}
		})
	}
	c := Default()
	c.RemoteClassifierURL = "https://guard/score?key=s3cret"
	var usage bytes.Buffer
	newFlagSet(&c, &usage).PrintDefaults()
	if strings.Contains(usage.String(), "s3cret") {
		t.Errorf("usage shows the remote classifier URL:\n%s", usage.String())
	}
}
