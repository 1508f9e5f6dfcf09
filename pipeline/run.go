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
	base  map[int]int
	dead  Output // nil: dead letters are counted and dropped
	batch config.PipelineBatch
	c     Counters
	// save stores a checkpoint: the position to resume from, the counts
	// up to it, and the state of the Stateful processors as of it (by
	// processor index).
	save   func(ctx context.Context, pos json.RawMessage, c Counters, states map[int][]byte) error
	report func(Progress)
	start  time.Time
	// scratch holds process's working slices between calls.
	scratch [2][]*Record
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
	// A batch is written by the writer goroutine while the next one is
	// read and processed, so that the input's and processors' work
	// overlaps the output's (a database's round trips, its own CPU):
	// one batch in flight at a time, committed in order, Commit always
	// on this goroutine. An input that reads ahead (files) has its Next
	// called on a goroutine of its own; any other is called from here,
	// and only once its batch before is committed, as a broker may hold
	// back further messages until the ones delivered are acknowledged.
	w := newBatchWriter(r)
	defer w.stop()
	next, ahead, stopReading := r.reader(ctx)
	defer stopReading()
	var (
		batches = make([][]*Record, len(r.outs))
		dead    []*Record
		size    int // records in batches
		bytes   int
		first   time.Time
		last    *Record // the last record read: its position is committed once its batch is written
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
				b, _ := json.Marshal(o.Map())
				bytes += len(b)
			}
		}
	}
	// flush hands what is gathered to the writer, once it has finished
	// the batch before (whose position it then commits).
	flush := func(ctx context.Context) error {
		if err := w.wait(ctx); err != nil {
			return err
		}
		if size == 0 && len(dead) == 0 && last == nil {
			r.progress()
			return nil
		}
		j := writeJob{batches: batches, dead: dead, last: last, read: r.c.Read, filtered: r.c.Filtered, commits: r.prepare()}
		if last != nil {
			// The processors' state goes with the position only: a
			// state saved beside an older position would be replayed
			// into a second time.
			var err error
			if j.states, err = r.states(); err != nil {
				return err
			}
		}
		w.submit(ctx, j)
		batches, dead = make([][]*Record, len(r.outs)), nil
		last = nil // handed over: a flush with no new record commits nothing
		size, bytes, first = 0, 0, time.Time{}
		return nil
	}
	// drain flushes and waits until everything is written and committed.
	drain := func(ctx context.Context) error {
		if err := flush(ctx); err != nil {
			return err
		}
		return w.wait(ctx)
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
		if err := drain(fctx); err != nil {
			return errors.Join(ctx.Err(), err)
		}
		return ctx.Err()
	}
	for {
		if ctx.Err() != nil {
			return stopped()
		}
		settle := w.poll
		if !ahead {
			settle = w.wait
		}
		if err := settle(ctx); err != nil {
			return err
		}
		recs, err := next(ctx)
		if errors.Is(err, io.EOF) {
			if err := release(true); err != nil {
				return err
			}
			return drain(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return err
		}
		if len(recs) > 0 && first.IsZero() {
			// Records read start the period too, written or not: a
			// run whose records are all filtered or absorbed still
			// commits them as time passes, rather than holding them
			// unacknowledged at a broker.
			first = time.Now()
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

// readAhead is an input whose Next may run on another goroutine than its
// Commit and progress, and ahead of them: a file input.
type readAhead interface {
	readsAhead()
}

// readAheadDepth is how many Next answers may wait, read ahead.
const readAheadDepth = 2

// reader returns the function the run reads with: the input's Next, or,
// for an input that allows it (ahead), a goroutine's that reads ahead
// (parsing files on one core while the records before are processed on
// another). stop ends that goroutine before the input is closed.
func (r *runner) reader(ctx context.Context) (next func(context.Context) ([]*Record, error), ahead bool, stop func()) {
	if _, ok := r.in.(readAhead); !ok {
		return r.in.Next, false, func() {}
	}
	type answer struct {
		recs []*Record
		err  error
	}
	rctx, cancel := context.WithCancel(ctx)
	ch := make(chan answer, readAheadDepth)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			recs, err := r.in.Next(rctx)
			select {
			case ch <- answer{recs, err}:
			case <-rctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	next = func(ctx context.Context) ([]*Record, error) {
		select {
		case a := <-ch:
			return a.recs, a.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return next, true, func() {
		cancel()
		<-done
	}
}

// writeJob is a batch handed to the writer: the records per output, the
// dead letters, and the last record read before it (nil: nothing new to
// commit).
type writeJob struct {
	ctx     context.Context
	batches [][]*Record
	dead    []*Record
	last    *Record
	// read and filtered are the counts up to last: the checkpoint saved
	// with its position counts them, not the records read since.
	read, filtered int64
	// states are the Stateful processors' states as of last.
	states map[int][]byte
	// commits are the Committer processors' effects, to make once the
	// batch is written.
	commits []func(context.Context) error
}

// writeResult is what the writer did with a job.
type writeResult struct {
	job                           writeJob
	written, failed, deadLettered int64
	err                           error
}

// batchWriter writes batches on its own goroutine, one at a time.
type batchWriter struct {
	r        *runner
	jobs     chan writeJob
	results  chan writeResult
	done     chan struct{}
	inFlight bool
}

func newBatchWriter(r *runner) *batchWriter {
	w := &batchWriter{r: r, jobs: make(chan writeJob), results: make(chan writeResult, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for j := range w.jobs {
			w.results <- r.writeBatch(j)
		}
	}()
	return w
}

func (w *batchWriter) submit(ctx context.Context, j writeJob) {
	j.ctx = ctx
	w.jobs <- j
	w.inFlight = true
}

// wait waits for the batch in flight, if any, and settles it.
func (w *batchWriter) wait(ctx context.Context) error {
	if !w.inFlight {
		return nil
	}
	w.inFlight = false
	return w.r.settle(ctx, <-w.results)
}

// poll settles the batch in flight if it is written, without waiting,
// so that positions are committed as soon as they can be.
func (w *batchWriter) poll(ctx context.Context) error {
	if !w.inFlight {
		return nil
	}
	select {
	case res := <-w.results:
		w.inFlight = false
		return w.r.settle(ctx, res)
	default:
		return nil
	}
}

// stop ends the writer once the batch in flight, if any, is done with
// (its result dropped: an uncommitted batch is redelivered), so that
// nothing writes to an output after the run returns.
func (w *batchWriter) stop() {
	close(w.jobs)
	<-w.done
}

// writeBatch writes a job's batches and dead letters (on the writer's
// goroutine: it touches no state of the runner's).
func (r *runner) writeBatch(j writeJob) writeResult {
	res := writeResult{job: j}
	dead := j.dead
	for i, batch := range j.batches {
		if len(batch) == 0 {
			continue
		}
		refused, err := r.write(j.ctx, r.outs[i], batch)
		if err != nil {
			res.err = err
			return res
		}
		res.written += int64(len(batch) - len(refused))
		dead = append(dead, refused...)
	}
	if len(dead) > 0 {
		res.failed = int64(len(dead))
		if r.dead != nil {
			if err := r.dead.Write(j.ctx, dead); err != nil {
				res.err = fmt.Errorf("dead letter: %w", err)
				return res
			}
			res.deadLettered = int64(len(dead))
		}
	}
	return res
}

// settleTimeout bounds a written batch's bookkeeping (see settle).
const settleTimeout = 10 * time.Second

// settle counts a written batch and commits its position.
func (r *runner) settle(ctx context.Context, res writeResult) error {
	if res.err != nil {
		return res.err
	}
	r.c.Written += res.written
	r.c.Failed += res.failed
	r.c.DeadLettered += res.deadLettered
	// A written batch's bookkeeping is finished even when the run is
	// stopping: it is a few short writes, and leaving it undone would
	// have the batch written again by the next run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	for _, commit := range res.job.commits {
		if err := commit(ctx); err != nil {
			return err
		}
	}
	if res.job.last != nil {
		// The checkpoint is saved before the input forgets the records:
		// a node lost in between has them delivered again (counted twice
		// by a window, at least once), never not at all.
		pos := res.job.last.Position()
		if r.save != nil {
			c := r.c
			c.Read, c.Filtered = res.job.read, res.job.filtered
			if err := r.save(ctx, pos, c, res.job.states); err != nil {
				return err
			}
		}
		if err := r.in.Commit(ctx, pos); err != nil {
			return err
		}
	}
	r.progress()
	return nil
}

// states takes the Stateful processors' states (nil when none is).
func (r *runner) states() (map[int][]byte, error) {
	var st map[int][]byte
	for i, p := range r.procs {
		if s, ok := p.(Stateful); ok {
			b, err := s.State()
			if err != nil {
				return nil, fmt.Errorf("processors[%d]: state: %w", i, err)
			}
			if st == nil {
				st = map[int][]byte{}
			}
			st[i] = b
		}
	}
	return st, nil
}

// prepare collects the Committer processors' effects for a batch.
func (r *runner) prepare() []func(context.Context) error {
	var fns []func(context.Context) error
	for _, p := range r.procs {
		if c, ok := p.(Committer); ok {
			if fn := c.Prepare(); fn != nil {
				fns = append(fns, fn)
			}
		}
	}
	return fns
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

// process runs a record through the processors from the i-th on. The
// slice it returns is the runner's own, valid until the next call: the
// callers copy the records out at once, which spares two allocations
// per record and processor.
func (r *runner) process(ctx context.Context, rec *Record, from int) ([]*Record, error) {
	cur, next := append(r.scratch[0][:0], rec), r.scratch[1]
	defer func() { r.scratch = [2][]*Record{cur, next} }()
	for k := from; k < len(r.procs); k++ {
		p := r.procs[k]
		next = next[:0]
		for _, x := range cur {
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
		if cur, next = next, cur; len(cur) == 0 {
			return nil, nil
		}
	}
	return cur, nil
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
