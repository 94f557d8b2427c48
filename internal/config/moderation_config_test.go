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

// TestModerationSettings: the moderation model loads from the file,
// BULWARK_* variables and flags, is off by default, reaches
// detect.ModerationConfig whole with its token from the file (or the
// caller's $BULWARK_MODERATION_TOKEN), and bad values name their field
// without echoing the URL or the token.
func TestModerationSettings(t *testing.T) {
	if d := Default(); d.ModerationURL != "" || d.ModerationFailureMode != "fail_open" || !d.ModerationResponses {
		t.Fatalf("default moderation: url %q mode %q responses %v, want off, fail_open, true", d.ModerationURL, d.ModerationFailureMode, d.ModerationResponses)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "bulwark.yaml")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("sk-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("moderation_url: https://api.openai.com/v1/moderations\nmoderation_model: omni-moderation-latest\nmoderation_cache_ttl: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file, "--moderation-failure-mode", "fail_closed", "--moderation-token-file", tokenFile},
		[]string{"BULWARK_MODERATION_TIMEOUT=400ms", "BULWARK_MODERATION_BREAKER_FAILURES=3", "BULWARK_MODERATION_TOKEN=sk-env",
			"BULWARK_MODERATION_STREAM_WINDOW=512"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.ModerationConfig("sk-env")
	if err != nil {
		t.Fatal(err)
	}
	want := detect.ModerationConfig{URL: "https://api.openai.com/v1/moderations", Model: "omni-moderation-latest", Token: "sk-from-file",
		Timeout: 400 * time.Millisecond, BreakerFailures: 3, BreakerCooldown: 10 * time.Second, CacheTTL: 30 * time.Second,
		CacheSize: 10000, FailClosed: true}
	if got != want {
		t.Fatalf("ModerationConfig = %+v, want %+v", got, want)
	}
	if cfg.ModerationStreamWindow != 512 {
		t.Errorf("stream window = %d, want 512", cfg.ModerationStreamWindow)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("loaded config is not a valid detect.ModerationConfig: %v", err)
	}
	cfg.ModerationTokenFile = ""
	cfg.ModerationCacheSize = 0
	if got, err := cfg.ModerationConfig("sk-env"); err != nil || got.Token != "sk-env" || got.CacheSize != -1 {
		t.Errorf("without a token file: token %q cache size %d (%v), want the environment's token and no cache", got.Token, got.CacheSize, err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		field string
	}{
		{"not http", []string{"--moderation-url", "ftp://token@mod/v1/moderations"}, "moderation_url"},
		{"zero timeout", []string{"--moderation-timeout", "0s"}, "moderation_timeout"},
		{"unknown failure mode", []string{"--moderation-failure-mode", "open"}, "moderation_failure_mode"},
		{"no breaker", []string{"--moderation-breaker-failures", "0"}, "moderation_breaker_failures"},
		{"zero cooldown", []string{"--moderation-breaker-cooldown", "0s"}, "moderation_breaker_cooldown"},
		{"zero ttl", []string{"--moderation-cache-ttl", "0s"}, "moderation_cache_ttl"},
		{"negative cache", []string{"--moderation-cache-size", "-1"}, "moderation_cache_size"},
		{"tiny window", []string{"--moderation-stream-window", "8"}, "moderation_stream_window"},
		{"missing token file", []string{"--moderation-token-file", filepath.Join(dir, "none")}, "moderation_token_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, nil, io.Discard)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "token@") {
				t.Errorf("error echoes the URL: %v", err)
			}
		})
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.ModerationURL, c.ModerationTokenFile = "https://mod/v1/moderations?key=s3cret", empty
	if _, err := c.ModerationConfig(""); err == nil {
		t.Error("an empty token file is accepted")
	}
	var usage bytes.Buffer
	newFlagSet(&c, &usage).PrintDefaults()
	if strings.Contains(usage.String(), "s3cret") {
		t.Errorf("usage shows the moderation URL:\n%s", usage.String())
	}
}
