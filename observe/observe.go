// Package observe is where Junction's logs, metrics and traces are set up.
// Components receive a *slog.Logger and a prometheus.Registerer from the
// host and use the global OpenTelemetry tracer and W3C propagator; they
// never configure exporters themselves.
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
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
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

// Tracer returns the tracer for one component ("junction/bus", ...).
func Tracer(component string) trace.Tracer { return otel.Tracer("junction/" + component) }

// TracingOptions selects the span exporter.
type TracingOptions struct {
	Exporter string // none, stdout, otlp
	Endpoint string
	Sample   float64
}

// SetupTracing installs the global tracer provider and propagator and
// returns its shutdown function. With exporter "none" spans are still
// created and trace context still crosses every hop (new span ids are
// minted), they are just not exported.
func SetupTracing(ctx context.Context, o TracingOptions) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(Propagator)
	var opts []sdktrace.TracerProviderOption
	switch o.Exporter {
	case "stdout":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stderr))
		if err != nil {
			return nil, fmt.Errorf("stdout trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	case "otlp":
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(o.Endpoint), otlptracehttp.WithInsecure())
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	res := resource.NewSchemaless(semconv.ServiceName("junction"))
	opts = append(opts, sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.Sample))))
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}
