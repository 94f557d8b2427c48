package api_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bulwark-ai/bulwark/internal/usage"
	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// TestAdminGetUsage: GetUsage reports what the recorder stored, per bucket
// and model with totals, priced from the default price table, within the
// operator's tenant scope.
func TestAdminGetUsage(t *testing.T) {
	f := newFixture(t, options{})
	ctx := context.Background()
	for _, x := range []usage.Exchange{
		{Tenant: "acme", Principal: "app", Model: "gpt-4o", Input: 1000, Output: 100, Cached: 200},
		{Tenant: "acme", Principal: "app", Model: "gpt-4o-mini", Input: 10, Output: 5},
		{Tenant: "acme", Principal: "other", Model: "gpt-4o", Input: 7, Denied: true},
		{Tenant: "beta", Principal: "beta-app", Model: "gpt-4o", Input: 1},
	} {
		if err := f.usage.Record(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	req := &bulwarkv1.GetUsageRequest{Tenant: "acme", StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(time.Minute)),
		Granularity: bulwarkv1.UsageGranularity_USAGE_GRANULARITY_DAY}
	resp, err := f.admin.GetUsage(f.as("ops"), req)
	if err != nil {
		t.Fatal(err)
	}
	tot := resp.GetTotal()
	// gpt-4o: 800×2.5 + 200×1.25 + 100×10 = 3250 nano-USD per... ×1000: 3.25e6;
	// + 7×2.5×1000 = 17500; gpt-4o-mini: 10×0.15 + 5×0.6 = 4.5 → 4500.
	if tot.GetInputTokens() != 1017 || tot.GetOutputTokens() != 105 || tot.GetCachedTokens() != 200 || tot.GetRequests() != 3 ||
		tot.GetDenials() != 1 || tot.GetCostNanoUsd() != 3_250_000+17_500+4_500 {
		t.Errorf("total %v", tot)
	}
	if len(resp.GetModels()) != 2 || resp.GetModels()[0].GetModel() != "gpt-4o" || resp.GetModels()[1].GetTotals().GetInputTokens() != 10 {
		t.Errorf("models %v", resp.GetModels())
	}
	if len(resp.GetBuckets()) < 2 {
		t.Errorf("buckets %v", resp.GetBuckets())
	}
	// One principal, one model.
	req.Principal, req.Model = "app", "gpt-4o"
	resp, err = f.admin.GetUsage(f.as("ops"), req)
	if err != nil || resp.GetTotal().GetInputTokens() != 1000 || resp.GetTotal().GetRequests() != 1 {
		t.Errorf("principal app, gpt-4o: %v, %v", resp.GetTotal(), err)
	}
	// beta's operator may not read acme; may read beta.
	req.Principal, req.Model = "", ""
	if _, err := f.admin.GetUsage(f.as("beta-ops"), req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("beta-ops reading acme: %v, want PermissionDenied", err)
	}
	req.Tenant = "beta"
	if resp, err := f.admin.GetUsage(f.as("beta-ops"), req); err != nil || resp.GetTotal().GetInputTokens() != 1 {
		t.Errorf("beta-ops reading beta: %v, %v", resp.GetTotal(), err)
	}
	for name, bad := range map[string]*bulwarkv1.GetUsageRequest{
		"no subject":  {},
		"empty range": {Tenant: "acme", StartTime: timestamppb.New(now), EndTime: timestamppb.New(now)},
		"too long":    {Tenant: "acme", StartTime: timestamppb.New(now.AddDate(-1, 0, 0)), Granularity: bulwarkv1.UsageGranularity_USAGE_GRANULARITY_MINUTE},
		"bad enum":    {Tenant: "acme", Granularity: 99},
	} {
		if _, err := f.admin.GetUsage(f.as("ops"), bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := f.admin.GetUsage(f.as("app"), req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("non-operator: %v, want PermissionDenied", err)
	}
}
