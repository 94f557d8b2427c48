package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOPAConfig feeds arbitrary bytes through what --opa-config reads: the
// ${VAR} substitution and OPA's configuration parsing and plugin set-up.
// Any input is an error or a manager, never a panic.
func FuzzOPAConfig(f *testing.F) {
	f.Add([]byte("services:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n  a:\n    service: s\n    resource: b.tar.gz\n"))
	f.Add([]byte("decision_logs:\n  console: true\n  mask_decision: system/log/mask\n"))
	f.Add([]byte(`{"keys": {"k": {"algorithm": "HS256", "key": "${FUZZ_KEY}"}}, "status": {"console": true}}`))
	f.Add([]byte("plugins:\n  envoy_ext_authz_grpc:\n    addr: :9191\n"))
	f.Add([]byte("discovery:\n  service: s\n  resource: /d\n"))
	f.Add([]byte("${"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "opa.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		raw, err := LoadOPAConfig(path)
		if err != nil {
			t.Fatal(err) // the file exists: reading it cannot fail
		}
		o, err := NewOPA(context.Background(), raw, "fuzz.yaml", OPAOptions{ID: "fuzz"})
		if err == nil && o == nil {
			t.Fatal("nil manager without an error")
		}
		if o != nil {
			o.Stop(context.Background())
		}
	})
}
