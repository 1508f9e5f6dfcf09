// Package projection keeps SQL views up to date from the event store (the
// read side of CQRS). A projection follows the global log, maps each
// event of a handled type to an insert, upsert, update or delete with CEL,
// and applies events in batches, each batch in one transaction that also
// moves the projection's checkpoint: an event's effect is applied exactly
// once, even across a crash. A rebuild fills a shadow table from the
// start of the log while the old view keeps answering, then swaps it in.
package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/resilience"
)

// checkpoints is the table, in every database holding a view, that keeps
// each projection's position. A rebuild keeps its own row, name + ":rebuild".
const checkpoints = "junction_projections"

// States of a projection's live view.
const (
	StateStarting   = "starting"
	StateRunning    = "running"
	StateRetrying   = "retrying"   // a database or store error; retried with backoff
	StateFailed     = "failed"     // an event failed with on_error: stop
	StateRebuilding = "rebuilding" // its definition changed: the old view answers until the rebuild swaps in
)

// Sentinel errors of the views API.
var (
	ErrNotFound    = errors.New("no such projection")
	ErrRowNotFound = errors.New("row not found")
	ErrFailed      = errors.New("projection failed")
	ErrInvalid     = errors.New("invalid query")
)

// EventError is an event the projection could not apply: a mapping that
// failed or a row the database refused.
type EventError struct {
	Position uint64
	Stream   string
	Version  uint64
	Type     string
	Err      error
}

func (e *EventError) Error() string {
	return fmt.Sprintf("event %s of stream %s (version %d, position %d): %v", e.Type, e.Stream, e.Version, e.Position, e.Err)
}

func (e *EventError) Unwrap() error { return e.Err }

// Projection is one running projection and its view.
type Projection struct {
	def   *definition
	db    *sql.DB
	d     dialect
	store eventstore.Store
	log   *slog.Logger
	m     *metrics

	// wmu serializes writes to the view's tables: the live batches, a
	// rebuild's batches and the swap.
	wmu sync.Mutex

	mu       sync.Mutex
	state    string
	lastErr  *ErrorInfo
	next     uint64 // the view has applied every selected event before this position
	applied  uint64
	skipped  uint64
	changed  chan struct{} // closed and replaced whenever next or state changes
	rebuild  *rebuildState
	liveOK   bool          // the view's table matches the definition
	wakeLive chan struct{} // wakes a live applier that waits (failed, or behind a rebuild)
}

// ErrorInfo is the last error of a projection, as its status shows it.
type ErrorInfo struct {
	Message  string    `json:"message"`
	Position uint64    `json:"position,omitempty"`
	Stream   string    `json:"stream,omitempty"`
	Type     string    `json:"type,omitempty"`
	Time     time.Time `json:"time"`
}

type rebuildState struct {
	next    uint64
	applied uint64
	started time.Time
	err     *ErrorInfo
}

// target is the table a follow writes: the view or a rebuild's shadow.
type target struct {
	table, ck string
	stmts     map[string]string // event type -> SQL
	rebuild   bool
	// prepared holds SQLite statements prepared once per follow: SQLite
	// would otherwise compile each statement for every event. (pgx keeps
	// its own per-connection statement cache for PostgreSQL.)
	prepared map[string]*sql.Stmt
}

// exec runs the statement of event type typ in tx.
func (t *target) exec(ctx context.Context, p *Projection, tx *sql.Tx, typ string, args []any) error {
	if p.d != sqlite {
		_, err := tx.ExecContext(ctx, t.stmts[typ], args...)
		return err
	}
	st, ok := t.prepared[typ]
	if !ok {
		var err error
		if st, err = p.db.PrepareContext(ctx, t.stmts[typ]); err != nil {
			return err
		}
		if t.prepared == nil {
			t.prepared = map[string]*sql.Stmt{}
		}
		t.prepared[typ] = st
	}
	_, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	return err
}

