// Package mesh is Junction's service mesh: a registry of service
// instances shared by every node through JetStream KV, active health
// checks and passive outlier ejection, load balancing (power of two
// choices, round robin, consistent hashing), resilient invocation
// (timeouts, retries within a budget, circuit breakers, bulkheads) and,
// in sidecar mode, an mTLS listener that admits callers by identity.
package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/kvwatch"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
	"github.com/junctionhq/junction/resilience"
)

// Options configure a Mesh.
type Options struct {
	JS     jetstream.JetStream
	Prefix string // namespaces the registry bucket, as for the bus
	// Services, Policies and Mesh are the config sections.
	Services   map[string]*config.Service
	Policies   map[string]*config.Policy
	Mesh       config.Mesh
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Tracer     trace.Tracer
	Clock      resilience.Clock // nil = real time
	// APIToken is removed from invoked requests' Authorization header:
	// Junction's own credential is not the callee's business.
	APIToken string
}

// Mesh is the registry, balancer and invoker of one node.
type Mesh struct {
	log      *slog.Logger
	clock    resilience.Clock
	tracer   trace.Tracer
	traced   bool // spans are recorded (tracing is on)
	metrics  *metrics
	policies map[string]config.Policy
	cfg      config.Mesh
	kv       jetstream.KeyValue
	token    string
	tls      *identity // nil without mesh.tls
	plain    *http.Transport
	secure   *http.Transport // mTLS to registered mesh peers
	h2c      *http.Transport // HTTP/2 without TLS, for protocol: h2c

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.RWMutex
	services map[string]*service

	sidecar *sidecar
	stopped sync.Once
}

// Errors of the registry.
var (
	ErrServiceNotFound  = errors.New("service not found")
	ErrInstanceNotFound = errors.New("instance not found")
	ErrStaticInstance   = errors.New("instance comes from the config file")
)

// New builds the mesh: the registry bucket, the declared services with
// their static instances, and the node's certificates.
func New(ctx context.Context, o Options) (*Mesh, error) {
	if o.Clock == nil {
		o.Clock = resilience.System
	}
	m := &Mesh{
		log: o.Logger.With("component", "mesh"), clock: o.Clock, tracer: o.Tracer, traced: observe.Recording(o.Tracer),
		metrics: newMetrics(o.Registerer), policies: config.ResolvePolicies(o.Policies),
		cfg: o.Mesh, token: o.APIToken, services: map[string]*service{},
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	var err error
	if o.Mesh.TLS.Enabled() {
		if m.tls, err = loadIdentity(o.Mesh); err != nil {
			return nil, err
		}
	}
	m.plain, m.secure = m.transports()
	m.h2c = h2cTransport()
	if o.Mesh.Listen != "" && o.Mesh.Sidecar.Service == "" {
		m.log.Warn("mesh.listen is unused: the mTLS listener serves sidecar mode only (mesh.sidecar or --sidecar-for)")
	}
	if m.kv, err = o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.Prefix + "_services", Description: "Junction service registry", History: 1, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("service registry bucket: %w", err)
	}
	names := make([]string, 0, len(o.Services))
	for name := range o.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		sc := o.Services[name]
		s := m.newService(name, *sc, true)
		m.services[name] = s
		for _, in := range s.cfg.Instances {
			m.upsert(s, in.ID, in.URL, in.Weight, SourceStatic, false, in.Metadata)
		}
	}
	return m, nil
}

// Start loads the registry, follows it live, and in sidecar mode opens
// the mTLS listener and registers the app.
func (m *Mesh) Start(ctx context.Context) error {
	if err := kvwatch.Follow(m.ctx, m.kv, &m.wg, m.apply); err != nil {
		return fmt.Errorf("service registry: %w", err)
	}
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.sweep() }()
	if m.tls != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.tls.renew(m.ctx, func(err error) { m.log.Error("renewing the node certificate", "error", err) })
		}()
	}
	if m.cfg.Sidecar.Service != "" {
		sc, err := m.startSidecar(ctx)
		if err != nil {
			return err
		}
		m.sidecar = sc
	}
	return nil
}

