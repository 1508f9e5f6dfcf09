// Package postgres is the PostgreSQL event store backend.
//
// Appends take one transaction-level advisory lock per store, so they commit
// one at a time and positions, assigned inside the lock, increase in commit
// order: a reader of ReadAll that has seen position P can never later find a
// newly committed event below P. The cost is one writer at a time per store.
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
	// committed is notified after each append or delete this process
	// commits, so followers here see it without waiting to poll again.
	committed eventstore.Signal
}

var (
	_ eventstore.Store          = (*Store)(nil)
	_ eventstore.Follower       = (*Store)(nil)
	_ eventstore.StreamFollower = (*Store)(nil)
)

// Open creates the store's tables in schema (if missing) and returns the
// store. The caller owns db; Close does not close it.
func Open(ctx context.Context, db *sql.DB, schema string) (*Store, error) {
	if schema == "" {
		schema = "public"
	}
	h := fnv.New64a()
	h.Write([]byte("junction.eventstore:" + schema))
	s := &Store{db: db, schema: quoteIdent(schema), lockKey: int64(h.Sum64())}
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

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData) (eventstore.AppendResult, error) {
	events, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	}

	// Idempotency first: a retried append succeeds even though the
	// expected version no longer holds.
	if res, done, err := s.idempotent(ctx, tx, stream, events); err != nil || done {
		return res, err
	}

	current := int64(-1)
	var last, deletedFrom int64
	var deleted, exists bool
	err = tx.QueryRowContext(ctx, `SELECT last_version, deleted, deleted_from FROM `+s.t("streams")+` WHERE stream = $1`, stream).
		Scan(&last, &deleted, &deletedFrom)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		last = -1
	case err != nil:
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	default:
		exists = true
		if !deleted {
			current = last
		}
	}
	if err := eventstore.Check(stream, expected, current); err != nil {
		return eventstore.AppendResult{}, err
	}

	var pos int64
	var now time.Time
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(position), 0), clock_timestamp() FROM `+s.t("events")).Scan(&pos, &now); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	}
	first := last + 1
	cat := eventstore.Category(stream)
	const chunk = 500 // well under PostgreSQL's 65535 parameters
	for start := 0; start < len(events); start += chunk {
		end := min(start+chunk, len(events))
		var b strings.Builder
		b.WriteString(`INSERT INTO ` + s.t("events") + ` (position, stream, category, version, id, type, data, metadata, time) VALUES `)
		args := make([]any, 0, 9*(end-start))
		for i := start; i < end; i++ {
			if i > start {
				b.WriteByte(',')
			}
			n := len(args)
			fmt.Fprintf(&b, "($%d,$%d,$%d,$%d,$%d,$%d,$%d::json,$%d::json,$%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
			e := events[i]
			var md any
			if e.Metadata != nil {
				md = string(e.Metadata)
			}
			args = append(args, pos+1+int64(i), stream, cat, first+int64(i), e.ID, e.Type, string(e.Data), md, now)
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
		}
	}
	newLast := first + int64(len(events)) - 1
	if exists {
		_, err = tx.ExecContext(ctx, `UPDATE `+s.t("streams")+` SET last_version = $2, deleted = false WHERE stream = $1`, stream, newLast)
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO `+s.t("streams")+` (stream, last_version) VALUES ($1, $2)`, stream, newLast)
	}
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("eventstore: append: %w", err)
	}
	s.committed.Notify()
	return eventstore.AppendResult{
		FirstVersion: uint64(first),
		LastVersion:  uint64(newLast),
		Position:     uint64(pos) + uint64(len(events)),
	}, nil
}

// idempotent reports whether events were already appended to stream, in
// this order, and if so the original result. IDs seen elsewhere, or only
// some of them, are an error.
func (s *Store) idempotent(ctx context.Context, tx *sql.Tx, stream string, events []eventstore.EventData) (eventstore.AppendResult, bool, error) {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, stream, version, position FROM `+s.t("events")+` WHERE id = ANY($1)`, ids)
	if err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("eventstore: append: %w", err)
	}
	defer rows.Close()
	type hit struct {
		stream   string
		version  int64
		position int64
	}
	found := map[string]hit{}
	for rows.Next() {
		var id string
		var h hit
		if err := rows.Scan(&id, &h.stream, &h.version, &h.position); err != nil {
			return eventstore.AppendResult{}, false, fmt.Errorf("eventstore: append: %w", err)
		}
		found[id] = h
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, false, fmt.Errorf("eventstore: append: %w", err)
	}
	if len(found) == 0 {
		return eventstore.AppendResult{}, false, nil
	}
	reused := fmt.Errorf("%w: event id reused", eventstore.ErrInvalid)
	if len(found) != len(events) {
		return eventstore.AppendResult{}, false, reused
	}
	first := found[ids[0]]
	for i, id := range ids {
		h := found[id]
		if h.stream != stream || h.version != first.version+int64(i) {
			return eventstore.AppendResult{}, false, reused
		}
	}
	lastHit := found[ids[len(ids)-1]]
	return eventstore.AppendResult{
		FirstVersion: uint64(first.version),
		LastVersion:  uint64(lastHit.version),
		Position:     uint64(lastHit.position),
	}, true, nil
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
	var deletedFrom int64
	err = tx.QueryRowContext(ctx, `SELECT deleted, deleted_from FROM `+s.t("streams")+` WHERE stream = $1`, stream).Scan(&deleted, &deletedFrom)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("stream %q: %w", stream, eventstore.ErrStreamNotFound)
	case err != nil:
		return nil, fmt.Errorf("eventstore: read: %w", err)
	case deleted:
		return nil, fmt.Errorf("stream %q: %w", stream, eventstore.ErrStreamDeleted)
	}
	q := `SELECT ` + eventCols + ` FROM ` + s.t("events") + ` WHERE stream = $1 AND version >= $2 AND version `
	if o.Backward {
		q += `<= $3 ORDER BY version DESC`
	} else {
		q += `>= $3 ORDER BY version ASC`
	}
	rows, err := tx.QueryContext(ctx, q+limitClause(o.Limit), stream, deletedFrom, clamp(o.From))
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
