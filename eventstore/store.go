// Package eventstore defines Junction's event store: append-only streams of
// events with optimistic concurrency, and one global log ($all) in commit
// order. Backends live in subpackages and all pass eventstoretest.Run.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ExpectedVersion is the optimistic-concurrency condition of an append.
type ExpectedVersion int64

// Special expected versions; any value >= 0 means the stream's current last
// version must be exactly that value.
const (
	Any          ExpectedVersion = -1 // no check
	NoStream     ExpectedVersion = -2 // the stream must not exist (or be empty)
	StreamExists ExpectedVersion = -3 // the stream must have at least one event
)

// String renders the condition as the HTTP API spells it.
func (e ExpectedVersion) String() string {
	switch e {
	case Any:
		return "any"
	case NoStream:
		return "no_stream"
	case StreamExists:
		return "exists"
	}
	return fmt.Sprint(int64(e))
}

// EventData is an event to append. ID is the caller-chosen idempotency key
// (a UUIDv7 is assigned when empty); Data and Metadata are JSON, Metadata may
// be nil.
type EventData struct {
	ID       string
	Type     string
	Data     []byte
	Metadata []byte
}

// Event is a stored event. Version is its 0-based index in its stream;
// Position its place in the global log.
type Event struct {
	Stream   string
	Version  uint64
	Position uint64
	ID       string
	Type     string
	Data     []byte
	Metadata []byte
	Time     time.Time
}

// AppendResult reports where an append landed; Position is the global
// position of its last event.
type AppendResult struct {
	FirstVersion uint64
	LastVersion  uint64
	Position     uint64
}

// ReadOptions selects events of one stream. Forward reads start at version
// From (inclusive); backward reads go down from From, and From =
// math.MaxUint64 means from the end. Limit <= 0 means no limit.
type ReadOptions struct {
	From     uint64
	Limit    int
	Backward bool
}

// ReadAllOptions selects events of the global log at positions >= From, in
// commit order. Empty Categories or Types means no filter on them.
// Limit <= 0 means no limit.
type ReadAllOptions struct {
	From       uint64
	Limit      int
	Categories []string
	Types      []string
}

// Retention bounds what a stream keeps, like EventStoreDB's $maxAge and
// $maxCount: only its last MaxCount versions, and only events whose Time is
// within MaxAge of now. Zero fields mean no bound.
type Retention struct {
	MaxAge   time.Duration
	MaxCount uint64
}

// IsZero reports whether r keeps everything.
func (r Retention) IsZero() bool { return r.MaxAge == 0 && r.MaxCount == 0 }

// Validate refuses a negative MaxAge, and a MaxCount above math.MaxInt64
// (which not every backend can store), with ErrInvalid.
func (r Retention) Validate() error {
	if r.MaxAge < 0 {
		return fmt.Errorf("%w: max age %v is negative", ErrInvalid, r.MaxAge)
	}
	if r.MaxCount > math.MaxInt64 {
		return fmt.Errorf("%w: max count %d is above %d", ErrInvalid, r.MaxCount, int64(math.MaxInt64))
	}
	return nil
}

// MinVersion is the lowest version MaxCount keeps when the stream's last
// version is last (-1 when it has none).
func (r Retention) MinVersion(last int64) uint64 {
	if r.MaxCount == 0 || last < 0 || uint64(last)+1 <= r.MaxCount {
		return 0
	}
	return uint64(last) + 1 - r.MaxCount
}

// Cutoff is the oldest event time MaxAge keeps at now: events strictly
// before it have expired. The zero time when there is no MaxAge.
func (r Retention) Cutoff(now time.Time) time.Time {
	if r.MaxAge == 0 {
		return time.Time{}
	}
	return now.Add(-r.MaxAge)
}

