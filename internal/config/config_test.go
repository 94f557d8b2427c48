package config

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bulwark.yaml")
	if err := os.WriteFile(file, []byte("grpc_addr: 127.0.0.1:1000\ncheck_timeout: 50ms\nlog_level: debug\ndry_run: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(
		[]string{"--config", file, "--log-level", "warn"},
		[]string{"BULWARK_CHECK_TIMEOUT=70ms", "BULWARK_LOG_LEVEL=error", "PATH=/bin"},
		io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPCAddr != "127.0.0.1:1000" { // file over default
		t.Errorf("grpc_addr = %s", cfg.GRPCAddr)
	}
	if cfg.CheckTimeout != 70*time.Millisecond { // env over file
		t.Errorf("check_timeout = %s", cfg.CheckTimeout)
	}
	if cfg.LogLevel != "warn" { // flag over env
		t.Errorf("log_level = %s", cfg.LogLevel)
	}
	if !cfg.DryRun || cfg.AdminAddr != Default().AdminAddr {
		t.Errorf("cfg = %+v", cfg)
	}
	// Kubernetes injects service-link variables for a Service named bulwark;
	// they are not settings and must not stop the process.
	if _, err := Load(nil, []string{"BULWARK_SERVICE_HOST=10.0.0.1", "BULWARK_SERVICE_PORT_GRPC=9191",
		"BULWARK_PORT=tcp://10.0.0.1:9191", "BULWARK_PORT_9191_TCP_ADDR=10.0.0.1"}, io.Discard); err != nil {
		t.Fatalf("service-link variables refused: %v", err)
	}
	// BULWARK_CONFIG names the file when --config is absent.
	cfg, err = Load(nil, []string{"BULWARK_CONFIG=" + file}, io.Discard)
	if err != nil || cfg.GRPCAddr != "127.0.0.1:1000" {
		t.Fatalf("BULWARK_CONFIG: %+v %v", cfg, err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	_ = os.WriteFile(unknown, []byte("grpc_adr: 127.0.0.1:1\n"), 0o644)
	badType := filepath.Join(dir, "badtype.yaml")
	_ = os.WriteFile(badType, []byte("check_timeout: soon\n"), 0o644)
	cases := []struct {
		name    string
		args    []string
		env     []string
		wantErr string
	}{
		{"unknown file key", []string{"--config", unknown}, nil, "grpc_adr"},
		{"bad file type", []string{"--config", badType}, nil, "soon"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, "no such file"},
		{"unknown env", nil, []string{"BULWARK_GRPC_ADR=x"}, "BULWARK_GRPC_ADR"},
		{"bad env value", nil, []string{"BULWARK_CHECK_TIMEOUT=fast"}, "BULWARK_CHECK_TIMEOUT"},
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"stray argument", []string{"extra"}, nil, "unexpected"},
		{"invalid value", []string{"--grpc-addr", "nohostport"}, nil, "grpc_addr"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, tc.env, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateNamesField(t *testing.T) {
	cases := []struct {
		field string
		mut   func(*Config)
	}{
		{"grpc_addr", func(c *Config) { c.GRPCAddr = "x" }},
		{"admin_addr", func(c *Config) { c.AdminAddr = "" }},
		{"policy_dir", func(c *Config) { c.PolicyDir = "/does/not/exist" }},
		{"bundle", func(c *Config) { c.PolicyDir, c.Bundle = os.TempDir(), "b.tar.gz" }},
		{"policy_query", func(c *Config) { c.PolicyQuery = "" }},
		{"check_timeout", func(c *Config) { c.CheckTimeout = 0 }},
		{"max_recv_msg_bytes", func(c *Config) { c.MaxRecvMsgBytes = 10 }},
		{"max_recv_msg_bytes", func(c *Config) { c.MaxRecvMsgBytes = math.MaxInt }},
		{"max_send_msg_bytes", func(c *Config) { c.MaxSendMsgBytes = 10 }},
		{"max_concurrent_streams", func(c *Config) { c.MaxConcurrentStreams = 0 }},
		{"max_concurrent_streams", func(c *Config) { c.MaxConcurrentStreams = math.MaxInt }},
		{"keepalive_min_time", func(c *Config) { c.KeepaliveMinTime = -1 }},
		{"shutdown_grace", func(c *Config) { c.ShutdownGrace = -1 }},
		{"reload_debounce", func(c *Config) { c.ReloadDebounce = -1 }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"log_format", func(c *Config) { c.LogFormat = "xml" }},
		{"tls_key", func(c *Config) { c.TLSCert = os.Args[0] }},
		{"tls_cert", func(c *Config) { c.TLSKey = os.Args[0] }},
		{"tls_cert", func(c *Config) { c.TLSCert, c.TLSKey = "/does/not/exist", os.Args[0] }},
		{"tls_client_ca", func(c *Config) { c.TLSClientCA = os.Args[0] }},
		{"tls_client_sans", func(c *Config) { c.TLSClientSANs = []string{"spiffe://x/y"} }},
		{"tls_client_sans", func(c *Config) {
			c.TLSCert, c.TLSKey, c.TLSClientCA, c.TLSClientSANs = os.Args[0], os.Args[0], os.Args[0], []string{"a b"}
		}},
		{"admin_tls_key", func(c *Config) { c.AdminTLSCert = os.Args[0] }},
		{"api_addr", func(c *Config) { c.APIAddr = "nohostport" }},
		{"api_addr", func(c *Config) { c.APIAddr = c.GRPCAddr }},
		{"api_addr", func(c *Config) { c.APIAddr = "0.0.0.0:9191" }},
		{"api_addr", func(c *Config) { c.APIAddr = c.AdminAddr }},
		{"api_tls_key", func(c *Config) { c.APITLSCert = os.Args[0] }},
		{"api_tls_client_ca", func(c *Config) { c.APITLSClientCA = os.Args[0] }},
		{"api_tls_client_sans", func(c *Config) { c.APITLSClientSANs = []string{"spiffe://x/y"} }},
		{"metadata_key_file", func(c *Config) { c.MetadataKeyFile = "/does/not/exist" }},
		{"admin_tls_cert", func(c *Config) { c.AdminTLSKey = os.Args[0] }},
		{"max_in_flight", func(c *Config) { c.MaxInFlight = -1 }},
		{"max_streams", func(c *Config) { c.MaxStreams = -1 }},
		{"overload_window", func(c *Config) { c.OverloadWindow = 0 }},
		{"alert_webhook_url", func(c *Config) { c.AlertWebhookURL = "hooks.example.com/x" }},
		{"alert_webhook_timeout", func(c *Config) { c.AlertWebhookTimeout = 0 }},
		{"alert_min_interval", func(c *Config) { c.AlertMinInterval = -time.Second }},
		{"alert_max_per_minute", func(c *Config) { c.AlertMaxPerMinute = 0 }},
		{"alert_injection_burst", func(c *Config) { c.AlertInjectionBurst = -1 }},
		{"alert_injection_window", func(c *Config) { c.AlertInjectionWindow = 0 }},
		{"extproc_message_timeout", func(c *Config) { c.ExtProcMessageTimeout = 0 }},
		{"extproc_max_message_timeout", func(c *Config) { c.ExtProcMaxMessageTimeout = -time.Second }},
		{"extproc_max_message_timeout", func(c *Config) { c.ExtProcMaxMessageTimeout = c.ExtProcMessageTimeout }},
		{"extproc_idle_timeout", func(c *Config) { c.ExtProcIdleTimeout = 0 }},
		{"extproc_idle_timeout", func(c *Config) { c.ExtProcIdleTimeout = 25 * time.Hour }},
		{"extproc_max_stream_duration", func(c *Config) { c.ExtProcMaxStreamDuration = c.ExtProcIdleTimeout - time.Second }},
		{"extproc_max_stream_duration", func(c *Config) { c.ExtProcMaxStreamDuration = 8 * 24 * time.Hour }},
		{"extproc_max_buffered_bytes", func(c *Config) { c.ExtProcMaxBufferedBytes = int64(c.ExtProcMaxBodyBytes) - 1 }},
		{"jwt_issuer", func(c *Config) { c.JWKSURL = "https://issuer.example/jwks" }},
		{"jwt_audience", func(c *Config) { c.JWKSURL, c.JWTIssuer = "https://issuer.example/jwks", "https://issuer.example" }},
		{"jwt_issuer", func(c *Config) { c.JWTKeysFile, c.JWTAudience = "keys.pem", "bulwark" }},
		{"jwks_max_cache_ttl", func(c *Config) { c.JWKSMaxCacheTTL = time.Second }},
		{"operator_role", func(c *Config) { c.OperatorRole = "" }},
		{"operator_role", func(c *Config) { c.OperatorRole = "ops,admin" }},
		{"operator_cross_tenant_role", func(c *Config) { c.OperatorCrossTenantRole = c.OperatorRole }},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			c := Default()
			tc.mut(&c)
			var fe *FieldError
			if err := c.Validate(); !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want FieldError for %s", err, tc.field)
			}
		})
	}
}

// TestJWTIssuerAudienceOptIn: JWT keys without an issuer or audience start
// only with the explicit, insecure opt-in, by any of the three names.
func TestJWTIssuerAudienceOptIn(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		environ []string
		wantErr bool
	}{
		{"refused without issuer and audience", []string{"--jwks-url", "https://issuer.example/jwks"}, nil, true},
		{"both set", []string{"--jwks-url", "https://issuer.example/jwks", "--jwt-issuer", "https://issuer.example", "--jwt-audience", "bulwark"}, nil, false},
		{"opt-in flag", []string{"--jwks-url", "https://issuer.example/jwks", "--jwt-insecure-skip-issuer-audience"}, nil, false},
		{"opt-in variable", []string{"--jwks-url", "https://issuer.example/jwks"}, []string{"BULWARK_JWT_INSECURE_SKIP_ISSUER_AUDIENCE=true"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, tc.environ, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Load = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && c.IdentityConfig("").InsecureSkipIssuerAudience != (tc.name != "both set") {
				t.Errorf("InsecureSkipIssuerAudience = %v", c.IdentityConfig("").InsecureSkipIssuerAudience)
			}
		})
	}
}

func FuzzLoadFile(f *testing.F) {
	f.Add("grpc_addr: 127.0.0.1:1\n")
	f.Add("check_timeout: 5ms\ndry_run: true\n")
	f.Add("[1, 2")
	f.Fuzz(func(t *testing.T, s string) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		c := Default()
		_ = loadFile(p, &c)
	})
}

