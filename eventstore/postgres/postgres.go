// Package postgres is the PostgreSQL event store backend.
//
// An append is one call of a SQL function the store creates in its schema,
// so one round trip. It takes one transaction-level advisory lock per
// store, so appends commit one at a time and positions, assigned inside
// the lock, increase in commit order: a reader of ReadAll that has seen
// position P can never later find a newly committed event below P. The
// cost is one writer at a time per store.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	"github.com/junctionhq/junction/eventstore"
)

// Store is an event store in one PostgreSQL schema.
type Store struct {
	db      *sql.DB
	schema  string
	lockKey int64
	now     func() time.Time // retention's MaxAge is measured against it
	// committed is notified after each append or delete this process
	// commits, so followers here see it without waiting to poll again.
	committed eventstore.Signal
}

var (
	_ eventstore.Store          = (*Store)(nil)
	_ eventstore.Follower       = (*Store)(nil)
	_ eventstore.StreamFollower = (*Store)(nil)
)

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that retention's MaxAge is measured against
// (time.Now by default), so tests can move time instead of waiting.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open creates the store's tables in schema (if missing) and returns the
// store. The caller owns db; Close does not close it.
func Open(ctx context.Context, db *sql.DB, schema string, opts ...Option) (*Store, error) {
	if schema == "" {
		schema = "public"
	}
	h := fnv.New64a()
	h.Write([]byte("junction.eventstore:" + schema))
	s := &Store{db: db, schema: quoteIdent(schema), lockKey: int64(h.Sum64()), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	ddl := []string{
		`CREATE SCHEMA IF NOT EXISTS ` + s.schema,
		`CREATE TABLE IF NOT EXISTS ` + s.t("streams") + ` (
			stream text PRIMARY KEY,
			last_version bigint NOT NULL,
			deleted boolean NOT NULL DEFAULT false,
			deleted_from bigint NOT NULL DEFAULT 0
		)`,
		`CREATE TABLE IF NOT EXISTS ` + s.t("events") + ` (
			position bigint PRIMARY KEY,
			stream text NOT NULL,
			category text NOT NULL,
			version bigint NOT NULL,
			id text NOT NULL UNIQUE,
			type text NOT NULL,
			data json NOT NULL,
			metadata json,
			time timestamptz NOT NULL,
			UNIQUE (stream, version)
		)`,
		`CREATE INDEX IF NOT EXISTS events_category_position ON ` + s.t("events") + ` (category, position)`,
		`CREATE INDEX IF NOT EXISTS events_type_position ON ` + s.t("events") + ` (type, position)`,
		// Stream metadata, kept apart from streams so that it can be set
		// before a stream's first append. max_age_ns is in nanoseconds so
		// that a Go duration reads back exactly.
		`CREATE TABLE IF NOT EXISTS ` + s.t("retention") + ` (
			stream text PRIMARY KEY,
			max_age_ns bigint NOT NULL,
			max_count bigint NOT NULL
		)`,
		// The last position given out. A store created before this table
		// never deleted an event, so its largest position is the last.
		`CREATE TABLE IF NOT EXISTS ` + s.t("log_head") + ` (last_position bigint NOT NULL)`,
		`INSERT INTO ` + s.t("log_head") + ` SELECT coalesce((SELECT max(position) FROM ` + s.t("events") + `), 0)
			WHERE NOT EXISTS (SELECT FROM ` + s.t("log_head") + `)`,
		s.scavengeFunc(),
		s.appendFunc(),
	}
	// Concurrent first opens of one schema can race on CREATE ... IF NOT
	// EXISTS; the same lock as appends makes them take turns.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("eventstore: creating schema: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey); err != nil {
		return nil, fmt.Errorf("eventstore: creating schema: %w", err)
	}
	for _, q := range ddl {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("eventstore: creating schema: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("eventstore: creating schema: %w", err)
	}
	return s, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (s *Store) t(name string) string { return s.schema + "." + name }

// Close is a no-op: the database handle belongs to the caller.
func (s *Store) Close() error { return nil }

// Append implements eventstore.Store. It is one call of the schema's
// append function (see appendFunc), so one round trip to the server.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData) (eventstore.AppendResult, error) {
	events, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	ids, types, data := make([]string, len(events)), make([]string, len(events)), make([]string, len(events))
	md := make([]*string, len(events))
	for i, e := range events {
		ids[i], types[i], data[i] = e.ID, e.Type, string(e.Data)
		if e.Metadata != nil {
			m := string(e.Metadata)
			md[i] = &m
		}
	}
	var code int
	var first, last, pos int64
	err = s.db.QueryRowContext(ctx, `SELECT * FROM `+s.t("append")+`($1, $2, $3, $4, $5, $6, $7, $8)`,
		stream, eventstore.Category(stream), int64(expected), ids, types, data, md, s.now()).Scan(&code, &first, &last, &pos)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	}
	switch code {
	case appendDone:
		s.committed.Notify()
	case appendRetried:
	case appendWrongVersion:
		return eventstore.AppendResult{}, &eventstore.VersionError{Stream: stream, Expected: expected, Current: first}
	case appendIDReused:
		return eventstore.AppendResult{}, fmt.Errorf("%w: event id reused", eventstore.ErrInvalid)
	default:
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: unknown outcome %d", code)
	}
	return eventstore.AppendResult{FirstVersion: uint64(first), LastVersion: uint64(last), Position: uint64(pos)}, nil
}

