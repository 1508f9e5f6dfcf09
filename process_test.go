package junction_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/testutil"
)

// Every message whose publish was acknowledged survives kill -9 of the
// process, and publishing the same ids again after the restart stores
// nothing twice.
func TestAcknowledgedMessagesSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := t.TempDir()
	p := testutil.StartProcess(t, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
	c := client.New(p.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const workers = 8
	var mu sync.Mutex
	acked := map[string]bool{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				id := fmt.Sprintf("msg-%06d", i)
				if _, err := c.Publish(ctx, "durable", client.Event{ID: id, Data: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
					return // the process is gone
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	testutil.Eventually(t, 60*time.Second, "2000 acknowledged publishes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 2000
	})
	// A registration acknowledged just before the crash survives it too.
	if st, _, body := testutil.Do(t, "PUT", p.URL+"/v1/services/billing/instances/b1", nil, `{"url":"http://127.0.0.1:7003","ttl":"1h"}`); st != 201 {
		t.Fatalf("register: %d %s", st, body)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if code, _ := p.Wait(ctx); code != -1 {
		t.Fatalf("process exited with %d, want killed", code)
	}
	t.Logf("%d publishes acknowledged before kill -9", len(acked))

	p2 := testutil.StartProcess(t, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
	c2 := client.New(p2.URL)
	if st, _, body := testutil.Do(t, "GET", p2.URL+"/v1/services/billing", nil, ""); st != 200 || !strings.Contains(body, `"id":"b1"`) {
		t.Fatalf("registration lost after kill -9: %d %s", st, body)
	}
	if _, err := c2.PutSubscription(ctx, "check", client.Subscription{Topic: "durable", Start: "all"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for {
		ms, err := c2.Pull(ctx, "check", 1000, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		ids := make([]string, len(ms))
		for i, m := range ms {
			seen[m.ID]++
			ids[i] = m.AckID
		}
		if err := c2.Ack(ctx, "check", ids...); err != nil {
			t.Fatal(err)
		}
	}
	lost := 0
	for id := range acked {
		if seen[id] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages lost after kill -9", lost, len(acked))
	}
	for id, n := range seen {
		if n > 1 {
			t.Fatalf("%s stored %d times", id, n)
		}
	}
	// A client retrying its acknowledged publishes after the crash gets
	// "duplicate" and stores nothing new.
	var evs []client.Event
	for id := range acked {
		if len(evs) == 500 {
			break
		}
		evs = append(evs, client.Event{ID: id, Data: []byte("{}")})
	}
	rs, err := c2.PublishBatch(ctx, "durable", evs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if !r.Duplicate {
			t.Fatalf("re-published %s was stored again", r.ID)
		}
	}
}

// SIGTERM lets an in-flight webhook call finish and be acknowledged, then
// exits 0; nothing is delivered twice after a restart.
func TestGracefulShutdownFinishesInFlightDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	var calls atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		calls.Add(1)
		entered <- struct{}{}
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "junction.yaml")
	cfg := fmt.Sprintf("data_dir: %s\napi: { listen: 127.0.0.1:0 }\nshutdown_timeout: 20s\nsubscriptions:\n  hook:\n    topic: jobs\n    push: { url: %s, timeout: 30s }\n", filepath.Join(dir, "data"), hook.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProcess(t, nil, "serve", "-c", cfgPath)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.New(p.URL).Publish(ctx, "jobs", client.Event{ID: "job-1", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	<-entered
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The node must still be running while the call is in flight.
	testutil.Eventually(t, 10*time.Second, "shutdown to begin", func() bool {
		return strings.Contains(p.Stderr(), "shutting down")
	})
	close(release)
	code, err := p.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("exit %d (%v)\n%s", code, err, p.Stderr())
	}
	// Restart: the message was acknowledged, so it is not delivered again.
	p2 := testutil.StartProcess(t, nil, "serve", "-c", cfgPath)
	c2 := client.New(p2.URL)
	testutil.Eventually(t, 10*time.Second, "subscription settled", func() bool {
		si, err := c2.GetSubscription(ctx, "hook")
		return err == nil && si.Stats.Pending == 0 && si.Stats.InFlight == 0
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("webhook called %d times, want 1", n)
	}
}

// Every acknowledged append survives kill -9, whole: no multi-event append
// is half-written, versions stay gapless, and a retry of an acknowledged
// append after the restart is idempotent.
func TestAcknowledgedAppendsSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := t.TempDir()
	p := testutil.StartProcess(t, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
	c := client.New(p.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	type ack struct {
		stream string
		events []client.EventData
		res    client.AppendResult
	}
	const writers = 6
	var mu sync.Mutex
	var acked []ack
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("order-%d", w)
			for i := 0; ; i++ {
				evs := make([]client.EventData, 3) // one append, three events
				for j := range evs {
					evs[j] = client.EventData{ID: fmt.Sprintf("%s-%d-%d", stream, i, j), Type: "Step", Data: fmt.Appendf(nil, `{"i":%d,"j":%d}`, i, j)}
				}
				r, err := c.Append(ctx, stream, client.ExpectAny, evs...)
				if err != nil {
					return // the process is gone
				}
				mu.Lock()
				acked = append(acked, ack{stream, evs, r})
				mu.Unlock()
			}
		}()
	}
	testutil.Eventually(t, 60*time.Second, "600 acknowledged appends", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 600
	})
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if code, _ := p.Wait(ctx); code != -1 {
		t.Fatalf("process exited with %d, want killed", code)
	}
	t.Logf("%d appends of 3 events acknowledged before kill -9", len(acked))

	p2 := testutil.StartProcess(t, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
	c2 := client.New(p2.URL)
	stored := map[string]client.StreamEvent{}
	for w := range writers {
		stream := fmt.Sprintf("order-%d", w)
		evs, err := c2.ReadStream(ctx, stream, client.ReadStreamOptions{Limit: 10000})
		if err != nil {
			t.Fatalf("read %s: %v", stream, err)
		}
		if len(evs)%3 != 0 {
			t.Errorf("%s holds %d events: an append of 3 was half-written", stream, len(evs))
		}
		for i, e := range evs {
			if e.Version != uint64(i) {
				t.Fatalf("%s: event %d has version %d: a gap", stream, i, e.Version)
			}
			stored[e.ID] = e
		}
	}
	for _, a := range acked {
		for j, e := range a.events {
			got, ok := stored[e.ID]
			if !ok {
				t.Fatalf("acknowledged event %s lost after kill -9", e.ID)
			}
			if got.Version != a.res.FirstVersion+uint64(j) {
				t.Fatalf("%s has version %d, acknowledged as %d", e.ID, got.Version, a.res.FirstVersion+uint64(j))
			}
		}
	}
	// A client retrying an acknowledged append gets its original result.
	a := acked[len(acked)-1]
	r, err := c2.Append(ctx, a.stream, client.ExpectAny, a.events...)
	if err != nil || r != a.res {
		t.Fatalf("retry after restart: %+v, %v; acknowledged %+v", r, err, a.res)
	}
}

// A projection killed with -9 while it applies events resumes after the
// restart, and its view then equals a recomputation from the events: no
// event applied twice (its counters are not idempotent), none skipped.
func TestProjectionSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := t.TempDir()
	cfgPath := filepath.Join(data, "junction.yaml")
	cfg := `data_dir: ` + data + `
api: { listen: 127.0.0.1:0 }
projections:
  balances:
    from: { categories: [acct] }
    table:
      columns: { id: text, deposits: integer, total: real }
      key: id
    handlers:
      Deposited:
        upsert:
          id: event.stream
          deposits: row.?deposits.orValue(0) + 1
          total: row.?total.orValue(0.0) + double(event.data.amount)
    batch_size: 100
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProcess(t, nil, "serve", "-c", cfgPath)
	c := client.New(p.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	var acked atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				evs := make([]client.EventData, 20)
				for j := range evs {
					evs[j] = client.EventData{Type: "Deposited", Data: fmt.Appendf(nil, `{"amount":%d.25}`, 1+(i+j)%7)}
				}
				if _, err := c.Append(ctx, fmt.Sprintf("acct-%d", (w*31+i)%13), client.ExpectAny, evs...); err != nil {
					return // the process is gone
				}
				acked.Add(int64(len(evs)))
			}
		}()
	}
	// Kill while the view is applying: it has applied thousands of
	// events, and fewer than were acknowledged.
	var applied uint64
	testutil.Eventually(t, 60*time.Second, "the projection applying events", func() bool {
		ps, err := c.Projections(ctx)
		if err != nil || len(ps) != 1 {
			return false
		}
		applied = ps[0].AppliedEvents
		return applied >= 3000 && int64(applied) < acked.Load()
	})
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if code, _ := p.Wait(ctx); code != -1 {
		t.Fatalf("process exited with %d, want killed", code)
	}

	p2 := testutil.StartProcess(t, nil, "serve", "-c", cfgPath)
	c2 := client.New(p2.URL)
	// Recompute the view from the log.
	type acct struct {
		deposits int64
		total    float64
	}
	want := map[string]*acct{}
	var last uint64
	for from := uint64(0); ; {
		page, err := c2.ReadAll(ctx, client.ReadAllOptions{FromPosition: from, Limit: 10000, Categories: []string{"acct"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			var d struct{ Amount float64 }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			a := want[e.Stream]
			if a == nil {
				a = &acct{}
				want[e.Stream] = a
			}
			a.deposits++
			a.total += d.Amount
			last = e.Position
		}
		if len(page.Events) == 0 {
			break
		}
		from = page.NextPosition
	}
	rows, err := c2.ListRows(ctx, "balances", client.ViewQuery{Limit: 100, MinPosition: last, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows.Rows) != len(want) {
		t.Fatalf("view has %d rows, the log %d accounts", len(rows.Rows), len(want))
	}
	var events int64
	for _, r := range rows.Rows {
		a := want[r["id"].(string)]
		if a == nil || r["deposits"] != float64(a.deposits) || r["total"] != a.total {
			t.Errorf("row %v, recomputed %+v", r, a)
		}
		events += a.deposits
	}
	ps, err := c2.Projections(ctx)
	if err != nil || ps[0].State != "running" {
		t.Fatalf("status after restart: %+v %v", ps, err)
	}
	t.Logf("view equals the recomputation of %d events after kill -9 (%d applied when killed)", events, applied)
}
