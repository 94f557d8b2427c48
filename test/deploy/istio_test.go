package deploy

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// Istio's types, for the fields deploy/istio uses (istio.io/api is not a
// dependency); decoded strictly like the Kubernetes manifests.

// meshValues is istiod's Helm values as meshconfig.yaml writes them.
type meshValues struct {
	MeshConfig struct {
		ExtensionProviders []struct {
			Name              string `yaml:"name"`
			EnvoyExtAuthzGrpc *struct {
				Service                   string `yaml:"service"`
				Port                      int    `yaml:"port"`
				Timeout                   string `yaml:"timeout"`
				FailOpen                  *bool  `yaml:"failOpen"`
				StatusOnError             string `yaml:"statusOnError"`
				IncludeRequestBodyInCheck *struct {
					MaxRequestBytes     int  `yaml:"maxRequestBytes"`
					AllowPartialMessage bool `yaml:"allowPartialMessage"`
					PackAsBytes         bool `yaml:"packAsBytes"`
				} `yaml:"includeRequestBodyInCheck"`
			} `yaml:"envoyExtAuthzGrpc"`
		} `yaml:"extensionProviders"`
	} `yaml:"meshConfig"`
}

type workloadSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type authorizationPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Selector *workloadSelector `yaml:"selector"`
		Action   string            `yaml:"action"`
		Provider *struct {
			Name string `yaml:"name"`
		} `yaml:"provider"`
		Rules []struct {
			From []struct {
				Source struct {
					Principals []string `yaml:"principals"`
					Namespaces []string `yaml:"namespaces"`
				} `yaml:"source"`
			} `yaml:"from"`
			To []struct {
				Operation struct {
					Paths    []string `yaml:"paths"`
					NotPaths []string `yaml:"notPaths"`
					Methods  []string `yaml:"methods"`
					Ports    []string `yaml:"ports"`
				} `yaml:"operation"`
			} `yaml:"to"`
		} `yaml:"rules"`
	} `yaml:"spec"`
}

type peerAuthentication struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Selector *workloadSelector `yaml:"selector"`
		Mtls     *struct {
			Mode string `yaml:"mode"`
		} `yaml:"mtls"`
		PortLevelMtls map[int]struct {
			Mode string `yaml:"mode"`
		} `yaml:"portLevelMtls"`
	} `yaml:"spec"`
}

