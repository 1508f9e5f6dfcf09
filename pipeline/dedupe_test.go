package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
)

func dedupeEnv(t *testing.T) *Env {
	t.Helper()
	c, err := natsembed.Start(context.Background(), natsembed.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &Env{JS: c.JS, Prefix: "jt", Pipeline: "orders"}
}

func TestDedupe(t *testing.T) {
	env := dedupeEnv(t)
	ctx := context.Background()
	clock := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	newDedupe := func(key string, window time.Duration) *deduper {
		t.Helper()
		d, err := newDeduper(ctx, env, &config.DedupeProcess{Key: key, Window: config.Duration(window)})
		if err != nil {
			t.Fatal(err)
		}
		d.now = func() time.Time { return clock }
		return d
	}
	type step struct {
		advance time.Duration
		id      any
		pass    bool
	}
	tests := []struct {
		name   string
		key    string
		window time.Duration
		steps  []step
	}{
		{"duplicates within the window are dropped", "row.id", time.Hour, []step{
			{0, "a", true}, {time.Minute, "a", false}, {0, "b", true}, {58 * time.Minute, "a", false}, {0, "b", false}, {time.Minute, "a", true},
		}},
		{"a key seen longer ago than the window is new, and its time reset", "'w2-' + string(row.id)", time.Minute, []step{
			{0, "a", true}, {30 * time.Second, "a", false}, {30 * time.Second, "a", true}, {59 * time.Second, "a", false}, {time.Second, "a", true},
		}},
		{"numbers render as text; any text is a key", "row.id", time.Hour, []step{
			{0, 1.0, true}, {0, 1.0, false}, {0, "1", false}, {0, "a b/c.d*>", true}, {0, "a b/c.d*>", false}, {0, "", true}, {0, "", false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDedupe(tt.key, tt.window)
			for i, s := range tt.steps {
				clock = clock.Add(s.advance)
				out, err := d.Process(ctx, &Record{Fields: map[string]any{"id": s.id}})
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if pass := len(out) == 1; pass != s.pass {
					t.Fatalf("step %d (%v at %s): passed %v, want %v", i, s.id, clock.Format(time.TimeOnly), pass, s.pass)
				}
			}
		})
	}

	t.Run("keys survive a new processor (a restart) once their batch is written", func(t *testing.T) {
		d := newDedupe("row.id", time.Hour)
		if out, _ := d.Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 1 {
			t.Fatal("first sighting dropped")
		}
		commit := d.Prepare()
		// Not written yet: a run resumed now must let the record through
		// again, as its output never had it.
		if out, _ := newDedupe("row.id", time.Hour).Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 1 {
			t.Fatal("a record whose batch was not written was dropped by a new processor")
		}
		if out, _ := d.Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 0 {
			t.Fatal("a duplicate passed the processor that saw it, before its commit")
		}
		if commit == nil || d.Prepare() != nil {
			t.Fatal("Prepare: want the key handed over once")
		}
		if err := commit(ctx); err != nil {
			t.Fatal(err)
		}
		if out, _ := d.Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 0 {
			t.Fatal("a duplicate passed the processor that saw it, after its commit")
		}
		again := newDedupe("row.id", time.Hour)
		if out, _ := again.Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 0 {
			t.Fatal("a duplicate passed a new processor")
		}
		// Another pipeline, or another key expression, has its own keys.
		other := *env
		other.Pipeline = "other"
		o, err := newDeduper(ctx, &other, &config.DedupeProcess{Key: "row.id", Window: config.Duration(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if out, _ := o.Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 1 {
			t.Fatal("another pipeline's key dropped the record")
		}
		if out, _ := newDedupe("row.id + ''", time.Hour).Process(ctx, &Record{Fields: map[string]any{"id": "restart"}}); len(out) != 1 {
			t.Fatal("another key expression's key dropped the record")
		}
	})

	t.Run("the bucket's age limit is raised, never lowered", func(t *testing.T) {
		newDedupe("row.id", 2*time.Hour)
		newDedupe("row.id", time.Minute)
		kv, err := env.JS.KeyValue(ctx, "jt_pipeline_dedupe")
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != 2*time.Hour {
			t.Fatalf("bucket TTL %s, want 2h", st.TTL())
		}
	})

	t.Run("a key that fails is the record's fault", func(t *testing.T) {
		_, err := newDedupe("row.id", time.Hour).Process(ctx, &Record{Fields: map[string]any{}})
		if !errors.Is(err, ErrRecord) || !strings.Contains(err.Error(), "dedupe: key") {
			t.Fatalf("error %v", err)
		}
	})

	t.Run("configuration", func(t *testing.T) {
		for _, c := range []struct {
			env  *Env
			cfg  config.DedupeProcess
			want string
		}{
			{env, config.DedupeProcess{Window: config.Duration(time.Hour)}, "needs key"},
			{env, config.DedupeProcess{Key: "row.id"}, "positive window"},
			{env, config.DedupeProcess{Key: "row.", Window: config.Duration(time.Hour)}, "key"},
			{&Env{}, config.DedupeProcess{Key: "row.id", Window: config.Duration(time.Hour)}, "JetStream"},
		} {
			if _, err := newDeduper(ctx, c.env, &c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%+v: error %v, want one with %q", c.cfg, err, c.want)
			}
		}
	})
}
