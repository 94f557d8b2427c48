package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/config"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/policies"
)

// The Kubernetes types below mirror k8s.io/api for exactly the fields the
// manifests use (k8s.io/api is not a dependency of this module). Decoding
// is strict, so a field the manifests use must be declared here, spelt as
// the API spells it; a field that is misspelt in a manifest fails to decode.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions"`
}

type k8sNamespace struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
}

type k8sServiceAccount struct {
	typeMeta                     `yaml:",inline"`
	Metadata                     objectMeta `yaml:"metadata"`
	AutomountServiceAccountToken *bool      `yaml:"automountServiceAccountToken"`
}

type k8sConfigMap struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta        `yaml:"metadata"`
	Data     map[string]string `yaml:"data"`
}

type k8sService struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Type     string            `yaml:"type"`
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name        string `yaml:"name"`
			Port        int    `yaml:"port"`
			TargetPort  any    `yaml:"targetPort"`
			Protocol    string `yaml:"protocol"`
			AppProtocol string `yaml:"appProtocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type podSecurityContext struct {
	RunAsNonRoot   *bool           `yaml:"runAsNonRoot"`
	RunAsUser      *int64          `yaml:"runAsUser"`
	RunAsGroup     *int64          `yaml:"runAsGroup"`
	FSGroup        *int64          `yaml:"fsGroup"`
	SeccompProfile *seccompProfile `yaml:"seccompProfile"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	RunAsGroup               *int64 `yaml:"runAsGroup"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Privileged               *bool  `yaml:"privileged"`
	Capabilities             *struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile *seccompProfile `yaml:"seccompProfile"`
}

type keyRef struct {
	Name     string `yaml:"name"`
	Key      string `yaml:"key"`
	Optional *bool  `yaml:"optional"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
		ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path   string `yaml:"path"`
		Port   any    `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port any `yaml:"port"`
	} `yaml:"tcpSocket"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
	SuccessThreshold    int `yaml:"successThreshold"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Ports           []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	Env       []envVar `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *securityContext `yaml:"securityContext"`
	ReadinessProbe  *probe           `yaml:"readinessProbe"`
	LivenessProbe   *probe           `yaml:"livenessProbe"`
	Lifecycle       *struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type podSpec struct {
	ServiceAccountName            string              `yaml:"serviceAccountName"`
	AutomountServiceAccountToken  *bool               `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool               `yaml:"enableServiceLinks"`
	TerminationGracePeriodSeconds *int64              `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               *podSecurityContext `yaml:"securityContext"`
	TopologySpreadConstraints     []struct {
		MaxSkew           int           `yaml:"maxSkew"`
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode *int   `yaml:"defaultMode"`
			Items       []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type k8sDeployment struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		Replicas             *int32        `yaml:"replicas"`
		RevisionHistoryLimit *int32        `yaml:"revisionHistoryLimit"`
		Selector             labelSelector `yaml:"selector"`
		Strategy             struct {
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
				MaxSurge       any `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sPDB struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		MinAvailable   any           `yaml:"minAvailable"`
		MaxUnavailable any           `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type k8sHPA struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Name       string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas *int32 `yaml:"minReplicas"`
		MaxReplicas int32  `yaml:"maxReplicas"`
		Metrics     []struct {
			Type     string `yaml:"type"`
			Resource *struct {
				Name   string `yaml:"name"`
				Target struct {
					Type               string `yaml:"type"`
					AverageUtilization *int32 `yaml:"averageUtilization"`
				} `yaml:"target"`
			} `yaml:"resource"`
		} `yaml:"metrics"`
		Behavior *struct {
			ScaleDown *struct {
				StabilizationWindowSeconds *int32 `yaml:"stabilizationWindowSeconds"`
			} `yaml:"scaleDown"`
		} `yaml:"behavior"`
	} `yaml:"spec"`
}

type npPeer struct {
	PodSelector       *labelSelector `yaml:"podSelector"`
	NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
	IPBlock           *struct {
		CIDR   string   `yaml:"cidr"`
		Except []string `yaml:"except"`
	} `yaml:"ipBlock"`
}

func (p npPeer) String() string {
	sel := func(s *labelSelector) string {
		if s == nil {
			return "-"
		}
		return fmt.Sprint(s.MatchLabels)
	}
	if p.IPBlock != nil {
		return "ipBlock " + p.IPBlock.CIDR
	}
	return fmt.Sprintf("{namespaces %s, pods %s}", sel(p.NamespaceSelector), sel(p.PodSelector))
}

type npPort struct {
	Protocol string `yaml:"protocol"`
	Port     any    `yaml:"port"`
	EndPort  *int32 `yaml:"endPort"`
}

type npRule struct {
	From  []npPeer `yaml:"from"`
	To    []npPeer `yaml:"to"`
	Ports []npPort `yaml:"ports"`
}

type k8sNetworkPolicy struct {
	typeMeta `yaml:",inline"`
	Metadata objectMeta `yaml:"metadata"`
	Spec     struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []npRule      `yaml:"ingress"`
		Egress      []npRule      `yaml:"egress"`
	} `yaml:"spec"`
}

