package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/junctionhq/junction/config"
)

// Counters are a run's record counts.
type Counters struct {
	// Read counts records the input produced.
	Read int64 `json:"read"`
	// Written counts records the output stored.
	Written int64 `json:"written"`
	// Filtered counts records a filter dropped.
	Filtered int64 `json:"filtered"`
	// Failed counts records a processor or the output refused; those
	// written to the dead letter are also DeadLettered.
	Failed       int64 `json:"failed"`
	DeadLettered int64 `json:"dead_lettered"`
}

// Summary is a run's outcome.
type Summary struct {
	Pipeline string `json:"pipeline"`
	RunID    string `json:"run_id"`
	// Status is running, completed or failed.
	Status string `json:"status"`
	Counters
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
	Duration string    `json:"duration"`
	// Rate is records read per second.
	Rate float64 `json:"rate"`
	// Resumed says the run continued one that was interrupted.
	Resumed bool   `json:"resumed,omitempty"`
	Error   string `json:"error,omitempty"`
	// Progress is how far through its input the run is, when the
	// input's size is known.
	Progress *InputProgress `json:"progress,omitempty"`
}

// InputProgress is Done of Total units (bytes of files, records of a
// generator) of an input.
type InputProgress struct {
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
	Unit  string `json:"unit"`
}

// Progress is what a run reports as it goes: counts, and how far through
// its input it is when the input's size is known (Done of Total, in the
// input's unit: bytes of files, records of a generator).
type Progress struct {
	Counters
	Done, Total int64
	Unit        string
	Elapsed     time.Duration
}

// sized is an input whose size is known.
type sized interface {
	progress() (done, total int64, unit string)
}

// runner moves the records of one run.
type runner struct {
	in    Input
	procs []Processor
	// outs are the pipeline's output, then the Router processors'.
	outs []Output
	// base maps a Router processor's index to the index in outs of its
	// first output.
	base   map[int]int
	dead   Output // nil: dead letters are counted and dropped
	batch  config.PipelineBatch
	c      Counters
	save   func(ctx context.Context, pos json.RawMessage, c Counters) error
	report func(Progress)
	start  time.Time
}

// defaults of a pipeline's batch policy.
const (
	defaultBatchCount  = 500
	defaultBatchPeriod = time.Second
)

