package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/extproc"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
	"github.com/bulwark-ai/bulwark/test/envoysim"
	"github.com/bulwark-ai/bulwark/test/fixture"
	"github.com/bulwark-ai/bulwark/test/redisserver"
)

// authzMetadata wraps ext_authz's dynamic metadata as Envoy forwards it to
// ext_proc (forwarding_namespaces).
func authzMetadata(md *structpb.Struct) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{envoy.AuthzNamespace: md}}
}

// TestExtProcForwardedPrincipalMustBeSealed: ext_proc believes the principal
// in ext_authz's forwarded metadata only when Bulwark's own ext_authz sealed
// it with the deployment's key; anything else (a forged principal, a
// genuine one altered, one sealed under another replica's key) makes it
// authenticate the request's own credentials, and a request without any is
// refused 401 before the model. A genuine seal skips the second identity
// decision: the request passes with no credential on it at all.
func TestExtProcForwardedPrincipalMustBeSealed(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "metadata.key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef-shared\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, key := llmProc(t, "--metadata-key-file", keyFile)
	// A second replica with the same key, and one with its own random key.
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	createKey(t, "--keys-file", keys, "--id", "app", "--roles", "user", "--tenant", "acme")
	shared := startEnv(t, []string{pepperEnv}, "--keys-file", keys, "--metadata-key-file", keyFile)
	own := startEnv(t, []string{pepperEnv}, "--keys-file", keys)

	allowed := p.Check(t, chat(map[string]string{"authorization": "Bearer " + key}))
	if allowed.GetStatus().GetCode() != 0 {
		t.Fatalf("ext_authz denied the genuine request: %v", allowed.GetStatus())
	}
	genuine := allowed.GetDynamicMetadata()
	if genuine.GetFields()[envoy.MetadataMAC].GetStringValue() == "" {
		t.Fatalf("ext_authz's metadata carries no seal: %v", genuine)
	}
	altered := proto.Clone(genuine).(*structpb.Struct)
	altered.Fields["tenant"] = structpb.NewStringValue("beta")
	forged := &structpb.Struct{Fields: map[string]*structpb.Value{
		"decision_id":    structpb.NewStringValue("authz-1"),
		"principal_id":   structpb.NewStringValue("someone"),
		"principal_kind": structpb.NewStringValue("api_key"),
		"tenant":         structpb.NewStringValue("acme"),
		"roles":          structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("user")}}),
	}}
	forgedMAC := proto.Clone(forged).(*structpb.Struct)
	forgedMAC.Fields[envoy.MetadataExpires] = genuine.Fields[envoy.MetadataExpires]
	forgedMAC.Fields[envoy.MetadataMAC] = genuine.Fields[envoy.MetadataMAC]

	body := `{"model":"gpt-4o","max_tokens":2000000,"messages":[{"role":"user","content":"hello"}]}`
	cases := []struct {
		name    string
		to      *proc
		md      *structpb.Struct
		allowed bool
	}{
		{"forged principal, no seal", p, forged, false},
		{"forged principal with a seal copied from a genuine decision", p, forgedMAC, false},
		{"genuine decision with its tenant altered", p, altered, false},
		{"genuine decision on a replica with its own key", own, genuine, false},
		{"genuine decision", p, genuine, true},
		{"genuine decision on a replica sharing the key", shared, genuine, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// No credential on the request: only a believed seal lets it pass.
			req := envoysim.Request{Method: "POST", Path: "/v1/chat/completions", Metadata: authzMetadata(tc.md),
				Headers: map[string]string{"content-type": "application/json"}, Body: []byte(body)}
			res := run(t, tc.to, envoysim.DefaultFilter, req, jsonUpstream(`{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`))
			if !tc.allowed {
				if res.Immediate == nil || res.Status != 401 || res.UpstreamCalled {
					t.Fatalf("want 401 before the model, got %d upstream=%v %s", res.Status, res.UpstreamCalled, res.Body)
				}
				return
			}
			if res.Immediate != nil || !res.UpstreamCalled {
				t.Fatalf("genuine ext_authz decision not believed: %d %s", res.Status, res.Body)
			}
		})
	}
	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{`bulwark_extproc_authz_metadata_total{result="verified"} 1`, `bulwark_extproc_authz_metadata_total{result="invalid"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "authz_metadata"))
		}
	}
	for _, q := range []*proc{p, shared} {
		if strings.Contains(q.Logs(), "0123456789abcdef0123456789abcdef") {
			t.Fatal("the metadata key reached the logs")
		}
	}
}

// TestExtProcReservationSettledWhateverHappens: with a 2,000-token daily
// quota in Redis, a streamed exchange whose client goes away before the
// usage event is settled to an estimate (its ~1,000 prompt tokens and the
// answer seen so far), not left at its 1,500-token reservation (which
// starves the tenant) nor released to nothing; an answer that reports no
// usage is settled the same way.
func TestExtProcReservationSettledWhateverHappens(t *testing.T) {
	rs := redisserver.Start(t)
	dir := fixture.PolicyDir(t, "tokens_per_day: 2000000", "tokens_per_day: 2000")
	p, key := llmProc(t, "--policy-dir", dir, "--redis-url", "redis://"+rs.Addr)
	var pb strings.Builder
	for i := 0; pb.Len() < 4000; i++ {
		fmt.Fprintf(&pb, "Row %d of the harvest table lists %d apples and %d pears. ", i, i*3, i*5)
	}
	prompt := pb.String()[:4000] // ~1,000 tokens

	// The client goes away mid-answer: Envoy cancels the stream.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sctx, hangUp := context.WithCancel(ctx)
	stream, err := p.ExtProc().Process(sctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetImmediateResponse() != nil {
			t.Fatalf("refused: %v", resp.GetImmediateResponse())
		}
		return resp
	}
	reqBody := []byte(`{"model":"gpt-4o","stream":true,"max_tokens":1500,"messages":[{"role":"user","content":"` + prompt + `"}]}`)
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: extproc.EnvoyHeaders(map[string]string{":method": "POST", ":path": "/v1/chat/completions", ":authority": "api.example.com",
			"authorization": "Bearer " + key, "content-type": "application/json"})}}})
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: reqBody, EndOfStream: true}}})
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: extproc.EnvoyHeaders(map[string]string{":status": "200", "content-type": "text/event-stream"})}}})
	send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
		Body: openAIStream([]string{"Gardens began"}, 0, 0)[:120]}}})
	hangUp()

	waitMetric := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, m := p.get(t, "/metrics")
			if strings.Contains(m, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics never showed %s:\n%s", want, grepLines(m, "reconcil"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMetric(`bulwark_token_reconciliations_total{result="estimated"} 1`)

	chatWith := func(maxTokens string, up func(envoysim.Forwarded) envoysim.Upstream) *envoysim.Result {
		t.Helper()
		return run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions",
			`{"model":"gpt-4o","stream":true,"max_tokens":`+maxTokens+`,"messages":[{"role":"user","content":"hi"}]}`), up)
	}
	withUsage := sseUpstream(openAIStream([]string{"Hello"}, 10, 30), nil)
	// ~1,040 charged for the aborted exchange, so 900 fit; the old code kept
	// its 1,500 reservation and left 500.
	if res := chatWith("900", withUsage); res.Immediate != nil {
		t.Fatalf("900 tokens after an aborted exchange: %d %s (its reservation was not settled)", res.Status, res.Body)
	}
	// ~920 left: 1,500 must not fit, or the aborted exchange cost nothing.
	if res := chatWith("1500", withUsage); res.Immediate == nil || res.Status != 429 {
		t.Fatalf("1500 tokens fit after an aborted ~1,000-token prompt: %d (it was charged nothing)", res.Status)
	}
	// An answer without usage: settled to the estimate (a few tokens), so
	// 850 still fit after an 800-token reservation.
	noUsage := jsonUpstream(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`)
	if res := run(t, p, envoysim.DefaultFilter, chatRequest(key, "/v1/chat/completions",
		`{"model":"gpt-4o","max_tokens":800,"messages":[{"role":"user","content":"hi"}]}`), noUsage); res.Immediate != nil {
		t.Fatalf("800 tokens: %d %s", res.Status, res.Body)
	}
	waitMetric(`bulwark_token_reconciliations_total{result="estimated"} 2`)
	if res := chatWith("850", withUsage); res.Immediate != nil {
		t.Fatalf("850 tokens after an answer without usage: %d %s (its reservation was not settled)", res.Status, res.Body)
	}
}