type kustomization struct {
	typeMeta  `yaml:",inline"`
	Resources []string `yaml:"resources"`
}

var k8sKinds = map[string]func() any{
	"v1 Namespace":                                  func() any { return new(k8sNamespace) },
	"v1 ServiceAccount":                             func() any { return new(k8sServiceAccount) },
	"v1 ConfigMap":                                  func() any { return new(k8sConfigMap) },
	"v1 Service":                                    func() any { return new(k8sService) },
	"apps/v1 Deployment":                            func() any { return new(k8sDeployment) },
	"policy/v1 PodDisruptionBudget":                 func() any { return new(k8sPDB) },
	"autoscaling/v2 HorizontalPodAutoscaler":        func() any { return new(k8sHPA) },
	"networking.k8s.io/v1 NetworkPolicy":            func() any { return new(k8sNetworkPolicy) },
	"kustomize.config.k8s.io/v1beta1 Kustomization": func() any { return new(kustomization) },
}

const k8sDir = "../../deploy/kubernetes"

// k8sManifests is every document under deploy/kubernetes, by file name.
type k8sManifests struct {
	files map[string][]document
	all   []document
}

func loadK8s(t *testing.T) k8sManifests {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if len(paths) == 0 {
		t.Fatal("no Kubernetes manifests found")
	}
	m := k8sManifests{files: map[string][]document{}}
	for _, p := range paths {
		docs, err := decodeManifests(filepath.Base(p), readFile(t, p), k8sKinds)
		if err != nil {
			t.Fatal(err)
		}
		m.files[filepath.Base(p)] = docs
		m.all = append(m.all, docs...)
	}
	return m
}

func (m k8sManifests) deployment(t *testing.T, name string) *k8sDeployment {
	t.Helper()
	for _, d := range all[k8sDeployment](m.all) {
		if d.Metadata.Name == name {
			return d
		}
	}
	t.Fatalf("no Deployment %q", name)
	return nil
}

func (m k8sManifests) service(t *testing.T, name string) *k8sService {
	t.Helper()
	for _, s := range all[k8sService](m.all) {
		if s.Metadata.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %q", name)
	return nil
}

func (m k8sManifests) networkPolicy(t *testing.T, name string) *k8sNetworkPolicy {
	t.Helper()
	for _, np := range all[k8sNetworkPolicy](m.all) {
		if np.Metadata.Name == name {
			return np
		}
	}
	t.Fatalf("no NetworkPolicy %q", name)
	return nil
}

// TestKubernetesStrictDecoding proves the decoder would catch a typo: the
// same deployment with one field misspelt must not decode.
func TestKubernetesStrictDecoding(t *testing.T) {
	t.Parallel()
	raw := string(readFile(t, filepath.Join(k8sDir, "deployment.yaml")))
	for _, typo := range [][2]string{
		{"readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"runAsNonRoot:", "runAsNonroot:"},
		{"readinessProbe:", "readynessProbe:"},
		{"terminationGracePeriodSeconds:", "terminationGracePeriod:"},
	} {
		if !strings.Contains(raw, typo[0]) {
			t.Fatalf("deployment.yaml has no %s", typo[0])
		}
		bad := strings.Replace(raw, typo[0], typo[1], 1)
		if _, err := decodeManifests("deployment.yaml", []byte(bad), k8sKinds); err == nil {
			t.Errorf("%s misspelt as %s decoded without error", typo[0], typo[1])
		}
	}
}

// TestKubernetesKustomization checks that kubectl apply -k applies every
// manifest in the directory, and only files that exist.
func TestKubernetesKustomization(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	k := only[kustomization](t, m.all, "Kustomization")
	for _, r := range k.Resources {
		if _, ok := m.files[r]; !ok {
			t.Errorf("kustomization lists %s, which is not a manifest here", r)
		}
	}
	for f := range m.files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not listed in kustomization.yaml", f)
		}
	}
}

