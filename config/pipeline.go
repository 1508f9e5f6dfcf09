package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Pipeline moves records from an input through processors to an output:
// as a run that ends (on demand, or on a cron schedule) or, with Stream,
// continuously.
type Pipeline struct {
	// Schedule is a cron expression starting runs; empty means on demand.
	Schedule string `yaml:"schedule"`
	// Stream runs the pipeline continuously from the node's start.
	Stream     bool               `yaml:"stream"`
	Input      *PipelineInput     `yaml:"input"`
	Processors []*PipelineProcess `yaml:"processors"`
	Batch      PipelineBatch      `yaml:"batch"`
	Output     *PipelineOutput    `yaml:"output"`
	// DeadLetter receives the records a processor or the output refused,
	// with their error; without it they are counted and logged.
	DeadLetter *PipelineOutput `yaml:"dead_letter"`
}

// PipelineInput is where records come from: exactly one field is set.
type PipelineInput struct {
	CSV      *FileInput     `yaml:"csv"`
	JSONL    *FileInput     `yaml:"jsonl"`
	JSON     *FileInput     `yaml:"json"` // files holding one JSON array each
	Generate *GenerateInput `yaml:"generate"`
	SQL      *SQLInput      `yaml:"sql"`
	// HTTPPoll fetches pages of records from a URL.
	HTTPPoll *HTTPPollInput `yaml:"http_poll"`
	// HTTPServer receives records posted to the API.
	HTTPServer *struct{}     `yaml:"http_server"`
	Topic      *TopicInput   `yaml:"topic"`
	Events     *EventsInput  `yaml:"events"`
	Kafka      *KafkaConn    `yaml:"kafka"`
	RabbitMQ   *RabbitMQConn `yaml:"rabbitmq"`
	MQTT       *MQTTConn     `yaml:"mqtt"`
	Redis      *RedisConn    `yaml:"redis"`
}

// HTTPPollInput fetches URL every Interval (streaming) or once per run,
// following pages: Records is CEL over response (the decoded body) that
// yields the page's list of records, Next CEL yielding the next page's
// URL (empty or null ends it).
type HTTPPollInput struct {
	URL      string            `yaml:"url"`
	Headers  map[string]string `yaml:"headers"`
	Records  string            `yaml:"records"`
	Next     string            `yaml:"next"`
	Interval Duration          `yaml:"interval"`
}

// TopicInput reads a Junction topic through a durable subscription.
type TopicInput struct {
	Topic  string `yaml:"topic"`
	Filter string `yaml:"filter"`
	Start  string `yaml:"start"` // new (default) or all
}

// EventsInput reads the event store's global log: the events of these
// categories (all when empty), from a checkpoint.
type EventsInput struct {
	Categories []string `yaml:"categories"`
	Types      []string `yaml:"types"`
}

// KafkaConn is a Kafka topic: consumed in Group, or produced to.
type KafkaConn struct {
	Brokers []string `yaml:"brokers"`
	Topic   string   `yaml:"topic"`
	Group   string   `yaml:"group"`
	Key     string   `yaml:"key"` // output: CEL over row
}

// RabbitMQConn is a RabbitMQ queue to consume, or an exchange and
// routing key to publish to.
type RabbitMQConn struct {
	URL        string `yaml:"url"`
	Queue      string `yaml:"queue"`
	Exchange   string `yaml:"exchange"`
	RoutingKey string `yaml:"routing_key"`
}

// MQTTConn is an MQTT topic (a filter for inputs). QoS is 0, 1 or 2
// (default 1: an input acknowledges each message when its batch is
// written; at 0 the broker does not redeliver).
type MQTTConn struct {
	URL   string `yaml:"url"`
	Topic string `yaml:"topic"`
	QoS   *int   `yaml:"qos"`
}

// RedisConn is a Redis stream: read in Group as Consumer, or appended to.
type RedisConn struct {
	URL      string `yaml:"url"`
	Stream   string `yaml:"stream"`
	Group    string `yaml:"group"`
	Consumer string `yaml:"consumer"`
}

// FileInput reads the files a glob matches, in name order; files ending
// in .gz are decompressed.
type FileInput struct {
	Path string `yaml:"path"`
	// Columns types CSV columns: text (the default), integer, real,
	// boolean or json.
	Columns map[string]string `yaml:"columns"`
	// Delimiter of CSV fields (default ,).
	Delimiter string `yaml:"delimiter"`
}

// GenerateInput makes Count records from a template over the record
// number (input.n), for tests and demos; Count 0 with stream means no end.
type GenerateInput struct {
	Count  int               `yaml:"count"`
	Fields map[string]string `yaml:"fields"` // name -> CEL over input.n
}