// Outcomes of the append function.
const (
	appendDone         = 0 // written: first and last version, position of the last event
	appendRetried      = 1 // a retry of an append already written: its result
	appendWrongVersion = 2 // the expected version does not hold: first is the current version
	appendIDReused     = 3 // some event ids are used, but not by this append
)

// appendFunc is the SQL function behind Append: in one statement, so one
// round trip, it takes the store's advisory lock, answers a retry with the
// original result (idempotency comes before the version check, so a
// retried append succeeds even though the expected version no longer
// holds), checks the expected version as eventstore.Check does, assigns
// positions from log_head, inserts the events, moves the stream on and
// scavenges it when it has a retention.
//
// log_head, not max(position), is where positions come from, because a
// scavenge can delete the newest events of the log and positions must
// never be reused.
func (s *Store) appendFunc() string {
	// force_custom_plan: PL/pgSQL caches its statements' plans, and a
	// generic plan made while the events table was small scans the whole
	// table for the id lookup forever after; a custom plan per call sees
	// the table as it is and uses the indexes.
	return `CREATE OR REPLACE FUNCTION ` + s.t("append") + `(p_stream text, p_category text, p_expected bigint,
	p_ids text[], p_types text[], p_data text[], p_metadata text[], p_now timestamptz)
RETURNS TABLE (o_code int, o_first bigint, o_last bigint, o_position bigint)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
	n bigint := cardinality(p_ids);
	hits bigint;
	same boolean;
	h_first bigint;
	h_last bigint;
	h_pos bigint;
	s_last bigint;
	s_deleted boolean;
	cur bigint := -1;
	pos bigint;
	ts timestamptz;
BEGIN
	PERFORM pg_advisory_xact_lock(` + fmt.Sprint(s.lockKey) + `);
	SELECT count(*), bool_and(e.stream = p_stream) AND min(e.version - u.o) = max(e.version - u.o),
		min(e.version), max(e.version), max(e.position)
	INTO hits, same, h_first, h_last, h_pos
	FROM unnest(p_ids) WITH ORDINALITY AS u(id, o) JOIN ` + s.t("events") + ` e ON e.id = u.id;
	IF hits > 0 THEN
		IF hits = n AND same THEN
			RETURN QUERY SELECT ` + fmt.Sprint(appendRetried) + `, h_first, h_last, h_pos;
		ELSE
			RETURN QUERY SELECT ` + fmt.Sprint(appendIDReused) + `, 0::bigint, 0::bigint, 0::bigint;
		END IF;
		RETURN;
	END IF;
	SELECT last_version, deleted INTO s_last, s_deleted FROM ` + s.t("streams") + ` WHERE stream = p_stream;
	IF NOT FOUND THEN
		s_last := -1;
	ELSIF NOT s_deleted THEN
		cur := s_last;
	END IF;
	IF NOT (p_expected = -1 OR p_expected = -2 AND cur < 0 OR p_expected = -3 AND cur >= 0 OR p_expected >= 0 AND p_expected = cur) THEN
		RETURN QUERY SELECT ` + fmt.Sprint(appendWrongVersion) + `, cur, cur, 0::bigint;
		RETURN;
	END IF;
	UPDATE ` + s.t("log_head") + ` SET last_position = last_position + n RETURNING last_position - n INTO pos;
	ts := clock_timestamp();
	INSERT INTO ` + s.t("events") + ` (position, stream, category, version, id, type, data, metadata, time)
	SELECT pos + u.o, p_stream, p_category, s_last + u.o, u.id, u.type, u.data::json, u.metadata::json, ts
	FROM unnest(p_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS u(id, type, data, metadata, o);
	INSERT INTO ` + s.t("streams") + ` (stream, last_version) VALUES (p_stream, s_last + n)
	ON CONFLICT (stream) DO UPDATE SET last_version = excluded.last_version, deleted = false;
	PERFORM ` + s.t("scavenge") + `(p_stream, p_now, ` + fmt.Sprint(scavengeBudget) + `);
	RETURN QUERY SELECT ` + fmt.Sprint(appendDone) + `, s_last + 1, s_last + n, pos + n;
END
$fn$`
}