// TestKubernetesBulwarkPod pins the pod's security and lifecycle settings.
func TestKubernetesBulwarkPod(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	d := m.deployment(t, "bulwark")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	podLabels := d.Spec.Template.Metadata.Labels
	if !subset(d.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("selector %v does not select the pod template's labels %v", d.Spec.Selector.MatchLabels, podLabels)
	}
	ps := d.Spec.Template.Spec
	checkPodSecurity(t, "bulwark", ps, 65532)
	if ps.EnableServiceLinks == nil || *ps.EnableServiceLinks {
		t.Error("enableServiceLinks must be false: Kubernetes would inject BULWARK_SERVICE_HOST etc., which Bulwark rejects")
	}
	if len(ps.TopologySpreadConstraints) == 0 {
		t.Error("no topologySpreadConstraints: both replicas may land on one node")
	}
	for _, tsc := range ps.TopologySpreadConstraints {
		if !subset(tsc.LabelSelector.MatchLabels, podLabels) {
			t.Errorf("topology spread on %s selects %v, not this pod", tsc.TopologyKey, tsc.LabelSelector.MatchLabels)
		}
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("containers = %d, want 1", len(ps.Containers))
	}
	c := ps.Containers[0]
	checkImagePinned(t, c.Image)
	for _, res := range []string{"cpu", "memory"} {
		if c.Resources.Requests[res] == "" || c.Resources.Limits[res] == "" {
			t.Errorf("resources: %s request and limit must both be set, got %v / %v", res, c.Resources.Requests, c.Resources.Limits)
		}
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 9191 || ports["admin"] != 9192 || ports["api"] != 9193 {
		t.Errorf("container ports = %v, want grpc 9191, api 9193 and admin 9192", ports)
	}
	checkHTTPProbe(t, "readinessProbe", c.ReadinessProbe, "/readyz", ports)
	checkHTTPProbe(t, "livenessProbe", c.LivenessProbe, "/healthz", ports)

	// Bulwark's own configuration loader reads the pod's environment.
	cfg := loadPodConfig(t, m, d)
	if cfg.GRPCAddr != "0.0.0.0:9191" || cfg.AdminAddr != "0.0.0.0:9192" || cfg.APIAddr != "0.0.0.0:9193" {
		t.Errorf("listen addresses = %s, %s, %s; want 0.0.0.0:9191, 0.0.0.0:9192 and API 0.0.0.0:9193", cfg.GRPCAddr, cfg.AdminAddr, cfg.APIAddr)
	}
	// Several replicas: ext_authz's seal must verify on whichever replica
	// ext_proc reaches, so the metadata key comes from the shared Secret.
	if cfg.MetadataKeyFile == "" {
		t.Error("no metadata_key_file: each replica would seal with its own random key and ext_proc would authenticate every request again")
	} else if k, err := os.ReadFile(cfg.MetadataKeyFile); err != nil {
		t.Errorf("metadata key: %v", err)
	} else if _, err := identity.NewVoucher(bytes.TrimSpace(k), 0, nil); err != nil {
		t.Errorf("metadata key: %v", err)
	}
	if cfg.RedisURL == "" {
		t.Error("no Redis URL: the replicas would not share limits and keys")
	}
	redisEnv := findEnv(c.Env, "BULWARK_REDIS_URL")
	if redisEnv == nil || redisEnv.ValueFrom == nil || redisEnv.ValueFrom.SecretKeyRef == nil {
		t.Error("BULWARK_REDIS_URL must come from a Secret (it carries the Redis password)")
	}
	if pep := findEnv(c.Env, "BULWARK_KEY_PEPPER"); pep != nil && (pep.ValueFrom == nil || pep.ValueFrom.SecretKeyRef == nil) {
		t.Error("BULWARK_KEY_PEPPER must come from a Secret")
	}
	// The identity stage starts with this configuration: the pepper is
	// where the pod mounts it, and long enough.
	pepper := ""
	if pep := findEnv(c.Env, "BULWARK_KEY_PEPPER"); pep != nil {
		pepper = placeholderSecrets[pep.ValueFrom.SecretKeyRef.Key]
	}
	if cfg.PepperFile == "" && pepper == "" {
		t.Error("no API key pepper: keys in Redis could not be checked")
	}
	auth, err := identity.New(cfg.IdentityConfig(pepper), nil, nil, nil)
	if err != nil {
		t.Errorf("identity stage would not start: %v", err)
	} else {
		auth.Close()
	}

	// Termination: preStop sleep, then SIGTERM and a drain of up to
	// shutdown_grace, then trace and audit flushes (5s each): all of it
	// within the grace period.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Fatal("no preStop sleep: Envoys would keep sending to a pod that has started draining")
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	need := preStop + cfg.ShutdownGrace + 10*time.Second
	var grace time.Duration
	if ps.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*ps.TerminationGracePeriodSeconds) * time.Second
	}
	if grace < need {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least %v (preStop %v + shutdown grace %v + flushes 10s)",
			grace, need, preStop, cfg.ShutdownGrace)
	}
}

