package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/net/http/httpguts"
)

// Header is one header (or query parameter) name/value pair. A policy may give
// a name several values (an array in Rego); each becomes its own Header so
// repeated headers survive the trip to Envoy.
type Header struct {
	Key   string
	Value string
}

// Decision is what a policy decided, in OPA-Envoy's result vocabulary plus
// Bulwark's additions. The zero value is a deny.
type Decision struct {
	// Allowed is the verdict; everything else refines it.
	Allowed bool
	// HTTPStatus is the status of a denied response; 0 means the adapter default (403).
	HTTPStatus int
	// Headers go to the upstream request on allow and to the client on deny.
	Headers []Header
	// Body is the body of a denied response.
	Body string
	// RequestHeadersToRemove are dropped from the upstream request on allow.
	RequestHeadersToRemove []string
	// ResponseHeadersToAdd go to the client's response on allow.
	ResponseHeadersToAdd []Header
	// DynamicMetadata is handed to Envoy (namespace envoy.filters.http.ext_authz).
	DynamicMetadata map[string]any
	// QueryParametersToSet and QueryParametersToRemove rewrite the upstream query on allow.
	QueryParametersToSet    []Header
	QueryParametersToRemove []string
	// Reason is a short machine-readable reason for logs, metrics and error bodies.
	Reason string
	// Message is the human text of Bulwark's JSON error body, used when the
	// policy denies without a Body of its own.
	Message string
	// Limits are rate limits and quotas to check, all or nothing, after an
	// allow (Bulwark's addition to OPA-Envoy's result).
	Limits []Limit
	// Audit holds extra tags the policy wants on this decision's audit record.
	Audit map[string]any
	// Redact says which detector findings ext_proc removes from the body it
	// is deciding on (Bulwark's addition; ignored by ext_authz, which cannot
	// change bodies).
	Redact []RedactRule
	// RemoveTools names the tools to remove from an MCP tools/list answer,
	// each with its reason (tool_not_allowed, tool_poisoning), so an agent
	// never sees a tool its caller may not call or that carries hidden
	// instructions (Bulwark's addition, "remove_tools": {name: reason}).
	RemoveTools map[string]string
}

// The identity headers tell the upstream who called: the default policy sets
// them from the verified principal. A client may send them too, so every
// allowing answer must overwrite or remove them (ProtectIdentityHeaders).
const (
	PrincipalHeader = "x-bulwark-principal"
	TenantHeader    = "x-bulwark-tenant"
)

// ProtectIdentityHeaders makes an allowing decision answer for the identity
// headers (PrincipalHeader, TenantHeader), whatever the policy returned:
// a header the policy sets to a non-empty value overwrites the client's,
// and any other, unset or set to "" (which Envoy may skip, leaving the
// client's), is removed from the upstream request instead. Without it a
// policy that forgets the headers, or a dry-run allow that replaced a deny
// and its mutations, would pass a client's forged identity upstream. The
// slices are copied before they change: the policy's result may be shared.
func (d *Decision) ProtectIdentityHeaders() {
	if !d.Allowed {
		return
	}
	for _, name := range [...]string{PrincipalHeader, TenantHeader} {
		set, empty := false, false
		for _, h := range d.Headers {
			if strings.EqualFold(h.Key, name) {
				set = set || h.Value != ""
				empty = empty || h.Value == ""
			}
		}
		if empty {
			d.Headers = slices.DeleteFunc(slices.Clone(d.Headers), func(h Header) bool {
				return h.Value == "" && strings.EqualFold(h.Key, name)
			})
		}
		if !set && !slices.ContainsFunc(d.RequestHeadersToRemove, func(r string) bool { return strings.EqualFold(r, name) }) {
			d.RequestHeadersToRemove = append(slices.Clip(d.RequestHeadersToRemove), name)
		}
	}
}

// RedactRule selects findings to redact and how.
type RedactRule struct {
	// Detector names the detector: "pii", "secrets", "canary", ...
	Detector string
	// Types narrows the rule to these finding types; empty means all of the
	// detector's types.
	Types []string
	// Action is "replace" (the default: [REDACTED:TYPE]), "mask", "hash"
	// or "remove" (the span is deleted: unsafe links and HTML, see
	// detect.DetectorMarkup).
	Action string
}

