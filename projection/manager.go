package projection

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/sqldb"
)

// Options are a Manager's dependencies.
type Options struct {
	Store       eventstore.Store
	Projections map[string]*config.Projection
	// DB is the node's SQL database, for projections without a database.
	DB *sqldb.DB
	// Open opens another database by DSN (a projection's database); the
	// manager closes what it opens.
	Open       func(ctx context.Context, dsn string) (*sqldb.DB, error)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Manager runs every configured projection.
type Manager struct {
	store  eventstore.Store
	log    *slog.Logger
	byName map[string]*Projection
	opened []*sqldb.DB
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ctx    context.Context
}

// New compiles the projections and prepares their databases: the
// checkpoint table, and each view's table when it does not exist yet.
// Start runs them.
func New(ctx context.Context, o Options) (*Manager, error) {
	m := &Manager{store: o.Store, log: o.Logger, byName: map[string]*Projection{}}
	if m.log == nil {
		m.log = slog.Default()
	}
	met := newMetrics(o.Registerer, m)
	dbs := map[string]*sqldb.DB{"": o.DB}
	for _, name := range slices.Sorted(maps.Keys(o.Projections)) {
		pc := o.Projections[name]
		pc.Normalize(name)
		def, err := compile(name, pc)
		if err != nil {
			m.Close()
			return nil, err
		}
		db, ok := dbs[pc.Database]
		if !ok {
			if db, err = o.Open(ctx, pc.Database); err != nil {
				m.Close()
				return nil, fmt.Errorf("projection %s: %w", name, err)
			}
			dbs[pc.Database] = db
			m.opened = append(m.opened, db)
		}
		p := &Projection{def: def, db: db.DB, d: dialect(db.Dialect), store: o.Store, log: m.log, m: met,
			state: StateStarting, changed: make(chan struct{}), wakeLive: make(chan struct{})}
		if err := p.prepare(ctx); err != nil {
			m.Close()
			return nil, fmt.Errorf("projection %s: %w", name, err)
		}
		m.byName[name] = p
	}
	return m, nil
}

// Start runs every projection (and any rebuild a changed definition or
// an interrupted rebuild needs) until Stop.
func (m *Manager) Start(ctx context.Context) {
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, p := range m.list() {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			p.runLive(m.ctx)
		}()
		p.mu.Lock()
		rb := p.rebuild != nil
		p.mu.Unlock()
		if rb {
			m.runRebuild(p, false)
		}
	}
}

// Stop ends every projection and waits for them; a batch in flight is
// rolled back and applied again at the next start.
func (m *Manager) Stop() {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
}

// Close stops the projections and closes the databases the manager opened.
func (m *Manager) Close() {
	m.Stop()
	for _, db := range m.opened {
		db.Close()
	}
}

// Get returns the projection (and view) called name.
func (m *Manager) Get(name string) (*Projection, error) {
	p, ok := m.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return p, nil
}

func (m *Manager) list() []*Projection {
	out := make([]*Projection, 0, len(m.byName))
	for _, p := range m.byName {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].def.name < out[j].def.name })
	return out
}

// Rebuild starts rebuilding a projection's view from the start of the log
// into a shadow table that replaces the view when it has caught up; the
// view keeps answering meanwhile. It reports false when a rebuild is
// running already.
func (m *Manager) Rebuild(ctx context.Context, name string) (bool, error) {
	p, err := m.Get(name)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	running := p.rebuild != nil && p.rebuild.err == nil
	if !running {
		p.rebuild = &rebuildState{started: time.Now().UTC()}
		p.signal()
	}
	p.mu.Unlock()
	if running {
		return false, nil
	}
	m.runRebuild(p, true)
	return true, nil
}

func (m *Manager) runRebuild(p *Projection, fresh bool) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := p.runRebuild(m.ctx, fresh); err != nil && m.ctx.Err() == nil {
			p.log.Error("projection rebuild failed", "projection", p.def.name, "err", err)
			p.mu.Lock()
			p.rebuild.err = errorInfo(err)
			p.signal()
			p.mu.Unlock()
		}
	}()
}

