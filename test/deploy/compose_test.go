package deploy

import (
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/bulwark-ai/bulwark/internal/config"
)

// composeFile is the part of the Compose specification deploy/compose uses;
// decoded strictly, so a misspelt key (depends-on, healthCheck) fails.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
		Retries  int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	ReadOnly    bool     `yaml:"read_only"`
	User        string   `yaml:"user"`
	CapDrop     []string `yaml:"cap_drop"`
	SecurityOpt []string `yaml:"security_opt"`
	Tmpfs       []string `yaml:"tmpfs"`
	Restart     string   `yaml:"restart"`
}

const composeDir = "../../deploy/compose"

// interpolation matches Compose's ${NAME}, ${NAME:-default}, ${NAME:?error}.
var interpolation = regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)[^}]*\}`)

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var cf composeFile
	if err := decodeStrict(readFile(t, filepath.Join(composeDir, "docker-compose.yaml")), &cf); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return cf
}

// TestCompose checks the services, their images and dependencies, and that
// Bulwark's configuration loader accepts the bulwark service's environment.
func TestCompose(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	for _, name := range []string{"envoy", "bulwark", "redis", "jaeger", "stubllm"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("no service %q", name)
		}
	}
	for name, s := range cf.Services {
		if s.Build != nil {
			df := filepath.Join(composeDir, s.Build.Context, s.Build.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				t.Errorf("%s: Dockerfile: %v", name, err)
			}
		}
		if s.Image == "" && s.Build == nil {
			t.Errorf("%s: neither image nor build", name)
		}
		if s.Image != "" {
			checkImagePinned(t, s.Image)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published on every interface, want 127.0.0.1 only", name, p)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := cf.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %q", name, dep)
			}
		}
	}

	b := cf.Services["bulwark"]
	if b.Build == nil || filepath.Clean(filepath.Join(composeDir, b.Build.Context)) != filepath.Clean("../..") || b.Build.Dockerfile != "Dockerfile" {
		t.Errorf("bulwark must be built from the repository's root Dockerfile, got %+v", b.Build)
	}
	if dep, ok := b.DependsOn["redis"]; !ok || dep.Condition != "service_healthy" {
		t.Error("bulwark must depend on redis being healthy")
	}
	if cf.Services["redis"].Healthcheck == nil {
		t.Error("redis has no healthcheck, so service_healthy can never hold")
	}
	uid, _, _ := strings.Cut(b.User, ":")
	if !b.ReadOnly || uid == "" || uid == "0" || uid == "root" || !slices.Contains(b.CapDrop, "ALL") {
		t.Errorf("bulwark must run read-only, non-root, with every capability dropped: %+v", b)
	}

	// The environment as Compose would pass it, interpolations filled in.
	var env []string
	for k, v := range b.Environment {
		env = append(env, k+"="+interpolation.ReplaceAllString(v, "placeholder"))
	}
	cfg, err := config.Load(nil, env, io.Discard)
	if err != nil {
		t.Fatalf("bulwark serve would not start with the compose environment: %v", err)
	}
	if cfg.APIAddr != "0.0.0.0:9193" {
		t.Errorf("api addr = %s, want 0.0.0.0:9193 (Bulwark's own API apart from Envoy's port)", cfg.APIAddr)
	}
	if cfg.GRPCAddr != "0.0.0.0:9191" {
		t.Errorf("grpc addr = %s, want 0.0.0.0:9191", cfg.GRPCAddr)
	}
	checkServiceURL(t, cf, "BULWARK_REDIS_URL", cfg.RedisURL, "redis")
	checkServiceURL(t, cf, "OTEL_EXPORTER_OTLP_ENDPOINT", b.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"], "jaeger")
	if !strings.HasSuffix(b.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"], ":4317") {
		t.Error("OTLP endpoint must be Jaeger's OTLP gRPC port 4317")
	}
}

func checkServiceURL(t *testing.T, cf composeFile, name, raw, service string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() != service {
		t.Errorf("%s = %q, want a URL on the %s service", name, raw, service)
	}
}

// TestComposeEnvoy checks that the compose Envoy config is the one mounted
// into the envoy service and that every address it dials is a compose
// service.
func TestComposeEnvoy(t *testing.T) {
	t.Parallel()
	cf := loadCompose(t)
	e := cf.Services["envoy"]
	var mounted bool
	for _, v := range e.Volumes {
		src, rest, _ := strings.Cut(v, ":")
		if filepath.Clean(src) == "envoy.yaml" && strings.HasPrefix(rest, "/etc/envoy/envoy.yaml") {
			mounted = true
		}
	}
	if !mounted || !slices.Contains(e.Command, "/etc/envoy/envoy.yaml") {
		t.Errorf("envoy must run with ./envoy.yaml mounted at /etc/envoy/envoy.yaml: volumes %v, command %v", e.Volumes, e.Command)
	}
	b := loadBootstrap(t, filepath.Join(composeDir, "envoy.yaml"))
	var hosts []string
	for _, c := range b.GetStaticResources().GetClusters() {
		err := walk(c.ProtoReflect(), func(m proto.Message) error {
			if sa, ok := m.(*corev3.SocketAddress); ok {
				hosts = append(hosts, sa.GetAddress())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(hosts) == 0 {
		t.Fatal("no cluster addresses")
	}
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			continue
		}
		if _, ok := cf.Services[h]; !ok {
			t.Errorf("envoy dials %q, which is not a compose service", h)
		}
	}
}