// Limit is one rate limit or token quota a policy attaches to a decision.
type Limit struct {
	// Name identifies the limit in headers and metrics ("rpm", "tokens_per_day").
	Name string
	// Tenant, Principal and Key say whose counter it is; at least one is
	// set. Bulwark builds the counter key from them, typed and escaped, so a
	// principal can never count against a tenant of the same name. The first
	// one set places the counter in Redis (its Cluster hash slot), so the
	// limits of one request start with the same one: a tenant's quota and
	// its principals' rates all set Tenant. Key is an opaque extra dimension
	// (a model, a route); braces in it have no special meaning.
	Tenant    string
	Principal string
	Key       string
	// Limit units are allowed per Period.
	Limit  int64
	Period time.Duration
	// Cost is what this request spends (default 1); Estimated marks it as a
	// token estimate to reconcile with the model's reported usage.
	Cost      int64
	Estimated bool
	// Shadow limits are counted and reported but never deny.
	Shadow bool
	// FailureMode overrides the limiter's default: fail_open or fail_closed.
	FailureMode string
}

// DecodeDecision turns a policy result into a Decision. A boolean is the
// verdict alone; an object must carry a boolean "allowed" and fields of the
// types OPA-Envoy documents. Anything else is an *Error with
// CodeInvalidDecision naming the offending field.
func DecodeDecision(v ast.Value) (Decision, error) {
	switch x := v.(type) {
	case ast.Boolean:
		return Decision{Allowed: bool(x)}, nil
	case ast.Object:
		return decodeObject(x)
	default:
		return Decision{}, invalid("decision must be a boolean or an object, got %s", ast.ValueName(v))
	}
}

func invalid(format string, args ...any) error {
	return &Error{Code: CodeInvalidDecision, Detail: fmt.Sprintf(format, args...)}
}

var (
	keyAllowed                 = ast.StringTerm("allowed")
	keyHTTPStatus              = ast.StringTerm("http_status")
	keyStatusCode              = ast.StringTerm("status_code") // the name OPA's Envoy primer uses
	keyHeaders                 = ast.StringTerm("headers")
	keyBody                    = ast.StringTerm("body")
	keyRequestHeadersToRemove  = ast.StringTerm("request_headers_to_remove")
	keyResponseHeadersToAdd    = ast.StringTerm("response_headers_to_add")
	keyDynamicMetadata         = ast.StringTerm("dynamic_metadata")
	keyQueryParametersToSet    = ast.StringTerm("query_parameters_to_set")
	keyQueryParametersToRemove = ast.StringTerm("query_parameters_to_remove")
	keyReason                  = ast.StringTerm("reason")
	keyMessage                 = ast.StringTerm("message")
	keyLimits                  = ast.StringTerm("limits")
	keyAudit                   = ast.StringTerm("audit")
	keyRedact                  = ast.StringTerm("redact")
	keyDetector                = ast.StringTerm("detector")
	keyTypes                   = ast.StringTerm("types")
	keyAction                  = ast.StringTerm("action")
	keyRemoveTools             = ast.StringTerm("remove_tools")
)

