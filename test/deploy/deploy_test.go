// Package deploy checks the configurations in deploy/ and the container
// build: each Envoy config is parsed into go-control-plane's bootstrap protos
// (unknown fields and unknown typed_config types are errors), every
// typed_config inside it is unpacked and validated with ValidateAll (the same
// constraints Envoy enforces when it loads the file), and the settings
// Bulwark relies on are pinned. The Istio, Kubernetes and Compose manifests
// are decoded strictly (a misspelt field is an error) and cross-checked
// against each other and against Bulwark's own configuration loader.
package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// envoyConfigs are the Envoy bootstraps this package validates.
var envoyConfigs = []string{
	"../../deploy/envoy/envoy.yaml",
	"../../deploy/compose/envoy.yaml",
}

// Names Bulwark's configs share.
const (
	extAuthzFilter = "envoy.filters.http.ext_authz"
	extProcFilter  = "envoy.filters.http.ext_proc"
	routerFilter   = "envoy.filters.http.router"
	hcmFilter      = "envoy.filters.network.http_connection_manager"
	// minGRPCMessage is the least max_receive_message_length Envoy must
	// accept from Bulwark: ext_proc body rewrites go up to 8 MiB.
	minGRPCMessage = 8 << 20
)

func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("%s: YAML: %v", path, err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, &b); err != nil {
		t.Fatalf("%s: not a valid Envoy bootstrap: %v", path, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s: fails Envoy's validation: %v", path, err)
	}
	return &b
}

// validator is what protoc-gen-validate generates on every Envoy message.
type validator interface{ ValidateAll() error }

// walk visits m and every message inside it, unpacking google.protobuf.Any
// values (typed_config, typed_extension_protocol_options, ...) into their
// concrete types. ValidateAll on the bootstrap stops at an Any, so walk is
// what validates the filters, tracers and transport sockets themselves. An
// Any whose type is not linked into the test binary is an error: a config
// this test cannot read is a config it did not check.
func walk(m protoreflect.Message, visit func(proto.Message) error) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("typed config %s: %w", a.GetTypeUrl(), err)
		}
		if v, ok := inner.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
			}
		}
		return walk(inner.ProtoReflect(), visit)
	}
	if err := visit(m.Interface()); err != nil {
		return err
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = walk(l.Get(i).Message(), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = walk(mv.Message(), visit)
				return err == nil
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			err = walk(v.Message(), visit)
		}
		return err == nil
	})
	return err
}

// envoyFacts is what a bootstrap says, gathered by one walk.
type envoyFacts struct {
	clusters    map[string]bool
	clusterRefs []string // envoy_grpc and route targets
	hcms        []*hcmv3.HttpConnectionManager
	h2Clusters  map[string]bool
}

func readEnvoy(t *testing.T, path string) envoyFacts {
	t.Helper()
	b := loadBootstrap(t, path)
	f := envoyFacts{clusters: map[string]bool{}, h2Clusters: map[string]bool{}}
	for _, c := range b.GetStaticResources().GetClusters() {
		f.clusters[c.GetName()] = true
		for _, opt := range c.GetTypedExtensionProtocolOptions() {
			var po upstreamhttpv3.HttpProtocolOptions
			if opt.UnmarshalTo(&po) == nil && po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
				f.h2Clusters[c.GetName()] = true
			}
		}
	}
	err := walk(b.ProtoReflect(), func(m proto.Message) error {
		switch m := m.(type) {
		case *corev3.GrpcService_EnvoyGrpc:
			f.clusterRefs = append(f.clusterRefs, m.GetClusterName())
		case *routev3.RouteAction:
			if c := m.GetCluster(); c != "" {
				f.clusterRefs = append(f.clusterRefs, c)
			}
		case *hcmv3.HttpConnectionManager:
			f.hcms = append(f.hcms, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(f.hcms) == 0 {
		t.Fatalf("%s: no http_connection_manager", path)
	}
	return f
}

// TestEnvoyConfigs validates each bootstrap and its typed configs, checks
// that every cluster a filter or route names exists, and pins what Bulwark
// needs: ext_authz, then ext_proc, then the router; both filters' settings;
// an HTTP/2 bulwark cluster; traces to an OTLP collector.
func TestEnvoyConfigs(t *testing.T) {
	for _, path := range envoyConfigs {
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) {
			t.Parallel()
			f := readEnvoy(t, path)
			for _, ref := range f.clusterRefs {
				if !f.clusters[ref] {
					t.Errorf("cluster %q is referenced but not defined", ref)
				}
			}
			if !f.h2Clusters["bulwark"] {
				t.Error("cluster bulwark must speak HTTP/2 (http2_protocol_options): ext_authz and ext_proc are gRPC")
			}
			for _, hcm := range f.hcms {
				checkFilterChain(t, hcm)
				checkCredentialsStripped(t, hcm)
				checkTracing(t, hcm, f)
				// Policies match paths: Envoy must hand over the path it routes on.
				if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
					t.Error("http_connection_manager must set normalize_path and merge_slashes")
				}
			}
		})
	}
}

