package config

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.golden from the current output")

// testVars is the whole environment the testdata files see, so that the
// goldens do not depend on the machine running the tests.
var testVars = map[string]string{
	"JUNCTION_TEST_TOKEN": "s3cret",
	"JUNCTION_TEST_PORT":  "4100",
	"JUNCTION_TEST_EMPTY": "",
}

func testEnv(name string) (string, bool) {
	v, ok := testVars[name]
	return v, ok
}

func noEnv(string) (string, bool) { return "", false }

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lineCount counts lines as YAML does, and so as positions do: CR LF, CR,
// LF, NEL, LS and PS each end a line.
func lineCount(data []byte) int {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	n := 1
	for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		n += strings.Count(s, br)
	}
	return n
}

// checkPositions holds for every error Parse returns: a message, and a
// position that an editor can jump to.
func checkPositions(t *testing.T, data []byte, err error) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T (%v), want config.Errors", err, err)
	}
	if len(es) == 0 {
		t.Fatal("empty Errors returned as an error")
	}
	for _, e := range es {
		if e.Msg == "" {
			t.Errorf("error without a message: %#v", e)
		}
		if strings.Contains(e.Msg, "\n") {
			t.Errorf("message spans lines, breaking one error per line: %q", e.Msg)
		}
		if e.Pos.Line < 0 || e.Pos.Line > lineCount(data) {
			t.Errorf("line %d outside the file's %d lines: %v", e.Pos.Line, lineCount(data), e)
		}
		if e.Pos.Line > 0 && e.Pos.Col < 1 {
			t.Errorf("column %d with line %d: %v", e.Pos.Col, e.Pos.Line, e)
		}
	}
}

