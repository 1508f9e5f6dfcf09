// Package esbench measures Junction's event store backends (JetStream on
// an embedded nats-server, and PostgreSQL) against raw calls to the same
// substrate made in the same run: appends of one event and of batches,
// reading one stream, and replaying the global log. The benchmarks live in
// the _test files; docs/PERFORMANCE.md ("Event store") explains them and
// gives the figures.
package esbench

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/eventstore"
	esjs "github.com/junctionhq/junction/eventstore/jetstream"
	espg "github.com/junctionhq/junction/eventstore/postgres"
	"github.com/junctionhq/junction/internal/natsembed"
)

// Sizes of the measured operations.
const (
	// BatchSize is the number of events of one batch append.
	BatchSize = 100
	// Writers is the number of concurrent writers, each on its own stream.
	Writers = 16
	// StreamLen is the length of the stream that ReadStream reads.
	StreamLen = 10_000
	// DefaultReplayLen is the length of the global log that ReadAll
	// replays, unless JUNCTION_BENCH_REPLAY says otherwise.
	DefaultReplayLen = 200_000
	// EventType is the type of every event.
	EventType = "BenchEvent"
	// PayloadSize is the size of every event's data.
	PayloadSize = 128
)

// PostgresAddr and PostgresDSN locate the PostgreSQL server
// (JUNCTION_BENCH_PG_DSN overrides the DSN).
const (
	PostgresAddr = "127.0.0.1:5432"
	PostgresDSN  = "postgres://postgres@" + PostgresAddr + "/test?sslmode=disable"
)

// ReplayLen is the length of the replayed global log:
// JUNCTION_BENCH_REPLAY if set, else DefaultReplayLen. It is rounded down
// to a multiple of BatchSize.
func ReplayLen() int {
	n := DefaultReplayLen
	if v, err := strconv.Atoi(os.Getenv("JUNCTION_BENCH_REPLAY")); err == nil && v > 0 {
		n = v
	}
	return max(BatchSize, n/BatchSize*BatchSize)
}

// Payload returns PayloadSize bytes of JSON: {"p":"abc...xyz..."}.
func Payload() []byte {
	const head, tail = `{"p":"`, `"}`
	p := []byte(head)
	for i := 0; len(p) < PayloadSize-len(tail); i++ {
		p = append(p, 'a'+byte(i%26))
	}
	return append(p, tail...)
}

// ProcessCPU is the CPU time (user and system) this process has used. For
// the JetStream backend this includes the embedded server; for PostgreSQL
// it excludes the database server, which is another process.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runSeq makes stream names unique across benchmark rounds, so that the
// first append of every writer is to a new stream.
var runSeq atomic.Int64

func nextRun() int64 { return runSeq.Add(1) }

// Backend is one event store backend with its raw baseline and the stores
// that hold the read fixtures. Writes go to Store; ReadStream reads a
// stream of StreamLen events in Reads; ReadAll replays Replay, whose log
// holds exactly ReplayLen events.
type Backend struct {
	Name      string
	Store     eventstore.Store
	Reads     eventstore.Store
	Replay    eventstore.Store
	Raw       Raw
	StreamLen int
	ReplayLen int
	// PerCommit: the backend's read cost depends on how many appends
	// wrote a stream (JetStream stores one message per append), so
	// ReadStream is also measured on a stream written one event at a time.
	PerCommit bool
	close     func()

	once     sync.Once
	fixErr   error
	fixtures map[string]bool
}

// Close releases the backend's resources (dropping PostgreSQL schemas).
func (be *Backend) Close() { be.close() }

// Raw is the baseline: the same work done with the substrate's own client
// and no event store protocol.
type Raw interface {
	// Writer returns a writer of its own stream (subject or rows): one
	// event per call when batch is false (a synchronous publish, or an
	// INSERT in its own transaction), else n events per call.
	Writer(w int, batch bool) func(ctx context.Context, n int) error
	// FillStream and FillAll create what ReadStream and ReadAll read;
	// the PostgreSQL baseline reads the store's own rows and needs none.
	FillStream(ctx context.Context, n int) error
	FillAll(ctx context.Context, n int) error
	// ReadStream and ReadAll read everything and return the count.
	ReadStream(ctx context.Context) (int, error)
	ReadAll(ctx context.Context) (int, error)
}

