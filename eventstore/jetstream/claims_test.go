package jetstream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/natsembed"
)

// quiet discards the embedded server's logs. (internal/testutil cannot be
// imported here: it imports the node, which imports this package.)
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// An append that died between claiming its IDs and committing (simulated
// here by a claim published by hand) blocks a retry only while the claim
// could still belong to an append in flight; after that the retry takes
// the claims over, and a claim for another stream is never taken.
func TestStaleClaimsAreTakenOver(t *testing.T) {
	ctx := context.Background()
	c, err := natsembed.Start(ctx, natsembed.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := Open(ctx, c.JS, "es")
	if err != nil {
		t.Fatal(err)
	}
	claim := func(id, stream string) {
		if _, err := c.JS.PublishMsg(ctx, &nats.Msg{Subject: s.idSubject(id), Data: []byte(stream)}); err != nil {
			t.Fatal(err)
		}
	}
	claim("a1", "order-1")
	claim("b1", "order-2")
	ev := func(id string) []eventstore.EventData {
		return []eventstore.EventData{{ID: id, Type: "Placed", Data: []byte(`{}`)}}
	}
	if _, err := s.Append(ctx, "order-1", eventstore.NoStream, ev("a1")); !errors.Is(err, eventstore.ErrInvalid) {
		t.Fatalf("retry within the grace period: %v, want ErrInvalid", err)
	}
	s.claimGrace = 0
	r, err := s.Append(ctx, "order-1", eventstore.NoStream, ev("a1"))
	if err != nil || r.FirstVersion != 0 {
		t.Fatalf("retry after the grace period: %+v, %v", r, err)
	}
	// Now committed: a further retry is idempotent.
	if r2, err := s.Append(ctx, "order-1", eventstore.NoStream, ev("a1")); err != nil || r2 != r {
		t.Fatalf("idempotent retry: %+v, %v (first %+v)", r2, err, r)
	}
	// A claim naming another stream is not this append's to take.
	if _, err := s.Append(ctx, "order-1", eventstore.Any, ev("b1")); !errors.Is(err, eventstore.ErrInvalid) {
		t.Fatalf("claim of another stream: %v, want ErrInvalid", err)
	}
	got, err := s.ReadStream(ctx, "order-1", eventstore.ReadOptions{})
	if err != nil || len(got) != 1 {
		t.Fatalf("stream holds %d events (%v), want 1", len(got), err)
	}
}

// A commit sent twice (its acknowledgement lost) is stored once, and the
// second send gets the first one's result.
func TestLostAcknowledgementIsDeduplicated(t *testing.T) {
	ctx := context.Background()
	c, err := natsembed.Start(ctx, natsembed.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := Open(ctx, c.JS, "es")
	if err != nil {
		t.Fatal(err)
	}
	events, err := eventstore.Prepare("cart-1", eventstore.Any, []eventstore.EventData{{ID: "c1", Type: "Added", Data: []byte(`{}`)}, {ID: "c2", Type: "Added", Data: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.commit(ctx, "cart-1", eventstore.Any, events)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.commit(ctx, "cart-1", eventstore.Any, events)
	if err != nil || r2 != r1 {
		t.Fatalf("second send: %+v, %v; first %+v", r2, err, r1)
	}
	got, err := s.ReadStream(ctx, "cart-1", eventstore.ReadOptions{})
	if err != nil || len(got) != 2 {
		t.Fatalf("stream holds %d events (%v), want 2", len(got), err)
	}
}