// bulwarkCredentials are the headers Bulwark reads a client's API key or JWT
// from (internal/extauthz/credentials.go); the model provider must never
// receive them.
var bulwarkCredentials = []string{"authorization", "x-api-key"}

// checkCredentialsStripped: every route that forwards upstream removes
// Bulwark's credential headers (request_headers_to_remove on the route, its
// virtual host or the route configuration). The router applies those after
// every HTTP filter ran, so ext_authz and ext_proc still read them.
func checkCredentialsStripped(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
	t.Helper()
	rc := hcm.GetRouteConfig()
	if rc == nil {
		t.Fatal("http_connection_manager has no inline route_config")
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute() == nil {
				continue // a direct response or redirect forwards nothing
			}
			removed := slices.Concat(rc.GetRequestHeadersToRemove(), vh.GetRequestHeadersToRemove(), r.GetRequestHeadersToRemove())
			for _, h := range bulwarkCredentials {
				if !slices.Contains(removed, h) {
					t.Errorf("virtual host %s route %v forwards the client's %s (Bulwark's credential) to the upstream: add it to request_headers_to_remove",
						vh.GetName(), r.GetMatch(), h)
				}
			}
		}
	}
}

func checkFilterChain(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
	t.Helper()
	var names []string
	var authz *extauthzv3.ExtAuthz
	var proc *extprocv3.ExternalProcessor
	for _, hf := range hcm.GetHttpFilters() {
		names = append(names, hf.GetName())
		switch hf.GetName() {
		case extAuthzFilter:
			authz = new(extauthzv3.ExtAuthz)
			if err := hf.GetTypedConfig().UnmarshalTo(authz); err != nil {
				t.Fatalf("%s: %v", extAuthzFilter, err)
			}
		case extProcFilter:
			proc = new(extprocv3.ExternalProcessor)
			if err := hf.GetTypedConfig().UnmarshalTo(proc); err != nil {
				t.Fatalf("%s: %v", extProcFilter, err)
			}
		}
	}
	a, p, r := slices.Index(names, extAuthzFilter), slices.Index(names, extProcFilter), slices.Index(names, routerFilter)
	if a < 0 || p < 0 || r < 0 || !(a < p && p < r) || r != len(names)-1 {
		t.Errorf("http_filters = %v, want %s before %s before %s (last)", names, extAuthzFilter, extProcFilter, routerFilter)
	}
	if authz != nil {
		checkExtAuthz(t, authz, "bulwark")
	}
	if proc != nil {
		checkExtProc(t, proc, "bulwark")
	}
}