// Fixture stream names.
const (
	readStream   = "read-batched"
	singleStream = "read-single"
)

// EnsureFixtures fills the read stores and the raw read fixtures, once.
func (be *Backend) EnsureFixtures(ctx context.Context) error {
	be.once.Do(func() {
		steps := []struct {
			what string
			fn   func() error
		}{
			{"store stream", func() error { return fillStream(ctx, be.Reads, readStream, be.StreamLen, BatchSize) }},
			{"store log", func() error { return fillLog(ctx, be.Replay, be.ReplayLen) }},
			{"raw stream", func() error { return be.Raw.FillStream(ctx, be.StreamLen) }},
			{"raw log", func() error { return be.Raw.FillAll(ctx, be.ReplayLen) }},
		}
		if be.PerCommit {
			steps = append(steps, struct {
				what string
				fn   func() error
			}{"store single-event stream", func() error { return fillStream(ctx, be.Reads, singleStream, be.StreamLen, 1) }})
		}
		for _, s := range steps {
			if err := s.fn(); err != nil {
				be.fixErr = fmt.Errorf("%s fixture %s: %w", be.Name, s.what, err)
				return
			}
		}
	})
	return be.fixErr
}

// Events returns n events of EventType with the payload and no IDs (the
// store assigns UUIDv7s).
func Events(n int) []eventstore.EventData {
	p := Payload()
	evs := make([]eventstore.EventData, n)
	for i := range evs {
		evs[i] = eventstore.EventData{Type: EventType, Data: p}
	}
	return evs
}

// StoreWriter appends to stream with the exact expected version every
// time: NoStream first, then the last version written.
func StoreWriter(st eventstore.Store, stream string) func(ctx context.Context, n int) error {
	evs := Events(BatchSize)
	written := int64(0)
	return func(ctx context.Context, n int) error {
		if n > len(evs) {
			evs = Events(n)
		}
		exp := eventstore.NoStream
		if written > 0 {
			exp = eventstore.ExpectedVersion(written - 1)
		}
		r, err := st.Append(ctx, stream, exp, evs[:n])
		if err != nil {
			return err
		}
		if want := uint64(written) + uint64(n) - 1; r.LastVersion != want {
			return fmt.Errorf("append to %s: last version %d, want %d", stream, r.LastVersion, want)
		}
		written += int64(n)
		return nil
	}
}

func fillStream(ctx context.Context, st eventstore.Store, stream string, n, per int) error {
	w := StoreWriter(st, stream)
	for done := 0; done < n; done += per {
		if err := w(ctx, min(per, n-done)); err != nil {
			return err
		}
	}
	return nil
}

