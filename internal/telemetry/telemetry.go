// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and extracts the parent trace from the headers Envoy
// forwards (W3C traceparent/tracestate and B3, single or multi header, as
// Envoy and Istio emit), so Bulwark's spans join the request's own trace in
// Jaeger or any OTLP backend.
//
// Tracing is off unless an OTLP endpoint is configured; then Enabled is
// false, no span is started and the hot path pays nothing.
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
// OTEL_TRACES_SAMPLER(_ARG) and OTEL_SERVICE_NAME (default "bulwark").
// environ is os.Environ's form; getenv-style lookups keep tests hermetic.
func Setup(ctx context.Context, environ []string) (*Tracing, error) {
	env := func(k string) string {
		for _, kv := range environ {
			if name, v, ok := strings.Cut(kv, "="); ok && name == k {
				return v
			}
		}
		return ""
	}
	prop := propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{},
		b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader|b3.B3SingleHeader)))
	off := &Tracing{Tracer: noop.NewTracerProvider().Tracer("bulwark"), Propagator: prop}
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
	// The SDK reads OTEL_TRACES_SAMPLER / _ARG itself when no sampler is set,
	// but only from the process environment; honour the given one.
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if s := sampler(env("OTEL_TRACES_SAMPLER"), env("OTEL_TRACES_SAMPLER_ARG")); s != nil {
		opts = append(opts, sdktrace.WithSampler(s))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return &Tracing{Enabled: true, Tracer: tp.Tracer("github.com/bulwark-ai/bulwark"), Propagator: prop, provider: tp}, nil
}

func sampler(name, arg string) sdktrace.Sampler {
	ratio := 1.0
	if arg != "" {
		if _, err := fmt.Sscanf(arg, "%g", &ratio); err != nil || ratio < 0 || ratio > 1 {
			ratio = 1
		}
	}
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	return nil
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

// Env is os.Environ, for callers that do not inject an environment.
func Env() []string { return os.Environ() }
