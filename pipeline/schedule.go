package pipeline

import (
	"errors"
	"time"

	"github.com/junctionhq/junction/config"
)

// Launch starts the pipelines that run on their own: streaming ones
// (restarted with backoff when they fail) and scheduled ones (a run at
// each fire time of their cron expression; a fire time that finds a run
// in progress, here or on another node, is skipped). Every node runs the
// schedules; the first to claim a fire time's run runs it.
func (m *Manager) Launch() {
	for _, name := range m.Names() {
		p := m.o.Pipelines[name]
		switch {
		case p.Stream:
			m.wg.Add(1)
			go m.stream(name)
		case p.Schedule != "":
			sched, err := config.ParseCron(p.Schedule)
			if err != nil {
				m.log.Error("pipeline schedule", "pipeline", name, "err", err) // validated at load: cannot happen
				continue
			}
			m.wg.Add(1)
			go m.schedule(name, sched.Next)
		}
	}
}

func (m *Manager) stream(name string) {
	defer m.wg.Done()
	delay := time.Second
	for m.ctx.Err() == nil {
		s, err := m.Run(m.ctx, name, nil)
		if m.ctx.Err() != nil {
			return
		}
		if err == nil && s.Status == "completed" {
			delay = time.Second // a finite input ended: start again
		} else {
			m.log.Warn("streaming pipeline stopped; restarting", "pipeline", name, "in", delay, "err", err, "error", s.Error)
		}
		t := time.NewTimer(delay)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, 30*time.Second)
	}
}

func (m *Manager) schedule(name string, next func(time.Time) time.Time) {
	defer m.wg.Done()
	for at := next(time.Now()); m.ctx.Err() == nil; at = next(time.Now()) {
		t := time.NewTimer(time.Until(at))
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := m.Start(m.ctx, name, nil); err != nil {
			if errors.Is(err, ErrRunning) {
				m.log.Info("scheduled pipeline run skipped: a run is in progress", "pipeline", name, "at", at)
				continue
			}
			m.log.Warn("scheduled pipeline run", "pipeline", name, "err", err)
		}
	}
}
