package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/junctionhq/junction/expr"
)

// Mesh configures service-to-service calls: this node's identity, the
// mTLS listener that other nodes call, sidecar mode and who may call whom.
type Mesh struct {
	// Listen is the mTLS listener on which other nodes call the app this
	// node is a sidecar for. Empty: no listener.
	Listen string `yaml:"listen"`
	// Advertise is the URL other nodes use to reach Listen (default
	// https://<listen>, which needs a concrete host in listen).
	Advertise string `yaml:"advertise"`
	// Identity is the service name in this node's certificate (default:
	// the sidecar's service, else "junction").
	Identity string  `yaml:"identity"`
	TLS      MeshTLS `yaml:"tls"`
	Sidecar  Sidecar `yaml:"sidecar"`
	// Access maps a service to the identities allowed to call it through
	// its sidecar ("*" allows any identity of the CA). When access is set,
	// a service it does not list accepts no calls.
	Access map[string][]string `yaml:"access"`
}

// MeshTLS names the certificate files of the mesh.
type MeshTLS struct {
	CA    string `yaml:"ca"`     // CA certificate: the one trusted root
	CAKey string `yaml:"ca_key"` // CA key: the node issues its own certificate at start
	Cert  string `yaml:"cert"`   // or a certificate issued with junction ca issue...
	Key   string `yaml:"key"`    // ...and its key
	// CertTTL is the validity of a certificate issued at start; the node
	// renews it at two thirds of its life.
	CertTTL Duration `yaml:"cert_ttl"`
}

// Enabled reports whether mTLS is configured.
func (t MeshTLS) Enabled() bool { return t.CA != "" }

// Sidecar makes the node the front door of one app instance.
type Sidecar struct {
	Service string `yaml:"service"`
	App     string `yaml:"app"` // the app's base URL, e.g. http://127.0.0.1:7001
	// TTL is the registration's time to live; the node renews it every
	// TTL/3, so an instance whose node dies leaves the registry within TTL.
	TTL      Duration          `yaml:"ttl"`
	Metadata map[string]string `yaml:"metadata"`
}

// Service is one callable service: static instances, health checking,
// load balancing and the resilience policy applied to calls.
type Service struct {
	Instances []Instance `yaml:"instances"`
	Health    *Health    `yaml:"health"`
	Outlier   Outlier    `yaml:"outlier"`
	// Balancer is p2c (power of two choices on in-flight requests and
	// latency), round_robin or consistent_hash.
	Balancer string `yaml:"balancer"`
	// HashKey is the CEL expression over request whose value picks the
	// instance with consistent_hash (sticky sessions).
	HashKey string `yaml:"hash_key"`
	Policy  string `yaml:"policy"`
	// Protocol is how instances are called: http1 (the default: HTTP/1.1,
	// or HTTP/2 when TLS negotiates it) or h2c (HTTP/2 without TLS, which
	// gRPC servers speak).
	Protocol string `yaml:"protocol"`
}

// Instance is one address of a service. In YAML it may be just its URL.
type Instance struct {
	ID       string            `yaml:"id" json:"id,omitempty"`
	URL      string            `yaml:"url" json:"url"`
	Weight   int               `yaml:"weight" json:"weight,omitempty"`
	Metadata map[string]string `yaml:"metadata" json:"metadata,omitempty"`
}

func (i *Instance) fromScalar(s string) { i.URL = s }

// Health is an active health check.
type Health struct {
	Path               string   `yaml:"path"`
	Interval           Duration `yaml:"interval"`
	Timeout            Duration `yaml:"timeout"`
	HealthyThreshold   int      `yaml:"healthy_threshold"`
	UnhealthyThreshold int      `yaml:"unhealthy_threshold"`
}

// Outlier is passive outlier ejection: consecutive failures (5xx answers,
// connection errors, timeouts) eject an instance for a period that grows
// with each ejection.
type Outlier struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	BaseEjection        Duration `yaml:"base_ejection"`
	MaxEjection         Duration `yaml:"max_ejection"`
	// MaxEjectedPercent keeps part of a service in rotation however badly
	// it does, so ejection never turns a partial outage into a full one.
	MaxEjectedPercent int `yaml:"max_ejected_percent"`
}

