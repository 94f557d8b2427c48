package extauthz

import (
	"cmp"
	"context"
	"encoding/json"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/test/fixture"
)

const testPolicy = `package t
import rego.v1

decision := d if {
	input.parsed_path == ["allow"]
	d := {"allowed": true, "reason": "ok",
		"headers": {"x-user": "u1", "x-multi": ["a", "b"]},
		"request_headers_to_remove": ["cookie"],
		"response_headers_to_add": {"x-resp": "1"},
		"query_parameters_to_set": {"q": "v"},
		"query_parameters_to_remove": ["debug"],
		"dynamic_metadata": {"user": "u1", "n": 2, "list": [true, null]}}
}
decision := {"allowed": false, "http_status": 401, "reason": "login", "body": "who are you", "headers": {"www-authenticate": "Bearer"}} if input.parsed_path == ["login"]
decision := {"allowed": false, "http_status": 429, "reason": "slow_down"} if input.parsed_path == ["limited"]
decision := {"allowed": false, "http_status": 299} if input.parsed_path == ["weird"]
decision := "yes" if input.parsed_path == ["wrong_type"]
decision := {"allowed": true, "reason": "body"} if input.parsed_body.model == "m1"
decision := {"allowed": false, "reason": "truncated"} if input.truncated_body
decision := {"allowed": false, "reason": "bad_json", "body": input.parse_errors.body} if {
	not input.truncated_body
	input.parse_errors.body
}
decision := {"allowed": true} if {
	input.parsed_path == ["slow"]
	some i in numbers.range(1, 100000000)
	i < 0
}
decision := {"allowed": input.phase == "request_headers", "reason": input.version.encoding} if input.parsed_path == ["phase"]
`

// newServer is the door over the core serve builds, deciding with
// testPolicy; cfg's Timeout (default 1s) and DryRun become check_timeout
// and dry_run.
func newServer(t *testing.T, cfg pipeline.Config) *Server {
	t.Helper()
	st := fixture.NewStack(t, fixture.StackOptions{Policies: fstest.MapFS{"p.rego": {Data: []byte(testPolicy)}}, Query: "t/decision",
		Config: func(c *config.Config) {
			c.CheckTimeout = cmp.Or(cfg.Timeout, time.Second)
			c.DryRun, c.RateLimitHeaders = cfg.DryRun, cfg.RateLimitHeaders
		}})
	return New(st.Pipeline, Options{})
}

func headers(opts []*corev3.HeaderValueOption) map[string][]string {
	m := map[string][]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = append(m[o.GetHeader().GetKey()], o.GetHeader().GetValue())
	}
	return m
}

func TestCheckAllowCarriesMutations(t *testing.T) {
	s := newServer(t, pipeline.Config{})
	resp, err := s.Check(context.Background(), envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/allow"}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus().GetCode() != 0 {
		t.Fatalf("status = %v", resp.GetStatus())
	}
	ok := resp.GetOkResponse()
	h := headers(ok.GetHeaders())
	id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue()
	if len(id) != 36 {
		t.Fatalf("decision id %q", id)
	}
	if h["x-user"][0] != "u1" || strings.Join(h["x-multi"], ",") != "a,b" || h[envoy.DecisionIDHeader][0] != id {
		t.Fatalf("upstream headers = %v", h)
	}
	var actions []corev3.HeaderValueOption_HeaderAppendAction
	for _, o := range ok.GetHeaders() {
		if o.GetHeader().GetKey() == "x-multi" {
			actions = append(actions, o.GetAppendAction())
		}
	}
	if len(actions) != 2 || actions[0] != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD ||
		actions[1] != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
		t.Fatalf("x-multi actions = %v, want overwrite then append", actions)
	}
	if rh := headers(ok.GetResponseHeadersToAdd()); rh["x-resp"][0] != "1" || rh[envoy.DecisionIDHeader][0] != id {
		t.Fatalf("response headers = %v", rh)
	}
	// The policy set no identity headers: a client's own are removed.
	if got := ok.GetHeadersToRemove(); strings.Join(got, ",") != "cookie,x-bulwark-principal,x-bulwark-tenant" {
		t.Fatalf("headers to remove = %v", got)
	}
	if q := ok.GetQueryParametersToSet(); len(q) != 1 || q[0].GetKey() != "q" || q[0].GetValue() != "v" {
		t.Fatalf("query to set = %v", q)
	}
	if q := ok.GetQueryParametersToRemove(); len(q) != 1 || q[0] != "debug" {
		t.Fatalf("query to remove = %v", q)
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["user"] != "u1" || md["n"] != 2.0 || md["reason"] != "ok" {
		t.Fatalf("metadata = %v", md)
	}
}

