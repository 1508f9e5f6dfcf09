package mesh

import (
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
)

// API serves the registry and invocation over HTTP (DESIGN section 4).
type API struct {
	Mesh  *Mesh
	proxy *httputil.ReverseProxy
	once  sync.Once
}

// Routes returns the mesh's HTTP operations.
func (a *API) Routes() []httpserver.Route {
	const tag = "services"
	return []httpserver.Route{
		{Method: "GET", Path: "/v1/services", Tag: tag, Summary: "List services with every instance and its health", Response: arrayOf(serviceSchema), Handler: a.list},
		{Method: "GET", Path: "/v1/services/{service}", Tag: tag, Summary: "Get one service with its instances and health", Response: serviceSchema, Handler: a.get},
		{Method: "PUT", Path: "/v1/services/{service}/instances/{id}", Tag: tag, Summary: "Register an instance (201), or renew its registration (200, a heartbeat)", Status: 201, Request: registrationSchema, Response: instanceSchema, Handler: a.register},
		{Method: "DELETE", Path: "/v1/services/{service}/instances/{id}", Tag: tag, Summary: "Deregister an instance", Status: 204, Handler: a.deregister},
		{Method: httpserver.AnyMethod, Path: "/v1/invoke/{service}/{path...}", Tag: tag, Summary: "Call an instance of a service chosen by the load balancer, under the service's resilience policy; status, headers and body pass through", Handler: a.invoke},
		{Method: httpserver.AnyMethod, Path: "/v1/invoke/{service}", Tag: tag, Summary: "Call the root path of a service (as /v1/invoke/{service}/)", Handler: a.invoke},
	}
}

func (a *API) list(w http.ResponseWriter, _ *http.Request) {
	httpserver.WriteJSON(w, http.StatusOK, a.Mesh.Services())
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	si, err := a.Mesh.Service(r.PathValue("service"))
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, si)
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	var reg Registration
	if err := httpserver.DecodeJSON(w, r, &reg, 64<<10, false); err != nil {
		problem.Write(w, r, err)
		return
	}
	svc, id := r.PathValue("service"), r.PathValue("id")
	status := http.StatusCreated
	if si, err := a.Mesh.Service(svc); err == nil {
		for _, in := range si.Instances {
			if in.ID == id {
				status = http.StatusOK // a heartbeat
			}
		}
	}
	if err := a.Mesh.Register(r.Context(), svc, id, reg); err != nil {
		problem.Write(w, r, err)
		return
	}
	si, err := a.Mesh.Service(svc)
	if err == nil {
		for _, in := range si.Instances {
			if in.ID == id {
				httpserver.WriteJSON(w, status, in)
				return
			}
		}
	}
	// Expired between the PUT and now (a TTL shorter than the clock skew
	// between this node and NATS): say what was stored.
	httpserver.WriteJSON(w, status, InstanceInfo{ID: id, URL: reg.URL, Source: SourceRegistered, Weight: reg.Weight, Health: HealthUnknown})
}

func (a *API) deregister(w http.ResponseWriter, r *http.Request) {
	if err := a.Mesh.Deregister(r.Context(), r.PathValue("service"), r.PathValue("id")); err != nil {
		problem.Write(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// invoke proxies the request to the service. httputil.ReverseProxy does
// the HTTP hygiene (hop-by-hop headers, X-Forwarded-*, streaming both
// ways, protocol upgrades, trailers); the mesh transport picks the
// instance and applies the policy.
func (a *API) invoke(w http.ResponseWriter, r *http.Request) {
	a.once.Do(func() { a.proxy = a.Mesh.newProxy() })
	a.proxy.ServeHTTP(w, r)
}

func (m *Mesh) newProxy() *httputil.ReverseProxy {
	token := ""
	if m.token != "" {
		token = "Bearer " + m.token
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			svc := pr.In.PathValue("service")
			// The raw path keeps the caller's escaping (%2F stays %2F).
			// What follows the third segment is sent on, however the
			// caller escaped /v1/invoke/{service} (the router unescapes
			// it to match, so a prefix comparison would miss).
			rest := "/"
			if seg := strings.SplitN(pr.In.URL.EscapedPath(), "/", 5); len(seg) == 5 {
				rest += seg[4]
			}
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", svc
			pr.Out.URL.RawPath = rest
			pr.Out.URL.Path = pathValue(rest)
			pr.Out.Host = ""
			// Append this hop to an existing chain rather than replace it.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			if token != "" && pr.Out.Header.Get("Authorization") == token {
				pr.Out.Header.Del("Authorization")
			}
			pr.Out.Header.Del(CallerHeader)
		},
		Transport:  m,
		BufferPool: httpserver.ProxyBuffers,
		ErrorLog:   slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the caller is gone
			}
			// r is the outgoing request: name the caller's path again.
			p := problem.From(mapError(err))
			p.Instance = "/v1/invoke/" + r.URL.Host + r.URL.EscapedPath()
			refuse(w, r, p)
		},
		FlushInterval: 0, // streams (unknown length, event streams) are flushed at once anyway
	}
}

func errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the caller is gone
	}
	refuse(w, r, mapError(err))
}

func pathValue(raw string) string {
	if p, err := url.PathUnescape(raw); err == nil {
		return p
	}
	return raw
}

// ServiceInfo is a service as GET /v1/services shows it.
type ServiceInfo struct {
	Name      string         `json:"name"`
	Source    string         `json:"source"` // config or registry
	Balancer  string         `json:"balancer"`
	Policy    string         `json:"policy"`
	Breaker   string         `json:"breaker,omitempty"`
	InFlight  int            `json:"in_flight"`
	Instances []InstanceInfo `json:"instances"`
}

// InstanceInfo is one instance with what this node knows of its health.
type InstanceInfo struct {
	ID           string            `json:"id"`
	URL          string            `json:"url"`
	Source       string            `json:"source"`
	Weight       int               `json:"weight"`
	MTLS         bool              `json:"mtls,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	Health       string            `json:"health"`
	HealthError  string            `json:"health_error,omitempty"`
	Ejected      bool              `json:"ejected"`
	EjectedUntil *time.Time        `json:"ejected_until,omitempty"`
	Breaker      string            `json:"breaker,omitempty"`
	InFlight     int64             `json:"in_flight"`
	Latency      string            `json:"latency,omitempty"`
	Available    bool              `json:"available"`
	Registered   *time.Time        `json:"registered_at,omitempty"`
	ExpiresAt    *time.Time        `json:"expires_at,omitempty"`
}

// Services lists every service this node knows, declared or registered.
func (m *Mesh) Services() []ServiceInfo {
	ss := m.snapshotServices()
	out := make([]ServiceInfo, 0, len(ss))
	for _, s := range ss {
		out = append(out, m.info(s))
	}
	return out
}

// Service describes one service.
func (m *Mesh) Service(name string) (ServiceInfo, error) {
	s := m.lookup(name)
	if s == nil {
		return ServiceInfo{}, problem.New(problem.CodeServiceNotFound, "no service %q is declared or registered", name)
	}
	return m.info(s), nil
}

func (m *Mesh) info(s *service) ServiceInfo {
	now := m.clock.Now()
	si := ServiceInfo{Name: s.name, Source: "registry", Balancer: s.cfg.Balancer, Policy: s.cfg.Policy, Instances: []InstanceInfo{}}
	if s.declared {
		si.Source = "config"
	}
	if s.breaker != nil {
		si.Breaker = s.breaker.State().String()
	}
	if s.bulkhead != nil {
		si.InFlight = s.bulkhead.InFlight()
	}
	for _, in := range s.all() {
		ii := InstanceInfo{
			ID: in.id, URL: in.raw, Source: in.source, Weight: in.weight, MTLS: in.mtls,
			Health: in.healthState(), InFlight: in.inflight.Load(), Available: in.available(now),
		}
		if in.breaker != nil {
			ii.Breaker = in.breaker.State().String()
		}
		in.mu.Lock()
		ii.Metadata, ii.HealthError = in.metadata, in.lastCheckErr
		if now.Before(in.ejectedUntil) {
			t := in.ejectedUntil.UTC()
			ii.Ejected, ii.EjectedUntil = true, &t
		}
		if in.source == SourceRegistered {
			r, e := in.registered.UTC(), in.expires.UTC()
			ii.Registered, ii.ExpiresAt = &r, &e
		}
		if in.ewma > 0 {
			ii.Latency = time.Duration(in.ewma).Round(time.Microsecond).String()
		}
		in.mu.Unlock()
		si.Instances = append(si.Instances, ii)
	}
	return si
}