func findEnv(env []envVar, name string) *envVar {
	for i := range env {
		if env[i].Name == name {
			return &env[i]
		}
	}
	return nil
}

func checkPodSecurity(t *testing.T, name string, ps podSpec, uid int64) {
	t.Helper()
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false: it never calls the Kubernetes API", name)
	}
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != uid {
		t.Errorf("%s: pod securityContext must set runAsNonRoot and runAsUser %d", name, uid)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("%s: pod seccompProfile must be RuntimeDefault", name)
	}
	for _, c := range ps.Containers {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s/%s: no securityContext", name, c.Name)
			continue
		}
		switch {
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
			t.Errorf("%s/%s: runAsNonRoot must be true", name, c.Name)
		case sc.RunAsUser == nil || *sc.RunAsUser != uid:
			t.Errorf("%s/%s: runAsUser = %v, want %d", name, c.Name, sc.RunAsUser, uid)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: readOnlyRootFilesystem must be true", name, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: allowPrivilegeEscalation must be false", name, c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s/%s: privileged", name, c.Name)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s/%s: capabilities must drop ALL and add none", name, c.Name)
		case sc.SeccompProfile == nil || sc.SeccompProfile.Type != "RuntimeDefault":
			t.Errorf("%s/%s: seccompProfile must be RuntimeDefault", name, c.Name)
		}
	}
}

func checkHTTPProbe(t *testing.T, what string, p *probe, path string, ports map[string]int) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe on %s", what, path)
		return
	}
	port := portNumber(p.HTTPGet.Port, ports)
	if p.HTTPGet.Path != path || port != 9192 {
		t.Errorf("%s: httpGet %s on port %v (%d), want %s on the admin port 9192", what, p.HTTPGet.Path, p.HTTPGet.Port, port, path)
	}
}

// portNumber resolves a port given by number or by container port name.
func portNumber(p any, named map[string]int) int {
	switch v := p.(type) {
	case int:
		return v
	case string:
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return named[v]
	}
	return 0
}

func checkImagePinned(t *testing.T, image string) {
	t.Helper()
	ref := image
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	name, tag, ok := strings.Cut(ref, ":")
	if strings.Contains(image, "@sha256:") {
		return
	}
	if !ok || tag == "" || tag == "latest" || name == "" {
		t.Errorf("image %q is not pinned to a version tag or digest", image)
	}
}