// close releases the prepared statements.
func (t *target) close() {
	for typ, st := range t.prepared {
		st.Close()
		delete(t.prepared, typ)
	}
}

// rowCache holds, for one transaction, the rows that mappings read, as
// the transaction has left them: events of one entity usually come
// together, so a batch reads each row once rather than once per event.
type rowCache map[any]map[string]any

func (p *Projection) target(table, ck string, rebuild bool) *target {
	t := &target{table: table, ck: ck, rebuild: rebuild, stmts: map[string]string{}}
	for typ, h := range p.def.handlers {
		t.stmts[typ] = h.statement(p.d, table, p.def.schema.key)
	}
	return t
}

// Name is the projection's (and its view's) name.
func (p *Projection) Name() string { return p.def.name }

func (p *Projection) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Projection) setState(s string, e *ErrorInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = s
	if e != nil {
		p.lastErr = e
	}
	p.signal()
}

func errorInfo(err error) *ErrorInfo {
	info := &ErrorInfo{Message: err.Error(), Time: time.Now().UTC()}
	var ee *EventError
	if errors.As(err, &ee) {
		info.Position, info.Stream, info.Type = ee.Position, ee.Stream, ee.Type
	}
	return info
}

// quietPeriod is how long a rebuild's follow must have been idle before
// it checks whether it has caught up with the log.
const quietPeriod = 50 * time.Millisecond

var retryBackoff = resilience.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}

