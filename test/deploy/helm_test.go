package deploy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"

	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/rls"
)

// The Helm chart is rendered with Helm's own Go packages (the engine `helm
// template` uses) and its output goes through the same strict decoding and
// checks as the kustomize manifests, plus `helm lint`'s rules.

const helmDir = "../../deploy/helm/bulwark"

type k8sServiceMonitor struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Selector  labelSelector `yaml:"selector"`
		Endpoints []struct {
			Port     string `yaml:"port"`
			Path     string `yaml:"path"`
			Interval string `yaml:"interval"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

func helmKinds() map[string]func() any {
	kinds := map[string]func() any{"monitoring.coreos.com/v1 ServiceMonitor": func() any { return new(k8sServiceMonitor) }}
	for k, v := range k8sKinds {
		kinds[k] = v
	}
	return kinds
}

func kubeVersion(t *testing.T) *common.KubeVersion {
	t.Helper()
	kv, err := common.ParseKubeVersion("v1.31.0")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// renderChart renders the chart as `helm template bulwark -n bulwark` with
// values, and decodes every manifest strictly.
func renderChart(t *testing.T, values map[string]any) k8sManifests {
	t.Helper()
	chrt, err := loader.Load(helmDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kubeVersion(t)
	vals, err := util.ToRenderValues(chrt, values, common.ReleaseOptions{Name: "bulwark", Namespace: "bulwark", IsInstall: true, Revision: 1}, caps)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	out, err := engine.Engine{Strict: true}.RenderWithContext(context.Background(), chrt, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	m := k8sManifests{files: map[string][]document{}}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		body := out[name]
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasSuffix(name, ".tpl") || strings.TrimSpace(body) == "" {
			continue
		}
		docs, err := decodeManifests(name, []byte(body), helmKinds())
		if err != nil {
			t.Fatalf("%v\n%s", err, body)
		}
		m.files[filepath.Base(name)] = docs
		m.all = append(m.all, docs...)
	}
	for _, d := range m.all {
		if ns := objectNamespace(d.obj); ns != "bulwark" {
			t.Errorf("%s in namespace %q, want the release's", d.Kind, ns)
		}
	}
	return m
}

// objectNamespace reads metadata.namespace of any decoded kind.
func objectNamespace(obj any) string {
	switch o := obj.(type) {
	case *k8sDeployment:
		return o.Metadata.Namespace
	case *k8sService:
		return o.Metadata.Namespace
	case *k8sConfigMap:
		return o.Metadata.Namespace
	case *k8sServiceAccount:
		return o.Metadata.Namespace
	case *k8sPDB:
		return o.Metadata.Namespace
	case *k8sHPA:
		return o.Metadata.Namespace
	case *k8sNetworkPolicy:
		return o.Metadata.Namespace
	case *k8sServiceMonitor:
		return o.Metadata.Namespace
	}
	return "bulwark"
}

func kinds(m k8sManifests) []string {
	var ks []string
	for _, d := range m.all {
		ks = append(ks, d.Kind)
	}
	slices.Sort(ks)
	return ks
}

// nonDefault turns on everything the defaults leave off, and off what they
// turn on: the repository's own policies and an envoy/ratelimit config in
// ConfigMaps, TLS with mTLS, the bundled Redis, the ServiceMonitor, a fixed
// replica count without HPA.
func nonDefault(t *testing.T) map[string]any {
	t.Helper()
	files := map[string]any{}
	paths, _ := filepath.Glob("../../policies/bulwark/*")
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.rego") {
			continue
		}
		files[filepath.Base(p)] = string(readFile(t, p))
	}
	if len(files) == 0 {
		t.Fatal("no policy files")
	}
	return map[string]any{
		"replicaCount": 3,
		"autoscaling":  map[string]any{"enabled": false},
		"policies":     map[string]any{"files": files},
		"rls": map[string]any{"responseHeaders": true, "files": map[string]any{
			"gateway.yaml": "domain: gateway\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: minute, requests_per_unit: 60}\n",
		}},
		"tls":            map[string]any{"secretName": "bulwark-tls", "clientCASecret": "envoy-ca", "clientSANs": []any{"spiffe://cluster.local/ns/llm-gateway/sa/envoy"}},
		"redis":          map[string]any{"bundled": map[string]any{"enabled": true}},
		"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
		"otel":           map[string]any{"endpoint": "http://otel-collector.observability.svc.cluster.local:4317"},
	}
}

// TestHelmLint runs helm lint's rules (Chart.yaml, values, templates) with
// the default and the non-default values.
func TestHelmLint(t *testing.T) {
	t.Parallel()
	for name, vals := range map[string]map[string]any{"default": nil, "non-default": nonDefault(t)} {
		res := lint.RunAll(helmDir, vals, "bulwark", lint.WithKubeVersion(kubeVersion(t)))
		for _, msg := range res.Messages {
			if msg.Severity >= support.WarningSev {
				t.Errorf("%s values: %s", name, msg)
			}
		}
	}
}

// TestHelmDefault: the default values give the same hardened Deployment as
// the kustomize manifests, with a Service, HPA, PDB and NetworkPolicy that
// all select it, and a pod environment Bulwark starts with.
func TestHelmDefault(t *testing.T) {
	t.Parallel()
	m := renderChart(t, nil)
	if got, want := kinds(m), []string{"Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount"}; !slices.Equal(got, want) {
		t.Fatalf("kinds %v, want %v", got, want)
	}
	d := m.deployment(t, "bulwark")
	checkHelmPod(t, m, d)
	if d.Spec.Replicas != nil {
		t.Errorf("replicas %d set while the HPA scales the Deployment (every upgrade would reset it)", *d.Spec.Replicas)
	}
	cfg := loadPodConfig(t, m, d)
	if cfg.RedisURL == "" || cfg.RLSConfig != "" || cfg.PolicyDir != "" || cfg.TLSCert != "" {
		t.Errorf("defaults: redis %q, rls %q, policy dir %q, tls %q", cfg.RedisURL, cfg.RLSConfig, cfg.PolicyDir, cfg.TLSCert)
	}
	hpa := only[k8sHPA](t, m.all, "HorizontalPodAutoscaler")
	if hpa.Spec.ScaleTargetRef.Name != d.Metadata.Name || hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		t.Errorf("HPA %+v", hpa.Spec)
	}
	np := m.networkPolicy(t, "bulwark")
	ports := map[int]bool{}
	for _, r := range np.Spec.Ingress {
		if len(r.From) == 0 {
			t.Errorf("an ingress rule admits everyone: %+v", r)
		}
		for _, p := range r.Ports {
			ports[portNumber(p.Port, nil)] = true
		}
	}
	if !ports[9191] || !ports[9193] || !ports[9192] || len(ports) != 3 {
		t.Errorf("NetworkPolicy ingress ports %v, want exactly 9191, 9192, 9193", ports)
	}
}

// TestHelmNonDefault: policies and an envoy/ratelimit config in ConfigMaps
// load in Bulwark's own loaders as mounted; TLS, mTLS, the bundled Redis and
// the ServiceMonitor render and point at the right objects.
func TestHelmNonDefault(t *testing.T) {
	t.Parallel()
	m := renderChart(t, nonDefault(t))
	want := []string{"ConfigMap", "ConfigMap", "Deployment", "Deployment", "NetworkPolicy", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service", "ServiceAccount", "ServiceMonitor"}
	if got := kinds(m); !slices.Equal(got, want) {
		t.Fatalf("kinds %v, want %v", got, want)
	}
	d := m.deployment(t, "bulwark")
	checkHelmPod(t, m, d)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	cfg := loadPodConfig(t, m, d)
	if cfg.TLSCert == "" || cfg.TLSClientCA == "" || len(cfg.TLSClientSANs) != 1 || !cfg.RLSResponseHeaders {
		t.Errorf("tls %q, client CA %q, SANs %v, rls headers %v", cfg.TLSCert, cfg.TLSClientCA, cfg.TLSClientSANs, cfg.RLSResponseHeaders)
	}
	if _, err := policy.New(context.Background(), policy.Config{Dir: cfg.PolicyDir, Query: cfg.PolicyQuery}, nil, nil); err != nil {
		t.Errorf("the policies ConfigMap does not load as mounted: %v", err)
	}
	rcfg, err := rls.Load(cfg.RLSConfig)
	if err != nil {
		t.Fatalf("the rls ConfigMap does not load as mounted: %v", err)
	}
	if got := rcfg.Domains(); !slices.Equal(got, []string{"gateway"}) {
		t.Errorf("rls domains %v", got)
	}

	redis := m.deployment(t, "bulwark-redis")
	checkPodSecurity(t, "bulwark-redis", redis.Spec.Template.Spec, 999)
	rs := m.service(t, "bulwark-redis")
	if !subset(rs.Spec.Selector, redis.Spec.Template.Metadata.Labels) || subset(rs.Spec.Selector, d.Spec.Template.Metadata.Labels) {
		t.Errorf("redis Service selector %v", rs.Spec.Selector)
	}
	rnp := m.networkPolicy(t, "bulwark-redis")
	if len(rnp.Spec.Ingress) != 1 || len(rnp.Spec.Ingress[0].From) != 1 || !subset(rnp.Spec.Ingress[0].From[0].PodSelector.MatchLabels, d.Spec.Template.Metadata.Labels) {
		t.Errorf("redis NetworkPolicy must admit only bulwark pods: %+v", rnp.Spec.Ingress)
	}

	sm := only[k8sServiceMonitor](t, m.all, "ServiceMonitor")
	svc := m.service(t, "bulwark")
	if !subset(sm.Spec.Selector.MatchLabels, svc.Metadata.Labels) || subset(sm.Spec.Selector.MatchLabels, rs.Metadata.Labels) {
		t.Errorf("ServiceMonitor selects %v; the bulwark Service has %v", sm.Spec.Selector.MatchLabels, svc.Metadata.Labels)
	}
	var admin bool
	for _, p := range svc.Spec.Ports {
		for _, e := range sm.Spec.Endpoints {
			if e.Port == p.Name && p.Port == 9192 && e.Path == "/metrics" {
				admin = true
			}
		}
	}
	if !admin || sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor must scrape the admin port's /metrics and carry its labels: %+v", sm)
	}
}

// checkHelmPod holds the chart's Deployment to the kustomize manifests'
// pod rules.
func checkHelmPod(t *testing.T, m k8sManifests, d *k8sDeployment) {
	t.Helper()
	podLabels := d.Spec.Template.Metadata.Labels
	if !subset(d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("selector %v does not select the pod template's labels %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	ps := d.Spec.Template.Spec
	checkPodSecurity(t, "bulwark", ps, 65532)
	if ps.EnableServiceLinks == nil || *ps.EnableServiceLinks {
		t.Error("enableServiceLinks must be false")
	}
	c := ps.Containers[0]
	checkImagePinned(t, c.Image)
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	checkHTTPProbe(t, "readinessProbe", c.ReadinessProbe, "/readyz", ports)
	checkHTTPProbe(t, "livenessProbe", c.LivenessProbe, "/healthz", ports)
	for _, e := range []string{"BULWARK_REDIS_URL"} {
		if ev := findEnv(c.Env, e); ev != nil && (ev.ValueFrom == nil || ev.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s must come from a Secret", e)
		}
	}
	s := m.service(t, "bulwark")
	if !subset(s.Spec.Selector, podLabels) {
		t.Errorf("Service selector %v does not select the pods %v", s.Spec.Selector, podLabels)
	}
	for _, p := range s.Spec.Ports {
		if tp := portNumber(p.TargetPort, ports); tp != p.Port {
			t.Errorf("Service port %d targets %v (%d)", p.Port, p.TargetPort, tp)
		}
	}
	if pdb := only[k8sPDB](t, m.all, "PodDisruptionBudget"); !subset(pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PDB selector %v does not select the pods", pdb.Spec.Selector.MatchLabels)
	}
	np := m.networkPolicy(t, "bulwark")
	if !subset(np.Spec.PodSelector.MatchLabels, podLabels) {
		t.Errorf("NetworkPolicy selects %v, not the pods", np.Spec.PodSelector.MatchLabels)
	}
	if _, err := os.Stat(helmDir); err != nil {
		t.Fatal(err)
	}
}
