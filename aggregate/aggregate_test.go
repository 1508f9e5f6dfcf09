package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/aggregate"
	"github.com/junctionhq/junction/eventstore"
)

// A bank account: the running example of these tests.

type account struct {
	Balance int64 `json:"balance"`
	Moves   int   `json:"moves"`
}

type amount struct {
	Amount int64 `json:"amount"`
}

var errInsufficientFunds = errors.New("insufficient funds")

func applyAccount(s account, e eventstore.Event) (account, error) {
	var a amount
	if err := json.Unmarshal(e.Data, &a); err != nil {
		return s, err
	}
	switch e.Type {
	case "Deposited":
		s.Balance += a.Amount
	case "Withdrawn":
		s.Balance -= a.Amount
	default:
		return s, fmt.Errorf("unknown event type %q", e.Type)
	}
	s.Moves++
	return s, nil
}

func moved(typ string, n int64) eventstore.EventData {
	return eventstore.EventData{Type: typ, Data: fmt.Appendf(nil, `{"amount":%d}`, n)}
}

func deposit(n int64) func(account) ([]eventstore.EventData, error) {
	return func(account) ([]eventstore.EventData, error) {
		return []eventstore.EventData{moved("Deposited", n)}, nil
	}
}

func withdraw(n int64) func(account) ([]eventstore.EventData, error) {
	return func(s account) ([]eventstore.EventData, error) {
		if s.Balance < n {
			return nil, errInsufficientFunds
		}
		return []eventstore.EventData{moved("Withdrawn", n)}, nil
	}
}

// accounts returns an account aggregate that counts its Apply calls.
func accounts(s eventstore.Store, snaps aggregate.Snapshots, every int) (*aggregate.Aggregate[account], *atomic.Int64) {
	var applied atomic.Int64
	return &aggregate.Aggregate[account]{
		Store:     s,
		Snapshots: snaps,
		Apply: func(s account, e eventstore.Event) (account, error) {
			applied.Add(1)
			return applyAccount(s, e)
		},
		SnapshotEvery: every,
	}, &applied
}

func mustLoad(t *testing.T, a *aggregate.Aggregate[account], stream string, want account, wantVersion int64) {
	t.Helper()
	got, v, err := a.Load(ctxT(t), stream)
	if err != nil || got != want || v != wantVersion {
		t.Fatalf("load %s: %+v at %d (%v), want %+v at %d", stream, got, v, err, want, wantVersion)
	}
}

func TestBankAccount(t *testing.T) {
	eachBackend(t, func(t *testing.T, s eventstore.Store, _ aggregate.Snapshots) {
		ctx := ctxT(t)
		a, _ := accounts(s, nil, 0)
		const acct = "account-1"
		mustLoad(t, a, acct, account{}, -1)

		steps := []struct {
			name    string
			decide  func(account) ([]eventstore.EventData, error)
			wantErr error
			want    account
			version int64
		}{
			{"open with a deposit", deposit(100), nil, account{100, 1}, 0},
			{"withdraw", withdraw(30), nil, account{70, 2}, 1},
			{"overdraw", withdraw(71), errInsufficientFunds, account{70, 2}, 1},
			{"withdraw all", withdraw(70), nil, account{0, 3}, 2},
			{"nothing to do", func(account) ([]eventstore.EventData, error) { return nil, nil }, nil, account{0, 3}, 2},
		}
		for _, st := range steps {
			r, err := a.Execute(ctx, acct, st.decide)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("%s: %v, want %v", st.name, err, st.wantErr)
			}
			if err == nil && st.name != "nothing to do" && int64(r.LastVersion) != st.version {
				t.Fatalf("%s: appended at %+v, want version %d", st.name, r, st.version)
			}
			mustLoad(t, a, acct, st.want, st.version)
		}

		// A deleted account loads as a new one and can be opened again;
		// versions go on where they were.
		if err := s.Delete(ctx, acct); err != nil {
			t.Fatal(err)
		}
		mustLoad(t, a, acct, account{}, -1)
		r, err := a.Execute(ctx, acct, deposit(5))
		if err != nil || r.FirstVersion != 3 {
			t.Fatalf("reopening: %+v, %v", r, err)
		}
		mustLoad(t, a, acct, account{5, 1}, 3)
	})
}