func decodeObject(o ast.Object) (Decision, error) {
	var d Decision
	t := o.Get(keyAllowed)
	if t == nil {
		return Decision{}, invalid(`decision object has no "allowed" field`)
	}
	b, ok := t.Value.(ast.Boolean)
	if !ok {
		return Decision{}, invalid(`"allowed" must be a boolean, got %s`, ast.ValueName(t.Value))
	}
	d.Allowed = bool(b)

	t = o.Get(keyHTTPStatus)
	if t == nil {
		t = o.Get(keyStatusCode)
	}
	if t != nil {
		n, ok := t.Value.(ast.Number)
		if !ok {
			return Decision{}, invalid(`"http_status" must be a number, got %s`, ast.ValueName(t.Value))
		}
		code, ok := n.Int()
		if !ok || code < 100 || code > 599 {
			return Decision{}, invalid(`"http_status" must be an integer in [100, 599], got %s`, n)
		}
		d.HTTPStatus = code
	}
	var err error
	if d.Headers, err = headerList(o, keyHeaders, true); err != nil {
		return Decision{}, err
	}
	if d.ResponseHeadersToAdd, err = headerList(o, keyResponseHeadersToAdd, true); err != nil {
		return Decision{}, err
	}
	if d.QueryParametersToSet, err = headerList(o, keyQueryParametersToSet, false); err != nil {
		return Decision{}, err
	}
	if d.RequestHeadersToRemove, err = stringList(o, keyRequestHeadersToRemove); err != nil {
		return Decision{}, err
	}
	if d.QueryParametersToRemove, err = stringList(o, keyQueryParametersToRemove); err != nil {
		return Decision{}, err
	}
	if d.Body, err = optString(o, keyBody); err != nil {
		return Decision{}, err
	}
	if d.Reason, err = optString(o, keyReason); err != nil {
		return Decision{}, err
	}
	if d.Message, err = optString(o, keyMessage); err != nil {
		return Decision{}, err
	}
	if d.Limits, err = decodeLimits(o.Get(keyLimits)); err != nil {
		return Decision{}, err
	}
	if d.Redact, err = decodeRedact(o.Get(keyRedact)); err != nil {
		return Decision{}, err
	}
	if d.RemoveTools, err = decodeRemoveTools(o.Get(keyRemoveTools)); err != nil {
		return Decision{}, err
	}
	if t := o.Get(keyAudit); t != nil {
		obj, ok := t.Value.(ast.Object)
		if !ok {
			return Decision{}, invalid(`"audit" must be an object, got %s`, ast.ValueName(t.Value))
		}
		js, err := ast.JSON(obj)
		if err != nil {
			return Decision{}, invalid(`"audit": %v`, err)
		}
		d.Audit, _ = js.(map[string]any)
	}
	if t := o.Get(keyDynamicMetadata); t != nil {
		obj, ok := t.Value.(ast.Object)
		if !ok {
			return Decision{}, invalid(`"dynamic_metadata" must be an object, got %s`, ast.ValueName(t.Value))
		}
		js, err := ast.JSON(obj)
		if err != nil {
			return Decision{}, invalid(`"dynamic_metadata": %v`, err)
		}
		d.DynamicMetadata, _ = js.(map[string]any)
	}
	return d, nil
}

func optString(o ast.Object, key *ast.Term) (string, error) {
	t := o.Get(key)
	if t == nil {
		return "", nil
	}
	s, ok := t.Value.(ast.String)
	if !ok {
		return "", invalid("%s must be a string, got %s", key, ast.ValueName(t.Value))
	}
	return string(s), nil
}

// stringList accepts an array or a set of strings.
func stringList(o ast.Object, key *ast.Term) ([]string, error) {
	t := o.Get(key)
	if t == nil {
		return nil, nil
	}
	var out []string
	var bad error
	each := func(e *ast.Term) {
		s, ok := e.Value.(ast.String)
		if !ok {
			if bad == nil {
				bad = invalid("%s must hold only strings, found %s", key, ast.ValueName(e.Value))
			}
			return
		}
		out = append(out, string(s))
	}
	switch x := t.Value.(type) {
	case *ast.Array:
		x.Foreach(each)
	case ast.Set:
		x.Foreach(each)
	default:
		return nil, invalid("%s must be an array of strings, got %s", key, ast.ValueName(t.Value))
	}
	return out, bad
}

