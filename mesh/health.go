package mesh

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// startCheck runs the service's active health check against one instance
// until the returned stop is called. Every node checks on its own: health
// is what this node can reach, which is what its calls need.
func (m *Mesh) startCheck(s *service, in *instance) (stop func()) {
	h := s.cfg.Health
	ctx, cancel := context.WithCancel(m.ctx)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(h.Interval.D())
		defer t.Stop()
		for {
			ok, detail := m.probe(ctx, s, in)
			if ctx.Err() != nil {
				return
			}
			m.checked(s, in, ok, detail)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return cancel
}

// probe makes one health-check request; a 2xx answer is healthy.
func (m *Mesh) probe(ctx context.Context, s *service, in *instance) (bool, string) {
	h := s.cfg.Health
	ctx, cancel := context.WithTimeout(ctx, h.Timeout.D())
	defer cancel()
	u := *in.url
	u.Path = joinPath(u.Path, h.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", "junction-health-check")
	rt := http.RoundTripper(m.plain)
	if in.mtls {
		rt = m.secure
		req = req.WithContext(withPeer(ctx, s.name))
		req.Header.Set(ServiceHeader, s.name)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return false, err.Error()
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return false, fmt.Sprintf("status %d", resp.StatusCode)
	}
	return true, ""
}

// checked applies one check result with the thresholds: an instance
// changes state only after that many results in a row agree, so one lost
// packet does not take it out. A new instance becomes healthy at its first
// passing check.
func (m *Mesh) checked(s *service, in *instance, ok bool, detail string) {
	h := s.cfg.Health
	prev := in.healthState()
	next := prev
	in.mu.Lock()
	if ok {
		in.checkOK, in.checkFail, in.lastCheckErr = in.checkOK+1, 0, ""
		if prev == HealthUnknown || in.checkOK >= h.HealthyThreshold {
			next = HealthHealthy
		}
	} else {
		in.checkFail, in.checkOK, in.lastCheckErr = in.checkFail+1, 0, detail
		if in.checkFail >= h.UnhealthyThreshold {
			next = HealthUnhealthy
		}
	}
	in.mu.Unlock()
	if next == prev {
		return
	}
	in.health.Store(next)
	m.metrics.instanceHealth(s.name, in)
	m.log.Info("instance health changed", "service", s.name, "instance", in.id, "url", in.raw, "from", prev, "to", next, "detail", detail)
}

// outcome feeds passive outlier ejection with one call's result. After
// consecutive_failures failures in a row the instance leaves rotation for
// base_ejection times the number of ejections in a row (up to
// max_ejection), unless max_ejected_percent of the service is out already.
func (m *Mesh) outcome(s *service, in *instance, failed bool) {
	o := s.cfg.Outlier
	now := m.clock.Now()
	in.mu.Lock()
	if !failed {
		in.failures = 0
		// A success long after the last ejection ended resets the
		// growth: the instance has been well for a whole base period.
		if in.ejections > 0 && now.Sub(in.ejectedUntil) > o.BaseEjection.D() {
			in.ejections = 0
		}
		in.mu.Unlock()
		return
	}
	in.failures++
	trip := in.failures >= o.ConsecutiveFailures && !now.Before(in.ejectedUntil)
	in.mu.Unlock()
	if !trip {
		return
	}
	// One decision at a time per service: the calls in flight to an
	// instance that just died fail together, and must neither eject it
	// several times over (each time longer) nor, across instances,
	// together eject more than max_ejected_percent.
	s.ejectMu.Lock()
	if !m.mayEject(s, now) {
		s.ejectMu.Unlock()
		return
	}
	in.mu.Lock()
	if now.Before(in.ejectedUntil) || in.failures < o.ConsecutiveFailures {
		// Ejected by a concurrent failure, or a success came in between.
		in.mu.Unlock()
		s.ejectMu.Unlock()
		return
	}
	in.failures = 0
	in.ejections++
	d := min(o.BaseEjection.D()*time.Duration(in.ejections), o.MaxEjection.D())
	in.ejectedUntil = now.Add(d)
	in.mu.Unlock()
	s.ejectMu.Unlock()
	m.metrics.ejections.WithLabelValues(s.name, in.id).Inc()
	m.log.Warn("instance ejected", "service", s.name, "instance", in.id, "url", in.raw, "for", d)
}

func (m *Mesh) mayEject(s *service, now time.Time) bool {
	all := s.all()
	out := 0
	for _, in := range all {
		in.mu.Lock()
		if now.Before(in.ejectedUntil) {
			out++
		}
		in.mu.Unlock()
	}
	return (out+1)*100 <= s.cfg.Outlier.MaxEjectedPercent*len(all)
}
