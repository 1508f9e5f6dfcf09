// Package bus is Junction's message bus on NATS JetStream: topics,
// CloudEvents publishing with deduplication, durable subscriptions with
// push (webhook) or pull (work queue) delivery, retries with backoff, dead
// letters and replay, and live tails.
//
// Mapping onto JetStream: a topic is one stream; a subscription is one
// durable consumer on it plus its Junction settings in a KV bucket, which
// every node watches, so any node can serve any subscription.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/kvwatch"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
)

// Options configure a Bus.
type Options struct {
	NC         *nats.Conn
	JS         jetstream.JetStream
	Prefix     string // namespaces streams, subjects and buckets
	Config     config.Bus
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Tracer records publish and delivery spans; nil records none (trace
	// context still passes through).
	Tracer trace.Tracer
	// HTTPClient delivers push subscriptions; nil uses a tuned default.
	HTTPClient HTTPDoer
}

// Bus is the message bus. It is safe for concurrent use.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	pfx    string
	cfg    config.Bus
	log    *slog.Logger
	met    *metrics
	client HTTPDoer
	tracer trace.Tracer

	known sync.Map // topic name -> struct{}: streams known to exist

	subsKV jetstream.KeyValue
	pulls  sync.Map // subscription name -> *pullState
	// reconciling holds a mutex per subscription name, so that the two
	// reconciles of one change (PutSubscription's own, and the KV
	// watch's) run one after the other: run at once, both started a
	// dispatcher, and the one stopped handed back (NAK) what it had
	// fetched, spending a delivery the endpoint never saw.
	reconciling sync.Map

	mu          sync.Mutex
	dispatchers map[string]deliverer
	leaseKV     jetstream.KeyValue
	nodeID      string
	compiled    map[string]*compiled // every subscription, from the KV watch
	runCtx      context.Context
	stopRun     context.CancelFunc
	closing     chan struct{}
	wg          sync.WaitGroup
}

// Sentinel errors for callers that branch on outcomes.
var (
	ErrTopicNotFound        = errors.New("topic not found")
	ErrSubscriptionNotFound = errors.New("subscription not found")
	ErrInvalid              = errors.New("invalid input")
	ErrTooLarge             = errors.New("message too large")
)

// New connects the bus to JetStream, creating its KV buckets.
func New(ctx context.Context, o Options) (*Bus, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = defaultHTTPClient()
	}
	if o.Tracer == nil {
		o.Tracer = observe.Tracer(nil, "bus")
	}
	b := &Bus{
		nc: o.NC, js: o.JS, pfx: o.Prefix, cfg: o.Config, log: o.Logger.With("component", "bus"),
		met: newMetrics(o.Registerer), client: o.HTTPClient, tracer: o.Tracer,
		dispatchers: map[string]deliverer{}, nodeID: uuid.NewString(), compiled: map[string]*compiled{}, closing: make(chan struct{}),
	}
	var err error
	if b.subsKV, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: b.pfx + "_subscriptions", Description: "Junction subscriptions", History: 1, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("subscriptions bucket: %w", err)
	}
	if b.leaseKV, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: b.pfx + "_leases", Description: "Junction delivery leases", History: 1,
		TTL: leaseTTL, Storage: jetstream.FileStorage,
	}); err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	return b, nil
}

// Naming. A topic name may hold dots; stream names may not and subject
// tokens split on them, so '.' is stored as '~' (which topic names cannot
// contain, keeping the mapping reversible).
func encTopic(t string) string { return strings.ReplaceAll(t, ".", "~") }
func decTopic(e string) string { return strings.ReplaceAll(e, "~", ".") }

func (b *Bus) streamName(topic string) string { return b.pfx + "_T_" + encTopic(topic) }

// subjectBase is the subject root of a topic's stream; messages live on
// base.m, dead letters on base.dl.<sub>, replays on base.rp.<sub>.
func (b *Bus) subjectBase(topic string) string { return b.pfx + ".t." + encTopic(topic) }
func (b *Bus) msgSubject(topic string) string  { return b.subjectBase(topic) + ".m" }
func (b *Bus) dlSubject(dlq, sub string) string {
	return b.subjectBase(dlq) + ".dl." + sub
}
func (b *Bus) replaySubject(topic, sub string) string { return b.subjectBase(topic) + ".rp." + sub }

// topicOfStream maps a stream name back to its topic, or "" if the stream
// is not one of this bus's topics.
func (b *Bus) topicOfStream(name string) string {
	e, ok := strings.CutPrefix(name, b.pfx+"_T_")
	if !ok {
		return ""
	}
	return decTopic(e)
}

// Start loads every subscription and starts push delivery for those that
// need it, then follows changes made by any node.
func (b *Bus) Start(ctx context.Context) error {
	b.runCtx, b.stopRun = context.WithCancel(context.WithoutCancel(ctx))
	// Every push subscription is running once the current state is loaded.
	if err := kvwatch.Follow(b.runCtx, b.subsKV, &b.wg, b.reconcile); err != nil {
		return fmt.Errorf("subscriptions: %w", err)
	}
	return nil
}

// Stop halts delivery: dispatchers stop fetching, finish in-flight pushes
// until ctx ends, and hand buffered messages back to JetStream at once.
func (b *Bus) Stop(ctx context.Context) error {
	b.mu.Lock()
	select {
	case <-b.closing:
	default:
		close(b.closing)
	}
	ds := make([]deliverer, 0, len(b.dispatchers))
	for _, d := range b.dispatchers {
		ds = append(ds, d)
	}
	b.dispatchers = map[string]deliverer{}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Add(1)
		go func() { defer wg.Done(); d.stop(ctx) }()
	}
	wg.Wait()
	if b.stopRun != nil {
		b.stopRun()
	}
	b.wg.Wait()
	return nil
}

func notFoundTopic(topic string) error {
	return fmt.Errorf("%w: %w", ErrTopicNotFound, problem.New(problem.CodeTopicNotFound, "topic %q does not exist", topic))
}

func notFoundSub(name string) error {
	return fmt.Errorf("%w: %w", ErrSubscriptionNotFound, problem.New(problem.CodeSubNotFound, "subscription %q does not exist", name))
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %w", ErrInvalid, problem.New(problem.CodeValidation, format, a...))
}

// checkTopicName returns a 422 problem for an invalid name.
func checkTopicName(t string) error {
	if !config.ValidTopicName(t) {
		return invalid("invalid topic name %q: use dot-separated tokens of letters, digits, '_' and '-' (at most 200 characters)", t)
	}
	return nil
}

// waitCtx bounds JetStream management calls that have no caller deadline.
func waitCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, 10*time.Second)
}