// headerList accepts an object whose values are strings or arrays of strings,
// as OPA-Envoy does for headers and query parameters. For headers (http
// true) names and values must be ones HTTP can carry: Envoy does not check
// what an authorization server sets unless told to (ext_authz's
// validate_mutations), so a policy bug would otherwise reach the upstream
// or fail the request without a reason. The value is not echoed: it may be
// sensitive.
func headerList(o ast.Object, key *ast.Term, http bool) ([]Header, error) {
	t := o.Get(key)
	if t == nil {
		return nil, nil
	}
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, invalid("%s must be an object, got %s", key, ast.ValueName(t.Value))
	}
	out := make([]Header, 0, obj.Len())
	var bad error
	obj.Foreach(func(k, v *ast.Term) {
		if bad != nil {
			return
		}
		name, ok := k.Value.(ast.String)
		if !ok {
			bad = invalid("%s keys must be strings, found %s", key, ast.ValueName(k.Value))
			return
		}
		if http && !httpguts.ValidHeaderFieldName(string(name)) {
			bad = invalid("%s: %q is not a valid HTTP header name", key, string(name))
			return
		}
		add := func(val string) {
			if http && !httpguts.ValidHeaderFieldValue(val) {
				if bad == nil {
					bad = invalid("%s[%s] holds characters an HTTP header value cannot carry", key, name)
				}
				return
			}
			out = append(out, Header{Key: string(name), Value: val})
		}
		switch x := v.Value.(type) {
		case ast.String:
			add(string(x))
		case *ast.Array:
			x.Foreach(func(e *ast.Term) {
				s, ok := e.Value.(ast.String)
				if !ok {
					if bad == nil {
						bad = invalid("%s[%s] must hold only strings, found %s", key, name, ast.ValueName(e.Value))
					}
					return
				}
				add(string(s))
			})
		default:
			bad = invalid("%s[%s] must be a string or an array of strings, got %s", key, name, ast.ValueName(v.Value))
		}
	})
	return out, bad
}

// decodeLimits reads `limits: [{name, tenant, principal, key, limit, period,
// cost, estimated, shadow, failure_mode}]`. period is a duration string ("1m", "24h") or a
// number of seconds.
func decodeLimits(t *ast.Term) ([]Limit, error) {
	if t == nil {
		return nil, nil
	}
	var arr []*ast.Term
	switch x := t.Value.(type) {
	case *ast.Array:
		x.Foreach(func(e *ast.Term) { arr = append(arr, e) })
	case ast.Set:
		x.Foreach(func(e *ast.Term) { arr = append(arr, e) })
	default:
		return nil, invalid(`"limits" must be an array, got %s`, ast.ValueName(t.Value))
	}
	out := make([]Limit, 0, len(arr))
	for i, e := range arr {
		o, ok := e.Value.(ast.Object)
		if !ok {
			return nil, invalid(`"limits"[%d] must be an object`, i)
		}
		var l Limit
		var err error
		for _, f := range []struct {
			key *ast.Term
			dst *string
		}{{keyLimitName, &l.Name}, {keyLimitTenant, &l.Tenant}, {keyLimitPrincipal, &l.Principal}, {keyLimitKey, &l.Key}, {keyLimitFailureMode, &l.FailureMode}} {
			if *f.dst, err = optString(o, f.key); err != nil {
				return nil, invalid(`"limits"[%d]: %v`, i, err)
			}
		}
		if l.Name == "" || l.Tenant == "" && l.Principal == "" && l.Key == "" {
			return nil, invalid(`"limits"[%d] needs a name and a tenant, principal or key`, i)
		}
		if l.Limit, err = intField(o, keyLimitLimit, 0); err != nil || l.Limit <= 0 {
			return nil, invalid(`"limits"[%d].limit must be a positive integer`, i)
		}
		if l.Cost, err = intField(o, keyLimitCost, 1); err != nil || l.Cost < 0 {
			return nil, invalid(`"limits"[%d].cost must be a non-negative integer`, i)
		}
		p := o.Get(keyLimitPeriod)
		if p == nil {
			return nil, invalid(`"limits"[%d] needs a period`, i)
		}
		switch pv := p.Value.(type) {
		case ast.String:
			l.Period, err = time.ParseDuration(string(pv))
		case ast.Number:
			f, ok := pv.Float64()
			if !ok {
				err = fmt.Errorf("bad number")
			}
			l.Period = time.Duration(f * float64(time.Second))
		default:
			err = fmt.Errorf("wrong type")
		}
		if err != nil || l.Period <= 0 {
			return nil, invalid(`"limits"[%d].period must be a positive duration ("1m") or seconds`, i)
		}
		if l.Shadow, err = optBool(o, keyLimitShadow); err != nil {
			return nil, invalid(`"limits"[%d].shadow must be a boolean`, i)
		}
		if l.Estimated, err = optBool(o, keyLimitEstimated); err != nil {
			return nil, invalid(`"limits"[%d].estimated must be a boolean`, i)
		}
		out = append(out, l)
	}
	return out, nil
}

