// Package gateway is Junction's public entry point: routes matched on
// path templates, methods, host, headers and a CEL condition, the most
// specific one winning, each sent to one backend: a service through the
// mesh, a topic of the bus, a static answer or a redirect. The route
// table is swapped atomically on reload, so requests in flight finish on
// the table they started with.
package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
)

// RequestIDHeader carries the request's id: the caller's, or a new one.
// The gateway passes it upstream and returns it.
const RequestIDHeader = "X-Request-Id"

// Publisher publishes a request turned into a message (the bus).
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]bus.PublishResult, error)
}

// Runs starts workflow runs for workflow routes (the workflow engine).
// The error is one the API answers with (a problem document).
type Runs interface {
	StartFromGateway(ctx context.Context, workflow string, input []byte, idempotencyKey, traceparent string) (runID, status string, replayed bool, err error)
}

// Options are a gateway's dependencies.
type Options struct {
	// Services calls services by name (req.URL.Host): the mesh.
	Services http.RoundTripper
	// Static declares the services of url: routes (the mesh).
	Static interface {
		Static(name string, urls []string) error
	}
	Publisher Publisher
	Runs      Runs
	// MaxBodyBytes bounds a body published to a topic or starting a run.
	MaxBodyBytes int64
	// Buckets keeps the buckets of global rate limits.
	Buckets BucketStore
	// HTTPClient fetches JWKS documents (default http.DefaultClient).
	HTTPClient *http.Client
	// AccessLog logs one line per request at info level.
	AccessLog  bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Tracer     trace.Tracer
}

// Gateway routes requests. It is an http.Handler.
type Gateway struct {
	o      Options
	log    *slog.Logger
	m      *metrics
	tracer trace.Tracer
	table  atomic.Pointer[table]
}

type table struct {
	routes   []*route        // most specific first
	identity map[string]bool // identity headers (folded) removed from every request
	trusted  []netip.Prefix  // proxies whose X-Forwarded-For is believed
	docPath  string          // where the OpenAPI document is served ("" nowhere)
	doc      []byte          // the OpenAPI document of the routes
}

// New builds a gateway serving cfg's routes.
func New(o Options, cfg config.Gateway) (*Gateway, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	g := &Gateway{o: o, log: o.Logger.With("component", "gateway"), m: newMetrics(o.Registerer), tracer: o.Tracer}
	if g.tracer == nil {
		g.tracer = observe.Tracer(nil, "gateway")
	}
	if err := g.Reload(cfg); err != nil {
		return nil, err
	}
	return g, nil
}

// Reload replaces the route table at once. Requests already routed finish
// with the backend they got; a table that does not build is refused and
// the current one keeps serving.
func (g *Gateway) Reload(cfg config.Gateway) error {
	t := &table{identity: identityHeaders(cfg)}
	for _, p := range cfg.TrustedProxies {
		pfx, err := config.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("trusted_proxies: %w", err)
		}
		t.trusted = append(t.trusted, pfx)
	}
	for i, rc := range cfg.Routes {
		rt := &route{cfg: rc, pattern: compilePattern(rc.Path), methods: rc.Methods, order: i}
		if rc.When != "" {
			p, err := expr.CompileBool(rc.When)
			if err != nil {
				return fmt.Errorf("route %s: when: %w", rc.Name, err)
			}
			rt.when = p
		}
		b, err := g.backend(rt)
		if err != nil {
			return fmt.Errorf("route %s: %w", rc.Name, err)
		}
		rt.backend = b
		if rc.OpenAPI != "" {
			if rt.spec, err = loadSpec(rc.OpenAPI); err != nil {
				return fmt.Errorf("route %s: openapi: %w", rc.Name, err)
			}
		}
		mw := cfg.Defaults.Merge(rc.GatewayMiddleware)
		rt.cors, rt.auth = mw.CORS != nil, mw.Auth
		if rt.handler, err = g.chain(rt, mw); err != nil {
			return fmt.Errorf("route %s: %w", rc.Name, err)
		}
		t.routes = append(t.routes, rt)
	}
	sort.SliceStable(t.routes, func(i, j int) bool { return moreSpecific(t.routes[i], t.routes[j]) })
	specs := map[*route]*spec{}
	for _, rt := range t.routes {
		if rt.spec != nil {
			specs[rt] = rt.spec
		}
	}
	doc, err := json.Marshal(document(t.routes, specs))
	if err != nil {
		return err
	}
	t.doc = doc
	switch t.docPath = cfg.OpenAPIPath; t.docPath {
	case "":
		t.docPath = "/openapi.json"
	case "off":
		t.docPath = ""
	}
	g.table.Store(t)
	return nil
}

