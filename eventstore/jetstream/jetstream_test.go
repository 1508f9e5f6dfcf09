package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/eventstore/eventstoretest"
	"github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/testutil"
)

var prefixSeq atomic.Int64

func open(t *testing.T, o natsembed.Options, prefix string) eventstore.Store {
	t.Helper()
	return opener(t, o, prefix)(t, time.Now)
}

// opener connects to (or starts) a server and returns an opener of stores
// on it under prefix.
func opener(t *testing.T, o natsembed.Options, prefix string) eventstoretest.Opener {
	t.Helper()
	o.Logger = testutil.Logger(t)
	c, err := natsembed.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return func(t *testing.T, now func() time.Time) eventstore.Store {
		t.Helper()
		s, err := jetstream.Open(context.Background(), c.JS, prefix, jetstream.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestConformanceEmbedded(t *testing.T) {
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Opener {
		return opener(t, natsembed.Options{DataDir: t.TempDir()}, "es")
	})
}

func TestConformanceExternal(t *testing.T) {
	u := testutil.ExternalNATSURL()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	testutil.RequireService(t, "NATS", pu.Host)
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Opener {
		prefix := fmt.Sprintf("estest%d_%d", os.Getpid(), prefixSeq.Add(1))
		t.Cleanup(func() { testutil.CleanupPrefix(t, u, prefix) })
		return opener(t, natsembed.Options{URL: u}, prefix)
	})
}

// An append larger than one claim chunk commits whole; one with more
// events than a position can index is rejected.
func TestLargeAppend(t *testing.T) {
	s := open(t, natsembed.Options{DataDir: t.TempDir()}, "es")
	ctx := context.Background()
	batch := make([]eventstore.EventData, 3000)
	for i := range batch {
		batch[i] = eventstore.EventData{ID: fmt.Sprint("big-", i), Type: "E", Data: []byte(`{}`)}
	}
	r, err := s.Append(ctx, "big-1", eventstore.NoStream, batch)
	if err != nil || r.FirstVersion != 0 || r.LastVersion != 2999 {
		t.Fatalf("append: %+v, %v", r, err)
	}
	got, err := s.ReadStream(ctx, "big-1", eventstore.ReadOptions{})
	if err != nil || len(got) != 3000 || got[2999].Position != r.Position {
		t.Fatalf("read: %d events, %v", len(got), err)
	}
	if r2, err := s.Append(ctx, "big-1", eventstore.NoStream, batch); err != nil || r2 != r {
		t.Fatalf("retry: %+v, %v", r2, err)
	}
	huge := make([]eventstore.EventData, 1<<16)
	for i := range huge {
		huge[i] = eventstore.EventData{Type: "E", Data: []byte(`{}`)}
	}
	if _, err := s.Append(ctx, "big-2", eventstore.Any, huge); !errors.Is(err, eventstore.ErrInvalid) {
		t.Fatalf("append of %d events: %v, want ErrInvalid", len(huge), err)
	}
}

// Reads leave no consumer behind: a busy reader (a projection catching up,
// a rebuild, many API reads) must not exhaust the server's consumers.
func TestReadsLeaveNoConsumers(t *testing.T) {
	ctx := context.Background()
	c, err := natsembed.Start(ctx, natsembed.Options{DataDir: t.TempDir(), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := jetstream.Open(ctx, c.JS, "es")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "order-1", eventstore.Any, []eventstore.EventData{{Type: "A", Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1200; i++ { // more than the 1,000 consumers a stream may have by default
		if _, err := s.ReadAll(ctx, eventstore.ReadAllOptions{Limit: 1}); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	st, err := c.JS.Stream(ctx, "es_events")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers > 10 {
		t.Errorf("%d consumers left on the events stream after 1,200 reads", info.State.Consumers)
	}
}
