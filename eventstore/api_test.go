package eventstore_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/testutil"
)

const (
	pgAddr = "127.0.0.1:5432"
	pgDSN  = "postgres://postgres@" + pgAddr + "/test?sslmode=disable"
)

var schemaSeq atomic.Int64

// startNode runs a node on the named event store backend. The postgres
// backend gets a schema of its own, dropped when the test ends.
func startNode(t *testing.T, backend string) *testutil.Node {
	t.Helper()
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.API.MaxBodyBytes = 4096
	if backend == "postgres" {
		testutil.RequireService(t, "PostgreSQL", pgAddr)
		schema := fmt.Sprintf("es_api_%d_%d", os.Getpid(), schemaSeq.Add(1))
		cfg.EventStore.Backend, cfg.EventStore.DSN, cfg.EventStore.Schema = "postgres", pgDSN, schema
		t.Cleanup(func() { // runs after the node has stopped
			db, err := sql.Open("pgx", pgDSN)
			if err != nil {
				t.Error(err)
				return
			}
			defer db.Close()
			if _, err := db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`); err != nil {
				t.Errorf("dropping schema %s: %v", schema, err)
			}
		})
	}
	return testutil.Start(t, cfg)
}

func forEachBackend(t *testing.T, fn func(t *testing.T, n *testutil.Node)) {
	for _, b := range []string{"jetstream", "postgres"} {
		t.Run(b, func(t *testing.T) { fn(t, startNode(t, b)) })
	}
}

type appendResult struct {
	FirstVersion uint64 `json:"first_version"`
	LastVersion  uint64 `json:"last_version"`
	Position     uint64 `json:"position"`
}

type event struct {
	Stream   string          `json:"stream"`
	Version  uint64          `json:"version"`
	Position uint64          `json:"position"`
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata"`
	Time     string          `json:"time"`
}

type problemBody struct {
	Status          int    `json:"status"`
	Code            string `json:"code"`
	Detail          string `json:"detail"`
	CurrentVersion  *int64 `json:"current_version"`
	ExpectedVersion any    `json:"expected_version"`
	Errors          []struct {
		Field string `json:"field"`
	} `json:"errors"`
}

func do(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	st, _, b := testutil.Do(t, method, url, map[string]string{"Content-Type": "application/json"}, body)
	if out != nil && b != "" {
		if err := json.Unmarshal([]byte(b), out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, st, b, err)
		}
	}
	return st
}

func appendBody(expected string, events ...string) string {
	return fmt.Sprintf(`{"expected_version":%s,"events":[%s]}`, expected, strings.Join(events, ","))
}

func readStream(t *testing.T, n *testutil.Node, stream, query string) []event {
	t.Helper()
	var r struct {
		Stream string  `json:"stream"`
		Events []event `json:"events"`
	}
	if st := do(t, "GET", n.URL+"/v1/streams/"+stream+query, "", &r); st != 200 || r.Stream != stream {
		t.Fatalf("read %s%s: %d %+v", stream, query, st, r)
	}
	return r.Events
}

func versions(es []event) []uint64 {
	vs := make([]uint64, len(es))
	for i, e := range es {
		vs[i] = e.Version
	}
	return vs
}

func TestAppendAndRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		u := n.URL + "/v1/streams/order-1"
		body := appendBody(`"no_stream"`,
			`{"id":"e1","type":"order.placed","data":{"total":12.5},"metadata":{"by":"ann"}}`,
			`{"id":"e2","type":"order.paid","data":"cash"}`)
		var r1 appendResult
		if st := do(t, "POST", u, body, &r1); st != 201 || r1.FirstVersion != 0 || r1.LastVersion != 1 || r1.Position == 0 {
			t.Fatalf("append: %d %+v", st, r1)
		}
		// The same event ids again: the first result, nothing written.
		var r2 appendResult
		if st := do(t, "POST", u, body, &r2); st != 201 || r2 != r1 {
			t.Fatalf("idempotent retry: %d %+v, want %+v", st, r2, r1)
		}
		var r3 appendResult
		if st := do(t, "POST", u, appendBody("1", `{"type":"order.shipped","data":null}`, `{"type":"order.closed","data":[1,2]}`), &r3); st != 201 || r3.FirstVersion != 2 || r3.LastVersion != 3 || r3.Position <= r1.Position {
			t.Fatalf("append at version 1: %d %+v", st, r3)
		}
		if st := do(t, "POST", u, `{"events":[{"type":"order.noted","data":{}}]}`, nil); st != 201 {
			t.Fatalf("append with the default expected version: %d", st)
		}

		es := readStream(t, n, "order-1", "")
		if fmt.Sprint(versions(es)) != "[0 1 2 3 4]" {
			t.Fatalf("versions %v", versions(es))
		}
		e := es[0]
		if e.Stream != "order-1" || e.ID != "e1" || e.Type != "order.placed" || string(e.Data) != `{"total":12.5}` ||
			string(e.Metadata) != `{"by":"ann"}` || e.Time == "" || e.Position == 0 {
			t.Fatalf("event 0: %+v", e)
		}
		if string(es[1].Data) != `"cash"` || string(es[1].Metadata) != "null" || string(es[2].Data) != "null" || string(es[3].Data) != "[1,2]" {
			t.Fatalf("data and metadata as JSON values: %s %s %s %s", es[1].Data, es[1].Metadata, es[2].Data, es[3].Data)
		}
		if es[1].Position != r1.Position || es[3].Position != r3.Position {
			t.Fatalf("positions %d %d, append results %d %d", es[1].Position, es[3].Position, r1.Position, r3.Position)
		}
		// Go programs embedding the node see the same store.
		if got, err := n.Events().ReadStream(context.Background(), "order-1", eventstore.ReadOptions{}); err != nil || len(got) != 5 {
			t.Fatalf("Node.Events: %d events, %v", len(got), err)
		}
		for q, want := range map[string]string{
			"?from=2&limit=2":                     "[2 3]",
			"?from=5":                             "[]",
			"?direction=backward":                 "[4 3 2 1 0]",
			"?direction=backward&from=3&limit=2":  "[3 2]",
			"?direction=backward&limit=1":         "[4]",
			"?direction=forward&limit=10000":      "[0 1 2 3 4]",
			"?direction=backward&from=0&limit=10": "[0]",
		} {
			if got := fmt.Sprint(versions(readStream(t, n, "order-1", q))); got != want {
				t.Errorf("read %s: versions %s, want %s", q, got, want)
			}
		}
	})
}

func TestWrongExpectedVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		u := n.URL + "/v1/streams/cart-7"
		ev := `{"type":"item.added","data":{"sku":"a"}}`
		cases := []struct {
			expected string
			current  int64
			wantExp  any
		}{
			{`"exists"`, -1, "exists"},
			{`0`, -1, float64(0)},
		}
		for _, c := range cases {
			var p problemBody
			if st := do(t, "POST", u, appendBody(c.expected, ev), &p); st != 409 || p.Code != "wrong_expected_version" ||
				p.CurrentVersion == nil || *p.CurrentVersion != c.current || p.ExpectedVersion != c.wantExp {
				t.Fatalf("expected %s on a missing stream: %d %+v", c.expected, st, p)
			}
		}
		if st := do(t, "POST", u, appendBody(`"no_stream"`, ev, ev, ev), nil); st != 201 {
			t.Fatalf("append: %d", st)
		}
		for _, c := range []struct {
			expected string
			wantExp  any
		}{{`"no_stream"`, "no_stream"}, {`1`, float64(1)}, {`3`, float64(3)}} {
			var p problemBody
			if st := do(t, "POST", u, appendBody(c.expected, ev), &p); st != 409 || p.Status != 409 || p.Code != "wrong_expected_version" ||
				p.CurrentVersion == nil || *p.CurrentVersion != 2 || p.ExpectedVersion != c.wantExp || !strings.Contains(p.Detail, "version 2") {
				t.Fatalf("expected %s at version 2: %d %+v", c.expected, st, p)
			}
		}
		if got := len(readStream(t, n, "cart-7", "")); got != 3 {
			t.Fatalf("%d events after refused appends, want 3", got)
		}
		if st := do(t, "POST", u, appendBody(`"exists"`, ev), nil); st != 201 {
			t.Fatalf("append with exists: %d", st)
		}
	})
}

func TestErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		if st := do(t, "POST", n.URL+"/v1/streams/present-1", appendBody(`"any"`, `{"type":"x","data":1}`), nil); st != 201 {
			t.Fatalf("append: %d", st)
		}
		ev := `{"type":"x","data":1}`
		cases := []struct {
			name, method, path, body string
			status                   int
			code, field              string
		}{
			{"no events", "POST", "/v1/streams/s-1", `{"events":[]}`, 422, "validation_failed", "events"},
			{"no type", "POST", "/v1/streams/s-1", `{"events":[{"data":1}]}`, 422, "validation_failed", "events[0].type"},
			{"no data", "POST", "/v1/streams/s-1", `{"events":[{"type":"x"}]}`, 422, "validation_failed", "events[0].data"},
			{"duplicate id", "POST", "/v1/streams/s-1", `{"events":[{"id":"a","type":"x","data":1},{"id":"a","type":"x","data":2}]}`, 422, "validation_failed", "events[1].id"},
			{"bad expected word", "POST", "/v1/streams/s-1", appendBody(`"some"`, ev), 422, "validation_failed", "expected_version"},
			{"negative expected", "POST", "/v1/streams/s-1", appendBody(`-1`, ev), 422, "validation_failed", "expected_version"},
			{"fractional expected", "POST", "/v1/streams/s-1", appendBody(`1.5`, ev), 422, "validation_failed", "expected_version"},
			{"unknown field", "POST", "/v1/streams/s-1", `{"events":[{"type":"x","data":1,"color":"red"}]}`, 422, "validation_failed", "color"},
			{"reserved stream", "POST", "/v1/streams/$all", appendBody(`"any"`, ev), 422, "validation_failed", "stream"},
			{"bad JSON", "POST", "/v1/streams/s-1", `{"events":`, 400, "bad_json", ""},
			{"too large", "POST", "/v1/streams/s-1", appendBody(`"any"`, `{"type":"x","data":"`+strings.Repeat("a", 5000)+`"}`), 413, "payload_too_large", ""},
			{"read missing", "GET", "/v1/streams/absent-1", "", 404, "stream_not_found", ""},
			{"read limit 0", "GET", "/v1/streams/present-1?limit=0", "", 422, "validation_failed", "limit"},
			{"read limit too big", "GET", "/v1/streams/present-1?limit=10001", "", 422, "validation_failed", "limit"},
			{"read bad direction", "GET", "/v1/streams/present-1?direction=up", "", 422, "validation_failed", "direction"},
			{"read follow with limit", "GET", "/v1/streams/present-1?follow=true&limit=5", "", 422, "validation_failed", "limit"},
			{"read follow backward", "GET", "/v1/streams/present-1?follow=true&direction=backward", "", 422, "validation_failed", "direction"},
			{"read follow maybe", "GET", "/v1/streams/present-1?follow=maybe", "", 422, "validation_failed", "follow"},
			{"read unknown parameter", "GET", "/v1/streams/present-1?color=red", "", 422, "validation_failed", "color"},
			{"all follow with limit", "GET", "/v1/events?follow=true&limit=5", "", 422, "validation_failed", "limit"},
			{"all follow yes", "GET", "/v1/events?follow=yes", "", 422, "validation_failed", "follow"},
			{"all bad position", "GET", "/v1/events?from_position=-3", "", 422, "validation_failed", "from_position"},
			{"all limit too big", "GET", "/v1/events?limit=20000", "", 422, "validation_failed", "limit"},
			{"delete missing", "DELETE", "/v1/streams/absent-1", "", 404, "stream_not_found", ""},
		}
		for _, c := range cases {
			var p problemBody
			st := do(t, c.method, n.URL+c.path, c.body, &p)
			if st != c.status || p.Code != c.code || p.Status != c.status {
				t.Errorf("%s: %d %+v, want %d %s", c.name, st, p, c.status, c.code)
				continue
			}
			if c.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != c.field) {
				t.Errorf("%s: errors %+v, want one naming %s", c.name, p.Errors, c.field)
			}
		}
		if got := len(readStream(t, n, "present-1", "")); got != 1 {
			t.Fatalf("present-1 has %d events, want 1", got)
		}
	})
}

func TestDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		u := n.URL + "/v1/streams/doomed-1"
		if st := do(t, "POST", u, appendBody(`"no_stream"`, `{"type":"x","data":1}`, `{"type":"x","data":2}`), nil); st != 201 {
			t.Fatalf("append: %d", st)
		}
		if st := do(t, "DELETE", u, "", nil); st != 204 {
			t.Fatalf("delete: %d", st)
		}
		var p problemBody
		if st := do(t, "GET", u, "", &p); st != 410 || p.Code != "stream_deleted" {
			t.Fatalf("read after delete: %d %+v", st, p)
		}
		// The global log keeps a deleted stream's events.
		var page struct {
			Events []event `json:"events"`
		}
		if st := do(t, "GET", n.URL+"/v1/events?category=doomed", "", &page); st != 200 || len(page.Events) != 2 {
			t.Fatalf("$all after delete: %d %+v", st, page)
		}
		// Appending starts the stream again, at the next version.
		var r appendResult
		if st := do(t, "POST", u, appendBody(`"no_stream"`, `{"type":"x","data":3}`), &r); st != 201 || r.FirstVersion != 2 {
			t.Fatalf("append after delete: %d %+v", st, r)
		}
	})
}

func TestReadAll(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		var want []string // stream/type of each appended ledger and audit event, in order
		for i := 0; i < 4; i++ {
			for _, s := range []string{"ledger-1", "audit-1", "ledger-2", "other-1"} {
				typ := "credit"
				if i%2 == 1 {
					typ = "debit"
				}
				if st := do(t, "POST", n.URL+"/v1/streams/"+s, appendBody(`"any"`, fmt.Sprintf(`{"type":%q,"data":{"i":%d}}`, typ, i)), nil); st != 201 {
					t.Fatalf("append: %d", st)
				}
				if s != "other-1" {
					want = append(want, s+"/"+typ)
				}
			}
		}
		type page struct {
			Events       []event `json:"events"`
			NextPosition *uint64 `json:"next_position"`
		}
		read := func(q string) page {
			t.Helper()
			var p page
			if st := do(t, "GET", n.URL+"/v1/events"+q, "", &p); st != 200 || p.NextPosition == nil {
				t.Fatalf("GET /v1/events%s: %d %+v", q, st, p)
			}
			return p
		}
		if all := read("?limit=10000"); len(all.Events) != 16 {
			t.Fatalf("$all has %d events, want 16", len(all.Events))
		}
		// Paging through two categories, three events at a time.
		var got []string
		from, pages := uint64(0), 0
		var last uint64
		for {
			p := read(fmt.Sprintf("?category=ledger,audit&limit=3&from_position=%d", from))
			pages++
			for _, e := range p.Events {
				if e.Position < last {
					t.Fatalf("position %d after %d", e.Position, last)
				}
				last = e.Position
				got = append(got, e.Stream+"/"+e.Type)
			}
			if len(p.Events) == 0 {
				if *p.NextPosition != from {
					t.Fatalf("empty page: next_position %d, want %d", *p.NextPosition, from)
				}
				break
			}
			if *p.NextPosition != p.Events[len(p.Events)-1].Position+1 {
				t.Fatalf("next_position %d after position %d", *p.NextPosition, p.Events[len(p.Events)-1].Position)
			}
			from = *p.NextPosition
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || pages != 5 {
			t.Fatalf("paged %d pages:\n%v\nwant\n%v", pages, got, want)
		}
		p := read("?category=ledger&types=debit")
		if len(p.Events) != 4 {
			t.Fatalf("ledger debits: %d events", len(p.Events))
		}
		for _, e := range p.Events {
			if !strings.HasPrefix(e.Stream, "ledger-") || e.Type != "debit" || !strings.Contains(string(e.Data), `"i"`) {
				t.Fatalf("ledger debit: %+v", e)
			}
		}
		if p := read("?types=credit,debit&category=other"); len(p.Events) != 4 {
			t.Fatalf("other: %d events", len(p.Events))
		}
		if p := read("?types=refund"); len(p.Events) != 0 {
			t.Fatalf("refunds: %+v", p.Events)
		}
	})
}

