package policy

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const allowGet = `package bulwark
import rego.v1
default decision := {"allowed": false, "reason": "nope"}
decision := {"allowed": true, "reason": "get"} if input.method == "GET"
`

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func input(t *testing.T, s string) ast.Value {
	t.Helper()
	return ast.MustParseTerm(s).Value
}

func TestEngineDirAndReload(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": allowGet})
	reg := prometheus.NewRegistry()
	e, err := New(context.Background(), Config{Dir: dir, Query: "bulwark/decision"}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	get := input(t, `{"method": "GET"}`)
	res, err := e.Evaluate(ctx, get)
	if err != nil || !res.Decision.Allowed || res.Decision.Reason != "get" {
		t.Fatalf("GET: %+v, %v", res, err)
	}
	rev1 := e.Revision()

	// A broken policy never replaces the last good one.
	writeFiles(t, dir, map[string]string{"p.rego": "package bulwark\ndecision := {"})
	if err := e.Reload(ctx); err == nil {
		t.Fatal("reload of a broken policy succeeded")
	}
	if e.Revision() != rev1 {
		t.Fatal("revision changed after a failed reload")
	}
	if st := e.Status(); !st.Ready || st.LastError == "" {
		t.Fatalf("status after failed reload = %+v", st)
	}
	res, err = e.Evaluate(ctx, get)
	if err != nil || !res.Decision.Allowed {
		t.Fatalf("after failed reload: %+v, %v", res, err)
	}
	// A compile error (not only a parse error) is rejected too.
	writeFiles(t, dir, map[string]string{"p.rego": "package bulwark\nimport rego.v1\ndecision := x if { true }"})
	if err := e.Reload(ctx); err == nil {
		t.Fatal("reload of an uncompilable policy succeeded")
	}

	// A good policy replaces it; data files are mounted by directory.
	writeFiles(t, dir, map[string]string{
		"p.rego": `package bulwark
import rego.v1
decision := {"allowed": input.method in data.bulwark.methods, "reason": "data"}`,
		"bulwark/data.yaml": "methods: [POST]\n",
		"p_test.rego":       "this is not rego and must be ignored when serving",
		".hidden/x.rego":    "nor this",
	})
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if e.Revision() == rev1 {
		t.Fatal("revision did not change")
	}
	res, err = e.Evaluate(ctx, input(t, `{"method": "POST"}`))
	if err != nil || !res.Decision.Allowed {
		t.Fatalf("POST after reload: %+v, %v", res, err)
	}
	if got := testutil.ToFloat64(e.reloads.WithLabelValues("failure")); got != 2 {
		t.Fatalf("failure count = %v, want 2", got)
	}
	if st := e.Status(); st.LastError != "" {
		t.Fatalf("last error not cleared: %q", st.LastError)
	}
}

func TestEngineFailuresAreTypedErrors(t *testing.T) {
	fs := fstest.MapFS{"p.rego": {Data: []byte(`package t
import rego.v1
bool_true := true
str := "allow"
conflict := 1 if input.x
conflict := 2 if input.x
slow if {
	some i in numbers.range(1, 100000000)
	i < 0
}
obj := {"allowed": true}
`)}}
	cases := []struct {
		query   string
		input   string
		timeout time.Duration
		code    Code
		allowed bool
	}{
		{query: "t/bool_true", input: `{}`, allowed: true},
		{query: "t/obj", input: `{}`, allowed: true},
		{query: "t/missing", input: `{}`, code: CodeUndefined},
		{query: "data.t.str", input: `{}`, code: CodeInvalidDecision},
		{query: "t/conflict", input: `{"x": true}`, code: CodeEvalError},
		{query: "t/slow", input: `{}`, timeout: 20 * time.Millisecond, code: CodeTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			e, err := New(context.Background(), Config{Embedded: fs, Query: tc.query}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			start := time.Now()
			res, err := e.Evaluate(ctx, input(t, tc.input))
			if tc.code == "" {
				if err != nil || res.Decision.Allowed != tc.allowed {
					t.Fatalf("got %+v, %v", res, err)
				}
				return
			}
			var perr *Error
			if !errors.As(err, &perr) || perr.Code != tc.code {
				t.Fatalf("err = %v, want code %s", err, tc.code)
			}
			if res.Decision.Allowed {
				t.Fatal("failed evaluation reported allowed")
			}
			if tc.code == CodeTimeout {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("timeout error does not unwrap to DeadlineExceeded: %v", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("evaluation ran %v past a 20ms deadline", d)
				}
			}
		})
	}
}

func TestEngineRejectsBadFirstLoad(t *testing.T) {
	cases := map[string]Config{
		"no source":   {Query: "a/b"},
		"bad query":   {Embedded: fstest.MapFS{"p.rego": {Data: []byte("package a")}}, Query: "a/[b"},
		"empty dir":   {Dir: t.TempDir(), Query: "a/b"},
		"missing dir": {Dir: filepath.Join(t.TempDir(), "nope"), Query: "a/b"},
		"parse error": {Embedded: fstest.MapFS{"p.rego": {Data: []byte("package")}}, Query: "a/b"},
		"v0 syntax":   {Embedded: fstest.MapFS{"p.rego": {Data: []byte("package a\nallow { true }")}}, Query: "a/allow"},
		// OPA's loader keeps the second "routes" silently; an operator's
		// first block would vanish without a word.
		"duplicate data key": {Embedded: fstest.MapFS{
			"p.rego":    {Data: []byte("package a\nallow := true")},
			"data.yaml": {Data: []byte("a:\n  routes: [1]\n  routes: [2]\n")},
		}, Query: "a/allow"},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := New(context.Background(), cfg, nil, nil); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestEngineRegoV0(t *testing.T) {
	fs := fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\ndefault allow = false\nallow { input.ok }")}}
	e, err := New(context.Background(), Config{Embedded: fs, Query: "envoy/authz/allow", RegoV0: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Evaluate(context.Background(), input(t, `{"ok": true}`))
	if err != nil || !res.Decision.Allowed {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestEngineBundle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, body := range map[string]string{
		"/policy.rego": `package b` + "\nimport rego.v1\nallow if input.user in data.b.users\n",
		"/b/data.json": `{"users": ["alice"]}`,
		"/.manifest":   `{"roots": ["b"]}`,
	} {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))})
		_, _ = tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	f.Close()
	e, err := New(context.Background(), Config{Bundle: path, Query: "b/allow"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.Evaluate(context.Background(), input(t, `{"user": "alice"}`))
	if err != nil || !res.Decision.Allowed {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := e.Evaluate(context.Background(), input(t, `{"user": "bob"}`)); err == nil {
		t.Fatal("bob: want undefined error")
	}
}

func TestEngineWatchReloads(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": allowGet})
	e, err := New(context.Background(), Config{Dir: dir, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Watch(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	rev := e.Revision()
	time.Sleep(50 * time.Millisecond) // let the watcher register
	writeFiles(t, dir, map[string]string{"sub/q.rego": "package other\nx := 1\n"})
	deadline := time.Now().Add(5 * time.Second)
	for e.Revision() == rev {
		if time.Now().After(deadline) {
			t.Fatal("watcher did not reload within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDataQuery(t *testing.T) {
	cases := map[string]string{
		"bulwark/decision":       "data.bulwark.decision",
		"/envoy/authz/allow/":    "data.envoy.authz.allow",
		"data.envoy.authz.allow": "data.envoy.authz.allow",
	}
	for in, want := range cases {
		if got, err := DataQuery(in); err != nil || got != want {
			t.Errorf("DataQuery(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := DataQuery(""); err == nil {
		t.Error("empty query accepted")
	}
}