func TestCheckDenials(t *testing.T) {
	cases := []struct {
		name       string
		req        envoy.HTTPRequest
		wantHTTP   int
		wantGRPC   codes.Code
		wantReason string
		wantBody   string // substring
	}{
		{"policy body and headers", envoy.HTTPRequest{Path: "/login"}, 401, codes.Unauthenticated, "login", "who are you"},
		{"rate limited default body", envoy.HTTPRequest{Path: "/limited"}, 429, codes.ResourceExhausted, "slow_down", `"code":"slow_down"`},
		{"undefined", envoy.HTTPRequest{Path: "/nothing"}, 403, codes.PermissionDenied, "policy_undefined", "could not be authorized"},
		{"wrong type", envoy.HTTPRequest{Path: "/wrong_type"}, 403, codes.PermissionDenied, "policy_invalid_decision", "could not be authorized"},
		{"status outside envoy enum", envoy.HTTPRequest{Path: "/weird"}, 403, codes.PermissionDenied, "denied", `"code":"denied"`},
		{"truncated body", envoy.HTTPRequest{Method: "POST", Path: "/x", Headers: map[string]string{"content-type": "application/json"},
			Body: []byte(`{"model": "m1", "pad": "xxxxxxxxxxxxxxxx"}`), MaxBodyBytes: 10}, 403, codes.PermissionDenied, "truncated", ""},
		{"malformed json", envoy.HTTPRequest{Method: "POST", Path: "/x", Headers: map[string]string{"content-type": "application/json"},
			Body: []byte(`{"model": `)}, 403, codes.PermissionDenied, "input_not_parsed", "could not be authorized"},
	}
	s := newServer(t, pipeline.Config{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Check(context.Background(), envoy.NewCheckRequest(tc.req))
			if err != nil {
				t.Fatalf("Check error: %v", err)
			}
			if c := codes.Code(resp.GetStatus().GetCode()); c != tc.wantGRPC {
				t.Fatalf("grpc code = %v, want %v", c, tc.wantGRPC)
			}
			d := resp.GetDeniedResponse()
			if int(d.GetStatus().GetCode()) != tc.wantHTTP {
				t.Fatalf("http status = %d, want %d", d.GetStatus().GetCode(), tc.wantHTTP)
			}
			if resp.GetStatus().GetMessage() != tc.wantReason {
				t.Fatalf("reason = %q, want %q", resp.GetStatus().GetMessage(), tc.wantReason)
			}
			if !strings.Contains(d.GetBody(), tc.wantBody) {
				t.Fatalf("body = %q, want %q in it", d.GetBody(), tc.wantBody)
			}
			if strings.Contains(d.GetBody(), "t/decision") || strings.Contains(d.GetBody(), "rego") {
				t.Fatalf("body leaks policy detail: %q", d.GetBody())
			}
			if h := headers(d.GetHeaders()); len(h[envoy.DecisionIDHeader]) != 1 {
				t.Fatalf("deny lacks decision id header: %v", h)
			}
			if strings.HasPrefix(d.GetBody(), "{") {
				var doc errorDoc
				if err := json.Unmarshal([]byte(d.GetBody()), &doc); err != nil || doc.Error.DecisionID == "" {
					t.Fatalf("error body %q: %v", d.GetBody(), err)
				}
			}
		})
	}
}