// Ten writers on one account: every command succeeds, by retrying after
// losing races, and no deposit is lost or counted twice.
func TestConcurrentExecute(t *testing.T) {
	eachBackend(t, func(t *testing.T, s eventstore.Store, snaps aggregate.Snapshots) {
		ctx := ctxT(t)
		a, _ := accounts(s, snaps, 7)
		const writers, each = 10, 5
		// Every failed attempt means another writer's append landed
		// between its load and its append, so a command retries at most
		// once per other command: this many retries always suffice.
		a.MaxRetries = writers*each - 1
		var decisions atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for range each {
					_, err := a.Execute(ctx, "account-c", func(s account) ([]eventstore.EventData, error) {
						decisions.Add(1)
						return deposit(int64(w + 1))(s)
					})
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("execute: %v", err)
			}
		}
		// 5 * (1+2+...+10)
		want := account{Balance: each * writers * (writers + 1) / 2, Moves: writers * each}
		mustLoad(t, a, "account-c", want, writers*each-1)
		plain, _ := accounts(s, nil, 0)
		mustLoad(t, plain, "account-c", want, writers*each-1)
		t.Logf("%d commands took %d decisions", writers*each, decisions.Load())
	})
}

// A load from a snapshot gives what a full replay gives, applying only
// the events after the snapshot.
func TestSnapshotLoad(t *testing.T) {
	eachBackend(t, func(t *testing.T, s eventstore.Store, snaps aggregate.Snapshots) {
		ctx := ctxT(t)
		a, applied := accounts(s, snaps, 10)
		const acct = "account-s"
		for i := range 95 {
			decide := deposit(int64(i))
			if i%3 == 2 {
				decide = withdraw(1)
			}
			if _, err := a.Execute(ctx, acct, decide); err != nil {
				t.Fatal(err)
			}
		}
		snap, ok, err := snaps.Load(ctx, acct)
		if err != nil || !ok || snap.Version != 89 {
			t.Fatalf("snapshot after 95 events: %+v, %v, %v", snap, ok, err)
		}

		full, fullApplied := accounts(s, nil, 0)
		want, wantV, err := full.Load(ctx, acct)
		if err != nil || wantV != 94 || fullApplied.Load() != 95 {
			t.Fatalf("full replay: %+v at %d, %d events applied, %v", want, wantV, fullApplied.Load(), err)
		}
		applied.Store(0)
		mustLoad(t, a, acct, want, 94)
		if n := applied.Load(); n != 5 {
			t.Errorf("load from the snapshot applied %d events, want the 5 after it", n)
		}

		// A snapshot that no longer decodes into the state costs a full
		// replay, not a failure.
		if err := snaps.Save(ctx, aggregate.Snapshot{Stream: acct, Version: 200, State: []byte(`"not an account"`), Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
		applied.Store(0)
		mustLoad(t, a, acct, want, 94)
		if n := applied.Load(); n != 95 {
			t.Errorf("load past a broken snapshot applied %d events, want 95", n)
		}
	})
}

// A snapshot taken before a stream was deleted does not leak into the
// stream started again after it.
func TestSnapshotAfterDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, s eventstore.Store, snaps aggregate.Snapshots) {
		ctx := ctxT(t)
		a, _ := accounts(s, snaps, 2)
		const acct = "account-d"
		for range 4 {
			if _, err := a.Execute(ctx, acct, deposit(10)); err != nil {
				t.Fatal(err)
			}
		}
		if snap, ok, _ := snaps.Load(ctx, acct); !ok || snap.Version != 3 {
			t.Fatalf("snapshot: %+v, %v", snap, ok)
		}
		if err := s.Delete(ctx, acct); err != nil {
			t.Fatal(err)
		}
		mustLoad(t, a, acct, account{}, -1)
		if _, err := a.Execute(ctx, acct, deposit(1)); err != nil {
			t.Fatal(err)
		}
		mustLoad(t, a, acct, account{1, 1}, 4)
		// The next snapshot (at 5, crossing 6 events) replaces the stale one.
		if _, err := a.Execute(ctx, acct, deposit(1)); err != nil {
			t.Fatal(err)
		}
		if snap, ok, _ := snaps.Load(ctx, acct); !ok || snap.Version != 5 || string(snap.State) != `{"balance":2,"moves":2}` {
			t.Fatalf("snapshot after restart: %+v (%s), %v", snap, snap.State, ok)
		}
		mustLoad(t, a, acct, account{2, 2}, 5)
	})
}

