package pipeline

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/audit"
	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/labelcap"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

const limitsPolicy = `package t
import rego.v1

decision := {"allowed": true, "reason": "ok", "limits": [{"name": "rpm", "key": "{a}:x", "limit": 2, "period": "1h"}]} if input.case == "two"
decision := {"allowed": true, "limits": [{"name": "a", "key": "{a}", "limit": 5, "period": "1h"}, {"name": "b", "key": "{b}", "limit": 5, "period": "1h"}]} if input.case == "split_tags"
decision := {"allowed": true, "limits": [{"name": "s", "key": "s", "limit": 1, "period": "1h", "shadow": true}]} if input.case == "shadow"
decision := {"allowed": false, "reason": "nope", "limits": [{"name": "d", "key": "d", "limit": 1, "period": "1h"}]} if input.case == "deny"
decision := {"allowed": true, "reason": input.principal.kind} if input.case == "principal"
`

// newPipeline builds a pipeline over limitsPolicy; d's other stages are
// used as given.
func newPipeline(t *testing.T, cfg Config, withLimiter bool, d Deps) *Pipeline {
	t.Helper()
	e, err := policy.New(context.Background(), policy.Config{
		Embedded: fstest.MapFS{"p.rego": {Data: []byte(limitsPolicy)}}, Query: "t/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Eval = e
	if withLimiter {
		l, err := ratelimit.New(ratelimit.Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		d.Limiter = l
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	p, err := New(cfg, d, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func decide(t *testing.T, p *Pipeline, c string) Outcome {
	t.Helper()
	out, err := p.Decide(context.Background(), Request{Phase: PhaseRequestHeaders,
		Input: ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm(c)})})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLimits(t *testing.T) {
	p := newPipeline(t, Config{RateLimitHeaders: true}, true, Deps{})
	for i := 0; i < 2; i++ {
		out := decide(t, p, "two")
		if !out.Decision.Allowed || out.RateLimit == nil {
			t.Fatalf("request %d: %+v", i, out)
		}
		if len(out.Decision.ResponseHeadersToAdd) == 0 {
			t.Fatalf("request %d: no RateLimit headers on allow", i)
		}
	}
	out := decide(t, p, "two")
	if out.Decision.Allowed || out.Decision.HTTPStatus != 429 || out.Reason != "rate_limited" {
		t.Fatalf("third request: %+v", out)
	}
	var retry bool
	for _, h := range out.Decision.Headers {
		retry = retry || (h.Key == "retry-after" && h.Value != "")
	}
	if !retry {
		t.Fatalf("429 without retry-after: %+v", out.Decision.Headers)
	}

	cases := []struct {
		name, c, reason string
		status          int
		allowed         bool
	}{
		{"keys in different hash tags", "split_tags", "invalid_limits", 500, false},
		{"shadow never denies", "shadow", "", 0, true},
		{"a deny carries no limit check", "deny", "nope", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 3; i++ {
				out := decide(t, p, tc.c)
				if out.Decision.Allowed != tc.allowed || (tc.reason != "" && out.Reason != tc.reason) ||
					(tc.status != 0 && out.Decision.HTTPStatus != tc.status) {
					t.Fatalf("attempt %d: %+v", i, out)
				}
				if tc.c == "deny" && out.RateLimit != nil {
					t.Fatal("a denied request was charged")
				}
			}
		})
	}
}

func TestLimitsWithoutLimiterDeny(t *testing.T) {
	out := decide(t, newPipeline(t, Config{}, false, Deps{}), "two")
	if out.Decision.Allowed || out.Reason != "rate_limiter_not_configured" {
		t.Fatalf("limits silently ignored: %+v", out)
	}
}

func TestDryRunOverridesLimitDenial(t *testing.T) {
	p := newPipeline(t, Config{DryRun: true}, true, Deps{})
	for i := 0; i < 3; i++ {
		decide(t, p, "two")
	}
	out := decide(t, p, "two")
	if !out.Decision.Allowed || !out.DryRunDenied || out.Reason != "rate_limited" {
		t.Fatalf("dry run: %+v", out)
	}
}

func TestAnonymousWithoutAuthenticator(t *testing.T) {
	out := decide(t, newPipeline(t, Config{}, true, Deps{}), "principal")
	if out.Reason != string(identity.KindAnonymous) {
		t.Fatalf("principal kind = %q", out.Reason)
	}
}

func TestBoundedReason(t *testing.T) {
	cases := map[string]string{"": "none", "rate_limited": "rate_limited", "Has Spaces": "other",
		"x" + string(make([]byte, 60)): "other", "policy.v2-x": "policy.v2-x"}
	for in, want := range cases {
		if got := boundedReason(in); got != want {
			t.Errorf("boundedReason(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIDSourceUUIDv4(t *testing.T) {
	s := NewIDSource()
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := s.New()
		if len(id) != 36 || id[14] != '4' || !(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b') || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}

// pickyAuditor wants only decisions with reason "ok".
type pickyAuditor struct{ got []audit.Record }

func (a *pickyAuditor) Log(_ context.Context, r audit.Record) { a.got = append(a.got, r) }
func (a *pickyAuditor) WantsDecision(reason string, _ map[string]any) bool {
	return reason == "ok"
}

func TestAuditFilterSkipsUnwantedRecords(t *testing.T) {
	var a pickyAuditor
	p := newPipeline(t, Config{}, true, Deps{Auditor: &a})
	decide(t, p, "two")       // reason ok
	decide(t, p, "principal") // reason anonymous
	if len(a.got) != 1 || a.got[0].Reason != "ok" {
		t.Fatalf("audited %+v, want only the ok decision", a.got)
	}
}

// slowDetector takes longer than the decision deadline, as scanning the
// largest accepted body can.
type slowDetector struct{ d time.Duration }

func (s slowDetector) ScanContext(context.Context, string) (detect.Result, error) {
	time.Sleep(s.d)
	return detect.Result{}, nil
}

// TestDetectionOutsideDeadline: the detectors' time does not count against
// Timeout (it is bounded by body size and by Envoy's own timeouts), so a
// large prompt is decided on instead of failing with DEADLINE_EXCEEDED;
// the policy still runs under the deadline.
func TestDetectionOutsideDeadline(t *testing.T) {
	p := newPipeline(t, Config{Timeout: 20 * time.Millisecond}, true, Deps{Detector: slowDetector{60 * time.Millisecond}})
	out, err := p.Decide(context.Background(), Request{Phase: PhaseRequestBody, Text: "a long prompt",
		Input: ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm("two")})})
	if err != nil {
		t.Fatalf("decision timed out on detection time: %v", err)
	}
	if !out.Decision.Allowed || out.Signals == nil {
		t.Fatalf("outcome %+v", out)
	}
}

// Reasons come from policy: past labelcap.MaxValues distinct reasons the
// decisions counter counts "other" instead of a new series each.
func TestReasonLabelsCapped(t *testing.T) {
	e, err := policy.New(context.Background(), policy.Config{Embedded: fstest.MapFS{"p.rego": {Data: []byte(
		"package t\nimport rego.v1\ndecision := {\"allowed\": false, \"reason\": input.reason}\n")}}, Query: "t/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := New(Config{Timeout: time.Second}, Deps{Eval: e}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	const reasons = labelcap.MaxValues + 36
	for i := range reasons {
		_, err := p.Decide(context.Background(), Request{Phase: PhaseRequestHeaders,
			Input: ast.NewObject([2]*ast.Term{ast.StringTerm("reason"), ast.StringTerm("reason_" + strconv.Itoa(i))})})
		if err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "bulwark_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					values[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if len(values) != labelcap.MaxValues+1 || values[labelcap.Other] != 36 || values["reason_0"] != 1 {
		t.Fatalf("%d reason values, other=%v reason_0=%v; want %d values, other=36, reason_0=1",
			len(values), values[labelcap.Other], values["reason_0"], labelcap.MaxValues+1)
	}
}

// countingDetector is the real scanner, counting its scans and the scans
// that stopped before the end.
type countingDetector struct {
	sc             *detect.Scanner
	scans, stopped int
}

func (c *countingDetector) ScanContext(ctx context.Context, text string) (detect.Result, error) {
	c.scans++
	res, err := c.sc.ScanContext(ctx, text)
	if err != nil {
		c.stopped++
	}
	return res, err
}

func newCountingDetector(t *testing.T) *countingDetector {
	t.Helper()
	sc, err := detect.New(detect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &countingDetector{sc: sc}
}

// identityPolicy refuses anonymous callers with 401 unless input.case asks
// for a policy whose anonymous answer depends on the signals.
const identityPolicy = `package t
import rego.v1

default decision := {"allowed": false, "http_status": 401, "reason": "missing_credential"}

decision := {"allowed": true, "reason": "ok"} if input.principal.kind != "anonymous"

# Anonymous callers may send short prompts: the answer needs the signals.
decision := {"allowed": true, "reason": "short"} if {
	input.case == "signals_decide"
	input.signals.length.bytes < 100
}

decision := {"allowed": false, "http_status": 403, "reason": "no_signals"} if {
	input.case == "signals_decide"
	not input.signals
}
`

// TestScanSkippedWhenRefusedOnIdentity: the detectors run only when the
// policy's answer can depend on them. A 401 decided without input.signals
// stands; any other answer for an anonymous caller is decided again with
// the signals, so a policy that lets anonymous callers in on content keeps
// its answers.
func TestScanSkippedWhenRefusedOnIdentity(t *testing.T) {
	e, err := policy.New(context.Background(), policy.Config{
		Embedded: fstest.MapFS{"p.rego": {Data: []byte(identityPolicy)}}, Query: "t/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	user := &identity.Principal{ID: "u", Kind: identity.KindAPIKey, Roles: []string{"user"}}
	cases := []struct {
		name      string
		principal *identity.Principal
		c, text   string
		scans     int
		reason    string
		allowed   bool
	}{
		{"anonymous refused with 401 is not scanned", nil, "", "password=password=", 0, "missing_credential", false},
		{"authenticated is scanned", user, "", "password=password=", 1, "ok", true},
		{"anonymous answer depending on signals is scanned", nil, "signals_decide", "hello", 1, "short", true},
		{"anonymous long prompt gets the full policy's answer", nil, "signals_decide", string(make([]byte, 200)), 1, "missing_credential", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newCountingDetector(t)
			p, err := New(Config{Timeout: time.Second}, Deps{Eval: e, Detector: d}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Decide(context.Background(), Request{Phase: PhaseRequestBody, Text: tc.text, Principal: tc.principal,
				Input: ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm(tc.c)})})
			if err != nil {
				t.Fatal(err)
			}
			if d.scans != tc.scans || out.Reason != tc.reason || out.Decision.Allowed != tc.allowed {
				t.Errorf("scans %d, reason %q, allowed %v; want %d, %q, %v", d.scans, out.Reason, out.Decision.Allowed, tc.scans, tc.reason, tc.allowed)
			}
			if (out.Signals != nil) != (tc.scans > 0) {
				t.Errorf("signals %+v after %d scans", out.Signals, d.scans)
			}
		})
	}
}

// TestCancelledRequestStopsScanning: a request whose context has ended is
// not scanned to the end; Decide returns the context's error, which the
// doors turn into CANCELLED or DEADLINE_EXCEEDED.
func TestCancelledRequestStopsScanning(t *testing.T) {
	d := newCountingDetector(t)
	p := newPipeline(t, Config{}, true, Deps{Detector: d})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	cases := []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"deadline passed", expired, context.DeadlineExceeded},
		{"caller cancelled", cancelled, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Decide(tc.ctx, Request{Phase: PhaseRequestBody, Text: strings.Repeat("token=", 1<<16),
				Principal: &identity.Principal{ID: "u", Kind: identity.KindAPIKey},
				Input:     ast.NewObject([2]*ast.Term{ast.StringTerm("case"), ast.StringTerm("two")})})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decide = %v, want %v", err, tc.want)
			}
			if d.stopped != d.scans {
				t.Fatalf("%d of %d scans ran to the end for a request that had ended", d.scans-d.stopped, d.scans)
			}
		})
	}
}