// runLive applies the log to the view until ctx ends. An event error with
// on_error: stop parks it in StateFailed until a rebuild wakes it; any
// other error is retried with backoff from the checkpoint.
func (p *Projection) runLive(ctx context.Context) {
	t := p.target(p.def.table, p.def.name, false)
	failures := 0
	for ctx.Err() == nil {
		p.mu.Lock()
		ok, wake := p.liveOK, p.wakeLive
		p.mu.Unlock()
		if !ok {
			select { // a rebuild is replacing the table
			case <-wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		p.setState(StateRunning, nil)
		err := p.follow(ctx, t, nil)
		if ctx.Err() != nil {
			return
		}
		var ee *EventError
		if errors.As(err, &ee) {
			p.log.Error("projection stopped: an event failed; fix the projection and rebuild it, or set on_error: skip", "projection", p.def.name, "err", err)
			p.m.errors.WithLabelValues(p.def.name).Inc()
			p.mu.Lock()
			p.liveOK = false
			p.state, p.lastErr = StateFailed, errorInfo(err)
			p.signal()
			p.mu.Unlock()
			continue
		}
		failures++
		p.log.Warn("projection retrying", "projection", p.def.name, "err", err, "attempt", failures)
		p.m.errors.WithLabelValues(p.def.name).Inc()
		p.setState(StateRetrying, errorInfo(err))
		if !sleep(ctx, retryBackoff.Delay(failures)) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// follow reads the log from t's checkpoint and applies it in batches:
// whatever has arrived, up to the batch size, goes in one transaction, so
// catching up runs full batches and live events are applied at once.
// With done set, follow returns nil once done reports true, which it is
// asked each time nothing more is waiting.
func (p *Projection) follow(ctx context.Context, t *target, done func(next uint64) (bool, error)) error {
	var from uint64
	if err := p.db.QueryRowContext(ctx, `SELECT position FROM `+checkpoints+` WHERE name = `+p.d.ph(1), t.ck).Scan(&from); err != nil {
		return fmt.Errorf("reading checkpoint: %w", err)
	}
	fctx, cancel := context.WithCancel(ctx)
	events := make(chan eventstore.Event, 2*p.def.batch)
	errc := make(chan error, 1)
	go func() {
		o := p.def.filter
		o.From = from
		errc <- eventstore.FollowAll(fctx, p.store, o, func(e eventstore.Event) error {
			select {
			case events <- e:
				return nil
			case <-fctx.Done():
				return fctx.Err()
			}
		})
	}()
	defer func() {
		cancel()
		<-errc
		t.close()
	}()
	batch := make([]eventstore.Event, 0, p.def.batch)
	next := from
	quiet := time.NewTimer(time.Hour)
	defer quiet.Stop()
	for {
		if done != nil && len(events) == 0 {
			// Asking done costs a read of the log, so ask only once the
			// follow has had nothing more for a moment.
			quiet.Reset(quietPeriod)
			select {
			case e := <-events:
				batch = append(batch, e)
				goto fill
			case <-quiet.C:
			case <-ctx.Done():
				return ctx.Err()
			}
			ok, err := done(next)
			if err != nil || ok {
				return err
			}
		}
		select {
		case e := <-events:
			batch = append(batch, e)
		case err := <-errc:
			errc <- err // for the deferred wait
			if err == nil {
				err = errors.New("event store follow ended")
			}
			return fmt.Errorf("following the event store: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	fill:
		for len(batch) < p.def.batch {
			select {
			case e := <-events:
				batch = append(batch, e)
			default:
				break fill
			}
		}
		n, err := p.applyBatch(ctx, t, batch)
		if err != nil {
			return err
		}
		next = n
		batch = batch[:0]
	}
}

// applyBatch applies events in one transaction. When that fails it
// applies them one by one to find the failing event, so a bad event costs
// its own transaction and not its neighbours'.
func (p *Projection) applyBatch(ctx context.Context, t *target, batch []eventstore.Event) (uint64, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	start := time.Now()
	next, n, err := p.tx(ctx, t, batch, false)
	if err == nil {
		p.m.batch.WithLabelValues(p.def.name).Observe(time.Since(start).Seconds())
		p.advanced(t, next, n, 0)
		return next, nil
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	for i := range batch {
		one := batch[i : i+1]
		next, n, err = p.tx(ctx, t, one, false)
		if err == nil {
			p.advanced(t, next, n, 0)
			continue
		}
		var ee *EventError
		if !errors.As(err, &ee) {
			if transient(err) || ctx.Err() != nil {
				return 0, err
			}
			e := batch[i]
			ee = &EventError{Position: e.Position, Stream: e.Stream, Version: e.Version, Type: e.Type, Err: err}
		}
		if !p.def.skip {
			return 0, ee
		}
		// on_error: skip moves the checkpoint past the event alone.
		if next, _, err = p.tx(ctx, t, one, true); err != nil {
			return 0, err
		}
		p.log.Warn("projection skipped an event", "projection", p.def.name, "err", ee)
		p.mu.Lock()
		p.lastErr = errorInfo(ee)
		p.mu.Unlock()
		p.advanced(t, next, 0, 1)
	}
	return next, nil
}

// tx applies events at or after t's checkpoint and moves the checkpoint
// past them, in one transaction. The checkpoint is read inside it (locked
// on PostgreSQL), so an event is applied once even when two appliers
// (two nodes, or a rebuild's catch-up and the live view) overlap.
func (p *Projection) tx(ctx context.Context, t *target, events []eventstore.Event, skip bool) (next uint64, applied int, err error) {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if err = tx.QueryRowContext(ctx, `SELECT position FROM `+checkpoints+` WHERE name = `+p.d.ph(1)+p.d.forUpdate(), t.ck).Scan(&next); err != nil {
		return 0, 0, fmt.Errorf("reading checkpoint: %w", err)
	}
	rows := rowCache{}
	for _, e := range events {
		if e.Position < next {
			continue
		}
		if !skip {
			if err = p.apply(ctx, tx, t, rows, e); err != nil {
				return 0, 0, err
			}
			applied++
		}
		next = e.Position + 1
	}
	if _, err = tx.ExecContext(ctx, `UPDATE `+checkpoints+` SET position = `+p.d.ph(1)+`, applied = applied + `+p.d.ph(2)+` WHERE name = `+p.d.ph(3), int64(next), applied, t.ck); err != nil {
		return 0, 0, fmt.Errorf("writing checkpoint: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return 0, 0, err
	}
	return next, applied, nil
}

// apply runs one event's handler in tx. Mapping failures are EventErrors;
// database errors are returned as they are, for the caller to classify.
func (p *Projection) apply(ctx context.Context, tx *sql.Tx, t *target, rows rowCache, e eventstore.Event) error {
	h := p.def.handlers[e.Type]
	if h == nil {
		return nil
	}
	fail := func(err error) error {
		return &EventError{Position: e.Position, Stream: e.Stream, Version: e.Version, Type: e.Type, Err: err}
	}
	ev, err := eventVars(e)
	if err != nil {
		return fail(err)
	}
	vars := map[string]any{"event": ev}
	if h.when != nil {
		ok, err := h.when.EvalBool(vars)
		if err != nil {
			return fail(fmt.Errorf("when: %w", err))
		}
		if !ok {
			return nil
		}
	}
	args := make([]any, len(h.cols))
	for i, c := range h.cols {
		if i == 1 && h.needRow {
			row, ok := rows[args[0]]
			if !ok {
				var err error
				if row, err = p.loadRow(ctx, tx, t.table, args[0]); err != nil {
					return err
				}
				rows[args[0]] = row
			}
			vars["row"] = row
		}
		v, err := h.progs[i].Eval(vars)
		if err != nil {
			return fail(fmt.Errorf("column %s: %w", c.name, err))
		}
		if args[i], err = bind(p.d, c, v); err != nil {
			return fail(err)
		}
		if i == 0 && args[0] == nil {
			return fail(fmt.Errorf("the key column %s mapped to null", c.name))
		}
	}
	if err := t.exec(ctx, p, tx, e.Type, args); err != nil {
		return err
	}
	rows.wrote(h, args)
	return nil
}

// wrote keeps a cached row as the statement just run has left it. Rows
// not cached are not tracked: their first read comes from the table.
func (rc rowCache) wrote(h *handler, args []any) {
	row, ok := rc[args[0]]
	if !ok {
		return
	}
	switch {
	case h.op == "delete":
		rc[args[0]] = map[string]any{}
		return
	case h.op == "update" && len(row) == 0:
		return // there was no row to update
	}
	next := make(map[string]any, len(row)+len(h.cols))
	for k, v := range row {
		next[k] = v
	}
	for i, c := range h.cols {
		v, err := value(c, args[i])
		if err != nil || v == nil {
			delete(next, c.name)
			continue
		}
		next[c.name] = v
	}
	rc[args[0]] = next
}

// loadRow reads the row with key k (bound already) for mappings that use
// row; a missing row is an empty map, so row.?col.orValue(x) works.
func (p *Projection) loadRow(ctx context.Context, tx *sql.Tx, table string, k any) (map[string]any, error) {
	s := p.def.schema
	r := tx.QueryRowContext(ctx, `SELECT `+s.selectList(p.d)+` FROM `+q(table)+` WHERE `+q(s.key.name)+` = `+p.d.ph(1), k)
	row, err := s.scanRow(r)
	if errors.Is(err, sql.ErrNoRows) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, err
	}
	for k, v := range row {
		if v == nil {
			delete(row, k) // absent, so row.?col finds nothing rather than null
		}
	}
	return row, nil
}

func (p *Projection) advanced(t *target, next uint64, applied, skipped int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.rebuild {
		if p.rebuild != nil {
			p.rebuild.next = next
			p.rebuild.applied += uint64(applied)
		}
		return
	}
	p.next = next
	p.applied += uint64(applied)
	p.skipped += uint64(skipped)
	p.m.events.WithLabelValues(p.def.name, "applied").Add(float64(applied))
	if skipped > 0 {
		p.m.events.WithLabelValues(p.def.name, "skipped").Add(float64(skipped))
	}
	p.m.position.WithLabelValues(p.def.name).Set(float64(appliedUpTo(next)))
	p.signal()
}