type paramsKey struct{}

// params returns the path parameters the matched route extracted.
func params(r *http.Request) map[string]string {
	p, _ := r.Context().Value(paramsKey{}).(map[string]string)
	return p
}

// ServeHTTP routes r to the most specific matching route.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(RequestIDHeader)
	if id == "" || len(id) > 200 {
		id = uuid.NewString()
		r.Header.Set(RequestIDHeader, id)
	}
	w.Header().Set(RequestIDHeader, id)
	t := g.table.Load()
	if err := checkPath(r.URL.EscapedPath()); err != nil {
		problem.Write(w, r, err)
		return
	}
	stripHeaders(r.Header, t.identity)
	r = resolveClient(r, t.trusted)
	if t.docPath != "" && r.URL.Path == t.docPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(t.doc)
		return
	}
	for _, rt := range t.routes {
		ps, ok := rt.matches(r)
		if !ok {
			continue
		}
		if ps != nil {
			r = r.WithContext(context.WithValue(r.Context(), paramsKey{}, ps))
		}
		rt.handler.ServeHTTP(w, r)
		return
	}
	// A path some route serves, for other methods, is 405 with Allow.
	var allow []string
	for _, rt := range t.routes {
		if len(rt.methods) == 0 || !hostMatches(rt.cfg.Host, r.Host) {
			continue
		}
		if _, ok := rt.pattern.match(r.URL.EscapedPath()); ok {
			for _, m := range rt.methods {
				if !slices.Contains(allow, m) {
					allow = append(allow, m)
				}
			}
		}
	}
	if len(allow) > 0 {
		if slices.Contains(allow, http.MethodGet) && !slices.Contains(allow, http.MethodHead) {
			allow = append(allow, http.MethodHead)
		}
		sort.Strings(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		problem.Write(w, r, problem.New(problem.CodeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	problem.Write(w, r, problem.New(problem.CodeRouteNotFound, "no gateway route for %s %s", r.Method, r.URL.Path))
}

func (g *Gateway) backend(rt *route) (http.Handler, error) {
	c := rt.cfg
	switch c.Backend() {
	case "service":
		if g.o.Services == nil {
			return nil, fmt.Errorf("service routes need the mesh")
		}
		svc := c.Service
		if len(c.URL) > 0 {
			if g.o.Static == nil {
				return nil, fmt.Errorf("url routes need the mesh")
			}
			svc = urlService(c.URL)
			if err := g.o.Static.Static(svc, c.URL); err != nil {
				return nil, err
			}
		}
		return g.serviceProxy(c, svc), nil
	case "publish":
		if g.o.Publisher == nil {
			return nil, fmt.Errorf("publish routes need the bus")
		}
		return g.publish(c.Publish), nil
	case "workflow":
		if g.o.Runs == nil {
			return nil, fmt.Errorf("workflow routes need the workflow engine")
		}
		return g.startRun(c.Workflow), nil
	case "static":
		s := c.Static
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for k, v := range s.Headers {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", s.ContentType)
			w.WriteHeader(s.Status)
			if r.Method != http.MethodHead {
				_, _ = w.Write([]byte(s.Body))
			}
		}), nil
	case "aggregate":
		if g.o.Services == nil {
			return nil, fmt.Errorf("aggregate routes need the mesh")
		}
		return g.aggregate(c.Aggregate), nil
	case "redirect":
		d := c.Redirect
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			to := expand(d.URL, params(r), true)
			if strings.HasPrefix(d.URL, "/") && !strings.HasPrefix(d.URL, "//") {
				// A relative target stays on this host: "//evil.example"
				// from a parameter must not become another host.
				to = "/" + strings.TrimLeft(to, "/\\")
			}
			http.Redirect(w, r, to, d.Status)
		}), nil
	}
	return nil, fmt.Errorf("no backend")
}

