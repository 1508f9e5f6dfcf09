package httpserver

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
)

// IsLoopback reports whether a listen address only accepts local
// connections. An empty host or a wildcard means every interface.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ErrTokenRequired is returned when the API would listen beyond loopback
// without a bearer token.
var ErrTokenRequired = errors.New("api.listen is not a loopback address, so api.token (or JUNCTION_API_TOKEN) is required")

// Metrics are the API listener's Prometheus series.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewMetrics registers the API metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_api_requests_total", Help: "API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_api_request_duration_seconds", Help: "API request latency by route.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "junction_api_requests_in_flight", Help: "API requests being served.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// Options configure the middleware chain.
type Options struct {
	Token   string
	Logger  *slog.Logger
	Metrics *Metrics
	Tracer  trace.Tracer // nil records no spans
}

// StatusWriter records the status a handler wrote, for metrics and logs.
type StatusWriter struct {
	http.ResponseWriter
	status int
}

// Code returns the status written so far (200 if only a body was, or
// nothing yet).
func (w *StatusWriter) Code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *StatusWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
	w.ResponseWriter.WriteHeader(s)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *StatusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Wrap applies auth, tracing, metrics and logging around h. Health probes
// stay open without a token so orchestrators can use them.
func Wrap(h http.Handler, o Options) http.Handler {
	tracer := o.Tracer
	if tracer == nil {
		tracer = observe.Tracer(nil, "api")
	}
	traced := observe.Recording(tracer)
	token := []byte(o.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(token) > 0 && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="junction"`)
				problem.Write(w, r, problem.New(problem.CodeUnauthorized, "a valid bearer token is required"))
				return
			}
		}
		start := time.Now()
		// The caller's trace context is kept even with tracing off, so
		// that components forward it (a publish carries it to delivery).
		ctx := observe.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		var span trace.Span
		if traced {
			ctx, span = tracer.Start(ctx, r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		}
		sw := &StatusWriter{ResponseWriter: w}
		o.Metrics.inflight.Inc()
		r = r.WithContext(ctx)
		h.ServeHTTP(sw, r) // the mux records the matched pattern on this copy
		o.Metrics.inflight.Dec()
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		} else if _, p, ok := strings.Cut(route, " "); ok {
			route = p
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		if span != nil {
			span.SetName(r.Method + " " + route)
			span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", sw.status))
			span.End()
		}
		el := time.Since(start)
		o.Metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.status)).Inc()
		o.Metrics.duration.WithLabelValues(route, r.Method).Observe(el.Seconds())
		if o.Logger.Enabled(ctx, slog.LevelDebug) || sw.status >= 500 {
			lvl := slog.LevelDebug
			if sw.status >= 500 {
				lvl = slog.LevelWarn
			}
			o.Logger.Log(ctx, lvl, "api request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", el)
		}
	})
}

// Listen binds addr now, so a taken port fails start-up with one clear
// line instead of failing later inside Serve.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api.listen %s: %w", addr, err)
	}
	return l, nil
}
