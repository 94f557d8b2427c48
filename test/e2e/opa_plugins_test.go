package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/bulwark-ai/bulwark/internal/envoy"
)

const e2eSigningKey = "e2e-bundle-signing-secret-0123456789abcdef"

// opaEnvoyPolicy is an OPA-Envoy policy as its users write it.
func envoyUserPolicy(user string) string {
	return `package envoy.authz

default allow := false

allow if input.attributes.request.http.headers["x-user"] == "` + user + `"
`
}

// e2eBundle is a bundle tarball signed by OPA's own signing code (HS256,
// key id global_key). tamper edits the policy after signing.
func e2eBundle(t *testing.T, revision, rego string, tamper bool) []byte {
	t.Helper()
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision, Roots: &[]string{"envoy"}},
		Data:     map[string]any{},
		Modules:  []bundle.ModuleFile{{URL: "/envoy/authz.rego", Path: "/envoy/authz.rego", Raw: []byte(rego)}},
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(e2eSigningKey, "HS256", ""), "global_key", false); err != nil {
		t.Fatal(err)
	}
	if tamper {
		b.Modules[0].Raw = []byte(envoyUserPolicy("mallory"))
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleService is OPA's bundle service API: ETags, and long polling
// (Prefer: wait=N holds a request whose ETag is current until the bundle
// changes or N seconds pass).
type bundleService struct {
	*httptest.Server
	mu        sync.Mutex
	body      []byte
	etag      string
	changed   chan struct{}
	requests  int
	notMod    int
	longPolls int
}

func newBundleService(t *testing.T) *bundleService {
	s := &bundleService{changed: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *bundleService) set(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256(body)
	s.body, s.etag = body, `"`+hex.EncodeToString(sum[:8])+`"`
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *bundleService) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	wait := 0
	for _, p := range strings.Split(r.Header.Get("Prefer"), ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "wait="); ok {
			wait, _ = strconv.Atoi(v)
		}
	}
	if wait > 0 && s.body != nil && r.Header.Get("If-None-Match") == s.etag {
		s.longPolls++
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(time.Duration(wait) * time.Second):
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if wait > 0 {
		w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles") // long polling supported
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
	_, _ = w.Write(s.body)
}

func (s *bundleService) counts() (requests, notMod, longPolls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.notMod, s.longPolls
}

// logCollector is a decision log and status service: it checks each
// upload is OPA's format (a gzip-compressed JSON array) and keeps it.
type logCollector struct {
	*httptest.Server
	mu       sync.Mutex
	events   []map[string]any
	statuses []map[string]any
	errs     []string
}

func newLogCollector(t *testing.T) *logCollector {
	c := &logCollector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.errs = append(c.errs, err.Error())
			return
		}
		switch r.URL.Path {
		case "/logs":
			var evs []map[string]any
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err == nil {
				body, err = io.ReadAll(zr)
			}
			if err == nil {
				err = json.Unmarshal(body, &evs)
			}
			if err != nil || r.Header.Get("Content-Encoding") != "gzip" || r.Method != http.MethodPost {
				c.errs = append(c.errs, fmt.Sprintf("decision log upload %s %q: %v", r.Method, r.Header.Get("Content-Encoding"), err))
			}
			c.events = append(c.events, evs...)
		case "/status":
			var st map[string]any
			if err := json.Unmarshal(body, &st); err != nil {
				c.errs = append(c.errs, "status: "+err.Error())
			}
			c.statuses = append(c.statuses, st)
		default:
			c.errs = append(c.errs, "unexpected "+r.URL.Path)
		}
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *logCollector) event(id string) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range c.events {
		if ev["decision_id"] == id {
			return ev
		}
	}
	return nil
}