// placeholderSecrets stands in for the Secret's values when the test loads
// the pod's configuration.
var placeholderSecrets = map[string]string{
	"redis-url":    "redis://:secret@redis.bulwark.svc.cluster.local:6379/0",
	"key-pepper":   "cGxhY2Vob2xkZXItcGVwcGVyLWZvci10aGUtdGVzdHMtb25seQ==",
	"metadata-key": "cGxhY2Vob2xkZXItbWV0YWRhdGEta2V5LWZvci10ZXN0cw==",
	// kubernetes.io/tls Secrets and a client CA bundle (the Helm chart's TLS).
	"tls.crt": "placeholder", "tls.key": "placeholder", "ca.crt": "placeholder",
}

// loadPodConfig builds the environment Kubernetes would give the bulwark
// container (its env, the Secret's values, and the service links when they
// are on), lays the policy ConfigMap out on disk the way the kubelet mounts
// it, and runs Bulwark's own config.Load on it: an unknown BULWARK_
// variable, a bad value or a missing policy directory fails here as it
// would fail the pod.
func loadPodConfig(t *testing.T, m k8sManifests, d *k8sDeployment) config.Config {
	t.Helper()
	root := t.TempDir()
	ps := d.Spec.Template.Spec
	c := ps.Containers[0]
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.SecretKeyRef != nil:
				var ok bool
				if v, ok = placeholderSecrets[e.ValueFrom.SecretKeyRef.Key]; !ok {
					t.Fatalf("env %s: no placeholder for secret key %q", e.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			default:
				t.Fatalf("env %s: unsupported valueFrom", e.Name)
			}
		}
		if strings.HasPrefix(v, "/etc/bulwark/") { // a path inside the pod
			v = filepath.Join(root, v)
		}
		env = append(env, e.Name+"="+v)
	}
	if ps.EnableServiceLinks == nil || *ps.EnableServiceLinks {
		for _, s := range all[k8sService](m.all) {
			if s.Metadata.Namespace == d.Metadata.Namespace {
				env = append(env, serviceLinkEnv(s)...)
			}
		}
	}
	volumes := map[string]string{}
	secretVolumes := map[string]map[string]string{}
	for _, v := range ps.Volumes {
		switch {
		case v.ConfigMap != nil:
			volumes[v.Name] = v.ConfigMap.Name
		case v.Secret != nil:
			data := map[string]string{}
			for _, it := range v.Secret.Items {
				val, ok := placeholderSecrets[it.Key]
				if !ok {
					t.Fatalf("volume %s: no placeholder for secret key %q", v.Name, it.Key)
				}
				data[it.Path] = val
			}
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("secret volume %s: defaultMode must give others no access", v.Name)
			}
			secretVolumes[v.Name] = data
		}
	}
	for _, vm := range c.VolumeMounts {
		if data, ok := secretVolumes[vm.Name]; ok {
			if !vm.ReadOnly {
				t.Errorf("volume %s must be mounted readOnly", vm.Name)
			}
			mountConfigMap(t, filepath.Join(root, vm.MountPath), data)
			continue
		}
		cmName, ok := volumes[vm.Name]
		if !ok {
			continue
		}
		if !vm.ReadOnly {
			t.Errorf("volume %s must be mounted readOnly", vm.Name)
		}
		var cm *k8sConfigMap
		for _, x := range all[k8sConfigMap](m.all) {
			if x.Metadata.Name == cmName && x.Metadata.Namespace == d.Metadata.Namespace {
				cm = x
			}
		}
		if cm == nil {
			t.Fatalf("volume %s: no ConfigMap %q in namespace %s", vm.Name, cmName, d.Metadata.Namespace)
		}
		mountConfigMap(t, filepath.Join(root, vm.MountPath), cm.Data)
	}
	cfg, err := config.Load(c.Args, env, io.Discard)
	if err != nil {
		t.Fatalf("bulwark serve would not start with this pod's environment: %v", err)
	}
	return cfg
}

