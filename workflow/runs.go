package workflow

import (
	"context"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/projection"
)

// RunsView is the view of every run's summary, kept by a projection of
// the runs' histories: GET /v1/runs lists it, and so can
// GET /v1/views/junction_runs.
const RunsView = "junction_runs"

// RunsProjection declares the runs view. Being a projection, it is
// rebuilt from the histories whenever its shape changes.
func RunsProjection() *config.Projection {
	ended := func(status string) *config.ProjectionHandler {
		return &config.ProjectionHandler{Update: map[string]string{
			"run_id": "event.stream.substring(6)", "status": "'" + status + "'",
			"ended_at": "event.time", "error": "event.data.?error.orValue('')",
		}}
	}
	return &config.Projection{
		From: config.ProjectionSource{Categories: []string{historyCategory}},
		Table: config.ProjectionTable{
			Name: RunsView, Key: "run_id",
			Columns: map[string]string{"run_id": "text", "workflow": "text", "status": "text", "trigger": "text",
				"parent": "text", "started_at": "timestamp", "ended_at": "timestamp", "error": "text"},
			Indexes: []string{"workflow", "status", "started_at"},
		},
		Handlers: map[string]*config.ProjectionHandler{
			evRunStarted: {Upsert: map[string]string{
				"run_id": "event.stream.substring(6)", "workflow": "event.data.workflow", "status": "'running'",
				"trigger": "event.data.?trigger.orValue('')", "parent": "event.data.?parent.?run.orValue('')",
				"started_at": "event.time",
			}},
			evUnwindStarted:  {Update: map[string]string{"run_id": "event.stream.substring(6)", "status": "'compensating'"}},
			evRunCompleted:   ended(StatusCompleted),
			evRunFailed:      ended(StatusFailed),
			evRunCompensated: ended(StatusCompensated),
			evRunCancelled:   ended(StatusCancelled),
		},
		BatchSize: 1000,
		OnError:   "skip",
	}
}

// Recover queues a task for every run the view shows unfinished, once
// the view has caught up: a run whose start (or signal) was recorded by
// a process that died before queueing its task continues. Tasks of runs
// that have one already are harmless: the newest carries the run.
func (e *Engine) Recover(ctx context.Context, view *projection.Projection) (int, error) {
	for {
		st := view.Status(ctx)
		if st.State == projection.StateRunning && st.LagSeconds == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	n := 0
	for _, status := range []string{StatusRunning, StatusCompensating} {
		q := projection.Query{Filters: map[string]string{"status": status}, Order: "started_at", Limit: 1000}
		for {
			page, err := view.List(ctx, q)
			if err != nil {
				return n, err
			}
			for _, row := range page.Rows {
				id, _ := row["run_id"].(string)
				if err := e.poke(ctx, id); err != nil {
					return n, err
				}
				n++
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
	}
	return n, nil
}
