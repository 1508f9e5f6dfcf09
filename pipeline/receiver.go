package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
)

// ErrNotRunning means records were posted to a pipeline whose
// http_server input is not running (the pipeline is not running, or its
// input is another kind).
var ErrNotRunning = errors.New("pipeline is not running")

// Receiver passes the records posted to a pipeline over HTTP to its
// http_server input. One Receiver serves every pipeline of a node; the
// zero value is ready to use.
type Receiver struct {
	mu     sync.Mutex
	inputs map[string]*serverInput
}

// NewReceiver returns an empty Receiver.
func NewReceiver() *Receiver { return &Receiver{} }

// Post hands recs to pipeline's http_server input and waits until the
// pipeline has committed them: written by its output (or, for records a
// processor or the output refused, counted and dead-lettered; those a
// filter dropped are done too). It returns an error wrapping
// ErrNotRunning when the pipeline's input is not running, or when the
// run ends before committing them; ctx's error when ctx ends first (the
// records may still be written: delivery is at least once, and a client
// that retries may write them twice).
func (rc *Receiver) Post(ctx context.Context, pipeline string, recs []map[string]any) error {
	if rc == nil {
		return fmt.Errorf("%w: %s", ErrNotRunning, pipeline)
	}
	rc.mu.Lock()
	in := rc.inputs[pipeline]
	rc.mu.Unlock()
	if in == nil {
		return fmt.Errorf("%w: %s has no http_server input running", ErrNotRunning, pipeline)
	}
	if len(recs) == 0 {
		return nil
	}
	p := &post{recs: recs, done: make(chan error, 1)}
	select {
	case in.queue <- p:
	case <-in.stopped:
		return fmt.Errorf("%w: %s stopped", ErrNotRunning, pipeline)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		return err
	case <-in.stopped:
		select {
		case err := <-p.done:
			return err
		default:
			return fmt.Errorf("%w: %s stopped before writing the records", ErrNotRunning, pipeline)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (rc *Receiver) register(name string, in *serverInput) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.inputs == nil {
		rc.inputs = map[string]*serverInput{}
	}
	rc.inputs[name] = in
}

func (rc *Receiver) unregister(name string, in *serverInput) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.inputs[name] == in {
		delete(rc.inputs, name)
	}
}

// DecodeRecords reads posted records: one JSON object, an array of
// objects, or JSON lines (one object a line).
func DecodeRecords(r io.Reader) ([]map[string]any, error) {
	dec := json.NewDecoder(r)
	var out []map[string]any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("records: %w", err)
		}
		switch x := v.(type) {
		case map[string]any:
			out = append(out, x)
		case []any:
			for i, e := range x {
				m, ok := e.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("records: element %d is %s, not an object", i, jsonKind(e))
				}
				out = append(out, m)
			}
		default:
			return nil, fmt.Errorf("records: %s is not an object, an array of objects or JSON lines", jsonKind(v))
		}
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	}
	return "an object"
}

// post is one Post's records, waiting for their commit.
type post struct {
	recs []map[string]any
	done chan error
	// last is the sequence number of the post's last record, once it
	// is handed out whole.
	last int64
}

// serverInput is the http_server input: the records posted to its
// pipeline, numbered in the order handed out (the number is the
// position). It has nothing to resume: records of an interrupted run
// that were never committed failed their Post, and their clients post
// them again.
type serverInput struct {
	rc      *Receiver
	name    string
	queue   chan *post
	stopped chan struct{}
	once    sync.Once

	mu      sync.Mutex
	seq     int64
	cur     *post // handed out in part
	off     int
	waiting []*post // handed out whole, oldest first
}

func init() {
	inputs["http_server"] = func(_ context.Context, env *Env, _ *config.PipelineInput, _ json.RawMessage) (Input, error) {
		if env.Receiver == nil {
			return nil, errors.New("http_server input: the node has no receiver")
		}
		return newServerInput(env.Receiver, env.Pipeline), nil
	}
}

func newServerInput(rc *Receiver, name string) *serverInput {
	in := &serverInput{rc: rc, name: name, queue: make(chan *post, 64), stopped: make(chan struct{})}
	rc.register(name, in)
	return in
}

// serverWait is how long Next waits for a post before returning none,
// so that the runner can flush by period and tick its processors.
const serverWait = 100 * time.Millisecond

func (in *serverInput) Next(ctx context.Context) ([]*Record, error) {
	in.mu.Lock()
	cur := in.cur
	in.mu.Unlock()
	if cur == nil {
		t := time.NewTimer(serverWait)
		defer t.Stop()
		select {
		case p := <-in.queue:
			cur = p
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.cur = cur
	out := make([]*Record, 0, batchRecords)
	for len(out) < batchRecords && in.cur != nil {
		for in.off < len(in.cur.recs) && len(out) < batchRecords {
			in.seq++
			out = append(out, &Record{Fields: in.cur.recs[in.off], Pos: json.RawMessage(strconv.FormatInt(in.seq, 10))})
			in.off++
		}
		if in.off < len(in.cur.recs) {
			break
		}
		in.cur.last = in.seq
		in.waiting = append(in.waiting, in.cur)
		in.cur, in.off = nil, 0
		select {
		case p := <-in.queue:
			in.cur = p
		default:
		}
	}
	return out, nil
}

// Commit completes the posts whose records are all at or before pos.
func (in *serverInput) Commit(_ context.Context, pos json.RawMessage) error {
	n, err := strconv.ParseInt(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("http_server input: position %s: %w", pos, err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	i := 0
	for ; i < len(in.waiting) && in.waiting[i].last <= n; i++ {
		in.waiting[i].done <- nil
	}
	in.waiting = in.waiting[i:]
	return nil
}

// Close fails the posts not yet committed.
func (in *serverInput) Close() error {
	in.once.Do(func() {
		in.rc.unregister(in.name, in)
		close(in.stopped)
		in.mu.Lock()
		defer in.mu.Unlock()
		fail := func(p *post) {
			p.done <- fmt.Errorf("%w: %s stopped before writing the records", ErrNotRunning, in.name)
		}
		for _, p := range in.waiting {
			fail(p)
		}
		in.waiting = nil
		if in.cur != nil {
			fail(in.cur)
			in.cur = nil
		}
		for {
			select {
			case p := <-in.queue:
				fail(p)
			default:
				return
			}
		}
	})
	return nil
}
