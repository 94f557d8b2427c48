package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/envoy"
)

func hdrs(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

func allowed(resp *authv3.CheckResponse) bool { return resp.GetStatus().GetCode() == int32(codes.OK) }

func TestDefaultPolicy(t *testing.T) {
	p := start(t)
	cases := []struct {
		method, path string
		allow        bool
		status       int
		reason       string
	}{
		{"POST", "/v1/chat/completions", false, 401, "missing_credential"},
		{"GET", "/v1/models?limit=5", false, 401, "missing_credential"},
		{"GET", "/healthz", true, 0, ""},
		{"DELETE", "/v1/models", false, 403, "route_not_allowed"},
		{"GET", "/admin", false, 403, "route_not_allowed"},
		{"GET", "//v1/../admin", false, 403, "route_not_allowed"},
	}
	for _, tc := range cases {
		resp := p.Check(t, envoy.HTTPRequest{Method: tc.method, Path: tc.path})
		if allowed(resp) != tc.allow {
			t.Errorf("%s %s: allowed = %v, want %v (%v)", tc.method, tc.path, allowed(resp), tc.allow, resp.GetStatus())
			continue
		}
		id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
		if len(id) != 36 {
			t.Errorf("%s %s: decision id %q", tc.method, tc.path, id)
		}
		if tc.allow {
			if got := hdrs(resp.GetOkResponse().GetResponseHeadersToAdd())[envoy.DecisionIDHeader]; got != id {
				t.Errorf("%s %s: response decision id header %q, metadata %q", tc.method, tc.path, got, id)
			}
			continue
		}
		d := resp.GetDeniedResponse()
		if int(d.GetStatus().GetCode()) != tc.status || resp.GetStatus().GetMessage() != tc.reason {
			t.Errorf("%s %s: status %d reason %q, want %d %q", tc.method, tc.path, d.GetStatus().GetCode(),
				resp.GetStatus().GetMessage(), tc.status, tc.reason)
		}
		var body struct {
			Error struct{ Code, Message, DecisionID string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Error.Code != tc.reason {
			t.Errorf("%s %s: body %q: %v", tc.method, tc.path, d.GetBody(), err)
		}
		if hdrs(d.GetHeaders())[envoy.DecisionIDHeader] != id {
			t.Errorf("%s %s: deny lacks decision id header", tc.method, tc.path)
		}
	}
	if st := p.health(t, ""); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", st)
	}
	if st := p.health(t, "envoy.service.auth.v3.Authorization"); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("authz health = %v", st)
	}
	code, body := p.get(t, "/metrics")
	for _, want := range []string{`bulwark_decisions_total{reason="route_not_allowed",result="deny"} 3`,
		`bulwark_decisions_total{reason="missing_credential",result="deny"} 2`,
		"bulwark_decision_duration_seconds_bucket", `bulwark_policy_reloads_total{result="success"} 1`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body := p.get(t, "/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := p.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
}

const mutationsPolicy = `package bulwark
import rego.v1

default decision := {"allowed": false, "http_status": 402, "body": "<h1>nope</h1>", "headers": {"content-type": "text/html"}, "reason": "custom_deny"}

decision := {
	"allowed": true,
	"reason": "ok",
	"headers": {"x-user": concat("", ["u-", input.parsed_query.user[0]])},
	"request_headers_to_remove": ["cookie"],
	"response_headers_to_add": {"x-served-by": "bulwark"},
	"query_parameters_to_set": {"lang": "en"},
	"query_parameters_to_remove": ["debug"],
	"dynamic_metadata": {"tenant": "acme", "cost": 3},
} if input.parsed_path == ["ok"]

decision := {"allowed": true, "reason": sprintf("model=%s", [input.parsed_body.model])} if {
	input.parsed_path == ["v1", "chat", "completions"]
	not input.truncated_body
	input.parsed_body.model == "gpt-4o-mini"
}

decision := {"allowed": false, "http_status": 413, "reason": "body_truncated"} if input.truncated_body

decision := {"allowed": false, "http_status": 400, "reason": "bad_body"} if {
	not input.truncated_body
	input.parse_errors.body
}
`

func TestPolicyMutationsAndBodies(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), mutationsPolicy)
	p := start(t, "--policy-dir", dir)

	resp := p.Check(t, envoy.HTTPRequest{Path: "/ok?user=7&debug=1", Headers: map[string]string{"cookie": "s=1"}})
	if !allowed(resp) {
		t.Fatalf("/ok denied: %v", resp.GetStatus())
	}
	ok := resp.GetOkResponse()
	if h := hdrs(ok.GetHeaders()); h["x-user"] != "u-7" {
		t.Errorf("upstream headers %v", h)
	}
	if h := hdrs(ok.GetResponseHeadersToAdd()); h["x-served-by"] != "bulwark" {
		t.Errorf("response headers %v", h)
	}
	// The policy's removal, then Bulwark's identity headers it did not set.
	if r := ok.GetHeadersToRemove(); strings.Join(r, ",") != "cookie,x-bulwark-principal,x-bulwark-tenant" {
		t.Errorf("headers to remove %v", r)
	}
	if q := ok.GetQueryParametersToSet(); len(q) != 1 || q[0].GetKey() != "lang" {
		t.Errorf("query to set %v", q)
	}
	if q := ok.GetQueryParametersToRemove(); len(q) != 1 || q[0] != "debug" {
		t.Errorf("query to remove %v", q)
	}
	md := resp.GetDynamicMetadata().AsMap()
	// A policy cannot assert identity through metadata (ext_proc would
	// believe it): tenant, principal_id and roles are Bulwark's own keys.
	if md["tenant"] != nil || md["cost"] != 3.0 || md["decision_id"] == nil {
		t.Errorf("dynamic metadata %v", md)
	}

	resp = p.Check(t, envoy.HTTPRequest{Path: "/other"})
	d := resp.GetDeniedResponse()
	if allowed(resp) || d.GetStatus().GetCode() != 402 || d.GetBody() != "<h1>nope</h1>" || hdrs(d.GetHeaders())["content-type"] != "text/html" {
		t.Errorf("custom deny = %v", resp)
	}

	body := []byte(`{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}`)
	json := map[string]string{"content-type": "application/json"}
	for _, pack := range []bool{false, true} {
		resp = p.Check(t, envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions", Headers: json, Body: body, PackAsBytes: pack})
		if !allowed(resp) || resp.GetDynamicMetadata().AsMap()["reason"] != "model=gpt-4o-mini" {
			t.Errorf("pack_as_bytes=%v: %v", pack, resp.GetStatus())
		}
	}
	resp = p.Check(t, envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions", Headers: json, Body: body, MaxBodyBytes: 16})
	if allowed(resp) || resp.GetDeniedResponse().GetStatus().GetCode() != 413 {
		t.Errorf("truncated body: %v", resp.GetStatus())
	}
	resp = p.Check(t, envoy.HTTPRequest{Method: "POST", Path: "/v1/chat/completions", Headers: json, Body: []byte(`{"model": "gpt-4o-mini",`)})
	if allowed(resp) || resp.GetStatus().GetMessage() != "bad_body" {
		t.Errorf("malformed JSON: %v", resp.GetStatus())
	}
}

// The OPA documentation's Envoy examples, run unchanged with OPA-Envoy's
// default decision path. The token policy is the primer's, with fresh tokens
// signed by the primer's HS256 secret.
const opaEnvoyPolicy = `package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

headers["x-ext-auth-allow"] := "yes"
headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header", "another-auth-header"]

response_headers_to_add["x-foo"] := "bar"

status_code := 200 if {
	allow
} else := 401 if {
	not is_token_valid
} else := 403

body := "Authentication Failed" if status_code == 401
body := "Unauthorized Request" if status_code == 403

result["allowed"] := allow
result["headers"] := headers
result["response_headers_to_add"] := response_headers_to_add
result["request_headers_to_remove"] := request_headers_to_remove
result["body"] := body
result["http_status"] := status_code

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "guest"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "admin"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
`

// The primer's parsed_path and parsed_query examples, in their own package.
const opaEnvoyPathPolicy = `package envoy.examples

import rego.v1

default allow := false

allow if input.parsed_path == ["people"]

allow if {
	input.parsed_path == ["search"]
	input.parsed_query.lang == ["en"]
	input.parsed_query.id == ["1", "2"]
}
`

func hs256(t *testing.T, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	c, _ := json.Marshal(claims)
	signing := head + "." + enc.EncodeToString(c)
	mac := hmac.New(sha256.New, []byte("secret"))
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func TestOPAEnvoyPolicyUnchanged(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.rego"), opaEnvoyPolicy)
	writeFile(t, filepath.Join(dir, "examples.rego"), opaEnvoyPathPolicy)
	now := time.Now().Unix()
	guest := hs256(t, map[string]any{"role": "guest", "sub": "YWxpY2U=", "nbf": now - 60, "exp": now + 3600})
	admin := hs256(t, map[string]any{"role": "admin", "sub": "Ym9i", "nbf": now - 60, "exp": now + 3600})
	expired := hs256(t, map[string]any{"role": "admin", "sub": "Ym9i", "nbf": now - 7200, "exp": now - 3600})
	forged := guest[:len(guest)-4] + "AAAA"
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
	jsonHdr := func(tok string) map[string]string {
		return map[string]string{"authorization": "Bearer " + tok, "content-type": "application/json"}
	}
	type tc struct {
		name string
		req  envoy.HTTPRequest
		want bool
	}
	boolCases := []tc{
		{"guest reads a person", envoy.HTTPRequest{Path: "/people/alice", Headers: bearer(guest)}, true},
		{"admin reads a person", envoy.HTTPRequest{Path: "/people/bob", Headers: bearer(admin)}, true},
		{"guest cannot create", envoy.HTTPRequest{Method: "POST", Path: "/people/x", Headers: jsonHdr(guest), Body: []byte(`{"firstname": "Charlie"}`)}, false},
		{"admin creates someone else", envoy.HTTPRequest{Method: "POST", Path: "/people", Headers: jsonHdr(admin), Body: []byte(`{"firstname": "Charlie", "lastname": "Opa"}`)}, true},
		{"admin cannot create self", envoy.HTTPRequest{Method: "POST", Path: "/people", Headers: jsonHdr(admin), Body: []byte(`{"firstname": "Bob"}`)}, false},
		{"expired token", envoy.HTTPRequest{Path: "/people/alice", Headers: bearer(expired)}, false},
		{"forged token", envoy.HTTPRequest{Path: "/people/alice", Headers: bearer(forged)}, false},
		{"no token", envoy.HTTPRequest{Path: "/people/alice"}, false},
		{"people list needs a token", envoy.HTTPRequest{Path: "/people"}, false},
	}
	p := start(t, "--policy-dir", dir, "--policy-query", "envoy/authz/allow")
	for _, c := range boolCases {
		if got := allowed(p.Check(t, c.req)); got != c.want {
			t.Errorf("%s: allowed = %v, want %v", c.name, got, c.want)
		}
	}
	pathCases := []tc{
		{"parsed_path example", envoy.HTTPRequest{Path: "/people"}, true},
		{"parsed_path other", envoy.HTTPRequest{Path: "/people/x"}, false},
		{"parsed_query example", envoy.HTTPRequest{Path: "/search?lang=en&id=1&id=2"}, true},
		{"parsed_query wrong order", envoy.HTTPRequest{Path: "/search?lang=en&id=2&id=1"}, false},
	}
	e := start(t, "--policy-dir", dir, "--policy-query", "envoy/examples/allow")
	for _, c := range pathCases {
		if got := allowed(e.Check(t, c.req)); got != c.want {
			t.Errorf("%s: allowed = %v, want %v", c.name, got, c.want)
		}
	}
	// The object form through the documented result wrapper.
	r := start(t, "--policy-dir", dir, "--policy-query", "envoy/authz/result")
	resp := r.Check(t, envoy.HTTPRequest{Path: "/people/alice", Headers: bearer(guest)})
	if !allowed(resp) || hdrs(resp.GetOkResponse().GetHeaders())["x-ext-auth-allow"] != "yes" ||
		hdrs(resp.GetOkResponse().GetResponseHeadersToAdd())["x-foo"] != "bar" ||
		len(resp.GetOkResponse().GetHeadersToRemove()) != 2+2 { // the policy's two, and Bulwark's identity headers
		t.Errorf("object allow = %v", resp)
	}
	resp = r.Check(t, envoy.HTTPRequest{Path: "/people/alice", Headers: bearer(expired)})
	if allowed(resp) || resp.GetDeniedResponse().GetStatus().GetCode() != 401 || resp.GetDeniedResponse().GetBody() != "Authentication Failed" {
		t.Errorf("expired token = %v", resp)
	}
	resp = r.Check(t, envoy.HTTPRequest{Method: "DELETE", Path: "/people/alice", Headers: bearer(guest)})
	if allowed(resp) || resp.GetDeniedResponse().GetStatus().GetCode() != 403 || resp.GetDeniedResponse().GetBody() != "Unauthorized Request" {
		t.Errorf("wrong method = %v", resp)
	}
}

func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "p.rego")
	writeFile(t, policy, "package bulwark\nimport rego.v1\ndecision := {\"allowed\": true, \"reason\": \"v1\"}\n")
	p := start(t, "--policy-dir", dir)
	reason := func() string {
		return p.Check(t, envoy.HTTPRequest{Path: "/x"}).GetDynamicMetadata().AsMap()["reason"].(string)
	}
	if got := reason(); got != "v1" {
		t.Fatalf("reason = %q", got)
	}
	writeFile(t, policy, "package bulwark\nimport rego.v1\ndecision := {\"allowed\": true, \"reason\": \"v2\"}\n")
	eventually(t, 10*time.Second, "reload to v2", func() bool { return reason() == "v2" })

	// A broken policy is rejected: decisions do not change, /readyz and metrics say why.
	writeFile(t, policy, "package bulwark\nimport rego.v1\ndecision := {\"allowed\": true, \n")
	eventually(t, 10*time.Second, "reload failure reported", func() bool {
		_, body := p.get(t, "/metrics")
		return strings.Contains(body, `bulwark_policy_reloads_total{result="failure"} 1`)
	})
	for i := 0; i < 20; i++ {
		if got := reason(); got != "v2" {
			t.Fatalf("decision changed after a broken reload: %q", got)
		}
	}
	code, body := p.get(t, "/readyz")
	if code != 200 || !strings.Contains(body, "last_error") || !strings.Contains(body, "p.rego") {
		t.Fatalf("/readyz after broken reload = %d %s", code, body)
	}
	// A data-only change reloads too.
	writeFile(t, policy, "package bulwark\nimport rego.v1\ndecision := {\"allowed\": true, \"reason\": data.bulwark.r}\n")
	writeFile(t, filepath.Join(dir, "bulwark", "data.json"), `{"r": "from-data"}`)
	eventually(t, 10*time.Second, "reload with data", func() bool { return reason() == "from-data" })
	if !strings.Contains(p.Logs(), "keeping the last good policy") {
		t.Fatal("broken reload not logged")
	}
}

func TestUndefinedDecisionDenies(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), "package bulwark\nimport rego.v1\ndecision := true if input.parsed_path == [\"yes\"]\nsecret_detail := 1\n")
	p := start(t, "--policy-dir", dir)
	resp := p.Check(t, envoy.HTTPRequest{Path: "/no"})
	if allowed(resp) || resp.GetStatus().GetMessage() != "policy_undefined" {
		t.Fatalf("undefined decision = %v", resp.GetStatus())
	}
	if b := resp.GetDeniedResponse().GetBody(); strings.Contains(b, "data.bulwark") || !strings.Contains(b, "policy_undefined") {
		t.Fatalf("body = %q", b)
	}
	// The log line reaches the harness through a pipe, after the answer.
	eventually(t, 5*time.Second, "undefined decision detail logged", func() bool {
		return strings.Contains(p.Logs(), "data.bulwark.decision is undefined")
	})
}

