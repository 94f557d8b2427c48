package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bulwark-ai/bulwark/internal/app"
	"github.com/bulwark-ai/bulwark/internal/config"
)

// testConfig is the default configuration on loopback ports of the
// system's choosing.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.GRPCAddr, cfg.AdminAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return cfg
}

// TestRunServesReadiness: the service New builds listens, reports every
// component ready on /readyz, records its configuration in the audit log,
// and stops when the context ends.
func TestRunServesReadiness(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.AuditLog = filepath.Join(t.TempDir(), "audit.log")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, app.Deps{Registry: prometheus.NewRegistry(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	var body struct {
		Components map[string]json.RawMessage `json:"components"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := readyz(a)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 200: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{"identity", "audit", "ratelimit", "policy"} {
		if _, ok := body.Components[name]; !ok {
			t.Errorf("/readyz has no %q component: %v", name, body.Components)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	a.Close(context.Background())
	log, err := os.ReadFile(cfg.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), `"config_loaded"`) || !strings.Contains(string(log), `"version":"test"`) {
		t.Fatalf("audit log lacks the config_loaded record:\n%s", log)
	}
}

func readyz(a *app.App) (*http.Response, error) {
	return http.Get("http://" + a.Server.AdminAddr() + "/readyz")
}

// TestConfigErrors: what the configuration gets wrong is an *app.ConfigError
// (serve exits 2), and New closes what it had built.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*config.Config)
		want string
	}{
		{"redis url", func(c *config.Config) { c.RedisURL = "ftp://nowhere" }, "config redis_url"},
		{"metadata key file missing", func(c *config.Config) { c.MetadataKeyFile = filepath.Join(t.TempDir(), "none") }, "config metadata_key_file"},
		{"redact key too short", func(c *config.Config) { c.RedactKeyFile = short }, "config redact_key_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			tc.edit(&cfg)
			a, err := app.New(context.Background(), cfg, app.Deps{})
			var ce *app.ConfigError
			if a != nil || !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("New: %v, %v; want a ConfigError starting %q", a, err, tc.want)
			}
		})
	}
}
