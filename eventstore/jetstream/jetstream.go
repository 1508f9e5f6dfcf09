// Package jetstream is an event store backend on NATS JetStream. It needs
// only features of NATS 2.9 (no atomic batch publish).
//
// Layout, for a prefix P:
//
//   - Stream P_events, subjects P.es.>: one message per append (a commit) on
//     P.es.<category>.<stream>, tokens being the base64url (no padding) of
//     the names. The body is the JSON array of the append's events; headers
//     carry the stream name, the first version and the event count. A soft
//     delete is a commit with no events and the Junction-Deleted header.
//   - Stream P_ids, subjects P.id.>: one claim message per event ID on
//     P.id.<id>, whose body is the name of the stream the event went to.
//     Claims make event IDs unique across the whole store.
//   - Stream P_meta, subjects P.meta.>, one message per subject: a
//     stream's retention on P.meta.<stream>, as JSON. A stream of its own
//     rather than a KV bucket, so that it lives under the store's prefix
//     like the others (one prefix to grant, list or purge), and rather
//     than messages in P_events, so that metadata set before a stream
//     exists takes no position in the global log.
//
// Retention is applied when reading, and a scavenge after each append to
// a stream with a retention (and when one is set) deletes, oldest first,
// the commits all of whose events have expired, with their claims. The
// stream's last commit is never deleted, since it carries the next
// version; when all its events have expired it is replaced by a commit
// with no events.
//
// An append first claims its IDs (publish with an expected last subject
// sequence of 0, so a claim fails when the ID is taken), then takes the
// stream's last commit (from a cache of the streams this store wrote, else
// from the server), checks the expected version and publishes the commit
// with the last commit's sequence as the expected last subject sequence,
// so a racing writer, or a stale cache, makes it fail and the append reads
// the last commit from the server and re-checks.
// When an append fails after claiming, its claims are deleted again. A
// claim that fails sends the append down the idempotency path: if the IDs
// are, in order, consecutive events of the target stream, the original
// result is returned; otherwise the append is invalid.
//
// The global position of event i of the commit with sequence S is S<<16|i,
// so one append holds at most 65535 events.
//
// Costs and limits:
//   - An append costs one claim per event (published asynchronously, so
//     about one round trip) and the commit; plus a last-message lookup
//     when the stream's last commit is not cached or is stale, and a
//     retention lookup and a scavenge when the stream has a retention.
//   - ReadStream, and the idempotency path of Append, read every commit of
//     the stream from its beginning (backward reads collect, then reverse).
//   - ReadAll with several categories reads all categories and filters on
//     the client; event types are always filtered on the client.
//   - A process dying between claiming IDs and committing leaves those IDs
//     claimed but unused. A retry of that append is rejected as invalid
//     until the claims are older than DefaultClaimGrace (30s); then it
//     takes them over and commits. An idempotent retry racing the original
//     append is likewise rejected while the original is in flight.
//   - A commit carries a message id, so an append whose acknowledgement
//     was lost and which is sent again within the duplicate window (2m by
//     default) is stored once and answered with the original result.
package jetstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/eventstore"
)

const (
	hdrStream  = "Junction-Stream"
	hdrFirst   = "Junction-First"
	hdrCount   = "Junction-Count"
	hdrDeleted = "Junction-Deleted"

	// scavengeBudget bounds the events whose commits one append's scavenge
	// deletes, so an append stays cheap when a large change is pending.
	scavengeBudget = 256

	maxEvents  = 1<<16 - 1
	fetchSize  = 256
	claimChunk = 512
)

// Store is the JetStream event store.
type Store struct {
	js      jetstream.JetStream
	prefix  string
	events  string // stream names
	ids     string
	meta    string
	idsBase string // subject prefixes
	esBase  string
	mtBase  string
	evSt    jetstream.Stream
	idSt    jetstream.Stream
	mtSt    jetstream.Stream
	now     func() time.Time // retention's MaxAge is measured against it
	tips    tips
	// retained follows P_meta until Close.
	retained  retained
	stopWatch func()
	// claimGrace is how old a claim must be before an append that finds
	// its IDs claimed but never committed may take them over: older than
	// any append still in flight, so the claim's owner died.
	claimGrace time.Duration
}

// DefaultClaimGrace is the age after which an uncommitted claim is stale.
const DefaultClaimGrace = 30 * time.Second

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

