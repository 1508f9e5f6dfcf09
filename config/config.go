// Package config is Junction's configuration schema: YAML loading with
// ${ENV} interpolation, strict keys, documented defaults and validation
// whose every error carries file:line:col.
package config

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/junctionhq/junction/expr"
)

// Duration is a time.Duration written as a Go duration string ("1.5s") in
// YAML and JSON.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"1.5s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Config is the whole of junction.yaml. Zero values mean "use the default";
// Default() holds the defaults and docs/configuration.md lists them.
type Config struct {
	DataDir         string                   `yaml:"data_dir"`
	ShutdownTimeout Duration                 `yaml:"shutdown_timeout"`
	Log             Log                      `yaml:"log"`
	API             API                      `yaml:"api"`
	NATS            NATS                     `yaml:"nats"`
	SQL             SQL                      `yaml:"sql"`
	Storage         Storage                  `yaml:"storage"`
	EventStore      EventStore               `yaml:"eventstore"`
	Tracing         Tracing                  `yaml:"tracing"`
	Bus             Bus                      `yaml:"bus"`
	Topics          map[string]*Topic        `yaml:"topics"`
	Subscriptions   map[string]*Subscription `yaml:"subscriptions"`
	Mesh            Mesh                     `yaml:"mesh"`
	Services        map[string]*Service      `yaml:"services"`
	Policies        map[string]*Policy       `yaml:"policies"`
	Projections     map[string]*Projection   `yaml:"projections"`
	Gateway         Gateway                  `yaml:"gateway"`
	Workflows       map[string]*Workflow     `yaml:"workflows"`
	Pipelines       map[string]*Pipeline     `yaml:"pipelines"`
}

