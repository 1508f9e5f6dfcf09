package busbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
)

// E2EOptions bound one publish-to-push measurement.
type E2EOptions struct {
	// Messages is how many messages the throughput phase publishes.
	Messages int
	// Batch is how many messages the throughput phase publishes per call.
	Batch int
	// LatencyFor is how long the fixed-rate latency phase runs.
	LatencyFor time.Duration
	// Rate is the latency phase's publish rate in msg/s; 0 means half the
	// throughput the same run measured for Junction.
	Rate float64
	// MaxInFlight is the subscription's max_in_flight, and the raw
	// consumer's MaxAckPending and worker count.
	MaxInFlight int
	// Timeout bounds each phase.
	Timeout time.Duration
	// Only runs one side, "junction" or "raw" (for profiling); empty runs
	// both.
	Only string
}

func (o *E2EOptions) defaults() {
	if o.Messages <= 0 {
		o.Messages = 40000
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.LatencyFor <= 0 {
		o.LatencyFor = 5 * time.Second
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = config.DefaultMaxInFlight
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
}

// E2EResult is one phase of one side.
type E2EResult struct {
	Side     string  `json:"side"`  // junction or raw
	Phase    string  `json:"phase"` // max or latency
	Messages int     `json:"messages"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`   // msg/s delivered and acknowledged
	Target   float64 `json:"target"` // latency phase: the publish rate asked for
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	// CPUus is this process's CPU time per message in microseconds:
	// publisher, server, delivery and webhook together.
	CPUus float64 `json:"cpu_us_per_msg"`
	// Failed counts push attempts that failed (Junction side only:
	// junction_bus_delivery_failures_total), each retried later.
	Failed int `json:"failed_pushes"`
}

func (r E2EResult) String() string {
	s := fmt.Sprintf("%-8s %-7s %7d msgs in %6.2fs = %8.0f msg/s   latency p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  cpu %5.1f us/msg",
		r.Side, r.Phase, r.Messages, r.Seconds, r.Rate, r.P50ms, r.P99ms, r.MaxMs, r.CPUus)
	if r.Target > 0 {
		s += fmt.Sprintf("  (paced at %.0f msg/s)", r.Target)
	}
	if r.Failed > 0 {
		s += fmt.Sprintf("  %d failed pushes", r.Failed)
	}
	return s
}

// webhook receives pushes. Every message body starts with the publish
// time in Unix nanoseconds (20 digits); the webhook records the delay from
// it to receipt, measured on the same clock as the publisher.
type webhook struct {
	srv   *httptest.Server
	count atomic.Int64
	mu    sync.Mutex
	lat   []time.Duration
}

func newWebhook() *webhook {
	w := &webhook{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var buf [PayloadSize]byte
		n, _ := io.ReadFull(r.Body, buf[:])
		now := time.Now()
		if n >= 20 {
			if ns, err := strconv.ParseInt(string(buf[:20]), 10, 64); err == nil {
				w.mu.Lock()
				w.lat = append(w.lat, now.Sub(time.Unix(0, ns)))
				w.mu.Unlock()
			}
		}
		w.count.Add(1)
		rw.WriteHeader(http.StatusNoContent)
	}))
	return w
}

func (w *webhook) reset() {
	w.mu.Lock()
	w.lat = w.lat[:0]
	w.mu.Unlock()
	w.count.Store(0)
}

func (w *webhook) latencies() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lat)
}

// stamp writes the current time into a copy of the payload.
func stamp(payload []byte) []byte {
	p := slices.Clone(payload)
	ns := strconv.FormatInt(time.Now().UnixNano(), 10)
	for len(ns) < 20 {
		ns = "0" + ns
	}
	copy(p, ns)
	return p
}

// side is one way of getting messages from a publisher to the webhook.
type side struct {
	name string
	// publish stores msgs, each stamped just before the call.
	publish func(ctx context.Context, n int) error
	// settled reports whether every delivered message is acknowledged.
	settled func(ctx context.Context) (bool, error)
	// failed counts failed push attempts so far.
	failed func() int
}