var (
	keyLimitName        = ast.StringTerm("name")
	keyLimitKey         = ast.StringTerm("key")
	keyLimitTenant      = ast.StringTerm("tenant")
	keyLimitPrincipal   = ast.StringTerm("principal")
	keyLimitFailureMode = ast.StringTerm("failure_mode")
	keyLimitLimit       = ast.StringTerm("limit")
	keyLimitCost        = ast.StringTerm("cost")
	keyLimitPeriod      = ast.StringTerm("period")
	keyLimitShadow      = ast.StringTerm("shadow")
	keyLimitEstimated   = ast.StringTerm("estimated")
)

func optBool(o ast.Object, key *ast.Term) (bool, error) {
	t := o.Get(key)
	if t == nil {
		return false, nil
	}
	b, ok := t.Value.(ast.Boolean)
	if !ok {
		return false, fmt.Errorf("%s: not a boolean", key)
	}
	return bool(b), nil
}

func intField(o ast.Object, k *ast.Term, def int64) (int64, error) {
	t := o.Get(k)
	if t == nil {
		return def, nil
	}
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("%s: not a number", k)
	}
	v, ok := n.Int64()
	if !ok {
		return 0, fmt.Errorf("%s: not an integer", k)
	}
	return v, nil
}

// decodeRedact reads `redact: [{detector, types, action}]`.
func decodeRedact(t *ast.Term) ([]RedactRule, error) {
	if t == nil {
		return nil, nil
	}
	var terms []*ast.Term
	switch v := t.Value.(type) {
	case *ast.Array:
		v.Foreach(func(e *ast.Term) { terms = append(terms, e) })
	case ast.Set:
		terms = v.Slice()
	default:
		return nil, invalid(`"redact" must be an array, got %s`, ast.ValueName(t.Value))
	}
	rules := make([]RedactRule, 0, len(terms))
	for i, e := range terms {
		o, ok := e.Value.(ast.Object)
		if !ok {
			return nil, invalid(`"redact"[%d] must be an object, got %s`, i, ast.ValueName(e.Value))
		}
		var r RedactRule
		var err error
		if r.Detector, err = optString(o, keyDetector); err != nil {
			return nil, err
		}
		if r.Detector == "" {
			return nil, invalid(`"redact"[%d] has no "detector"`, i)
		}
		if r.Types, err = stringList(o, keyTypes); err != nil {
			return nil, err
		}
		if r.Action, err = optString(o, keyAction); err != nil {
			return nil, err
		}
		switch r.Action {
		case "":
			r.Action = "replace"
		case "replace", "mask", "hash", "remove":
		default:
			return nil, invalid(`"redact"[%d].action must be replace, mask, hash or remove, got %q`, i, r.Action)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// decodeRemoveTools reads "remove_tools": an object of tool name → reason,
// or an array or set of names (reason "tool_not_allowed").
func decodeRemoveTools(t *ast.Term) (map[string]string, error) {
	if t == nil {
		return nil, nil
	}
	out := map[string]string{}
	switch v := t.Value.(type) {
	case ast.Object:
		err := v.Iter(func(k, r *ast.Term) error {
			name, ok := k.Value.(ast.String)
			reason, ok2 := r.Value.(ast.String)
			if !ok || !ok2 {
				return invalid(`"remove_tools" must map tool names to reason strings`)
			}
			out[string(name)] = string(reason)
			return nil
		})
		if err != nil {
			return nil, err
		}
	case *ast.Array, ast.Set:
		names, err := stringList(ast.NewObject([2]*ast.Term{keyRemoveTools, t}), keyRemoveTools)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			out[n] = "tool_not_allowed"
		}
	default:
		return nil, invalid(`"remove_tools" must be an object or an array, got %s`, ast.ValueName(t.Value))
	}
	return out, nil
}
