package envoy

import (
	"context"
	"errors"
	"net/http"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// DenyStatus is the HTTP status of a deny: the policy's http_status, 403
// when it gave none, and 403 for a code Envoy's StatusCode enum does not
// define (Envoy refuses a local reply with any other). Every door and the
// exchange core use it, so a deny answers with the same status wherever it
// was decided.
func DenyStatus(d policy.Decision) int {
	code := d.HTTPStatus
	if code == 0 {
		return http.StatusForbidden
	}
	if _, known := typev3.StatusCode_name[int32(code)]; !known { // #nosec G115 -- any int fits the lookup; unknown values miss
		return http.StatusForbidden
	}
	return code
}

// DenyMessage is the human-readable message of a deny whose policy wrote
// no body: the policy's message, or the status text; a policy that failed
// (undefined, invalid result) says only that, the details stay in the logs.
// Every door words a deny with it.
func DenyMessage(out pipeline.Outcome, status int) string {
	switch {
	case out.PolicyError != nil:
		return "the request could not be authorized; quote the decision id when reporting this"
	case out.Decision.Message != "":
		return out.Decision.Message
	}
	return http.StatusText(status)
}

// Undecided is the gRPC status of a call for which no decision could be
// made: the caller went away (CANCELED), the decision's deadline passed
// (DEADLINE_EXCEEDED), or a dependency failed (UNAVAILABLE, so that Envoy's
// failure_mode_allow applies). what names the call in the message ("check",
// "exchange", "call"). It is the one place the three doors map a failure
// to decide; what a door adds (protocol errors) it maps before calling it.
func Undecided(ctx context.Context, err error, what string) error {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return status.Error(codes.Canceled, "caller cancelled the "+what)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "decision not made within the deadline")
	default:
		return status.Error(codes.Unavailable, "decision could not be made")
	}
}
