package pipeline

import "github.com/prometheus/client_golang/prometheus"

// metrics are the pipelines' Prometheus series.
type metrics struct {
	records *prometheus.CounterVec // pipeline, outcome
	runs    *prometheus.CounterVec // pipeline, status
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_pipeline_records_total", Help: "Records by outcome: read, written, filtered, failed, dead_lettered.",
		}, []string{"pipeline", "outcome"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_pipeline_runs_total", Help: "Pipeline runs ended, by status.",
		}, []string{"pipeline", "status"}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.runs)
	}
	return m
}

// add counts what a batch changed.
func (m *metrics) add(name string, before, after Counters) {
	for _, x := range []struct {
		outcome string
		d       int64
	}{
		{"read", after.Read - before.Read}, {"written", after.Written - before.Written},
		{"filtered", after.Filtered - before.Filtered}, {"failed", after.Failed - before.Failed},
		{"dead_lettered", after.DeadLettered - before.DeadLettered},
	} {
		if x.d > 0 {
			m.records.WithLabelValues(name, x.outcome).Add(float64(x.d))
		}
	}
}
