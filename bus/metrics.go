package bus

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	published    *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	failed       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	filtered     *prometheus.CounterVec
	pushLatency  *prometheus.HistogramVec
	endToEnd     *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	buffered     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_bus_published_total", Help: "Messages stored, by topic (duplicates excluded).",
		}, []string{"topic"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_bus_duplicates_total", Help: "Publishes dropped as duplicates of a recent ce-id, by topic.",
		}, []string{"topic"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_bus_delivered_total", Help: "Messages acknowledged by subscribers, by subscription and mode (push, pull).",
		}, []string{"subscription", "mode"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_bus_delivery_failures_total", Help: "Failed push attempts, by subscription and reason.",
		}, []string{"subscription", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_bus_dead_lettered_total", Help: "Messages moved to a dead-letter topic, by subscription.",
		}, []string{"subscription"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_bus_filtered_total", Help: "Messages skipped by a subscription filter.",
		}, []string{"subscription"}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_bus_push_duration_seconds", Help: "Webhook call duration, by subscription.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"subscription"}),
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_bus_end_to_end_seconds", Help: "Time from publish to acknowledged push delivery.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20),
		}, []string{"subscription"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "junction_bus_push_in_flight", Help: "Webhook calls in progress, by subscription.",
		}, []string{"subscription"}),
		buffered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "junction_bus_push_buffered", Help: "Messages held in memory for push delivery (fetched, not yet settled).",
		}, []string{"subscription"}),
	}
	reg.MustRegister(m.published, m.duplicates, m.delivered, m.failed, m.deadLettered, m.filtered,
		m.pushLatency, m.endToEnd, m.inFlight, m.buffered)
	return m
}
