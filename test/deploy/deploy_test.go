// Package deploy checks the configurations in deploy/: each Envoy config is
// parsed into go-control-plane's bootstrap protos (unknown fields and unknown
// typed_config types are errors) and validated with ValidateAll, the same
// constraints Envoy enforces when it loads the file.
package deploy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
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

func TestEnvoyConfigs(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/envoy/*.yaml")
	if len(files) == 0 {
		t.Fatal("no Envoy configs found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { loadBootstrap(t, f) })
	}
}

// TestExtAuthzSettings pins the settings Bulwark relies on.
func TestExtAuthzSettings(t *testing.T) {
	b := loadBootstrap(t, "../../deploy/envoy/envoy.yaml")
	var authz *extauthzv3.ExtAuthz
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					var a extauthzv3.ExtAuthz
					if hf.GetTypedConfig().UnmarshalTo(&a) == nil {
						authz = &a
					}
				}
			}
		}
	}
	if authz == nil {
		t.Fatal("no ext_authz filter")
	}
	if authz.GetFailureModeAllow() {
		t.Error("failure_mode_allow must be false: an unreachable Bulwark must not let traffic through")
	}
	if got := authz.GetGrpcService().GetTimeout().AsDuration(); got <= 100*time.Millisecond {
		t.Errorf("ext_authz timeout %v must exceed Bulwark's default check timeout (100ms)", got)
	}
	if wb := authz.GetWithRequestBody(); wb == nil || !wb.GetPackAsBytes() || !wb.GetAllowPartialMessage() {
		t.Errorf("with_request_body = %v", wb)
	}
	if wb := authz.GetWithRequestBody(); wb.GetMaxRequestBytes() > 16<<20 {
		t.Errorf("max_request_bytes %d exceeds Bulwark's default gRPC receive limit", wb.GetMaxRequestBytes())
	}
}