// SQLInput reads the rows of a query; with Cursor, only rows whose cursor
// column is above the high-water mark of the last run that completed
// (the query must select that column and may use :cursor for it).
type SQLInput struct {
	// Database is postgres://..., mysql://user@tcp(host:port)/db or
	// sqlite:PATH; empty for the node's SQL database.
	Database string `yaml:"database"`
	Query    string `yaml:"query"`
	Cursor   string `yaml:"cursor"`
}

// PipelineProcess is one processor: exactly one field is set.
type PipelineProcess struct {
	// Filter keeps the records for which this CEL over row holds.
	Filter string `yaml:"filter"`
	// Map builds a new record: field -> CEL over row.
	Map map[string]string `yaml:"map"`
	// Set adds or replaces fields: field -> CEL over row.
	Set map[string]string `yaml:"set"`
	// Remove drops fields.
	Remove []string `yaml:"remove"`
	// Split makes one record per element of the list this CEL yields;
	// each is the element (a map) or {"value": element}.
	Split string `yaml:"split"`
	// Dedupe drops a record whose key was seen within the window.
	Dedupe *DedupeProcess `yaml:"dedupe"`
	// Enrich calls a service per record and merges its answer.
	Enrich *EnrichProcess `yaml:"enrich"`
	// Validate checks records against a JSON Schema; failures go to the
	// dead letter.
	Validate any `yaml:"validate"`
	// Switch sends the records a case accepts to that case's output.
	Switch []*SwitchRoute `yaml:"switch"`
	// Window aggregates records by key over event-time windows.
	Window *WindowProcess `yaml:"window"`
	// RateLimit passes at most this many records per second.
	RateLimit float64 `yaml:"rate_limit"`
}

// DedupeProcess is a dedupe on Key (CEL over row) within Window; the
// keys seen are kept in JetStream KV, so they survive restarts.
type DedupeProcess struct {
	Key    string   `yaml:"key"`
	Window Duration `yaml:"window"`
}

// EnrichProcess calls a service (through the mesh) or URL per record,
// with a cache, and puts the answer's JSON under Into.
type EnrichProcess struct {
	Service string   `yaml:"service"`
	URL     string   `yaml:"url"`
	Path    string   `yaml:"path"` // template over row
	Into    string   `yaml:"into"`
	Cache   Duration `yaml:"cache"`
}

// SwitchRoute is one case of a switch processor.
type SwitchRoute struct {
	When   string          `yaml:"when"`
	Output *PipelineOutput `yaml:"output"`
}

// WindowProcess groups records by Key (CEL over row) into windows on
// event time (Time: CEL over row yielding a timestamp): tumbling (Size),
// sliding (Size and Slide) or session (Gap). A window is emitted when the
// watermark (the latest event time seen, less AllowedLateness) passes
// its end; later records are late and go to the dead letter. Aggregates
// maps an output field to count, or sum/min/max/avg/first/last of a CEL
// over row (as "sum(row.amount)").
type WindowProcess struct {
	Key             string            `yaml:"key"`
	Time            string            `yaml:"time"`
	Size            Duration          `yaml:"size"`
	Slide           Duration          `yaml:"slide"`
	Gap             Duration          `yaml:"gap"`
	AllowedLateness Duration          `yaml:"allowed_lateness"`
	Aggregates      map[string]string `yaml:"aggregates"`
}

// PipelineBatch groups records before the output writes them: a batch is
// written when it holds Count records or Bytes bytes (of JSON), or when
// Period has passed since its first record, and at the end of a run.
type PipelineBatch struct {
	Count  int      `yaml:"count"`
	Bytes  int      `yaml:"bytes"`
	Period Duration `yaml:"period"`
}

// PipelineOutput is where records go: exactly one field is set.
type PipelineOutput struct {
	SQL      *SQLOutput    `yaml:"sql"`
	JSONL    *FileOutput   `yaml:"jsonl"`
	CSV      *FileOutput   `yaml:"csv"`
	Stdout   *struct{}     `yaml:"stdout"`
	Topic    *TopicOut     `yaml:"topic"`
	HTTP     *HTTPOut      `yaml:"http"`
	Kafka    *KafkaConn    `yaml:"kafka"`
	RabbitMQ *RabbitMQConn `yaml:"rabbitmq"`
	MQTT     *MQTTConn     `yaml:"mqtt"`
	Redis    *RedisConn    `yaml:"redis"`
}

// HTTPOut posts records to URL: one request per record, or with Batch
// one per batch (a JSON array).
type HTTPOut struct {
	URL     string            `yaml:"url"`
	Method  string            `yaml:"method"`
	Headers map[string]string `yaml:"headers"`
	Batch   bool              `yaml:"batch"`
}