// Open creates (or updates) the store's JetStream streams under prefix,
// which must be 1..64 characters of [A-Za-z0-9_-].
func Open(ctx context.Context, js jetstream.JetStream, prefix string, opts ...Option) (*Store, error) {
	if !validPrefix(prefix) {
		return nil, fmt.Errorf("%w: prefix %q: want 1..64 characters of [A-Za-z0-9_-]", eventstore.ErrInvalid, prefix)
	}
	s := &Store{js: js, prefix: prefix, claimGrace: DefaultClaimGrace, now: time.Now,
		events: prefix + "_events", ids: prefix + "_ids", meta: prefix + "_meta",
		esBase: prefix + ".es.", idsBase: prefix + ".id.", mtBase: prefix + ".meta."}
	for _, o := range opts {
		o(s)
	}
	for _, c := range []struct {
		cfg jetstream.StreamConfig
		dst *jetstream.Stream
	}{
		{jetstream.StreamConfig{Name: s.events, Subjects: []string{s.esBase + ">"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew}, &s.evSt},
		{jetstream.StreamConfig{Name: s.ids, Subjects: []string{s.idsBase + ">"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew}, &s.idSt},
		{jetstream.StreamConfig{Name: s.meta, Subjects: []string{s.mtBase + ">"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, MaxMsgsPerSubject: 1}, &s.mtSt},
	} {
		st, err := js.CreateOrUpdateStream(ctx, c.cfg)
		if err != nil {
			return nil, fmt.Errorf("event store stream %s: %w", c.cfg.Name, err)
		}
		*c.dst = st
	}
	if err := s.watchRetention(ctx); err != nil {
		return nil, fmt.Errorf("event store stream %s: %w", s.meta, err)
	}
	return s, nil
}

func validPrefix(p string) bool {
	if len(p) == 0 || len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Close stops following P_meta; the connection belongs to the caller.
func (s *Store) Close() error {
	s.stopWatch()
	return nil
}

// retained is the set of streams that have a retention, kept current by
// following P_meta, so that an append to a stream without one (most
// appends) spends no round trip finding that out. Until the follow has
// read all of P_meta, and once it has failed, any stream may have one.
// A change made by another process arrives a little later; meanwhile its
// scavenges are skipped, which reads do not notice.
type retained struct {
	mu      sync.Mutex
	streams map[string]bool
	current bool
}

func (r *retained) may(stream string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.current || r.streams[stream]
}

func (r *retained) set(stream string, has bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if has {
		r.streams[stream] = true
	} else {
		delete(r.streams, stream)
	}
}

func (r *retained) setCurrent(current bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = current
}

// watchRetention starts following P_meta into s.retained, until Close.
func (s *Store) watchRetention(ctx context.Context) error {
	s.retained.streams = map[string]bool{}
	cons, err := s.js.OrderedConsumer(ctx, s.meta, jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.mtBase + ">"}})
	if err != nil {
		return err
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		s.retained.setCurrent(true)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	done := make(chan struct{})
	var once sync.Once
	s.stopWatch = func() {
		once.Do(it.Stop)
		<-done
	}
	go func() {
		defer close(done)
		for {
			msg, err := it.Next()
			if err != nil { // stopped by Close, or failed for good
				s.retained.setCurrent(false)
				return
			}
			name, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(msg.Subject(), s.mtBase))
			var w wireRetention
			if err == nil && json.Unmarshal(msg.Data(), &w) == nil {
				s.retained.set(string(name), w != (wireRetention{}))
			}
			if meta, err := msg.Metadata(); err == nil && meta.NumPending == 0 {
				s.retained.setCurrent(true)
			}
		}
	}()
	return nil
}

func token(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

func (s *Store) streamSubject(stream string) string {
	return s.esBase + token(eventstore.Category(stream)) + "." + token(stream)
}

func (s *Store) idSubject(id string) string { return s.idsBase + token(id) }

func (s *Store) metaSubject(stream string) string { return s.mtBase + token(stream) }

// record is one event in a commit body. Data and Metadata are kept as
// bytes (base64 in JSON) so they read back exactly as written.
type record struct {
	ID       string `json:"i"`
	Type     string `json:"t"`
	Data     []byte `json:"d"`
	Metadata []byte `json:"m,omitempty"`
}

// commit is a decoded commit message.
type commit struct {
	seq     uint64
	stream  string
	first   uint64
	count   uint64
	deleted bool
	time    time.Time
	records []record
}

// next is the version the stream's next event gets.
func (c *commit) next() uint64 { return c.first + c.count }

// current is the stream's last version after c, -1 when deleted. A commit
// with no events that is not a delete replaced an expired last commit, so
// the version before it is still the stream's last.
func (c *commit) current() int64 {
	if c.deleted {
		return -1
	}
	return int64(c.next()) - 1
}

func (c *commit) events() []eventstore.Event {
	out := make([]eventstore.Event, len(c.records))
	for i, r := range c.records {
		out[i] = eventstore.Event{Stream: c.stream, Version: c.first + uint64(i), Position: c.seq<<16 | uint64(i),
			ID: r.ID, Type: r.Type, Data: r.Data, Metadata: r.Metadata, Time: c.time}
	}
	return out
}

func decode(seq uint64, h nats.Header, data []byte, t time.Time, withBody bool) (*commit, error) {
	c := &commit{seq: seq, stream: h.Get(hdrStream), deleted: h.Get(hdrDeleted) != "", time: t}
	var err error
	if c.first, err = strconv.ParseUint(h.Get(hdrFirst), 10, 64); err != nil {
		return nil, fmt.Errorf("event store commit %d: bad %s header: %w", seq, hdrFirst, err)
	}
	if c.count, err = strconv.ParseUint(h.Get(hdrCount), 10, 64); err != nil {
		return nil, fmt.Errorf("event store commit %d: bad %s header: %w", seq, hdrCount, err)
	}
	if withBody && c.count > 0 {
		if err := json.Unmarshal(data, &c.records); err != nil {
			return nil, fmt.Errorf("event store commit %d: %w", seq, err)
		}
		if uint64(len(c.records)) != c.count {
			return nil, fmt.Errorf("event store commit %d: %d events, header says %d", seq, len(c.records), c.count)
		}
	}
	return c, nil
}

// last returns the stream's last commit, nil when it has none.
func (s *Store) last(ctx context.Context, stream string) (*commit, error) {
	m, err := s.evSt.GetLastMsgForSubject(ctx, s.streamSubject(stream))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decode(m.Sequence, m.Header, m.Data, m.Time, false)
}

// scan reads commits matching filter with sequences in [from, to], in
// order, until fn returns false.
func (s *Store) scan(ctx context.Context, filter string, from, to uint64, fn func(*commit) bool) error {
	if from == 0 {
		from = 1
	}
	if from > to {
		return nil
	}
	// Each read is a short-lived ordered consumer. It is deleted when the
	// read ends: left to its inactivity threshold, busy readers (a
	// projection catching up, a rebuild) would pile up consumers until the
	// server refuses new ones. MaxResetAttempts bounds the client's own
	// retries, which would otherwise go on forever when the server
	// refuses.
	cons, err := s.js.OrderedConsumer(ctx, s.events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
		InactiveThreshold: 30 * time.Second, MaxResetAttempts: 3})
	if err != nil {
		return err
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = s.js.DeleteConsumer(dctx, s.events, info.Name)
			cancel()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(fetchSize)
		if err != nil {
			return err
		}
		got := 0
		done := false
		for msg := range batch.Messages() {
			got++
			if done {
				continue
			}
			meta, err := msg.Metadata()
			if err != nil {
				return err
			}
			seq := meta.Sequence.Stream
			if seq > to {
				done = true
				continue
			}
			c, err := decode(seq, msg.Headers(), msg.Data(), meta.Timestamp, true)
			if err != nil {
				return err
			}
			if !fn(c) || seq >= to || meta.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if done || got == 0 {
			return nil
		}
	}
}

// history returns every commit of stream up to and including upTo.
func (s *Store) history(ctx context.Context, stream string, upTo uint64) ([]*commit, error) {
	var out []*commit
	err := s.scan(ctx, s.streamSubject(stream), 1, upTo, func(c *commit) bool {
		out = append(out, c)
		return true
	})
	return out, err
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData) (eventstore.AppendResult, error) {
	events, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(events) > maxEvents {
		return eventstore.AppendResult{}, fmt.Errorf("%w: %d events in one append, at most %d", eventstore.ErrInvalid, len(events), maxEvents)
	}
	claimed, taken, err := s.claim(ctx, stream, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if taken {
		if err := s.release(claimed); err != nil {
			return eventstore.AppendResult{}, err
		}
		return s.retried(ctx, stream, expected, events)
	}
	r, err := s.commit(ctx, stream, expected, events)
	if err != nil {
		if rerr := s.release(claimed); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return r, err
	}
	s.scavengeAfter(ctx, stream)
	return r, nil
}

// scavengeAfter scavenges stream after an append committed to it, when it
// has a retention. Its errors are dropped: the append is committed, reads
// filter expired events anyway, and the next scavenge picks up the work.
func (s *Store) scavengeAfter(ctx context.Context, stream string) {
	if !s.retained.may(stream) {
		return
	}
	// The retention itself is read from the server: a stale one could be
	// stricter than the one set since, and delete events it keeps.
	if r, err := s.GetRetention(ctx, stream); err == nil && !r.IsZero() {
		_ = s.scavenge(ctx, stream, r, scavengeBudget)
	}
}

// claim publishes one claim per event ID, asynchronously in chunks so a
// large append neither waits one round trip per event nor overruns the
// client's limit of pending acknowledgements. taken reports that some ID
// was claimed before; claimed lists the sequences of the claims this call
// made, which the caller releases when the append does not commit.
func (s *Store) claim(ctx context.Context, stream string, events []eventstore.EventData) (claimed []uint64, taken bool, err error) {
	for len(events) > 0 {
		chunk := events[:min(len(events), claimChunk)]
		events = events[len(chunk):]
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		var firstErr error
		for _, e := range chunk {
			f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.idSubject(e.ID), Data: []byte(stream)},
				jetstream.WithExpectStream(s.ids), jetstream.WithExpectLastSequencePerSubject(0))
			if err != nil {
				firstErr = fmt.Errorf("claiming event id %q: %w", e.ID, err)
				break
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				claimed = append(claimed, ack.Sequence)
			case err := <-f.Err():
				if isWrongLast(err) {
					taken = true
				} else if firstErr == nil {
					firstErr = fmt.Errorf("claiming event id on %s: %w", f.Msg().Subject, err)
				}
			case <-ctx.Done():
				if firstErr == nil {
					firstErr = ctx.Err()
				}
			}
		}
		if firstErr != nil {
			return nil, false, errors.Join(firstErr, s.release(claimed))
		}
		if taken {
			return claimed, true, nil
		}
	}
	return claimed, false, nil
}

// release deletes claims made by an append that did not commit. It does
// not use the append's context, so a cancelled append still cleans up.
func (s *Store) release(claimed []uint64) error {
	if len(claimed) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := s.idSt
	var errs []error
	for _, seq := range claimed {
		if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			errs = append(errs, fmt.Errorf("releasing event id claim %d: %w", seq, err))
		}
	}
	return errors.Join(errs...)
}

// retried handles an append whose IDs were seen before: it is a retry
// when they are, in order, consecutive events of stream.
func (s *Store) retried(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData) (eventstore.AppendResult, error) {
	invalid := fmt.Errorf("%w: event ids already used, and not by this exact sequence of events in stream %q", eventstore.ErrInvalid, stream)
	last, err := s.last(ctx, stream)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if last == nil {
		return s.takeOver(ctx, stream, expected, events, invalid)
	}
	hist, err := s.history(ctx, stream, last.seq)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	var all []eventstore.Event
	for _, c := range hist {
		all = append(all, c.events()...)
	}
	k := slices.IndexFunc(all, func(e eventstore.Event) bool { return e.ID == events[0].ID })
	if k < 0 {
		return s.takeOver(ctx, stream, expected, events, invalid)
	}
	if k+len(events) > len(all) {
		return eventstore.AppendResult{}, invalid
	}
	for j, e := range events {
		if all[k+j].ID != e.ID {
			return eventstore.AppendResult{}, invalid
		}
	}
	end := all[k+len(events)-1]
	return eventstore.AppendResult{FirstVersion: all[k].Version, LastVersion: end.Version, Position: end.Position}, nil
}

// takeOver handles IDs that are claimed but were never committed: when
// every claim names this stream and is older than claimGrace, its append
// died between claiming and committing (a crash, a lost connection), so
// the claims are deleted and the append runs again. A retry of that append
// must succeed: refusing it would lose the events it carries.
func (s *Store) takeOver(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData, invalid error) (eventstore.AppendResult, error) {
	now := time.Now()
	var stale []uint64
	for _, e := range events {
		m, err := s.idSt.GetLastMsgForSubject(ctx, s.idSubject(e.ID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // not claimed (any more)
		}
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if string(m.Data) != stream || now.Sub(m.Time) < s.claimGrace {
			return eventstore.AppendResult{}, invalid
		}
		stale = append(stale, m.Sequence)
	}
	// Deleting by sequence removes only the stale claims: a fresh claim
	// made meanwhile by another retry has a new sequence and stays.
	if err := s.release(stale); err != nil {
		return eventstore.AppendResult{}, err
	}
	claimed, taken, err := s.claim(ctx, stream, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if taken {
		return eventstore.AppendResult{}, errors.Join(invalid, s.release(claimed))
	}
	r, err := s.commit(ctx, stream, expected, events)
	if err != nil {
		return r, errors.Join(err, s.release(claimed))
	}
	s.scavengeAfter(ctx, stream)
	return r, nil
}

// maxTips bounds the streams whose last commit is cached.
const maxTips = 1 << 14

// tips caches the last commit (without its events) of the streams this
// store appended to, so that an append need not look it up: it publishes
// with the cached sequence as the expected last subject sequence, which
// the server checks atomically. A stale entry (another writer, another
// process) makes that publish fail, or the version check fail, and the
// append then reads the last commit from the server and tries again, so
// every outcome is decided on the server's state.
type tips struct {
	mu sync.Mutex
	m  map[string]commit
}

// get returns the cached last commit of stream (nil when it has none)
// and whether there is an entry.
func (t *tips) get(stream string) (*commit, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.m[stream]
	if !ok || c.seq == 0 {
		return nil, ok
	}
	return &c, true
}

// set caches c (nil: no commits) as stream's last commit.
func (t *tips) set(stream string, c *commit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]commit{}
	}
	if _, ok := t.m[stream]; !ok && len(t.m) >= maxTips {
		for k := range t.m { // evict one entry, any one
			delete(t.m, k)
			break
		}
	}
	var e commit
	if c != nil {
		e = commit{seq: c.seq, stream: c.stream, first: c.first, count: c.count, deleted: c.deleted, time: c.time}
	}
	t.m[stream] = e
}

func (t *tips) forget(stream string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, stream)
}