// fillLog writes n events in appends of BatchSize, spread over 100
// streams, four appends at a time.
func fillLog(ctx context.Context, st eventstore.Store, n int) error {
	const fillers = 4
	var wg sync.WaitGroup
	errs := make(chan error, fillers)
	appends := n / BatchSize
	for f := range fillers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := Events(BatchSize)
			for i := f; i < appends; i += fillers {
				if _, err := st.Append(ctx, fmt.Sprintf("replay-%d", i%100), eventstore.Any, evs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// OpenJetStream starts an embedded nats-server with its store under dir
// (file storage, no fsync per message: the product default) and opens
// three event stores on it plus the raw baseline streams.
func OpenJetStream(ctx context.Context, dir string, streamLen, replayLen int) (*Backend, error) {
	nc, err := natsembed.Start(ctx, natsembed.Options{DataDir: dir, Logger: discardLogger()})
	if err != nil {
		return nil, err
	}
	be := &Backend{Name: "jetstream", StreamLen: streamLen, ReplayLen: replayLen, PerCommit: true, close: nc.Close}
	for _, o := range []struct {
		prefix string
		dst    *eventstore.Store
	}{{"esw", &be.Store}, {"esr", &be.Reads}, {"esa", &be.Replay}} {
		st, err := esjs.Open(ctx, nc.JS, o.prefix)
		if err != nil {
			nc.Close()
			return nil, err
		}
		*o.dst = st
	}
	raw := &rawJS{js: nc.JS, payload: Payload()}
	for _, name := range []string{"raw", "rawread", "rawall"} {
		if _, err := nc.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew,
		}); err != nil {
			nc.Close()
			return nil, err
		}
	}
	be.Raw = raw
	return be, nil
}

// rawJS is the JetStream baseline: plain messages holding the event data,
// one per event, in file-storage streams of the same server.
type rawJS struct {
	js      jetstream.JetStream
	payload []byte
}

func (r *rawJS) Writer(w int, batch bool) func(ctx context.Context, n int) error {
	subject := fmt.Sprintf("raw.w%d.%d", nextRun(), w)
	if !batch {
		return func(ctx context.Context, n int) error {
			for range n {
				if _, err := r.js.Publish(ctx, subject, r.payload); err != nil {
					return err
				}
			}
			return nil
		}
	}
	futs := make([]jetstream.PubAckFuture, 0, BatchSize)
	return func(ctx context.Context, n int) error {
		futs = futs[:0]
		for range n {
			f, err := r.js.PublishAsync(subject, r.payload)
			if err != nil {
				return err
			}
			futs = append(futs, f)
		}
		return waitAll(ctx, futs)
	}
}

func waitAll(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (r *rawJS) fill(ctx context.Context, subject string, n int) error {
	futs := make([]jetstream.PubAckFuture, 0, 1000)
	for done := 0; done < n; done += len(futs) {
		futs = futs[:0]
		for range min(1000, n-done) {
			f, err := r.js.PublishAsync(subject, r.payload)
			if err != nil {
				return err
			}
			futs = append(futs, f)
		}
		if err := waitAll(ctx, futs); err != nil {
			return err
		}
	}
	return nil
}

func (r *rawJS) FillStream(ctx context.Context, n int) error { return r.fill(ctx, "rawread.s", n) }
func (r *rawJS) FillAll(ctx context.Context, n int) error    { return r.fill(ctx, "rawall.s", n) }

func (r *rawJS) ReadStream(ctx context.Context) (int, error) {
	return r.read(ctx, "rawread", "rawread.s")
}
func (r *rawJS) ReadAll(ctx context.Context) (int, error) { return r.read(ctx, "rawall", "rawall.>") }

// rawMsg is what the baseline keeps of a message: what an event needs.
type rawMsg struct {
	seq  uint64
	data []byte
	time time.Time
}

// read consumes every message of filter with an ordered consumer, as a
// hand-written replay would, and stops at the last one.
func (r *rawJS) read(ctx context.Context, stream, filter string) (int, error) {
	cons, err := r.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	var out []rawMsg
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return len(out), err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return len(out), err
		}
		out = append(out, rawMsg{seq: meta.Sequence.Stream, data: msg.Data(), time: meta.Timestamp})
		if meta.NumPending == 0 {
			return len(out), nil
		}
	}
}

