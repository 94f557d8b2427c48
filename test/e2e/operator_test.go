package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// TestServeRefusesJWTWithoutIssuerAndAudience: with JWT keys but no issuer
// or audience, any token the issuer minted for another service would be
// accepted with its roles and tenant; serve refuses to start unless the
// insecure mode is asked for by name.
func TestServeRefusesJWTWithoutIssuerAndAudience(t *testing.T) {
	t.Parallel()
	j := newJWKSServer(t)
	j.addKey(t, "k1")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no issuer, no audience", nil, "jwt_issuer"},
		{"no audience", []string{"--jwt-issuer", "https://issuer.test"}, "jwt_audience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			args := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--jwks-url", j.srv.URL}, tc.args...)
			cmd := exec.CommandContext(ctx, binary, args...)
			cmd.Env = cleanEnv()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("serve started (and ran until killed) without %s", tc.want)
			}
			if err == nil || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("serve: %v, stderr %q; want a refusal naming %s", err, stderr.String(), tc.want)
			}
		})
	}
	p := start(t, "--jwks-url", j.srv.URL, "--jwt-insecure-skip-issuer-audience")
	if logs := p.Logs(); !strings.Contains(logs, "INSECURE") {
		t.Errorf("the opt-in started without a warning:\n%s", logs)
	}
}

// TestAdminAPITenancyThroughTheBinary replays the attack: a JWT for tenant
// beta with roles [admin] revoked acme's operator key. The LLM role admin
// is no operator role; tenant beta's operator does not reach acme.
func TestAdminAPITenancyThroughTheBinary(t *testing.T) {
	t.Parallel()
	j := newJWKSServer(t)
	j.addKey(t, "k1")
	a := startAPI(t, nil, "--jwks-url", j.srv.URL, "--jwt-issuer", "https://issuer.test", "--jwt-audience", "bulwark")
	now := time.Now().Unix()
	token := func(roles []string, extra ...string) context.Context {
		c := map[string]any{"iss": "https://issuer.test", "aud": "bulwark", "sub": "mallory", "tenant": "beta",
			"roles": roles, "iat": now, "exp": now + 600}
		for i := 0; i+1 < len(extra); i += 2 {
			c[extra[i]] = extra[i+1]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+j.sign(t, "k1", c))
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		id   string
		want codes.Code
	}{
		{"beta's LLM admin", token([]string{"admin"}), "ops", codes.PermissionDenied},
		{"beta's operator, acme's key", token([]string{"bulwark-operator"}), "app", codes.NotFound},
		{"beta's operator, a tenant-less operator's key", token([]string{"bulwark-operator"}), "ops", codes.NotFound},
		{"a token for another audience", token([]string{"bulwark-operator", "bulwark-cross-tenant"}, "aud", "other-service"), "app", codes.Unauthenticated},
		{"a token from another issuer", token([]string{"bulwark-operator", "bulwark-cross-tenant"}, "iss", "https://evil.test"), "app", codes.Unauthenticated},
	} {
		_, err := a.admin.RevokeKey(tc.ctx, &bulwarkv1.RevokeKeyRequest{Id: tc.id})
		apiCode(t, tc.name, err, tc.want)
	}
	l, err := a.admin.ListKeys(token([]string{"bulwark-operator"}), &bulwarkv1.ListKeysRequest{})
	if err != nil || len(l.GetKeys()) != 0 {
		t.Fatalf("beta's operator lists %v, %v; want none of acme's or tenant-less keys", l.GetKeys(), err)
	}
	_, err = a.admin.ResetQuota(token([]string{"bulwark-operator"}), &bulwarkv1.ResetQuotaRequest{
		Subject: &bulwarkv1.QuotaSubject{Kind: &bulwarkv1.QuotaSubject_Tenant{Tenant: "acme"}}})
	apiCode(t, "beta's operator resets acme's quota", err, codes.PermissionDenied)
	l, err = a.admin.ListKeys(a.as(t, "ops"), &bulwarkv1.ListKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range l.GetKeys() {
		if k.GetStatus() != bulwarkv1.KeyStatus_KEY_STATUS_ACTIVE {
			t.Errorf("key %s is %v after the attempts, want active", k.GetId(), k.GetStatus())
		}
	}
}
