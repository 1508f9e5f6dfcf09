// Package httpserver is the API listener: a router that records every
// route it mounts (so /openapi.json is generated from what really exists),
// bearer-token auth, and per-request metrics, spans and problem+json 404s.
package httpserver

import (
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/junctionhq/junction/internal/problem"
)

// Route is one API operation. Domain packages return their routes; the
// server mounts them.
type Route struct {
	Method  string // GET, POST, ...
	Path    string // net/http pattern path: /v1/topics/{topic}
	Summary string
	Tag     string
	// Request and Response are JSON Schemas (as Go maps) for the OpenAPI
	// document; nil means "no body" or "not described".
	Request  map[string]any
	Response map[string]any
	// Status is the success status (200 if zero).
	Status int
	// Query lists documented query parameters.
	Query []string
	// Stream marks server-sent-event responses.
	Stream  bool
	Handler http.HandlerFunc
}

// Router is an http.ServeMux that remembers its routes.
type Router struct {
	mux    *http.ServeMux
	routes []Route
}

// NewRouter returns an empty router whose unknown paths answer 404
// problem+json.
func NewRouter() *Router {
	r := &Router{mux: http.NewServeMux()}
	// The catch-all gets every request no route matches, wrong methods
	// included, so both answers are problem+json rather than the mux's
	// plain text.
	r.mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if allow := r.allowed(req.URL.Path); allow != "" {
			w.Header().Set("Allow", allow)
			problem.Write(w, req, problem.New(problem.CodeMethodNotAllowed, "%s is not allowed on %s", req.Method, req.URL.Path))
			return
		}
		problem.Write(w, req, problem.New(problem.CodeRouteNotFound, "no route for %s %s", req.Method, req.URL.Path))
	})
	return r
}

// AnyMethod as a Route's Method matches every method (a proxy route).
const AnyMethod = "ANY"

// anyMethods are the operations OpenAPI lists for an AnyMethod route.
var anyMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// Handle mounts rt.
func (r *Router) Handle(rt Route) {
	r.routes = append(r.routes, rt)
	if rt.Method == AnyMethod {
		r.mux.Handle(rt.Path, rt.Handler)
		return
	}
	r.mux.Handle(rt.Method+" "+rt.Path, rt.Handler)
}

// HandleAll mounts every route.
func (r *Router) HandleAll(rts []Route) {
	for _, rt := range rts {
		r.Handle(rt)
	}
}

// Routes returns the mounted routes sorted by path then method.
func (r *Router) Routes() []Route {
	out := append([]Route(nil), r.routes...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

// ServeHTTP dispatches to the mux.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.mux.ServeHTTP(w, req) }

func (r *Router) allowed(path string) string {
	var ms []string
	for _, rt := range r.routes {
		if matchPath(rt.Path, path) {
			ms = append(ms, rt.Method)
		}
	}
	return strings.Join(ms, ", ")
}

var paramRe = regexp.MustCompile(`\{[^}]+\}`)

// matchPath reports whether path fits a route pattern segment by segment.
func matchPath(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	for i, p := range ps {
		if strings.HasSuffix(p, "...}") {
			return len(xs) >= i
		}
		if i >= len(xs) || (xs[i] != p && !(strings.HasPrefix(p, "{") && xs[i] != "")) {
			return false
		}
	}
	return len(ps) == len(xs)
}
