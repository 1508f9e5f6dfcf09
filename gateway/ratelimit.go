package gateway

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
	"github.com/junctionhq/junction/internal/problem"
)

// BucketStore keeps rate-limit buckets shared by every node (scope:
// global).
type BucketStore interface {
	// Take takes one token from the bucket of key (rate tokens per second,
	// at most burst), reporting whether there was one, how many are left,
	// and when the next one comes.
	Take(ctx context.Context, key string, rate float64, burst int) (ok bool, remaining int, retryAfter time.Duration, err error)
}

// Bounds of the local buckets of one rate limit.
const (
	// maxLocalBuckets caps the keys one rate limit remembers; beyond it
	// the least recently used bucket is dropped (its client starts again
	// with a full bucket, the price of bounded memory under a flood of
	// distinct keys).
	maxLocalBuckets = 100_000
	// bucketIdle is how long a bucket stays unused before it may be
	// dropped; it is only dropped once it has refilled, so dropping it
	// changes nothing.
	bucketIdle = time.Minute
	// maxKeyLen bounds a key as given; longer keys are replaced by their
	// SHA-256, so a huge header value cannot inflate memory or KV keys.
	maxKeyLen = 256
	// storeErrorLogEvery spaces the warnings about a failing global store.
	storeErrorLogEvery = time.Minute
	// storeTimeout bounds one call to the global store, so a stalled
	// JetStream delays requests by no more than this before they are let
	// through.
	storeTimeout = time.Second
)

// newRateLimit limits requests per key.
func newRateLimit(cfg *config.GatewayRateLimit, global BucketStore) (middleware, error) {
	rl, err := newRateLimiter(cfg, global, time.Now)
	if err != nil {
		return nil, err
	}
	return rl.middleware, nil
}

// rateLimiter is one route's rate limit: a token bucket per key, of rps
// tokens per second holding at most burst.
type rateLimiter struct {
	key    *expr.Program // nil: the client's IP
	rps    float64
	burst  int
	global BucketStore // nil: local buckets
	// prefix sets this limit's keys apart in the shared store, so limits
	// with another key expression, rate or burst never share a bucket.
	prefix string
	local  *localBuckets
	now    func() time.Time
	log    *slog.Logger
	// lastLog is when a store failure was last logged (unix nanoseconds).
	lastLog atomic.Int64
}

func newRateLimiter(cfg *config.GatewayRateLimit, global BucketStore, now func() time.Time) (*rateLimiter, error) {
	if cfg.RPS <= 0 || math.IsInf(cfg.RPS, 0) || math.IsNaN(cfg.RPS) {
		return nil, fmt.Errorf("rate_limit.rps must be positive, got %v", cfg.RPS)
	}
	burst := cfg.Burst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(cfg.RPS)))
	}
	rl := &rateLimiter{rps: cfg.RPS, burst: burst, now: now, log: slog.Default()}
	if cfg.Key != "" && cfg.Key != "request.ip" {
		p, err := expr.Compile(cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("rate_limit.key: %w", err)
		}
		rl.key = p
	}
	switch cfg.Scope {
	case "", "local":
		rl.local = newLocalBuckets(maxLocalBuckets)
	case "global":
		if global == nil {
			return nil, errors.New("rate_limit.scope global needs the shared bucket store, which this node does not have")
		}
		rl.global = global
		sum := sha256.Sum256([]byte(cfg.Key + "\x00" + strconv.FormatFloat(cfg.RPS, 'g', -1, 64) + "\x00" + strconv.Itoa(burst)))
		rl.prefix = hex.EncodeToString(sum[:6]) + ":"
	default:
		return nil, fmt.Errorf("rate_limit.scope must be local or global, got %q", cfg.Scope)
	}
	return rl, nil
}

// keyOf is the bucket key of r: the key expression rendered as text, or
// the client's IP when there is none or it fails (a missing header or
// claim), so a request can never escape limiting by breaking its key.
func (rl *rateLimiter) keyOf(r *http.Request) string {
	k := ""
	if rl.key == nil {
		k = clientIP(r)
	} else {
		s, err := rl.key.EvalString(map[string]any{"request": requestVars(r, params(r))})
		if err != nil {
			s = clientIP(r)
		}
		k = s
	}
	if len(k) > maxKeyLen {
		sum := sha256.Sum256([]byte(k))
		k = "sha256:" + hex.EncodeToString(sum[:])
	}
	return k
}

// take takes a token from key's bucket.
func (rl *rateLimiter) take(ctx context.Context, key string) (ok bool, remaining int, next time.Duration) {
	if rl.local != nil {
		return rl.local.take(key, rl.rps, rl.burst, rl.now())
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	ok, remaining, next, err := rl.global.Take(sctx, rl.prefix+key, rl.rps, rl.burst)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return true, rl.burst, 0 // the client is gone: nothing to limit or log
		}
		// Fail open: the shared store is an availability dependency the
		// routes behind it do not otherwise have, and a rate limit
		// protects backends from overload, not data from access (that is
		// authentication's job). Refusing every request while JetStream
		// is unreachable would turn a degraded limiter into an outage.
		// The failure is logged at most once a minute, so a long outage
		// does not flood the log at request rate.
		rl.logStoreError(err)
		return true, rl.burst, 0
	}
	return ok, remaining, next
}

