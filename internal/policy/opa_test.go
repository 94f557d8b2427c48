package policy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const testSigningKey = "bulwark-test-hmac-secret-of-some-length"

// bundleServer serves one bundle tarball over HTTP as OPA's bundle service
// API does, with ETags (a 304 when the client already has it).
type bundleServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     []byte
	etag     string
	status   int // non-zero: answer with this status instead
	notMod   int // 304s sent
	requests int
}

func newBundleServer(t *testing.T) *bundleServer {
	t.Helper()
	s := &bundleServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.requests++
		if s.status != 0 {
			w.WriteHeader(s.status)
			return
		}
		if s.body == nil {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("If-None-Match") == s.etag {
			s.notMod++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", s.etag)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) set(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256(body)
	s.body, s.etag, s.status = body, `"`+hex.EncodeToString(sum[:8])+`"`, 0
}

func (s *bundleServer) fail(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
}

// signedBundle builds a bundle tarball with one module, signed with
// testSigningKey (HS256) by OPA's own signing code. tamper changes the
// module after signing, so its digest no longer matches the signature.
func signedBundle(t *testing.T, revision, rego string, tamper bool) []byte {
	t.Helper()
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision, Roots: &[]string{"authz"}},
		Data:     map[string]any{"authz": map[string]any{"revision": revision}},
		Modules:  []bundle.ModuleFile{{URL: "/authz/policy.rego", Path: "/authz/policy.rego", Raw: []byte(rego)}},
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(testSigningKey, "HS256", ""), "global_key", false); err != nil {
		t.Fatal(err)
	}
	if tamper {
		b.Modules[0].Raw = []byte(strings.ReplaceAll(rego, `"alice"`, `"mallory"`))
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func policyFor(user string) string {
	return "package authz\n\ndefault allow := false\n\nallow if input.user == \"" + user + "\"\n"
}

func opaConfig(bundleURL, logURL string) string {
	services := "services:\n  bundles:\n    url: " + bundleURL + "\n"
	logs := ""
	if logURL != "" {
		services += "  logs:\n    url: " + logURL + "\n"
		logs = "decision_logs:\n  service: logs\n  reporting:\n    trigger: manual\n  mask_decision: system/log/mask\n"
	}
	return services + fmt.Sprintf(`keys:
  global_key:
    algorithm: HS256
    key: %s
bundles:
  authz:
    service: bundles
    resource: bundle.tar.gz
    trigger: manual
    signing:
      keyid: global_key
`, testSigningKey) + logs
}

type opaEngine struct {
	e   *Engine
	opa *OPA
	reg *prometheus.Registry
}

func newOPAEngine(t *testing.T, cfg string) opaEngine {
	t.Helper()
	ctx := t.Context()
	reg := prometheus.NewRegistry()
	o, err := NewOPA(ctx, []byte(cfg), "test.yaml", OPAOptions{ID: "test-instance", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(ctx, Config{OPA: o, Query: "authz/allow"}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	watchCtx, cancel := context.WithCancel(ctx)
	go e.Watch(watchCtx, 0) //nolint:errcheck // returns nil for an OPA source
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		stop, c := context.WithTimeout(context.Background(), 5*time.Second)
		o.Stop(stop)
		c()
	})
	return opaEngine{e: e, opa: o, reg: reg}
}

// trigger downloads the bundle once (trigger: manual). The bundle plugin
// activates it inside Trigger and the engine's watch goroutine compiles it;
// Reload, which is serialised with that compile and a no-op when the
// revision is unchanged, makes sure it has been compiled before returning.
func (o opaEngine) trigger(t *testing.T) error {
	t.Helper()
	err := bundleplugin.Lookup(o.opa.manager).Trigger(t.Context())
	_ = o.e.Reload(t.Context())
	return err
}

func (o opaEngine) allows(t *testing.T, user string) bool {
	t.Helper()
	res, err := o.e.Evaluate(t.Context(), ast.MustParseTerm(`{"user": "`+user+`"}`).Value)
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	return res.Decision.Allowed
}

func TestOPABundleSignedActivatesTamperedRefused(t *testing.T) {
	srv := newBundleServer(t)
	o := newOPAEngine(t, opaConfig(srv.URL, ""))
	if st := o.e.Status(); st.Ready || !strings.Contains(st.LastError, "waiting") {
		t.Fatalf("before any download: %+v, want not ready and waiting", st)
	}
	if _, err := o.e.Evaluate(t.Context(), ast.NewObject()); err == nil || err.(*Error).Code != CodeNotLoaded {
		t.Fatalf("evaluate before any bundle: %v, want %s", err, CodeNotLoaded)
	}

	srv.set(signedBundle(t, "v1", policyFor("alice"), false))
	if err := o.trigger(t); err != nil {
		t.Fatalf("signed bundle: %v", err)
	}
	st := o.e.Status()
	if !st.Ready || st.LastError != "" || st.Bundles["authz"] != "v1" {
		t.Fatalf("after v1: %+v", st)
	}
	if !o.allows(t, "alice") || o.allows(t, "mallory") {
		t.Fatal("v1 must allow alice only")
	}
	good := st.Revision

	cases := []struct {
		name  string
		serve func()
		want  string
	}{
		{"tampered module", func() { srv.set(signedBundle(t, "v2", policyFor("alice"), true)) }, "digest mismatch"},
		{"unsigned", func() {
			var buf bytes.Buffer
			_ = bundle.NewWriter(&buf).Write(bundle.Bundle{Manifest: bundle.Manifest{Revision: "v3"},
				Modules: []bundle.ModuleFile{{URL: "/authz/policy.rego", Path: "/authz/policy.rego", Raw: []byte(policyFor("mallory"))}}})
			srv.set(buf.Bytes())
		}, "signature"},
		{"signed with another key", func() {
			b := bundle.Bundle{Manifest: bundle.Manifest{Revision: "v4"}, Data: map[string]any{},
				Modules: []bundle.ModuleFile{{URL: "/authz/policy.rego", Path: "/authz/policy.rego", Raw: []byte(policyFor("mallory"))}}}
			_ = b.GenerateSignature(bundle.NewSigningConfig("another-secret-entirely-0123456789", "HS256", ""), "global_key", false)
			var buf bytes.Buffer
			_ = bundle.NewWriter(&buf).Write(b)
			srv.set(buf.Bytes())
		}, "signature"},
		{"corrupt tarball", func() { srv.set([]byte("\x1f\x8bnot a gzip stream at all")) }, "bundle"},
		{"server error", func() { srv.fail(http.StatusInternalServerError) }, "500"},
		{"server unreachable", func() { srv.set(nil); srv.CloseClientConnections(); srv.Listener.Close() }, "connect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(o.e.bundleFailures.WithLabelValues("authz"))
			tc.serve()
			if err := o.trigger(t); err == nil {
				t.Fatal("download succeeded, want an error")
			}
			st := o.e.Status()
			if !st.Ready || st.Revision != good {
				t.Fatalf("status %+v: want the last good revision %s still in force", st, good)
			}
			if !strings.Contains(st.LastError, tc.want) || !strings.HasPrefix(st.LastError, "bundle authz: ") {
				t.Fatalf("last error %q, want it to name the bundle and %q", st.LastError, tc.want)
			}
			if got := testutil.ToFloat64(o.e.bundleFailures.WithLabelValues("authz")); got != before+1 {
				t.Fatalf("bundle failures %v, want %v", got, before+1)
			}
			if got := testutil.ToFloat64(o.e.loaded); got != 0 {
				t.Fatalf("last_load_success %v, want 0", got)
			}
			if !o.allows(t, "alice") || o.allows(t, "mallory") {
				t.Fatal("decisions must stay on v1")
			}
		})
	}
}

func TestOPABundleETagAndRecovery(t *testing.T) {
	srv := newBundleServer(t)
	o := newOPAEngine(t, opaConfig(srv.URL, ""))
	srv.set(signedBundle(t, "v1", policyFor("alice"), false))
	if err := o.trigger(t); err != nil {
		t.Fatal(err)
	}
	// Unchanged: the client sends its ETag and gets a 304; nothing reloads.
	if err := o.trigger(t); err != nil {
		t.Fatal(err)
	}
	if srv.notMod != 1 {
		t.Fatalf("304s = %d, want 1 (the plugin must send If-None-Match)", srv.notMod)
	}
	srv.fail(http.StatusServiceUnavailable)
	_ = o.trigger(t)
	if st := o.e.Status(); st.LastError == "" {
		t.Fatal("a failed download must be in Status")
	}
	// A new bundle replaces v1 and clears the error: compiled by the
	// engine's watch goroutine on the activation trigger alone.
	srv.set(signedBundle(t, "v2", policyFor("bob"), false))
	if err := bundleplugin.Lookup(o.opa.manager).Trigger(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for o.e.Status().Bundles["authz"] != "v2" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := o.e.Status()
	if st.LastError != "" || st.Bundles["authz"] != "v2" || testutil.ToFloat64(o.e.loaded) != 1 {
		t.Fatalf("after v2: %+v, loaded %v", st, testutil.ToFloat64(o.e.loaded))
	}
	if o.allows(t, "alice") || !o.allows(t, "bob") {
		t.Fatal("v2 must allow bob only")
	}
}

// A bundle OPA activates but Bulwark cannot use (its decision is not a
// boolean nor an object: the compile succeeds, so take a data error
// Bulwark's own check refuses) keeps the last good policy.
func TestOPABundleRefusedByEngineKeepsLastGood(t *testing.T) {
	srv := newBundleServer(t)
	o := newOPAEngine(t, opaConfig(srv.URL, ""))
	srv.set(signedBundle(t, "v1", policyFor("alice"), false))
	if err := o.trigger(t); err != nil {
		t.Fatal(err)
	}
	good := o.e.Revision()
	// A policy that does not compile: OPA's activation refuses it.
	srv.set(signedBundle(t, "v2", "package authz\n\nallow if { input.user == }\n", false))
	if err := o.trigger(t); err == nil {
		t.Fatal("a bundle that does not compile must fail")
	}
	if o.e.Revision() != good || !o.allows(t, "alice") {
		t.Fatal("the last good policy must stay in force")
	}
	if st := o.e.Status(); !strings.Contains(st.LastError, "rego_parse_error") {
		t.Fatalf("last error %q, want the parse error", st.LastError)
	}
}

// collector is a decision log service: it keeps every event it was sent.
type collector struct {
	*httptest.Server
	mu     sync.Mutex
	events []map[string]any
	errs   []string
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		var evs []map[string]any
		zr, err := gzip.NewReader(r.Body)
		if err == nil {
			var b []byte
			if b, err = io.ReadAll(zr); err == nil {
				err = json.Unmarshal(b, &evs)
			}
		}
		if err != nil || r.Header.Get("Content-Encoding") != "gzip" || r.URL.Path != "/logs" {
			c.errs = append(c.errs, fmt.Sprintf("%s %s %q: %v", r.Method, r.URL.Path, r.Header.Get("Content-Encoding"), err))
		}
		c.events = append(c.events, evs...)
	}))
	t.Cleanup(c.Close)
	return c
}

