package api

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bulwark-ai/bulwark/internal/usage"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// UsageQuerier reads usage buckets (usage.Store).
type UsageQuerier interface {
	Query(ctx context.Context, q usage.Query) ([]usage.Row, error)
}

var _ UsageQuerier = (*usage.Store)(nil)

// usageTimeout bounds the store read of one GetUsage (one Redis round trip).
const usageTimeout = 2 * time.Second

var granularities = map[bulwarkv1.UsageGranularity]usage.Granularity{
	bulwarkv1.UsageGranularity_USAGE_GRANULARITY_UNSPECIFIED: usage.Hour,
	bulwarkv1.UsageGranularity_USAGE_GRANULARITY_MINUTE:      usage.Minute,
	bulwarkv1.UsageGranularity_USAGE_GRANULARITY_HOUR:        usage.Hour,
	bulwarkv1.UsageGranularity_USAGE_GRANULARITY_DAY:         usage.Day,
	bulwarkv1.UsageGranularity_USAGE_GRANULARITY_MONTH:       usage.Month,
}

// GetUsage reports a tenant's or a principal's usage, within the caller's
// scope: an operator of one tenant reads only that tenant.
func (a *Admin) GetUsage(ctx context.Context, req *bulwarkv1.GetUsageRequest) (*bulwarkv1.GetUsageResponse, error) {
	details := map[string]any{"tenant": req.GetTenant(), "principal": req.GetPrincipal(), "model": req.GetModel()}
	return call(ctx, a, "GetUsage", details, func(sc scope) (*bulwarkv1.GetUsageResponse, error) {
		if a.usage == nil {
			return nil, status.Error(codes.Unimplemented, "usage is not recorded")
		}
		if req.GetTenant() == "" && req.GetPrincipal() == "" {
			return nil, status.Error(codes.InvalidArgument, "name a tenant or a principal")
		}
		if !sc.allows(req.GetTenant()) {
			return nil, denied("tenant_out_of_scope", "tenant %q is outside the caller's scope", req.GetTenant())
		}
		g, ok := granularities[req.GetGranularity()]
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "unknown granularity %v", req.GetGranularity())
		}
		end := a.now()
		if req.EndTime != nil {
			if err := req.GetEndTime().CheckValid(); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "end_time: %v", err)
			}
			end = req.GetEndTime().AsTime()
		}
		start := end.Add(-24 * time.Hour)
		if req.StartTime != nil {
			if err := req.GetStartTime().CheckValid(); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "start_time: %v", err)
			}
			start = req.GetStartTime().AsTime()
		}
		qctx, cancel := context.WithTimeout(ctx, usageTimeout)
		defer cancel()
		rows, err := a.usage.Query(qctx, usage.Query{Tenant: req.GetTenant(), Principal: req.GetPrincipal(), Model: req.GetModel(),
			From: start, To: end, Granularity: g})
		switch {
		case errors.Is(err, usage.ErrBadQuery):
			return nil, status.Error(codes.InvalidArgument, err.Error())
		case err != nil:
			return nil, status.Errorf(codes.Unavailable, "usage store: %v", err)
		}
		return usageResponse(rows), nil
	})
}

func usageResponse(rows []usage.Row) *bulwarkv1.GetUsageResponse {
	out := &bulwarkv1.GetUsageResponse{Buckets: make([]*bulwarkv1.UsageBucket, 0, len(rows))}
	var total usage.Totals
	byModel := map[string]*usage.Totals{}
	var models []string
	for _, r := range rows {
		out.Buckets = append(out.Buckets, &bulwarkv1.UsageBucket{StartTime: timestamppb.New(r.Start), Model: r.Model, Totals: usageTotals(r.Totals)})
		total.Add(r.Totals)
		m := byModel[r.Model]
		if m == nil {
			m = &usage.Totals{}
			byModel[r.Model] = m
			models = append(models, r.Model)
		}
		m.Add(r.Totals)
	}
	slices.Sort(models)
	for _, m := range models {
		out.Models = append(out.Models, &bulwarkv1.ModelUsage{Model: m, Totals: usageTotals(*byModel[m])})
	}
	out.Total = usageTotals(total)
	return out
}

func usageTotals(t usage.Totals) *bulwarkv1.UsageTotals {
	return &bulwarkv1.UsageTotals{InputTokens: t.InputTokens, OutputTokens: t.OutputTokens, CachedTokens: t.CachedTokens,
		Requests: t.Requests, Denials: t.Denials, CostUsd: t.CostUSD(), CostNanoUsd: t.CostNanoUSD}
}
