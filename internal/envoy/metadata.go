package envoy

import (
	"encoding/base64"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/identity"
)

// AuthzNamespace is where Envoy keeps ext_authz's dynamic metadata; the
// ext_proc filter forwards it when listed in
// metadata_options.forwarding_namespaces.
const AuthzNamespace = "envoy.filters.http.ext_authz"

// The metadata keys that make ext_authz's principal believable to ext_proc:
// when the seal lasts, and the MAC over the decision id, the principal's id,
// kind, tenant and roles, and that expiry (identity.Voucher).
const (
	MetadataExpires = "expires_unix_ms"
	MetadataMAC     = "mac"
)

// The results of reading ext_authz's metadata in ext_proc, as metric labels.
const (
	VouchAbsent     = "absent"     // no ext_authz decision forwarded: authenticate
	VouchVerified   = "verified"   // sealed by Bulwark, fresh: believed
	VouchInvalid    = "invalid"    // no or a wrong MAC (forged, altered, another key): authenticate
	VouchExpired    = "expired"    // a genuine seal, too old: authenticate
	VouchUnverified = "unverified" // no key to check it with: authenticate
)

// Seal adds the expiry and MAC to ext_authz's metadata md, over exactly the
// fields VouchedPrincipal reads back.
func Seal(md *structpb.Struct, v *identity.Voucher) {
	vouch, ok := vouchOf(md.GetFields())
	if !ok {
		return
	}
	mac := v.Seal(&vouch)
	md.Fields[MetadataExpires] = structpb.NewStringValue(strconv.FormatInt(vouch.ExpiresUnixMs, 10))
	md.Fields[MetadataMAC] = structpb.NewStringValue(base64.RawURLEncoding.EncodeToString(mac))
}

// VouchedPrincipal reads the principal ext_authz established from its
// forwarded metadata, and believes it only when v verifies the MAC and the
// Seal is fresh. result is one of the Vouch* labels; the principal and
// decision id are meaningful only with VouchVerified. Anything else means
// the request's own credentials must be authenticated: metadata is bytes on
// a stream that whoever can reach the Envoy listener can write.
func VouchedPrincipal(md *structpb.Struct, v *identity.Voucher) (p identity.Principal, decisionID, result string) {
	f := md.GetFields()
	vouch, ok := vouchOf(f)
	if !ok {
		return identity.Principal{}, "", VouchAbsent
	}
	if v == nil {
		return identity.Principal{}, "", VouchUnverified
	}
	exp, err := strconv.ParseInt(f[MetadataExpires].GetStringValue(), 10, 64)
	if err != nil {
		return identity.Principal{}, "", VouchInvalid
	}
	vouch.ExpiresUnixMs = exp
	macText := f[MetadataMAC].GetStringValue()
	var buf [48]byte
	if base64.RawURLEncoding.DecodedLen(len(macText)) > len(buf) {
		return identity.Principal{}, "", VouchInvalid
	}
	n, err := base64.RawURLEncoding.Decode(buf[:], []byte(macText))
	if err != nil {
		return identity.Principal{}, "", VouchInvalid
	}
	switch err := v.Open(&vouch, buf[:n]); err {
	case nil:
		return vouch.Principal, vouch.DecisionID, VouchVerified
	case identity.ErrVouchExpired:
		return identity.Principal{}, "", VouchExpired
	default:
		return identity.Principal{}, "", VouchInvalid
	}
}

// vouchOf is the one reading of ext_authz's metadata fields into what is
// sealed: both seal and VouchedPrincipal use it, so they cannot disagree on
// what a MAC covers. ok is false without a decision id (no ext_authz
// decision).
func vouchOf(f map[string]*structpb.Value) (identity.Vouch, bool) {
	id := f["decision_id"].GetStringValue()
	if id == "" {
		return identity.Vouch{}, false
	}
	p := identity.Principal{Kind: identity.KindAnonymous}
	if pid := f["principal_id"].GetStringValue(); pid != "" {
		p.ID = pid
		p.Kind = identity.Kind(f["principal_kind"].GetStringValue())
		p.Tenant = f["tenant"].GetStringValue()
		if rs := f["roles"].GetListValue().GetValues(); len(rs) > 0 {
			p.Roles = make([]string, len(rs))
			for i, r := range rs {
				p.Roles[i] = r.GetStringValue()
			}
		}
	}
	return identity.Vouch{DecisionID: id, Principal: p}, true
}