// checkExtAuthz pins the ext_authz settings Bulwark relies on.
func checkExtAuthz(t *testing.T, authz *extauthzv3.ExtAuthz, cluster string) {
	t.Helper()
	if authz.GetFailureModeAllow() {
		t.Error("ext_authz failure_mode_allow must be false: an unreachable Bulwark must not let traffic through")
	}
	if got := authz.GetTransportApiVersion(); got != corev3.ApiVersion_V3 {
		t.Errorf("ext_authz transport_api_version = %v, want V3", got)
	}
	if got := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != cluster {
		t.Errorf("ext_authz cluster = %q, want %q", got, cluster)
	}
	if got := authz.GetGrpcService().GetTimeout().AsDuration(); got != 250*time.Millisecond {
		t.Errorf("ext_authz timeout = %v, want 250ms (above Bulwark's default check timeout, 100ms)", got)
	}
	wb := authz.GetWithRequestBody()
	if wb == nil || !wb.GetPackAsBytes() || !wb.GetAllowPartialMessage() || wb.GetMaxRequestBytes() != 1<<20 {
		t.Errorf("with_request_body = %v, want max_request_bytes 1 MiB, allow_partial_message, pack_as_bytes", wb)
	}
	if wb.GetMaxRequestBytes() > 16<<20 {
		t.Errorf("max_request_bytes %d exceeds Bulwark's default gRPC receive limit", wb.GetMaxRequestBytes())
	}
}

// checkExtProc pins the ext_proc settings Bulwark relies on; the Envoy
// configs and Istio's EnvoyFilter share it.
func checkExtProc(t *testing.T, p *extprocv3.ExternalProcessor, cluster string) {
	t.Helper()
	eg := p.GetGrpcService().GetEnvoyGrpc()
	if eg.GetClusterName() != cluster {
		t.Errorf("ext_proc cluster = %q, want %q", eg.GetClusterName(), cluster)
	}
	if got := eg.GetMaxReceiveMessageLength().GetValue(); got < minGRPCMessage {
		t.Errorf("ext_proc max_receive_message_length = %d, want at least %d (Bulwark returns bodies up to 8 MiB)", got, minGRPCMessage)
	}
	if p.GetFailureModeAllow() {
		t.Error("ext_proc failure_mode_allow must be false: a failed exchange must not pass unredacted")
	}
	want := &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     extprocv3.ProcessingMode_NONE,
		ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	if !proto.Equal(p.GetProcessingMode(), want) {
		t.Errorf("ext_proc processing_mode = %v, want %v", p.GetProcessingMode(), want)
	}
	if !p.GetAllowModeOverride() {
		t.Error("ext_proc allow_mode_override must be true: Bulwark turns bodies on per exchange with mode_override")
	}
	if got := p.GetMessageTimeout().AsDuration(); got != time.Second {
		t.Errorf("ext_proc message_timeout = %v, want 1s", got)
	}
	if got := p.GetMaxMessageTimeout().AsDuration(); got != 5*time.Second {
		t.Errorf("ext_proc max_message_timeout = %v, want 5s", got)
	}
	mo := p.GetMetadataOptions()
	if got := mo.GetForwardingNamespaces().GetUntyped(); !slices.Equal(got, []string{extAuthzFilter}) {
		t.Errorf("ext_proc forwarding_namespaces.untyped = %v, want [%s]: ext_authz's decision must reach ext_proc", got, extAuthzFilter)
	}
	if got := mo.GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, []string{"bulwark"}) {
		t.Errorf("ext_proc receiving_namespaces.untyped = %v, want [bulwark]", got)
	}
}

func checkTracing(t *testing.T, hcm *hcmv3.HttpConnectionManager, f envoyFacts) {
	t.Helper()
	prov := hcm.GetTracing().GetProvider()
	if prov.GetName() != "envoy.tracers.opentelemetry" {
		t.Fatalf("tracing provider = %q, want envoy.tracers.opentelemetry", prov.GetName())
	}
	var otel tracev3.OpenTelemetryConfig
	if err := prov.GetTypedConfig().UnmarshalTo(&otel); err != nil {
		t.Fatal(err)
	}
	if otel.GetServiceName() != "envoy" {
		t.Errorf("tracing service_name = %q, want envoy", otel.GetServiceName())
	}
	c := otel.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if c == "" || !f.h2Clusters[c] {
		t.Errorf("tracing must export OTLP over gRPC to an HTTP/2 cluster, got cluster %q", c)
	}
}
