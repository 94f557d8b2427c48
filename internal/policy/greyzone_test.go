package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/policies"
)

// TestDefaultGreyZone loads the embedded policy and checks its grey zone
// against the documented defaults: every range, domain and value in it is
// honoured, every default value is one the detectors really find (so the
// entry does something), and real-looking values are not exempt.
func TestDefaultGreyZone(t *testing.T) {
	t.Parallel()
	e, err := New(context.Background(), Config{Embedded: policies.FS, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	gz := e.GreyZone()
	if gz.Empty() {
		t.Fatal("the default policy has no grey zone")
	}
	for _, tt := range []struct {
		ip   string
		want bool
	}{
		{"0.0.0.0", true}, {"127.0.0.1", true}, {"10.0.0.5", true}, {"172.20.1.1", true}, {"192.168.1.10", true},
		{"169.254.169.254", true}, {"192.0.2.10", true}, {"198.51.100.1", true}, {"203.0.113.9", true},
		{"::1", true}, {"fe80::1", true}, {"fd00::1", true}, {"2001:db8::1", true}, {"3fff::1", true},
		{"8.8.8.8", false}, {"81.2.69.160", false}, {"100.64.0.1", false}, {"2a00:1450::1", false},
	} {
		if got := gz.ContainsIP(tt.ip); got != tt.want {
			t.Errorf("ContainsIP(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
	for _, tt := range []struct {
		domain string
		want   bool
	}{
		{"example.com", true}, {"example.org", true}, {"example.net", true}, {"corp.example", true}, {"shop.test", true},
		{"x.invalid", true}, {"app.localhost", true}, {"gmail.com", false}, {"example.co.uk", false},
	} {
		if got := gz.ContainsDomain(tt.domain); got != tt.want {
			t.Errorf("ContainsDomain(%s) = %v, want %v", tt.domain, got, tt.want)
		}
	}

	// Every default value is found by the detectors without the grey zone
	// and not with it.
	plain, err := detect.New(detect.Config{DisableInjection: true})
	if err != nil {
		t.Fatal(err)
	}
	grey, err := detect.New(detect.Config{DisableInjection: true, GreyZone: e})
	if err != nil {
		t.Fatal(err)
	}
	values := defaultValues(t)
	if len(values) < 20 {
		t.Fatalf("only %d default values", len(values))
	}
	for _, v := range values {
		text := "value: " + v + " (documentation)"
		if n := len(plain.Scan(text).Findings); n == 0 {
			t.Errorf("default value #%d (%.8s...) is not found by the detectors: the entry does nothing", slicesIndex(values, v), v)
		}
		if fs := grey.Scan(text).Findings; len(fs) != 0 {
			t.Errorf("default value #%d (%.8s...) still found with the grey zone: %v", slicesIndex(values, v), v, fs)
		}
	}
	for _, text := range []string{"card 4556 7375 8689 9855", "IBAN GB33 BUKB 2020 1555 5555 55", "mail jane.doe@gmail.com", "host 81.2.69.160"} {
		if len(grey.Scan(text).Findings) == 0 {
			t.Errorf("%q: nothing found with the default grey zone", text)
		}
	}
}

func slicesIndex(vs []string, v string) int {
	for i, x := range vs {
		if x == v {
			return i
		}
	}
	return -1
}

// defaultValues reads the values list of the embedded data.yaml through the
// same loader the engine uses.
func defaultValues(t *testing.T) []string {
	t.Helper()
	snap, err := readFS(policies.FS, ast.RegoV1)
	if err != nil {
		t.Fatal(err)
	}
	var v any = snap.data
	for _, k := range append(GreyZonePath, "values") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("data has no %s", k)
		}
		v = m[k]
	}
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestGreyZoneReload: the grey zone follows the policy in force, and a
// malformed one fails the load without replacing the last good policy.
func TestGreyZoneReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": allowGet})
	ctx := context.Background()
	e, err := New(ctx, Config{Dir: dir, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !e.GreyZone().Empty() {
		t.Fatal("a policy without the data has a grey zone")
	}
	good := "redaction:\n  never_redact:\n    ip_ranges: [10.0.0.0/8]\n    email_domains: [example.com]\n"
	writeFiles(t, dir, map[string]string{"bulwark/data.yaml": good})
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if gz := e.GreyZone(); !gz.ContainsIP("10.1.2.3") || gz.ContainsIP("192.168.0.1") {
		t.Fatal("reloaded grey zone not in force")
	}
	rev := e.Revision()
	secret := "sk_live_51HnotEchoedInErrors"
	for name, bad := range map[string]string{
		"bad cidr":      "redaction:\n  never_redact:\n    ip_ranges: [10.0.0.0/40]\n",
		"not a list":    "redaction:\n  never_redact:\n    ip_ranges: 10.0.0.0/8\n",
		"not a string":  "redaction:\n  never_redact:\n    values: [42]\n",
		"unknown key":   "redaction:\n  never_redact:\n    ip_range: [10.0.0.0/8]\n",
		"not an object": "redaction:\n  never_redact: [10.0.0.0/8]\n",
		"short value":   "redaction:\n  never_redact:\n    values: [\"" + secret[:5] + "\"]\n",
		"padded value":  "redaction:\n  never_redact:\n    values: [\" " + secret + "\"]\n",
	} {
		writeFiles(t, dir, map[string]string{"bulwark/data.yaml": bad})
		err := e.Reload(ctx)
		if err == nil || !strings.Contains(err.Error(), "never_redact") {
			t.Errorf("%s: reload err = %v, want one naming never_redact", name, err)
			continue
		}
		if strings.Contains(err.Error(), secret[:5]) {
			t.Errorf("%s: the error echoes the value: %v", name, err)
		}
		if e.Revision() != rev || !e.GreyZone().ContainsIP("10.1.2.3") {
			t.Errorf("%s: a malformed grey zone replaced the last good policy", name)
		}
	}
}

// TestGreyZoneReloadWhileScanning: scans running while the policy reloads
// see either grey zone, never a torn one (run with -race).
func TestGreyZoneReloadWhileScanning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	zone := func(r string) map[string]string {
		return map[string]string{"p.rego": allowGet, "bulwark/data.yaml": "redaction:\n  never_redact:\n    ip_ranges: [" + r + "]\n"}
	}
	writeFiles(t, dir, zone("10.0.0.0/8"))
	ctx := context.Background()
	e, err := New(ctx, Config{Dir: dir, Query: "bulwark/decision"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := detect.New(detect.Config{DisableInjection: true, GreyZone: e})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	errs := make(chan string, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					errs <- ""
					return
				default:
				}
				// Exactly one of the two addresses is in either grey zone.
				if n := len(sc.Scan("from 10.1.2.3 to 192.168.7.7").Findings); n != 1 {
					errs <- "a scan saw " + string(rune('0'+n)) + " findings, want 1"
					return
				}
			}
		}()
	}
	for i := range 20 {
		r := "10.0.0.0/8"
		if i%2 == 0 {
			r = "192.168.0.0/16"
		}
		writeFiles(t, dir, zone(r))
		if err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 4 {
		if msg := <-errs; msg != "" {
			t.Error(msg)
		}
	}
}
