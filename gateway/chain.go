package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
)

// DefaultMaxBodyBytes bounds request bodies of routes that set no
// max_body_bytes.
const DefaultMaxBodyBytes = 10 << 20

// The middleware of a route runs in this order, outermost first:
//
//  1. request id (for every request, before routing)
//  2. access log, metrics and span
//  3. CORS: a preflight is answered here, before authentication
//  4. body size limit
//  5. rate limit, when its key does not use the identity (request.ip,
//     headers...): failed authentications spend tokens too
//  6. authentication (API key or JWT), then the rate limit keyed by
//     identity (request.claims, request.key)
//  7. request validation against the route's OpenAPI file
//  8. request and response header rewrites
//  9. timeout
//  10. response cache
//  11. gzip
//  12. the backend
func (g *Gateway) chain(rt *route, mw config.GatewayMiddleware) (http.Handler, error) {
	h := rt.backend
	if mw.Gzip != nil && *mw.Gzip {
		h = newGzip()(h)
	}
	if mw.Cache != nil {
		c, err := newCache(mw.Cache)
		if err != nil {
			return nil, err
		}
		h = c(h)
	}
	if mw.Timeout > 0 {
		h = withTimeout(mw.Timeout.D())(h)
	}
	if mw.RequestHeaders != nil || mw.ResponseHeaders != nil {
		h = rewriteHeaders(mw.RequestHeaders, mw.ResponseHeaders)(h)
	}
	limit := mw.MaxBodyBytes
	if limit == 0 {
		limit = DefaultMaxBodyBytes
	}
	if rt.spec != nil {
		h = rt.spec.validate(limit)(h)
	}
	var rl middleware
	if mw.RateLimit != nil {
		var buckets BucketStore
		if g.o.Buckets != nil {
			// A route's global buckets are its own, as its local ones are.
			buckets = routeBuckets{g.o.Buckets, fmt.Sprintf("%d %s", rt.order, rt.cfg.Name)}
		}
		var err error
		if rl, err = newRateLimit(mw.RateLimit, buckets); err != nil {
			return nil, err
		}
	}
	// A limit keyed by who the request is (claims, the API key's name)
	// runs after authentication; any other runs before it, so that failed
	// attempts (guessing keys, costly signature checks) spend tokens too.
	afterAuth := mw.RateLimit != nil && identityKeyRe.MatchString(mw.RateLimit.Key)
	if rl != nil && afterAuth {
		h = rl(h)
	}
	if a := mw.Auth; a != nil && !a.None {
		au, err := newAuth(a, g.o.HTTPClient)
		if err != nil {
			return nil, err
		}
		h = au(h)
	}
	if rl != nil && !afterAuth {
		h = rl(h)
	}
	h = maxBody(limit)(h)
	if mw.CORS != nil {
		h = newCORS(mw.CORS)(h)
	}
	return g.observe(rt.cfg.Name, h), nil
}

// maxBody makes reading more than limit bytes of a body fail (413 from
// the backends that read it), and refuses at once a request whose
// Content-Length says it is larger.
func maxBody(limit int64) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > limit {
				problem.Write(w, r, tooLarge(limit))
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, limit)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// withTimeout bounds the request's context: the mesh and the other
// backends stop at the deadline, and the answer is 504.
func withTimeout(d time.Duration) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// rewriteHeaders sets and removes request headers before the backend and
// response headers before the client sees them.
func rewriteHeaders(req, resp *config.HeaderRewrite) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if req != nil {
				for _, k := range req.Remove {
					r.Header.Del(k)
				}
				for k, v := range req.Set {
					r.Header.Set(k, v)
				}
			}
			if resp != nil {
				w = &headerWriter{ResponseWriter: w, rw: resp}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// headerWriter applies a response header rewrite when the backend writes
// its header.
type headerWriter struct {
	http.ResponseWriter
	rw    *config.HeaderRewrite
	wrote bool
}

func (h *headerWriter) apply() {
	if h.wrote {
		return
	}
	h.wrote = true
	for _, k := range h.rw.Remove {
		h.Header().Del(k)
		if http.CanonicalHeaderKey(k) == "Content-Type" {
			// A nil value keeps net/http from sniffing one back in.
			h.Header()["Content-Type"] = nil
		}
	}
	for k, v := range h.rw.Set {
		h.Header().Set(k, v)
	}
}

func (h *headerWriter) WriteHeader(code int) {
	h.apply()
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerWriter) Write(b []byte) (int, error) {
	h.apply()
	return h.ResponseWriter.Write(b)
}

func (h *headerWriter) Flush() {
	h.apply()
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *headerWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// metrics are the gateway's Prometheus series, per route.
type metrics struct {
	requests *prometheus.CounterVec   // route, code
	duration *prometheus.HistogramVec // route
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_gateway_requests_total", Help: "Requests answered by the gateway, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_gateway_request_duration_seconds", Help: "Time from a request's arrival to the end of its response, by route.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}

// observe records a route's requests: a server span (continuing the
// caller's W3C trace context, which passes upstream even with tracing
// off), per-route metrics and, unless turned off, an access log line.
func (g *Gateway) observe(name string, next http.Handler) http.Handler {
	traced := observe.Recording(g.tracer)
	reqs := g.m.requests.MustCurryWith(prometheus.Labels{"route": name})
	dur := g.m.duration.WithLabelValues(name)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &httpserver.StatusWriter{ResponseWriter: w}
		if traced {
			ctx := observe.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span := g.tracer.Start(ctx, "gateway "+name, trace.WithSpanKind(trace.SpanKindServer))
			defer func() {
				span.SetAttributes(attribute.String("http.route", name), attribute.Int("http.response.status_code", sw.Code()))
				if sw.Code() >= 500 {
					span.SetStatus(codes.Error, http.StatusText(sw.Code()))
				}
				span.End()
			}()
			// The backends forward the trace from the span just started.
			observe.Propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(sw, r)
		el := time.Since(start)
		code := sw.Code()
		reqs.WithLabelValues(strconv.Itoa(code)).Inc()
		dur.Observe(el.Seconds())
		if g.o.AccessLog {
			g.log.LogAttrs(r.Context(), slog.LevelInfo, "access",
				slog.String("route", name), slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", code), slog.Duration("duration", el), slog.String("ip", clientIP(r)),
				slog.String("request_id", r.Header.Get(RequestIDHeader)))
		}
	})
}

// routeBuckets keeps one route's global buckets apart from another's.
type routeBuckets struct {
	BucketStore
	route string
}

func (b routeBuckets) Take(ctx context.Context, key string, rate float64, burst int) (bool, int, time.Duration, error) {
	return b.BucketStore.Take(ctx, b.route+"\x00"+key, rate, burst)
}

// identityKeyRe spots a rate-limit key that reads who the request
// authenticated as.
var identityKeyRe = regexp.MustCompile(`\brequest\s*\.\s*(claims|key)\b`)
