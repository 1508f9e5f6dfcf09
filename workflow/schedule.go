package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/robfig/cron/v3"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// Schedules fire on the one node holding the schedules' lease (a key with
// a TTL, renewed every quarter of it); each schedule's cursor (the last
// fire time handled) and its latest run are in a KV bucket. A fire
// time's run id derives from the time, so a new lease holder that fires
// a time again finds the run the old one started.
const (
	leaseTTL = 10 * time.Second
	// lateGrace is how late a fire time may be handled and still count as
	// on time (a tick, a lease changing hands); later ones are missed and
	// start only within the schedule's catch_up window.
	lateGrace = 30 * time.Second
	tick      = 500 * time.Millisecond
)

type schedule struct {
	workflow string
	index    int
	cfg      *config.Schedule
	cron     cron.Schedule
	input    *expr.Template
}

// scheduleState is a schedule's cursor in the KV bucket.
type scheduleState struct {
	Last     time.Time  `json:"last"`               // the last fire time handled
	Run      string     `json:"run,omitempty"`      // the latest run started
	Buffered *time.Time `json:"buffered,omitempty"` // a fire time waiting for Run to end (buffer_one)
}

func (s *schedule) key() string { return s.workflow + "." + strconv.Itoa(s.index) }

func (e *Engine) compileSchedules() ([]*schedule, error) {
	var out []*schedule
	for _, name := range e.Workflows() {
		for i, sc := range e.o.Workflows[name].Schedules {
			c, err := config.ParseCron(sc.Cron)
			if err != nil {
				return nil, fmt.Errorf("workflow %s: schedules[%d]: %w", name, i, err)
			}
			s := &schedule{workflow: name, index: i, cfg: sc, cron: c}
			if sc.Input != "" {
				if s.input, err = expr.CompileTemplate(sc.Input); err != nil {
					return nil, fmt.Errorf("workflow %s: schedules[%d].input: %w", name, i, err)
				}
			}
			out = append(out, s)
		}
	}
	return out, nil
}

func (e *Engine) startSchedules(ctx context.Context) error {
	scheds, err := e.compileSchedules()
	if err != nil || len(scheds) == 0 {
		return err
	}
	if e.schedKV, err = e.o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: e.o.Prefix + "_wf_schedules", History: 1, Description: "Junction workflow schedules: cursor per schedule",
	}); err != nil {
		return fmt.Errorf("schedules bucket: %w", err)
	}
	leases, err := e.o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: e.o.Prefix + "_wf_leases", TTL: leaseTTL, History: 1, Description: "Junction workflow leases",
	})
	if err != nil {
		return fmt.Errorf("schedule lease bucket: %w", err)
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.holdSchedules(leases, scheds)
	}()
	return nil
}

// holdSchedules waits for the lease and fires schedules while it holds
// it.
func (e *Engine) holdSchedules(leases jetstream.KeyValue, scheds []*schedule) {
	node := uuid.NewString()
	const key = "schedules"
	var rev uint64
	held := false
	renew := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	defer func() {
		if held {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = leases.Delete(ctx, key, jetstream.LastRevision(rev))
			cancel()
		}
	}()
	for {
		ctx, cancel := context.WithTimeout(e.ctx, leaseTTL/4)
		switch {
		case !held:
			if r, err := leases.Create(ctx, key, []byte(node)); err == nil {
				rev, held, renew = r, true, time.Now()
				e.log.Info("holding the schedules lease", "node", node)
			}
		case time.Since(renew) >= leaseTTL/4:
			if r, err := leases.Update(ctx, key, []byte(node), rev); err == nil {
				rev, renew = r, time.Now()
			} else {
				held = false
				e.log.Warn("lost the schedules lease", "err", err)
			}
		}
		if held {
			for _, s := range scheds {
				if err := e.fireDue(ctx, s, time.Now()); err != nil && e.ctx.Err() == nil {
					e.log.Warn("schedule", "workflow", s.workflow, "schedule", s.index, "err", err)
				}
			}
		}
		cancel()
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		if e.stopping.Load() {
			return
		}
	}
}

func (e *Engine) loadSchedule(ctx context.Context, s *schedule) (scheduleState, uint64, error) {
	var st scheduleState
	kve, err := e.schedKV.Get(ctx, s.key())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, 0, nil
	}
	if err != nil {
		return st, 0, err
	}
	return st, kve.Revision(), json.Unmarshal(kve.Value(), &st)
}

