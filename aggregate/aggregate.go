// Package aggregate folds an event store stream into a Go value and runs
// commands against it with optimistic concurrency: load the state, decide
// which events a command produces, append them if nobody else wrote to the
// stream in between, otherwise load again and decide again. Snapshots keep
// loading cheap for long streams.
package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/resilience"
)

// DefaultMaxRetries is how often Execute decides again after a concurrent
// write when Aggregate.MaxRetries is 0.
const DefaultMaxRetries = 3

// readPage bounds the events held in memory at once while replaying.
const readPage = 500

// retryBackoff spreads the retries of writers contending on one stream, so
// they do not reload and collide again in lockstep.
var retryBackoff = resilience.Backoff{Base: time.Millisecond, Max: 50 * time.Millisecond, Jitter: 1}

// Aggregate is the state S of streams built by Apply from Initial. Set
// Store, Apply and, when S's zero value is not the empty state, Initial;
// the rest is optional. An Aggregate is safe for concurrent use as long as
// its fields are not changed.
type Aggregate[S any] struct {
	Store eventstore.Store
	// Snapshots, when set, stores the state every SnapshotEvery events as
	// the JSON of S, so a load replays only the events after it. S's
	// exported fields must then hold the whole state.
	Snapshots Snapshots
	// Initial returns the state of a stream without events; nil means
	// S's zero value.
	Initial func() S
	// Apply returns the state after e. It must not modify s in place
	// (copy maps and slices first): Execute keeps the state it passed to
	// decide to build snapshots.
	Apply func(s S, e eventstore.Event) (S, error)
	// SnapshotEvery is the number of events between snapshots; 0 never
	// takes one. A stream with a retention (eventstore.Retention) drops
	// its old events, so only snapshots keep their effect: snapshot it at
	// least every MaxCount events and well within MaxAge.
	SnapshotEvery int
	// MaxRetries is how often Execute decides again after losing a race
	// with another writer; 0 means DefaultMaxRetries, negative none.
	MaxRetries int
	// Log records snapshots that could not be loaded or saved; nil means
	// slog.Default.
	Log *slog.Logger
}

// ErrNoApply is returned by an Aggregate without an Apply function.
var ErrNoApply = errors.New("aggregate: Apply is required")

// ErrExpired is returned by Load when the retention of a stream dropped
// events its snapshot does not cover: its state cannot be rebuilt.
// Snapshot such streams at least every MaxCount events (SnapshotEvery).
var ErrExpired = errors.New("aggregate: events after the snapshot have expired")

// errStale means a stream was deleted and started again after the version
// some state was built at, so that state does not belong to its events.
var errStale = errors.New("state predates a delete of the stream")

// retentionGetter is implemented by stores whose streams may drop their
// oldest events.
type retentionGetter interface {
	GetRetention(ctx context.Context, stream string) (eventstore.Retention, error)
}

// expires reports whether stream has a retention, so that its events
// before some version may be gone without the stream having been deleted.
func (a *Aggregate[S]) expires(ctx context.Context, stream string) bool {
	g, ok := a.Store.(retentionGetter)
	if !ok {
		return false
	}
	r, err := g.GetRetention(ctx, stream)
	return err == nil && !r.IsZero()
}

func (a *Aggregate[S]) initial() S {
	if a.Initial == nil {
		var zero S
		return zero
	}
	return a.Initial()
}

func (a *Aggregate[S]) log() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

// Load returns the current state of stream and its version (the version
// of the last event applied), -1 when the stream has no events: it does
// not exist or was deleted, and then the state is Initial's. It starts
// from the latest snapshot when there is a usable one, and replays all
// events otherwise; ErrExpired means a retention dropped events the
// snapshot does not cover.
func (a *Aggregate[S]) Load(ctx context.Context, stream string) (S, int64, error) {
	if a.Apply == nil {
		var zero S
		return zero, -1, ErrNoApply
	}
	if snap, ok := a.loadSnapshot(ctx, stream); ok {
		s, v, err := a.replay(ctx, stream, snap.state, int64(snap.version))
		if !errors.Is(err, errStale) {
			return s, v, err
		}
		a.log().Info("snapshot does not match the stream (deleted since); replaying it", "stream", stream, "version", snap.version)
	}
	return a.replay(ctx, stream, a.initial(), -1)
}

type loaded[S any] struct {
	state   S
	version uint64
}

// loadSnapshot returns the stream's decoded snapshot. A snapshot that
// cannot be loaded or decoded (S changed shape, say) only costs a full
// replay, so it is logged rather than failing the load.
func (a *Aggregate[S]) loadSnapshot(ctx context.Context, stream string) (loaded[S], bool) {
	if a.Snapshots == nil {
		return loaded[S]{}, false
	}
	snap, ok, err := a.Snapshots.Load(ctx, stream)
	if err != nil {
		a.log().Warn("loading snapshot; replaying the stream", "stream", stream, "err", err)
		return loaded[S]{}, false
	}
	if !ok {
		return loaded[S]{}, false
	}
	var s S
	if err := json.Unmarshal(snap.State, &s); err != nil {
		a.log().Warn("decoding snapshot; replaying the stream", "stream", stream, "version", snap.Version, "err", err)
		return loaded[S]{}, false
	}
	return loaded[S]{state: s, version: snap.Version}, true
}