// TestListenersApart: Envoy's listener serves ext_authz, ext_proc and
// health, never Bulwark's own API; the API listener serves Guard, Admin and
// health, never Check or Process. So an API caller (an SDK, a batch job)
// cannot send Check a forged source.principal, even with
// --trust-source-principal on (a forged admin SPIFFE id once came out
// allowed with roles [admin]).
func TestListenersApart(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bulwark.yaml")
	writeFile(t, cfg, `trust_source_principal: true
mtls_principals:
  "spiffe://cluster.local/ns/ops/sa/bulwark-admin":
    roles: [admin]
`)
	a := startAPI(t, nil, "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	forged := envoy.NewCheckRequest(envoy.HTTPRequest{Method: "GET", Path: "/v1/models"})
	forged.Attributes.Source = &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/ops/sa/bulwark-admin"}

	unimplemented := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s: %v, want Unimplemented (not served on this listener)", what, err)
		}
	}
	// Envoy's listener: no API.
	envoyAPI := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.keys["ops"])
	_, err := bulwarkv1.NewGuardServiceClient(a.conn).ScanText(envoyAPI, &bulwarkv1.ScanTextRequest{Text: "hi"})
	unimplemented("GuardService on Envoy's listener", err)
	_, err = bulwarkv1.NewAdminServiceClient(a.conn).GetPolicyStatus(envoyAPI, &bulwarkv1.GetPolicyStatusRequest{})
	unimplemented("AdminService on Envoy's listener", err)
	// The API listener: no Envoy services, whatever the caller claims.
	_, err = authv3.NewAuthorizationClient(a.apiConn).Check(ctx, forged)
	unimplemented("Check on the API listener", err)
	stream, err := extprocv3.NewExternalProcessorClient(a.apiConn).Process(ctx)
	if err == nil {
		_, err = stream.Recv()
	}
	unimplemented("Process on the API listener", err)
	// Each serves what it should, and health on both.
	if _, err := a.guard.ScanText(a.as(t, "app"), &bulwarkv1.ScanTextRequest{Text: "hi"}); err != nil {
		t.Errorf("GuardService on the API listener: %v", err)
	}
	if resp := a.Check(t, envoy.HTTPRequest{Method: "GET", Path: "/healthz"}); resp.GetStatus().GetCode() != 0 {
		t.Errorf("Check on Envoy's listener: %v", resp.GetStatus())
	}
	for name, conn := range map[string]*grpc.ClientConn{"envoy": a.conn, "api": a.apiConn} {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health on the %s listener: %v %v", name, resp, err)
		}
	}
}

