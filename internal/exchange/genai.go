package exchange

import (
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/internal/usage"
)

// UsageRecorder records an exchange's usage when it ends (usage.Recorder):
// one store write per exchange.
type UsageRecorder interface {
	Record(ctx context.Context, x usage.Exchange) error
}

var _ UsageRecorder = (*usage.Recorder)(nil)

// genAI is what an exchange learns for the OpenTelemetry GenAI semantic
// conventions and for usage attribution: the answer's model, id and finish
// reasons, the tokens reported, and when the first chunk of a streamed
// answer came. Never prompt or answer text.
type genAI struct {
	// started is when the exchange began (its span's start), forwardedAt
	// when the request was let through to the model.
	started, forwardedAt time.Time
	// ttfc is the time from forwardedAt to the streamed answer's first
	// chunk (firstSeen: one came).
	ttfc      time.Duration
	firstSeen bool
	// model and id are the answer's (identDone: a stream named both).
	model, id string
	identDone bool
	finish    []string
	usage     llmapi.Usage
	haveUsage bool
}

// addFinish records a finish reason once.
func (g *genAI) addFinish(r string) {
	if r != "" && !slices.Contains(g.finish, r) && len(g.finish) < 8 {
		g.finish = append(g.finish, r)
	}
}

// ident records the stream's model and id from its events until both are known.
func (g *genAI) ident(pe *llmapi.ParsedEvent) {
	if g.identDone {
		return
	}
	m, id := pe.Ident()
	if g.model == "" {
		g.model = m
	}
	if g.id == "" {
		g.id = id
	}
	g.identDone = g.model != "" && g.id != ""
}

// operationName is gen_ai.operation.name for an API.
func operationName(api llmapi.API) attribute.KeyValue {
	switch api {
	case llmapi.OpenAICompletions:
		return semconv.GenAIOperationNameTextCompletion
	case llmapi.OpenAIEmbeddings:
		return semconv.GenAIOperationNameEmbeddings
	case llmapi.GeminiGenerate:
		return semconv.GenAIOperationNameGenerateContent
	}
	return semconv.GenAIOperationNameChat
}

// providerName is gen_ai.provider.name for the request's provider.
func providerName(r *llmapi.Request) attribute.KeyValue {
	switch r.Provider {
	case llmapi.ProviderAnthropic:
		return semconv.GenAIProviderNameAnthropic
	case llmapi.ProviderBedrock:
		return semconv.GenAIProviderNameAWSBedrock
	case llmapi.ProviderGemini:
		return semconv.GenAIProviderNameGCPGemini
	case llmapi.ProviderVertex:
		return semconv.GenAIProviderNameGCPVertexAI
	case llmapi.ProviderAzure:
		return semconv.GenAIProviderNameAzureAIOpenAI
	case llmapi.ProviderOpenAI:
		return semconv.GenAIProviderNameOpenAI
	}
	switch r.API {
	case llmapi.AnthropicMessages:
		return semconv.GenAIProviderNameAnthropic
	case llmapi.BedrockConverse, llmapi.BedrockInvoke:
		return semconv.GenAIProviderNameAWSBedrock
	case llmapi.GeminiGenerate:
		return semconv.GenAIProviderNameGCPGemini
	}
	return semconv.GenAIProviderNameOpenAI
}

// endGenAI ends the exchange with its GenAI span (when traced: one span
// named "<operation> <model>", beside the decisions' spans, from the
// request's headers to the exchange's end, carrying only the
// gen_ai.* attributes and the outcome) and records its usage.
func (x *Session) endGenAI(ctx context.Context) {
	g := &x.gen
	if rs := x.resp; rs != nil && rs.haveUsage && !g.haveUsage {
		g.usage, g.haveUsage = rs.usage, true // a stream's, accumulated event by event
	}
	if tr := x.c.opts.Tracing; tr != nil && tr.Enabled && x.llmReq != nil && x.traceCtx != nil {
		x.genAISpan(tr.Tracer)
	}
	if x.c.opts.Usage == nil || x.headers == nil {
		return
	}
	var tenant, principal string
	if p := x.principal; p != nil {
		tenant, principal = p.Tenant, p.ID
	}
	model := g.model
	if model == "" && x.llmReq != nil {
		model = x.llmReq.Model
	}
	ux := usage.Exchange{Tenant: tenant, Principal: principal, Model: model, Denied: x.outcome == "denied"}
	if g.haveUsage {
		ux.Input, ux.Output, ux.Cached = g.usage.PromptTokens, g.usage.CompletionTokens, g.usage.CachedTokens
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reconcileTimeout)
	defer cancel()
	if err := x.c.opts.Usage.Record(rctx, ux); err != nil {
		x.c.logger.Warn("usage not recorded", "error", err)
	}
}

func (x *Session) genAISpan(tracer trace.Tracer) {
	g := &x.gen
	r := x.llmReq
	op := operationName(r.API)
	name := op.Value.AsString()
	if r.Model != "" {
		name += " " + r.Model
	}
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs, op, providerName(r))
	if r.Model != "" {
		attrs = append(attrs, semconv.GenAIRequestModel(r.Model))
	}
	if r.MaxTokens > 0 {
		attrs = append(attrs, semconv.GenAIRequestMaxTokens(int(r.MaxTokens)))
	}
	if r.Stream {
		attrs = append(attrs, semconv.GenAIRequestStream(true))
	}
	if g.model != "" {
		attrs = append(attrs, semconv.GenAIResponseModel(g.model))
	}
	if g.id != "" {
		attrs = append(attrs, semconv.GenAIResponseID(g.id))
	}
	if len(g.finish) > 0 {
		attrs = append(attrs, semconv.GenAIResponseFinishReasons(g.finish...))
	}
	if g.haveUsage {
		attrs = append(attrs, semconv.GenAIUsageInputTokens(int(g.usage.PromptTokens)),
			semconv.GenAIUsageOutputTokens(int(g.usage.CompletionTokens)))
		if g.usage.CachedTokens > 0 {
			attrs = append(attrs, semconv.GenAIUsageCacheReadInputTokens(int(g.usage.CachedTokens)))
		}
	}
	if g.firstSeen {
		attrs = append(attrs, semconv.GenAIResponseTimeToFirstChunk(g.ttfc.Seconds()))
	}
	attrs = append(attrs, attribute.String("bulwark.outcome", x.outcome))
	_, span := tracer.Start(x.traceCtx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(g.started), trace.WithAttributes(attrs...))
	if x.outcome == "error" || x.outcome == "timeout" {
		span.SetStatus(codes.Error, x.outcome)
	}
	span.End()
}
