package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// brokerInput hands out records as a broker does, and notes how many it
// had handed out and not yet seen committed each time it was asked for
// more: a broker with a bound on unacknowledged messages stalls a reader
// that asks for more before acknowledging.
type brokerInput struct {
	per, total       int
	sent, committed  int
	uncommittedAtAsk []int
}

func (b *brokerInput) Next(context.Context) ([]*Record, error) {
	b.uncommittedAtAsk = append(b.uncommittedAtAsk, b.sent-b.committed)
	if b.sent >= b.total {
		return nil, io.EOF
	}
	var out []*Record
	for range b.per {
		b.sent++
		out = append(out, &Record{Fields: map[string]any{"n": b.sent}, Pos: json.RawMessage(strconv.Itoa(b.sent))})
	}
	return out, nil
}

func (b *brokerInput) Commit(_ context.Context, pos json.RawMessage) error {
	n, err := strconv.Atoi(string(pos))
	b.committed = n
	return err
}

func (b *brokerInput) Close() error { return nil }

// recordingOutput keeps what it is given, and can hold a write until
// released.
type recordingOutput struct {
	mu      sync.Mutex
	n       int
	hold    chan struct{} // nil: writes at once
	writing chan struct{} // told when a held write starts
}

func (o *recordingOutput) Write(ctx context.Context, recs []*Record) error {
	if o.hold != nil {
		o.writing <- struct{}{}
		select {
		case <-o.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n += len(recs)
	return nil
}

func (o *recordingOutput) Close() error { return nil }

// TestBrokerInputCommitsBeforeReadingOn: an input that does not read
// ahead is asked for more only once the batch before is written and
// committed, so that a broker bounding unacknowledged messages is never
// left waiting for acknowledgements of records already handed out.
func TestBrokerInputCommitsBeforeReadingOn(t *testing.T) {
	in := &brokerInput{per: 100, total: 1000}
	out := &recordingOutput{}
	r := &runner{in: in, outs: []Output{out}, batch: config.PipelineBatch{Count: 100, Period: config.Duration(time.Hour)}}
	if err := r.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out.n != 1000 || r.c.Written != 1000 || in.committed != 1000 {
		t.Fatalf("wrote %d (counted %d), committed %d; want 1000", out.n, r.c.Written, in.committed)
	}
	for i, u := range in.uncommittedAtAsk {
		if u != 0 {
			t.Fatalf("asked for more records with %d uncommitted (ask %d of %v)", u, i, in.uncommittedAtAsk)
		}
	}
}

// sliceInput is a finite input that reads ahead, as files do (so its
// Next and Commit may run at once).
type sliceInput struct {
	mu sync.Mutex
	brokerInput
}

func (*sliceInput) readsAhead() {}

func (s *sliceInput) Next(ctx context.Context) ([]*Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.brokerInput.Next(ctx)
}

func (s *sliceInput) Commit(ctx context.Context, pos json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.brokerInput.Commit(ctx, pos)
}

// TestWriteOverlapsReading: with an input that reads ahead, the next
// batch is read and processed while one is being written, and the
// position of a batch is committed only once it is written, in order.
func TestWriteOverlapsReading(t *testing.T) {
	in := &sliceInput{brokerInput: brokerInput{per: 100, total: 300}}
	out := &recordingOutput{hold: make(chan struct{}), writing: make(chan struct{})}
	r := &runner{in: in, outs: []Output{out}, batch: config.PipelineBatch{Count: 100, Period: config.Duration(time.Hour)}}
	var (
		mu      sync.Mutex
		commits []int
	)
	r.save = func(_ context.Context, pos json.RawMessage, c Counters, _ map[int][]byte) error {
		n, _ := strconv.Atoi(string(pos))
		mu.Lock()
		defer mu.Unlock()
		commits = append(commits, n)
		if c.Read != int64(n) {
			return fmt.Errorf("checkpoint at %d counts %d read", n, c.Read)
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- r.run(context.Background()) }()
	for i := range 3 {
		select {
		case <-out.writing:
		case <-time.After(10 * time.Second):
			t.Fatalf("write %d never started", i+1)
		}
		mu.Lock()
		if len(commits) != i {
			t.Errorf("batch %d being written with %d batches committed", i+1, len(commits))
		}
		mu.Unlock()
		out.hold <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(commits) != "[100 200 300]" || out.n != 300 {
		t.Fatalf("commits %v, wrote %d", commits, out.n)
	}
}

// streamInput hands out its records, then waits for more that never
// come, as a quiet stream does.
type streamInput struct {
	brokerInput
	drained chan struct{} // closed once every record is handed out
}

func (s *streamInput) Next(ctx context.Context) ([]*Record, error) {
	if s.sent < s.total {
		return s.brokerInput.Next(ctx)
	}
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestStopFlushesGatheredBatch: a run stopped with records gathered in a
// batch that is not full writes them and commits their position before
// it returns, so a stopping node leaves nothing half done.
func TestStopFlushesGatheredBatch(t *testing.T) {
	in := &streamInput{brokerInput: brokerInput{per: 50, total: 150}, drained: make(chan struct{})}
	out := &recordingOutput{}
	r := &runner{in: in, outs: []Output{out}, batch: config.PipelineBatch{Count: 1000, Period: config.Duration(time.Hour)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	select {
	case <-in.drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the input was never drained")
	}
	if out.n != 0 {
		t.Fatalf("%d records written before the batch was full or the run stopped", out.n)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("run ended with %v, want context.Canceled", err)
	}
	if out.n != 150 || in.committed != 150 || r.c.Written != 150 {
		t.Fatalf("after stop: wrote %d, committed %d, counted %d; want 150", out.n, in.committed, r.c.Written)
	}
}

// idleInput hands out its records, then answers with none until the run
// stops, as a broker's fetch does on a quiet stream.
type idleInput struct {
	brokerInput
	mu        sync.Mutex
	committed int
}

func (s *idleInput) Next(ctx context.Context) ([]*Record, error) {
	if s.sent < s.total {
		return s.brokerInput.Next(ctx)
	}
	select {
	case <-time.After(5 * time.Millisecond): // a fetch's wait
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *idleInput) Commit(_ context.Context, pos json.RawMessage) error {
	n, err := strconv.Atoi(string(pos))
	s.mu.Lock()
	s.committed = n
	s.mu.Unlock()
	return err
}

func (s *idleInput) done() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed
}

type dropAll struct{}

func (dropAll) Process(context.Context, *Record) ([]*Record, error) { return nil, nil }

// TestFilteredRecordsCommitByPeriod: records that all end at a filter
// (nothing to write) are still committed once the batch period passes,
// rather than held unacknowledged at their broker for as long as the
// stream is quiet.
func TestFilteredRecordsCommitByPeriod(t *testing.T) {
	in := &idleInput{brokerInput: brokerInput{per: 50, total: 150}}
	out := &recordingOutput{}
	r := &runner{in: in, procs: []Processor{dropAll{}}, outs: []Output{out},
		batch: config.PipelineBatch{Count: 1000, Period: config.Duration(20 * time.Millisecond)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for in.done() < 150 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	committed := in.done()
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("run ended with %v, want context.Canceled", err)
	}
	if committed != 150 {
		t.Fatalf("the running stream committed %d of its 150 filtered records", committed)
	}
	if out.n != 0 || r.c.Filtered != 150 {
		t.Fatalf("wrote %d, filtered %d", out.n, r.c.Filtered)
	}
}
