package esbench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/testutil"
)

// BenchmarkJetStream measures the JetStream backend on an embedded
// nats-server against raw JetStream calls on the same server and
// connection.
func BenchmarkJetStream(b *testing.B) {
	be, err := OpenJetStream(context.Background(), b.TempDir(), StreamLen, ReplayLen())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	benchBackend(b, be)
}

// BenchmarkPostgres measures the PostgreSQL backend against raw SQL on the
// same database and connection pool.
func BenchmarkPostgres(b *testing.B) {
	testutil.RequireService(b, "PostgreSQL", PostgresAddr)
	be, err := OpenPostgres(context.Background(), PostgresDSN, StreamLen, ReplayLen())
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	benchBackend(b, be)
}

// benchBackend runs every measurement, each store variant right before
// its raw baseline. In the append benchmarks b.N counts events, so ns/op
// is per event; in the read benchmarks one op is one whole read (StreamLen
// or ReplayLen events). Every benchmark reports events/s, and the CPU time
// of this process per event (which includes an embedded nats-server, and
// excludes the PostgreSQL server).
func benchBackend(b *testing.B, be *Backend) {
	ctx := context.Background()
	b.Run("append1/store", func(b *testing.B) {
		drive(b, 1, 1, func(w int) func(context.Context, int) error {
			return StoreWriter(be.Store, fmt.Sprintf("one-%d.%d", nextRun(), w))
		})
	})
	b.Run("append1/raw", func(b *testing.B) {
		drive(b, 1, 1, func(w int) func(context.Context, int) error { return be.Raw.Writer(w, false) })
	})
	b.Run(fmt.Sprintf("append1x%d/store", Writers), func(b *testing.B) {
		drive(b, Writers, 1, func(w int) func(context.Context, int) error {
			return StoreWriter(be.Store, fmt.Sprintf("par-%d.%d", nextRun(), w))
		})
	})
	b.Run(fmt.Sprintf("append1x%d/raw", Writers), func(b *testing.B) {
		drive(b, Writers, 1, func(w int) func(context.Context, int) error { return be.Raw.Writer(w, false) })
	})
	b.Run(fmt.Sprintf("batch%d/store", BatchSize), func(b *testing.B) {
		drive(b, 1, BatchSize, func(w int) func(context.Context, int) error {
			return StoreWriter(be.Store, fmt.Sprintf("batch-%d.%d", nextRun(), w))
		})
	})
	b.Run(fmt.Sprintf("batch%d/raw", BatchSize), func(b *testing.B) {
		drive(b, 1, BatchSize, func(w int) func(context.Context, int) error { return be.Raw.Writer(w, true) })
	})

	streamReads := []struct {
		name string
		read func(context.Context) (int, error)
	}{
		{"store", func(ctx context.Context) (int, error) {
			evs, err := be.Reads.ReadStream(ctx, readStream, eventstore.ReadOptions{})
			return len(evs), err
		}},
	}
	if be.PerCommit {
		streamReads = append(streamReads, struct {
			name string
			read func(context.Context) (int, error)
		}{"store-single", func(ctx context.Context) (int, error) {
			evs, err := be.Reads.ReadStream(ctx, singleStream, eventstore.ReadOptions{})
			return len(evs), err
		}})
	}
	streamReads = append(streamReads, struct {
		name string
		read func(context.Context) (int, error)
	}{"raw", be.Raw.ReadStream})
	for _, r := range streamReads {
		b.Run(fmt.Sprintf("readstream%dk/%s", be.StreamLen/1000, r.name), func(b *testing.B) {
			if err := be.EnsureFixtures(ctx); err != nil {
				b.Fatal(err)
			}
			read(b, be.StreamLen, r.read)
		})
	}
	for _, r := range []struct {
		name string
		read func(context.Context) (int, error)
	}{
		{"store", func(ctx context.Context) (int, error) {
			evs, err := be.Replay.ReadAll(ctx, eventstore.ReadAllOptions{})
			return len(evs), err
		}},
		{"raw", be.Raw.ReadAll},
	} {
		b.Run(fmt.Sprintf("readall%dk/%s", be.ReplayLen/1000, r.name), func(b *testing.B) {
			if err := be.EnsureFixtures(ctx); err != nil {
				b.Fatal(err)
			}
			read(b, be.ReplayLen, r.read)
		})
	}
}

// drive splits b.N events over writers goroutines, each appending
// batch events per call (fewer in its last call) through its own writer.
func drive(b *testing.B, writers, batch int, newWriter func(w int) func(context.Context, int) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ops := make([]func(context.Context, int) error, writers)
	for w := range ops {
		ops[w] = newWriter(w)
	}
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	cpu0 := ProcessCPU()
	b.ResetTimer()
	for w := range writers {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < n; {
				k := min(batch, n-done)
				if err := ops[w](ctx, k); err != nil {
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				}
				done += k
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	report(b, b.N, cpu0)
}

// read runs fn b.N times; each must return want events.
func read(b *testing.B, want int, fn func(context.Context) (int, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cpu0 := ProcessCPU()
	b.ResetTimer()
	for range b.N {
		n, err := fn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n != want {
			b.Fatalf("read %d events, want %d", n, want)
		}
	}
	b.StopTimer()
	report(b, b.N*want, cpu0)
}

func report(b *testing.B, events int, cpu0 time.Duration) {
	if el := b.Elapsed(); el > 0 {
		b.ReportMetric(float64(events)/el.Seconds(), "events/s")
	}
	b.ReportMetric(float64((ProcessCPU()-cpu0).Nanoseconds())/float64(events), "cpu-ns/event")
}