// TestLoadTLS reads the TLS and overload settings from each source: the
// SAN allow-list as a YAML list, a comma list in the environment and a flag.
func TestLoadTLS(t *testing.T) {
	dir := t.TempDir()
	pem := filepath.Join(dir, "x.pem") // contents are checked when the server loads them
	if err := os.WriteFile(pem, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "bulwark.yaml")
	yml := "tls_cert: " + pem + "\ntls_key: " + pem + "\ntls_client_ca: " + pem +
		"\ntls_client_sans:\n  - spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway\n  - envoy.local\nmax_in_flight: 0\n"
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load([]string{"--config", file}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.TLSClientSANs) != 2 || cfg.TLSClientSANs[1] != "envoy.local" || cfg.MaxInFlight != 0 || cfg.MaxStreams != 10000 {
		t.Errorf("from file: %+v", cfg)
	}
	cfg, err = Load([]string{"--tls-client-sans", "spiffe://a/b", "--max-streams", "5", "--overload-window", "2s"},
		[]string{"BULWARK_TLS_CERT=" + pem, "BULWARK_TLS_KEY=" + pem, "BULWARK_TLS_CLIENT_CA=" + pem,
			"BULWARK_TLS_CLIENT_SANS=spiffe://x/y, envoy.local", "BULWARK_ADMIN_TLS_CERT=" + pem, "BULWARK_ADMIN_TLS_KEY=" + pem}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSCert != pem || cfg.AdminTLSKey != pem || len(cfg.TLSClientSANs) != 1 || cfg.TLSClientSANs[0] != "spiffe://a/b" ||
		cfg.MaxStreams != 5 || cfg.OverloadWindow != 2*time.Second {
		t.Errorf("from env and flags: %+v", cfg)
	}
	if _, err := Load(nil, []string{"BULWARK_TLS_CERT=" + pem}, io.Discard); err == nil || !strings.Contains(err.Error(), "tls_key") {
		t.Errorf("cert without key: %v, want an error naming tls_key", err)
	}
}

// The usage message shows each flag's current value as its default: a
// Redis password from the config file must not be printed there.
func TestUsageHidesRedisCredentials(t *testing.T) {
	t.Parallel()
	cfg := Default()
	cfg.RedisURL = "redis://app:s3cret@redis:6379/0"
	var usage bytes.Buffer
	newFlagSet(&cfg, &usage).PrintDefaults()
	if strings.Contains(usage.String(), "s3cret") || !strings.Contains(usage.String(), "redis://***@redis:6379/0") {
		t.Errorf("usage shows the Redis password or not the redacted URL:\n%s", usage.String())
	}
	cfg, err := Load([]string{"--redis-url", "redis://:pw@h:1"}, nil, io.Discard)
	if err != nil || cfg.RedisURL != "redis://:pw@h:1" {
		t.Fatalf("--redis-url = %q, %v; the flag must keep the real URL", cfg.RedisURL, err)
	}
}

// TestLoadStreamLifecycle reads the ext_proc stream bounds from each
// source: file, environment and flag, flags winning.
func TestLoadStreamLifecycle(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bulwark.yaml")
	yml := "extproc_idle_timeout: 2m\nextproc_max_stream_duration: 20m\nextproc_max_buffered_bytes: 67108864\n"
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name           string
		args, env      []string
		idle, duration time.Duration
		buffered       int64
	}{
		{"defaults", nil, nil, 10 * time.Minute, time.Hour, 128 << 20},
		{"file", []string{"--config", file}, nil, 2 * time.Minute, 20 * time.Minute, 64 << 20},
		{"environment over file", []string{"--config", file},
			[]string{"BULWARK_EXTPROC_IDLE_TIMEOUT=3m", "BULWARK_EXTPROC_MAX_STREAM_DURATION=30m", "BULWARK_EXTPROC_MAX_BUFFERED_BYTES=33554432"},
			3 * time.Minute, 30 * time.Minute, 32 << 20},
		{"flags over environment", []string{"--extproc-idle-timeout", "90s", "--extproc-max-stream-duration", "2h", "--extproc-max-buffered-bytes", "16777216"},
			[]string{"BULWARK_EXTPROC_IDLE_TIMEOUT=3m"}, 90 * time.Second, 2 * time.Hour, 16 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(tc.args, tc.env, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ExtProcIdleTimeout != tc.idle || cfg.ExtProcMaxStreamDuration != tc.duration || cfg.ExtProcMaxBufferedBytes != tc.buffered {
				t.Errorf("got idle %v, duration %v, buffered %d; want %v, %v, %d",
					cfg.ExtProcIdleTimeout, cfg.ExtProcMaxStreamDuration, cfg.ExtProcMaxBufferedBytes, tc.idle, tc.duration, tc.buffered)
			}
		})
	}
}