// serviceLinkEnv is what Kubernetes injects for a Service when service
// links are on (the Docker-links style variables).
func serviceLinkEnv(s *k8sService) []string {
	prefix := strings.ToUpper(strings.ReplaceAll(s.Metadata.Name, "-", "_"))
	host := "10.0.0.10"
	var env []string
	for i, p := range s.Spec.Ports {
		proto := strings.ToLower(cmp(p.Protocol, "TCP"))
		url := fmt.Sprintf("%s://%s", proto, net.JoinHostPort(host, strconv.Itoa(p.Port)))
		if i == 0 {
			env = append(env, prefix+"_SERVICE_HOST="+host, prefix+"_SERVICE_PORT="+strconv.Itoa(p.Port), prefix+"_PORT="+url)
		}
		pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
		env = append(env, pp+"="+url, pp+"_PROTO="+proto, pp+"_PORT="+strconv.Itoa(p.Port), pp+"_ADDR="+host)
		if p.Name != "" {
			env = append(env, prefix+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))+"="+strconv.Itoa(p.Port))
		}
	}
	return env
}

func cmp(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// mountConfigMap writes data (a ConfigMap's or a Secret's) the way the kubelet does: files in a
// timestamped hidden directory, a ..data symlink to it, and one symlink per
// key through ..data.
func mountConfigMap(t *testing.T, dir string, data map[string]string) {
	t.Helper()
	ts := filepath.Join(dir, "..2026_01_01_00_00_00.000000001")
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// TestKubernetesPolicyConfigMap loads the policy ConfigMap as the
// Deployment mounts it, with Bulwark's policy engine, and checks that its
// data landed where the policy reads it (data.bulwark): the public health
// route is allowed and an anonymous LLM call gets 401.
func TestKubernetesPolicyConfigMap(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	cfg := loadPodConfig(t, m, m.deployment(t, "bulwark"))
	eng, err := policy.New(context.Background(), policy.Config{Dir: cfg.PolicyDir, Query: cfg.PolicyQuery}, nil, nil)
	if err != nil {
		t.Fatalf("the ConfigMap's policy does not load: %v", err)
	}
	tests := []struct {
		method, path string
		allowed      bool
		status       int
	}{
		{"GET", "/healthz", true, 0},
		{"POST", "/v1/chat/completions", false, 401},
	}
	for _, tt := range tests {
		input, err := ast.InterfaceToValue(map[string]any{
			"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
				"method": tt.method, "path": tt.path, "headers": map[string]any{},
			}}},
			"parsed_path": strings.Split(strings.TrimPrefix(tt.path, "/"), "/"),
			"principal":   map[string]any{"kind": "anonymous", "roles": []any{}},
			"phase":       "request_headers",
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := eng.Evaluate(ctx, input)
		cancel()
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		if res.Decision.Allowed != tt.allowed || (!tt.allowed && res.Decision.HTTPStatus != tt.status) {
			t.Errorf("%s %s: allowed=%v status=%d, want allowed=%v status=%d", tt.method, tt.path,
				res.Decision.Allowed, res.Decision.HTTPStatus, tt.allowed, tt.status)
		}
	}
}

// TestKubernetesServiceAndScaling checks the Service, PDB and HPA against
// the Deployment they belong to.
func TestKubernetesServiceAndScaling(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	d := m.deployment(t, "bulwark")
	podLabels := d.Spec.Template.Metadata.Labels

	s := m.service(t, "bulwark")
	if !subset(s.Spec.Selector, podLabels) {
		t.Errorf("Service selector %v does not select the bulwark pods", s.Spec.Selector)
	}
	named := map[string]int{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		named[p.Name] = p.ContainerPort
	}
	got := map[int]string{}
	for _, p := range s.Spec.Ports {
		if tp := portNumber(p.TargetPort, named); tp != p.Port {
			t.Errorf("Service port %d targets %v (%d)", p.Port, p.TargetPort, tp)
		}
		got[p.Port] = p.AppProtocol
	}
	if got[9191] != "grpc" || got[9193] != "grpc" {
		t.Errorf("Service ports 9191 and 9193 appProtocol = %q, %q; want grpc", got[9191], got[9193])
	}
	if _, ok := got[9192]; !ok {
		t.Error("Service has no admin port 9192")
	}

	pdb := only[k8sPDB](t, m.all, "PodDisruptionBudget")
	if pdb.Spec.MinAvailable != 1 {
		t.Errorf("PDB minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}
	if !subset(pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("PDB selector %v does not select the bulwark pods", pdb.Spec.Selector.MatchLabels)
	}

	hpa := only[k8sHPA](t, m.all, "HorizontalPodAutoscaler")
	ref := hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != d.Metadata.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HPA scales %s %s/%s, want the bulwark Deployment", ref.APIVersion, ref.Kind, ref.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("HPA replicas %v..%d, want at least 2 and max >= min", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	var cpu bool
	for _, mt := range hpa.Spec.Metrics {
		if mt.Type == "Resource" && mt.Resource != nil && mt.Resource.Name == "cpu" &&
			mt.Resource.Target.Type == "Utilization" && mt.Resource.Target.AverageUtilization != nil &&
			*mt.Resource.Target.AverageUtilization == 70 {
			cpu = true
		}
	}
	if !cpu {
		t.Error("HPA must target 70% CPU utilization")
	}
}

// TestKubernetesNetworkPolicies checks who may reach Bulwark and Redis.
func TestKubernetesNetworkPolicies(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	bulwarkPods := m.deployment(t, "bulwark").Spec.Template.Metadata.Labels
	redisPods := m.deployment(t, "redis").Spec.Template.Metadata.Labels

	np := m.networkPolicy(t, "bulwark")
	if !subset(np.Spec.PodSelector.MatchLabels, bulwarkPods) {
		t.Errorf("NetworkPolicy bulwark selects %v, not the bulwark pods", np.Spec.PodSelector.MatchLabels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
		t.Errorf("policyTypes = %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	ingress := map[int][]npPeer{}
	for _, r := range np.Spec.Ingress {
		checkRuleScoped(t, "bulwark ingress", r, r.From)
		for _, p := range r.Ports {
			n := portNumber(p.Port, nil)
			ingress[n] = append(ingress[n], r.From...)
		}
	}
	if len(ingress) != 3 || len(ingress[9191]) == 0 || len(ingress[9192]) == 0 || len(ingress[9193]) == 0 {
		t.Errorf("ingress ports = %v, want exactly 9191, 9192 and 9193", keys(ingress))
	}
	// Envoy's port: named namespaces' named pods only (the Envoys that
	// enforce Bulwark's answers), never every mesh workload: whoever reaches
	// it can present any attributes as Envoy's.
	for _, p := range ingress[9191] {
		named := p.NamespaceSelector != nil && p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "" &&
			p.PodSelector != nil && len(p.PodSelector.MatchLabels) > 0 && p.PodSelector.MatchLabels["security.istio.io/tlsMode"] == ""
		if !named {
			t.Errorf("9191 admits %v: want only named Envoy pods in named namespaces", p)
		}
	}
	for _, p := range ingress[9193] {
		if p.PodSelector == nil || p.PodSelector.MatchLabels["bulwark.io/api-client"] != "true" {
			t.Errorf("9193 admits %v: want only pods labelled bulwark.io/api-client=true", p)
		}
	}
	for _, p := range ingress[9192] {
		if p.NamespaceSelector == nil || p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
			t.Errorf("9192 admits %v: want only the monitoring namespace", p)
		}
	}
	egress := map[int]bool{}
	for _, r := range np.Spec.Egress {
		checkRuleScoped(t, "bulwark egress", r, r.To)
		for _, p := range r.Ports {
			egress[portNumber(p.Port, nil)] = true
			if portNumber(p.Port, nil) == 6379 {
				for _, to := range r.To {
					if to.PodSelector == nil || !subset(to.PodSelector.MatchLabels, redisPods) {
						t.Errorf("egress to 6379 goes to %v, want the redis pods", to)
					}
				}
			}
		}
	}
	allowed := map[int]bool{53: true, 6379: true, 4317: true, 15012: true}
	for p := range egress {
		if !allowed[p] {
			t.Errorf("egress to port %d: want only DNS (53), Redis (6379), OTLP (4317), istiod (15012)", p)
		}
	}
	for _, p := range []int{53, 6379, 4317} {
		if !egress[p] {
			t.Errorf("no egress to port %d", p)
		}
	}

	rp := m.networkPolicy(t, "redis")
	if !subset(rp.Spec.PodSelector.MatchLabels, redisPods) {
		t.Errorf("NetworkPolicy redis selects %v, not the redis pods", rp.Spec.PodSelector.MatchLabels)
	}
	if !slices.Contains(rp.Spec.PolicyTypes, "Ingress") {
		t.Errorf("redis policyTypes = %v, want Ingress", rp.Spec.PolicyTypes)
	}
	if len(rp.Spec.Ingress) != 1 {
		t.Fatalf("redis ingress rules = %d, want 1", len(rp.Spec.Ingress))
	}
	r := rp.Spec.Ingress[0]
	checkRuleScoped(t, "redis ingress", r, r.From)
	if len(r.Ports) != 1 || portNumber(r.Ports[0].Port, nil) != 6379 {
		t.Errorf("redis ingress ports = %+v, want 6379 only", r.Ports)
	}
	for _, p := range r.From {
		if p.NamespaceSelector != nil || p.PodSelector == nil || !subset(p.PodSelector.MatchLabels, bulwarkPods) {
			t.Errorf("redis admits %v, want only the bulwark pods of its namespace", p)
		}
	}
}

// checkRuleScoped rejects rules that open everything: no peers (any
// source), no ports (every port), or an IP block.
func checkRuleScoped(t *testing.T, what string, r npRule, peers []npPeer) {
	t.Helper()
	if len(peers) == 0 {
		t.Errorf("%s: a rule without peers admits everyone", what)
	}
	if len(r.Ports) == 0 {
		t.Errorf("%s: a rule without ports admits every port", what)
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			t.Errorf("%s: ipBlock %s", what, p.IPBlock.CIDR)
		}
		if p.PodSelector == nil && p.NamespaceSelector == nil {
			t.Errorf("%s: a peer with no selector", what)
		}
	}
}

func keys[V any](m map[int]V) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestKubernetesRedis checks the optional Redis: hardened like Bulwark.
func TestKubernetesRedis(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	d := m.deployment(t, "redis")
	checkPodSecurity(t, "redis", d.Spec.Template.Spec, 999)
	for _, c := range d.Spec.Template.Spec.Containers {
		checkImagePinned(t, c.Image)
	}
	s := m.service(t, "redis")
	if !subset(s.Spec.Selector, d.Spec.Template.Metadata.Labels) {
		t.Errorf("Service redis selector %v does not select the redis pods", s.Spec.Selector)
	}
	for _, ns := range all[k8sNamespace](m.all) {
		if ns.Metadata.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s: want Pod Security enforce=restricted", ns.Metadata.Name)
		}
	}
	for _, sa := range all[k8sServiceAccount](m.all) {
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", sa.Metadata.Name)
		}
	}
}

// TestKubernetesPolicyConfigMapIsTheDefault: the ConfigMap is a copy of the
// default policy (policies/bulwark without its tests), so it must change
// when the policy does: a stale copy once lacked mcp.rego and the tools
// rules while README described them.
func TestKubernetesPolicyConfigMapIsTheDefault(t *testing.T) {
	t.Parallel()
	m := loadK8s(t)
	var cm *k8sConfigMap
	for _, x := range all[k8sConfigMap](m.all) {
		if x.Metadata.Name == "bulwark-policies" {
			cm = x
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap bulwark-policies")
	}
	want := map[string]string{}
	entries, err := fs.ReadDir(policies.FS, "bulwark")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, "_test.rego") || !(strings.HasSuffix(name, ".rego") || name == "data.yaml") {
			continue
		}
		b, err := fs.ReadFile(policies.FS, "bulwark/"+name)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = string(b)
	}
	for name, body := range want {
		if cm.Data[name] != body {
			t.Errorf("deploy/kubernetes/configmap-policies.yaml: %s differs from policies/bulwark/%s; regenerate it (see the file's header)", name, name)
		}
	}
	for name := range cm.Data {
		if _, ok := want[name]; !ok {
			t.Errorf("deploy/kubernetes/configmap-policies.yaml holds %s, which policies/bulwark does not", name)
		}
	}
}
