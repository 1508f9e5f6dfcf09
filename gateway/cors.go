package gateway

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/problem"
)

// newCORS answers preflight requests and sets CORS headers.
//
// An origin is allowed when it is listed exactly or the list holds "*".
// A request without Origin is not a CORS request and passes untouched. A
// preflight (OPTIONS with Access-Control-Request-Method) is answered here,
// 204 for an allowed origin and 403 for another; the browser checks the
// methods and headers it asked for against the lists returned. Any other
// request from an allowed origin goes on with Access-Control-Allow-Origin
// (and the exposed headers and credentials flag); one from another origin
// goes on without them, so the browser keeps the answer from the page.
//
// Credentials are only ever allowed to a listed origin: an origin allowed
// through "*" gets "*", which browsers never combine with credentials.
func newCORS(cfg *config.GatewayCORS) middleware {
	anyOrigin := slices.Contains(cfg.Origins, "*")
	origins := make(map[string]bool, len(cfg.Origins))
	for _, o := range cfg.Origins {
		if o != "*" {
			origins[o] = true
		}
	}
	// The answer depends on Origin unless every origin gets "*".
	vary := len(origins) > 0
	methods := cfg.Methods
	if len(methods) == 0 {
		methods = []string{http.MethodGet, http.MethodHead, http.MethodPost}
	}
	allowMethods := strings.Join(methods, ", ")
	allowHeaders := strings.Join(cfg.Headers, ", ")
	expose := strings.Join(cfg.Expose, ", ")
	maxAge := ""
	if s := int64(cfg.MaxAge.D().Seconds()); s > 0 {
		maxAge = strconv.FormatInt(s, 10)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" {
				next.ServeHTTP(w, r)
				return
			}
			listed := origins[origin]
			allowed := listed || anyOrigin
			preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
			h := w.Header()
			if vary {
				h.Add("Vary", "Origin")
			}
			if preflight {
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
			}
			if !allowed {
				if preflight {
					problem.Write(w, r, problem.New(problem.CodeForbidden, "origin %q is not allowed", origin))
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			if listed {
				h.Set("Access-Control-Allow-Origin", origin)
				if cfg.Credentials {
					h.Set("Access-Control-Allow-Credentials", "true")
				}
			} else {
				h.Set("Access-Control-Allow-Origin", "*")
			}
			if preflight {
				h.Set("Access-Control-Allow-Methods", allowMethods)
				if allowHeaders != "" {
					h.Set("Access-Control-Allow-Headers", allowHeaders)
				}
				if maxAge != "" {
					h.Set("Access-Control-Max-Age", maxAge)
				}
				w.WriteHeader(http.StatusNoContent)
				return
			}
			if expose != "" {
				h.Set("Access-Control-Expose-Headers", expose)
			}
			next.ServeHTTP(w, r)
		})
	}
}
