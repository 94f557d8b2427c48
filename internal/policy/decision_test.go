package policy

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestDecodeDecision(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    Decision
		wantErr string // substring of the error, "" for success
	}{
		{name: "true", in: `true`, want: Decision{Allowed: true}},
		{name: "false", in: `false`, want: Decision{}},
		{name: "object allow", in: `{"allowed": true, "reason": "ok"}`, want: Decision{Allowed: true, Reason: "ok"}},
		{name: "full deny", in: `{"allowed": false, "http_status": 429, "body": "slow down",
			"headers": {"retry-after": "3", "x-multi": ["a", "b"]}, "reason": "rate_limited"}`,
			want: Decision{HTTPStatus: 429, Body: "slow down", Reason: "rate_limited",
				Headers: []Header{{"retry-after", "3"}, {"x-multi", "a"}, {"x-multi", "b"}}}},
		{name: "allow mutations", in: `{"allowed": true, "request_headers_to_remove": ["cookie"],
			"response_headers_to_add": {"x-a": "1"}, "query_parameters_to_set": {"q": "v"},
			"query_parameters_to_remove": ["debug"], "dynamic_metadata": {"user": "u1", "n": 2}}`,
			want: Decision{Allowed: true, RequestHeadersToRemove: []string{"cookie"},
				ResponseHeadersToAdd: []Header{{"x-a", "1"}}, QueryParametersToSet: []Header{{"q", "v"}},
				QueryParametersToRemove: []string{"debug"}}},
		{name: "set of headers to remove", in: `{"allowed": true, "request_headers_to_remove": {"a"}}`,
			want: Decision{Allowed: true, RequestHeadersToRemove: []string{"a"}}},
		{name: "status_code alias", in: `{"allowed": false, "status_code": 401}`, want: Decision{HTTPStatus: 401}},
		{name: "http_status wins", in: `{"allowed": false, "status_code": 401, "http_status": 429}`, want: Decision{HTTPStatus: 429}},
		{name: "unknown fields ignored", in: `{"allowed": true, "x_vendor": []}`, want: Decision{Allowed: true}},
		{name: "audit not object", in: `{"allowed": true, "audit": ["x"]}`, wantErr: `"audit" must be an object`},
		{name: "limits", in: `{"allowed": true, "limits": [{"name": "rpm", "tenant": "acme", "principal": "a", "limit": 100, "period": "1m"},
			{"name": "tpd", "tenant": "acme", "limit": 1000000, "period": 86400, "cost": 512, "estimated": true, "shadow": true, "failure_mode": "fail_closed"},
			{"name": "per_model", "tenant": "acme", "key": "{gpt}", "limit": 5, "period": "1h"}]}`,
			want: Decision{Allowed: true, Limits: []Limit{{Name: "rpm", Tenant: "acme", Principal: "a", Limit: 100, Period: time.Minute, Cost: 1},
				{Name: "tpd", Tenant: "acme", Limit: 1000000, Period: 24 * time.Hour, Cost: 512, Estimated: true, Shadow: true, FailureMode: "fail_closed"},
				{Name: "per_model", Tenant: "acme", Key: "{gpt}", Limit: 5, Period: time.Hour, Cost: 1}}}},
		{name: "redact", in: `{"allowed": true, "redact": [{"detector": "pii", "types": ["EMAIL_ADDRESS"], "action": "mask"}, {"detector": "secrets"}]}`,
			want: Decision{Allowed: true, Redact: []RedactRule{{Detector: "pii", Types: []string{"EMAIL_ADDRESS"}, Action: "mask"}, {Detector: "secrets", Action: "replace"}}}},
		{name: "redact not array", in: `{"allowed": true, "redact": "pii"}`, wantErr: "must be an array"},
		{name: "redact no detector", in: `{"allowed": true, "redact": [{"types": ["X"]}]}`, wantErr: "no \"detector\""},
		{name: "header name with a space", in: `{"allowed": true, "headers": {"x user": "a"}}`, wantErr: `"x user" is not a valid HTTP header name`},
		{name: "pseudo-header", in: `{"allowed": true, "headers": {":path": "/admin"}}`, wantErr: `":path" is not a valid HTTP header name`},
		{name: "header value with a line break", in: `{"allowed": true, "headers": {"x-user": "a\r\nx-admin: 1"}}`, wantErr: "characters an HTTP header value cannot carry"},
		{name: "response header value with NUL in an array", in: `{"allowed": false, "response_headers_to_add": {"x-why": ["ok", "a\u0000b"]}}`, wantErr: "cannot carry"},
		{name: "query parameters are not header names", in: `{"allowed": true, "query_parameters_to_set": {"a b": "c d"}}`,
			want: Decision{Allowed: true, QueryParametersToSet: []Header{{Key: "a b", Value: "c d"}}}},
		{name: "redact bad action", in: `{"allowed": true, "redact": [{"detector": "pii", "action": "erase"}]}`, wantErr: "replace, mask, hash or remove"},
		{name: "redact types not strings", in: `{"allowed": true, "redact": [{"detector": "pii", "types": [1]}]}`, wantErr: "only strings"},
		{name: "limits not array", in: `{"allowed": true, "limits": {"a": 1}}`, wantErr: "must be an array"},
		{name: "limit no subject", in: `{"allowed": true, "limits": [{"name": "x", "limit": 1, "period": "1s"}]}`, wantErr: "tenant, principal or key"},
		{name: "limit empty subject", in: `{"allowed": true, "limits": [{"name": "x", "tenant": "", "principal": "", "limit": 1, "period": "1s"}]}`, wantErr: "tenant, principal or key"},
		{name: "limit tenant not a string", in: `{"allowed": true, "limits": [{"name": "x", "tenant": 1, "limit": 1, "period": "1s"}]}`, wantErr: "must be a string"},
		{name: "limit zero", in: `{"allowed": true, "limits": [{"name": "x", "key": "k", "limit": 0, "period": "1s"}]}`, wantErr: "positive integer"},
		{name: "limit bad period", in: `{"allowed": true, "limits": [{"name": "x", "key": "k", "limit": 1, "period": "soon"}]}`, wantErr: "period"},
		{name: "limit no period", in: `{"allowed": true, "limits": [{"name": "x", "key": "k", "limit": 1}]}`, wantErr: "needs a period"},
		{name: "limit negative cost", in: `{"allowed": true, "limits": [{"name": "x", "key": "k", "limit": 1, "period": "1s", "cost": -1}]}`, wantErr: "cost"},
		{name: "limit shadow type", in: `{"allowed": true, "limits": [{"name": "x", "key": "k", "limit": 1, "period": "1s", "shadow": "yes"}]}`, wantErr: "boolean"},
		{name: "string", in: `"yes"`, wantErr: "boolean or an object"},
		{name: "number", in: `1`, wantErr: "boolean or an object"},
		{name: "array", in: `[true]`, wantErr: "boolean or an object"},
		{name: "no allowed", in: `{"reason": "x"}`, wantErr: `no "allowed"`},
		{name: "allowed string", in: `{"allowed": "true"}`, wantErr: `"allowed" must be a boolean`},
		{name: "status string", in: `{"allowed": false, "http_status": "403"}`, wantErr: "http_status"},
		{name: "status range", in: `{"allowed": false, "http_status": 99}`, wantErr: "[100, 599]"},
		{name: "status fraction", in: `{"allowed": false, "http_status": 403.5}`, wantErr: "integer"},
		{name: "headers array", in: `{"allowed": true, "headers": ["a"]}`, wantErr: "must be an object"},
		{name: "header number", in: `{"allowed": true, "headers": {"a": 1}}`, wantErr: "string or an array"},
		{name: "header array number", in: `{"allowed": true, "headers": {"a": ["x", 1]}}`, wantErr: "only strings"},
		{name: "remove not strings", in: `{"allowed": true, "request_headers_to_remove": [1]}`, wantErr: "only strings"},
		{name: "body number", in: `{"allowed": false, "body": 5}`, wantErr: "must be a string"},
		{name: "metadata array", in: `{"allowed": true, "dynamic_metadata": []}`, wantErr: "dynamic_metadata"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ast.ParseTerm(tc.in)
			if err != nil {
				t.Fatalf("parse %s: %v", tc.in, err)
			}
			got, err := DecodeDecision(v.Value)
			if tc.wantErr != "" {
				var perr *Error
				if !errors.As(err, &perr) || perr.Code != CodeInvalidDecision {
					t.Fatalf("err = %v, want *Error with %s", err, CodeInvalidDecision)
				}
				if !contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %q, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			got.DynamicMetadata, got.Audit = nil, nil // compared separately
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeDecisionMetadata(t *testing.T) {
	v := ast.MustParseTerm(`{"allowed": true, "dynamic_metadata": {"user": "u1", "tags": ["a"], "nested": {"k": 1}}}`)
	d, err := DecodeDecision(v.Value)
	if err != nil {
		t.Fatal(err)
	}
	if d.DynamicMetadata["user"] != "u1" || len(d.DynamicMetadata["tags"].([]any)) != 1 {
		t.Fatalf("metadata = %#v", d.DynamicMetadata)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// FuzzDecodeDecision feeds arbitrary Rego/JSON values to the decoder: it must
// never panic, and whatever it accepts as allowed must have come from an
// explicit true.
func FuzzDecodeDecision(f *testing.F) {
	for _, s := range []string{`true`, `{"allowed": true}`, `{"allowed": false, "http_status": 401, "headers": {"a": ["b"]}}`,
		`{"allowed": true, "dynamic_metadata": {"a": [1, {"b": null}]}}`, `[1,2]`, `{"allowed": 1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		term, err := ast.ParseTerm(s)
		if err != nil || !term.IsGround() {
			return
		}
		d, err := DecodeDecision(term.Value)
		if err != nil || !d.Allowed {
			return
		}
		switch x := term.Value.(type) {
		case ast.Boolean:
			if !bool(x) {
				t.Fatalf("false decoded as allowed")
			}
		case ast.Object:
			if a := x.Get(ast.StringTerm("allowed")); a == nil || a.Value.Compare(ast.Boolean(true)) != 0 {
				t.Fatalf("allowed without allowed: true in %s", s)
			}
		default:
			t.Fatalf("%s decoded as allowed", s)
		}
	})
}

func TestProtectIdentityHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		in          Decision
		wantHeaders []Header
		wantRemove  []string
	}{
		{name: "bare allow removes both", in: Decision{Allowed: true},
			wantRemove: []string{PrincipalHeader, TenantHeader}},
		{name: "set values are kept", in: Decision{Allowed: true, Headers: []Header{{PrincipalHeader, "alice"}, {TenantHeader, "acme"}}},
			wantHeaders: []Header{{PrincipalHeader, "alice"}, {TenantHeader, "acme"}}},
		{name: "empty tenant is removed, not set", in: Decision{Allowed: true, Headers: []Header{{"x-bulwark-route", "llm"}, {PrincipalHeader, "alice"}, {TenantHeader, ""}}},
			wantHeaders: []Header{{"x-bulwark-route", "llm"}, {PrincipalHeader, "alice"}}, wantRemove: []string{TenantHeader}},
		{name: "names compare without case", in: Decision{Allowed: true, Headers: []Header{{"X-Bulwark-Principal", "alice"}}, RequestHeadersToRemove: []string{"X-Bulwark-Tenant"}},
			wantHeaders: []Header{{"X-Bulwark-Principal", "alice"}}, wantRemove: []string{"X-Bulwark-Tenant"}},
		{name: "deny is left alone", in: Decision{Headers: []Header{{TenantHeader, ""}}}, wantHeaders: []Header{{TenantHeader, ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shared := slices.Clone(tt.in.Headers)
			d := tt.in
			d.Headers = shared
			d.ProtectIdentityHeaders()
			if !slices.Equal(d.Headers, tt.wantHeaders) || !slices.Equal(d.RequestHeadersToRemove, tt.wantRemove) {
				t.Errorf("got headers %v remove %v, want %v and %v", d.Headers, d.RequestHeadersToRemove, tt.wantHeaders, tt.wantRemove)
			}
			if !slices.Equal(shared, tt.in.Headers) {
				t.Errorf("the policy's header slice was changed in place: %v", shared)
			}
		})
	}
}
