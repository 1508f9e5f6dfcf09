package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/pipeline"
)

// connPages serves three pages of two items each at /items?page=N.
func connPages(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("X-Token") != "s3cret" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		p, _ := strconv.Atoi(r.URL.Query().Get("page"))
		if p == 0 {
			p = 1
		}
		body := map[string]any{"items": []any{map[string]any{"id": p*10 + 1}, map[string]any{"id": p*10 + 2}}}
		if p < 3 {
			body["next"] = fmt.Sprintf("/items?page=%d", p+1)
		}
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestHTTPPoll: one pass through the pages in a batch run; a resumed
// run fetches the page of its position again and passes over what it
// handed out; a failing answer fails the run.
func TestHTTPPoll(t *testing.T) {
	srv, _ := connPages(t)
	e := &pipeline.Env{Pipeline: "poll"}
	cfg := &config.PipelineInput{HTTPPoll: &config.HTTPPollInput{URL: srv.URL + "/items", Headers: map[string]string{"X-Token": "s3cret"},
		Records: "input.items", Next: "has(input.next) ? input.next : null"}}
	got := connDrain(t, connInput(t, e, cfg, nil))
	if s := connField(got, "id"); s != "11,12,21,22,31,32" {
		t.Fatalf("read %s", s)
	}
	if s := connField(connDrain(t, connInput(t, e, cfg, got[2].Pos)), "id"); s != "22,31,32" {
		t.Fatalf("resumed mid-page: %s", s)
	}
	if s := connField(connDrain(t, connInput(t, e, cfg, got[3].Pos)), "id"); s != "31,32" {
		t.Fatalf("resumed at a page's end: %s", s)
	}
	bad := &config.PipelineInput{HTTPPoll: &config.HTTPPollInput{URL: srv.URL + "/items", Records: "input.items"}}
	if _, err := connInput(t, e, bad, nil).Next(connCtx(t)); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("unauthorized: %v", err)
	}
}

// TestHTTPPollInterval: with an interval the input polls again after
// the last page, and never ends.
func TestHTTPPollInterval(t *testing.T) {
	srv, hits := connPages(t)
	in := connInput(t, &pipeline.Env{}, &config.PipelineInput{HTTPPoll: &config.HTTPPollInput{URL: srv.URL + "/items?page=3",
		Headers: map[string]string{"X-Token": "s3cret"}, Records: "input.items", Interval: config.Duration(20 * time.Millisecond)}}, nil)
	ctx := connCtx(t)
	n := 0
	for i := 0; i < 200 && n < 6; i++ {
		recs, err := in.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	if n < 6 || hits.Load() < 3 {
		t.Fatalf("%d records in %d polls", n, hits.Load())
	}
}

// TestHTTPOutput: a request per record, or one JSON array per batch;
// an answer other than 2xx is an error.
func TestHTTPOutput(t *testing.T) {
	var (
		mu     sync.Mutex
		bodies []string
		method string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "refuse") {
			http.Error(w, "refused", http.StatusUnprocessableEntity)
			return
		}
		mu.Lock()
		bodies, method = append(bodies, string(b)), r.Method
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	ctx := connCtx(t)
	out, err := pipeline.ConnBuildOutput(ctx, &pipeline.Env{}, &config.PipelineOutput{HTTP: &config.HTTPOut{URL: srv.URL, Method: "put"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Write(ctx, connRecs(map[string]any{"a": 1}, map[string]any{"a": 2})); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 2 || method != "PUT" {
		t.Fatalf("%s %v", method, bodies)
	}
	if err := out.Write(ctx, connRecs(map[string]any{"a": "refuse"})); err == nil || !strings.Contains(err.Error(), "422") {
		t.Fatalf("refused: %v", err)
	}
	batch, err := pipeline.ConnBuildOutput(ctx, &pipeline.Env{}, &config.PipelineOutput{HTTP: &config.HTTPOut{URL: srv.URL, Batch: true}})
	if err != nil {
		t.Fatal(err)
	}
	bodies = nil
	if err := batch.Write(ctx, connRecs(map[string]any{"a": 1}, map[string]any{"a": 2})); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 1 || bodies[0] != `[{"a":1},{"a":2}]` || method != "POST" {
		t.Fatalf("%s %v", method, bodies)
	}
}

// TestReceiver: records posted to a running pipeline with an
// http_server input are written by its output before Post returns;
// posting to a pipeline that is not running fails with ErrNotRunning.
func TestReceiver(t *testing.T) {
	e := connEnv(t, "")
	e.Receiver = pipeline.NewReceiver()
	dir := t.TempDir()
	out := filepath.Join(dir, "out.jsonl")
	c, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`
pipelines:
  inbox:
    stream: true
    input: {http_server: {}}
    processors: [{filter: "row.keep"}]
    batch: {count: 100, period: 50ms}
    output: {jsonl: {path: %q}}
`, out)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ctx := connCtx(t)
	if err := e.Receiver.Post(ctx, "inbox", []map[string]any{{"keep": true}}); !errors.Is(err, pipeline.ErrNotRunning) {
		t.Fatalf("before the run: %v", err)
	}
	m, err := pipeline.New(ctx, pipeline.Options{Pipelines: c.Pipelines, Env: *e})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "inbox", nil); err != nil {
		t.Fatal(err)
	}
	post := func(recs ...map[string]any) error {
		var err error
		for range 100 { // the input registers once the run has built it
			if err = e.Receiver.Post(ctx, "inbox", recs); !errors.Is(err, pipeline.ErrNotRunning) {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
		return err
	}
	recs, err := pipeline.DecodeRecords(strings.NewReader(`{"n": 1, "keep": true}
{"n": 2, "keep": false}
[{"n": 3, "keep": true}]`))
	if err != nil || len(recs) != 3 {
		t.Fatalf("decode: %v %v", recs, err)
	}
	if err := post(recs...); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil || strings.Count(string(b), "\n") != 2 || !strings.Contains(string(b), `"n":3`) {
		t.Fatalf("written before Post returned: %q %v", b, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.Receiver.Post(ctx, "inbox", []map[string]any{{"n": 100 + i, "keep": true}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if b, _ = os.ReadFile(out); strings.Count(string(b), "\n") != 12 {
		t.Fatalf("concurrent posts: %q", b)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m.Stop(sctx)
	if err := e.Receiver.Post(ctx, "inbox", []map[string]any{{"keep": true}}); !errors.Is(err, pipeline.ErrNotRunning) {
		t.Fatalf("after the run: %v", err)
	}
	if _, err := pipeline.DecodeRecords(strings.NewReader(`[1]`)); err == nil {
		t.Fatal("a number was taken for a record")
	}
}