func TestBadFilesMatchGoldens(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found %d bad files, want at least 15", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			data := readFile(t, f)
			file := filepath.ToSlash(f)
			cfg, err := Parse(file, data, testEnv)
			if err == nil {
				t.Fatalf("parsed without error: %+v", cfg)
			}
			checkPositions(t, data, err)
			for _, e := range err.(Errors) {
				if e.Pos.Line == 0 {
					t.Errorf("error without a position: %v", e)
				}
			}
			// Map iteration is random; the output must not be.
			for range 5 {
				_, again := Parse(file, data, testEnv)
				if again.Error() != err.Error() {
					t.Fatalf("output differs between runs:\n%v\n----\n%v", err, again)
				}
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := string(readFile(t, golden))
			if got != want {
				t.Errorf("errors differ from %s (go test ./config -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestEveryGoldenHasAFile(t *testing.T) {
	goldens, err := filepath.Glob("testdata/bad/*.golden")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + ".yaml"); err != nil {
			t.Errorf("%s has no config file: %v", g, err)
		}
	}
}

func TestGoodFiles(t *testing.T) {
	tests := map[string]func(t *testing.T, c *Config){
		"empty": func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, Default()) {
				t.Errorf("empty file: got %+v, want the defaults %+v", c, Default())
			}
		},
		"comments": func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, Default()) {
				t.Errorf("comments only: got %+v, want the defaults %+v", c, Default())
			}
		},
		"bus": func(t *testing.T, c *Config) {
			eq(t, "data_dir", c.DataDir, "/var/lib/junction")
			eq(t, "shutdown_timeout", c.ShutdownTimeout.D(), 30*time.Second)
			eq(t, "log", c.Log, Log{Level: "debug", Format: "json"})
			eq(t, "api.listen", c.API.Listen, "127.0.0.1:4100")
			eq(t, "storage.sync", c.Storage.Sync, "always")
			eq(t, "bus", c.Bus, Bus{AutoCreateTopics: false, DedupWindow: Duration(5 * time.Minute), MaxMessageBytes: 262144, MaxBatch: 500})
			// Absent keys keep their defaults.
			eq(t, "api.max_body_bytes", c.API.MaxBodyBytes, Default().API.MaxBodyBytes)
			eq(t, "nats", c.NATS, Default().NATS)
			eq(t, "sql", c.SQL, Default().SQL)
			eq(t, "tracing", c.Tracing, Default().Tracing)

			eq(t, "len(topics)", len(c.Topics), 3)
			eq(t, "topics.orders", *c.Topics["orders"], Topic{MaxAge: Duration(168 * time.Hour), MaxBytes: 1 << 30, Replicas: 1})
			eq(t, "topics.orders.dlq", *c.Topics["orders.dlq"], Topic{MaxAge: Duration(720 * time.Hour)})
			if n, ok := c.Topics["notifications"]; !ok || n != nil {
				t.Errorf("topics.notifications = %v, %v; want a nil entry (every default)", n, ok)
			}

			b := c.Subscriptions["billing"]
			eq(t, "billing.topic", b.Topic, "orders")
			eq(t, "billing.filter", b.Filter, `event.type == "order.created" && double(event.data.total) > 0.0`)
			eq(t, "billing.start", b.Start, "all")
			eq(t, "billing.push", *b.Push, Push{URL: "http://127.0.0.1:7002/events", Timeout: Duration(5 * time.Second), Headers: map[string]string{"X-Source": "junction"}})
			eq(t, "billing.max_in_flight", b.MaxInFlight, 16)
			eq(t, "billing.ordered_by_key", b.OrderedByKey, true)
			eq(t, "billing.max_deliver", b.MaxDeliver, 8)
			eq(t, "billing.backoff", b.Backoff, []Duration{Duration(time.Second), Duration(5 * time.Second), Duration(30 * time.Second), Duration(2 * time.Minute)})
			eq(t, "billing.dead_letter_topic", b.DeadLetterTopic, "orders.dlq")
			eq(t, "billing.ack_wait", b.AckWait.D(), DefaultAckWait)

			e := c.Subscriptions["emails"]
			eq(t, "emails.start", e.Start, "time:2026-01-02T15:04:05Z")
			eq(t, "emails.ack_wait", e.AckWait.D(), time.Minute)
			// A pull subscription: Normalize filled in the rest.
			if e.Push != nil {
				t.Errorf("emails.push = %+v, want nil (pull)", e.Push)
			}
			eq(t, "emails.max_in_flight", e.MaxInFlight, DefaultPullMaxInFlight)
			eq(t, "emails.max_deliver", e.MaxDeliver, DefaultMaxDeliver)
			eq(t, "emails.backoff", e.Backoff, DefaultBackoff)
			eq(t, "emails.dead_letter_topic", e.DeadLetterTopic, "emails.dlq")
		},
		"env": func(t *testing.T, c *Config) {
			eq(t, "data_dir (default)", c.DataDir, "/var/lib/junction")
			eq(t, "api.listen", c.API.Listen, "127.0.0.1:4100")
			eq(t, "api.token", c.API.Token, "s3cret")
			eq(t, "nats.url (empty default)", c.NATS.URL, "")
			eq(t, "nats.prefix (set but empty takes the default)", c.NATS.Prefix, "staging")
			eq(t, "sql.dsn (nested default)", c.SQL.DSN, "postgres://junction@db.internal:5432/junction")
			eq(t, "bus.max_batch", c.Bus.MaxBatch, 250)
			eq(t, "bus.auto_create_topics", c.Bus.AutoCreateTopics, false)
			eq(t, "bus.dedup_window", c.Bus.DedupWindow.D(), 10*time.Minute)
			b := c.Subscriptions["billing"]
			eq(t, "filter ($$)", b.Filter, `event.source != "$internal"`)
			eq(t, "push.url", b.Push.URL, "http://127.0.0.1:7002/events")
			eq(t, "push.headers", b.Push.Headers, map[string]string{"Authorization": "Bearer s3cret"})
			eq(t, "push.timeout (default)", b.Push.Timeout.D(), DefaultPushTimeout)
			eq(t, "max_in_flight (push default)", b.MaxInFlight, DefaultMaxInFlight)
		},
		"workflows": func(t *testing.T, c *Config) {
			w := c.Workflows["place_order"]
			eq(t, "steps", len(w.Steps), 9)
			eq(t, "timeout", w.Timeout, Duration(48*time.Hour))
			eq(t, "charge needs", w.Steps[1].Needs, []string{"reserve"})
			eq(t, "charge retry", *w.Steps[1].Retry, StepRetry{Attempts: 5, Backoff: Duration(time.Second), Multiplier: 2, MaxBackoff: Duration(time.Minute)})
			eq(t, "default retry", *w.Steps[0].Retry, DefaultStepRetry())
			eq(t, "kinds", []string{w.Steps[0].Kind(), w.Steps[2].Kind(), w.Steps[3].Kind(), w.Steps[4].Kind(), w.Steps[5].Kind(), w.Steps[7].Kind(), w.Steps[8].Kind()},
				[]string{"call", "wait", "sleep", "switch", "foreach", "append", "set"})
			eq(t, "compensation", w.Steps[0].Compensate.Call.Method, "DELETE")
			eq(t, "foreach do", w.Steps[5].Foreach.Do.Kind(), "publish")
			eq(t, "input schema", w.Input.(map[string]any)["type"], any("object"))
		},
		"projections": func(t *testing.T, c *Config) {
			p := c.Projections["order_summary"]
			eq(t, "order_summary table", p.Table.Name, "order_summary")
			eq(t, "order_summary key", p.Table.Key, "id")
			eq(t, "order_summary columns", len(p.Table.Columns), 7)
			eq(t, "order_summary defaults", [2]any{p.BatchSize, p.OnError}, [2]any{500, "stop"})
			op, cols := p.Handlers["OrderPaid"].Op()
			eq(t, "OrderPaid", op, "update")
			eq(t, "OrderPaid status", cols["status"], "'paid'")
			r := c.Projections["revenue"]
			eq(t, "revenue", [4]any{r.Table.Name, r.Database, r.BatchSize, r.OnError}, [4]any{"daily_revenue", "sqlite:/tmp/views.db", 1000, "skip"})
			eq(t, "revenue when", r.Handlers["OrderPaid"].When, "has(event.data.amount)")
		},
		"eventstore": func(t *testing.T, c *Config) {
			eq(t, "eventstore", c.EventStore, EventStore{Backend: "postgres", Schema: "orders_events", Bridges: map[string]*Bridge{
				"orders_out": {Categories: []string{"order"}, Topic: "orders.events"},
				"payments":   {Types: []string{"PaymentTaken", "PaymentRefunded"}, Topic: "payments"},
			}})
			eq(t, "EventStoreDSN (sql.dsn)", c.EventStoreDSN(), "postgres://junction@db.internal:5432/junction")
		},
		"mesh": func(t *testing.T, c *Config) {
			inv := c.Services["inventory"]
			eq(t, "inventory.instances", inv.Instances, []Instance{
				{ID: "127_0_0_1_7001", URL: "http://127.0.0.1:7001", Weight: 1},
				{ID: "big", URL: "http://127.0.0.1:7011", Weight: 3, Metadata: map[string]string{"zone": "b"}},
			})
			eq(t, "inventory.health", *inv.Health, Health{Path: "/healthz", Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second), HealthyThreshold: 2, UnhealthyThreshold: 3})
			eq(t, "inventory.balancer", inv.Balancer, "p2c")
			eq(t, "inventory.outlier", inv.Outlier, Outlier{ConsecutiveFailures: 5, BaseEjection: Duration(10 * time.Second), MaxEjection: Duration(5 * time.Minute), MaxEjectedPercent: 50})
			eq(t, "carts.balancer", c.Services["carts"].Balancer, "consistent_hash")
			eq(t, "carts.policy (default)", c.Services["carts"].Policy, "default")
			ps := ResolvePolicies(c.Policies)
			std := ps["standard"]
			eq(t, "standard.timeout", std.Timeout.D(), 2*time.Second)
			eq(t, "standard.retry", *std.Retry, Retry{Attempts: 3, Backoff: Duration(100 * time.Millisecond), MaxBackoff: Duration(2 * time.Second), On: []int{502, 503, 504}, Budget: 0.2})
			eq(t, "standard.circuit_breaker", *std.CircuitBreaker, CircuitBreaker{FailureRatio: 0.5, MinRequests: 20, Window: Duration(10 * time.Second), OpenFor: Duration(30 * time.Second), HalfOpenRequests: 1})
			eq(t, "standard.max_concurrent", std.MaxConcurrent, 200)
			// default overrides one field; the rest stays built in.
			eq(t, "default.timeout", ps["default"].Timeout.D(), 5*time.Second)
			eq(t, "default.max_concurrent", ps["default"].MaxConcurrent, DefaultPolicy().MaxConcurrent)
			eq(t, "mesh.sidecar", c.Mesh.Sidecar, Sidecar{Service: "orders", App: "http://127.0.0.1:7001", TTL: Duration(10 * time.Second)})
			eq(t, "mesh.identity", c.Mesh.NodeIdentity(), "orders")
			eq(t, "mesh.access", c.Mesh.Access, map[string][]string{"orders": {"checkout", "gateway"}})
		},
		"full": func(t *testing.T, c *Config) {
			want := &Config{
				DataDir:         "./data",
				ShutdownTimeout: Duration(45 * time.Second),
				Log:             Log{Level: "warn", Format: "json"},
				API:             API{Listen: "0.0.0.0:4000", Token: "change-me", MaxBodyBytes: 16 << 20},
				NATS:            NATS{URL: "nats://10.0.0.1:4222, nats://10.0.0.2:4222", Prefix: "shop", Credentials: "/etc/junction/nats.creds"},
				SQL:             SQL{DSN: "postgresql://junction:secret@10.0.0.5:5432/junction?sslmode=require"},
				Storage:         Storage{Sync: "default"},
				EventStore:      EventStore{Backend: "postgres", DSN: "postgres://events@10.0.0.6:5432/events", Schema: "shop_events"},
				Tracing:         Tracing{Exporter: "otlp", Endpoint: "127.0.0.1:4318", Sample: 0.25},
				Bus:             Bus{AutoCreateTopics: true, DedupWindow: 0, MaxMessageBytes: 7 << 20, MaxBatch: 100000},
				Mesh:            Default().Mesh,
				Gateway:         Default().Gateway,
				Topics: map[string]*Topic{
					"payments": {MaxAge: Duration(24 * time.Hour), MaxBytes: 1 << 30, MaxMsgs: 1000000, Replicas: 3, DedupWindow: Duration(30 * time.Second)},
				},
				Subscriptions: map[string]*Subscription{
					"ledger": {
						Topic: "payments", Start: "seq:42", MaxInFlight: 10000, AckWait: Duration(time.Second),
						MaxDeliver: 1, Backoff: []Duration{Duration(250 * time.Millisecond)}, DeadLetterTopic: "payments.ledger.failed",
					},
				},
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got  %+v\nwant %+v", c, want)
			}
		},
	}
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("%d good files, %d checks: every file needs its checks", len(files), len(tests))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			check, ok := tests[name]
			if !ok {
				t.Fatalf("no checks for %s", f)
			}
			c, err := Parse(f, readFile(t, f), testEnv)
			if err != nil {
				t.Fatalf("unexpected errors:\n%v", err)
			}
			check(t, c)
		})
	}
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

