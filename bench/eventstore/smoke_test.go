package esbench

import (
	"context"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/testutil"
)

// TestSmoke runs every measured path of both backends once at a tiny
// size, so that the benchmarks keep working; it asserts correctness only,
// never speed.
func TestSmoke(t *testing.T) {
	t.Run("jetstream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		be, err := OpenJetStream(ctx, t.TempDir(), 2*BatchSize, 3*BatchSize)
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		smoke(ctx, t, be)
	})
	t.Run("postgres", func(t *testing.T) {
		testutil.RequireService(t, "PostgreSQL", PostgresAddr)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		be, err := OpenPostgres(ctx, PostgresDSN, 2*BatchSize, 3*BatchSize)
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		smoke(ctx, t, be)
	})
}

func smoke(ctx context.Context, t *testing.T, be *Backend) {
	w := StoreWriter(be.Store, "smoke-1")
	for _, n := range []int{1, 1, BatchSize} {
		if err := w(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := be.Store.ReadStream(ctx, "smoke-1", eventstore.ReadOptions{})
	if err != nil || len(evs) != 2+BatchSize || string(evs[0].Data) != string(Payload()) {
		t.Fatalf("read back %d events, %v", len(evs), err)
	}
	for _, batch := range []bool{false, true} {
		rw := be.Raw.Writer(0, batch)
		for range 2 {
			if err := rw(ctx, 3); err != nil {
				t.Fatalf("raw writer (batch %v): %v", batch, err)
			}
		}
	}
	if err := be.EnsureFixtures(ctx); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func(context.Context) (int, error){
		"store stream": func(ctx context.Context) (int, error) {
			evs, err := be.Reads.ReadStream(ctx, readStream, eventstore.ReadOptions{})
			return len(evs), err
		},
		"raw stream": be.Raw.ReadStream,
	} {
		if n, err := read(ctx); err != nil || n != be.StreamLen {
			t.Errorf("%s: %d events, want %d: %v", name, n, be.StreamLen, err)
		}
	}
	if be.PerCommit {
		evs, err := be.Reads.ReadStream(ctx, singleStream, eventstore.ReadOptions{})
		if err != nil || len(evs) != be.StreamLen {
			t.Errorf("single-event stream: %d events, %v", len(evs), err)
		}
	}
	all, err := be.Replay.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil || len(all) != be.ReplayLen {
		t.Errorf("store log: %d events, want %d: %v", len(all), be.ReplayLen, err)
	}
	if n, err := be.Raw.ReadAll(ctx); err != nil || n != be.ReplayLen {
		t.Errorf("raw log: %d events, want %d: %v", n, be.ReplayLen, err)
	}
}