// prepare creates the checkpoint table and the view, and decides whether
// the view must be rebuilt: its definition changed, or a rebuild was
// interrupted.
func (p *Projection) prepare(ctx context.Context) error {
	big := "BIGINT"
	if p.d == sqlite {
		big = "INTEGER"
	}
	if _, err := p.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+checkpoints+` (name TEXT PRIMARY KEY, position `+big+` NOT NULL, applied `+big+` NOT NULL, fingerprint TEXT NOT NULL, tbl TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("creating %s: %w", checkpoints, err)
	}
	live, err := p.readCk(ctx, p.def.name)
	if err != nil {
		return err
	}
	exists, err := tableExists(ctx, p.db, p.d, p.def.table)
	if err != nil {
		return err
	}
	switch {
	case exists && (live == nil || live.tbl != p.def.table):
		return fmt.Errorf("table %s exists and is not a view of this projection: drop it or choose another table.name", p.def.table)
	case live == nil || !exists:
		// New, or its table was dropped or renamed in config: start the
		// view from zero. (A table left behind by a rename is not ours to
		// drop without being asked.)
		if err := p.createView(ctx); err != nil {
			return err
		}
		p.liveOK = true
	case live.fingerprint == p.def.fingerprint:
		p.liveOK, p.next, p.applied = true, live.position, live.applied
	default:
		p.log.Info("projection definition changed: rebuilding its view; the old one answers until then", "projection", p.def.name)
		p.state, p.next, p.applied = StateRebuilding, live.position, live.applied
	}
	rb, err := p.readCk(ctx, p.def.name+":rebuild")
	if err != nil {
		return err
	}
	if !p.liveOK || rb != nil {
		p.rebuild = &rebuildState{started: time.Now().UTC()}
		if rb != nil && rb.fingerprint == p.def.fingerprint {
			p.rebuild.next, p.rebuild.applied = rb.position, rb.applied
		} else if err := p.createShadow(ctx); err != nil {
			return err
		}
	}
	return nil
}

type ckRow struct {
	position, applied uint64
	fingerprint, tbl  string
}

func (p *Projection) readCk(ctx context.Context, name string) (*ckRow, error) {
	var r ckRow
	err := p.db.QueryRowContext(ctx, `SELECT position, applied, fingerprint, tbl FROM `+checkpoints+` WHERE name = `+p.d.ph(1), name).
		Scan(&r.position, &r.applied, &r.fingerprint, &r.tbl)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading checkpoint %s: %w", name, err)
	}
	return &r, nil
}

// createTable (re)creates table with the definition's columns and
// indexes and sets checkpoint ck to zero, in one transaction.
func (p *Projection) createTable(ctx context.Context, table, ck string) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmts := []string{`DROP TABLE IF EXISTS ` + q(table), p.def.schema.createTable(p.d, table)}
	for _, c := range p.def.indexes {
		// Index names are unique per schema and survive the rename of a
		// swap, so each gets a random suffix rather than the table's name.
		var b [6]byte
		rand.Read(b[:])
		stmts = append(stmts, fmt.Sprintf(`CREATE INDEX %s ON %s (%s)`, q("jx_"+c+"_"+hex.EncodeToString(b[:])), q(table), q(c)))
	}
	stmts = append(stmts, `DELETE FROM `+checkpoints+` WHERE name = `+p.d.ph(1))
	for _, s := range stmts[:len(stmts)-1] {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("creating table %s: %w", table, err)
		}
	}
	if _, err := tx.ExecContext(ctx, stmts[len(stmts)-1], ck); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+checkpoints+` (name, position, applied, fingerprint, tbl) VALUES (`+p.d.ph(1)+`, 0, 0, `+p.d.ph(2)+`, `+p.d.ph(3)+`)`,
		ck, p.def.fingerprint, table); err != nil {
		return err
	}
	return tx.Commit()
}

func (p *Projection) createView(ctx context.Context) error {
	return p.createTable(ctx, p.def.table, p.def.name)
}

func (p *Projection) createShadow(ctx context.Context) error {
	return p.createTable(ctx, p.def.shadow(), p.def.name+":rebuild")
}

// runRebuild fills the shadow table from its checkpoint until it has
// caught up with the log, then swaps it in.
func (p *Projection) runRebuild(ctx context.Context, fresh bool) error {
	if fresh {
		p.wmu.Lock()
		err := p.createShadow(ctx)
		p.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	t := p.target(p.def.shadow(), p.def.name+":rebuild", true)
	caughtUp := func(next uint64) (bool, error) {
		o := p.def.filter
		o.From, o.Limit = next, 1
		es, err := p.store.ReadAll(ctx, o)
		return len(es) == 0, err
	}
	for failures := 0; ; {
		err := p.follow(ctx, t, caughtUp)
		if err == nil {
			break
		}
		var ee *EventError
		if ctx.Err() != nil || errors.As(err, &ee) {
			return err
		}
		failures++
		p.log.Warn("projection rebuild retrying", "projection", p.def.name, "err", err, "attempt", failures)
		if !sleep(ctx, retryBackoff.Delay(failures)) {
			return ctx.Err()
		}
	}
	return p.swap(ctx, t)
}

// swap replaces the view with the rebuilt shadow in one transaction,
// after applying to the shadow whatever the live view applied since the
// rebuild last looked.
func (p *Projection) swap(ctx context.Context, t *target) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	defer t.close()
	rows := rowCache{}
	pos := func(name string) (uint64, uint64, error) {
		var n, a uint64
		err := tx.QueryRowContext(ctx, `SELECT position, applied FROM `+checkpoints+` WHERE name = `+p.d.ph(1)+p.d.forUpdate(), name).Scan(&n, &a)
		return n, a, err
	}
	live, _, err := pos(p.def.name)
	if err != nil {
		return fmt.Errorf("reading checkpoint: %w", err)
	}
	next, applied, err := pos(t.ck)
	if err != nil {
		return fmt.Errorf("reading checkpoint: %w", err)
	}
	for next < live {
		o := p.def.filter
		o.From, o.Limit = next, 500
		es, err := p.store.ReadAll(ctx, o)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			if e.Position >= live {
				break
			}
			if err := p.apply(ctx, tx, t, rows, e); err != nil {
				return err
			}
			applied++
			next = e.Position + 1
		}
	}
	next = max(next, live)
	for _, s := range []string{`DROP TABLE IF EXISTS ` + q(p.def.table), `ALTER TABLE ` + q(t.table) + ` RENAME TO ` + q(p.def.table)} {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("swapping in the rebuilt view: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+checkpoints+` SET position = `+p.d.ph(1)+`, applied = `+p.d.ph(2)+`, fingerprint = `+p.d.ph(3)+`, tbl = `+p.d.ph(4)+` WHERE name = `+p.d.ph(5),
		int64(next), int64(applied), p.def.fingerprint, p.def.table, p.def.name); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+checkpoints+` WHERE name = `+p.d.ph(1), t.ck); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	p.log.Info("projection rebuilt", "projection", p.def.name, "events", applied)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next, p.applied, p.rebuild, p.liveOK = next, applied, nil, true
	p.m.position.WithLabelValues(p.def.name).Set(float64(appliedUpTo(next)))
	close(p.wakeLive)
	p.wakeLive = make(chan struct{})
	p.signal()
	return nil
}

// lag is the age of the oldest selected event the view has not applied,
// and the position it has applied up to.
func (p *Projection) lag(ctx context.Context) (time.Duration, uint64, error) {
	p.mu.Lock()
	next := p.next
	p.mu.Unlock()
	o := p.def.filter
	o.From, o.Limit = next, 1
	es, err := p.store.ReadAll(ctx, o)
	if err != nil || len(es) == 0 {
		return 0, next, err
	}
	return max(time.Since(es[0].Time), 0), next, nil
}

// Status is what GET /v1/projections shows of a projection.
type Status struct {
	Name     string `json:"name"`
	Table    string `json:"table"`
	Database string `json:"database"`
	State    string `json:"state"`
	// Position is the global position up to which every selected event
	// has been applied: a read with min_position at or below it waits for
	// nothing.
	Position   uint64         `json:"position"`
	Applied    uint64         `json:"applied_events"`
	Skipped    uint64         `json:"skipped_events"`
	LagSeconds float64        `json:"lag_seconds"`
	LastError  *ErrorInfo     `json:"last_error,omitempty"`
	Rebuild    *RebuildStatus `json:"rebuild,omitempty"`
}

// RebuildStatus is the progress of a running (or failed) rebuild.
type RebuildStatus struct {
	Position uint64     `json:"position"`
	Applied  uint64     `json:"applied_events"`
	Started  time.Time  `json:"started"`
	Error    *ErrorInfo `json:"error,omitempty"`
}

// Status reports the projection's state, position and lag.
func (p *Projection) Status(ctx context.Context) Status {
	lag, _, lerr := p.lag(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Name: p.def.name, Table: p.def.table, Database: string(p.d), State: p.state, Position: appliedUpTo(p.next),
		Applied: p.applied, Skipped: p.skipped, LagSeconds: lag.Seconds(), LastError: p.lastErr}
	if lerr != nil && s.LastError == nil {
		s.LastError = errorInfo(lerr)
	}
	if r := p.rebuild; r != nil {
		s.Rebuild = &RebuildStatus{Position: appliedUpTo(r.next), Applied: r.applied, Started: r.started, Error: r.err}
	}
	return s
}

// Statuses reports every projection, by name.
func (m *Manager) Statuses(ctx context.Context) []Status {
	ps := m.list()
	out := make([]Status, len(ps))
	for i, p := range ps {
		out[i] = p.Status(ctx)
	}
	return out
}

// WaitFor blocks until the view reflects every selected event at or
// before position pos (read-your-writes), ctx ends, or the projection has
// failed (ErrFailed). Positions of events the projection does not select
// are reached as soon as the events before them are applied.
func (p *Projection) WaitFor(ctx context.Context, pos uint64) error {
	// Reading the log to see whether any selected event up to pos is
	// still pending costs more than waiting for the applier, so it is
	// done first and then only every probeEvery, not at every batch.
	probe := time.Now()
	for first := true; ; first = false {
		p.mu.Lock()
		next, ch, state, lastErr := p.next, p.changed, p.state, p.lastErr
		p.mu.Unlock()
		if next > pos {
			return nil
		}
		if state == StateFailed {
			return fmt.Errorf("%w: %s", ErrFailed, lastErr.Message)
		}
		if first || time.Since(probe) >= probeEvery {
			probe = time.Now()
			o := p.def.filter
			o.From, o.Limit = next, 1
			es, err := p.store.ReadAll(ctx, o)
			if err != nil {
				return err
			}
			if len(es) == 0 || es[0].Position > pos {
				return nil
			}
		}
		t := time.NewTimer(probeEvery)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// probeEvery bounds how often a read-your-writes wait reads the log.
const probeEvery = 200 * time.Millisecond

// appliedUpTo turns a checkpoint (the next position to apply) into the
// position applied up to.
func appliedUpTo(next uint64) uint64 {
	if next == 0 {
		return 0
	}
	return next - 1
}
