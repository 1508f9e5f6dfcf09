package mesh

import (
	"net/url"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
	"github.com/junctionhq/junction/resilience"
)

// service is one callable service: its instances and the shared state of
// the calls to it (service breaker, bulkhead, retry budget, balancer).
type service struct {
	name     string
	cfg      config.Service
	policy   config.Policy
	declared bool // in the config file (kept when it has no instances)
	hashKey  *expr.Program
	bal      balancer
	breaker  *resilience.Breaker
	bulkhead *resilience.Bulkhead
	budget   *resilience.Budget
	backoff  resilience.Backoff

	mu        sync.Mutex
	instances map[string]*instance
	snap      atomic.Pointer[[]*instance] // sorted by id; replaced on every change
	checkers  map[string]func()           // instance id -> stop its health check

	ejectMu sync.Mutex // serialises passive ejection decisions
}

func (m *Mesh) newService(name string, cfg config.Service, declared bool) *service {
	cfg.Normalize()
	pol, ok := m.policies[cfg.Policy]
	if !ok {
		pol = m.policies["default"]
	}
	s := &service{
		name: name, cfg: cfg, policy: pol, declared: declared,
		bal:       newBalancer(cfg.Balancer),
		instances: map[string]*instance{},
		checkers:  map[string]func(){},
	}
	if cfg.HashKey != "" {
		s.hashKey, _ = expr.Compile(cfg.HashKey) // validated with the config
	}
	if cb := pol.CircuitBreaker; cb != nil && !cb.Disabled {
		s.breaker = m.newBreaker(name, "", *cb)
	}
	if pol.MaxConcurrent > 0 {
		s.bulkhead = resilience.NewBulkhead(pol.MaxConcurrent)
	}
	if r := pol.Retry; r != nil {
		s.budget = resilience.NewBudget(m.clock, r.Budget, 10, 10*time.Second)
		s.backoff = resilience.Backoff{Base: r.Backoff.D(), Max: r.MaxBackoff.D(), Jitter: 0.5}
	}
	empty := []*instance{}
	s.snap.Store(&empty)
	return s
}

func (m *Mesh) newBreaker(svc, inst string, cb config.CircuitBreaker) *resilience.Breaker {
	return resilience.NewBreaker(resilience.BreakerSettings{
		FailureRatio: cb.FailureRatio, MinRequests: cb.MinRequests, Window: cb.Window.D(),
		OpenFor: cb.OpenFor.D(), HalfOpenRequests: cb.HalfOpenRequests,
		OnStateChange: func(from, to resilience.State) {
			m.metrics.breakerState(svc, inst, to)
			m.log.Info("circuit breaker", "service", svc, "instance", inst, "from", from.String(), "to", to.String())
		},
	}, m.clock)
}

// upsert adds an instance or updates one in place (a heartbeat keeps its
// statistics). It reports whether the instance is new.
func (m *Mesh) upsert(s *service, id, raw string, weight int, source string, mtls bool, md map[string]string) (*instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := s.instances[id]; ok && in.raw == raw {
		in.mu.Lock()
		in.metadata = md
		in.mu.Unlock()
		if in.weight != max(weight, 1) || in.mtls != mtls {
			in.weight, in.mtls = max(weight, 1), mtls
			s.publishLocked()
		}
		return in, false
	}
	u, _ := url.Parse(raw) // validated by the caller
	var brk *resilience.Breaker
	if cb := s.policy.CircuitBreaker; cb != nil && !cb.Disabled {
		brk = m.newBreaker(s.name, id, *cb)
	}
	in := newInstance(id, raw, u, weight, source, brk)
	in.mtls, in.metadata = mtls, md
	if old, ok := s.instances[id]; ok {
		m.removeLocked(s, old)
	}
	s.instances[id] = in
	s.publishLocked()
	if s.cfg.Health != nil {
		s.checkers[id] = m.startCheck(s, in)
	}
	m.metrics.instanceHealth(s.name, in)
	return in, true
}

// remove drops an instance; it reports whether it was there.
func (m *Mesh) remove(s *service, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if !ok {
		return false
	}
	m.removeLocked(s, in)
	s.publishLocked()
	return true
}

func (m *Mesh) removeLocked(s *service, in *instance) {
	delete(s.instances, in.id)
	if stop := s.checkers[in.id]; stop != nil {
		stop()
		delete(s.checkers, in.id)
	}
	m.metrics.forget(s.name, in.id)
}

// publishLocked replaces the snapshot that calls read without locking.
func (s *service) publishLocked() {
	all := make([]*instance, 0, len(s.instances))
	for _, in := range s.instances {
		all = append(all, in)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].id < all[j].id })
	if r, ok := s.bal.(*hashRing); ok {
		r.rebuild(all)
	}
	s.snap.Store(&all)
}

func (s *service) all() []*instance { return *s.snap.Load() }

// candidates are the instances a call may use now: available and not
// tried, else available (a retry may go back to the one instance there
// is). If none is available on the first try, every instance whose
// breaker is not open is a candidate ("panic mode", as in Envoy): a health
// check failing everywhere is more often wrong than the whole service
// down, and the caller then sees the real error rather than a guess.
func (s *service) candidates(now time.Time, tried []*instance, buf []*instance) []*instance {
	all := s.all()
	out := buf[:0]
	for _, in := range all {
		if in.available(now) && !slices.Contains(tried, in) {
			out = append(out, in)
		}
	}
	if len(out) > 0 {
		return out
	}
	if len(tried) > 0 {
		for _, in := range all {
			if in.available(now) {
				out = append(out, in)
			}
		}
		return out
	}
	for _, in := range all {
		if in.breaker == nil || in.breaker.State() != resilience.StateOpen {
			out = append(out, in)
		}
	}
	return out
}
