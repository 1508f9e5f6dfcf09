package bus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/observe"
)

// HTTPDoer sends push deliveries; *http.Client satisfies it.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // webhooks are internal services; never via a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}}
}

// outcome classifies one push attempt as DESIGN section 4 says: 2xx acks;
// 408, 429, 5xx, timeouts and connection errors retry; other 4xx
// dead-letter at once.
type outcome int

const (
	delivered outcome = iota
	retryable
	fatal
	cancelled // Junction is stopping: hand the message back
)

type attempt struct {
	out        outcome
	reason     string
	retryAfter time.Duration
}

// dispatcher runs push delivery of one subscription on this node.
type dispatcher struct {
	b        *Bus
	sub      *compiled
	it       jetstream.MessagesContext
	ctx      context.Context // cancelled on hard stop: aborts webhook calls
	cancel   context.CancelFunc
	sem      chan struct{}
	wg       sync.WaitGroup
	loopDone chan struct{}
	stopping atomic.Bool

	lanesMu sync.Mutex
	lanes   map[string][]jetstream.Msg // ordered_by_key: queued messages per key
}

// deliverer runs push delivery of one subscription on this node.
type deliverer interface {
	config() config.Subscription
	stop(ctx context.Context)
}

var (
	_ deliverer = (*dispatcher)(nil)
	_ deliverer = (*leader)(nil)
)

func (d *dispatcher) config() config.Subscription { return d.sub.cfg }

func (b *Bus) startDispatcher(c *compiled) (*dispatcher, error) {
	ctx, cancel := waitCtx(context.Background())
	defer cancel()
	cons, err := b.js.Consumer(ctx, b.streamName(c.cfg.Topic), c.name)
	if err != nil {
		return nil, err
	}
	// The consumer's MaxAckPending equals max_in_flight, so the server never
	// lets more than that many messages be outstanding: memory stays
	// bounded however slow the webhook is. A short heartbeat makes a lost
	// pull request visible (and re-issued) within two seconds instead of
	// ten: a stall of that length was seen under load in benchmarks.
	it, err := cons.Messages(jetstream.PullMaxMessages(c.cfg.MaxInFlight), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, err
	}
	d := &dispatcher{b: b, sub: c, it: it, sem: make(chan struct{}, c.cfg.MaxInFlight),
		loopDone: make(chan struct{}), lanes: map[string][]jetstream.Msg{}}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	go d.loop()
	b.log.Info("push delivery started", "subscription", c.name, "topic", c.cfg.Topic, "url", c.cfg.Push.URL)
	return d, nil
}

func (d *dispatcher) loop() {
	defer close(d.loopDone)
	buffered := d.b.met.buffered.WithLabelValues(d.sub.name)
	for {
		msg, err := d.it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			if !d.stopping.Load() {
				d.b.log.Debug("push fetch", "subscription", d.sub.name, "err", err)
			}
			continue
		}
		if d.stopping.Load() {
			_ = msg.Nak() // requeue at once for another node or the next start
			continue
		}
		buffered.Inc()
		if d.sub.cfg.OrderedByKey {
			d.enqueue(msg)
			continue
		}
		d.sem <- struct{}{}
		d.wg.Add(1)
		go func() {
			defer func() { <-d.sem; buffered.Dec(); d.wg.Done() }()
			d.handle(msg, false)
		}()
	}
}

// enqueue puts msg on its key's lane; a lane runs one message at a time in
// arrival order, and different keys run in parallel. Messages without a
// key are independent.
func (d *dispatcher) enqueue(msg jetstream.Msg) {
	key := msg.Headers().Get("ce-partitionkey")
	if key == "" {
		key = "\x00" + msg.Reply() // unique lane
	}
	d.lanesMu.Lock()
	q, busy := d.lanes[key]
	d.lanes[key] = append(q, msg)
	d.lanesMu.Unlock()
	if busy {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		buffered := d.b.met.buffered.WithLabelValues(d.sub.name)
		for {
			d.lanesMu.Lock()
			q := d.lanes[key]
			if len(q) == 0 {
				delete(d.lanes, key)
				d.lanesMu.Unlock()
				return
			}
			m := q[0]
			d.lanes[key] = q[1:]
			d.lanesMu.Unlock()
			if d.stopping.Load() {
				_ = m.Nak()
			} else {
				d.handle(m, true)
			}
			buffered.Dec()
		}
	}()
}

