package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/test/envoysim"
)

// authzUpstream is the request headers the upstream receives after an
// ext_authz OK answer. It plays the worst case Envoy allows: a header set to
// an empty value may be skipped, leaving the client's value in place.
func authzUpstream(client map[string]string, ok *authv3.OkHttpResponse) map[string]string {
	h := map[string]string{}
	for k, v := range client {
		h[strings.ToLower(k)] = v
	}
	for _, o := range ok.GetHeaders() {
		if v := o.GetHeader().GetValue(); v != "" {
			h[strings.ToLower(o.GetHeader().GetKey())] = v
		}
	}
	for _, k := range ok.GetHeadersToRemove() {
		delete(h, strings.ToLower(k))
	}
	return h
}

// Identity headers (x-bulwark-principal, x-bulwark-tenant) reach the upstream
// only as Bulwark set them from the verified principal, through both doors,
// in dry-run and not: a client's forged values are overwritten or removed,
// never left in place by a dry-run allow or by an empty value.
func TestIdentityHeadersNeverForged(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	member := createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	loner := createKey(t, "--keys-file", keys, "--id", "loner", "--roles", "user")
	forged := map[string]string{"x-bulwark-principal": "root", "x-bulwark-tenant": "acme"}
	const body = `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

	cases := []struct {
		name          string
		method, path  string
		key           string
		dryRun        bool
		wantUpstream  bool
		wantPrincipal string // "" means the header must be absent
		wantTenant    string
	}{
		{"no credential", "POST", "/v1/chat/completions", "", false, false, "", ""},
		{"no credential, dry-run", "POST", "/v1/chat/completions", "", true, true, "", ""},
		{"member of a tenant", "POST", "/v1/chat/completions", member, false, true, "app", "acme"},
		{"member of a tenant, dry-run", "POST", "/v1/chat/completions", member, true, true, "app", "acme"},
		{"principal without a tenant", "POST", "/v1/chat/completions", loner, false, true, "loner", ""},
		{"principal without a tenant, dry-run", "POST", "/v1/chat/completions", loner, true, true, "loner", ""},
		{"route not allowed, dry-run", "DELETE", "/v1/chat/completions", member, true, true, "", ""},
		{"public route", "GET", "/healthz", "", false, true, "", ""},
	}
	procs := map[bool]*proc{
		false: startEnv(t, []string{pepperEnv}, "--keys-file", keys),
		true:  startEnv(t, []string{pepperEnv}, "--keys-file", keys, "--dry-run"),
	}
	check := func(t *testing.T, door string, got map[string]string, wantPrincipal, wantTenant string) {
		t.Helper()
		for name, want := range map[string]string{"x-bulwark-principal": wantPrincipal, "x-bulwark-tenant": wantTenant} {
			v, present := got[name]
			switch {
			case want == "" && present:
				t.Errorf("%s: upstream got %s: %q, want it absent", door, name, v)
			case want != "" && v != want:
				t.Errorf("%s: upstream got %s: %q (present %v), want %q", door, name, v, present, want)
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := procs[tc.dryRun]
			headers := map[string]string{"content-type": "application/json"}
			for k, v := range forged {
				headers[k] = v
			}
			if tc.key != "" {
				headers["authorization"] = "Bearer " + tc.key
			}
			var reqBody []byte
			if tc.method == "POST" {
				reqBody = []byte(body)
			}

			resp := p.Check(t, envoy.HTTPRequest{Method: tc.method, Path: tc.path, Headers: headers, Body: reqBody})
			if allowed(resp) != tc.wantUpstream {
				t.Fatalf("ext_authz: allowed = %v, want %v (%v)", allowed(resp), tc.wantUpstream, resp.GetStatus())
			}
			if tc.wantUpstream {
				check(t, "ext_authz", authzUpstream(headers, resp.GetOkResponse()), tc.wantPrincipal, tc.wantTenant)
			}

			res := run(t, p, envoysim.DefaultFilter, envoysim.Request{Method: tc.method, Path: tc.path, Headers: headers, Body: reqBody},
				jsonUpstream(`{"choices":[]}`))
			if res.UpstreamCalled != tc.wantUpstream {
				t.Fatalf("ext_proc: upstream called = %v, want %v (%d %s)", res.UpstreamCalled, tc.wantUpstream, res.Status, res.Body)
			}
			if tc.wantUpstream {
				check(t, "ext_proc", res.Upstream.Headers, tc.wantPrincipal, tc.wantTenant)
			}
		})
	}
}