func (r *runner) run(ctx context.Context) error {
	count, maxBytes, period := r.batch.Count, r.batch.Bytes, r.batch.Period.D()
	if count <= 0 {
		count = defaultBatchCount
	}
	if period <= 0 {
		period = defaultBatchPeriod
	}
	var (
		batches = make([][]*Record, len(r.outs))
		dead    []*Record
		size    int // records in batches
		bytes   int
		first   time.Time
		last    *Record // the last record read: its position is committed at the next flush
	)
	add := func(outs []*Record) {
		for _, o := range outs {
			if first.IsZero() {
				first = time.Now()
			}
			route := o.Route
			if route < 0 || route >= len(batches) {
				route = 0
			}
			batches[route] = append(batches[route], o)
			size++
			if maxBytes > 0 {
				b, _ := json.Marshal(o.Fields)
				bytes += len(b)
			}
		}
	}
	flush := func(ctx context.Context) error {
		for i, batch := range batches {
			if len(batch) == 0 {
				continue
			}
			refused, err := r.write(ctx, r.outs[i], batch)
			if err != nil {
				return err
			}
			r.c.Written += int64(len(batch) - len(refused))
			dead = append(dead, refused...)
			batches[i] = batch[:0]
		}
		if len(dead) > 0 {
			r.c.Failed += int64(len(dead))
			if r.dead != nil {
				if err := r.dead.Write(ctx, dead); err != nil {
					return fmt.Errorf("dead letter: %w", err)
				}
				r.c.DeadLettered += int64(len(dead))
			}
		}
		if last != nil {
			pos := last.Position()
			if err := r.in.Commit(ctx, pos); err != nil {
				return err
			}
			if r.save != nil {
				if err := r.save(ctx, pos, r.c); err != nil {
					return err
				}
			}
			last = nil // committed: a flush with no new record commits nothing
		}
		dead, size, bytes, first = dead[:0], 0, 0, time.Time{}
		r.progress()
		return nil
	}
	// emit runs what processor i emitted on its own through the
	// processors after it.
	emit := func(i int, recs []*Record) error {
		for _, rec := range recs {
			outs, err := r.process(ctx, rec, i+1)
			if err != nil {
				if !errors.Is(err, ErrRecord) {
					return err
				}
				rec.Err = err
				dead = append(dead, rec)
				continue
			}
			add(outs)
		}
		return nil
	}
	// release runs on what the processors that hold records let go of
	// (by Tick, or End at the end of the input).
	release := func(end bool) error {
		for i, p := range r.procs {
			var held []*Record
			var err error
			if t, ok := p.(Ticker); ok && !end {
				held, err = t.Tick(ctx)
			} else if e, ok := p.(Ender); ok && end {
				held, err = e.End(ctx)
			}
			if err != nil {
				return err
			}
			if err := emit(i, held); err != nil {
				return err
			}
		}
		return nil
	}
	// stopped writes what is gathered when the run is stopped, so that
	// a stopping node leaves no batch half done (bounded: the records
	// are redelivered if it cannot).
	stopped := func() error {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := flush(fctx); err != nil {
			return errors.Join(ctx.Err(), err)
		}
		return ctx.Err()
	}
	for {
		if ctx.Err() != nil {
			return stopped()
		}
		recs, err := r.in.Next(ctx)
		if errors.Is(err, io.EOF) {
			if err := release(true); err != nil {
				return err
			}
			return flush(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return err
		}
		for _, rec := range recs {
			r.c.Read++
			last = rec
			if rec.Err != nil {
				dead = append(dead, rec)
				continue
			}
			outs, err := r.process(ctx, rec, 0)
			if err != nil {
				if !errors.Is(err, ErrRecord) {
					return err
				}
				rec.Err = err
				dead = append(dead, rec)
				continue
			}
			if len(outs) == 0 {
				r.c.Filtered++
			}
			add(outs)
		}
		if err := release(false); err != nil {
			return err
		}
		if size >= count || maxBytes > 0 && bytes >= maxBytes || !first.IsZero() && time.Since(first) >= period || len(dead) >= count {
			if err := flush(ctx); err != nil {
				return err
			}
		}
	}
}

func (r *runner) progress() {
	if r.report == nil {
		return
	}
	p := Progress{Counters: r.c, Total: -1, Elapsed: time.Since(r.start)}
	if s, ok := r.in.(sized); ok {
		p.Done, p.Total, p.Unit = s.progress()
	}
	r.report(p)
}

// process runs a record through the processors from the i-th on.
func (r *runner) process(ctx context.Context, rec *Record, from int) ([]*Record, error) {
	recs := []*Record{rec}
	for k := from; k < len(r.procs); k++ {
		p := r.procs[k]
		var next []*Record
		for _, x := range recs {
			out, err := p.Process(ctx, x)
			if err != nil {
				return nil, err
			}
			next = append(next, out...)
		}
		if b, ok := r.base[k]; ok {
			// The router numbers its own outputs from 1; the first
			// router to route a record decides where it goes.
			for _, x := range next {
				if x.Route > 0 && !x.routed {
					x.Route, x.routed = b+x.Route-1, true
				}
			}
		}
		if recs = next; len(recs) == 0 {
			return nil, nil
		}
	}
	return recs, nil
}

// write writes a batch. When the batch fails, its records are written
// one at a time, so that only the records the output refuses go to the
// dead letter; when every one fails, the output itself is failing and
// the run stops (to resume from its last batch).
func (r *runner) write(ctx context.Context, out Output, batch []*Record) (refused []*Record, err error) {
	err = out.Write(ctx, batch)
	if err == nil || ctx.Err() != nil {
		return nil, err
	}
	batchErr := err
	for _, rec := range batch {
		if err := out.Write(ctx, []*Record{rec}); err != nil {
			rec.Err = fmt.Errorf("%w: output: %v", ErrRecord, err)
			refused = append(refused, rec)
		}
	}
	if len(refused) == len(batch) && len(batch) > 1 {
		return nil, fmt.Errorf("output: %w", batchErr)
	}
	return refused, nil
}
