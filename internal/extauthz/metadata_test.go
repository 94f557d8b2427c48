package extauthz

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/identity"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

func testVoucher(tb testing.TB) *identity.Voucher {
	tb.Helper()
	v, err := identity.NewVoucher(bytes.Repeat([]byte("m"), identity.MinVouchKeyBytes), 0, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// sealedMetadata is ext_authz's metadata for an allow of app (acme, user).
func sealedMetadata(v *identity.Voucher) *structpb.Struct {
	md := Response(pipeline.Outcome{DecisionID: "d-1", Reason: "allowed", Decision: policy.Decision{Allowed: true},
		Principal: identity.Principal{ID: "app", Kind: identity.KindAPIKey, Tenant: "acme", Roles: []string{"user"}}}).DynamicMetadata
	envoy.Seal(md, v)
	return md
}

func TestVouchedPrincipal(t *testing.T) {
	t.Parallel()
	v := testVoucher(t)
	genuine := sealedMetadata(v)
	with := func(k string, val *structpb.Value) *structpb.Struct {
		md := proto.Clone(genuine).(*structpb.Struct)
		if val == nil {
			delete(md.Fields, k)
		} else {
			md.Fields[k] = val
		}
		return md
	}
	cases := []struct {
		name    string
		md      *structpb.Struct
		voucher *identity.Voucher
		want    string
	}{
		{"genuine", genuine, v, envoy.VouchVerified},
		{"no ext_authz metadata", nil, v, envoy.VouchAbsent},
		{"no key to check with", genuine, nil, envoy.VouchUnverified},
		{"no mac", with(envoy.MetadataMAC, nil), v, envoy.VouchInvalid},
		{"mac not base64", with(envoy.MetadataMAC, structpb.NewStringValue("!!")), v, envoy.VouchInvalid},
		{"huge mac", with(envoy.MetadataMAC, structpb.NewStringValue(string(bytes.Repeat([]byte("A"), 1<<12)))), v, envoy.VouchInvalid},
		{"no expiry", with(envoy.MetadataExpires, nil), v, envoy.VouchInvalid},
		{"expiry as number", with(envoy.MetadataExpires, structpb.NewNumberValue(1e15)), v, envoy.VouchInvalid},
		{"tenant changed", with("tenant", structpb.NewStringValue("beta")), v, envoy.VouchInvalid},
		{"role added", with("roles", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
			structpb.NewStringValue("user"), structpb.NewStringValue("admin")}})), v, envoy.VouchInvalid},
		{"principal removed (anonymous)", with("principal_id", nil), v, envoy.VouchInvalid},
		{"another key", genuine, testVoucherKey(t, 'x'), envoy.VouchInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, id, got := envoy.VouchedPrincipal(tc.md, tc.voucher)
			if got != tc.want {
				t.Fatalf("result %q, want %q", got, tc.want)
			}
			if got == envoy.VouchVerified && (id != "d-1" || p.ID != "app" || p.Tenant != "acme" || !slices.Equal(p.Roles, []string{"user"}) || p.Kind != identity.KindAPIKey) {
				t.Fatalf("verified principal %+v, decision %q", p, id)
			}
			if got != envoy.VouchVerified && (p.ID != "" || id != "") {
				t.Fatalf("unverified metadata still yields %+v, %q", p, id)
			}
		})
	}
}

// TestPolicyCannotSealAPrincipal: a policy's dynamic_metadata that names a
// principal is not what ext_authz seals: only the identity stage's
// principal is.
func TestPolicyCannotSealAPrincipal(t *testing.T) {
	t.Parallel()
	v := testVoucher(t)
	out := pipeline.Outcome{DecisionID: "d-1", Reason: "allowed", Decision: policy.Decision{Allowed: true,
		DynamicMetadata: map[string]any{"principal_id": "admin", "roles": []any{"admin"}, "tenant": "acme", "mac": "x"}},
		Principal: identity.Principal{Kind: identity.KindAnonymous}}
	md := Response(out).DynamicMetadata
	envoy.Seal(md, v)
	p, _, res := envoy.VouchedPrincipal(md, v)
	if res != envoy.VouchVerified || p.ID != "" || len(p.Roles) != 0 || p.Tenant != "" {
		t.Fatalf("sealed %+v (%s), want the anonymous principal", p, res)
	}
}

func testVoucherKey(tb testing.TB, b byte) *identity.Voucher {
	tb.Helper()
	v, err := identity.NewVoucher(bytes.Repeat([]byte{b}, identity.MinVouchKeyBytes), 0, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// FuzzVouchedPrincipal: whatever a caller writes into one field of a
// genuine sealed decision, ext_proc believes it only if the fields it reads
// are unchanged.
func FuzzVouchedPrincipal(f *testing.F) {
	for _, s := range [][2]string{{"tenant", "beta"}, {"principal_id", "admin"}, {"decision_id", "d-2"}, {envoy.MetadataMAC, ""},
		{envoy.MetadataExpires, "99999999999999"}, {"principal_kind", "mtls"}, {"reason", "allowed"}, {"tenant", "acme"}} {
		f.Add(s[0], s[1])
	}
	v := testVoucher(f)
	genuine := sealedMetadata(v)
	want, _, _ := envoy.VouchedPrincipal(genuine, v)
	f.Fuzz(func(t *testing.T, field, value string) {
		md := proto.Clone(genuine).(*structpb.Struct)
		md.Fields[field] = structpb.NewStringValue(value)
		p, id, res := envoy.VouchedPrincipal(md, v)
		if res != envoy.VouchVerified {
			return
		}
		if id != "d-1" || p.ID != want.ID || p.Tenant != want.Tenant || p.Kind != want.Kind || !slices.Equal(p.Roles, want.Roles) {
			t.Fatalf("altered %s=%q believed: %+v %q", field, value, p, id)
		}
	})
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// TestVouchEncodingVector pins the sealed encoding with a vector computed
// outside Go (test/load/ghz.sh seals the same way in Python): a change to
// the encoding must be deliberate, since every replica of a deployment must
// agree on it during a rolling upgrade.
func TestVouchEncodingVector(t *testing.T) {
	t.Parallel()
	v, err := identity.NewVoucher(bytes.Repeat([]byte("m"), identity.MinVouchKeyBytes), 0, fixedClock(time.UnixMilli(1_699_999_999_000)))
	if err != nil {
		t.Fatal(err)
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		"decision_id":         structpb.NewStringValue("bench-1"),
		"principal_id":        structpb.NewStringValue("bench"),
		"principal_kind":      structpb.NewStringValue("api_key"),
		"tenant":              structpb.NewStringValue("acme"),
		"roles":               structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("user")}}),
		envoy.MetadataExpires: structpb.NewStringValue("1700000000000"),
		envoy.MetadataMAC:     structpb.NewStringValue("NKKEsf_gNk-BOalwAl_ojKKNR8w7hTbcLh8hx2Oczqk"),
	}}
	if p, id, res := envoy.VouchedPrincipal(md, v); res != envoy.VouchVerified || id != "bench-1" || p.ID != "bench" {
		t.Fatalf("vector not verified: %s %q %+v", res, id, p)
	}
}