// OpenPostgres opens three stores in new schemas of the PostgreSQL
// database, plus a raw_events table for the baseline; Close drops the
// schemas. The raw table has the columns, keys and indexes of the store's
// events table, with positions from an identity column instead of the
// store's lock-protected max(position)+1.
func OpenPostgres(ctx context.Context, dsn string, streamLen, replayLen int) (*Backend, error) {
	if v := os.Getenv("JUNCTION_BENCH_PG_DSN"); v != "" {
		dsn = v
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2 * Writers)
	db.SetMaxIdleConns(2 * Writers) // database/sql keeps only 2 by default
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	base := fmt.Sprintf("esbench_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9)
	schemas := []string{base + "_w", base + "_r", base + "_a"}
	closeFn := func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, s := range schemas {
			_, _ = db.ExecContext(cctx, `DROP SCHEMA IF EXISTS `+s+` CASCADE`)
		}
		db.Close()
	}
	be := &Backend{Name: "postgres", StreamLen: streamLen, ReplayLen: replayLen, close: closeFn}
	for i, dst := range []*eventstore.Store{&be.Store, &be.Reads, &be.Replay} {
		st, err := espg.Open(ctx, db, schemas[i])
		if err != nil {
			closeFn()
			return nil, err
		}
		*dst = st
	}
	raw := &rawPG{db: db, table: schemas[0] + ".raw_events", reads: schemas[1] + ".events", replay: schemas[2] + ".events", payload: string(Payload())}
	for _, q := range []string{
		`CREATE TABLE ` + raw.table + ` (
			position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
		`CREATE INDEX ON ` + raw.table + ` (category, position)`,
		`CREATE INDEX ON ` + raw.table + ` (type, position)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			closeFn()
			return nil, err
		}
	}
	be.Raw = raw
	return be, nil
}

// rawPG is the PostgreSQL baseline: INSERTs into a table shaped like the
// store's, and SELECTs of the store's own rows.
type rawPG struct {
	db            *sql.DB
	table         string
	reads, replay string // the read stores' events tables
	payload       string
}

func (r *rawPG) Writer(w int, batch bool) func(ctx context.Context, n int) error {
	stream := fmt.Sprintf("raw-%d.%d", nextRun(), w)
	cat := eventstore.Category(stream)
	version := int64(0)
	stmts := map[int]string{}
	return func(ctx context.Context, n int) error {
		q, ok := stmts[n]
		if !ok {
			var b strings.Builder
			b.WriteString(`INSERT INTO ` + r.table + ` (stream, category, version, id, type, data, time) VALUES `)
			for i := range n {
				if i > 0 {
					b.WriteByte(',')
				}
				k := 7 * i
				fmt.Fprintf(&b, "($%d,$%d,$%d,$%d,$%d,$%d::json,$%d)", k+1, k+2, k+3, k+4, k+5, k+6, k+7)
			}
			q = b.String()
			stmts[n] = q
		}
		now := time.Now()
		args := make([]any, 0, 7*n)
		for i := range n {
			id, err := uuid.NewV7()
			if err != nil {
				return err
			}
			args = append(args, stream, cat, version+int64(i), id.String(), EventType, r.payload, now)
		}
		// One statement outside an explicit transaction: PostgreSQL
		// runs and commits it as a transaction of its own.
		if _, err := r.db.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		version += int64(n)
		return nil
	}
}

func (r *rawPG) FillStream(context.Context, int) error { return nil }
func (r *rawPG) FillAll(context.Context, int) error    { return nil }

const rawCols = `stream, version, position, id, type, data, metadata, time`

func (r *rawPG) ReadStream(ctx context.Context) (int, error) {
	return r.query(ctx, `SELECT `+rawCols+` FROM `+r.reads+` WHERE stream = $1 ORDER BY version`, readStream)
}

func (r *rawPG) ReadAll(ctx context.Context) (int, error) {
	return r.query(ctx, `SELECT `+rawCols+` FROM `+r.replay+` ORDER BY position`)
}

// query reads rows into events, as the store does, without its
// transaction, stream lookup or ::text casts.
func (r *rawPG) query(ctx context.Context, q string, args ...any) (int, error) {
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var out []eventstore.Event
	for rows.Next() {
		var e eventstore.Event
		var version, position int64
		if err := rows.Scan(&e.Stream, &version, &position, &e.ID, &e.Type, &e.Data, &e.Metadata, &e.Time); err != nil {
			return len(out), err
		}
		e.Version, e.Position = uint64(version), uint64(position)
		out = append(out, e)
	}
	return len(out), rows.Err()
}