// TestAPIAddrMustDiffer: the API cannot be put back on Envoy's listener.
func TestAPIAddrMustDiffer(t *testing.T) {
	_, errOut, code := runCLI(t, "serve", "--grpc-addr", "127.0.0.1:19191", "--api-addr", "127.0.0.1:19191")
	if code != 2 || !strings.Contains(errOut, "api_addr") {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
}

// TestExtProcStripsBulwarkCredentials: the client's Bulwark API key never
// reaches the model provider, whichever header carried it; a provider key
// in x-api-key beside a Bulwark bearer token is the client's business and
// passes.
func TestExtProcStripsBulwarkCredentials(t *testing.T) {
	p, key := llmProc(t)
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`
	cases := []struct {
		name             string
		headers          map[string]string
		wantGone, wantUp []string
	}{
		{"bearer", map[string]string{"authorization": "Bearer " + key}, []string{"authorization"}, nil},
		{"x-api-key", map[string]string{"x-api-key": key}, []string{"x-api-key"}, nil},
		{"bearer beside a provider key", map[string]string{"authorization": "Bearer " + key, "x-api-key": "sk-ant-provider"},
			[]string{"authorization"}, []string{"x-api-key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.headers["content-type"] = "application/json"
			res := run(t, p, envoysim.DefaultFilter, envoysim.Request{Method: "POST", Path: "/v1/chat/completions", Headers: tc.headers, Body: []byte(body)},
				jsonUpstream(`{"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}`))
			if res.Immediate != nil || !res.UpstreamCalled {
				t.Fatalf("not forwarded: %d %s", res.Status, res.Body)
			}
			for _, h := range tc.wantGone {
				if v, ok := res.Upstream.Headers[h]; ok {
					t.Errorf("the model received %s: %q", h, v)
				}
			}
			for _, h := range tc.wantUp {
				if _, ok := res.Upstream.Headers[h]; !ok {
					t.Errorf("%s was removed; it was not Bulwark's credential", h)
				}
			}
		})
	}
}
