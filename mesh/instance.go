package mesh

import (
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/junctionhq/junction/resilience"
)

// Health states of an instance, as GET /v1/services shows them.
const (
	HealthUnknown   = "unknown" // not checked yet (or no active check): in rotation
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Sources of an instance.
const (
	SourceStatic     = "static"     // from the config file
	SourceRegistered = "registered" // PUT over the API, kept alive by heartbeats
)

// latencyDecay is the time constant of the latency average: samples older
// than a few of it hardly count, and an instance that received nothing
// for that long looks fast again, so the balancer probes it once more.
const latencyDecay = time.Second

// instance is one address of a service plus everything the balancer,
// health checker and breakers know about it. Its identity survives
// heartbeats: a re-registration with the same URL updates it in place.
type instance struct {
	id       string
	url      *url.URL
	raw      string
	weight   int
	source   string
	mtls     bool
	metadata map[string]string

	inflight atomic.Int64
	health   atomic.Value // string
	breaker  *resilience.Breaker

	mu           sync.Mutex
	ewma         float64 // latency average, ns
	stamp        time.Time
	failures     int       // consecutive failures (passive ejection)
	ejections    int       // ejections in a row without a healthy period
	ejectedUntil time.Time // zero when in rotation
	expires      time.Time // registered instances only
	revision     uint64    // KV revision of the registration
	registered   time.Time
	swrr         int // smooth weighted round robin state, guarded by the service's lock
	checkOK      int // consecutive health-check results
	checkFail    int
	lastCheckErr string
}

func newInstance(id, raw string, u *url.URL, weight int, source string, brk *resilience.Breaker) *instance {
	in := &instance{id: id, raw: raw, url: u, weight: max(weight, 1), source: source, breaker: brk}
	in.health.Store(HealthUnknown)
	return in
}

func (in *instance) healthState() string { return in.health.Load().(string) }

// available reports whether the balancer may pick the instance now.
func (in *instance) available(now time.Time) bool {
	if in.healthState() == HealthUnhealthy {
		return false
	}
	in.mu.Lock()
	ejected := now.Before(in.ejectedUntil)
	in.mu.Unlock()
	if ejected {
		return false
	}
	return in.breaker == nil || in.breaker.State() != resilience.StateOpen
}

// cost is the power-of-two-choices score: expected latency times the
// queue the request would join, per unit of weight. The latency average
// decays while the instance is idle, so a slow instance that the balancer
// stopped choosing is tried again now and then and can win back traffic.
func (in *instance) cost(now time.Time) float64 {
	in.mu.Lock()
	lat := in.ewma
	if !in.stamp.IsZero() {
		lat *= math.Exp(-float64(now.Sub(in.stamp)) / float64(latencyDecay))
	}
	in.mu.Unlock()
	// 100 µs floor: a new instance is not infinitely attractive.
	return (lat + 1e5) * float64(in.inflight.Load()+1) / float64(in.weight)
}

// observe folds one response latency into the average. Peaks are taken
// at once and drops decay, so one slow answer moves traffic quickly.
func (in *instance) observe(now time.Time, rtt time.Duration) {
	ns := float64(rtt)
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stamp.IsZero() || ns > in.ewma {
		in.ewma, in.stamp = ns, now
		return
	}
	w := math.Exp(-float64(now.Sub(in.stamp)) / float64(latencyDecay))
	in.ewma = in.ewma*w + ns*(1-w)
	in.stamp = now
}