// failingSnapshots cannot save.
type failingSnapshots struct{ aggregate.Snapshots }

func (failingSnapshots) Save(context.Context, aggregate.Snapshot) error {
	return errors.New("snapshot store is down")
}

func TestExecuteRetries(t *testing.T) {
	eachBackend(t, func(t *testing.T, s eventstore.Store, snaps aggregate.Snapshots) {
		ctx := ctxT(t)
		// decide loses a race on its first call: another writer appends
		// to the stream before Execute does.
		racing := func(stream string, calls *int) func(account) ([]eventstore.EventData, error) {
			return func(st account) ([]eventstore.EventData, error) {
				*calls++
				if *calls == 1 {
					if _, err := s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{moved("Deposited", 1)}); err != nil {
						return nil, err
					}
				}
				return deposit(10)(st)
			}
		}
		tests := []struct {
			name      string
			retries   int
			wantErr   error
			wantCalls int
		}{
			{"retried", 0, nil, 2},
			{"no retries", -1, eventstore.ErrWrongVersion, 1},
		}
		for i, tc := range tests {
			a, _ := accounts(s, failingSnapshots{snaps}, 1)
			a.MaxRetries = tc.retries
			stream := fmt.Sprint("account-r", i)
			calls := 0
			_, err := a.Execute(ctx, stream, racing(stream, &calls))
			if !errors.Is(err, tc.wantErr) || calls != tc.wantCalls {
				t.Errorf("%s: %v after %d decisions, want %v after %d", tc.name, err, calls, tc.wantErr, tc.wantCalls)
			}
		}
	})
}

func TestNoApply(t *testing.T) {
	a := aggregate.Aggregate[account]{}
	if _, _, err := a.Load(context.Background(), "x-1"); !errors.Is(err, aggregate.ErrNoApply) {
		t.Fatalf("load without Apply: %v", err)
	}
}

// A stream with a retention keeps only its last events; its snapshot
// keeps the effect of the others, even when the snapshot's own event has
// expired.
func TestSnapshotWithRetention(t *testing.T) {
	eachBackend(t, func(t *testing.T, s eventstore.Store, snaps aggregate.Snapshots) {
		rs, ok := s.(interface {
			SetRetention(context.Context, string, eventstore.Retention) error
		})
		if !ok {
			t.Skip("the store has no retention")
		}
		ctx := ctxT(t)
		const acct = "account-ret"
		a, applied := accounts(s, snaps, 4)
		for range 10 {
			if _, err := a.Execute(ctx, acct, deposit(1)); err != nil {
				t.Fatal(err)
			}
		}
		// The snapshot is at version 7; once the retention drops all but
		// the last 2 events, its own event is gone, and 8 and 9 are left.
		if err := rs.SetRetention(ctx, acct, eventstore.Retention{MaxCount: 2}); err != nil {
			t.Fatal(err)
		}
		applied.Store(0)
		mustLoad(t, a, acct, account{10, 10}, 9)
		if n := applied.Load(); n != 2 {
			t.Errorf("applied %d events, want the 2 kept", n)
		}
		// Commands go on from there.
		if _, err := a.Execute(ctx, acct, withdraw(10)); err != nil {
			t.Fatal(err)
		}
		// But snapshots every 4 events cannot keep up with a retention of
		// 2: event 8 is gone, and the snapshot is at 7.
		if _, _, err := a.Load(ctx, acct); !errors.Is(err, aggregate.ErrExpired) {
			t.Fatalf("load with a gap after the snapshot: %v, want ErrExpired", err)
		}
	})
}
