// Package busbench measures Junction's message bus against raw JetStream
// on the same embedded nats-server: publishing through the Go API, and
// publish-to-push delivery end to end. The benchmarks live in the _test
// files; RunPushE2E is shared by them and by the pushe2e command.
package busbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
)

// PayloadSize is the data size of every benchmark message.
const PayloadSize = 128

// Prefix is the NATS prefix of the benchmark bus (the product default), so
// topic T is stream junction_T_<T> on subject junction.t.<T>.m.
const Prefix = "junction"

// Env is an embedded nats-server with a Bus on it, assembled the way
// junction.New assembles a node (same server options, same tracing set-up,
// same bus defaults) but without the HTTP API and SQL, so that raw
// JetStream calls can share the very same server and connection.
type Env struct {
	NATS *natsembed.Conn
	Bus  *bus.Bus
	// Metrics holds the bus's Prometheus metrics.
	Metrics *prometheus.Registry
}

// TracingEnabled reports whether the bus records spans
// (JUNCTION_BENCH_TRACING=1: an OpenTelemetry SDK provider that samples
// every trace and exports nowhere), to show what recording costs. By
// default the bus runs as a node does with tracing.exporter none: no spans
// are recorded.
func TracingEnabled() bool { return os.Getenv("JUNCTION_BENCH_TRACING") == "1" }

// StartEnv starts the server with its JetStream store under dir.
func StartEnv(ctx context.Context, dir string) (*Env, error) {
	var tracer trace.Tracer // nil: no spans, as a node with exporter none
	if TracingEnabled() {
		tracer = sdktrace.NewTracerProvider().Tracer("junction/bus")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := natsembed.Start(ctx, natsembed.Options{DataDir: dir, Logger: log})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	b, err := bus.New(ctx, bus.Options{
		NC: nc.NC, JS: nc.JS, Prefix: Prefix, Config: config.Default().Bus, Logger: log,
		Registerer: reg, Tracer: tracer,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return &Env{NATS: nc, Bus: b, Metrics: reg}, nil
}

// Close stops the bus and the server.
func (e *Env) Close() {
	_ = e.Bus.Stop(context.Background())
	e.NATS.Close()
}

// RawTopic creates topic through the bus (so its stream has exactly the
// configuration of a Junction topic) and returns the subject that raw
// JetStream publishes must use to land in it.
func (e *Env) RawTopic(ctx context.Context, topic string) (string, error) {
	if _, err := e.Bus.PutTopic(ctx, topic, config.Topic{}); err != nil {
		return "", fmt.Errorf("topic %s: %w", topic, err)
	}
	return RawSubject(topic), nil
}

// RawSubject is the subject of topic's messages.
func RawSubject(topic string) string { return Prefix + ".t." + encTopic(topic) + ".m" }

// RawStream is the name of topic's stream.
func RawStream(topic string) string { return Prefix + "_T_" + encTopic(topic) }

// encTopic stores '.' as '~', as the bus does: stream names may not hold
// dots and subject tokens split on them.
func encTopic(t string) string { return strings.ReplaceAll(t, ".", "~") }

// Payload returns a PayloadSize-byte message body.
func Payload() []byte {
	p := make([]byte, PayloadSize)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// ProcessCPU is the CPU time (user and system) this process has used.
// Divided by a message count it gives CPU per message, which, unlike a
// rate, barely moves when other processes compete for the cores.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Counter sums every series of the named counter, or 0.
func (e *Env) Counter(name string) float64 {
	mfs, err := e.Metrics.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