// handle delivers one message and settles it. With inPlace (ordered
// delivery) retries happen here, holding the key's lane, so that a later
// message of the key never overtakes an earlier one; otherwise a retry is a
// NAK with delay, which JetStream keeps durably.
func (d *dispatcher) handle(msg jetstream.Msg, inPlace bool) {
	b, s := d.b, d.sub
	m, ok := b.receive(s, msg)
	if !ok {
		return
	}
	for {
		a := d.push(msg, m)
		switch a.out {
		case delivered:
			_ = msg.Ack()
			b.met.delivered.WithLabelValues(s.name, "push").Inc()
			b.met.endToEnd.WithLabelValues(s.name).Observe(time.Since(m.Published).Seconds())
			return
		case cancelled:
			_ = msg.Nak()
			return
		case fatal:
			b.met.failed.WithLabelValues(s.name, a.reason).Inc()
			b.deadLetter(msg, m, s, a.reason)
			return
		}
		b.met.failed.WithLabelValues(s.name, a.reason).Inc()
		if m.Deliveries >= s.cfg.MaxDeliver {
			b.deadLetter(msg, m, s, a.reason+" after "+strconv.Itoa(m.Deliveries)+" deliveries")
			return
		}
		delay := max(backoffFor(s.cfg.Backoff, m.Deliveries), a.retryAfter)
		if !inPlace {
			_ = msg.NakWithDelay(delay)
			return
		}
		if !d.sleep(msg, delay) {
			_ = msg.Nak()
			return
		}
		m.Deliveries++
	}
}

// sleep waits delay while telling JetStream the message is still being
// worked on; it returns false if the dispatcher stops meanwhile.
func (d *dispatcher) sleep(msg jetstream.Msg, delay time.Duration) bool {
	tick := max(d.sub.cfg.AckWait.D()/3, 100*time.Millisecond)
	t := time.NewTimer(delay)
	defer t.Stop()
	hb := time.NewTicker(tick)
	defer hb.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-hb.C:
			_ = msg.InProgress()
		case <-d.ctx.Done():
			return false
		}
	}
}

func backoffFor(bo []config.Duration, deliveries int) time.Duration {
	if len(bo) == 0 {
		return time.Second
	}
	i := min(max(deliveries-1, 0), len(bo)-1)
	return bo[i].D()
}

// push makes one webhook call. While it runs, JetStream is told the
// message is in progress, so a webhook slower than ack_wait is not handed
// the same message again in parallel.
func (d *dispatcher) push(msg jetstream.Msg, m *Message) attempt {
	s := d.sub
	ctx := observe.Propagator.Extract(d.ctx, propagation.HeaderCarrier(m.header))
	ctx, span := d.b.tracer.Start(ctx, "deliver "+s.name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.destination.name", m.Topic),
			attribute.String("messaging.consumer.group.name", s.name),
			attribute.String("messaging.message.id", m.ID), attribute.Int("messaging.delivery.attempt", m.Deliveries)))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Push.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Push.URL, bytes.NewReader(m.Data))
	if err != nil {
		return attempt{out: fatal, reason: "bad_request"}
	}
	for k, v := range s.cfg.Push.Headers {
		req.Header.Set(k, v)
	}
	m.setBinaryHeaders(req.Header)
	req.Header.Set("Junction-Subscription", s.name)
	req.Header.Set("Junction-Delivery", strconv.Itoa(m.Deliveries))
	observe.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))

	inflight := d.b.met.inFlight.WithLabelValues(s.name)
	inflight.Inc()
	start := time.Now()
	beat := time.AfterFunc(s.cfg.AckWait.D()/2, func() { d.heartbeat(ctx, msg) })
	resp, err := d.b.client.Do(req)
	beat.Stop()
	d.b.met.pushLatency.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
	inflight.Dec()
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		switch {
		case d.ctx.Err() != nil:
			return attempt{out: cancelled, reason: "stopping"}
		case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
			return attempt{out: retryable, reason: "timeout"}
		default:
			return attempt{out: retryable, reason: "connection_error"}
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return attempt{out: delivered}
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		span.SetStatus(codes.Error, resp.Status)
		return attempt{out: retryable, reason: "http_" + strconv.Itoa(code), retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	default:
		span.SetStatus(codes.Error, resp.Status)
		return attempt{out: fatal, reason: "http_" + strconv.Itoa(code)}
	}
}

// heartbeat sends "in progress" every half ack_wait until ctx ends.
func (d *dispatcher) heartbeat(ctx context.Context, msg jetstream.Msg) {
	t := time.NewTicker(d.sub.cfg.AckWait.D() / 2)
	defer t.Stop()
	for {
		_ = msg.InProgress()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// retryAfter parses a Retry-After header (seconds or HTTP date), capped at
// ten minutes so a misbehaving server cannot park messages for days.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), 10*time.Minute)
}

// stop ends delivery: no new fetches, buffered messages are handed back
// (NAK) at once, in-flight calls may finish until ctx ends and are then
// aborted and handed back too.
func (d *dispatcher) stop(ctx context.Context) {
	if !d.stopping.CompareAndSwap(false, true) {
		return
	}
	d.it.Drain()
	idle := make(chan struct{})
	go func() { <-d.loopDone; d.wg.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-ctx.Done():
		d.cancel()
		<-idle
	}
	d.cancel()
	d.b.log.Info("push delivery stopped", "subscription", d.sub.name)
}