// tip returns stream's last commit from the cache, else from the server
// (caching it). cached reports that it came from the cache.
func (s *Store) tip(ctx context.Context, stream string) (last *commit, cached bool, err error) {
	if c, ok := s.tips.get(stream); ok {
		return c, true, nil
	}
	if last, err = s.last(ctx, stream); err != nil {
		return nil, false, err
	}
	s.tips.set(stream, last)
	return last, false, nil
}

// commit checks the expected version and publishes the append, re-checking
// when another writer got there first.
func (s *Store) commit(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData) (eventstore.AppendResult, error) {
	recs := make([]record, len(events))
	for i, e := range events {
		recs[i] = record{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata}
	}
	body, err := json.Marshal(recs)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	msgID := fmt.Sprintf("%s/%s/%d", stream, events[0].ID, len(events))
	for {
		last, cached, err := s.tip(ctx, stream)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		current, next, lastSeq := int64(-1), uint64(0), uint64(0)
		if last != nil {
			current, next, lastSeq = last.current(), last.next(), last.seq
		}
		if err := eventstore.Check(stream, expected, current); err != nil {
			if cached {
				s.tips.forget(stream) // refuse only on the server's state
				continue
			}
			return eventstore.AppendResult{}, err
		}
		msg := &nats.Msg{Subject: s.streamSubject(stream), Header: nats.Header{}, Data: body}
		msg.Header.Set(hdrStream, stream)
		msg.Header.Set(hdrFirst, strconv.FormatUint(next, 10))
		msg.Header.Set(hdrCount, strconv.Itoa(len(events)))
		// The same append sent again (its acknowledgement was lost, so
		// its claims were released and the caller retried) is stored
		// once: JetStream's duplicate window recognises the id.
		msg.Header.Set(nats.MsgIdHdr, msgID)
		ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(s.events), jetstream.WithExpectLastSequencePerSubject(lastSeq))
		if isWrongLast(err) {
			s.tips.forget(stream) // a racing writer committed: check again
			continue
		}
		if err != nil {
			s.tips.forget(stream) // it may have been stored after all
			return eventstore.AppendResult{}, fmt.Errorf("appending to %q: %w", stream, err)
		}
		if !ack.Duplicate {
			s.tips.set(stream, &commit{seq: ack.Sequence, stream: stream, first: next, count: uint64(len(events))})
		} else {
			s.tips.forget(stream) // the earlier commit need not be the last one
			m, err := s.evSt.GetMsg(ctx, ack.Sequence)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				// Scavenged: its events and their ids are gone, so these
				// are new events, sent under an id of their own.
				msgID = fmt.Sprintf("%s/%s/%d/%d", stream, events[0].ID, len(events), ack.Sequence)
				continue
			}
			if err != nil {
				return eventstore.AppendResult{}, fmt.Errorf("appending to %q: reading the earlier commit: %w", stream, err)
			}
			c, err := decode(m.Sequence, m.Header, m.Data, m.Time, false)
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			next = c.first
		}
		return eventstore.AppendResult{FirstVersion: next, LastVersion: next + uint64(len(events)) - 1,
			Position: ack.Sequence<<16 | uint64(len(events)-1)}, nil
	}
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Delete implements eventstore.Store.
func (s *Store) Delete(ctx context.Context, stream string) error {
	if !eventstore.ValidStreamName(stream) {
		return fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	for {
		last, err := s.last(ctx, stream)
		if err != nil {
			return err
		}
		if last == nil {
			return fmt.Errorf("%w: %q", eventstore.ErrStreamNotFound, stream)
		}
		if last.deleted {
			return nil
		}
		msg := &nats.Msg{Subject: s.streamSubject(stream), Header: nats.Header{}}
		msg.Header.Set(hdrStream, stream)
		msg.Header.Set(hdrFirst, strconv.FormatUint(last.next(), 10))
		msg.Header.Set(hdrCount, "0")
		msg.Header.Set(hdrDeleted, "true")
		_, err = s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(s.events), jetstream.WithExpectLastSequencePerSubject(last.seq))
		s.tips.forget(stream)
		if isWrongLast(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("deleting %q: %w", stream, err)
		}
		return nil
	}
}

