package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	bulwarkv1 "github.com/bulwark-ai/bulwark/proto/bulwark/v1"
)

// runUsage asks a running server's AdminService.GetUsage for a tenant's or
// a principal's usage and prints it: a table of buckets and per-model
// totals, or the response as JSON (--json). The caller's credential is an
// operator's API key or JWT (--key, or BULWARK_API_KEY).
func runUsage(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bulwark usage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9193", "address of a running bulwark serve's API listener (api_addr)")
	key := fs.String("key", "", "operator credential: API key or JWT (default: $BULWARK_API_KEY)")
	tenant := fs.String("tenant", "", "whose usage: a tenant (every principal of it), or with --principal the principal's tenant")
	principal := fs.String("principal", "", "one principal's usage")
	model := fs.String("model", "", "only this model")
	since := fs.Duration("since", 24*time.Hour, "the range: from this long before --to")
	from := fs.String("from", "", "the range's start, RFC 3339 (overrides --since)")
	to := fs.String("to", "", "the range's end, RFC 3339, exclusive (default: now)")
	gran := fs.String("granularity", "hour", "bucket width: minute, hour, day or month")
	asJSON := fs.Bool("json", false, "print the response as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline for the call")
	var tlsFlags clientTLS
	fs.StringVar(&tlsFlags.CAFile, "tls-ca", "", "connect over TLS, trusting this CA bundle (PEM)")
	fs.StringVar(&tlsFlags.CertFile, "tls-cert", "", "client certificate (PEM) for a server that requires mTLS")
	fs.StringVar(&tlsFlags.KeyFile, "tls-key", "", "the client certificate's private key (PEM)")
	fs.StringVar(&tlsFlags.ServerName, "tls-server-name", "", "name to verify the server's certificate against")
	if err := fs.Parse(args); err != nil {
		return &exitError{2, err}
	}
	if fs.NArg() > 0 {
		return &exitError{2, fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if *tenant == "" && *principal == "" {
		return &exitError{2, errors.New("name a --tenant or a --principal")}
	}
	g, ok := map[string]bulwarkv1.UsageGranularity{
		"minute": bulwarkv1.UsageGranularity_USAGE_GRANULARITY_MINUTE, "hour": bulwarkv1.UsageGranularity_USAGE_GRANULARITY_HOUR,
		"day": bulwarkv1.UsageGranularity_USAGE_GRANULARITY_DAY, "month": bulwarkv1.UsageGranularity_USAGE_GRANULARITY_MONTH,
	}[strings.ToLower(*gran)]
	if !ok {
		return &exitError{2, fmt.Errorf("--granularity %q: want minute, hour, day or month", *gran)}
	}
	end := time.Now()
	if *to != "" {
		t, err := time.Parse(time.RFC3339, *to)
		if err != nil {
			return &exitError{2, fmt.Errorf("--to: %w", err)}
		}
		end = t
	}
	start := end.Add(-*since)
	if *from != "" {
		t, err := time.Parse(time.RFC3339, *from)
		if err != nil {
			return &exitError{2, fmt.Errorf("--from: %w", err)}
		}
		start = t
	}
	cred := *key
	if cred == "" {
		cred = os.Getenv("BULWARK_API_KEY")
	}
	if cred == "" {
		return &exitError{2, errors.New("no credential: pass --key or set BULWARK_API_KEY (an operator's API key or JWT)")}
	}
	creds, err := tlsFlags.credentials()
	if err != nil {
		return &exitError{2, err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := getUsage(ctx, *addr, creds, cred, &bulwarkv1.GetUsageRequest{Tenant: *tenant, Principal: *principal, Model: *model,
		StartTime: timestamppb.New(start), EndTime: timestamppb.New(end), Granularity: g})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(usageJSON(resp))
	}
	return printUsage(stdout, resp)
}

func getUsage(ctx context.Context, addr string, creds credentials.TransportCredentials, cred string, req *bulwarkv1.GetUsageRequest) (*bulwarkv1.GetUsageResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
	resp, err := bulwarkv1.NewAdminServiceClient(conn).GetUsage(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("get usage: %w", err)
	}
	return resp, nil
}

// usageTotalsJSON is UsageTotals as `bulwark usage --json` prints it.
type usageTotalsJSON struct {
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CachedTokens int64   `json:"cached_tokens"`
	Requests     int64   `json:"requests"`
	Denials      int64   `json:"denials"`
	CostUSD      float64 `json:"cost_usd"`
	CostNanoUSD  int64   `json:"cost_nano_usd"`
}

type usageBucketJSON struct {
	Start string `json:"start"`
	Model string `json:"model"`
	usageTotalsJSON
}

type usageModelJSON struct {
	Model string `json:"model"`
	usageTotalsJSON
}

type usageOutJSON struct {
	Buckets []usageBucketJSON `json:"buckets"`
	Models  []usageModelJSON  `json:"models"`
	Total   usageTotalsJSON   `json:"total"`
}

func totalsJSON(t *bulwarkv1.UsageTotals) usageTotalsJSON {
	return usageTotalsJSON{InputTokens: t.GetInputTokens(), OutputTokens: t.GetOutputTokens(), CachedTokens: t.GetCachedTokens(),
		Requests: t.GetRequests(), Denials: t.GetDenials(), CostUSD: t.GetCostUsd(), CostNanoUSD: t.GetCostNanoUsd()}
}

func usageJSON(r *bulwarkv1.GetUsageResponse) usageOutJSON {
	out := usageOutJSON{Buckets: []usageBucketJSON{}, Models: []usageModelJSON{}, Total: totalsJSON(r.GetTotal())}
	for _, b := range r.GetBuckets() {
		out.Buckets = append(out.Buckets, usageBucketJSON{Start: b.GetStartTime().AsTime().UTC().Format(time.RFC3339), Model: b.GetModel(),
			usageTotalsJSON: totalsJSON(b.GetTotals())})
	}
	for _, m := range r.GetModels() {
		out.Models = append(out.Models, usageModelJSON{Model: m.GetModel(), usageTotalsJSON: totalsJSON(m.GetTotals())})
	}
	return out
}

func printUsage(w io.Writer, r *bulwarkv1.GetUsageResponse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tMODEL\tINPUT\tOUTPUT\tCACHED\tREQUESTS\tDENIALS\tCOST_USD")
	row := func(start, model string, t *bulwarkv1.UsageTotals) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.6f\n", start, model, t.GetInputTokens(), t.GetOutputTokens(),
			t.GetCachedTokens(), t.GetRequests(), t.GetDenials(), t.GetCostUsd())
	}
	for _, b := range r.GetBuckets() {
		row(b.GetStartTime().AsTime().UTC().Format(time.RFC3339), b.GetModel(), b.GetTotals())
	}
	for _, m := range r.GetModels() {
		row("total", m.GetModel(), m.GetTotals())
	}
	row("total", "*", r.GetTotal())
	return tw.Flush()
}