func decisionID(resp *authv3.CheckResponse) string {
	var hs []*corev3.HeaderValueOption
	if ok := resp.GetOkResponse(); ok != nil {
		hs = ok.GetHeaders()
	} else if d := resp.GetDeniedResponse(); d != nil {
		hs = d.GetHeaders()
	}
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), envoy.DecisionIDHeader) {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// An OPA-Envoy fleet's configuration, unchanged: a signed bundle over HTTP
// with long polling, decision logs and status to a service, and the
// envoy_ext_authz_grpc block Bulwark replaces.
func TestOPAPluginsBundleDecisionLogsStatus(t *testing.T) {
	bundles := newBundleService(t)
	col := newLogCollector(t)
	cfgPath := filepath.Join(t.TempDir(), "opa.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`services:
  bundle-server:
    url: %s
  logs:
    url: %s
labels:
  app: checkout
keys:
  global_key:
    algorithm: HS256
    key: ${E2E_BUNDLE_KEY}
bundles:
  authz:
    service: bundle-server
    resource: bundles/authz.tar.gz
    polling:
      min_delay_seconds: 1
      max_delay_seconds: 1
      long_polling_timeout_seconds: 10
    signing:
      keyid: global_key
decision_logs:
  service: logs
  reporting:
    min_delay_seconds: 1
    max_delay_seconds: 1
status:
  service: logs
plugins:
  envoy_ext_authz_grpc:
    addr: :9191
    path: envoy/authz/allow
`, bundles.URL, col.URL))

	p := startEnv(t, []string{"E2E_BUNDLE_KEY=" + e2eSigningKey}, "--opa-config", cfgPath, "--policy-query", "envoy/authz/allow")
	check := func(user string) *authv3.CheckResponse {
		return p.Check(t, envoy.HTTPRequest{Method: "GET", Path: "/orders", Host: "shop", Headers: map[string]string{"x-user": user}})
	}

	// No bundle yet: not ready, and it says why; decisions deny.
	c503, body := p.get(t, "/readyz")
	if c503 != http.StatusServiceUnavailable || !strings.Contains(body, "no policy loaded") {
		t.Fatalf("readyz before any bundle: %d %s", c503, body)
	}
	if allowed(check("alice")) {
		t.Fatal("a decision before any bundle must not allow")
	}

	bundles.set(e2eBundle(t, "v1", envoyUserPolicy("alice"), false))
	eventually(t, 20*time.Second, "the signed bundle to activate", func() bool {
		c, _ := p.get(t, "/readyz")
		return c == http.StatusOK
	})
	_, body = p.get(t, "/readyz")
	if !strings.Contains(body, `"authz":"v1"`) {
		t.Fatalf("readyz must name the bundle revision in force: %s", body)
	}
	alice := check("alice")
	if !allowed(alice) || allowed(check("mallory")) {
		t.Fatal("v1 must allow alice only")
	}

	// A tampered bundle is refused: decisions stay on v1; readiness and
	// metrics say why.
	bundles.set(e2eBundle(t, "v2", envoyUserPolicy("alice"), true))
	eventually(t, 20*time.Second, "the tampered bundle to be refused", func() bool {
		_, m := p.get(t, "/metrics")
		return strings.Contains(m, `bulwark_policy_bundle_failures_total{bundle="authz"}`)
	})
	c, body := p.get(t, "/readyz")
	if c != http.StatusOK || !strings.Contains(body, "digest mismatch") || !strings.Contains(body, `"authz":"v1"`) {
		t.Fatalf("readyz after a tampered bundle: %d %s (want ready on v1, the error shown)", c, body)
	}
	if _, m := p.get(t, "/metrics"); !strings.Contains(m, "bulwark_policy_last_load_success 0") {
		t.Fatal("last_load_success must be 0 after a refused bundle")
	}
	if allowed(check("mallory")) || !allowed(check("alice")) {
		t.Fatal("decisions must stay on v1")
	}

	// A good v3 replaces v1 and clears the error.
	bundles.set(e2eBundle(t, "v3", envoyUserPolicy("bob"), false))
	eventually(t, 20*time.Second, "v3 to activate", func() bool {
		_, b := p.get(t, "/readyz")
		return strings.Contains(b, `"authz":"v3"`)
	})
	if !allowed(check("bob")) || allowed(check("alice")) {
		t.Fatal("v3 must allow bob only")
	}
	if _, m := p.get(t, "/metrics"); !strings.Contains(m, "bulwark_policy_last_load_success 1") {
		t.Fatal("last_load_success must be 1 again")
	}
	if _, _, longPolls := bundles.counts(); longPolls == 0 {
		t.Fatal("the bundle plugin must long-poll (Prefer: wait=N) once the server says it supports it")
	}

	// Decision logs: the allowed decision reached the collector in OPA's format.
	id := decisionID(alice)
	if id == "" {
		t.Fatal("no decision id in the CheckResponse")
	}
	eventually(t, 20*time.Second, "the decision log upload", func() bool { return col.event(id) != nil })
	ev := col.event(id)
	in, _ := ev["input"].(map[string]any)
	attrs, _ := in["attributes"].(map[string]any)
	labels, _ := ev["labels"].(map[string]any)
	bs, _ := ev["bundles"].(map[string]any)
	if ev["path"] != "envoy/authz/allow" || ev["result"] != true || attrs == nil || labels["app"] != "checkout" ||
		labels["id"] == nil || bs["authz"] == nil || ev["timestamp"] == nil {
		t.Fatalf("decision log event not in OPA's format: %v", ev)
	}
	if custom, _ := ev["custom"].(map[string]any); custom["bulwark"] == nil {
		t.Fatalf("event must carry Bulwark's verdict: %v", ev)
	}
	eventually(t, 20*time.Second, "a status report", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.statuses) > 0
	})
	col.mu.Lock()
	errs := col.errs
	col.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("collector saw malformed uploads: %v", errs)
	}
	if !strings.Contains(p.Logs(), "envoy_ext_authz_grpc is ignored") {
		t.Fatal("the ignored OPA-Envoy plugin block must be warned about")
	}

	// The bundle server goes away: the error is shown, v3 stays.
	bundles.Close()
	eventually(t, 30*time.Second, "the unreachable server to be reported", func() bool {
		_, b := p.get(t, "/readyz")
		return strings.Contains(b, "connection refused") || strings.Contains(b, "connect")
	})
	if !allowed(check("bob")) {
		t.Fatal("decisions must stay on v3 while the bundle server is unreachable")
	}
}

// A corrupt or missing OPA configuration stops startup with a clear error.
func TestOPAPluginsBadConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ name, body, want string }{
		{"unknown service", "bundles:\n  a:\n    service: nowhere\n", "nowhere"},
		{"bad yaml", "services: [\n", "opa_config"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			writeFile(t, path, tc.body)
			_, stderr, code := runCLI(t, "serve", "--opa-config", path, "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0")
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %s; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
	// Bundles and a local policy source at once: which one decides would be unclear.
	path := filepath.Join(dir, "both.yaml")
	writeFile(t, path, "services:\n  s:\n    url: http://127.0.0.1:1\nbundles:\n  a:\n    service: s\n")
	_, stderr, code := runCLI(t, "serve", "--opa-config", path, "--policy-dir", dir, "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0")
	if code != 2 || !strings.Contains(stderr, "not both") {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
}

// pushOCIBundle pushes a bundle tarball to an OCI registry as OPA's OCI
// downloader reads it: an OCI image whose layer is the tarball.
func pushOCIBundle(t *testing.T, ref string, tarball []byte) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(tarball, types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

// Bundles from an OCI registry (go-containerregistry's registry, run in the
// test): a signed bundle activates; a tampered one and a corrupt layer are
// refused while decisions stay on it.
func TestOPAPluginsOCIBundle(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	ref := strings.TrimPrefix(reg.URL, "http://") + "/policies/authz:prod"
	pushOCIBundle(t, ref, e2eBundle(t, "oci-v1", envoyUserPolicy("alice"), false))
	cfgPath := filepath.Join(t.TempDir(), "opa.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`services:
  registry:
    url: %s
    type: oci
keys:
  global_key:
    algorithm: HS256
    key: %s
persistence_directory: %s
bundles:
  authz:
    service: registry
    resource: %s
    polling:
      min_delay_seconds: 1
      max_delay_seconds: 1
    signing:
      keyid: global_key
`, reg.URL, e2eSigningKey, t.TempDir(), ref))
	p := start(t, "--opa-config", cfgPath, "--policy-query", "envoy/authz/allow")
	check := func(user string) bool {
		return allowed(p.Check(t, envoy.HTTPRequest{Method: "GET", Path: "/", Host: "shop", Headers: map[string]string{"x-user": user}}))
	}
	eventually(t, 20*time.Second, "the OCI bundle to activate", func() bool {
		_, b := p.get(t, "/readyz")
		return strings.Contains(b, `"authz":"oci-v1"`)
	})
	if !check("alice") || check("mallory") {
		t.Fatal("oci-v1 must allow alice only")
	}
	for _, tc := range []struct {
		name    string
		tarball []byte
		want    string
	}{
		{"tampered", e2eBundle(t, "oci-v2", envoyUserPolicy("alice"), true), "digest mismatch"},
		{"corrupt layer", []byte("\x1f\x8b\x08\x00not a bundle"), "bundle read failed"},
	} {
		pushOCIBundle(t, ref, tc.tarball)
		eventually(t, 20*time.Second, tc.name+" to be refused", func() bool {
			_, b := p.get(t, "/readyz")
			return strings.Contains(b, tc.want)
		})
		if _, m := p.get(t, "/metrics"); !strings.Contains(m, `bulwark_policy_bundle_failures_total{bundle="authz"}`) ||
			!strings.Contains(m, "bulwark_policy_last_load_success 0") {
			t.Fatalf("%s: metrics must count the failure", tc.name)
		}
		c, b := p.get(t, "/readyz")
		if c != http.StatusOK || !strings.Contains(b, tc.want) || !strings.Contains(b, `"authz":"oci-v1"`) {
			t.Fatalf("%s: readyz %d %s", tc.name, c, b)
		}
		if !check("alice") || check("mallory") {
			t.Fatalf("%s: decisions must stay on oci-v1", tc.name)
		}
	}
}
