package projection

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the projections' Prometheus series, per projection.
type metrics struct {
	events   *prometheus.CounterVec   // projection, result
	errors   *prometheus.CounterVec   // projection
	batch    *prometheus.HistogramVec // projection
	position *prometheus.GaugeVec     // projection
}

func newMetrics(reg prometheus.Registerer, m *Manager) *metrics {
	x := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_projection_events_total", Help: "Events applied to a view, or skipped by on_error: skip.",
		}, []string{"projection", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_projection_errors_total", Help: "Failures of a projection's live view: retried database errors and stopping event errors.",
		}, []string{"projection"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_projection_batch_duration_seconds", Help: "Time to apply one batch of events in one transaction.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"projection"}),
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "junction_projection_position", Help: "The global log position up to which the view has applied every event.",
		}, []string{"projection"}),
	}
	if reg != nil {
		reg.MustRegister(x.events, x.errors, x.batch, x.position, lagCollector{m})
	}
	return x
}

var lagDesc = prometheus.NewDesc("junction_projection_lag_seconds",
	"Age of the oldest event the view has not applied yet; 0 when it is up to date.", []string{"projection"}, nil)

// lagCollector measures lag when scraped: one short read of the log per
// projection, and none when nobody scrapes.
type lagCollector struct{ m *Manager }

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, p := range c.m.list() {
		lag, _, err := p.lag(ctx)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, lag.Seconds(), p.def.name)
	}
}