func TestOPADecisionLogUploadAndMask(t *testing.T) {
	srv := newBundleServer(t)
	col := newCollector(t)
	o := newOPAEngine(t, opaConfig(srv.URL, col.URL))
	mask := policyFor("alice") + "\n" // the mask rule lives in the bundle, as with OPA
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "v1", Roots: &[]string{"authz", "system"}},
		Data:     map[string]any{},
		Modules: []bundle.ModuleFile{
			{URL: "/authz/policy.rego", Path: "/authz/policy.rego", Raw: []byte(mask)},
			{URL: "/system/log.rego", Path: "/system/log.rego", Raw: []byte("package system.log\n\nmask contains \"/input/secret\"\n")},
		},
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(testSigningKey, "HS256", ""), "global_key", false); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	srv.set(buf.Bytes())
	if err := o.trigger(t); err != nil {
		t.Fatal(err)
	}
	dl, err := NewDecisionLog(o.opa, "authz/allow")
	if err != nil || dl == nil {
		t.Fatalf("decision log: %v %v", dl, err)
	}
	input := ast.MustParseTerm(`{"user": "alice", "secret": "hunter2"}`).Value
	res, err := o.e.Evaluate(t.Context(), input)
	if err != nil {
		t.Fatal(err)
	}
	dl.LogDecision(t.Context(), DecisionEvent{DecisionID: "d-1", Input: input, Result: res.Value, Bundles: res.Bundles,
		Timestamp: time.Now(), Custom: map[string]any{"bulwark": map[string]any{"allowed": true}}})
	if err := o.opa.manager.Plugin("decision_logs").(interface{ Trigger(context.Context) error }).Trigger(t.Context()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 || len(col.events) != 1 {
		t.Fatalf("collector: errors %v, %d events", col.errs, len(col.events))
	}
	ev := col.events[0]
	in, _ := ev["input"].(map[string]any)
	if ev["decision_id"] != "d-1" || ev["path"] != "authz/allow" || ev["result"] != true || in["user"] != "alice" {
		t.Fatalf("event %v", ev)
	}
	if _, ok := in["secret"]; ok {
		t.Fatalf("the mask rule must erase input.secret: %v", ev)
	}
	if bs, _ := ev["bundles"].(map[string]any); bs["authz"] == nil {
		t.Fatalf("event must name the bundle revision: %v", ev)
	}
	if labels, _ := ev["labels"].(map[string]any); labels["id"] != "test-instance" {
		t.Fatalf("labels %v", ev["labels"])
	}
}

func TestOPAConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, cfg, want string }{
		{"not yaml", "services: [", "yaml"},
		{"unknown service", "bundles:\n  a:\n    service: nowhere\n", "service"},
		{"unknown plugin", "plugins:\n  mystery: {}\n", "mystery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewOPA(t.Context(), []byte(tc.cfg), "x.yaml", OPAOptions{})
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
	// OPA-Envoy's own plugin block is accepted and ignored.
	o, err := NewOPA(t.Context(), []byte("plugins:\n  envoy_ext_authz_grpc:\n    addr: :9191\n    path: envoy/authz/allow\n"), "x.yaml", OPAOptions{})
	if err != nil || o.ServesPolicy() {
		t.Fatalf("envoy plugin block: %v, serves policy %v", err, o.ServesPolicy())
	}
}

// Decision logs without bundles: the policy comes from Bulwark's own
// source and the manager's store is empty; events still upload.
func TestOPADecisionLogWithoutBundles(t *testing.T) {
	col := newCollector(t)
	cfg := "services:\n  logs:\n    url: " + col.URL + "\ndecision_logs:\n  service: logs\n  reporting:\n    trigger: manual\n"
	o, err := NewOPA(t.Context(), []byte(cfg), "logs.yaml", OPAOptions{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if o.ServesPolicy() {
		t.Fatal("a file without bundles must not be the policy source")
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Stop(context.Background()) })
	dl, err := NewDecisionLog(o, "data.bulwark.decision")
	if err != nil {
		t.Fatal(err)
	}
	dl.LogDecision(t.Context(), DecisionEvent{DecisionID: "d-2", Input: ast.NewObject(), Result: ast.Boolean(false), Timestamp: time.Now()})
	if err := o.manager.Plugin("decision_logs").(interface{ Trigger(context.Context) error }).Trigger(t.Context()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.events) != 1 || col.events[0]["path"] != "bulwark/decision" || col.events[0]["result"] != false {
		t.Fatalf("events %v, errors %v", col.events, col.errs)
	}
}

// Stop before Start (a server that failed to start after the plugin
// manager was built) returns at once instead of waiting forever for
// plugin loops that never ran.
func TestOPAStopBeforeStart(t *testing.T) {
	o, err := NewOPA(t.Context(), []byte("services:\n  s:\n    url: http://127.0.0.1:1\ndecision_logs:\n  service: s\n"), "x.yaml", OPAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { o.Stop(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop before Start did not return")
	}
}
