// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and extracts the parent trace from the headers Envoy
// forwards (W3C traceparent/tracestate and B3, single or multi header, as
// Envoy and Istio emit), so Bulwark's spans join the request's own trace in
// Jaeger or any OTLP backend.
//
// Tracing is off unless an OTLP endpoint is configured; then Enabled is
// false, no span is started and the hot path pays nothing.
//
// The package stands alone: it imports OTel and the standard library only,
// never Bulwark's core (TestStandsAlone). The doors start the server span;
// the pipeline puts the decision on the span it is given.
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is the tracer Bulwark's stages use plus the propagator that reads
// Envoy's headers. The zero value is disabled.
type Tracing struct {
	// Enabled is false when no exporter is configured: callers skip spans.
	Enabled    bool
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	provider   *sdktrace.TracerProvider
}

// Setup reads the standard variables: OTEL_TRACES_EXPORTER (otlp, or none),
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (tracing is
// on only when one is set), OTEL_EXPORTER_OTLP_PROTOCOL (grpc or
// http/protobuf, default grpc as Jaeger's OTLP port 4317 expects),
// OTEL_TRACES_SAMPLER(_ARG) and OTEL_SERVICE_NAME (default "bulwark"). The
// exporters read the rest of OTEL_EXPORTER_OTLP_* themselves, from the same
// process environment.
func Setup(ctx context.Context) (*Tracing, error) {
	env := os.Getenv
	off := &Tracing{Tracer: noop.NewTracerProvider().Tracer("bulwark"), Propagator: propagator()}
	if env("OTEL_TRACES_EXPORTER") == "none" || env("OTEL_SDK_DISABLED") == "true" {
		return off, nil
	}
	if env("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return off, nil
	}
	proto := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp *otlptrace.Exporter
	var err error
	switch proto {
	case "", "grpc":
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithTimeout(5*time.Second))
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithTimeout(5*time.Second))
	default:
		return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL %q: want grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	name := env("OTEL_SERVICE_NAME")
	if name == "" {
		name = "bulwark"
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(name)))
	if err != nil {
		res = resource.Default()
	}
	// The SDK reads OTEL_TRACES_SAMPLER / _ARG itself when no sampler is set.
	return New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(NewBatcher(exp, batchConfigFromEnv(env))),
		sdktrace.WithResource(res))), nil
}

// New is tracing on through tp (Setup builds tp from the environment;
// benchmarks and tests pass their own). Shutdown shuts tp down.
func New(tp *sdktrace.TracerProvider) *Tracing {
	return &Tracing{Enabled: true, Tracer: tp.Tracer("github.com/bulwark-ai/bulwark"), Propagator: propagator(), provider: tp}
}

// propagator reads W3C trace context and baggage, and B3 in both encodings.
func propagator() propagation.TextMapPropagator {
	return envoyPropagator{b3: b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader | b3.B3SingleHeader))}
}

// envoyPropagator extracts the parent from traceparent when the request
// has a valid one, and from B3 otherwise (Istio may send both; W3C wins),
// and baggage only when there is some. A composite propagator would parse
// every format on every request; this one parses what is there, which
// matters on a path measured in microseconds.
type envoyPropagator struct {
	tc propagation.TraceContext
	bg propagation.Baggage
	b3 propagation.TextMapPropagator
}

var _ propagation.TextMapPropagator = envoyPropagator{}

func (p envoyPropagator) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	parent := ctx
	if c.Get("traceparent") != "" {
		ctx = p.tc.Extract(parent, c)
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = p.b3.Extract(parent, c)
	}
	if c.Get("baggage") != "" {
		ctx = p.bg.Extract(ctx, c)
	}
	return ctx
}

func (p envoyPropagator) Inject(ctx context.Context, c propagation.TextMapCarrier) {
	p.tc.Inject(ctx, c)
	p.bg.Inject(ctx, c)
	p.b3.Inject(ctx, c)
}

func (p envoyPropagator) Fields() []string {
	return append(append(p.tc.Fields(), p.bg.Fields()...), p.b3.Fields()...)
}

// Shutdown flushes pending spans, waiting at most until ctx is done.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// HeaderCarrier reads propagation headers from Envoy's lower-cased header map.
type HeaderCarrier map[string]string

// Get returns a header value.
func (c HeaderCarrier) Get(k string) string { return c[strings.ToLower(k)] }

// Set is unused (Bulwark only extracts) but completes the interface.
func (c HeaderCarrier) Set(k, v string) { c[strings.ToLower(k)] = v }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