type envoyFilter struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		WorkloadSelector *struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"workloadSelector"`
		ConfigPatches []struct {
			ApplyTo string `yaml:"applyTo"`
			Match   struct {
				Context  string `yaml:"context"`
				Listener *struct {
					FilterChain struct {
						Filter struct {
							Name      string `yaml:"name"`
							SubFilter struct {
								Name string `yaml:"name"`
							} `yaml:"subFilter"`
						} `yaml:"filter"`
					} `yaml:"filterChain"`
				} `yaml:"listener"`
				RouteConfiguration *struct {
					Vhost struct {
						Name string `yaml:"name"`
					} `yaml:"vhost"`
				} `yaml:"routeConfiguration"`
			} `yaml:"match"`
			Patch struct {
				Operation string `yaml:"operation"`
				// Value is Envoy configuration; it is checked against
				// Envoy's protos below, not against a Go struct.
				Value map[string]any `yaml:"value"`
			} `yaml:"patch"`
		} `yaml:"configPatches"`
	} `yaml:"spec"`
}

var istioKinds = map[string]func() any{
	"security.istio.io/v1 AuthorizationPolicy": func() any { return new(authorizationPolicy) },
	"security.istio.io/v1 PeerAuthentication":  func() any { return new(peerAuthentication) },
	"networking.istio.io/v1alpha3 EnvoyFilter": func() any { return new(envoyFilter) },
}

const istioDir = "../../deploy/istio"

// bulwarkProvider is the extension provider name the mesh config registers
// and the AuthorizationPolicy names.
const bulwarkProvider = "bulwark"

func loadIstio(t *testing.T) []document {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(istioDir, "*.yaml"))
	var out []document
	for _, p := range paths {
		if filepath.Base(p) == "meshconfig.yaml" {
			continue
		}
		docs, err := decodeManifests(filepath.Base(p), readFile(t, p), istioKinds)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, docs...)
	}
	return out
}

// TestIstioMeshConfig checks the ext_authz provider against the Service it
// points at and the settings Bulwark relies on.
func TestIstioMeshConfig(t *testing.T) {
	t.Parallel()
	var mv meshValues
	if err := decodeStrict(readFile(t, filepath.Join(istioDir, "meshconfig.yaml")), &mv); err != nil {
		t.Fatalf("meshconfig.yaml: %v", err)
	}
	var found int
	for _, p := range mv.MeshConfig.ExtensionProviders {
		if p.Name != bulwarkProvider {
			continue
		}
		found++
		g := p.EnvoyExtAuthzGrpc
		if g == nil {
			t.Fatal("provider bulwark is not envoyExtAuthzGrpc")
		}
		s := loadK8s(t).service(t, "bulwark")
		if want := fmt.Sprintf("%s.%s.svc.cluster.local", s.Metadata.Name, s.Metadata.Namespace); g.Service != want {
			t.Errorf("service = %q, want %q (deploy/kubernetes/service.yaml)", g.Service, want)
		}
		if g.Port != 9191 {
			t.Errorf("port = %d, want 9191", g.Port)
		}
		timeout, err := time.ParseDuration(g.Timeout)
		if err != nil || timeout != 250*time.Millisecond {
			t.Errorf("timeout = %q, want 250ms (Istio's default is 600s)", g.Timeout)
		}
		if g.FailOpen == nil || *g.FailOpen {
			t.Error("failOpen must be set to false")
		}
		if g.StatusOnError != "503" {
			t.Errorf("statusOnError = %q, want \"503\"", g.StatusOnError)
		}
		b := g.IncludeRequestBodyInCheck
		if b == nil || b.MaxRequestBytes != 1<<20 || !b.AllowPartialMessage || !b.PackAsBytes {
			t.Errorf("includeRequestBodyInCheck = %+v, want 1 MiB, partial, as bytes", b)
		}
	}
	if found != 1 {
		t.Fatalf("extension providers named %q: %d, want 1", bulwarkProvider, found)
	}
}

// TestIstioPolicies checks the CUSTOM AuthorizationPolicy, the DENY policy
// that keeps other paths from bypassing Bulwark, and the PeerAuthentication.
func TestIstioPolicies(t *testing.T) {
	t.Parallel()
	docs := loadIstio(t)
	var custom, deny, callers *authorizationPolicy
	for _, ap := range all[authorizationPolicy](docs) {
		switch ap.Spec.Action {
		case "CUSTOM":
			custom = ap
		case "DENY":
			deny = ap
		case "ALLOW":
			callers = ap
		}
	}
	checkBulwarkCallers(t, callers, custom)
	if custom == nil {
		t.Fatal("no CUSTOM AuthorizationPolicy")
	}
	if custom.Spec.Provider == nil || custom.Spec.Provider.Name != bulwarkProvider {
		t.Errorf("CUSTOM provider = %+v, want %q", custom.Spec.Provider, bulwarkProvider)
	}
	var paths []string
	for _, r := range custom.Spec.Rules {
		for _, to := range r.To {
			paths = append(paths, to.Operation.Paths...)
		}
	}
	if !slices.Contains(paths, "/v1/*") {
		t.Errorf("CUSTOM rules cover paths %v, want the LLM routes /v1/*", paths)
	}
	// ext_proc and the rate_limit filter run where ext_authz does.
	for _, ef := range all[envoyFilter](docs) {
		if custom.Spec.Selector == nil || ef.Spec.WorkloadSelector == nil ||
			!sameLabels(custom.Spec.Selector.MatchLabels, ef.Spec.WorkloadSelector.Labels) || custom.Metadata.Namespace != ef.Metadata.Namespace {
			t.Errorf("the CUSTOM policy and the EnvoyFilter %s must select the same workload in the same namespace", ef.Metadata.Name)
		}
	}
	if deny == nil {
		t.Fatal("no DENY AuthorizationPolicy: paths outside the CUSTOM rules would skip Bulwark")
	}
	var notPaths []string
	for _, r := range deny.Spec.Rules {
		for _, to := range r.To {
			notPaths = append(notPaths, to.Operation.NotPaths...)
		}
	}
	for _, p := range paths {
		if !slices.Contains(notPaths, p) {
			t.Errorf("DENY policy's notPaths %v lack %s", notPaths, p)
		}
	}
	if deny.Spec.Selector == nil || !sameLabels(deny.Spec.Selector.MatchLabels, custom.Spec.Selector.MatchLabels) {
		t.Error("the DENY policy must select the CUSTOM policy's workload")
	}

	pa := only[peerAuthentication](t, docs, "PeerAuthentication")
	d := loadK8s(t).deployment(t, "bulwark")
	if pa.Metadata.Namespace != d.Metadata.Namespace || pa.Spec.Selector == nil ||
		!subset(pa.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Error("PeerAuthentication must select the bulwark pods")
	}
	if pa.Spec.Mtls == nil || pa.Spec.Mtls.Mode != "STRICT" {
		t.Error("mTLS must be STRICT for Bulwark's gRPC port")
	}
	if m, ok := pa.Spec.PortLevelMtls[9191]; ok && m.Mode != "STRICT" {
		t.Errorf("port 9191 mTLS = %s, want STRICT", m.Mode)
	}
}

// checkBulwarkCallers: an ALLOW policy on the bulwark pods admits Envoy's
// port 9191 only from named proxy identities, among them the workload the
// CUSTOM policy protects (its proxy calls ext_authz and ext_proc), and the
// API port 9193 only from named identities; no rule opens a port to
// everyone except the admin port.
func checkBulwarkCallers(t *testing.T, callers, custom *authorizationPolicy) {
	t.Helper()
	if callers == nil {
		t.Fatal("no ALLOW AuthorizationPolicy on Bulwark: any mesh workload could call ext_authz and ext_proc with attributes of its choosing")
	}
	d := loadK8s(t).deployment(t, "bulwark")
	if callers.Metadata.Namespace != d.Metadata.Namespace || callers.Spec.Selector == nil ||
		!subset(callers.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Error("the ALLOW policy must select the bulwark pods")
	}
	from := map[string][]string{}
	for _, r := range callers.Spec.Rules {
		var principals []string
		for _, f := range r.From {
			principals = append(principals, f.Source.Principals...)
			if len(f.Source.Namespaces) > 0 {
				t.Errorf("rule admits whole namespaces %v: name the service accounts", f.Source.Namespaces)
			}
		}
		for _, to := range r.To {
			if len(to.Operation.Ports) == 0 {
				t.Error("a rule without ports admits every port")
			}
			for _, p := range to.Operation.Ports {
				if len(principals) == 0 && p != "9192" {
					t.Errorf("port %s is open to every caller", p)
				}
				from[p] = append(from[p], principals...)
			}
		}
	}
	for _, p := range []string{"9191", "9193"} {
		if len(from[p]) == 0 {
			t.Errorf("no caller admitted to port %s", p)
		}
		for _, pr := range from[p] {
			if pr == "*" || strings.HasSuffix(pr, "/*") {
				t.Errorf("port %s admits %q: name the service accounts", p, pr)
			}
		}
	}
	ns := custom.Metadata.Namespace
	if !slices.ContainsFunc(from["9191"], func(p string) bool { return strings.HasPrefix(p, "cluster.local/ns/"+ns+"/sa/") }) {
		t.Errorf("port 9191 admits %v, not the proxy of the workload the CUSTOM policy protects (namespace %s)", from["9191"], ns)
	}
}

func sameLabels(a, b map[string]string) bool {
	if len(a) == 0 || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestIstioEnvoyFilter parses the patch's value into Envoy's HttpFilter
// and ExternalProcessor protos (unknown fields are errors), validates them,
// and pins the same ext_proc settings as the Envoy configs.
func TestIstioEnvoyFilter(t *testing.T) {
	t.Parallel()
	ef := istioEnvoyFilter(t, "bulwark-ext-proc")
	if len(ef.Spec.ConfigPatches) != 1 {
		t.Fatalf("configPatches = %d, want 1", len(ef.Spec.ConfigPatches))
	}
	cp := ef.Spec.ConfigPatches[0]
	if cp.ApplyTo != "HTTP_FILTER" || cp.Patch.Operation != "INSERT_BEFORE" {
		t.Errorf("applyTo %s, operation %s; want HTTP_FILTER, INSERT_BEFORE", cp.ApplyTo, cp.Patch.Operation)
	}
	if cp.Match.Context != "SIDECAR_INBOUND" && cp.Match.Context != "GATEWAY" {
		t.Errorf("context = %s, want SIDECAR_INBOUND or GATEWAY (where Istio runs the CUSTOM ext_authz)", cp.Match.Context)
	}
	if cp.Match.Listener == nil {
		t.Fatal("no listener match")
	}
	f := cp.Match.Listener.FilterChain.Filter
	if f.Name != hcmFilter || f.SubFilter.Name != routerFilter {
		t.Errorf("match %s / %s, want %s / %s: ext_proc goes right before the router, after ext_authz",
			f.Name, f.SubFilter.Name, hcmFilter, routerFilter)
	}
	js, err := json.Marshal(cp.Patch.Value)
	if err != nil {
		t.Fatal(err)
	}
	var hf hcmv3.HttpFilter
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &hf); err != nil {
		t.Fatalf("patch value is not an Envoy HttpFilter: %v", err)
	}
	if err := hf.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if hf.GetName() != extProcFilter {
		t.Errorf("filter name = %q, want %s", hf.GetName(), extProcFilter)
	}
	var ep extprocv3.ExternalProcessor
	if err := hf.GetTypedConfig().UnmarshalTo(&ep); err != nil {
		t.Fatalf("typed_config is not an ExternalProcessor: %v", err)
	}
	if err := ep.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	s := loadK8s(t).service(t, "bulwark")
	cluster := fmt.Sprintf("outbound|9191||%s.%s.svc.cluster.local", s.Metadata.Name, s.Metadata.Namespace)
	checkExtProc(t, &ep, cluster)
}

// istioEnvoyFilter returns the EnvoyFilter of deploy/istio named name.
func istioEnvoyFilter(t *testing.T, name string) *envoyFilter {
	t.Helper()
	for _, ef := range all[envoyFilter](loadIstio(t)) {
		if ef.Metadata.Name == name {
			return ef
		}
	}
	t.Fatalf("no EnvoyFilter %q", name)
	return nil
}
