// Package observe is where Junction's logs, metrics and traces are set up.
// Components receive a *slog.Logger, a prometheus.Registerer and a
// trace.Tracer from the host and use the W3C propagator here; they never
// configure exporters themselves. Nothing here touches OpenTelemetry's
// globals, so a program embedding Junction keeps its own.
package observe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// NewLogger builds the process logger. format is "text" or "json".
func NewLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors, so /metrics also shows runtime health.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Propagator is W3C trace context plus baggage, used on every hop.
var Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Recording reports whether spans from tr go anywhere, so hot paths can
// skip building them when tracing is off (the no-op tracer).
func Recording(tr trace.Tracer) bool {
	_, off := tr.(noop.Tracer)
	return tr != nil && !off
}

// Tracer returns the tracer for one component ("junction/bus", ...) from
// tp, or a no-op tracer when tp is nil.
func Tracer(tp trace.TracerProvider, component string) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer("junction/" + component)
}

// TracingOptions selects the span exporter.
type TracingOptions struct {
	Exporter string // none, stdout, otlp
	Endpoint string
	Sample   float64
}

// NewTracerProvider builds the tracer provider the config asks for, with
// its shutdown function. With exporter "none" no spans are recorded at all
// (OpenTelemetry's no-op provider): an incoming traceparent still crosses
// every hop unchanged, so callers' traces stay whole, but Junction pays
// nothing for spans nobody collects. Recording spans only to drop them
// measurably slowed every publish and delivery.
func NewTracerProvider(ctx context.Context, o TracingOptions) (trace.TracerProvider, func(context.Context) error, error) {
	if o.Exporter == "none" || o.Exporter == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	var opts []sdktrace.TracerProviderOption
	switch o.Exporter {
	case "stdout":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
		if err != nil {
			return nil, nil, fmt.Errorf("stdout trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	case "otlp":
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(o.Endpoint), otlptracehttp.WithInsecure())
		if err != nil {
			return nil, nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	res := resource.NewSchemaless(semconv.ServiceName("junction"))
	opts = append(opts, sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.Sample))))
	tp := sdktrace.NewTracerProvider(opts...)
	return tp, tp.Shutdown, nil
}
