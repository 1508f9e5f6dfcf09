package gateway

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// Segment kinds, in order of specificity.
const (
	segRest  = iota // {name...}: the rest of the path
	segParam        // {name}: one segment
	segLit          // a literal segment
)

type segment struct {
	kind int
	lit  string // the literal, or the parameter's name
}

// pattern is a compiled path template.
type pattern []segment

func compilePattern(tmpl string) pattern {
	var p pattern
	for _, s := range strings.Split(strings.TrimPrefix(tmpl, "/"), "/") {
		switch {
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "...}"):
			p = append(p, segment{segRest, s[1 : len(s)-4]})
		case strings.HasPrefix(s, "{"):
			p = append(p, segment{segParam, s[1 : len(s)-1]})
		default:
			p = append(p, segment{segLit, s})
		}
	}
	return p
}

// match matches an escaped path against p and returns the parameters
// (unescaped), or ok false.
func (p pattern) match(escaped string) (params map[string]string, ok bool) {
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	for i, s := range p {
		if s.kind == segRest {
			rest := strings.Join(segs[min(i, len(segs)):], "/")
			v, err := url.PathUnescape(rest)
			if err != nil {
				return nil, false
			}
			params = set(params, s.lit, v)
			return params, true
		}
		if i >= len(segs) {
			return nil, false
		}
		v, err := url.PathUnescape(segs[i])
		if err != nil {
			return nil, false
		}
		switch s.kind {
		case segLit:
			if v != s.lit {
				return nil, false
			}
		case segParam:
			if v == "" {
				return nil, false // a parameter is never empty
			}
			params = set(params, s.lit, v)
		}
	}
	if len(segs) != len(p) {
		return nil, false
	}
	return params, true
}

func set(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// route is one compiled route.
type route struct {
	cfg     *config.GatewayRoute
	pattern pattern
	methods []string
	when    *expr.Program
	backend http.Handler        // the backend alone
	handler http.Handler        // the backend within the route's middleware
	spec    *spec               // the OpenAPI file the route imports, if any
	cors    bool                // CORS is on: preflights match by the method they ask for
	auth    *config.GatewayAuth // the route's authentication, defaults included
	order   int                 // position in the config, the last tie-breaker
}

// moreSpecific reports whether a wins over b when both match a request:
// segment by segment a literal beats a parameter beats the rest; then a
// route with methods, a host, more headers, or a when condition wins.
func moreSpecific(a, b *route) bool {
	for i := 0; i < len(a.pattern) && i < len(b.pattern); i++ {
		if ka, kb := a.pattern[i].kind, b.pattern[i].kind; ka != kb {
			return ka > kb
		}
	}
	if la, lb := len(a.pattern), len(b.pattern); la != lb {
		// Both match one path only when the longer one ends with a rest
		// parameter that matched nothing: the exact one is more specific.
		if la > lb {
			return a.pattern[lb].kind != segRest
		}
		return b.pattern[la].kind == segRest
	}
	rank := func(r *route) [4]int {
		host := 0
		switch {
		case strings.HasPrefix(r.cfg.Host, "*."):
			host = 1
		case r.cfg.Host != "":
			host = 2
		}
		methods := 0
		if len(r.methods) > 0 {
			methods = 1
		}
		when := 0
		if r.when != nil {
			when = 1
		}
		return [4]int{methods, host, len(r.cfg.Headers), when}
	}
	ra, rb := rank(a), rank(b)
	if c := slices.Compare(ra[:], rb[:]); c != 0 {
		return c > 0
	}
	return a.order < b.order
}

// allows reports whether the route serves method; a route for GET also
// answers HEAD, as HTTP wants.
func (rt *route) allows(method string) bool {
	return len(rt.methods) == 0 || slices.Contains(rt.methods, method) ||
		method == http.MethodHead && slices.Contains(rt.methods, http.MethodGet)
}

// hostMatches compares a route's host (exact, or *.domain for any
// subdomain) with the request's, without its port.
func hostMatches(want, host string) bool {
	if want == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".") // example.com. is example.com
	if d, ok := strings.CutPrefix(want, "*."); ok {
		return strings.HasSuffix(host, "."+strings.ToLower(d))
	}
	return host == strings.ToLower(want)
}

// matches reports whether the route takes r, and with which parameters.
func (rt *route) matches(r *http.Request) (map[string]string, bool) {
	method := r.Method
	if method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" && r.Header.Get("Origin") != "" && rt.cors {
		// A CORS preflight is for the method it names: it reaches the
		// route that will serve that method, whose CORS answers it.
		method = r.Header.Get("Access-Control-Request-Method")
	}
	if !rt.allows(method) {
		return nil, false
	}
	if !hostMatches(rt.cfg.Host, r.Host) {
		return nil, false
	}
	for k, v := range rt.cfg.Headers {
		if r.Header.Get(k) != v {
			return nil, false
		}
	}
	params, ok := rt.pattern.match(r.URL.EscapedPath())
	if !ok {
		return nil, false
	}
	if rt.when != nil {
		ok, err := rt.when.EvalBool(map[string]any{"request": requestVars(r, params)})
		if err != nil || !ok {
			return nil, false
		}
	}
	return params, true
}

// requestVars is the CEL view of a request: method, path, host, ip (the
// peer's address), headers and query (first values, header names in lower
// case), the path parameters, and once authenticated the JWT's claims and
// the API key's name (key).
func requestVars(r *http.Request, params map[string]string) map[string]any {
	h := make(map[string]any, len(r.Header))
	for k, vs := range r.Header {
		if len(vs) > 0 {
			h[strings.ToLower(k)] = vs[0]
		}
	}
	qv := r.URL.Query()
	q := make(map[string]any, len(qv))
	for k, vs := range qv {
		if len(vs) > 0 {
			q[k] = vs[0]
		}
	}
	ps := make(map[string]any, len(params))
	for k, v := range params {
		ps[k] = v
	}
	vars := map[string]any{"method": r.Method, "path": r.URL.Path, "host": r.Host, "ip": clientIP(r), "headers": h, "query": q, "params": ps,
		"claims": map[string]any{}, "key": ""}
	if c, ok := r.Context().Value(clientKey{}).(*client); ok && c.hasClientCrt {
		uris := make([]any, len(c.certURIs))
		for i, u := range c.certURIs {
			uris[i] = u
		}
		vars["client_cert"] = map[string]any{"subject": c.certSubject, "uris": uris}
	} else {
		vars["client_cert"] = map[string]any{}
	}
	if id := identity(r); id != nil {
		if id.Claims != nil {
			vars["claims"] = id.Claims
		}
		vars["key"] = id.KeyName
	}
	return vars
}

// expand fills {name} and {name...} in a rewrite or redirect template.
func expand(tmpl string, params map[string]string, escape bool) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			b.WriteString(tmpl)
			return b.String()
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			b.WriteString(tmpl)
			return b.String()
		}
		b.WriteString(tmpl[:i])
		name := tmpl[i+1 : i+j]
		rest := strings.HasSuffix(name, "...")
		v := params[strings.TrimSuffix(name, "...")]
		if escape {
			if rest {
				parts := strings.Split(v, "/")
				for k, p := range parts {
					parts[k] = url.PathEscape(p)
				}
				v = strings.Join(parts, "/")
			} else {
				v = url.PathEscape(v)
			}
		}
		b.WriteString(v)
		tmpl = tmpl[i+j+1:]
	}
}
