package aggregate

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Snapshot is the state of a stream's aggregate as of Version (the
// version of the last event folded into it), encoded as JSON.
type Snapshot struct {
	Stream  string
	Version uint64
	State   []byte
	Time    time.Time
}

// Snapshots stores the latest snapshot of each stream. A snapshot is a
// cache: losing one costs a longer replay, never correctness.
type Snapshots interface {
	// Load returns the stream's snapshot; false when it has none.
	Load(ctx context.Context, stream string) (Snapshot, bool, error)
	// Save stores s unless the stream already has a snapshot of the same
	// or a newer version, which it keeps: writers racing on a stream must
	// not move its snapshot back.
	Save(ctx context.Context, s Snapshot) error
}

var (
	_ Snapshots = (*KVSnapshots)(nil)
	_ Snapshots = (*SQLSnapshots)(nil)
)

// KVSnapshots keeps snapshots in a JetStream key-value bucket, one key
// per stream. The bucket needs History 1 only: a snapshot's past values
// are of no use.
type KVSnapshots struct {
	kv jetstream.KeyValue
}

// NewKVSnapshots stores snapshots in kv.
func NewKVSnapshots(kv jetstream.KeyValue) *KVSnapshots { return &KVSnapshots{kv: kv} }

// kvKey encodes a stream name as a key: stream names may hold ':' (not
// allowed in keys) and '.' (a key token separator), so the name is
// base64url-encoded, which is reversible and uses key-safe characters only.
func kvKey(stream string) string { return base64.RawURLEncoding.EncodeToString([]byte(stream)) }

// kvSnapshot is the stored form of a snapshot.
type kvSnapshot struct {
	Stream  string          `json:"stream"`
	Version uint64          `json:"version"`
	State   json.RawMessage `json:"state"`
	Time    time.Time       `json:"time"`
}

// Load implements Snapshots.
func (k *KVSnapshots) Load(ctx context.Context, stream string) (Snapshot, bool, error) {
	s, _, ok, err := k.get(ctx, stream)
	return s, ok, err
}

func (k *KVSnapshots) get(ctx context.Context, stream string) (Snapshot, uint64, bool, error) {
	e, err := k.kv.Get(ctx, kvKey(stream))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Snapshot{}, 0, false, nil
	}
	if err != nil {
		return Snapshot{}, 0, false, fmt.Errorf("loading snapshot of %s: %w", stream, err)
	}
	var v kvSnapshot
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return Snapshot{}, 0, false, fmt.Errorf("decoding snapshot of %s: %w", stream, err)
	}
	return Snapshot{Stream: v.Stream, Version: v.Version, State: v.State, Time: v.Time}, e.Revision(), true, nil
}

// Save implements Snapshots. It compares and swaps on the key's revision,
// so of two racing writers the newer version wins whatever their order.
func (k *KVSnapshots) Save(ctx context.Context, s Snapshot) error {
	if !json.Valid(s.State) {
		return fmt.Errorf("snapshot of %s: state is not JSON", s.Stream)
	}
	val, err := json.Marshal(kvSnapshot{Stream: s.Stream, Version: s.Version, State: s.State, Time: s.Time})
	if err != nil {
		return fmt.Errorf("encoding snapshot of %s: %w", s.Stream, err)
	}
	key := kvKey(s.Stream)
	for {
		cur, rev, ok, err := k.get(ctx, s.Stream)
		switch {
		case err != nil:
			return err
		case ok && cur.Version >= s.Version:
			return nil
		case ok:
			_, err = k.kv.Update(ctx, key, val, rev)
		default:
			_, err = k.kv.Create(ctx, key, val)
		}
		if err == nil {
			return nil
		}
		// Another writer got in between: look again.
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("saving snapshot of %s: %w", s.Stream, err)
		}
	}
}

// SQL dialects NewSQLSnapshots supports.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// ErrBadTable is returned for a table name that is not a plain SQL
// identifier (optionally schema-qualified).
var ErrBadTable = errors.New("invalid snapshot table name")

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// SQLSnapshots keeps snapshots in a SQL table, one row per stream.
type SQLSnapshots struct {
	db         *sql.DB
	load, save string
}

// NewSQLSnapshots stores snapshots in table of db, creating the table if
// it is missing. dialect is DialectSQLite or DialectPostgres (as
// internal/sqldb names them).
func NewSQLSnapshots(ctx context.Context, db *sql.DB, dialect, table string) (*SQLSnapshots, error) {
	if !tableName.MatchString(table) {
		return nil, fmt.Errorf("%w: %q", ErrBadTable, table)
	}
	// Times are unix nanoseconds and states raw bytes, so both dialects
	// store and return exactly what was saved.
	var blob, p1, p2, p3, p4 string
	switch dialect {
	case DialectSQLite:
		blob, p1, p2, p3, p4 = "BLOB", "?", "?", "?", "?"
	case DialectPostgres:
		blob, p1, p2, p3, p4 = "BYTEA", "$1", "$2", "$3", "$4"
	default:
		return nil, fmt.Errorf("snapshots: unsupported SQL dialect %q (want sqlite or postgres)", dialect)
	}
	ddl := `CREATE TABLE IF NOT EXISTS ` + table + ` (
	stream TEXT PRIMARY KEY,
	version BIGINT NOT NULL,
	state ` + blob + ` NOT NULL,
	saved_at BIGINT NOT NULL)`
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		return nil, fmt.Errorf("creating snapshot table %s: %w", table, err)
	}
	return &SQLSnapshots{
		db:   db,
		load: `SELECT version, state, saved_at FROM ` + table + ` WHERE stream = ` + p1,
		// The WHERE of the upsert keeps a newer row, atomically.
		save: `INSERT INTO ` + table + ` AS cur (stream, version, state, saved_at) VALUES (` + p1 + `, ` + p2 + `, ` + p3 + `, ` + p4 + `)
	ON CONFLICT (stream) DO UPDATE SET version = excluded.version, state = excluded.state, saved_at = excluded.saved_at
	WHERE cur.version < excluded.version`,
	}, nil
}

// Load implements Snapshots.
func (q *SQLSnapshots) Load(ctx context.Context, stream string) (Snapshot, bool, error) {
	var (
		version, at int64
		state       []byte
	)
	err := q.db.QueryRowContext(ctx, q.load, stream).Scan(&version, &state, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Snapshot{}, false, nil
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("loading snapshot of %s: %w", stream, err)
	}
	return Snapshot{Stream: stream, Version: uint64(version), State: state, Time: time.Unix(0, at)}, true, nil
}

// Save implements Snapshots.
func (q *SQLSnapshots) Save(ctx context.Context, s Snapshot) error {
	if !json.Valid(s.State) {
		return fmt.Errorf("snapshot of %s: state is not JSON", s.Stream)
	}
	if s.Version > 1<<63-1 {
		return fmt.Errorf("snapshot of %s: version %d does not fit a BIGINT", s.Stream, s.Version)
	}
	if _, err := q.db.ExecContext(ctx, q.save, s.Stream, int64(s.Version), s.State, s.Time.UnixNano()); err != nil {
		return fmt.Errorf("saving snapshot of %s: %w", s.Stream, err)
	}
	return nil
}
