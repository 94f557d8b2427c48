package extproc

import (
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// TestConnectionPeer: Envoy's connection attributes become ext_authz's
// attributes.source, so policies and the identity stage see an mTLS peer
// the same way through ext_proc as through ext_authz.
func TestConnectionPeer(t *testing.T) {
	str := structpb.NewStringValue
	cases := []struct {
		name          string
		attrs         map[string]*structpb.Value
		wantPrincipal string
		wantAddr      string
		wantPort      uint32
	}{
		{"IPv4 with port", map[string]*structpb.Value{AttrSourceAddress: str("10.1.2.3:51234")}, "", "10.1.2.3", 51234},
		{"IPv6 with port", map[string]*structpb.Value{AttrSourceAddress: str("[2001:db8::7]:443")}, "", "2001:db8::7", 443},
		{"IPv6 without port, port attribute", map[string]*structpb.Value{AttrSourceAddress: str("2001:db8::7"),
			AttrSourcePort: structpb.NewNumberValue(8443)}, "", "2001:db8::7", 8443},
		{"URI SAN is the principal", map[string]*structpb.Value{AttrPeerURISAN: str("spiffe://cluster.local/ns/batch/sa/worker"),
			AttrPeerSubject: str("CN=worker")}, "spiffe://cluster.local/ns/batch/sa/worker", "", 0},
		{"subject when there is no URI SAN", map[string]*structpb.Value{AttrPeerSubject: str("CN=worker,O=acme")}, "CN=worker,O=acme", "", 0},
		{"no attributes", map[string]*structpb.Value{}, "", "", 0},
		{"an address that is not host:port", map[string]*structpb.Value{AttrSourceAddress: str("not an address")}, "", "not an address", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := connectionPeer(tc.attrs)
			if p.GetPrincipal() != tc.wantPrincipal {
				t.Errorf("principal %q, want %q", p.GetPrincipal(), tc.wantPrincipal)
			}
			sa := p.GetAddress().GetSocketAddress()
			if sa.GetAddress() != tc.wantAddr || sa.GetPortValue() != tc.wantPort {
				t.Errorf("address %q port %d, want %q %d", sa.GetAddress(), sa.GetPortValue(), tc.wantAddr, tc.wantPort)
			}
		})
	}
}
