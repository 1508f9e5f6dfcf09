package config

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/junctionhq/junction/expr"
)

// Gateway is the public entry point: routes matched on path, method, host,
// headers and a CEL condition, each sent to one backend.
type Gateway struct {
	// Listen is the gateway's address; the gateway runs when routes are
	// declared.
	Listen string     `yaml:"listen"`
	TLS    GatewayTLS `yaml:"tls"`
	// AccessLog logs one line per request (info level).
	AccessLog bool `yaml:"access_log"`
	// OpenAPIPath is where the gateway serves the OpenAPI 3.1 document of
	// its routes ("off": nowhere).
	OpenAPIPath string `yaml:"openapi_path"`
	// TrustedProxies are the addresses (IPs or CIDRs) of proxies in front
	// of the gateway whose X-Forwarded-For is believed: the client is the
	// nearest address in it that is not one of them.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Defaults is the middleware of every route, unless the route sets
	// its own of a kind.
	Defaults GatewayMiddleware `yaml:"defaults"`
	Routes   []*GatewayRoute   `yaml:"routes"`
}

// GatewayTLS terminates TLS (HTTP/1.1 and HTTP/2) with a certificate from
// files; with ClientCA, clients may (or, with RequireClientCert, must)
// present a certificate that chains to it.
type GatewayTLS struct {
	Cert              string `yaml:"cert"`
	Key               string `yaml:"key"`
	ClientCA          string `yaml:"client_ca"`
	RequireClientCert bool   `yaml:"require_client_cert"`
}

// GatewayRoute is one route. Exactly one backend is set: Service, URL,
// Publish, Workflow, Aggregate, Static or Redirect.
type GatewayRoute struct {
	// Name identifies the route in logs and metrics (default: the
	// methods and path).
	Name string `yaml:"name"`
	// Path is a template: literal segments, {param} (one segment) and a
	// final {name...} (the rest of the path, possibly empty).
	Path    string            `yaml:"path"`
	Methods []string          `yaml:"methods"` // empty: any method
	Host    string            `yaml:"host"`    // exact host, or *.example.com
	Headers map[string]string `yaml:"headers"` // exact values the request must carry
	When    string            `yaml:"when"`    // CEL over request
	// Service sends the request through the mesh to a service (load
	// balancing, its resilience policy).
	Service string `yaml:"service"`
	// URL lists upstream base URLs, balanced and guarded by the mesh as
	// a service of their own (default policy).
	URL []string `yaml:"url"`
	// Rewrite is the upstream path, a template over the route's
	// parameters (default: the request's path).
	Rewrite string          `yaml:"rewrite"`
	Publish *GatewayPublish `yaml:"publish"`
	// Workflow starts a run of the named workflow with the request's
	// JSON body as its input: 202 with the run id and Location.
	Workflow string           `yaml:"workflow"`
	Static   *GatewayStatic   `yaml:"static"`
	Redirect *GatewayRedirect `yaml:"redirect"`
	// Aggregate calls several backends at once and merges their JSON
	// objects, each under its key (or at the root).
	Aggregate map[string]*AggregatePart `yaml:"aggregate"`
	// OpenAPI names an OpenAPI 3 file (YAML or JSON) whose operations
	// validate this route's requests (422 when they do not match) and
	// describe it in the gateway's document.
	OpenAPI string `yaml:"openapi"`

	GatewayMiddleware `yaml:",inline"`
}