func (e *Engine) saveSchedule(ctx context.Context, s *schedule, st scheduleState, rev uint64) (uint64, error) {
	b, _ := json.Marshal(st)
	if rev == 0 {
		return e.schedKV.Create(ctx, s.key(), b)
	}
	return e.schedKV.Update(ctx, s.key(), b, rev)
}

// fireDue handles every fire time of s due at now: starts its run,
// buffers it or skips it by the overlap policy, or drops it as missed
// when it is older than the catch-up window.
func (e *Engine) fireDue(ctx context.Context, s *schedule, now time.Time) error {
	st, rev, err := e.loadSchedule(ctx, s)
	if err != nil {
		return err
	}
	if rev == 0 {
		// First sight of the schedule: it starts from now, with nothing
		// to catch up.
		st.Last = now
		_, err := e.saveSchedule(ctx, s, st, 0)
		return err
	}
	busy := func() (bool, error) {
		if st.Run == "" {
			return false, nil
		}
		r, err := e.Get(ctx, st.Run)
		if errors.Is(err, ErrRunNotFound) {
			return false, nil
		}
		return err == nil && !r.Terminal(), err
	}
	changed := false
	if st.Buffered != nil {
		b, err := busy()
		if err != nil {
			return err
		}
		if !b {
			if st.Run, err = e.startScheduled(ctx, s, *st.Buffered); err != nil {
				return err
			}
			st.Buffered, changed = nil, true
		}
	}
	for at := s.cron.Next(st.Last); !at.After(now); at = s.cron.Next(at) {
		st.Last, changed = at, true
		if now.Sub(at) > lateGrace+s.cfg.CatchUp.D() {
			e.met.schedule.WithLabelValues(s.workflow, "missed").Inc()
			continue
		}
		b, err := busy()
		if err != nil {
			return err
		}
		switch {
		case !b || s.cfg.Overlap == config.OverlapAllow:
			if st.Run, err = e.startScheduled(ctx, s, at); err != nil {
				return err
			}
			e.met.schedule.WithLabelValues(s.workflow, "started").Inc()
		case s.cfg.Overlap == config.OverlapBufferOne && st.Buffered == nil:
			st.Buffered = tp(at)
			e.met.schedule.WithLabelValues(s.workflow, "buffered").Inc()
		default:
			e.met.schedule.WithLabelValues(s.workflow, "skipped").Inc()
		}
	}
	if !changed {
		return nil
	}
	_, err = e.saveSchedule(ctx, s, st, rev)
	return err
}

func (e *Engine) startScheduled(ctx context.Context, s *schedule, at time.Time) (string, error) {
	var input json.RawMessage
	if s.input != nil {
		v, err := s.input.Eval(map[string]any{"schedule": map[string]any{
			"time": at.UTC().Format(time.RFC3339), "workflow": s.workflow, "index": int64(s.index)}})
		if err != nil {
			return "", fmt.Errorf("input: %w", err)
		}
		if input, err = json.Marshal(v); err != nil {
			return "", err
		}
	}
	id := uuid.NewSHA1(idSpace, []byte("schedule/"+s.key()+"/"+at.UTC().Format(time.RFC3339Nano))).String()
	r, _, err := e.StartRun(ctx, s.workflow, input, StartOptions{ID: id, Trigger: "schedule:" + at.UTC().Format(time.RFC3339)})
	if err != nil {
		return "", err
	}
	return r.ID, nil
}

// RewindSchedule moves a schedule's cursor back to from, for a backfill:
// the fire times after it are handled again, within the schedule's
// catch_up window and under its overlap policy. Fire times that already
// started a run find that run.
func (e *Engine) RewindSchedule(ctx context.Context, workflow string, index int, from time.Time) error {
	if e.schedKV == nil {
		return fmt.Errorf("%w: no schedules are declared", ErrWorkflowNotFound)
	}
	scheds, err := e.compileSchedules()
	if err != nil {
		return err
	}
	for _, s := range scheds {
		if s.workflow != workflow || s.index != index {
			continue
		}
		var err error
		for try := 0; try < 5; try++ { // the lease holder may write it meanwhile
			var st scheduleState
			var rev uint64
			if st, rev, err = e.loadSchedule(ctx, s); err != nil {
				return err
			}
			st.Last = from
			if _, err = e.saveSchedule(ctx, s, st, rev); err == nil {
				return nil
			}
		}
		return err
	}
	return fmt.Errorf("%w: %s has no schedules[%d]", ErrWorkflowNotFound, workflow, index)
}