// RunPushE2E measures publish-to-push delivery through Junction (a push
// subscription) and through a hand-written raw JetStream equivalent (pull
// consumer, a goroutine per message up to MaxInFlight, HTTP POST, ack) on
// the same embedded server, to the same webhook. For each side it runs a
// throughput phase (Messages published in batches as fast as they go,
// timed from the first publish until the webhook has them all and the
// consumer has no unacknowledged message) and a latency phase (single
// messages published at a fixed rate for LatencyFor), after an unrecorded
// warm-up round of a tenth of Messages. report receives each result as it
// is measured.
func RunPushE2E(ctx context.Context, dir string, o E2EOptions, report func(E2EResult)) error {
	o.defaults()
	env, err := StartEnv(ctx, dir)
	if err != nil {
		return err
	}
	defer env.Close()
	hook := newWebhook()
	defer hook.srv.Close()

	j, err := junctionSide(ctx, env, hook.srv.URL, o)
	if err != nil {
		return err
	}
	r, stopRaw, err := rawSide(ctx, env, hook.srv.URL, o)
	if err != nil {
		return err
	}
	defer stopRaw()

	rate := o.Rate
	for _, s := range []side{j, r} {
		if o.Only != "" && o.Only != s.name {
			continue
		}
		// An unrecorded round first, so that neither side pays for the
		// process's or the stream's first use.
		warm := o
		warm.Messages = max(o.Messages/10, min(o.Messages, 1000))
		if _, err := throughput(ctx, s, hook, warm); err != nil {
			return fmt.Errorf("%s warm-up: %w", s.name, err)
		}
		res, err := throughput(ctx, s, hook, o)
		if err != nil {
			return fmt.Errorf("%s throughput: %w", s.name, err)
		}
		report(res)
		if rate == 0 {
			rate = res.Rate / 2
		}
		res, err = latency(ctx, s, hook, o, rate)
		if err != nil {
			return fmt.Errorf("%s latency: %w", s.name, err)
		}
		report(res)
	}
	return nil
}

func junctionSide(ctx context.Context, env *Env, url string, o E2EOptions) (side, error) {
	const topic, name = "bench.e2e.junction", "bench-e2e"
	if err := env.Bus.EnsureTopic(ctx, topic); err != nil {
		return side{}, err
	}
	if _, err := env.Bus.PutSubscription(ctx, name, config.Subscription{
		Topic: topic, Start: "new", MaxInFlight: o.MaxInFlight,
		Push: &config.Push{URL: url},
	}); err != nil {
		return side{}, err
	}
	payload := Payload()
	return side{
		name: "junction",
		publish: func(ctx context.Context, n int) error {
			msgs := make([]bus.Message, n)
			for i := range msgs {
				msgs[i] = bus.Message{Data: stamp(payload)}
			}
			res, err := env.Bus.Publish(ctx, topic, msgs...)
			if err != nil {
				return err
			}
			for _, r := range res {
				if r.Error != nil {
					return r.Error
				}
			}
			return nil
		},
		failed: func() int { return int(env.Counter("junction_bus_delivery_failures_total")) },
		settled: func(ctx context.Context) (bool, error) {
			si, err := env.Bus.GetSubscription(ctx, name)
			if err != nil {
				return false, err
			}
			return si.Stats.Pending == 0 && si.Stats.InFlight == 0, nil
		},
	}, nil
}

// rawSide is the baseline: what a Go program would write by hand with
// nats.go to push a stream to a webhook. It mirrors Junction's dispatcher
// (a Messages iterator buffering MaxInFlight, a goroutine per message
// bounded by MaxInFlight, ack on 2xx, NAK otherwise) without filters,
// tracing, metrics, CloudEvents decoding or retry bookkeeping.
func rawSide(ctx context.Context, env *Env, url string, o E2EOptions) (side, func(), error) {
	const topic, durable = "bench.e2e.raw", "bench-e2e-raw"
	subject, err := env.RawTopic(ctx, topic)
	if err != nil {
		return side{}, nil, err
	}
	js := env.NATS.JS
	cons, err := js.CreateOrUpdateConsumer(ctx, RawStream(topic), jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxDeliver: -1, MaxAckPending: o.MaxInFlight, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return side{}, nil, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(o.MaxInFlight), jetstream.PullHeartbeat(5*time.Second))
	if err != nil {
		return side{}, nil, err
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}}
	sem := make(chan struct{}, o.MaxInFlight)
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(msg.Data()))
				if err != nil {
					_ = msg.Term()
					return
				}
				req.Header.Set("ce-specversion", "1.0")
				req.Header.Set("ce-id", msg.Headers().Get("Nats-Msg-Id"))
				req.Header.Set("ce-source", "/bench")
				req.Header.Set("ce-type", "bench")
				resp, err := client.Do(req)
				if err != nil {
					_ = msg.Nak()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					_ = msg.Ack()
				} else {
					_ = msg.Nak()
				}
			}()
		}
	}()
	stop := func() {
		it.Stop()
		<-done
		wg.Wait()
	}
	payload := Payload()
	var ids atomic.Uint64
	msg := func() *nats.Msg {
		id := "e2e-" + runID + "-" + strconv.FormatUint(ids.Add(1), 10)
		return &nats.Msg{Subject: subject, Header: nats.Header{"Nats-Msg-Id": []string{id}}, Data: stamp(payload)}
	}
	return side{
		name: "raw",
		publish: func(ctx context.Context, n int) error {
			if n == 1 {
				_, err := js.PublishMsg(ctx, msg())
				return err
			}
			futs := make([]jetstream.PubAckFuture, n)
			for i := range futs {
				f, err := js.PublishMsgAsync(msg())
				if err != nil {
					return err
				}
				futs[i] = f
			}
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
		},
		failed: func() int { return 0 },
		settled: func(ctx context.Context) (bool, error) {
			ci, err := cons.Info(ctx)
			if err != nil {
				return false, err
			}
			return ci.NumPending == 0 && ci.NumAckPending == 0, nil
		},
	}, stop, nil
}