func TestDryRun(t *testing.T) {
	p := start(t, "--dry-run")
	resp := p.Check(t, envoy.HTTPRequest{Path: "/admin"})
	if !allowed(resp) {
		t.Fatalf("dry run denied: %v", resp.GetStatus())
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["dry_run_denied"] != true || md["dry_run_reason"] != "route_not_allowed" {
		t.Fatalf("metadata = %v", md)
	}
	_, body := p.get(t, "/metrics")
	if !strings.Contains(body, `bulwark_decisions_total{reason="route_not_allowed",result="dry_run_deny"} 1`) {
		t.Fatal("dry-run deny not counted")
	}
}

func TestCheckDeadline(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), `package bulwark
import rego.v1
decision := {"allowed": true} if {
	some i in numbers.range(1, 1000000000)
	i < 0
}`)
	p := start(t, "--policy-dir", dir, "--check-timeout", "50ms")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := p.Auth.Check(ctx, envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/x"}))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("deadline overrun: %v", d)
	}
}

// SIGTERM: health goes NOT_SERVING, an in-flight Check still completes, then
// the process exits 0.
func TestSIGTERMDrains(t *testing.T) {
	// A slow dependency the policy calls makes a Check that is still in
	// flight when SIGTERM arrives.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	defer slow.Close()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), `package bulwark
import rego.v1
decision := {"allowed": true, "reason": "slow"} if {
	input.parsed_path == ["slow"]
	http.send({"method": "GET", "url": "`+slow.URL+`", "timeout": "5s"}).body.ok
}`)
	p := start(t, "--policy-dir", dir, "--check-timeout", "10s")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := p.Auth.Check(ctx, envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/slow"}))
		if err == nil && !allowed(resp) {
			err = status.Error(codes.Internal, "slow check denied: "+resp.GetStatus().GetMessage())
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the slow check is in flight
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "NOT_SERVING", func() bool {
		_, body := p.get(t, "/readyz")
		return strings.Contains(body, "draining")
	})
	if err := <-done; err != nil {
		t.Fatalf("in-flight check during drain: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("process did not exit after drain")
	}
	if p.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("exit code %d", p.cmd.ProcessState.ExitCode())
	}
	logs := p.Logs()
	if !strings.Contains(logs, `"msg":"draining"`) || !strings.Contains(logs, `"msg":"stopped"`) || strings.Contains(logs, "stopping hard") {
		t.Fatalf("drain not clean:\n%s", logs)
	}
}

func TestCheckCLI(t *testing.T) {
	p := start(t)
	out, errOut, code := runCLI(t, "check", "--addr", p.GRPCAddr, "--path", "/healthz")
	if code != 0 || !strings.Contains(out, `"allowed": true`) || !strings.Contains(out, `"decision_id"`) {
		t.Fatalf("remote allow: code %d\n%s\n%s", code, out, errOut)
	}
	out, _, code = runCLI(t, "check", "--addr", p.GRPCAddr, "--path", "/admin")
	var res struct {
		Allowed    bool   `json:"allowed"`
		HTTPStatus int    `json:"http_status"`
		Reason     string `json:"reason"`
		DecisionID string `json:"decision_id"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 {
		t.Fatalf("remote deny output %q: %v", out, err)
	}
	if res.Allowed || res.HTTPStatus != 403 || res.Reason != "route_not_allowed" || len(res.DecisionID) != 36 {
		t.Fatalf("remote deny = %+v", res)
	}
	// In-process against a policy directory, with a body from a file.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.rego"), mutationsPolicy)
	bodyFile := filepath.Join(t.TempDir(), "body.json")
	writeFile(t, bodyFile, `{"model": "gpt-4o-mini"}`)
	out, errOut, code = runCLI(t, "check", "--policy-dir", dir, "--method", "POST", "--path", "/v1/chat/completions",
		"-H", "Content-Type: application/json", "--body", "@"+bodyFile)
	if code != 0 || !strings.Contains(out, `"allowed": true`) || !strings.Contains(out, "model=gpt-4o-mini") {
		t.Fatalf("in-process check: code %d\n%s\n%s", code, out, errOut)
	}
	if _, _, code := runCLI(t, "check", "--bogus"); code != 2 {
		t.Fatalf("bad flag exit code %d, want 2", code)
	}
	if _, errOut, code := runCLI(t, "serve", "--check-timeout", "0s"); code != 2 || !strings.Contains(errOut, "check_timeout") {
		t.Fatalf("invalid config: code %d, %s", code, errOut)
	}
}
