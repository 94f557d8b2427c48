package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/ratelimit"
)

// checkLimits runs the limits an allowing decision carries and turns the
// answer into the decision to enforce: 429 with Retry-After and the IETF
// RateLimit headers when over a limit, 503 when the limiter cannot decide
// and the limit fails closed. It returns an error only when the request's
// deadline ran out, which is "could not decide", not a deny.
func (p *Pipeline) checkLimits(ctx context.Context, out *Outcome) error {
	if p.limiter == nil {
		out.Decision = policy.Decision{Allowed: false, HTTPStatus: http.StatusInternalServerError,
			Reason: "rate_limiter_not_configured", Message: "the policy set limits but no limiter is configured"}
		return nil
	}
	limits := make([]ratelimit.Limit, len(out.Decision.Limits))
	for i, l := range out.Decision.Limits {
		limits[i] = ratelimit.Limit{Name: l.Name, Tenant: l.Tenant, Principal: l.Principal, Key: l.Key, Limit: l.Limit, Period: l.Period, Cost: l.Cost,
			Estimated: l.Estimated, Shadow: l.Shadow, FailureMode: ratelimit.FailureMode(l.FailureMode)}
	}
	res, err := p.limiter.Check(ctx, out.DecisionID, limits)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return fmt.Errorf("rate limits: %w", ctx.Err())
	case errors.Is(err, ratelimit.ErrUnavailable):
		out.Decision = policy.Decision{Allowed: false, HTTPStatus: http.StatusServiceUnavailable,
			Reason: "rate_limiter_unavailable", Message: "rate limits cannot be checked right now; retry later",
			Headers: []policy.Header{{Key: "retry-after", Value: "1"}}}
		p.logger.Warn("rate limiter unavailable; failing closed", "decision_id", out.DecisionID, "error", err)
		return nil
	default:
		// A policy bug (bad limit, keys in different hash slots): deny with a
		// reason rather than let the request through unlimited.
		out.Decision = policy.Decision{Allowed: false, HTTPStatus: http.StatusInternalServerError,
			Reason: "invalid_limits", Message: "the request's limits are misconfigured; quote the decision id"}
		p.logger.Error("policy limits rejected by the limiter", "decision_id", out.DecisionID, "error", err)
		return nil
	}
	out.RateLimit = &res
	headers := rateLimitHeaders(res)
	if !res.Allowed {
		name := ""
		for _, l := range res.Limits {
			if l.Exceeded && !l.Shadow {
				name = l.Name
				break
			}
		}
		out.Decision = policy.Decision{Allowed: false, HTTPStatus: http.StatusTooManyRequests,
			Reason: "rate_limited", Message: fmt.Sprintf("limit %q exceeded; retry after %s", name, res.RetryAfterHeader()+"s"),
			Headers: append(headers, policy.Header{Key: "retry-after", Value: res.RetryAfterHeader()})}
		return nil
	}
	if p.cfg.RateLimitHeaders {
		out.Decision.ResponseHeadersToAdd = append(out.Decision.ResponseHeadersToAdd, headers...)
	}
	return nil
}

func rateLimitHeaders(res ratelimit.Result) []policy.Header {
	var hs []policy.Header
	if v := res.RateLimitHeader(); v != "" {
		hs = append(hs, policy.Header{Key: "ratelimit", Value: v})
	}
	if v := res.RateLimitPolicyHeader(); v != "" {
		hs = append(hs, policy.Header{Key: "ratelimit-policy", Value: v})
	}
	return hs
}
