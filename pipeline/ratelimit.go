package pipeline

import (
	"context"
	"fmt"
	"math"

	"golang.org/x/time/rate"

	"github.com/junctionhq/junction/config"
)

func init() {
	processors["rate_limit"] = func(_ context.Context, _ *Env, cfg *config.PipelineProcess) (Processor, error) {
		return newRateLimiter(cfg.RateLimit)
	}
}

// rateLimiter passes at most N records a second: a token bucket refilled
// at N a second holding max(1, N) tokens, so that a pipeline that was
// idle may pass up to a second's worth at once. Process waits for a
// token, or for the run to end.
type rateLimiter struct{ lim *rate.Limiter }

func newRateLimiter(n float64) (*rateLimiter, error) {
	if !(n > 0) {
		return nil, fmt.Errorf("rate_limit: must be positive, got %v", n)
	}
	burst := 1
	if n > 1 {
		burst = int(math.Min(n, math.MaxInt32))
	}
	return &rateLimiter{rate.NewLimiter(rate.Limit(n), burst)}, nil
}

func (p *rateLimiter) Process(ctx context.Context, r *Record) ([]*Record, error) {
	if err := p.lim.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("rate_limit: %w", err)
	}
	return []*Record{r}, nil
}