// SQLOutput writes records as rows of Table: insert, or upsert on Key.
// Columns are the records' fields (the first record's, unless Columns
// lists them).
type SQLOutput struct {
	Database string   `yaml:"database"`
	Table    string   `yaml:"table"`
	Mode     string   `yaml:"mode"` // insert (default) or upsert
	Key      []string `yaml:"key"`
	Columns  []string `yaml:"columns"`
}

// FileOutput appends records to a file; a new file is started when the
// current one reaches RotateBytes (the old one renamed with a sequence
// number).
type FileOutput struct {
	Path        string   `yaml:"path"`
	Columns     []string `yaml:"columns"` // CSV column order (default: the first record's fields, sorted)
	RotateBytes int64    `yaml:"rotate_bytes"`
}

// TopicOut publishes each record as a message's data.
type TopicOut struct {
	Topic string `yaml:"topic"`
	Type  string `yaml:"type"`
	Key   string `yaml:"key"` // CEL over row: the ordering key
}

// Kind names the set field of an input.
func (in *PipelineInput) Kind() string {
	return oneOf(map[string]bool{"csv": in.CSV != nil, "jsonl": in.JSONL != nil, "json": in.JSON != nil,
		"generate": in.Generate != nil, "sql": in.SQL != nil, "http_poll": in.HTTPPoll != nil, "http_server": in.HTTPServer != nil,
		"topic": in.Topic != nil, "events": in.Events != nil, "kafka": in.Kafka != nil, "rabbitmq": in.RabbitMQ != nil,
		"mqtt": in.MQTT != nil, "redis": in.Redis != nil})
}

// Kind names the set field of an output.
func (o *PipelineOutput) Kind() string {
	return oneOf(map[string]bool{"sql": o.SQL != nil, "jsonl": o.JSONL != nil, "csv": o.CSV != nil,
		"stdout": o.Stdout != nil, "topic": o.Topic != nil, "http": o.HTTP != nil, "kafka": o.Kafka != nil,
		"rabbitmq": o.RabbitMQ != nil, "mqtt": o.MQTT != nil, "redis": o.Redis != nil})
}

// Kind names the set field of a processor.
func (p *PipelineProcess) Kind() string {
	return oneOf(map[string]bool{"filter": p.Filter != "", "map": p.Map != nil, "set": p.Set != nil,
		"remove": p.Remove != nil, "split": p.Split != "", "dedupe": p.Dedupe != nil, "enrich": p.Enrich != nil,
		"validate": p.Validate != nil, "switch": p.Switch != nil, "window": p.Window != nil, "rate_limit": p.RateLimit != 0})
}

// Checks of pipeline components by kind, beyond the common ones: each
// returns (field suffix, message) pairs. Files that add a kind register
// its check here.
var (
	inputChecks     = map[string]func(*PipelineInput, exprCheck, string) []issue{}
	outputChecks    = map[string]func(*PipelineOutput, exprCheck, string) []issue{}
	processorChecks = map[string]func(*PipelineProcess, exprCheck, string) []issue{}
)

// oneOf returns the one set name, "" when none is, and "a and b" when
// several are.
func oneOf(set map[string]bool) string {
	var names []string
	for _, n := range sortedNames(set) {
		if set[n] {
			names = append(names, n)
		}
	}
	if len(names) == 1 {
		return names[0]
	}
	if len(names) == 0 {
		return ""
	}
	return strings.Join(names, " and ")
}

// CSVColumnTypes are the types a CSV column may have.
var CSVColumnTypes = []string{"text", "integer", "real", "boolean", "json"}