// AggregatePart is one call of an aggregate route.
type AggregatePart struct {
	Service string   `yaml:"service"` // through the mesh
	URL     string   `yaml:"url"`     // or an absolute URL
	Path    string   `yaml:"path"`    // with service; a template over the route's parameters
	Method  string   `yaml:"method"`  // default GET
	Timeout Duration `yaml:"timeout"` // default 2s
	// Root merges the part's fields into the top level instead of under
	// its key.
	Root bool `yaml:"root"`
	// Allow keeps only these top-level fields of the part; Deny drops
	// these.
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// GatewayPublish turns a request into a message on a topic: 202 with the
// message id.
type GatewayPublish struct {
	Topic string `yaml:"topic"`
	Type  string `yaml:"type"` // the CloudEvents type (default gateway.request)
}

// GatewayStatic answers with a fixed response.
type GatewayStatic struct {
	Status      int               `yaml:"status"` // default 200
	Body        string            `yaml:"body"`
	ContentType string            `yaml:"content_type"` // default text/plain; charset=utf-8
	Headers     map[string]string `yaml:"headers"`
}

// GatewayRedirect answers with a redirect to URL, a template over the
// route's parameters.
type GatewayRedirect struct {
	URL    string `yaml:"url"`
	Status int    `yaml:"status"` // 301, 302 (default), 303, 307 or 308
}

// Backend names the route's backend.
func (r *GatewayRoute) Backend() string {
	switch {
	case r.Service != "", len(r.URL) > 0:
		return "service"
	case r.Publish != nil:
		return "publish"
	case r.Workflow != "":
		return "workflow"
	case r.Static != nil:
		return "static"
	case r.Redirect != nil:
		return "redirect"
	case len(r.Aggregate) > 0:
		return "aggregate"
	}
	return ""
}

// Normalize fills defaults.
func (r *GatewayRoute) Normalize() {
	for i, m := range r.Methods {
		r.Methods[i] = strings.ToUpper(m)
	}
	if r.Name == "" {
		ms := "ANY"
		if len(r.Methods) > 0 {
			ms = strings.Join(r.Methods, ",")
		}
		r.Name = ms + " " + r.Path
	}
	if r.Static != nil {
		if r.Static.Status == 0 {
			r.Static.Status = http.StatusOK
		}
		if r.Static.ContentType == "" {
			r.Static.ContentType = "text/plain; charset=utf-8"
		}
	}
	if r.Redirect != nil && r.Redirect.Status == 0 {
		r.Redirect.Status = http.StatusFound
	}
	if r.Publish != nil && r.Publish.Type == "" {
		r.Publish.Type = "gateway.request"
	}
}

// PathParams returns the parameter names of a path template, and an error
// for a template that is not one.
func PathParams(tmpl string) ([]string, error) {
	if !strings.HasPrefix(tmpl, "/") {
		return nil, fmt.Errorf("path %q must start with /", tmpl)
	}
	var names []string
	segs := strings.Split(tmpl[1:], "/")
	for i, s := range segs {
		if !strings.ContainsAny(s, "{}") {
			continue
		}
		if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
			return nil, fmt.Errorf("path %q: a parameter takes a whole segment: {name}", tmpl)
		}
		name := s[1 : len(s)-1]
		if rest, ok := strings.CutSuffix(name, "..."); ok {
			if i != len(segs)-1 {
				return nil, fmt.Errorf("path %q: {%s} must be the last segment", tmpl, name)
			}
			name = rest
		}
		if !ValidIdent(name) {
			return nil, fmt.Errorf("path %q: parameter names are lower-case letters, digits and '_', got %q", tmpl, name)
		}
		for _, n := range names {
			if n == name {
				return nil, fmt.Errorf("path %q: parameter %q appears twice", tmpl, name)
			}
		}
		names = append(names, name)
	}
	return names, nil
}

// templateRefs checks that every {name} in a rewrite or redirect template
// is a parameter of the route.
func templateRefs(tmpl string, params []string) error {
	for rest := tmpl; ; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return nil
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("unclosed { in %q", tmpl)
		}
		name := strings.TrimSuffix(rest[i+1:i+j], "...")
		found := false
		for _, p := range params {
			found = found || p == name
		}
		if !found {
			return fmt.Errorf("{%s} in %q is not a parameter of the path", name, tmpl)
		}
		rest = rest[i+j+1:]
	}
}

var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true, "CONNECT": true, "TRACE": true}