func TestCheckBodies(t *testing.T) {
	s := newServer(t, pipeline.Config{})
	for _, pack := range []bool{false, true} {
		resp, err := s.Check(context.Background(), envoy.NewCheckRequest(envoy.HTTPRequest{
			Method: "POST", Path: "/x", PackAsBytes: pack,
			Headers: map[string]string{"content-type": "application/json"}, Body: []byte(`{"model":"m1"}`)}))
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("pack_as_bytes=%v: %v %v", pack, resp.GetStatus(), err)
		}
	}
}

func TestCheckInputContract(t *testing.T) {
	s := newServer(t, pipeline.Config{})
	resp, err := s.Check(context.Background(), envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/phase"}))
	if err != nil || resp.GetStatus().GetCode() != 0 || resp.GetDynamicMetadata().AsMap()["reason"] != "protojson" {
		t.Fatalf("%v %v", resp, err)
	}
}

func TestCheckDryRun(t *testing.T) {
	s := newServer(t, pipeline.Config{DryRun: true})
	resp, err := s.Check(context.Background(), envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/login"}))
	if err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("dry run did not allow: %v %v", resp.GetStatus(), err)
	}
	md := resp.GetDynamicMetadata().AsMap()
	if md["dry_run_denied"] != true || md["dry_run_reason"] != "login" {
		t.Fatalf("metadata = %v", md)
	}
}

func TestCheckDeadline(t *testing.T) {
	s := newServer(t, pipeline.Config{Timeout: 30 * time.Millisecond})
	start := time.Now()
	_, err := s.Check(context.Background(), envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/slow"}))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Check(ctx, envoy.NewCheckRequest(envoy.HTTPRequest{Path: "/slow"})); status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled: err = %v", err)
	}
	if _, err := s.Check(context.Background(), &authv3.CheckRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty request: err = %v", err)
	}
}

func TestBuildInputFields(t *testing.T) {
	in := envoy.BuildInput(envoy.NewCheckRequest(envoy.HTTPRequest{Method: "POST", Path: "/v1/a?x=1",
		Headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}, Body: []byte("k=v")}))
	for _, k := range []string{"attributes", "parsed_path", "parsed_query", "parsed_body", "truncated_body", "version"} {
		if in.Get(ast.StringTerm(k)) == nil {
			t.Errorf("input lacks %s", k)
		}
	}
	if v := in.Get(ast.StringTerm("parsed_body")).Value.String(); v != `{"k": ["v"]}` {
		t.Errorf("parsed_body = %s", v)
	}
	if v := in.Get(ast.StringTerm("parsed_query")).Value.String(); v != `{"x": ["1"]}` {
		t.Errorf("parsed_query = %s", v)
	}
}

// FuzzBuildInput builds inputs from arbitrary CheckRequests: never a panic.
func FuzzBuildInput(f *testing.F) {
	f.Add("POST", "/v1/chat/completions?x=1", "application/json", []byte(`{"model":"m"}`), false, 0)
	f.Add("GET", "/%zz", "application/x-www-form-urlencoded", []byte("a=%zz"), true, 3)
	f.Add("", "", "", []byte(nil), false, 0)
	f.Fuzz(func(t *testing.T, method, path, ct string, body []byte, pack bool, max int) {
		if max < 0 {
			max = -max
		}
		req := envoy.NewCheckRequest(envoy.HTTPRequest{Method: method, Path: path, Body: body, PackAsBytes: pack, MaxBodyBytes: max,
			Headers: map[string]string{"content-type": ct}})
		in := envoy.BuildInput(req)
		if in.Get(ast.StringTerm("truncated_body")) == nil {
			t.Fatal("no truncated_body")
		}
	})
}