// Twenty writers append to one stream, each stating the exact version it
// expects and, when refused, retrying with the version the 409 reports.
// Every append must land exactly once, with no gap in the versions.
func TestConcurrentWriters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		const writers, each = 20, 5
		u := n.URL + "/v1/streams/counter-1"
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: writers}}
		defer hc.CloseIdleConnections()
		post := func(body string) (int, []byte, error) {
			resp, err := hc.Post(u, "application/json", strings.NewReader(body))
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			var b json.RawMessage
			err = json.NewDecoder(resp.Body).Decode(&b)
			return resp.StatusCode, b, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		var conflicts atomic.Int64
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				expected := `"no_stream"`
				for k := 0; k < each && ctx.Err() == nil; {
					st, b, err := post(appendBody(expected, fmt.Sprintf(`{"id":"w%d-%d","type":"tick","data":{"w":%d,"k":%d}}`, w, k, w, k)))
					switch {
					case err != nil:
						errs <- err
						cancel()
						return
					case st == 201:
						var r appendResult
						_ = json.Unmarshal(b, &r)
						expected = fmt.Sprint(r.LastVersion)
						k++
					case st == 409:
						conflicts.Add(1)
						var p problemBody
						if err := json.Unmarshal(b, &p); err != nil || p.CurrentVersion == nil {
							errs <- fmt.Errorf("409 without current_version: %s", b)
							cancel()
							return
						}
						expected = fmt.Sprint(*p.CurrentVersion)
						if *p.CurrentVersion < 0 {
							expected = `"no_stream"`
						}
					default:
						errs <- fmt.Errorf("append: %d %s", st, b)
						cancel()
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		es := readStream(t, n, "counter-1", "?limit=10000")
		if len(es) != writers*each {
			t.Fatalf("%d events, want %d", len(es), writers*each)
		}
		ids := map[string]bool{}
		for i, e := range es {
			if e.Version != uint64(i) {
				t.Fatalf("event %d has version %d", i, e.Version)
			}
			ids[e.ID] = true
		}
		if len(ids) != writers*each {
			t.Fatalf("%d distinct ids, want %d", len(ids), writers*each)
		}
		t.Logf("%d conflicts answered 409", conflicts.Load())
	})
}

// sse is one server-sent event.
type sse struct {
	id, event string
	data      event
	raw       string
}

// follow opens a follow and returns its events as they arrive; the
// channel closes when the response ends. lastID, when not empty, is sent
// as Last-Event-ID.
func follow(t *testing.T, ctx context.Context, n *testutil.Node, path, lastID string) <-chan sse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", n.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if tok := n.Config.API.Token; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan sse, 100)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var cur sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.id != "" || cur.event != "" {
					out <- cur
				}
				cur = sse{}
			case strings.HasPrefix(line, "id: "):
				cur.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.raw = line[6:]
				_ = json.Unmarshal([]byte(cur.raw), &cur.data)
			}
		}
	}()
	return out
}