// Log configures slog output on stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// API configures the management listener.
type API struct {
	Listen       string `yaml:"listen"`
	Token        string `yaml:"token"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
}

// NATS selects the embedded server (URL empty) or an external cluster.
type NATS struct {
	URL string `yaml:"url"`
	// Listen exposes the embedded server on a TCP address; empty keeps it
	// in-process only, so it never takes a port (4222 stays free).
	Listen string `yaml:"listen"`
	// Prefix namespaces every stream, subject and bucket Junction creates,
	// so several deployments (or test runs) can share one NATS cluster.
	Prefix string `yaml:"prefix"`
	// Credentials is a .creds file for an external cluster.
	Credentials string `yaml:"credentials"`
}

// SQL selects SQLite in the data dir (DSN empty) or PostgreSQL.
type SQL struct {
	DSN string `yaml:"dsn"`
}

// EventStore selects where event streams (/v1/streams, /v1/events) live.
type EventStore struct {
	Backend string `yaml:"backend"` // jetstream or postgres
	// DSN is the PostgreSQL database of the postgres backend; empty means
	// sql.dsn when that is PostgreSQL.
	DSN string `yaml:"dsn"`
	// Schema is the PostgreSQL schema holding the event tables, so the
	// store can share a database with other data.
	Schema string `yaml:"schema"`
	// Bridges publish events of the store to bus topics, so subscribers
	// (with retries and dead letters) receive them.
	Bridges map[string]*Bridge `yaml:"bridges"`
}

// Bridge publishes the events of some categories (and types) to a topic,
// in commit order, each as a CloudEvent whose id is the event's id.
type Bridge struct {
	Categories []string `yaml:"categories"` // empty: every category
	Types      []string `yaml:"types"`      // empty: every type
	Topic      string   `yaml:"topic"`
}

// EventStoreDSN is the PostgreSQL DSN of the postgres event store backend:
// eventstore.dsn, else sql.dsn when that is PostgreSQL, else empty.
func (c *Config) EventStoreDSN() string {
	if c.EventStore.DSN != "" {
		return c.EventStore.DSN
	}
	if isPostgresDSN(c.SQL.DSN) {
		return c.SQL.DSN
	}
	return ""
}

func isPostgresDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Storage tunes durability of the embedded JetStream.
type Storage struct {
	Sync string `yaml:"sync"` // default or always
}

// Tracing configures OpenTelemetry span export.
type Tracing struct {
	Exporter string  `yaml:"exporter"` // none, stdout or otlp
	Endpoint string  `yaml:"endpoint"` // OTLP/HTTP endpoint, host:port
	Sample   float64 `yaml:"sample"`   // ratio of new traces sampled, 0..1
}

// Bus holds message-bus wide settings.
type Bus struct {
	AutoCreateTopics bool     `yaml:"auto_create_topics"`
	DedupWindow      Duration `yaml:"dedup_window"`
	MaxMessageBytes  int64    `yaml:"max_message_bytes"`
	MaxBatch         int      `yaml:"max_batch"`
}

// Topic is the retention of one topic. JSON names match the HTTP API.
type Topic struct {
	MaxAge      Duration `yaml:"max_age" json:"max_age,omitempty"`
	MaxBytes    int64    `yaml:"max_bytes" json:"max_bytes,omitempty"`
	MaxMsgs     int64    `yaml:"max_msgs" json:"max_msgs,omitempty"`
	Replicas    int      `yaml:"replicas" json:"replicas,omitempty"`
	DedupWindow Duration `yaml:"dedup_window" json:"dedup_window,omitempty"`
}

// Push is the webhook a push subscription delivers to.
type Push struct {
	URL     string            `yaml:"url" json:"url"`
	Timeout Duration          `yaml:"timeout" json:"timeout,omitempty"`
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
}

// Subscription is a durable consumer of a topic: push (Push set) or pull.
type Subscription struct {
	Topic           string     `yaml:"topic" json:"topic"`
	Filter          string     `yaml:"filter" json:"filter,omitempty"`
	Start           string     `yaml:"start" json:"start,omitempty"`
	Push            *Push      `yaml:"push" json:"push,omitempty"`
	MaxInFlight     int        `yaml:"max_in_flight" json:"max_in_flight,omitempty"`
	OrderedByKey    bool       `yaml:"ordered_by_key" json:"ordered_by_key,omitempty"`
	AckWait         Duration   `yaml:"ack_wait" json:"ack_wait,omitempty"`
	MaxDeliver      int        `yaml:"max_deliver" json:"max_deliver,omitempty"`
	Backoff         []Duration `yaml:"backoff" json:"backoff,omitempty"`
	DeadLetterTopic string     `yaml:"dead_letter_topic" json:"dead_letter_topic,omitempty"`
}

// Default returns the built-in configuration.
func Default() *Config {
	return &Config{
		DataDir:         "./junction-data",
		ShutdownTimeout: Duration(15 * time.Second),
		Log:             Log{Level: "info", Format: "text"},
		API:             API{Listen: "127.0.0.1:4000", MaxBodyBytes: 8 << 20},
		NATS:            NATS{Prefix: "junction"},
		Storage:         Storage{Sync: "default"},
		EventStore:      EventStore{Backend: "jetstream", Schema: "junction_events"},
		Tracing:         Tracing{Exporter: "none", Sample: 1},
		Bus: Bus{
			AutoCreateTopics: true,
			DedupWindow:      Duration(2 * time.Minute),
			MaxMessageBytes:  1 << 20,
			MaxBatch:         1000,
		},
		Gateway: Gateway{Listen: ":8080"},
		Mesh: Mesh{
			TLS:     MeshTLS{CertTTL: Duration(24 * time.Hour)},
			Sidecar: Sidecar{TTL: Duration(10 * time.Second)},
		},
	}
}

// MaxMessageBytesLimit caps bus.max_message_bytes below NATS's 8 MiB
// payload limit, leaving room for headers. Larger payloads belong in object
// storage with a reference in the message.
const MaxMessageBytesLimit = 7 << 20

// Subscription defaults, applied by Normalize.
const (
	DefaultMaxInFlight     = 32   // push: concurrent webhook calls
	DefaultPullMaxInFlight = 1000 // pull: unacknowledged messages across all pullers
	DefaultMaxDeliver      = 5
	DefaultAckWait         = 30 * time.Second
	DefaultPushTimeout     = 10 * time.Second
)

// DefaultBackoff is the retry schedule when none is configured.
var DefaultBackoff = []Duration{Duration(time.Second), Duration(5 * time.Second), Duration(30 * time.Second)}

// Normalize fills unset fields with their defaults.
func (s *Subscription) Normalize(name string) {
	if s.Start == "" {
		s.Start = "new"
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = DefaultMaxInFlight
		if s.Push == nil {
			s.MaxInFlight = DefaultPullMaxInFlight
		}
	}
	if s.MaxDeliver == 0 {
		s.MaxDeliver = DefaultMaxDeliver
	}
	if s.AckWait == 0 {
		s.AckWait = Duration(DefaultAckWait)
	}
	if len(s.Backoff) == 0 {
		s.Backoff = append([]Duration(nil), DefaultBackoff...)
	}
	if s.Push != nil && s.Push.Timeout == 0 {
		s.Push.Timeout = Duration(DefaultPushTimeout)
	}
	if s.DeadLetterTopic == "" {
		s.DeadLetterTopic = name + ".dlq"
	}
}

// Issue is one invalid field, relative to the object checked.
type Issue struct {
	Field string
	Msg   string
}

// issue is an Issue that, for an expression field, also knows where in
// the expression the problem is (1-based, 0 when unknown), so that a
// config file error can point into the expression rather than at its start.
type issue struct {
	Issue
	line, col int
}

func plain(is []issue) []Issue {
	if len(is) == 0 {
		return nil
	}
	out := make([]Issue, len(is))
	for i, x := range is {
		out[i] = x.Issue
	}
	return out
}

// exprError flattens an expression compile error to one line. CEL writes
// each problem as "ERROR: <input>:L:C: msg" plus a source snippet with a
// caret on the next two lines, which would break the one-error-per-line
// output of junction validate and of API problem details. Only the first
// problem is kept: after a syntax error the parser's recovery mostly
// reports echoes of it.
func exprError(err error) (line, col int, msg string) {
	text := strings.TrimPrefix(err.Error(), "invalid expression: ")
	for _, l := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(l, "ERROR: <input>:")
		if !ok {
			continue
		}
		loc, m, ok := strings.Cut(rest, ": ")
		if !ok {
			continue
		}
		if n, _ := fmt.Sscanf(loc, "%d:%d", &line, &col); n == 2 && line > 0 && col > 0 {
			return line, col, fmt.Sprintf("%s (at %d:%d of the expression)", m, line, col)
		}
		return 0, 0, m
	}
	first, _, _ := strings.Cut(text, "\n")
	return 0, 0, first
}

var (
	nameRe  = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	subRe   = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	prefixR = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	schemaR = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
)

// ValidTopicName reports whether s can name a topic: dot-separated tokens
// of letters, digits, '_' and '-', at most 200 characters.
func ValidTopicName(s string) bool { return len(s) <= 200 && nameRe.MatchString(s) }

// ValidSubscriptionName reports whether s can name a subscription.
func ValidSubscriptionName(s string) bool { return len(s) <= 100 && subRe.MatchString(s) }

// ParseStart parses a subscription start position: new, all, seq:N or
// time:RFC3339. It returns the kind and the sequence or time.
func ParseStart(s string) (kind string, seq uint64, t time.Time, err error) {
	switch {
	case s == "" || s == "new":
		return "new", 0, t, nil
	case s == "all":
		return "all", 0, t, nil
	case strings.HasPrefix(s, "seq:"):
		n, err := strconv.ParseUint(s[4:], 10, 64)
		if err != nil || n == 0 {
			return "", 0, t, fmt.Errorf("start %q: seq:N needs a positive integer", s)
		}
		return "seq", n, t, nil
	case strings.HasPrefix(s, "time:"):
		tm, err := time.Parse(time.RFC3339Nano, s[5:])
		if err != nil {
			return "", 0, t, fmt.Errorf("start %q: time:T needs an RFC 3339 time", s)
		}
		return "time", 0, tm, nil
	}
	return "", 0, t, fmt.Errorf("start %q: use new, all, seq:N or time:RFC3339", s)
}

// Check validates a subscription (after Normalize) and returns every issue.
func (s *Subscription) Check() []Issue { return plain(s.check()) }

func (s *Subscription) check() []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	if s.Topic == "" {
		add("topic", "topic is required")
	} else if !ValidTopicName(s.Topic) {
		add("topic", "invalid topic name %q", s.Topic)
	}
	if s.Filter != "" {
		if _, err := expr.CompileBool(s.Filter); err != nil {
			line, col, msg := exprError(err)
			is = append(is, issue{Issue{"filter", "filter: " + msg}, line, col})
		}
	}
	if _, _, _, err := ParseStart(s.Start); err != nil {
		add("start", "%v", err)
	}
	if s.Push != nil {
		u, err := url.Parse(s.Push.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("push.url", "push.url must be an absolute http(s) URL, got %q", s.Push.URL)
		}
		if s.Push.Timeout < 0 {
			add("push.timeout", "push.timeout must be positive")
		}
	} else if s.OrderedByKey {
		add("ordered_by_key", "ordered_by_key needs push delivery: pullers compete, so Junction cannot serialise a key across them")
	}
	if s.MaxInFlight < 1 || s.MaxInFlight > 10000 {
		add("max_in_flight", "max_in_flight must be between 1 and 10000")
	}
	if s.MaxDeliver < 1 {
		add("max_deliver", "max_deliver must be at least 1")
	}
	if s.AckWait < Duration(time.Second) {
		add("ack_wait", "ack_wait must be at least 1s")
	}
	for i, b := range s.Backoff {
		if b <= 0 {
			add(fmt.Sprintf("backoff[%d]", i), "backoff durations must be positive")
		}
	}
	if !ValidTopicName(s.DeadLetterTopic) {
		add("dead_letter_topic", "invalid topic name %q", s.DeadLetterTopic)
	} else if s.DeadLetterTopic == s.Topic {
		add("dead_letter_topic", "dead_letter_topic must differ from topic")
	}
	return is
}

// Check validates a topic's retention settings.
func (t *Topic) Check() []Issue {
	var is []Issue
	if t.MaxAge < 0 {
		is = append(is, Issue{"max_age", "max_age must not be negative"})
	}
	if t.MaxBytes < 0 {
		is = append(is, Issue{"max_bytes", "max_bytes must not be negative"})
	}
	if t.MaxMsgs < 0 {
		is = append(is, Issue{"max_msgs", "max_msgs must not be negative"})
	}
	if t.Replicas < 0 || t.Replicas > 5 {
		is = append(is, Issue{"replicas", "replicas must be between 1 and 5"})
	}
	if t.DedupWindow < 0 {
		is = append(is, Issue{"dedup_window", "dedup_window must not be negative"})
	}
	return is
}

// Validate checks a config changed after loading (by command-line flags,
// or built in Go). Its errors name config paths, as there is no file.
func (c *Config) Validate() error {
	is := c.validate()
	if len(is) == 0 {
		return nil
	}
	es := make(Errors, len(is))
	for i, x := range is {
		es[i] = Error{Path: x.Field, Msg: x.Msg}
	}
	return es
}

// validate checks the whole config and returns issues keyed by config path.
func (c *Config) validate() []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	if c.DataDir == "" {
		add("data_dir", "data_dir must not be empty")
	}
	if c.ShutdownTimeout <= 0 {
		add("shutdown_timeout", "shutdown_timeout must be positive")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "log.level must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "log.format must be text or json, got %q", c.Log.Format)
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		add("api.listen", "api.listen must be host:port, got %q", c.API.Listen)
	}
	if c.API.MaxBodyBytes < 1024 {
		add("api.max_body_bytes", "api.max_body_bytes must be at least 1024")
	}
	if c.NATS.URL != "" {
		for _, u := range strings.Split(c.NATS.URL, ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Host == "" {
				add("nats.url", "nats.url must be a comma-separated list of nats://host:port URLs, got %q", u)
			}
		}
		if c.NATS.Listen != "" {
			add("nats.listen", "nats.listen applies to the embedded server only; remove it or nats.url")
		}
	}
	if c.NATS.Listen != "" {
		if _, _, err := net.SplitHostPort(c.NATS.Listen); err != nil {
			add("nats.listen", "nats.listen must be host:port, got %q", c.NATS.Listen)
		}
	}
	if !prefixR.MatchString(c.NATS.Prefix) {
		add("nats.prefix", "nats.prefix must be letters, digits, '_' or '-', got %q", c.NATS.Prefix)
	}
	if c.SQL.DSN != "" && !isPostgresDSN(c.SQL.DSN) && !strings.HasPrefix(c.SQL.DSN, "sqlite:") {
		add("sql.dsn", "sql.dsn must be postgres://..., postgresql://... or sqlite:PATH")
	}
	switch c.EventStore.Backend {
	case "jetstream":
		if c.EventStore.DSN != "" {
			add("eventstore.dsn", "eventstore.dsn applies to the postgres backend only; remove it or set eventstore.backend: postgres")
		}
	case "postgres":
		switch {
		case c.EventStore.DSN != "" && !isPostgresDSN(c.EventStore.DSN):
			add("eventstore.dsn", "eventstore.dsn must be postgres://... or postgresql://...")
		case c.EventStoreDSN() == "":
			add("eventstore.dsn", "the postgres event store needs a PostgreSQL database: set eventstore.dsn, or sql.dsn to postgres://...")
		}
	default:
		add("eventstore.backend", "eventstore.backend must be jetstream or postgres, got %q", c.EventStore.Backend)
	}
	for _, name := range sortedNames(c.EventStore.Bridges) {
		p := "eventstore.bridges." + name
		b := c.EventStore.Bridges[name]
		if !ValidSubscriptionName(name) {
			add(p, "invalid bridge name %q: use letters, digits, '_' and '-'", name)
		}
		if b == nil {
			add(p, "bridge %q is empty: it needs at least a topic", name)
			continue
		}
		if !ValidTopicName(b.Topic) {
			add(p+".topic", "bridge %s needs a valid topic, got %q", name, b.Topic)
		}
		for i, cat := range b.Categories {
			if cat == "" || strings.ContainsAny(cat, "-$") {
				add(fmt.Sprintf("%s.categories[%d]", p, i), "invalid category %q: a category is a stream name's part before its first '-'", cat)
			}
		}
		for i, typ := range b.Types {
			if typ == "" {
				add(fmt.Sprintf("%s.types[%d]", p, i), "event types must not be empty")
			}
		}
	}
	if !schemaR.MatchString(c.EventStore.Schema) {
		add("eventstore.schema", "eventstore.schema must be 1..63 letters, digits and '_', not starting with a digit, got %q", c.EventStore.Schema)
	}
	switch c.Storage.Sync {
	case "default", "always":
	default:
		add("storage.sync", "storage.sync must be default or always, got %q", c.Storage.Sync)
	}
	switch c.Tracing.Exporter {
	case "none", "stdout", "otlp":
	default:
		add("tracing.exporter", "tracing.exporter must be none, stdout or otlp, got %q", c.Tracing.Exporter)
	}
	if c.Tracing.Exporter == "otlp" && c.Tracing.Endpoint == "" {
		add("tracing.endpoint", "tracing.endpoint is required with the otlp exporter")
	}
	if c.Tracing.Sample < 0 || c.Tracing.Sample > 1 {
		add("tracing.sample", "tracing.sample must be between 0 and 1")
	}
	if c.Bus.DedupWindow < 0 {
		add("bus.dedup_window", "bus.dedup_window must not be negative")
	}
	if c.Bus.MaxMessageBytes < 1 || c.Bus.MaxMessageBytes > MaxMessageBytesLimit {
		add("bus.max_message_bytes", "bus.max_message_bytes must be between 1 and %d (7 MiB)", MaxMessageBytesLimit)
	}
	if c.Bus.MaxBatch < 1 || c.Bus.MaxBatch > 100000 {
		add("bus.max_batch", "bus.max_batch must be between 1 and 100000")
	}
	is = append(is, c.validateMesh()...)
	is = append(is, c.validateProjections()...)
	is = append(is, c.validateGateway()...)
	is = append(is, c.validateWorkflows()...)
	is = append(is, c.validatePipelines()...)
	for name, t := range c.Topics {
		p := "topics." + name
		if !ValidTopicName(name) {
			add(p, "invalid topic name %q: use dot-separated tokens of letters, digits, '_' and '-'", name)
		}
		if t == nil {
			continue
		}
		for _, i := range t.Check() {
			add(p+"."+i.Field, "%s", i.Msg)
		}
	}
	for name, s := range c.Subscriptions {
		p := "subscriptions." + name
		if !ValidSubscriptionName(name) {
			add(p, "invalid subscription name %q: use letters, digits, '_' and '-'", name)
		}
		if s == nil {
			add(p, "subscription %q is empty: it needs at least a topic", name)
			continue
		}
		s.Normalize(name)
		for _, i := range s.check() {
			i.Field = p + "." + i.Field
			is = append(is, i)
		}
	}
	return is
}
