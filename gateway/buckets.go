package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// casAttempts bounds the compare-and-swap rounds of one Take.
const casAttempts = 8

// maxKVKeyLen bounds an encoded key; longer ones are hashed.
const maxKVKeyLen = 255

// kvBuckets is a BucketStore in a JetStream key-value bucket, shared by
// every node that opens the same bucket.
//
// Each key holds one value, the generic cell rate algorithm's theoretical
// arrival time (TAT, unix nanoseconds as decimal text): the instant the
// bucket would be full again if nothing more were taken. A request at now
// takes a token when max(TAT, now) + 1/rate - burst/rate <= now, and then
// moves TAT forward by 1/rate. That one number is the whole token bucket,
// so it updates with a single compare-and-swap: Create for a new key,
// Update with the revision read for an existing one, read again and
// retried on a conflict. A refused request writes nothing.
//
// Nodes compare TATs with their own clocks, so clock skew between nodes
// shifts the limit by that skew; NTP-synchronized clocks keep it small.
type kvBuckets struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// NewKVBuckets keeps global rate-limit buckets in kv.
//
// The node creates the bucket (it is only used here) with History 1 and
// a TTL (MaxAge) so that idle keys expire: a key is rewritten on every
// request it admits, and one unused for the TTL has refilled as long as
// the TTL is at least the longest refill time of any global limit
// (burst/rps), so its expiry changes nothing. An hour is ample for
// ordinary limits; a limit refilling more slowly than the TTL is merely
// more lenient after a quiet spell.
func NewKVBuckets(kv jetstream.KeyValue) BucketStore {
	return &kvBuckets{kv: kv, now: time.Now}
}

// kvKey encodes a bucket key for the KV store, whose keys allow only
// letters, digits and - _ = . : base64url without padding uses no other
// characters, and a key too long for a subject is replaced by its hash
// (under another prefix, so the two forms never meet).
func kvKey(key string) string {
	k := "k" + base64.RawURLEncoding.EncodeToString([]byte(key)) // never empty
	if len(k) > maxKVKeyLen {
		sum := sha256.Sum256([]byte(key))
		k = "h." + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return k
}

// Take takes a token from key's bucket.
func (b *kvBuckets) Take(ctx context.Context, key string, rate float64, burst int) (bool, int, time.Duration, error) {
	if rate <= 0 || burst <= 0 {
		return false, 0, 0, fmt.Errorf("rate-limit bucket %q: rate and burst must be positive", key)
	}
	k := kvKey(key)
	// Whole nanoseconds keep the arithmetic exact; a float64 of a unix
	// time in nanoseconds is only good to a few hundred.
	interval := int64(max(1, math.Round(float64(time.Second)/rate))) // per token
	tau := interval * int64(burst)                                   // a full bucket
	if float64(interval)*float64(burst) > 1<<62 {
		tau = 1 << 62
	}
	for range casAttempts {
		var (
			tat int64  // ns since the epoch
			rev uint64 // 0: no entry
		)
		e, err := b.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return false, 0, 0, err
		default:
			rev = e.Revision()
			// An unreadable value counts as a full bucket.
			tat, _ = strconv.ParseInt(string(e.Value()), 10, 64)
		}
		now := b.now().UnixNano()
		newTAT := max(tat, now) + interval
		if allowAt := newTAT - tau; now < allowAt {
			return false, 0, time.Duration(allowAt - now), nil
		}
		val := []byte(strconv.FormatInt(newTAT, 10))
		if rev == 0 {
			_, err = b.kv.Create(ctx, k, val)
		} else {
			_, err = b.kv.Update(ctx, k, val, rev)
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // another node got there first: read again
			}
			return false, 0, 0, err
		}
		// The tokens left are the part of the bucket ahead of TAT; the
		// next one is due when the partial one completes.
		left := tau - (newTAT - now)
		return true, int(left / interval), time.Duration(interval - left%interval), nil
	}
	// The key changed under every attempt: it is being taken from as fast
	// as the store can write, which is when a limit matters most, so the
	// request is refused rather than let through unaccounted.
	return false, 0, time.Duration(interval), nil
}