func next(t *testing.T, c <-chan sse) sse {
	t.Helper()
	select {
	case e, ok := <-c:
		if !ok {
			t.Fatal("follow ended")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return sse{}
}

// expect reads len(want) events and checks their streams and versions
// and that each id is the version (stream follow) or position.
func expect(t *testing.T, c <-chan sse, byPosition bool, want ...string) []sse {
	t.Helper()
	var got []sse
	for _, w := range want {
		e := next(t, c)
		if e.event != "" {
			t.Fatalf("event %q: %s", e.event, e.raw)
		}
		id := e.data.Version
		if byPosition {
			id = e.data.Position
		}
		if have := fmt.Sprintf("%s@%d", e.data.Stream, e.data.Version); have != w || e.id != fmt.Sprint(id) {
			t.Fatalf("got %s (id %s), want %s", have, e.id, w)
		}
		got = append(got, e)
	}
	return got
}

func TestFollow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ev := func(i int) string { return fmt.Sprintf(`{"type":"E","data":{"n":%d}}`, i) }
		app := func(stream string, events ...string) {
			t.Helper()
			if st := do(t, "POST", n.URL+"/v1/streams/"+stream, appendBody(`"any"`, events...), nil); st != 201 {
				t.Fatalf("append to %s: %d", stream, st)
			}
		}
		app("fol-1", ev(0), ev(1), ev(2))
		app("other-1", ev(0))

		st := follow(t, ctx, n, "/v1/streams/fol-1?follow=true", "")
		all := follow(t, ctx, n, "/v1/events?follow=true&category=fol", "")
		everything := follow(t, ctx, n, "/v1/events?follow=true", "")
		expect(t, st, false, "fol-1@0", "fol-1@1", "fol-1@2")
		caught := expect(t, all, true, "fol-1@0", "fol-1@1", "fol-1@2")
		expect(t, everything, true, "fol-1@0", "fol-1@1", "fol-1@2", "other-1@0")
		if caught[0].data.ID == "" || string(caught[0].data.Data) != `{"n":0}` {
			t.Fatalf("event data: %s", caught[0].raw)
		}

		// Live: appended after the follows caught up, in order, once.
		app("fol-1", ev(3), ev(4))
		app("other-1", ev(1))
		app("fol-1", ev(5))
		expect(t, st, false, "fol-1@3", "fol-1@4", "fol-1@5")
		live := expect(t, all, true, "fol-1@3", "fol-1@4", "fol-1@5")
		expect(t, everything, true, "fol-1@3", "fol-1@4", "other-1@1", "fol-1@5")

		// Resuming after Last-Event-ID continues after it, then live.
		rs := follow(t, ctx, n, "/v1/streams/fol-1?follow=true", "3")
		ra := follow(t, ctx, n, "/v1/events?follow=true&category=fol", live[0].id)
		rf := follow(t, ctx, n, "/v1/streams/fol-1?follow=true&from=5", "")
		expect(t, rs, false, "fol-1@4", "fol-1@5")
		expect(t, ra, true, "fol-1@4", "fol-1@5")
		expect(t, rf, false, "fol-1@5")
		app("fol-1", ev(6))
		for _, c := range []<-chan sse{st, rs, rf} {
			expect(t, c, false, "fol-1@6")
		}
		for _, c := range []<-chan sse{all, ra, everything} {
			expect(t, c, true, "fol-1@6")
		}

		// A stream is waited for until it exists.
		nw := follow(t, ctx, n, "/v1/streams/new-1?follow=true", "")
		app("new-1", ev(0))
		expect(t, nw, false, "new-1@0")

		// Deleting a followed stream ends its follow with an error event;
		// a deleted stream cannot be followed.
		if code := do(t, "DELETE", n.URL+"/v1/streams/fol-1", "", nil); code != 204 {
			t.Fatalf("delete: %d", code)
		}
		if e := next(t, st); e.event != "error" || !strings.Contains(e.raw, "deleted") {
			t.Fatalf("after delete: %+v", e)
		}
		if _, ok := <-st; ok {
			t.Fatal("follow of a deleted stream goes on")
		}
		var p problemBody
		if code := do(t, "GET", n.URL+"/v1/streams/fol-1?follow=true", "", &p); code != 410 || p.Code != "stream_deleted" {
			t.Fatalf("follow of a deleted stream: %d %+v", code, p)
		}

		// Shutting the node down ends open follows.
		start := time.Now()
		n.Stop(t)
		for _, c := range []<-chan sse{all, everything, rs, ra, rf, nw} {
			for range c {
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("shutdown with open follows took %v", d)
		}
	})
}