// Policy is a resilience policy for calls to a service. Unset fields take
// the value of the policy named "default" (itself defaulted field by field).
type Policy struct {
	Timeout        Duration        `yaml:"timeout"`
	Retry          *Retry          `yaml:"retry"`
	CircuitBreaker *CircuitBreaker `yaml:"circuit_breaker"`
	MaxConcurrent  int             `yaml:"max_concurrent"`
}

// Retry says when a failed call is tried again, on another instance.
type Retry struct {
	Attempts   int      `yaml:"attempts"` // tries in all, the first included
	Backoff    Duration `yaml:"backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	On         []int    `yaml:"on"` // statuses worth a retry
	// NonIdempotent allows retrying POST and PATCH after the request was
	// sent. Connection failures, where nothing was sent, are always retried.
	NonIdempotent bool `yaml:"non_idempotent"`
	// Budget caps retries at this share of first attempts (0.2: at most
	// about 20% extra load), so retries cannot amplify an outage.
	Budget float64 `yaml:"budget"`
}

// CircuitBreaker opens when the failure ratio over a rolling window is
// reached; open, calls fail at once until half-open probes succeed.
type CircuitBreaker struct {
	Disabled         bool     `yaml:"disabled"`
	FailureRatio     float64  `yaml:"failure_ratio"`
	MinRequests      int      `yaml:"min_requests"`
	Window           Duration `yaml:"window"`
	OpenFor          Duration `yaml:"open_for"`
	HalfOpenRequests int      `yaml:"half_open_requests"`
}

// Balancers are the load-balancing algorithms.
var Balancers = []string{"p2c", "round_robin", "consistent_hash"}

// DefaultPolicy is the built-in "default" policy.
func DefaultPolicy() Policy {
	return Policy{
		Timeout: Duration(15 * time.Second),
		Retry: &Retry{Attempts: 3, Backoff: Duration(25 * time.Millisecond), MaxBackoff: Duration(time.Second),
			On: []int{500, 502, 503, 504}, Budget: 0.2},
		CircuitBreaker: &CircuitBreaker{FailureRatio: 0.5, MinRequests: 20, Window: Duration(10 * time.Second),
			OpenFor: Duration(30 * time.Second), HalfOpenRequests: 1},
		MaxConcurrent: 1000,
	}
}

// Inherit fills p's unset fields from base.
func (p *Policy) Inherit(base Policy) {
	if p.Timeout == 0 {
		p.Timeout = base.Timeout
	}
	if p.MaxConcurrent == 0 {
		p.MaxConcurrent = base.MaxConcurrent
	}
	if p.Retry == nil {
		p.Retry = &Retry{}
	}
	if b := base.Retry; b != nil {
		r := p.Retry
		if r.Attempts == 0 {
			r.Attempts = b.Attempts
		}
		if r.Backoff == 0 {
			r.Backoff = b.Backoff
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = b.MaxBackoff
		}
		if r.On == nil {
			r.On = append([]int(nil), b.On...)
		}
		if r.Budget == 0 {
			r.Budget = b.Budget
		}
	}
	if p.CircuitBreaker == nil {
		p.CircuitBreaker = &CircuitBreaker{}
	}
	if b := base.CircuitBreaker; b != nil {
		c := p.CircuitBreaker
		if c.FailureRatio == 0 {
			c.FailureRatio = b.FailureRatio
		}
		if c.MinRequests == 0 {
			c.MinRequests = b.MinRequests
		}
		if c.Window == 0 {
			c.Window = b.Window
		}
		if c.OpenFor == 0 {
			c.OpenFor = b.OpenFor
		}
		if c.HalfOpenRequests == 0 {
			c.HalfOpenRequests = b.HalfOpenRequests
		}
	}
}

// Normalize fills a service's unset fields with their defaults.
func (s *Service) Normalize() {
	if s.Balancer == "" {
		s.Balancer = "p2c"
	}
	if s.Policy == "" {
		s.Policy = "default"
	}
	for i := range s.Instances {
		in := &s.Instances[i]
		if in.Weight == 0 {
			in.Weight = 1
		}
		if in.ID == "" {
			if u, err := url.Parse(in.URL); err == nil && u.Host != "" {
				in.ID = strings.NewReplacer(":", "_", ".", "_", "[", "", "]", "").Replace(u.Host)
			}
		}
	}
	if h := s.Health; h != nil {
		if h.Path == "" {
			h.Path = "/healthz"
		}
		if h.Interval == 0 {
			h.Interval = Duration(5 * time.Second)
		}
		if h.Timeout == 0 {
			h.Timeout = min(h.Interval, Duration(2*time.Second))
		}
		if h.HealthyThreshold == 0 {
			h.HealthyThreshold = 2
		}
		if h.UnhealthyThreshold == 0 {
			h.UnhealthyThreshold = 2
		}
	}
	o := &s.Outlier
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.BaseEjection == 0 {
		o.BaseEjection = Duration(10 * time.Second)
	}
	if o.MaxEjection == 0 {
		o.MaxEjection = Duration(5 * time.Minute)
	}
	if o.MaxEjectedPercent == 0 {
		o.MaxEjectedPercent = 50
	}
}

var (
	serviceRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)
	instanceRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)
)

// ValidServiceName reports whether s can name a service.
func ValidServiceName(s string) bool { return serviceRe.MatchString(s) }

// ValidInstanceID reports whether s can identify an instance.
func ValidInstanceID(s string) bool { return instanceRe.MatchString(s) }

// CheckInstanceURL validates an instance's base URL.
func CheckInstanceURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("an instance url must be an absolute http(s) URL without query, got %q", s)
	}
	return nil
}

func (s *Service) check(policies map[string]*Policy) []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	if s.Protocol != "" && s.Protocol != "http1" && s.Protocol != "h2c" {
		add("protocol", "protocol must be http1 or h2c, got %q", s.Protocol)
	}
	ids := map[string]int{}
	for i, in := range s.Instances {
		p := fmt.Sprintf("instances[%d]", i)
		if err := CheckInstanceURL(in.URL); err != nil {
			add(p, "%v", err)
		}
		if in.Weight < 1 || in.Weight > 1000 {
			add(p+".weight", "weight must be between 1 and 1000")
		}
		if in.ID != "" && !ValidInstanceID(in.ID) {
			add(p+".id", "invalid instance id %q: use letters, digits, '_' and '-'", in.ID)
		}
		if j, dup := ids[in.ID]; dup && in.ID != "" {
			add(p, "instance id %q repeats instances[%d]; give one of them an id", in.ID, j)
		}
		ids[in.ID] = i
	}
	if h := s.Health; h != nil {
		if !strings.HasPrefix(h.Path, "/") {
			add("health.path", "health.path must start with /")
		}
		if h.Interval < Duration(10*time.Millisecond) {
			add("health.interval", "health.interval must be at least 10ms")
		}
		if h.Timeout <= 0 || h.Timeout > h.Interval {
			add("health.timeout", "health.timeout must be positive and at most health.interval")
		}
		if h.HealthyThreshold < 1 || h.UnhealthyThreshold < 1 {
			add("health", "health thresholds must be at least 1")
		}
	}
	o := s.Outlier
	if o.ConsecutiveFailures < 1 {
		add("outlier.consecutive_failures", "outlier.consecutive_failures must be at least 1")
	}
	if o.BaseEjection <= 0 || o.MaxEjection < o.BaseEjection {
		add("outlier.max_ejection", "outlier ejection times must be positive, max_ejection at least base_ejection")
	}
	if o.MaxEjectedPercent < 1 || o.MaxEjectedPercent > 100 {
		add("outlier.max_ejected_percent", "outlier.max_ejected_percent must be between 1 and 100")
	}
	switch s.Balancer {
	case "p2c", "round_robin":
	case "consistent_hash":
		if s.HashKey == "" {
			add("hash_key", "hash_key is required with balancer consistent_hash")
		}
	default:
		add("balancer", "balancer must be one of %s, got %q", strings.Join(Balancers, ", "), s.Balancer)
	}
	if s.HashKey != "" {
		if _, err := expr.Compile(s.HashKey); err != nil {
			line, col, msg := exprError(err)
			is = append(is, issue{Issue{"hash_key", "hash_key: " + msg}, line, col})
		}
	}
	if _, ok := policies[s.Policy]; !ok && s.Policy != "default" {
		add("policy", "policy %q is not defined under policies (defined: %s)", s.Policy, policyNames(policies))
	}
	return is
}

func policyNames(m map[string]*Policy) string {
	names := []string{"default"}
	for k := range m {
		if k != "default" {
			names = append(names, k)
		}
	}
	sort.Strings(names[1:])
	return strings.Join(names, ", ")
}

func (p *Policy) check() []Issue {
	var is []Issue
	add := func(f, format string, a ...any) { is = append(is, Issue{f, fmt.Sprintf(format, a...)}) }
	if p.Timeout < 0 {
		add("timeout", "timeout must be positive")
	}
	if p.MaxConcurrent < 0 {
		add("max_concurrent", "max_concurrent must be positive")
	}
	if r := p.Retry; r != nil {
		if r.Attempts < 0 || r.Attempts > 10 {
			add("retry.attempts", "retry.attempts must be between 1 and 10")
		}
		if r.Backoff < 0 || r.MaxBackoff < 0 {
			add("retry.backoff", "retry backoff durations must be positive")
		}
		for i, st := range r.On {
			if st < 400 || st > 599 {
				add(fmt.Sprintf("retry.on[%d]", i), "retry.on lists HTTP statuses 400-599, got %d", st)
			}
		}
		if r.Budget < 0 || r.Budget > 1 {
			add("retry.budget", "retry.budget must be between 0 and 1")
		}
	}
	if c := p.CircuitBreaker; c != nil {
		if c.FailureRatio < 0 || c.FailureRatio > 1 {
			add("circuit_breaker.failure_ratio", "circuit_breaker.failure_ratio must be between 0 and 1")
		}
		if c.MinRequests < 0 || c.HalfOpenRequests < 0 || c.Window < 0 || c.OpenFor < 0 {
			add("circuit_breaker", "circuit_breaker values must be positive")
		}
	}
	return is
}

// ResolvePolicies returns every policy with its inherited values filled
// in, "default" included.
func ResolvePolicies(m map[string]*Policy) map[string]Policy {
	def := DefaultPolicy()
	if d := m["default"]; d != nil {
		p := clonePolicy(*d)
		p.Inherit(def)
		def = p
	}
	out := map[string]Policy{"default": def}
	for name, p := range m {
		if name == "default" || p == nil {
			continue
		}
		c := clonePolicy(*p)
		c.Inherit(def)
		out[name] = c
	}
	return out
}

func clonePolicy(p Policy) Policy {
	if p.Retry != nil {
		r := *p.Retry
		r.On = append([]int(nil), r.On...)
		p.Retry = &r
	}
	if p.CircuitBreaker != nil {
		c := *p.CircuitBreaker
		p.CircuitBreaker = &c
	}
	return p
}

func (m *Mesh) check() []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	if m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			add("mesh.listen", "mesh.listen must be host:port, got %q", m.Listen)
		}
		if !m.TLS.Enabled() {
			add("mesh.listen", "mesh.listen serves mTLS only, so it needs mesh.tls.ca and a certificate (mesh.tls.ca_key, or cert and key)")
		}
	}
	if m.Advertise != "" {
		if u, err := url.Parse(m.Advertise); err != nil || u.Scheme != "https" || u.Host == "" {
			add("mesh.advertise", "mesh.advertise must be an https://host:port URL, got %q", m.Advertise)
		}
	}
	if m.Identity != "" && !ValidServiceName(m.Identity) {
		add("mesh.identity", "invalid identity %q: use letters, digits, '_' and '-'", m.Identity)
	}
	t := m.TLS
	if t.Enabled() {
		if t.CAKey == "" && (t.Cert == "" || t.Key == "") {
			add("mesh.tls", "mesh.tls needs ca_key (issue a certificate at start) or cert and key")
		}
		if t.CAKey != "" && t.Cert != "" {
			add("mesh.tls.cert", "give mesh.tls.ca_key or mesh.tls.cert, not both")
		}
		if t.CertTTL < Duration(time.Minute) {
			add("mesh.tls.cert_ttl", "mesh.tls.cert_ttl must be at least 1m")
		}
	} else if t.CAKey != "" || t.Cert != "" || t.Key != "" {
		add("mesh.tls.ca", "mesh.tls.ca is required with the other mesh.tls settings")
	}
	sc := m.Sidecar
	if sc.Service != "" || sc.App != "" {
		if !ValidServiceName(sc.Service) {
			add("mesh.sidecar.service", "mesh.sidecar.service must be a service name, got %q", sc.Service)
		}
		if err := CheckInstanceURL(sc.App); err != nil {
			add("mesh.sidecar.app", "mesh.sidecar.app: %v", err)
		}
		if !m.TLS.Enabled() {
			add("mesh.sidecar", "a sidecar needs mesh.tls: calls between nodes are mTLS only")
		}
		if m.Identity != "" && m.Identity != sc.Service {
			add("mesh.identity", "a sidecar's identity is its service %q (callers check it), not %q", sc.Service, m.Identity)
		}
		if sc.TTL < Duration(time.Second) {
			add("mesh.sidecar.ttl", "mesh.sidecar.ttl must be at least 1s")
		}
	}
	for svc, callers := range m.Access {
		if !ValidServiceName(svc) {
			add("mesh.access."+svc, "invalid service name %q", svc)
		}
		for i, c := range callers {
			if c != "*" && !ValidServiceName(c) {
				add(fmt.Sprintf("mesh.access.%s[%d]", svc, i), "invalid identity %q: a service name or *", c)
			}
		}
	}
	return is
}

// AdvertiseURL is the URL other nodes use to reach this node's mesh
// listener.
func (m *Mesh) AdvertiseURL(bound string) string {
	if m.Advertise != "" {
		return m.Advertise
	}
	return "https://" + bound
}

// NodeIdentity is the service identity this node presents.
func (m *Mesh) NodeIdentity() string {
	switch {
	case m.Identity != "":
		return m.Identity
	case m.Sidecar.Service != "":
		return m.Sidecar.Service
	}
	return "junction"
}

func (c *Config) validateMesh() []issue {
	var is []issue
	prefixed := func(p string, xs []issue) {
		for _, x := range xs {
			x.Field = p + "." + x.Field
			is = append(is, x)
		}
	}
	is = append(is, c.Mesh.check()...)
	for name, p := range c.Policies {
		path := "policies." + name
		if !ValidServiceName(name) {
			is = append(is, issue{Issue: Issue{path, fmt.Sprintf("invalid policy name %q: use letters, digits, '_' and '-'", name)}})
		}
		if p == nil {
			continue
		}
		for _, x := range p.check() {
			is = append(is, issue{Issue: Issue{path + "." + x.Field, x.Msg}})
		}
	}
	for name, s := range c.Services {
		path := "services." + name
		if !ValidServiceName(name) {
			is = append(is, issue{Issue: Issue{path, fmt.Sprintf("invalid service name %q: use letters, digits, '_' and '-'", name)}})
		}
		if s == nil {
			s = &Service{}
			c.Services[name] = s
		}
		s.Normalize()
		prefixed(path, s.check(c.Policies))
	}
	return is
}