// replay applies the events of stream after version to s, which is the
// state as of version (-1: no events). It reads from version itself and
// checks that event is still there: if it is not, the stream was deleted
// and started again since, and s is stale. Unless the stream has a
// retention: then the event may have expired, which is what snapshots are
// for, so s is kept. (A delete and restart of such a stream after s cannot
// be told from expiry.)
func (a *Aggregate[S]) replay(ctx context.Context, stream string, s S, version int64) (S, int64, error) {
	from := uint64(max(version, 0))
	check := version >= 0
	for {
		es, err := a.Store.ReadStream(ctx, stream, eventstore.ReadOptions{From: from, Limit: readPage})
		if errors.Is(err, eventstore.ErrStreamNotFound) || errors.Is(err, eventstore.ErrStreamDeleted) {
			if check {
				// The stream is gone since s was built: s is stale.
				return s, version, errStale
			}
			return a.initial(), -1, nil
		}
		if err != nil {
			return s, version, fmt.Errorf("reading %s: %w", stream, err)
		}
		full := len(es) == readPage
		if check {
			switch {
			case len(es) > 0 && es[0].Version == uint64(version):
				es = es[1:]
			case !a.expires(ctx, stream):
				return s, version, errStale
			case len(es) > 0 && es[0].Version > uint64(version)+1:
				// Events between s and the oldest kept one are gone:
				// no state built from here would be right.
				return s, version, fmt.Errorf("%w: %s has no events %d..%d", ErrExpired, stream, version+1, es[0].Version-1)
			}
			check = false
		}
		for _, e := range es {
			if s, err = a.Apply(s, e); err != nil {
				return s, version, fmt.Errorf("applying %s@%d (%s): %w", stream, e.Version, e.Type, err)
			}
			version = int64(e.Version)
		}
		if !full {
			return s, version, nil
		}
		from = uint64(version) + 1
	}
}

// Execute runs a command against stream: it loads the state, calls decide
// with it, and appends the events decide returns, expecting the version it
// loaded (eventstore.NoStream when the stream has no events, which also
// starts a deleted stream again). When another writer appended in between
// (eventstore.ErrWrongVersion), it loads and decides again, up to
// MaxRetries times, so decide may run more than once and must not have
// side effects or modify the state it is given. An error from decide is
// returned as it is; decide returning no events appends nothing and
// returns a zero AppendResult.
//
// When the append crosses a multiple of SnapshotEvery events, Execute
// saves a snapshot before returning. Failing to save one is logged, not
// returned: the events are stored, and the command succeeded.
func (a *Aggregate[S]) Execute(ctx context.Context, stream string, decide func(S) ([]eventstore.EventData, error)) (eventstore.AppendResult, error) {
	retries := a.MaxRetries
	if retries == 0 {
		retries = DefaultMaxRetries
	}
	for attempt := 0; ; attempt++ {
		s, version, err := a.Load(ctx, stream)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		events, err := decide(s)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if len(events) == 0 {
			return eventstore.AppendResult{}, nil
		}
		expected := eventstore.NoStream
		if version >= 0 {
			expected = eventstore.ExpectedVersion(version)
		}
		r, err := a.Store.Append(ctx, stream, expected, events)
		if errors.Is(err, eventstore.ErrWrongVersion) && attempt < retries {
			if err := resilience.System.Sleep(ctx, retryBackoff.Delay(attempt+1)); err != nil {
				return eventstore.AppendResult{}, err
			}
			continue
		}
		if err != nil {
			return r, fmt.Errorf("appending to %s: %w", stream, err)
		}
		a.snapshotAfter(ctx, stream, s, version, r)
		return r, nil
	}
}

// snapshotAfter saves a snapshot when the append r crossed a multiple of
// SnapshotEvery. It builds the state from s (as of version, before the
// append) plus the events read back from the store, so it is exact even
// when other writers appended since.
func (a *Aggregate[S]) snapshotAfter(ctx context.Context, stream string, s S, version int64, r eventstore.AppendResult) {
	n := uint64(a.SnapshotEvery)
	if a.Snapshots == nil || n == 0 || a.SnapshotEvery < 0 || (r.LastVersion+1)/n == r.FirstVersion/n {
		return
	}
	s, version, err := a.replay(ctx, stream, s, version)
	if err != nil || version < 0 {
		a.log().Warn("snapshot not taken", "stream", stream, "err", err)
		return
	}
	state, err := json.Marshal(s)
	if err == nil {
		err = a.Snapshots.Save(ctx, Snapshot{Stream: stream, Version: uint64(version), State: state, Time: time.Now()})
	}
	if err != nil {
		a.log().Warn("saving snapshot", "stream", stream, "version", version, "err", err)
	}
}