// runID keeps message ids of separate runs apart on a reused server.
var runID = strconv.FormatInt(time.Now().UnixNano(), 36)

// throughput publishes o.Messages in batches of o.Batch from one goroutine
// while delivery runs, and times until all are delivered and acknowledged.
func throughput(ctx context.Context, s side, hook *webhook, o E2EOptions) (E2EResult, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	hook.reset()
	want := int64(o.Messages)
	failed0 := s.failed()
	cpu0 := ProcessCPU()
	start := time.Now()
	pubErr := make(chan error, 1)
	go func() {
		for sent := 0; sent < o.Messages; sent += o.Batch {
			if err := s.publish(ctx, min(o.Batch, o.Messages-sent)); err != nil {
				pubErr <- err
				return
			}
		}
		pubErr <- nil
	}()
	if err := <-pubErr; err != nil {
		return E2EResult{}, err
	}
	if err := waitDelivered(ctx, s, hook, want); err != nil {
		return E2EResult{}, err
	}
	el := time.Since(start)
	res := E2EResult{Side: s.name, Phase: "max", Messages: o.Messages, Seconds: el.Seconds(), Rate: float64(o.Messages) / el.Seconds(),
		CPUus: float64((ProcessCPU() - cpu0).Microseconds()) / float64(o.Messages), Failed: s.failed() - failed0}
	fillLatency(&res, hook.latencies())
	return res, nil
}

// latency publishes single messages at rate for o.LatencyFor, paced in
// steps of one millisecond (each step publishes the messages that have
// come due), and reports the delay from each publish call to its receipt.
func latency(ctx context.Context, s side, hook *webhook, o E2EOptions, rate float64) (E2EResult, error) {
	ctx, cancel := context.WithTimeout(ctx, o.LatencyFor+o.Timeout)
	defer cancel()
	hook.reset()
	total := int(rate * o.LatencyFor.Seconds())
	if total < 1 {
		return E2EResult{}, fmt.Errorf("rate %.0f msg/s publishes nothing in %s", rate, o.LatencyFor)
	}
	interval := time.Duration(float64(time.Second) / rate)
	failed0 := s.failed()
	cpu0 := ProcessCPU()
	start := time.Now()
	for sent := 0; sent < total; {
		due := min(int(time.Since(start)/interval)+1, total)
		for ; sent < due; sent++ {
			if err := s.publish(ctx, 1); err != nil {
				return E2EResult{}, err
			}
		}
		if sent < total {
			time.Sleep(time.Until(start.Add(time.Duration(sent) * interval)))
		}
	}
	pubDone := time.Since(start)
	if err := waitDelivered(ctx, s, hook, int64(total)); err != nil {
		return E2EResult{}, err
	}
	el := time.Since(start)
	res := E2EResult{Side: s.name, Phase: "latency", Messages: total, Seconds: el.Seconds(),
		Rate: float64(total) / pubDone.Seconds(), Target: rate,
		CPUus: float64((ProcessCPU() - cpu0).Microseconds()) / float64(total), Failed: s.failed() - failed0}
	fillLatency(&res, hook.latencies())
	return res, nil
}

// waitDelivered waits until the webhook holds want messages and the
// consumer has none pending or unacknowledged.
func waitDelivered(ctx context.Context, s side, hook *webhook, want int64) error {
	for hook.count.Load() < want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d delivered: %w", hook.count.Load(), want, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	for {
		ok, err := s.settled(ctx)
		if err != nil {
			return err
		}
		if ok {
			if got := hook.count.Load(); got != want {
				return fmt.Errorf("webhook received %d messages, want %d", got, want)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("acknowledgements: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func fillLatency(r *E2EResult, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.P50ms = ms(Percentile(lat, 50))
	r.P99ms = ms(Percentile(lat, 99))
	r.MaxMs = ms(lat[len(lat)-1])
}

// Percentile returns the p-th percentile (nearest rank) of sorted.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