// scavengeFunc is the SQL function that deletes up to p_budget (NULL: no
// bound) of a stream's oldest events outside its retention, and returns
// how many it deleted. It walks the stream in version order and stops at
// the first event kept, so an event whose time is out of order is never
// deleted early (reads filter each event anyway). The age cutoff is
// rounded down to the microsecond, never later than the one reads use.
func (s *Store) scavengeFunc() string {
	return `CREATE OR REPLACE FUNCTION ` + s.t("scavenge") + `(p_stream text, p_now timestamptz, p_budget int)
RETURNS bigint
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
	r_age bigint;
	r_count bigint;
	s_last bigint;
	keep bigint := 0;
	n bigint;
BEGIN
	SELECT r.max_age_ns, r.max_count, s.last_version INTO r_age, r_count, s_last
	FROM ` + s.t("retention") + ` r JOIN ` + s.t("streams") + ` s ON s.stream = r.stream WHERE r.stream = p_stream;
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	IF r_count > 0 AND s_last + 1 > r_count THEN
		keep := s_last + 1 - r_count;
	END IF;
	IF r_age > 0 THEN
		keep := coalesce((SELECT version FROM ` + s.t("events") + ` WHERE stream = p_stream AND version >= keep
			AND time >= date_trunc('microseconds', p_now) - ((r_age + 999) / 1000) * interval '1 microsecond'
			ORDER BY version LIMIT 1), s_last + 1);
	END IF;
	DELETE FROM ` + s.t("events") + ` WHERE position IN (
		SELECT position FROM ` + s.t("events") + ` WHERE stream = p_stream AND version < keep ORDER BY version LIMIT p_budget);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$fn$`
}

const eventCols = `stream, version, position, id, type, data::text, metadata::text, time`