func TestRetention(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		u := n.URL + "/v1/streams/trim-1/retention"
		cases := []struct {
			name, method, body string
			want               string
		}{
			{"both", "PUT", `{"max_age":"720h","max_count":1000}`, `{"max_age":"720h0m0s","max_count":1000}`},
			{"read both", "GET", "", `{"max_age":"720h0m0s","max_count":1000}`},
			{"age only", "PUT", `{"max_age":"90m"}`, `{"max_age":"1h30m0s"}`},
			{"count only", "PUT", `{"max_count":2}`, `{"max_count":2}`},
			{"read count only", "GET", "", `{"max_count":2}`},
		}
		for _, c := range cases {
			st, _, body := testutil.Do(t, c.method, u, map[string]string{"Content-Type": "application/json"}, c.body)
			if st != 200 || strings.TrimSpace(body) != c.want {
				t.Fatalf("%s: %d %s, want 200 %s", c.name, st, body, c.want)
			}
		}
		// Set before the stream existed, it applies from the first append.
		for i := 0; i < 5; i++ {
			if st := do(t, "POST", n.URL+"/v1/streams/trim-1", appendBody(`"any"`, fmt.Sprintf(`{"type":"x","data":%d}`, i)), nil); st != 201 {
				t.Fatalf("append: %d", st)
			}
		}
		if got := fmt.Sprint(versions(readStream(t, n, "trim-1", ""))); got != "[3 4]" {
			t.Fatalf("read with max_count 2: versions %s", got)
		}
		if got := fmt.Sprint(versions(readStream(t, n, "trim-1", "?direction=backward"))); got != "[4 3]" {
			t.Fatalf("read backward with max_count 2: versions %s", got)
		}
		var r appendResult
		if st := do(t, "POST", n.URL+"/v1/streams/trim-1", appendBody("4", `{"type":"x","data":5}`), &r); st != 201 || r.FirstVersion != 5 {
			t.Fatalf("append at version 4: %d %+v", st, r)
		}

		// The Go client sees the same.
		c := client.New(n.URL, client.WithToken(n.Config.API.Token))
		ctx := context.Background()
		if got, err := c.GetRetention(ctx, "trim-1"); err != nil || got != (client.Retention{MaxCount: 2}) {
			t.Fatalf("client GetRetention: %+v, %v", got, err)
		}
		want := client.Retention{MaxAge: 36 * time.Hour, MaxCount: 7}
		if got, err := c.SetRetention(ctx, "trim-2", want); err != nil || got != want {
			t.Fatalf("client SetRetention: %+v, %v", got, err)
		}
		if got, err := c.GetRetention(ctx, "trim-2"); err != nil || got != want {
			t.Fatalf("client GetRetention after set: %+v, %v", got, err)
		}
		if got, err := c.SetRetention(ctx, "trim-2", client.Retention{}); err != nil || got != (client.Retention{}) {
			t.Fatalf("client SetRetention to none: %+v, %v", got, err)
		}
		if st, _, body := testutil.Do(t, "GET", n.URL+"/v1/streams/trim-2/retention", nil, ""); st != 200 || strings.TrimSpace(body) != `{}` {
			t.Fatalf("retention removed: %d %s", st, body)
		}
		var ce *client.Error
		if _, err := c.SetRetention(ctx, "$all", want); !errors.As(err, &ce) || ce.Code != "validation_failed" {
			t.Fatalf("client SetRetention of $all: %v", err)
		}
	})
}

func TestRetentionErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, n *testutil.Node) {
		cases := []struct {
			name, method, path, body string
			status                   int
			code, field              string
		}{
			{"bad duration", "PUT", "/v1/streams/r-1/retention", `{"max_age":"forever"}`, 422, "validation_failed", "max_age"},
			{"negative duration", "PUT", "/v1/streams/r-1/retention", `{"max_age":"-1h"}`, 422, "validation_failed", "max_age"},
			{"duration as number", "PUT", "/v1/streams/r-1/retention", `{"max_age":3600}`, 422, "validation_failed", "max_age"},
			{"negative count", "PUT", "/v1/streams/r-1/retention", `{"max_count":-1}`, 422, "validation_failed", "max_count"},
			{"fractional count", "PUT", "/v1/streams/r-1/retention", `{"max_count":1.5}`, 422, "validation_failed", "max_count"},
			{"count beyond int64", "PUT", "/v1/streams/r-1/retention", `{"max_count":9223372036854775808}`, 422, "validation_failed", "max_count"},
			{"unknown field", "PUT", "/v1/streams/r-1/retention", `{"max_size":10}`, 422, "validation_failed", "max_size"},
			{"bad JSON", "PUT", "/v1/streams/r-1/retention", `{"max_count":`, 400, "bad_json", ""},
			{"no body", "PUT", "/v1/streams/r-1/retention", ``, 400, "bad_json", ""},
			{"reserved stream", "PUT", "/v1/streams/$all/retention", `{"max_count":1}`, 422, "validation_failed", "stream"},
			{"read reserved stream", "GET", "/v1/streams/$all/retention", "", 422, "validation_failed", "stream"},
		}
		for _, c := range cases {
			var p problemBody
			st := do(t, c.method, n.URL+c.path, c.body, &p)
			if st != c.status || p.Code != c.code || p.Status != c.status {
				t.Errorf("%s: %d %+v, want %d %s", c.name, st, p, c.status, c.code)
				continue
			}
			if c.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != c.field) {
				t.Errorf("%s: errors %+v, want one naming %s", c.name, p.Errors, c.field)
			}
		}
		if st, _, body := testutil.Do(t, "GET", n.URL+"/v1/streams/r-1/retention", nil, ""); st != 200 || strings.TrimSpace(body) != `{}` {
			t.Fatalf("retention after refused requests: %d %s", st, body)
		}
	})
}