// ReadStream implements eventstore.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, o eventstore.ReadOptions) ([]eventstore.Event, error) {
	if !eventstore.ValidStreamName(stream) {
		return nil, fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	last, err := s.last(ctx, stream)
	if err != nil {
		return nil, err
	}
	if last == nil {
		return nil, fmt.Errorf("%w: %q", eventstore.ErrStreamNotFound, stream)
	}
	if last.deleted {
		return nil, fmt.Errorf("%w: %q", eventstore.ErrStreamDeleted, stream)
	}
	keep, err := s.keeper(ctx, stream, last)
	if err != nil {
		return nil, err
	}
	hist, err := s.history(ctx, stream, last.seq)
	if err != nil {
		return nil, err
	}
	var all []eventstore.Event
	for _, c := range hist {
		if c.deleted {
			all = all[:0]
			continue
		}
		for _, e := range c.events() {
			if keep(e) {
				all = append(all, e)
			}
		}
	}
	var out []eventstore.Event
	if !o.Backward {
		for _, e := range all {
			if e.Version >= o.From {
				out = append(out, e)
			}
			if o.Limit > 0 && len(out) == o.Limit {
				break
			}
		}
		return out, nil
	}
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Version <= o.From || o.From == math.MaxUint64 {
			out = append(out, all[i])
		}
		if o.Limit > 0 && len(out) == o.Limit {
			break
		}
	}
	return out, nil
}