// Stop deregisters the sidecar's app, closes the mTLS listener after the
// calls in flight, and ends health checks.
// It is safe to call more than once.
func (m *Mesh) Stop(ctx context.Context) error {
	m.stopped.Do(func() {
		if m.sidecar != nil {
			m.sidecar.stop(ctx)
		}
		m.cancel()
		m.wg.Wait()
		m.plain.CloseIdleConnections()
		m.secure.CloseIdleConnections()
		m.h2c.CloseIdleConnections()
	})
	return nil
}

// registration is the registry's record of an instance (the KV value).
type registration struct {
	URL      string            `json:"url"`
	TTL      config.Duration   `json:"ttl"`
	Weight   int               `json:"weight,omitempty"`
	MTLS     bool              `json:"mtls,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Registration is what PUT /v1/services/{service}/instances/{id} takes.
type Registration struct {
	URL string `json:"url"`
	// TTL is how long the registration lives without a heartbeat (a
	// re-PUT); default 30s.
	TTL      config.Duration   `json:"ttl,omitempty"`
	Weight   int               `json:"weight,omitempty"`
	MTLS     bool              `json:"mtls,omitempty"` // the URL is a Junction sidecar's mTLS listener
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Registration limits.
const (
	DefaultTTL = 30 * time.Second
	MinTTL     = time.Second
	MaxTTL     = 24 * time.Hour
)

// Register records (or renews) an instance in the shared registry.
func (m *Mesh) Register(ctx context.Context, svc, id string, r Registration) error {
	if err := checkRegistration(svc, id, &r); err != nil {
		return err
	}
	if s := m.lookup(svc); s != nil {
		s.mu.Lock()
		in := s.instances[id]
		s.mu.Unlock()
		if in != nil && in.source == SourceStatic {
			return problem.New(problem.CodeConflict, "instance %s of %s is declared in the config file", id, svc)
		}
	}
	b, _ := json.Marshal(registration{URL: r.URL, TTL: r.TTL, Weight: r.Weight, MTLS: r.MTLS, Metadata: r.Metadata})
	rev, err := m.kv.Put(ctx, svc+"."+id, b)
	if err != nil {
		return fmt.Errorf("registering %s/%s: %w", svc, id, err)
	}
	// Apply here at once, so a call right after the PUT finds the
	// instance; the watch brings the same entry (a no-op) and tells every
	// other node.
	m.applyPut(svc, id, registration{URL: r.URL, TTL: r.TTL, Weight: r.Weight, MTLS: r.MTLS, Metadata: r.Metadata}, rev, m.clock.Now())
	return nil
}

func checkRegistration(svc, id string, r *Registration) error {
	var fe []problem.FieldError
	if !config.ValidServiceName(svc) {
		fe = append(fe, problem.FieldError{Field: "service", Message: "a service name is 1-100 letters, digits, '_' or '-'"})
	}
	if !config.ValidInstanceID(id) {
		fe = append(fe, problem.FieldError{Field: "id", Message: "an instance id is 1-200 letters, digits, '_' or '-'"})
	}
	if err := config.CheckInstanceURL(r.URL); err != nil {
		fe = append(fe, problem.FieldError{Field: "url", Message: err.Error()})
	}
	if r.TTL == 0 {
		r.TTL = config.Duration(DefaultTTL)
	}
	if r.TTL.D() < MinTTL || r.TTL.D() > MaxTTL {
		fe = append(fe, problem.FieldError{Field: "ttl", Message: "ttl must be between 1s and 24h"})
	}
	if r.Weight == 0 {
		r.Weight = 1
	}
	if r.Weight < 1 || r.Weight > 1000 {
		fe = append(fe, problem.FieldError{Field: "weight", Message: "weight must be between 1 and 1000"})
	}
	if len(fe) > 0 {
		p := problem.New(problem.CodeValidation, "invalid registration: %s", fe[0].Message)
		p.Errors = fe
		return p
	}
	return nil
}

// Deregister removes a registered instance from the shared registry.
func (m *Mesh) Deregister(ctx context.Context, svc, id string) error {
	s := m.lookup(svc)
	if s == nil {
		return problem.New(problem.CodeServiceNotFound, "no service %q", svc)
	}
	s.mu.Lock()
	in := s.instances[id]
	s.mu.Unlock()
	switch {
	case in == nil:
		return problem.New(problem.CodeInstanceNotFound, "service %s has no instance %q", svc, id)
	case in.source == SourceStatic:
		return problem.New(problem.CodeConflict, "instance %s of %s is declared in the config file; remove it there", id, svc)
	}
	if err := m.kv.Delete(ctx, svc+"."+id); err != nil {
		return fmt.Errorf("deregistering %s/%s: %w", svc, id, err)
	}
	m.dropRegistered(svc, id, 0)
	return nil
}

// apply follows one registry change.
func (m *Mesh) apply(e jetstream.KeyValueEntry) {
	svc, id, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		m.dropRegistered(svc, id, e.Revision())
		return
	}
	var r registration
	if err := json.Unmarshal(e.Value(), &r); err != nil || config.CheckInstanceURL(r.URL) != nil {
		m.log.Warn("ignoring an invalid registry entry", "key", e.Key(), "error", err)
		return
	}
	if !m.applyPut(svc, id, r, e.Revision(), e.Created()) {
		// Expired while no node was watching: delete it, unless renewed.
		ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
		_ = m.kv.Delete(ctx, e.Key(), jetstream.LastRevision(e.Revision()))
		cancel()
	}
}

// applyPut adds or renews a registered instance; it reports false when
// the registration has expired already. The registry server's timestamp
// (from the watch) dates a heartbeat, so every node agrees on when it
// happened; each compares that with its own clock, so a node whose clock
// is off from the NATS server's expires registrations off by as much.
func (m *Mesh) applyPut(svc, id string, r registration, rev uint64, created time.Time) bool {
	expires := created.Add(r.TTL.D())
	if !m.clock.Now().Before(expires) {
		return false
	}
	s := m.service(svc)
	in, _ := m.upsert(s, id, r.URL, r.Weight, SourceRegistered, r.MTLS, r.Metadata)
	in.mu.Lock()
	if rev >= in.revision {
		in.revision, in.expires = rev, expires
		if in.registered.IsZero() {
			in.registered = created
		}
	}
	in.mu.Unlock()
	return true
}

// dropRegistered removes a registered instance (rev 0: whatever revision).
func (m *Mesh) dropRegistered(svc, id string, rev uint64) {
	s := m.lookup(svc)
	if s == nil {
		return
	}
	s.mu.Lock()
	in := s.instances[id]
	s.mu.Unlock()
	if in == nil || in.source != SourceRegistered {
		return
	}
	in.mu.Lock()
	stale := rev != 0 && rev < in.revision
	in.mu.Unlock()
	if stale {
		return
	}
	m.remove(s, id)
	m.dropIfEmpty(s)
}

// sweep expires registrations whose heartbeats stopped. Every node
// drops them from its own view at once and deletes the entry, guarded by
// its revision so a heartbeat that just arrived is never lost.
func (m *Mesh) sweep() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		now := m.clock.Now()
		for _, s := range m.snapshotServices() {
			for _, in := range s.all() {
				if in.source != SourceRegistered {
					continue
				}
				in.mu.Lock()
				expired, rev := !now.Before(in.expires), in.revision
				in.mu.Unlock()
				if !expired {
					continue
				}
				m.log.Info("registration expired", "service", s.name, "instance", in.id, "url", in.raw)
				m.metrics.expired.WithLabelValues(s.name).Inc()
				m.remove(s, in.id)
				m.dropIfEmpty(s)
				ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
				_ = m.kv.Delete(ctx, s.name+"."+in.id, jetstream.LastRevision(rev))
				cancel()
			}
		}
	}
}

func (m *Mesh) lookup(name string) *service {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.services[name]
}

// service returns the named service, creating it (with the default
// balancer and policy) for a registration of an undeclared service.
func (m *Mesh) service(name string) *service {
	if s := m.lookup(name); s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.services[name]; s != nil {
		return s
	}
	s := m.newService(name, config.Service{}, false)
	m.services[name] = s
	return s
}

// dropIfEmpty forgets an undeclared service with no instances left.
func (m *Mesh) dropIfEmpty(s *service) {
	if s.declared {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s.mu.Lock()
	empty := len(s.instances) == 0
	s.mu.Unlock()
	if empty && m.services[s.name] == s {
		delete(m.services, s.name)
	}
}

func (m *Mesh) snapshotServices() []*service {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*service, 0, len(m.services))
	for _, s := range m.services {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
