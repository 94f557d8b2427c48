package envoy

import (
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/bulwark-ai/bulwark/internal/identity"
)

// credentialHeaders are the headers the identity stage reads, and the
// providers' own key headers (Azure OpenAI's api-key, Gemini's
// x-goog-api-key), which it does not read but which are credentials all
// the same: stripping keeps them out of the policy input too.
var credentialHeaders = [...]string{"authorization", "x-api-key", "x-forwarded-client-cert", "api-key", "x-goog-api-key"}

// Credentials takes the raw credentials out of a CheckRequest for the identity
// stage. With strip set it also deletes them from the request's headers
// (both the headers map and the header_map Envoy sends with
// encode_raw_headers), so BuildInput never copies them into the policy input.
// The request is the server's own decoded copy, so changing it is safe.
func Credentials(req *authv3.CheckRequest, strip bool) identity.Request {
	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	var c identity.Request
	c.SourcePrincipal = attrs.GetSource().GetPrincipal()
	h := httpReq.GetHeaders()
	c.Authorization = h["authorization"]
	c.APIKey = h["x-api-key"]
	c.XFCC = h["x-forwarded-client-cert"]
	if hm := httpReq.GetHeaderMap(); hm != nil {
		kept := hm.Headers[:0]
		for _, hv := range hm.GetHeaders() {
			name := strings.ToLower(hv.GetKey())
			val := hv.GetValue()
			if val == "" && len(hv.GetRawValue()) > 0 {
				val = string(hv.GetRawValue())
			}
			isCred := true
			switch name {
			case "authorization":
				if c.Authorization == "" {
					c.Authorization = val
				}
			case "x-api-key":
				if c.APIKey == "" {
					c.APIKey = val
				}
			case "x-forwarded-client-cert":
				if c.XFCC == "" {
					c.XFCC = val
				}
			case "api-key", "x-goog-api-key": // a provider's key: stripped, not read
			default:
				isCred = false
			}
			if !strip || !isCred {
				kept = append(kept, hv)
			}
		}
		if strip {
			hm.Headers = kept
		}
	}
	if strip {
		for _, name := range credentialHeaders {
			delete(h, name)
		}
	}
	return c
}