// TestParseErrors covers single problems whose exact text and position
// matter, without a file each.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string
	}{
		{"top level scalar", "hello\n", `f.yaml:1:1: the top level: expected a mapping, got "hello"`},
		{"section scalar", "api: x\n", `f.yaml:1:6: api: expected a mapping, got "x"`},
		{"topics list", "topics: [a]\n", `f.yaml:1:9: topics: expected a mapping, got a list`},
		{"list of mappings", "subscriptions:\n  s:\n    backoff: [{a: 1}]\n", `f.yaml:3:15: subscriptions.s.backoff[0]: expected a single value, got a mapping`},
		{"int overflow", "api: {max_body_bytes: 99999999999999999999}\n", `f.yaml:1:23: api.max_body_bytes: expected an integer, got "99999999999999999999"`},
		{"NaN", "tracing: {sample: NaN}\n", `f.yaml:1:19: tracing.sample: expected a number, got "NaN"`},
		{"capitalised bool", "bus: {auto_create_topics: True}\n", `f.yaml:1:27: bus.auto_create_topics: expected true or false, got "True"`},
		{"list key", "? [a]\n: 1\n", `f.yaml:1:3: the top level: a key must be a single value, got a list`},
		{"alias key is the aliased text", "data_dir: &k log\n*k : {level: loud}\n", `f.yaml:2:14: log.level must be debug, info, warn or error, got "loud"`},
		{"alias to a scalar reports at the anchored value", "log: {level: &l loud}\nstorage: {sync: *l}\n",
			"f.yaml:1:14: log.level must be debug, info, warn or error, got \"loud\"\nf.yaml:1:14: storage.sync must be default or always, got \"loud\""},
		{"a missing key in an aliased section is reported at its name", "subscriptions:\n  a: {topic: orders, push: &p {timeout: 1s}}\n  b: {topic: orders, push: *p}\n",
			"f.yaml:2:22: push.url must be an absolute http(s) URL, got \"\"\nf.yaml:3:22: push.url must be an absolute http(s) URL, got \"\""},
		{"merge keys are not supported", "log: &l {level: warn}\napi:\n  <<: *l\n", `f.yaml:3:3: unknown key "<<" in api (known keys: listen, max_body_bytes, token)`},
		{"unknown anchor", "log:\n  level: *nope\n", `f.yaml:2:10: YAML syntax: unknown anchor 'nope' referenced`},
		{"second document with a syntax error", "log: {}\n---\nlog: [\n", `f.yaml:3:6: YAML syntax: did not find expected node content`},
		{"empty second document", "log: {}\n---\n", `f.yaml:2:1: a config file holds one YAML document; found a second`},
		{"UTF-16", "\xff\xfel\x00o\x00g\x00:\x00", `f.yaml:1:1: the file is UTF-16 encoded; save it as UTF-8`},
		{"control character", "data_dir: a\x01b\n", `f.yaml:1:12: YAML syntax: control characters are not allowed`},
		{"column counts characters", "data_dir: \"é\" é: x\n", `f.yaml:1:15: YAML syntax: mapping values are not allowed in this context`},
		{"CRLF lines", "log:\r\n  level: x\r\n", `f.yaml:2:10: log.level must be debug, info, warn or error, got "x"`},
		{"CR lines", "log:\r  level: x\r", `f.yaml:2:10: log.level must be debug, info, warn or error, got "x"`},
		{"line separator", "log:\u2028  level: x\n", `f.yaml:2:10: log.level must be debug, info, warn or error, got "x"`},
		{"byte order mark", "\ufefflog: x\n", `f.yaml:1:6: log: expected a mapping, got "x"`},
		{"syntax error after a byte order mark", "\ufeffa: b: c\n", `f.yaml:1:5: YAML syntax: mapping values are not allowed in this context`},
		{"syntax error after NEL", "a: 1\u0085b: c: d\n", `f.yaml:2:5: YAML syntax: mapping values are not allowed in this context`},
		{"empty subscription", "subscriptions:\n  s:\n", `f.yaml:2:3: subscription "s" is empty: it needs at least a topic`},
		{"a missing key is reported at its section", "data_dir: x\ntracing:\n  exporter: otlp\n", `f.yaml:2:1: tracing.endpoint is required with the otlp exporter`},
		{"interpolated filter keeps the value position", "subscriptions:\n  s:\n    topic: t\n    filter: ${F:-event.x = 1}\n",
			`f.yaml:4:13: filter: Syntax error: token recognition error at: '= ' (at 1:9 of the expression)`},
		{"escaped filter keeps the value position", "subscriptions:\n  s:\n    topic: t\n    filter: \"event[\\\"x\\\"] = 1\"\n",
			`f.yaml:4:13: filter: Syntax error: token recognition error at: '= ' (at 1:12 of the expression)`},
		{"literal filter points into the block", "subscriptions:\n  s:\n    topic: t\n    filter: |-\n      event.a == 1 ||\n        event.b === 2\n",
			`f.yaml:6:19: filter: Syntax error: token recognition error at: '= ' (at 2:13 of the expression)`},
		{"folded filter keeps the value position", "subscriptions:\n  s:\n    topic: t\n    filter: >-\n      event.a == 1 ||\n      event.b = 2\n",
			`f.yaml:4:13: filter: Syntax error: token recognition error at: '= ' (at 1:25 of the expression)`},
		{"single-quoted filter", "subscriptions:\n  s:\n    topic: t\n    filter: 'event.a = \"x\"'\n",
			`f.yaml:4:22: filter: Syntax error: token recognition error at: '= ' (at 1:9 of the expression)`},
		{"filter of the wrong type", "subscriptions:\n  s:\n    topic: t\n    filter: '\"yes\"'\n",
			`f.yaml:4:13: filter: expression must yield a bool, it yields string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatal("parsed without error")
			}
			checkPositions(t, []byte(tt.yaml), err)
			if got := err.Error(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, yaml string
		check      func(*Config) bool
	}{
		{"null section keeps defaults", "api: ~\nlog:\n", func(c *Config) bool { return reflect.DeepEqual(c, Default()) }},
		{"explicit zero overrides a default", "tracing: {sample: 0}\n", func(c *Config) bool { return c.Tracing.Sample == 0 }},
		{"false overrides a true default", "bus: {auto_create_topics: false}\n", func(c *Config) bool { return !c.Bus.AutoCreateTopics }},
		{"quoted numbers and bools", "bus: {max_batch: \"10\", auto_create_topics: \"false\"}\n", func(c *Config) bool { return c.Bus.MaxBatch == 10 && !c.Bus.AutoCreateTopics }},
		{"underscores and hex in integers", "api: {max_body_bytes: 0x10_000}\n", func(c *Config) bool { return c.API.MaxBodyBytes == 0x10000 }},
		{"alias to a mapping", "subscriptions:\n  a: &s {topic: orders}\n  b: *s\n", func(c *Config) bool {
			return c.Subscriptions["a"].Topic == "orders" && c.Subscriptions["b"].Topic == "orders" && c.Subscriptions["b"].DeadLetterTopic == "b.dlq"
		}},
		{"document end marker", "data_dir: x\n...\n", func(c *Config) bool { return c.DataDir == "x" }},
		{"flow list over several lines", "subscriptions:\n  s:\n    topic: t\n    backoff: [\n      1s,\n      2s,\n    ]\n", func(c *Config) bool { return len(c.Subscriptions["s"].Backoff) == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte(tt.yaml), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected result: %+v", c)
			}
		})
	}
}

// TestSyntaxPos pins the position of YAML syntax errors, which yaml.v3
// reports on the wrong line or not at all.
func TestSyntaxPos(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       Pos
	}{
		{"dedented key", "api:\n  listen: x\n  token: y\n bad: z\n", Pos{4, 2}},
		{"list item in a mapping", "topics:\n  orders:\n    max_age: 1h\n  - foo\n", Pos{4, 3}},
		{"unclosed flow mapping", "data_dir: x\ntopics: {a: {}, b: {}\nlog: {}\n", Pos{2, 9}},
		{"unclosed flow list at the end", "a: [\n", Pos{1, 4}},
		{"unclosed quote", "a: 1\nb: \"abc\nc: 2\n", Pos{2, 4}},
		{"closed multi-line flow before the error", "a: [\n  1,\n  2]\nb: c: d\n", Pos{4, 5}},
		{"mapping value after a plain scalar", "a: b: c", Pos{1, 5}},
		{"reserved character", "a: 1\nb: @x\n", Pos{2, 4}},
		{"tab indentation", "a:\n\tb: 1\n", Pos{2, 1}},
		{"multi-byte characters", "a: ééé\nb: ééé: x\n", Pos{2, 7}},
		{"no trailing newline", "a: 1\nb: [", Pos{2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if parses([]byte(tt.yaml)) {
				t.Fatal("the input parses; the case is not a syntax error")
			}
			if got, ok := syntaxPos([]byte(tt.yaml)); !ok || got != tt.want {
				t.Errorf("syntaxPos = %v, %v; want %v", got, ok, tt.want)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{Error{File: "a.yaml", Pos: Pos{3, 7}, Msg: "m"}, "a.yaml:3:7: m"},
		{Error{File: "a.yaml", Msg: "m"}, "a.yaml: m"},
		{Errors{{File: "a", Pos: Pos{1, 1}, Msg: "x"}, {File: "a", Pos: Pos{2, 3}, Msg: "y"}}, "a:1:1: x\na:2:3: y"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestLocate(t *testing.T) {
	tests := []struct {
		name, flag, env string
		localFile       bool
		want            string
	}{
		{"flag wins", "a.yaml", "b.yaml", true, "a.yaml"},
		{"then the environment", "", "b.yaml", true, "b.yaml"},
		{"then ./junction.yaml", "", "", true, "junction.yaml"},
		{"else built-in defaults", "", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			t.Setenv("JUNCTION_CONFIG", tt.env)
			if tt.localFile {
				if err := os.WriteFile(filepath.Join(dir, "junction.yaml"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := Locate(tt.flag); got != tt.want {
				t.Errorf("Locate(%q) = %q, want %q", tt.flag, got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("api:\n  token: ${JUNCTION_LOAD_TEST_TOKEN}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("api:\n  listne: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JUNCTION_LOAD_TEST_TOKEN", "from-env")

	c, err := Load("")
	if err != nil || !reflect.DeepEqual(c, Default()) {
		t.Errorf(`Load("") = %+v, %v; want the defaults`, c, err)
	}
	c, err = Load(good)
	if err != nil || c.API.Token != "from-env" {
		t.Errorf("Load(good) = %+v, %v; want the token from the process environment", c, err)
	}
	_, err = Load(bad)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].File != bad || es[0].Pos != (Pos{2, 3}) {
		t.Errorf("Load(bad) = %v; want one error at %s:2:3", err, bad)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want an error wrapping fs.ErrNotExist", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/good/*.yaml", "testdata/bad/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			f.Add(readFile(f, file))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, testEnv)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without an error")
			}
			return
		}
		if c != nil {
			t.Fatalf("config %+v returned with an error", c)
		}
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("error is %T (%v), want config.Errors", err, err)
		}
		lines := lineCount(data)
		for _, e := range es {
			if e.Msg == "" {
				t.Errorf("error without a message: %#v", e)
			}
			if e.Pos.Line > lines {
				t.Errorf("line %d beyond the file's %d lines: %v", e.Pos.Line, lines, e)
			}
			if e.Pos.Line < 0 || (e.Pos.Line > 0 && e.Pos.Col < 1) {
				t.Errorf("invalid position %+v: %v", e.Pos, e)
			}
		}
	})
}
