package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

func init() {
	processors["dedupe"] = func(ctx context.Context, env *Env, cfg *config.PipelineProcess) (Processor, error) {
		return newDeduper(ctx, env, cfg.Dedupe)
	}
}

// deduper drops a record whose key was first seen less than Window ago
// (processing time). The keys live in the JetStream KV bucket
// <prefix>_pipeline_dedupe, so they survive restarts and resumed runs:
// each entry's key is the pipeline, a hash of the key expression (so
// that two dedupes of a pipeline on different keys do not meet) and a
// hash of the record's key; its value is when the key was first seen. A
// key seen again after the window counts as new, and its time is reset;
// the bucket's age limit (the longest window of any dedupe, only ever
// raised) removes old keys.
//
// A key is recorded in the bucket only once the batch its record went
// out in is written (Prepare, then the runner's commit), so that a run
// stopped in between and resumed lets the record through again rather
// than dropping it as a duplicate of itself: at least once. Until then
// the run keeps the key in memory, so that its own duplicates are
// dropped at once.
type deduper struct {
	key    *expr.Program
	window time.Duration
	kv     jetstream.KeyValue
	prefix string // pipeline and expression hash, with a trailing dot
	now    func() time.Time

	mu sync.Mutex
	// pending are the keys let through and not yet recorded in the
	// bucket, with when they were seen; fresh, those of them not yet
	// handed to a Prepare.
	pending map[string]time.Time
	fresh   []seenKey
}

type seenKey struct {
	key string
	at  time.Time
}

const dedupeBucketSuffix = "_pipeline_dedupe"

func newDeduper(ctx context.Context, env *Env, d *config.DedupeProcess) (*deduper, error) {
	if d == nil || strings.TrimSpace(d.Key) == "" {
		return nil, fmt.Errorf("dedupe: needs key")
	}
	if d.Window <= 0 {
		return nil, fmt.Errorf("dedupe: needs a positive window")
	}
	if env.JS == nil {
		return nil, fmt.Errorf("dedupe: needs JetStream")
	}
	key, err := expr.Compile(d.Key)
	if err != nil {
		return nil, fmt.Errorf("dedupe: key: %w", err)
	}
	kv, err := dedupeBucket(ctx, env.JS, env.Prefix+dedupeBucketSuffix, d.Window.D())
	if err != nil {
		return nil, fmt.Errorf("dedupe: %w", err)
	}
	pipeline := env.Pipeline
	if pipeline == "" {
		pipeline = "_"
	}
	h := sha256.Sum256([]byte(d.Key))
	return &deduper{key: key, window: d.Window.D(), kv: kv, prefix: pipeline + "." + hex.EncodeToString(h[:6]) + ".", now: time.Now,
		pending: map[string]time.Time{}}, nil
}

// dedupeBucket opens the bucket, creating it or raising its age limit
// to window (never lowering it: other pipelines may need more).
func dedupeBucket(ctx context.Context, js jetstream.JetStream, bucket string, window time.Duration) (jetstream.KeyValue, error) {
	cfg := jetstream.KeyValueConfig{Bucket: bucket, History: 1, TTL: window,
		Description: "Junction pipelines: keys seen by dedupe processors, with when they were first seen"}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if ttl := st.TTL(); ttl != 0 && ttl < window {
		if kv, err = js.UpdateKeyValue(ctx, cfg); err != nil {
			return nil, fmt.Errorf("bucket %s: raising its age limit to %s: %w", bucket, window, err)
		}
	}
	return kv, nil
}

func (d *deduper) Process(ctx context.Context, r *Record) ([]*Record, error) {
	k, err := d.key.EvalString(map[string]any{"row": r.vars()})
	if err != nil {
		return nil, fmt.Errorf("%w: dedupe: key: %v", ErrRecord, err)
	}
	h := sha256.Sum256([]byte(k))
	key := d.prefix + hex.EncodeToString(h[:16])
	now := d.now()
	d.mu.Lock()
	at, ok := d.pending[key]
	d.mu.Unlock()
	if ok && now.Sub(at) < d.window {
		return nil, nil
	}
	if !ok {
		dup, err := d.recorded(ctx, key, now)
		if err != nil {
			return nil, fmt.Errorf("dedupe: %w", err)
		}
		if dup {
			return nil, nil
		}
	}
	d.mu.Lock()
	d.pending[key] = now
	d.fresh = append(d.fresh, seenKey{key, now})
	d.mu.Unlock()
	return []*Record{r}, nil
}

// recorded says whether the bucket holds key as seen within the window
// before now.
func (d *deduper) recorded(ctx context.Context, key string, now time.Time) (bool, error) {
	e, err := d.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	first, perr := strconv.ParseInt(string(e.Value()), 10, 64)
	return perr == nil && now.Sub(time.Unix(0, first)) < d.window, nil
}

// Prepare hands over the keys let through since the last batch: they
// are recorded once that batch is written.
func (d *deduper) Prepare() func(context.Context) error {
	d.mu.Lock()
	keys := d.fresh
	d.fresh = nil
	d.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	return func(ctx context.Context) error {
		for _, k := range keys {
			if err := d.record(ctx, k.key, k.at); err != nil {
				return fmt.Errorf("dedupe: %w", err)
			}
		}
		d.mu.Lock()
		for _, k := range keys {
			// A key seen again since (after its window) stays, for
			// its own batch.
			if at, ok := d.pending[k.key]; ok && at.Equal(k.at) {
				delete(d.pending, k.key)
			}
		}
		d.mu.Unlock()
		return nil
	}
}

// record records key as first seen at now unless the bucket holds it as
// seen within the window before (another run recorded it meanwhile).
// The check and the write are one step (create, or update at the
// revision read).
func (d *deduper) record(ctx context.Context, key string, now time.Time) error {
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return fmt.Errorf("key %s: changed by another run at each of %d attempts", key, attempt)
		}
		val := []byte(strconv.FormatInt(now.UnixNano(), 10))
		_, err := d.kv.Create(ctx, key, val)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		e, err := d.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired in between: create it again
		}
		if err != nil {
			return err
		}
		first, perr := strconv.ParseInt(string(e.Value()), 10, 64)
		if perr == nil && now.Sub(time.Unix(0, first)) < d.window {
			return nil
		}
		// Seen longer ago than the window: a new first sighting.
		_, err = d.kv.Update(ctx, key, val, e.Revision())
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
		// Another run recorded it meanwhile: look again.
	}
}