func (r *GatewayRoute) check(services map[string]*Service, workflows map[string]*Workflow) []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	params, err := PathParams(r.Path)
	if err != nil {
		add("path", "%v", err)
	}
	for i, m := range r.Methods {
		if !httpMethods[m] {
			add(fmt.Sprintf("methods[%d]", i), "unknown HTTP method %q", m)
		}
	}
	if r.Host != "" && (strings.ContainsAny(r.Host, "/ :") || strings.Count(r.Host, "*") > 1 || strings.Contains(r.Host, "*") && !strings.HasPrefix(r.Host, "*.")) {
		add("host", "host must be a host name or *.domain, got %q", r.Host)
	}
	for h := range r.Headers {
		if h == "" || strings.ContainsAny(h, " :\r\n") {
			add("headers", "invalid header name %q", h)
		}
	}
	if r.When != "" {
		if _, err := expr.CompileBool(r.When); err != nil {
			line, col, msg := exprError(err)
			is = append(is, issue{Issue{"when", "when: " + msg}, line, col})
		}
	}
	n := 0
	for _, set := range []bool{r.Service != "", len(r.URL) > 0, r.Publish != nil, r.Workflow != "", r.Static != nil, r.Redirect != nil, len(r.Aggregate) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		add("path", "route %s needs exactly one backend: service, url, publish, workflow, static, redirect or aggregate", r.Name)
	}
	if r.Workflow != "" {
		if _, ok := workflows[r.Workflow]; !ok {
			add("workflow", "no workflow %q is declared", r.Workflow)
		}
	}
	if r.Service != "" {
		if _, ok := services[r.Service]; !ok && !ValidServiceName(r.Service) {
			add("service", "invalid service name %q", r.Service)
		}
	}
	for i, u := range r.URL {
		if err := CheckInstanceURL(u); err != nil {
			add(fmt.Sprintf("url[%d]", i), "%v", err)
		}
	}
	if r.Rewrite != "" {
		if r.Backend() != "service" {
			add("rewrite", "rewrite applies to service routes only")
		} else if !strings.HasPrefix(r.Rewrite, "/") {
			add("rewrite", "rewrite must start with /, got %q", r.Rewrite)
		} else if err := templateRefs(r.Rewrite, params); err != nil {
			add("rewrite", "%v", err)
		}
	}
	for _, k := range sortedNames(r.Aggregate) {
		a, f := r.Aggregate[k], "aggregate."+k
		switch {
		case a == nil:
			add(f, "aggregate part %s is empty: give it a service and path, or a url", k)
			continue
		case (a.Service == "") == (a.URL == ""):
			add(f, "aggregate part %s needs exactly one of service and url", k)
		case a.Service != "" && !ValidServiceName(a.Service):
			add(f+".service", "invalid service name %q", a.Service)
		case a.URL != "":
			if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add(f+".url", "url must be an absolute http(s) URL, got %q", a.URL)
			}
		}
		if a.Service != "" {
			if !strings.HasPrefix(a.Path, "/") {
				add(f+".path", "path must start with /, got %q", a.Path)
			} else if err := templateRefs(a.Path, params); err != nil {
				add(f+".path", "%v", err)
			}
		}
		if a.Method != "" && !httpMethods[strings.ToUpper(a.Method)] {
			add(f+".method", "unknown HTTP method %q", a.Method)
		}
		if a.Timeout < 0 {
			add(f+".timeout", "timeout must not be negative")
		}
		if len(a.Allow) > 0 && len(a.Deny) > 0 {
			add(f, "aggregate part %s: give allow or deny, not both", k)
		}
	}
	if p := r.Publish; p != nil && !ValidTopicName(p.Topic) {
		add("publish.topic", "publish needs a valid topic, got %q", p.Topic)
	}
	if s := r.Static; s != nil && (s.Status < 200 || s.Status > 599) {
		add("static.status", "static.status must be 200..599, got %d", s.Status)
	}
	if d := r.Redirect; d != nil {
		switch d.Status {
		case 301, 302, 303, 307, 308:
		default:
			add("redirect.status", "redirect.status must be 301, 302, 303, 307 or 308, got %d", d.Status)
		}
		if _, err := url.Parse(strings.NewReplacer("{", "", "}", "").Replace(d.URL)); err != nil || d.URL == "" {
			add("redirect.url", "redirect.url must be a URL or a path, got %q", d.URL)
		} else if err := templateRefs(d.URL, params); err != nil {
			add("redirect.url", "%v", err)
		}
	}
	return append(is, r.GatewayMiddleware.check()...)
}

