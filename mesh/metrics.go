package mesh

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/junctionhq/junction/resilience"
)

// metrics are the mesh's Prometheus series, per service and per instance.
type metrics struct {
	requests         *prometheus.CounterVec   // service, code
	duration         *prometheus.HistogramVec // service
	instanceRequests *prometheus.CounterVec   // service, instance, code
	healthy          *prometheus.GaugeVec     // service, instance
	breaker          *prometheus.GaugeVec     // service, instance ("" = the service's own)
	retries          *prometheus.CounterVec   // service
	rejected         *prometheus.CounterVec   // service, reason
	ejections        *prometheus.CounterVec   // service, instance
	expired          *prometheus.CounterVec   // service
	inbound          *prometheus.CounterVec   // caller, code
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_requests_total", Help: "Service calls by service and final status code (or error code).",
		}, []string{"service", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_mesh_request_duration_seconds", Help: "Time to the response headers of a service call, retries included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service"}),
		instanceRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_instance_requests_total", Help: "Responses by service instance and status code.",
		}, []string{"service", "instance", "code"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "junction_mesh_instance_healthy", Help: "1 when the instance is in rotation by its health checks, 0 when unhealthy.",
		}, []string{"service", "instance"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "junction_mesh_breaker_state", Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open (instance empty: the service's breaker).",
		}, []string{"service", "instance"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_retries_total", Help: "Attempts sent again after a failure.",
		}, []string{"service"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_rejected_total", Help: "Calls or retries refused by policy: circuit_open, concurrency_limit, retry_budget, no_instance.",
		}, []string{"service", "reason"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_ejections_total", Help: "Passive outlier ejections.",
		}, []string{"service", "instance"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_registrations_expired_total", Help: "Registrations dropped because their heartbeats stopped.",
		}, []string{"service"}),
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_mesh_inbound_requests_total", Help: "Calls received by the sidecar's mTLS listener, by caller identity and status.",
		}, []string{"caller", "code"}),
	}
	reg.MustRegister(m.requests, m.duration, m.instanceRequests, m.healthy, m.breaker, m.retries, m.rejected, m.ejections, m.expired, m.inbound)
	return m
}

func (m *metrics) instanceHealth(svc string, in *instance) {
	v := 1.0
	if in.healthState() == HealthUnhealthy {
		v = 0
	}
	m.healthy.WithLabelValues(svc, in.id).Set(v)
}

func (m *metrics) breakerState(svc, inst string, s resilience.State) {
	v := 0.0
	switch s {
	case resilience.StateHalfOpen:
		v = 1
	case resilience.StateOpen:
		v = 2
	}
	m.breaker.WithLabelValues(svc, inst).Set(v)
}

// forget drops a departed instance's series, so a registry that churns
// does not grow the metrics without bound.
func (m *metrics) forget(svc, inst string) {
	l := prometheus.Labels{"service": svc, "instance": inst}
	m.instanceRequests.DeletePartialMatch(l)
	m.healthy.Delete(l)
	m.breaker.Delete(l)
	m.ejections.Delete(l)
}