// serviceProxy sends requests through the mesh (its balancer and the
// service's resilience policy) to c.Service, at the rewritten path.
func (g *Gateway) serviceProxy(c *config.GatewayRoute, svc string) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", svc
			if c.Rewrite != "" {
				p := expand(c.Rewrite, params(pr.In), true)
				pr.Out.URL.RawPath = p
				pr.Out.URL.Path = unescape(p)
			}
			pr.Out.Host = ""
			// X-Forwarded-For names the peer only, unless the peer is a
			// trusted proxy whose chain goes on: a client's own
			// X-Forwarded-For is not evidence.
			if viaTrustedProxy(pr.In) {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
		},
		Transport:     g.o.Services,
		BufferPool:    httpserver.ProxyBuffers,
		FlushInterval: 0, // streams (event streams, unknown lengths) are flushed at once anyway
		ErrorLog:      slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			switch ctxErr := r.Context().Err(); {
			case errors.Is(ctxErr, context.DeadlineExceeded):
				// The route's timeout: say so, rather than an empty 200.
				w.Header().Set("Junction-Error", string(problem.CodeTimeout))
				problem.Write(w, r, problem.New(problem.CodeTimeout, "service %s did not answer within the route's timeout", svc))
				return
			case ctxErr != nil:
				// The client is gone: abort, so nothing (an empty 200)
				// is taken for an answer, by the cache or anyone.
				panic(http.ErrAbortHandler)
			}
			p := problem.From(err)
			if p.Code == problem.CodeInternal {
				// The cause (addresses, dial errors) is for the log, not
				// for the public.
				g.log.Warn("gateway upstream error", "service", svc, "err", err, "request_id", r.Header.Get(RequestIDHeader))
				p = problem.New(problem.CodeUpstream, "service %s is unreachable (request %s)", svc, r.Header.Get(RequestIDHeader))
			}
			w.Header().Set("Junction-Error", string(p.Code))
			problem.Write(w, r, p)
		},
	}
}

func unescape(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if u, err := url.PathUnescape(s); err == nil {
			parts[i] = u
		}
	}
	return strings.Join(parts, "/")
}

// publish turns a request into a CloudEvent on a topic: its body as the
// data, its content type, and its method and path as the extensions
// httpmethod and httppath; the answer is 202 with the message id.
func (g *Gateway) publish(p *config.GatewayPublish) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r, g.o.MaxBodyBytes)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		m := bus.Message{
			ID: r.Header.Get("Idempotency-Key"), Type: p.Type, Source: "junction/gateway", Subject: r.URL.Path,
			DataContentType: ct, Data: body, Time: time.Now(),
			Extensions: map[string]string{"httpmethod": r.Method, "httppath": r.URL.Path, "requestid": r.Header.Get(RequestIDHeader)},
		}
		res, err := g.o.Publisher.Publish(r.Context(), p.Topic, m)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":%q,"topic":%q,"duplicate":%t}`+"\n", res[0].ID, p.Topic, res[0].Duplicate)
	})
}

// startRun starts a run of a workflow with the request's JSON body as
// its input (an empty body is null) and answers 202 with the run id and
// its Location in the API; Idempotency-Key makes a retried request find
// the run it started.
func (g *Gateway) startRun(workflow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r, g.o.MaxBodyBytes)
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
			problem.Write(w, r, problem.New(problem.CodeBadJSON, "the body must be JSON: it is the workflow's input"))
			return
		}
		carrier := propagation.HeaderCarrier(http.Header{})
		observe.Propagator.Inject(r.Context(), carrier)
		id, status, replayed, err := g.o.Runs.StartFromGateway(r.Context(), workflow, body, r.Header.Get("Idempotency-Key"), carrier.Get("traceparent"))
		if err != nil {
			problem.Write(w, r, err)
			return
		}
		w.Header().Set("Location", "/v1/runs/"+id)
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"run_id":%q,"workflow":%q,"status":%q}`+"\n", id, workflow, status)
	})
}

// urlService names the mesh service of a url: route after its URLs, so
// routes with the same upstreams share instances, breakers and statistics.
func urlService(urls []string) string {
	h := sha256.Sum256([]byte(strings.Join(urls, "\n")))
	return "gw-" + hex.EncodeToString(h[:5])
}
