package eventstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"

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
			{"read follow", "GET", "/v1/streams/present-1?follow=true", "", 422, "validation_failed", "follow"},
			{"read unknown parameter", "GET", "/v1/streams/present-1?color=red", "", 422, "validation_failed", "color"},
			{"all follow", "GET", "/v1/events?follow=true", "", 422, "validation_failed", "follow"},
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