// Store is an event store backend.
type Store interface {
	// Append writes events atomically at the end of stream if expected holds.
	Append(ctx context.Context, stream string, expected ExpectedVersion, events []EventData) (AppendResult, error)
	// ReadStream reads one stream; ErrStreamNotFound or ErrStreamDeleted
	// when there is nothing to read. It never returns events outside the
	// stream's retention; a stream all of whose events have expired reads
	// as empty, without error.
	ReadStream(ctx context.Context, stream string, o ReadOptions) ([]Event, error)
	// ReadAll reads the global log. Events of streams deleted since they
	// were written stay in it: the log is history, and projections built
	// from it must be able to replay it. Events outside their stream's
	// retention stay in it too until a scavenge removes them (setting a
	// retention scavenges its stream, and so does each append to a stream
	// with one): ReadAll drops them only once scavenged.
	ReadAll(ctx context.Context, o ReadAllOptions) ([]Event, error)
	// Delete soft-deletes stream: reads give ErrStreamDeleted; appending
	// with NoStream or Any starts it again at the next version (versions
	// are never reused).
	Delete(ctx context.Context, stream string) error
	// SetRetention stores stream's retention (the zero Retention removes
	// it) and scavenges the stream. The stream need not exist yet: the
	// retention applies once it does. Versions are never renumbered: the
	// stream's next append still gets the version after its true last one,
	// and expected-version checks see that version.
	SetRetention(ctx context.Context, stream string, r Retention) error
	// GetRetention returns stream's retention, zero when it has none.
	GetRetention(ctx context.Context, stream string) (Retention, error)
	// Close releases the backend's resources.
	Close() error
}

// Protocol errors; backends wrap them with %w.
var (
	ErrStreamNotFound = errors.New("stream not found")
	ErrStreamDeleted  = errors.New("stream deleted")
	ErrInvalid        = errors.New("invalid request")
	ErrWrongVersion   = errors.New("wrong expected version")
)

// VersionError is a failed expected-version check; nothing was written.
// Current is the stream's last version, -1 when it does not exist (or is
// deleted).
type VersionError struct {
	Stream   string
	Expected ExpectedVersion
	Current  int64
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("stream %q: wrong expected version: expected %s, current %d", e.Stream, e.Expected, e.Current)
}

// Is makes errors.Is(err, ErrWrongVersion) hold.
func (e *VersionError) Is(target error) bool { return target == ErrWrongVersion }

// MaxNameLen bounds stream names, event types and event IDs, so they stay
// cheap to index in every backend.
const MaxNameLen = 200

// ValidStreamName reports whether s is 1..200 characters of [A-Za-z0-9_.:-]
// not starting with '$' (reserved for system streams such as $all).
func ValidStreamName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// Category is the stream name before its first '-' (the whole name when
// there is none): "order-42" is in category "order".
func Category(stream string) string {
	if i := strings.IndexByte(stream, '-'); i >= 0 {
		return stream[:i]
	}
	return stream
}

// Check validates the expected version against the stream's state: current
// is its last version, -1 when it does not exist or is deleted. Backends
// call it inside their write serialization.
func Check(stream string, expected ExpectedVersion, current int64) error {
	ok := false
	switch {
	case expected == Any:
		ok = true
	case expected == NoStream:
		ok = current < 0
	case expected == StreamExists:
		ok = current >= 0
	case expected >= 0:
		ok = int64(expected) == current
	}
	if !ok {
		return &VersionError{Stream: stream, Expected: expected, Current: current}
	}
	return nil
}

// Prepare validates an append and returns the events with IDs assigned, so
// every backend rejects the same inputs with ErrInvalid.
func Prepare(stream string, expected ExpectedVersion, events []EventData) ([]EventData, error) {
	if !ValidStreamName(stream) {
		return nil, fmt.Errorf("%w: stream name %q: want 1..%d characters of [A-Za-z0-9_.:-], not starting with '$'", ErrInvalid, stream, MaxNameLen)
	}
	if expected < StreamExists {
		return nil, fmt.Errorf("%w: expected version %d", ErrInvalid, int64(expected))
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no events", ErrInvalid)
	}
	out := make([]EventData, len(events))
	seen := make(map[string]bool, len(events))
	for i, e := range events {
		if e.Type == "" {
			return nil, fmt.Errorf("%w: event %d: type is required", ErrInvalid, i)
		}
		if len(e.Type) > MaxNameLen {
			return nil, fmt.Errorf("%w: event %d: type longer than %d", ErrInvalid, i, MaxNameLen)
		}
		if len(e.ID) > MaxNameLen {
			return nil, fmt.Errorf("%w: event %d: id longer than %d", ErrInvalid, i, MaxNameLen)
		}
		if !json.Valid(e.Data) {
			return nil, fmt.Errorf("%w: event %d: data is not JSON", ErrInvalid, i)
		}
		if e.Metadata != nil && !json.Valid(e.Metadata) {
			return nil, fmt.Errorf("%w: event %d: metadata is not JSON", ErrInvalid, i)
		}
		if e.ID == "" {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, err
			}
			e.ID = id.String()
		}
		if seen[e.ID] {
			return nil, fmt.Errorf("%w: event %d: duplicate event id %q in one append", ErrInvalid, i, e.ID)
		}
		seen[e.ID] = true
		out[i] = e
	}
	return out, nil
}
