package deploy

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"

	"github.com/bulwark-ai/bulwark/internal/rls"
)

// TestEnvoyRateLimit: deploy/envoy's rate_limit filter calls Bulwark's
// RateLimitService (the bulwark cluster, API v3) after ext_authz, and every
// descriptor its rate_limits actions send matches a rule of
// deploy/envoy/ratelimit.yaml, loaded with Bulwark's own loader.
func TestEnvoyRateLimit(t *testing.T) {
	t.Parallel()
	f := readEnvoy(t, "../../deploy/envoy/envoy.yaml")
	cfg, err := rls.Load("../../deploy/envoy/ratelimit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, hcm := range f.hcms {
		var names []string
		var rl *ratelimitv3.RateLimit
		for _, hf := range hcm.GetHttpFilters() {
			names = append(names, hf.GetName())
			if hf.GetName() == "envoy.filters.http.ratelimit" {
				rl = new(ratelimitv3.RateLimit)
				if err := hf.GetTypedConfig().UnmarshalTo(rl); err != nil {
					t.Fatal(err)
				}
			}
		}
		if rl == nil {
			t.Fatalf("no envoy.filters.http.ratelimit in %v", names)
		}
		a, r := slices.Index(names, extAuthzFilter), slices.Index(names, "envoy.filters.http.ratelimit")
		if a < 0 || r < a {
			t.Errorf("http_filters %v: rate_limit must follow ext_authz (a refused request spends no budget)", names)
		}
		checkRateLimitFilter(t, rl, "bulwark", cfg)
		var limits []*routev3.RateLimit
		for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
			limits = append(limits, vh.GetRateLimits()...)
			for _, route := range vh.GetRoutes() {
				limits = append(limits, route.GetRoute().GetRateLimits()...)
			}
		}
		checkDescriptors(t, limits, rl.GetDomain(), cfg)
	}
}

// checkRateLimitFilter pins the rate_limit filter's settings Bulwark relies on.
func checkRateLimitFilter(t *testing.T, rl *ratelimitv3.RateLimit, cluster string, cfg *rls.Config) {
	t.Helper()
	if err := rl.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	svc := rl.GetRateLimitService()
	if svc.GetGrpcService().GetEnvoyGrpc().GetClusterName() != cluster || svc.GetTransportApiVersion().String() != "V3" {
		t.Errorf("rate_limit_service %v, want cluster %s over API v3", svc, cluster)
	}
	if !rl.GetFailureModeDeny() {
		t.Error("failure_mode_deny must be true: an unreachable Bulwark must not lift every limit")
	}
	if d := rl.GetTimeout().AsDuration(); d <= 0 || d > 1e9 {
		t.Errorf("timeout %v, want a short deadline", d)
	}
	if !slices.Contains(cfg.Domains(), rl.GetDomain()) {
		t.Errorf("filter domain %q is not in ratelimit.yaml (%v)", rl.GetDomain(), cfg.Domains())
	}
}

// checkDescriptors builds the descriptor each rate_limits entry makes Envoy
// send and checks that it matches a rule of cfg.
func checkDescriptors(t *testing.T, limits []*routev3.RateLimit, domain string, cfg *rls.Config) {
	t.Helper()
	if len(limits) == 0 {
		t.Error("no rate_limits actions: the filter would send nothing")
	}
	for _, l := range limits {
		var entries []*rlv3.RateLimitDescriptor_Entry
		for _, a := range l.GetActions() {
			switch {
			case a.GetRemoteAddress() != nil:
				entries = append(entries, &rlv3.RateLimitDescriptor_Entry{Key: "remote_address", Value: "203.0.113.7"})
			case a.GetGenericKey() != nil:
				k := a.GetGenericKey().GetDescriptorKey()
				if k == "" {
					k = "generic_key"
				}
				entries = append(entries, &rlv3.RateLimitDescriptor_Entry{Key: k, Value: a.GetGenericKey().GetDescriptorValue()})
			case a.GetRequestHeaders() != nil:
				entries = append(entries, &rlv3.RateLimitDescriptor_Entry{Key: a.GetRequestHeaders().GetDescriptorKey(), Value: "v"})
			default:
				t.Fatalf("action %v: teach this test its descriptor entry", a)
			}
		}
		if cfg.Rule(domain, entries) == "" {
			t.Errorf("descriptor %v matches no rule of ratelimit.yaml: Envoy would send it and nothing would limit it", entries)
		}
	}
}

// TestIstioRateLimit: the Istio EnvoyFilter's patches are an Envoy
// HttpFilter (RateLimit, to the bulwark Service's gRPC port) and a
// VirtualHost merge whose descriptors match deploy/envoy/ratelimit.yaml.
func TestIstioRateLimit(t *testing.T) {
	t.Parallel()
	ef := istioEnvoyFilter(t, "bulwark-ratelimit")
	cfg, err := rls.Load("../../deploy/envoy/ratelimit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(ef.Spec.ConfigPatches) != 2 {
		t.Fatalf("configPatches = %d, want the filter and the virtual host", len(ef.Spec.ConfigPatches))
	}
	fp, vp := ef.Spec.ConfigPatches[0], ef.Spec.ConfigPatches[1]
	if fp.ApplyTo != "HTTP_FILTER" || fp.Patch.Operation != "INSERT_BEFORE" || fp.Match.Listener == nil ||
		fp.Match.Listener.FilterChain.Filter.SubFilter.Name != routerFilter {
		t.Errorf("first patch must insert the filter before the router: %+v", fp)
	}
	if vp.ApplyTo != "VIRTUAL_HOST" || vp.Patch.Operation != "MERGE" || vp.Match.Context != fp.Match.Context {
		t.Errorf("second patch must merge rate_limits into the same context's virtual hosts: %+v", vp)
	}
	js, err := json.Marshal(fp.Patch.Value)
	if err != nil {
		t.Fatal(err)
	}
	var hf hcmv3.HttpFilter
	if err := protojson.Unmarshal(js, &hf); err != nil {
		t.Fatalf("patch value is not an Envoy HttpFilter: %v", err)
	}
	var rl ratelimitv3.RateLimit
	if err := hf.GetTypedConfig().UnmarshalTo(&rl); err != nil {
		t.Fatalf("typed_config is not a RateLimit: %v", err)
	}
	s := loadK8s(t).service(t, "bulwark")
	checkRateLimitFilter(t, &rl, fmt.Sprintf("outbound|9191||%s.%s.svc.cluster.local", s.Metadata.Name, s.Metadata.Namespace), cfg)
	js, err = json.Marshal(vp.Patch.Value)
	if err != nil {
		t.Fatal(err)
	}
	var vh routev3.VirtualHost
	if err := protojson.Unmarshal(js, &vh); err != nil {
		t.Fatalf("virtual host patch is not an Envoy VirtualHost: %v", err)
	}
	checkDescriptors(t, vh.GetRateLimits(), rl.GetDomain(), cfg)
}