func scanEvents(rows *sql.Rows) ([]eventstore.Event, error) {
	defer rows.Close()
	out := []eventstore.Event{}
	for rows.Next() {
		var e eventstore.Event
		var version, position int64
		var data string
		var md sql.NullString
		if err := rows.Scan(&e.Stream, &version, &position, &e.ID, &e.Type, &data, &md, &e.Time); err != nil {
			return nil, err
		}
		e.Version, e.Position = uint64(version), uint64(position)
		e.Data = []byte(data)
		if md.Valid {
			e.Metadata = []byte(md.String)
		}
		e.Time = e.Time.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

func clamp(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func limitClause(limit int) string {
	if limit <= 0 {
		return ""
	}
	return fmt.Sprintf(" LIMIT %d", limit)
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, o eventstore.ReadOptions) ([]eventstore.Event, error) {
	if !eventstore.ValidStreamName(stream) {
		return nil, fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	// One transaction so the stream's state and its events agree.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("eventstore: read: %w", err)
	}
	defer tx.Rollback()
	var deleted bool
	var deletedFrom, last int64
	var maxAge, maxCount sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT s.deleted, s.deleted_from, s.last_version, r.max_age_ns, r.max_count FROM `+s.t("streams")+
		` s LEFT JOIN `+s.t("retention")+` r ON r.stream = s.stream WHERE s.stream = $1`, stream).
		Scan(&deleted, &deletedFrom, &last, &maxAge, &maxCount)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("stream %q: %w", stream, eventstore.ErrStreamNotFound)
	case err != nil:
		return nil, fmt.Errorf("eventstore: read: %w", err)
	case deleted:
		return nil, fmt.Errorf("stream %q: %w", stream, eventstore.ErrStreamDeleted)
	}
	r := eventstore.Retention{MaxAge: time.Duration(maxAge.Int64), MaxCount: uint64(maxCount.Int64)}
	from := max(deletedFrom, int64(r.MinVersion(last)))
	q := `SELECT ` + eventCols + ` FROM ` + s.t("events") + ` WHERE stream = $1 AND version >= $2 AND time >= $4 AND version `
	if o.Backward {
		q += `<= $3 ORDER BY version DESC`
	} else {
		q += `>= $3 ORDER BY version ASC`
	}
	rows, err := tx.QueryContext(ctx, q+limitClause(o.Limit), stream, from, clamp(o.From), r.Cutoff(s.now()))
	if err != nil {
		return nil, fmt.Errorf("eventstore: read: %w", err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read: %w", err)
	}
	return evs, nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, o eventstore.ReadAllOptions) ([]eventstore.Event, error) {
	q := `SELECT ` + eventCols + ` FROM ` + s.t("events") + ` WHERE position >= $1`
	args := []any{clamp(o.From)}
	if len(o.Categories) > 0 {
		args = append(args, o.Categories)
		q += fmt.Sprintf(` AND category = ANY($%d)`, len(args))
	}
	if len(o.Types) > 0 {
		args = append(args, o.Types)
		q += fmt.Sprintf(` AND type = ANY($%d)`, len(args))
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY position`+limitClause(o.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read all: %w", err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read all: %w", err)
	}
	return evs, nil
}

// Delete implements eventstore.Store. Deleting a deleted stream is a no-op.
func (s *Store) Delete(ctx context.Context, stream string) error {
	if !eventstore.ValidStreamName(stream) {
		return fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("eventstore: delete: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey); err != nil {
		return fmt.Errorf("eventstore: delete: %w", err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE `+s.t("streams")+` SET deleted_from = CASE WHEN deleted THEN deleted_from ELSE last_version + 1 END, deleted = true WHERE stream = $1`, stream)
	if err != nil {
		return fmt.Errorf("eventstore: delete: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("stream %q: %w", stream, eventstore.ErrStreamNotFound)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("eventstore: delete: %w", err)
	}
	s.committed.Notify()
	return nil
}

// FollowAll implements eventstore.Follower by polling ReadAll every
// eventstore.PollInterval, at once after a commit by this process. Commits
// by other processes are seen within the poll interval.
func (s *Store) FollowAll(ctx context.Context, o eventstore.ReadAllOptions, fn func(eventstore.Event) error) error {
	return eventstore.PollAll(ctx, s, o, fn, s.committed.Wait)
}

// FollowStream implements eventstore.StreamFollower, polling like
// FollowAll.
func (s *Store) FollowStream(ctx context.Context, stream string, from uint64, fn func(eventstore.Event) error) error {
	return eventstore.PollStream(ctx, s, stream, from, fn, s.committed.Wait)
}

// scavengeBudget bounds the events one append's scavenge deletes, so an
// append stays cheap even when a large retention change is pending.
const scavengeBudget = 1000

// SetRetention implements eventstore.Store.
func (s *Store) SetRetention(ctx context.Context, stream string, r eventstore.Retention) error {
	if !eventstore.ValidStreamName(stream) {
		return fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	if err := r.Validate(); err != nil {
		return err
	}
	var err error
	if r.IsZero() {
		_, err = s.db.ExecContext(ctx, `DELETE FROM `+s.t("retention")+` WHERE stream = $1`, stream)
	} else {
		_, err = s.db.ExecContext(ctx, `INSERT INTO `+s.t("retention")+` (stream, max_age_ns, max_count) VALUES ($1, $2, $3)
			ON CONFLICT (stream) DO UPDATE SET max_age_ns = excluded.max_age_ns, max_count = excluded.max_count`,
			stream, int64(r.MaxAge), clamp(r.MaxCount))
	}
	if err != nil {
		return fmt.Errorf("eventstore: set retention: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `SELECT `+s.t("scavenge")+`($1, $2, NULL)`, stream, s.now()); err != nil {
		return fmt.Errorf("eventstore: set retention: scavenging: %w", err)
	}
	return nil
}

// GetRetention implements eventstore.Store.
func (s *Store) GetRetention(ctx context.Context, stream string) (eventstore.Retention, error) {
	if !eventstore.ValidStreamName(stream) {
		return eventstore.Retention{}, fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	var maxAge, maxCount int64
	err := s.db.QueryRowContext(ctx, `SELECT max_age_ns, max_count FROM `+s.t("retention")+` WHERE stream = $1`, stream).Scan(&maxAge, &maxCount)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Retention{}, nil
	}
	if err != nil {
		return eventstore.Retention{}, fmt.Errorf("eventstore: get retention: %w", err)
	}
	return eventstore.Retention{MaxAge: time.Duration(maxAge), MaxCount: uint64(maxCount)}, nil
}