// ReadAll implements eventstore.Store.
func (s *Store) ReadAll(ctx context.Context, o eventstore.ReadAllOptions) ([]eventstore.Event, error) {
	info, err := s.evSt.Info(ctx)
	if err != nil {
		return nil, err
	}
	filter := s.esBase + ">"
	if len(o.Categories) == 1 {
		filter = s.esBase + token(o.Categories[0]) + ".>"
	}
	var out []eventstore.Event
	err = s.scan(ctx, filter, o.From>>16, info.State.LastSeq, func(c *commit) bool {
		if c.deleted || len(o.Categories) > 1 && !slices.Contains(o.Categories, eventstore.Category(c.stream)) {
			return true
		}
		for _, e := range c.events() {
			if e.Position < o.From || len(o.Types) > 0 && !slices.Contains(o.Types, e.Type) {
				continue
			}
			out = append(out, e)
			if o.Limit > 0 && len(out) == o.Limit {
				return false
			}
		}
		return true
	})
	return out, err
}

// follow delivers the commits matching filter from sequence from on, then
// each new one live, through an ordered consumer (which recreates itself
// at the next sequence when it loses its place, so none is skipped or
// repeated), until ctx ends or fn fails.
func (s *Store) follow(ctx context.Context, filter string, from uint64, fn func(*commit) error) error {
	cons, err := s.js.OrderedConsumer(ctx, s.events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(from, 1)})
	if err != nil {
		return ctxErr(ctx, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return ctxErr(ctx, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return ctxErr(ctx, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		c, err := decode(meta.Sequence.Stream, msg.Headers(), msg.Data(), meta.Timestamp, true)
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// FollowAll implements eventstore.Follower: one ordered consumer reads the
// log from o.From and simply continues live.
func (s *Store) FollowAll(ctx context.Context, o eventstore.ReadAllOptions, fn func(eventstore.Event) error) error {
	filter := s.esBase + ">"
	if len(o.Categories) == 1 {
		filter = s.esBase + token(o.Categories[0]) + ".>"
	}
	return s.follow(ctx, filter, o.From>>16, func(c *commit) error {
		if c.deleted || len(o.Categories) > 1 && !slices.Contains(o.Categories, eventstore.Category(c.stream)) {
			return nil
		}
		for _, e := range c.events() {
			if e.Position < o.From || len(o.Types) > 0 && !slices.Contains(o.Types, e.Type) {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// FollowStream implements eventstore.StreamFollower: it reads the stream's
// events up to its last commit as ReadStream does, then follows its subject
// live from the next sequence; a tombstone ends it with ErrStreamDeleted.
func (s *Store) FollowStream(ctx context.Context, stream string, from uint64, fn func(eventstore.Event) error) error {
	if !eventstore.ValidStreamName(stream) {
		return fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	last, err := s.last(ctx, stream)
	if err != nil {
		return ctxErr(ctx, err)
	}
	next := from
	keep := func(eventstore.Event) bool { return true }
	deliver := func(c *commit) error {
		if c.deleted {
			return fmt.Errorf("%w: %q", eventstore.ErrStreamDeleted, stream)
		}
		for _, e := range c.events() {
			if e.Version < next || !keep(e) {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
			next = e.Version + 1
		}
		return nil
	}
	start := uint64(1)
	if last != nil {
		if last.deleted {
			return fmt.Errorf("%w: %q", eventstore.ErrStreamDeleted, stream)
		}
		// The events read to catch up are those ReadStream would return;
		// the live ones are new, so within retention.
		if keep, err = s.keeper(ctx, stream, last); err != nil {
			return ctxErr(ctx, err)
		}
		hist, err := s.history(ctx, stream, last.seq)
		if err != nil {
			return ctxErr(ctx, err)
		}
		// Only the commits after the last tombstone are the stream now.
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].deleted {
				hist = hist[i+1:]
				break
			}
		}
		for _, c := range hist {
			if err := deliver(c); err != nil {
				return err
			}
		}
		start = last.seq + 1
		keep = func(eventstore.Event) bool { return true }
	}
	return s.follow(ctx, s.streamSubject(stream), start, deliver)
}

// keeper returns the test of whether an event of stream, whose last commit
// is last, is within the stream's retention now.
func (s *Store) keeper(ctx context.Context, stream string, last *commit) (func(eventstore.Event) bool, error) {
	r, err := s.GetRetention(ctx, stream)
	if err != nil {
		return nil, err
	}
	minVersion, cutoff := r.MinVersion(int64(last.next())-1), r.Cutoff(s.now())
	return func(e eventstore.Event) bool { return e.Version >= minVersion && !e.Time.Before(cutoff) }, nil
}

// wireRetention is a retention as stored in P_meta.
type wireRetention struct {
	MaxAge   int64  `json:"max_age_ns,omitempty"` // nanoseconds, so it reads back exactly
	MaxCount uint64 `json:"max_count,omitempty"`
}

// SetRetention implements eventstore.Store.
func (s *Store) SetRetention(ctx context.Context, stream string, r eventstore.Retention) error {
	if !eventstore.ValidStreamName(stream) {
		return fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	if err := r.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(wireRetention{MaxAge: int64(r.MaxAge), MaxCount: r.MaxCount})
	if err != nil {
		return err
	}
	if _, err := s.js.Publish(ctx, s.metaSubject(stream), body, jetstream.WithExpectStream(s.meta)); err != nil {
		return fmt.Errorf("setting the retention of %q: %w", stream, err)
	}
	s.retained.set(stream, !r.IsZero()) // before the follow brings it

	if err := s.scavenge(ctx, stream, r, 0); err != nil {
		return fmt.Errorf("scavenging %q: %w", stream, err)
	}
	return nil
}

// GetRetention implements eventstore.Store.
func (s *Store) GetRetention(ctx context.Context, stream string) (eventstore.Retention, error) {
	if !eventstore.ValidStreamName(stream) {
		return eventstore.Retention{}, fmt.Errorf("%w: stream name %q", eventstore.ErrInvalid, stream)
	}
	m, err := s.mtSt.GetLastMsgForSubject(ctx, s.metaSubject(stream))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return eventstore.Retention{}, nil
	}
	if err != nil {
		return eventstore.Retention{}, fmt.Errorf("reading the retention of %q: %w", stream, err)
	}
	var w wireRetention
	if err := json.Unmarshal(m.Data, &w); err != nil {
		return eventstore.Retention{}, fmt.Errorf("reading the retention of %q: %w", stream, err)
	}
	return eventstore.Retention{MaxAge: time.Duration(w.MaxAge), MaxCount: w.MaxCount}, nil
}

// scavenge deletes stream's commits all of whose events are outside r,
// oldest first, stopping at the first commit that keeps an event (so an
// event is never deleted before an older one) or once it has deleted
// commits holding budget events (0: no bound). Tombstones go too once
// everything before them has gone. The last commit is replaced, not
// deleted, since the stream's next version is read from it.
func (s *Store) scavenge(ctx context.Context, stream string, r eventstore.Retention, budget int) error {
	if r.IsZero() {
		return nil
	}
	last, err := s.last(ctx, stream)
	if err != nil || last == nil {
		return err
	}
	minVersion, cutoff := r.MinVersion(int64(last.next())-1), r.Cutoff(s.now())
	expired := func(c *commit) bool {
		return c.count == 0 || c.next() <= minVersion || c.time.Before(cutoff)
	}
	subj := s.streamSubject(stream)
	for seq, n := uint64(1), 0; budget == 0 || n < budget; {
		m, err := s.evSt.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		c, err := decode(m.Sequence, m.Header, m.Data, m.Time, true)
		if err != nil {
			return err
		}
		if !expired(c) {
			return nil
		}
		if c.seq >= last.seq {
			if c.seq == last.seq && c.count > 0 {
				return s.replaceLast(ctx, c)
			}
			return nil
		}
		if err := s.drop(ctx, c); err != nil {
			return err
		}
		seq, n = c.seq+1, n+int(c.count)+1
	}
	return nil
}

// replaceLast swaps a stream's expired last commit for a commit with no
// events at the same next version, then deletes it. The swap is
// conditional on last still being the last commit: when an append got
// there first, last is no longer last and a later scavenge deletes it.
func (s *Store) replaceLast(ctx context.Context, last *commit) error {
	msg := &nats.Msg{Subject: s.streamSubject(last.stream), Header: nats.Header{}}
	msg.Header.Set(hdrStream, last.stream)
	msg.Header.Set(hdrFirst, strconv.FormatUint(last.next(), 10))
	msg.Header.Set(hdrCount, "0")
	_, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(s.events), jetstream.WithExpectLastSequencePerSubject(last.seq))
	if isWrongLast(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.drop(ctx, last)
}

// drop deletes a scavenged commit and then its events' claims, so their
// IDs are free again, as they are once deleted in any store. A claim is
// deleted only while it still names the stream.
func (s *Store) drop(ctx context.Context, c *commit) error {
	if err := s.evSt.DeleteMsg(ctx, c.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	for _, r := range c.records {
		m, err := s.idSt.GetLastMsgForSubject(ctx, s.idSubject(r.ID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if string(m.Data) != c.stream {
			continue
		}
		if err := s.idSt.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return err
		}
	}
	return nil
}