func (c *Config) validatePipelines() []issue {
	var is []issue
	for _, name := range sortedNames(c.Pipelines) {
		p := c.Pipelines[name]
		path := "pipelines." + name
		add := func(f, format string, args ...any) {
			is = append(is, issue{Issue: Issue{path + f, fmt.Sprintf(format, args...)}})
		}
		if !ValidIdent(name) {
			add("", "invalid pipeline name %q: use lower-case letters, digits and '_'", name)
		}
		if p == nil {
			add("", "pipeline %q is empty: it needs an input and an output", name)
			continue
		}
		if p.Schedule != "" {
			if p.Stream {
				add(".schedule", "a streaming pipeline runs continuously: remove schedule or stream")
			}
			if _, err := ParseCron(p.Schedule); err != nil {
				add(".schedule", "invalid cron %q: %v", p.Schedule, err)
			}
		}
		c := exprCheck{is: &is, refs: map[string]bool{}}
		switch k := kindOf(p.Input); {
		case p.Input == nil || k == "":
			add(".input", "a pipeline needs an input: csv, jsonl, json, generate, sql, http_poll, http_server, topic, events, kafka, rabbitmq, mqtt or redis")
		case strings.Contains(k, " and "):
			add(".input", "an input has one kind, this one has %s", k)
		case k == "csv" || k == "jsonl" || k == "json":
			f := map[string]*FileInput{"csv": p.Input.CSV, "jsonl": p.Input.JSONL, "json": p.Input.JSON}[k]
			if f.Path == "" {
				add(".input."+k+".path", "a file input needs a path (a glob)")
			} else if _, err := filepath.Match(f.Path, ""); err != nil {
				add(".input."+k+".path", "invalid glob %q: %v", f.Path, err)
			}
			for col, t := range f.Columns {
				if !containsStr(CSVColumnTypes, t) {
					add(".input."+k+".columns."+col, "column type %q: use %s", t, strings.Join(CSVColumnTypes, ", "))
				}
			}
			if len([]rune(f.Delimiter)) > 1 {
				add(".input."+k+".delimiter", "a delimiter is one character")
			}
		case k == "generate":
			g := p.Input.Generate
			if g.Count < 0 || g.Count == 0 && !p.Stream {
				add(".input.generate.count", "generate needs a positive count (or stream: true for no end)")
			}
			for _, f := range sortedNames(g.Fields) {
				c.cel(path+".input.generate.fields."+f, g.Fields[f], false)
			}
		default:
			if f := inputChecks[k]; f != nil {
				is = append(is, f(p.Input, c, path+".input."+k)...)
			}
		}
		for i, pr := range p.Processors {
			pp := fmt.Sprintf("%s.processors[%d]", path, i)
			if pr == nil {
				is = append(is, issue{Issue: Issue{pp, "empty processor"}})
				continue
			}
			switch k := pr.Kind(); {
			case k == "":
				is = append(is, issue{Issue: Issue{pp, "a processor is one of filter, map, set, remove, split, dedupe, enrich, validate, switch, window and rate_limit"}})
			case strings.Contains(k, " and "):
				is = append(is, issue{Issue: Issue{pp, "a processor does one thing, this one has " + k}})
			case k == "filter":
				c.cel(pp+".filter", pr.Filter, true)
			case k == "split":
				c.cel(pp+".split", pr.Split, false)
			case k == "map" || k == "set":
				m := pr.Map
				if k == "set" {
					m = pr.Set
				}
				for _, f := range sortedNames(m) {
					c.cel(pp+"."+k+"."+f, m[f], false)
				}
			default:
				if f := processorChecks[k]; f != nil {
					is = append(is, f(pr, c, pp+"."+k)...)
				}
			}
		}
		if p.Batch.Count < 0 || p.Batch.Bytes < 0 || p.Batch.Period < 0 {
			add(".batch", "batch sizes and period must not be negative")
		}
		for _, o := range []struct {
			field string
			out   *PipelineOutput
		}{{".output", p.Output}, {".dead_letter", p.DeadLetter}} {
			if o.out == nil {
				if o.field == ".output" {
					add(o.field, "a pipeline needs an output: sql, jsonl, csv, stdout, topic, http, kafka, rabbitmq, mqtt or redis")
				}
				continue
			}
			switch k := o.out.Kind(); {
			case k == "":
				add(o.field, "an output is one of sql, jsonl, csv, stdout, topic, http, kafka, rabbitmq, mqtt and redis")
			case strings.Contains(k, " and "):
				add(o.field, "an output has one kind, this one has %s", k)
			case k == "sql":
				s := o.out.SQL
				if !ValidIdent(s.Table) {
					add(o.field+".sql.table", "invalid table name %q: use lower-case letters, digits and '_'", s.Table)
				}
				switch s.Mode {
				case "":
					s.Mode = "insert"
				case "insert":
				case "upsert":
					if len(s.Key) == 0 {
						add(o.field+".sql.key", "upsert needs key: the columns of the table's unique key")
					}
				default:
					add(o.field+".sql.mode", "mode is insert or upsert, not %q", s.Mode)
				}
				for _, col := range append(append([]string(nil), s.Key...), s.Columns...) {
					if !ValidIdent(col) {
						add(o.field+".sql", "invalid column name %q", col)
					}
				}
			case k == "jsonl" || k == "csv":
				f := o.out.JSONL
				if k == "csv" {
					f = o.out.CSV
				}
				if f.Path == "" {
					add(o.field+"."+k+".path", "a file output needs a path")
				}
			case k == "topic":
				if !ValidTopicName(o.out.Topic.Topic) {
					add(o.field+".topic.topic", "invalid topic %q", o.out.Topic.Topic)
				}
				c.cel(path+o.field+".topic.key", o.out.Topic.Key, false)
			default:
				if f := outputChecks[k]; f != nil {
					is = append(is, f(o.out, c, path+o.field+"."+k)...)
				}
			}
		}
	}
	return is
}

func kindOf(in *PipelineInput) string {
	if in == nil {
		return ""
	}
	return in.Kind()
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
