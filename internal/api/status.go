package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/bulwark-ai/bulwark/internal/envoy"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// This file is the one place where outcomes become gRPC status codes.

// ErrorDomain is the domain of the google.rpc.ErrorInfo details Bulwark
// attaches to its errors.
const ErrorDomain = "bulwark.ai"

// invalid is unusable input: INVALID_ARGUMENT with the field and why.
func invalid(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	st := status.New(codes.InvalidArgument, field+": "+msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: field, Description: msg}}}); err == nil {
		st = d
	}
	return st.Err()
}

// refusal returns the gRPC error for a denial that refuses the caller, or
// nil when the denial is an answer about the content:
//
//	401 (no or a rejected credential)            UNAUTHENTICATED
//	429 (a rate limit or quota)                  RESOURCE_EXHAUSTED + RetryInfo
//	503 (a limiter failing closed, ...)          UNAVAILABLE
//	other 5xx (redaction failed, bad limits)     INTERNAL
//	other denial of the request's headers        PERMISSION_DENIED (role, route)
//	any other denial                             nil: allowed = false is the answer
//
// Every error carries an ErrorInfo with the reason, decision id, HTTP
// status and phase.
func refusal(d *bulwarkv1.Decision) error {
	if d.GetAllowed() {
		return nil
	}
	var code codes.Code
	hs := int(d.GetHttpStatus())
	switch {
	case hs == http.StatusUnauthorized:
		code = codes.Unauthenticated
	case hs == http.StatusTooManyRequests:
		code = codes.ResourceExhausted
	case hs == http.StatusServiceUnavailable:
		code = codes.Unavailable
	case hs >= 500:
		code = codes.Internal
	case d.GetPhase() == phaseRequestHeaders:
		code = codes.PermissionDenied
	default:
		return nil
	}
	msg := d.GetReason()
	if m := d.GetMessage(); m != "" {
		msg += ": " + m
	}
	st := status.New(code, msg)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: d.GetReason(), Domain: ErrorDomain, Metadata: map[string]string{
		"decision_id": d.GetDecisionId(), "http_status": strconv.Itoa(hs), "phase": d.GetPhase()}}}
	if code == codes.ResourceExhausted {
		if s, err := strconv.Atoi(d.GetHeaders()["retry-after"]); err == nil && s > 0 {
			details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(s) * time.Second)})
		}
	}
	if dst, err := st.WithDetails(details...); err == nil {
		st = dst
	}
	return st.Err()
}

// undecided maps an exchange that could not decide (the pipeline's deadline,
// an unavailable dependency) as the Envoy doors map it.
func undecided(ctx context.Context, err error) error {
	return envoy.Undecided(ctx, err, "call")
}

// grpcCodeName is a code as the audit trail writes it: "ok",
// "permission_denied", ...
func grpcCodeName(c codes.Code) string {
	var b strings.Builder
	prevLower := false
	for _, r := range c.String() {
		upper := r >= 'A' && r <= 'Z'
		if upper {
			if prevLower {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		prevLower = !upper
		b.WriteRune(r)
	}
	return b.String()
}