func (c *Config) validateGateway() []issue {
	var is []issue
	g := &c.Gateway
	if len(g.Routes) > 0 {
		if _, _, err := net.SplitHostPort(g.Listen); err != nil {
			is = append(is, issue{Issue: Issue{"gateway.listen", fmt.Sprintf("gateway.listen must be host:port, got %q", g.Listen)}})
		}
	}
	for i, p := range g.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			is = append(is, issue{Issue: Issue{fmt.Sprintf("gateway.trusted_proxies[%d]", i), fmt.Sprintf("want an IP address or CIDR, got %q", p)}})
		}
	}
	if (g.TLS.Cert == "") != (g.TLS.Key == "") {
		is = append(is, issue{Issue: Issue{"gateway.tls", "gateway.tls needs both cert and key"}})
	}
	if (g.TLS.ClientCA != "" || g.TLS.RequireClientCert) && g.TLS.Cert == "" {
		is = append(is, issue{Issue: Issue{"gateway.tls.client_ca", "client certificates need TLS: set gateway.tls.cert and key"}})
	}
	if g.TLS.RequireClientCert && g.TLS.ClientCA == "" {
		is = append(is, issue{Issue: Issue{"gateway.tls.require_client_cert", "require_client_cert needs client_ca"}})
	}
	for _, x := range g.Defaults.check() {
		x.Field = "gateway.defaults." + x.Field
		is = append(is, x)
	}
	for i, r := range g.Routes {
		p := fmt.Sprintf("gateway.routes[%d]", i)
		if r == nil {
			is = append(is, issue{Issue: Issue{p, "empty route: it needs a path and a backend"}})
			continue
		}
		r.Normalize()
		for _, x := range r.check(c.Services, c.Workflows) {
			x.Field = p + "." + x.Field
			is = append(is, x)
		}
		for j, o := range g.Routes[:i] {
			if o != nil && r.conflicts(o) {
				is = append(is, issue{Issue: Issue{p + ".path", fmt.Sprintf("route %s matches the same requests as routes[%d] (%s): make one more specific (methods, host, headers or when)", r.Name, j, o.Name)}})
			}
		}
	}
	return is
}

// shape is a path template with its parameter names erased: two routes
// of one shape match the same paths.
func shape(tmpl string) string {
	segs := strings.Split(tmpl, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			segs[i] = "{}"
			if strings.HasSuffix(s, "...}") {
				segs[i] = "{...}"
			}
		}
	}
	return strings.Join(segs, "/")
}

// conflicts reports whether r and o match exactly the same requests for
// some method, so neither is more specific and the choice would be
// arbitrary.
func (r *GatewayRoute) conflicts(o *GatewayRoute) bool {
	if shape(r.Path) != shape(o.Path) || r.Host != o.Host || r.When != o.When || len(r.Headers) != len(o.Headers) {
		return false
	}
	for k, v := range r.Headers {
		if ov, ok := o.Headers[k]; !ok || ov != v {
			return false
		}
	}
	if len(r.Methods) == 0 || len(o.Methods) == 0 {
		return len(r.Methods) == len(o.Methods)
	}
	for _, m := range r.Methods {
		for _, om := range o.Methods {
			if m == om {
				return true
			}
		}
	}
	return false
}

// ParsePrefix reads an IP address (a single-address prefix) or a CIDR.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