func (rl *rateLimiter) logStoreError(err error) {
	now := rl.now().UnixNano()
	last := rl.lastLog.Load()
	if last != 0 && now-last < int64(storeErrorLogEvery) {
		return
	}
	if rl.lastLog.CompareAndSwap(last, now) {
		rl.log.Warn("gateway: global rate-limit store failed; allowing requests", "err", err)
	}
}

// middleware refuses requests beyond the limit with 429 and tells every
// response of the route its state in the RateLimit-Limit,
// RateLimit-Remaining and RateLimit-Reset fields of
// draft-ietf-httpapi-ratelimit-headers up to -06 (the three-field form;
// later drafts merged them into RateLimit and RateLimit-Policy). Reset is
// the whole seconds until the bucket gains its next token (0 when full):
// with a token bucket the quota comes back a token at a time, so the
// next token is when a refused client may succeed.
func (rl *rateLimiter) middleware(next http.Handler) http.Handler {
	limit := strconv.Itoa(rl.burst)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, remaining, wait := rl.take(r.Context(), rl.keyOf(r))
		h := w.Header()
		h.Set("RateLimit-Limit", limit)
		h.Set("RateLimit-Remaining", strconv.Itoa(max(0, remaining)))
		h.Set("RateLimit-Reset", strconv.FormatInt(ceilSeconds(wait), 10))
		if !ok {
			p := problem.New(problem.CodeTooManyRequests, "rate limit of %g requests per second exceeded", rl.rps)
			p.RetryAfter = time.Duration(max(1, ceilSeconds(wait))) * time.Second
			problem.Write(w, r, p)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ceilSeconds rounds d up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// untilNextToken is how long a bucket holding tokens (a fraction
// included) waits for its next whole token: 0 when it is full.
func untilNextToken(tokens, rps float64, burst int) time.Duration {
	if tokens >= float64(burst) {
		return 0
	}
	missing := 1 - (tokens - math.Floor(tokens))
	return time.Duration(math.Ceil(missing / rps * float64(time.Second)))
}

// localBuckets are one node's buckets of one rate limit, in shards so
// that concurrent requests rarely wait for each other.
type localBuckets struct {
	seed   maphash.Seed
	shards [16]bucketShard
}

// bucketShard is a map of buckets with their use order: the list runs
// from the most to the least recently used, so idle buckets are found
// from its back, without scanning the live ones.
type bucketShard struct {
	mu    sync.Mutex
	m     map[string]*list.Element // of *localBucket
	lru   list.List
	limit int
}

type localBucket struct {
	key      string
	lim      *rate.Limiter
	lastUsed time.Time
}

func newLocalBuckets(limit int) *localBuckets {
	lb := &localBuckets{seed: maphash.MakeSeed()}
	per := max(1, limit/len(lb.shards))
	for i := range lb.shards {
		lb.shards[i].m = map[string]*list.Element{}
		lb.shards[i].limit = per
	}
	return lb
}

// take takes a token from key's bucket at now.
func (lb *localBuckets) take(key string, rps float64, burst int, now time.Time) (ok bool, remaining int, next time.Duration) {
	s := lb.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now, idleAfter(rps, burst))
	var b *localBucket
	if e, found := s.m[key]; found {
		b = e.Value.(*localBucket)
		s.lru.MoveToFront(e)
	} else {
		if len(s.m) >= s.limit {
			s.remove(s.lru.Back())
		}
		b = &localBucket{key: key, lim: rate.NewLimiter(rate.Limit(rps), burst)}
		s.m[key] = s.lru.PushFront(b)
	}
	b.lastUsed = now
	ok = b.lim.AllowN(now, 1)
	tokens := b.lim.TokensAt(now)
	return ok, int(math.Floor(max(0, tokens))), untilNextToken(tokens, rps, burst)
}

func (lb *localBuckets) shardOf(key string) *bucketShard {
	return &lb.shards[maphash.String(lb.seed, key)%uint64(len(lb.shards))]
}

// idleAfter is how long a bucket must be unused before it is dropped: a
// minute, or longer if it needs longer to refill.
func idleAfter(rps float64, burst int) time.Duration {
	refill := time.Duration(math.Ceil(float64(burst) / rps * float64(time.Second)))
	return max(bucketIdle, refill)
}

// sweep drops the buckets unused for idle, which have refilled: dropping
// them changes nothing. It stops at the first bucket in use, so its cost
// is the number of buckets dropped.
func (s *bucketShard) sweep(now time.Time, idle time.Duration) {
	for e := s.lru.Back(); e != nil; e = s.lru.Back() {
		if now.Sub(e.Value.(*localBucket).lastUsed) < idle {
			return
		}
		s.remove(e)
	}
}

func (s *bucketShard) remove(e *list.Element) {
	if e == nil {
		return
	}
	delete(s.m, e.Value.(*localBucket).key)
	s.lru.Remove(e)
}

// len is the number of buckets kept (for tests).
func (lb *localBuckets) len() int {
	n := 0
	for i := range lb.shards {
		lb.shards[i].mu.Lock()
		n += len(lb.shards[i].m)
		lb.shards[i].mu.Unlock()
	}
	return n
}
