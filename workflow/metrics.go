package workflow

import "github.com/prometheus/client_golang/prometheus"

// metrics are the engine's Prometheus series. A run's start and end are
// counted by the node whose append recorded them, so each run is counted
// once across nodes.
type metrics struct {
	started  *prometheus.CounterVec   // workflow
	finished *prometheus.CounterVec   // workflow, status
	duration *prometheus.HistogramVec // workflow, status
	steps    *prometheus.CounterVec   // workflow, outcome
	stepTime *prometheus.HistogramVec // workflow, kind
	active   prometheus.Gauge
	schedule *prometheus.CounterVec // workflow, outcome
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_workflow_runs_started_total", Help: "Runs started.",
		}, []string{"workflow"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_workflow_runs_finished_total", Help: "Runs ended, by final status.",
		}, []string{"workflow", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_workflow_run_duration_seconds", Help: "Time from a run's start to its end.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}, []string{"workflow", "status"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_workflow_step_attempts_total", Help: "Step attempts recorded, by outcome (completed, failed).",
		}, []string{"workflow", "outcome"}),
		stepTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "junction_workflow_step_duration_seconds", Help: "Time to execute one attempt of a step that acts outside the engine.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"workflow", "kind"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "junction_workflow_active_runs", Help: "Runs this node is working on now.",
		}),
		schedule: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "junction_workflow_schedule_fires_total", Help: "Fire times of schedules, by outcome: started, buffered, skipped (overlap), missed (older than catch_up).",
		}, []string{"workflow", "outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.started, m.finished, m.duration, m.steps, m.stepTime, m.active, m.schedule)
	}
	return m
}
