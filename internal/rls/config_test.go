package rls

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
)

// example is envoy/ratelimit's README example config, slightly extended.
const example = `
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: Second
      requests_per_unit: 500
  - key: remote_address
    rate_limit:
      name: per_ip
      unit: MINUTE
      requests_per_unit: 10
  - key: remote_address
    value: 10.0.0.1
    rate_limit:
      unlimited: true
  - key: path
    value: /api/*
    share_threshold: true
    rate_limit:
      unit: hour
      requests_per_unit: 100
  - key: source_cluster
    value: proxy
    descriptors:
      - key: destination_cluster
        value: bar
        rate_limit:
          unit: day
          requests_per_unit: 1
      - key: destination_cluster
        rate_limit:
          name: dest
          unit: week
          requests_per_unit: 7
          replaces:
            - name: per_ip
`

func entries(kv ...string) []*rlv3.RateLimitDescriptor_Entry {
	var es []*rlv3.RateLimitDescriptor_Entry
	for i := 0; i+1 < len(kv); i += 2 {
		es = append(es, &rlv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return es
}

func TestLookup(t *testing.T) {
	cfg, err := Parse("example.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Rules != 7 {
		t.Errorf("Rules = %d, want 7", cfg.Rules)
	}
	cases := []struct {
		name    string
		domain  string
		entries []*rlv3.RateLimitDescriptor_Entry
		want    string // rule id, "" for no match
		key     string
	}{
		{"exact value", "mongo_cps", entries("database", "users"), "mongo_cps.database_users", "8.database5.users"},
		{"value not configured", "mongo_cps", entries("database", "other"), "", ""},
		{"bare key matches any value", "mongo_cps", entries("remote_address", "1.2.3.4"), "mongo_cps.remote_address", "14.remote_address7.1.2.3.4"},
		{"exact beats bare key", "mongo_cps", entries("remote_address", "10.0.0.1"), "mongo_cps.remote_address_10.0.0.1", ""},
		{"wildcard shares one counter", "mongo_cps", entries("path", "/api/v1/x"), "mongo_cps.path_/api/*", "4.path11.path_/api/*"},
		{"wildcard, another value, same counter", "mongo_cps", entries("path", "/api/v2"), "mongo_cps.path_/api/*", "4.path11.path_/api/*"},
		{"nested", "mongo_cps", entries("source_cluster", "proxy", "destination_cluster", "bar"), "mongo_cps.source_cluster_proxy.destination_cluster_bar", ""},
		{"nested bare key", "mongo_cps", entries("source_cluster", "proxy", "destination_cluster", "baz"), "mongo_cps.source_cluster_proxy.destination_cluster", ""},
		{"limit only at the last entry", "mongo_cps", entries("source_cluster", "proxy"), "", ""},
		{"deeper than the config", "mongo_cps", entries("database", "users", "extra", "x"), "", ""},
		{"unknown domain", "other", entries("database", "users"), "", ""},
		{"no entries", "mongo_cps", nil, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, key := cfg.lookup(c.domain, c.entries, nil)
			got := ""
			if r != nil {
				got = r.id
			}
			if got != c.want {
				t.Fatalf("rule = %q, want %q", got, c.want)
			}
			if c.key != "" && string(key) != c.key {
				t.Errorf("key = %q, want %q", key, c.key)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"duplicate descriptor", "domain: d\ndescriptors:\n- key: a\n  value: b\n  rate_limit: {unit: second, requests_per_unit: 1}\n- key: a\n  value: b\n  rate_limit: {unit: minute, requests_per_unit: 2}\n",
			`duplicate descriptor "d.a_b"`},
		{"duplicate nested descriptor", "domain: d\ndescriptors:\n- key: a\n  descriptors:\n  - key: x\n  - key: x\n",
			`duplicate descriptor "d.a.x"`},
		{"unknown unit", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
			`unknown rate limit unit "fortnight"`},
		{"unit unknown (enum's UNKNOWN)", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: unknown, requests_per_unit: 1}\n",
			`unknown rate limit unit "unknown"`},
		{"missing unit", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {requests_per_unit: 1}\n", `unknown rate limit unit ""`},
		{"unlimited with a unit", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {unlimited: true, unit: second}\n", "unlimited and names a unit"},
		{"unknown key", "domain: d\ndescriptors:\n- key: a\n  rate_limt: {unit: second}\n", "rate_limt"},
		{"empty key", "domain: d\ndescriptors:\n- value: a\n", "empty key"},
		{"empty domain", "descriptors:\n- key: a\n", "domain is empty"},
		{"empty file", "", "empty file"},
		{"two documents", "domain: a\n---\ndomain: b\n", "one YAML document per file"},
		{"negative requests", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: second, requests_per_unit: -1}\n", "cannot unmarshal !!int `-1` into uint32"},
		{"replaces itself", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: second, requests_per_unit: 1, name: n, replaces: [{name: n}]}\n", "replaces names its own"},
		{"replaces empty", "domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: second, requests_per_unit: 1, replaces: [{}]}\n", "empty name"},
		{"quota mode", "domain: d\ndescriptors:\n- key: a\n  quota_mode: true\n  rate_limit: {unit: second, requests_per_unit: 1}\n", "quota_mode is not supported"},
		{"share_threshold without wildcard", "domain: d\ndescriptors:\n- key: a\n  value: b\n  share_threshold: true\n", "share_threshold needs a wildcard"},
		{"not a map", "- a\n- b\n", "rls config x.yaml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestParseDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("domain: d\n")
	indent := ""
	for range maxDepth + 2 {
		b.WriteString(indent + "descriptors:\n" + indent + "- key: k\n")
		indent += "  "
	}
	if _, err := Parse("deep.yaml", []byte(b.String())); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Fatalf("err = %v, want nesting error", err)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "domain: a\ndescriptors:\n- key: k\n  rate_limit: {unit: second, requests_per_unit: 1}\n")
	write("b.yml", "domain: b\ndescriptors:\n- key: k\n  rate_limit: {unit: second, requests_per_unit: 1}\n")
	write("notes.txt", "not yaml: [")
	write(".hidden.yaml", "not yaml: [")
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Domains(), ","); got != "a,b" {
		t.Fatalf("domains = %s", got)
	}
	write("c.yaml", "domain: a\n")
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), `duplicate domain "a"`) {
		t.Fatalf("err = %v, want duplicate domain", err)
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no .yaml") {
		t.Fatalf("empty dir: err = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
}

func TestWildcardMatch(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"a_b*", "a_bc", true},
		{"a_b*", "a_b", true},
		{"a_b*", "a_c", false},
		{"a_*x*z", "a_yxyz", true},
		{"a_*x*z", "a_yz", false},
		{"a_*ab*ba", "a_aba", false}, // overlapping segments must not share bytes
		{"a_b", "a_b", true},
	}
	for _, c := range cases {
		if got := wildcardMatch(strings.Split(c.pattern, "*"), c.s); got != c.want {
			t.Errorf("wildcardMatch(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}

// FuzzParse feeds arbitrary bytes to the YAML loader: it must return a
// config or an error, never panic, and a loaded config must answer lookups.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 30s ./internal/rls
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("domain: d\ndescriptors:\n- key: a\n  value: '*'\n  share_threshold: true\n  rate_limit: {unit: second, requests_per_unit: 0}\n"))
	f.Add([]byte("domain: d\ndescriptors:\n- key: a\n  descriptors:\n  - key: b\n    rate_limit: {unlimited: true, name: x, replaces: [{name: y}]}\n"))
	f.Add([]byte("domain: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		for _, d := range cfg.Domains() {
			cfg.lookup(d, entries("a", "b", "c", "d"), nil)
			cfg.lookup(d, entries("database", "users"), nil)
		}
	})
}
