package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
	"github.com/junctionhq/junction/pipeline/pipelinetest"
)

// Services of the conformance tests.
const (
	rabbitURL = "amqp://guest:guest@127.0.0.1:5672/"
	mqttURL   = "mqtt://127.0.0.1:1883"
	redisURL  = "redis://127.0.0.1:6379/0"
)

// connector is a kind whose output and input meet on one endpoint: setup
// makes a fresh one and returns the environment and the configs to build
// the input and the output with.
type connector struct {
	kind      string
	service   string // name and address of the service it needs, if any
	addr      string
	streaming bool
	unordered bool
	record    func(i int) map[string]any
	setup     func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput)
}

var connectors = []connector{
	{kind: "jsonl", setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		dir := t.TempDir()
		return &pipeline.Env{Pipeline: "conformance"},
			&config.PipelineInput{JSONL: &config.FileInput{Path: filepath.Join(dir, "*.jsonl")}},
			&config.PipelineOutput{JSONL: &config.FileOutput{Path: filepath.Join(dir, "out.jsonl")}}
	}},
	{kind: "csv", record: csvRecord, setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		dir := t.TempDir()
		return &pipeline.Env{Pipeline: "conformance"},
			&config.PipelineInput{CSV: &config.FileInput{Path: filepath.Join(dir, "*.csv"),
				Columns: map[string]string{"n": "integer", "price": "real", "ok": "boolean", "tags": "json"}}},
			&config.PipelineOutput{CSV: &config.FileOutput{Path: filepath.Join(dir, "out.csv")}}
	}},
	{kind: "sql", record: sqlRecord, setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		ctx := context.Background()
		db, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "c.db"), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := db.ExecContext(ctx, "CREATE TABLE recs (n INTEGER PRIMARY KEY, name TEXT, price REAL, none TEXT)"); err != nil {
			t.Fatal(err)
		}
		return &pipeline.Env{Pipeline: "conformance", DB: db},
			&config.PipelineInput{SQL: &config.SQLInput{Query: "SELECT n, name, price, none FROM recs ORDER BY n"}},
			&config.PipelineOutput{SQL: &config.SQLOutput{Table: "recs", Mode: "insert"}}
	}},
	{kind: "kafka", streaming: true, setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		topic := pipelinetest.Name("topic")
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		conn := &config.KafkaConn{Brokers: c.ListenAddrs(), Topic: topic}
		return &pipeline.Env{Pipeline: pipelinetest.Name("p")}, &config.PipelineInput{Kafka: conn}, &config.PipelineOutput{Kafka: conn}
	}},
	{kind: "rabbitmq", service: "RabbitMQ", addr: "127.0.0.1:5672", streaming: true, setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		queue := pipelinetest.Name("junction_test")
		rabbit(t, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare(queue, true, false, false, false, nil)
			return err
		})
		t.Cleanup(func() {
			rabbit(t, func(ch *amqp.Channel) error {
				_, err := ch.QueueDelete(queue, false, false, false)
				return err
			})
		})
		return &pipeline.Env{Pipeline: pipelinetest.Name("p")},
			&config.PipelineInput{RabbitMQ: &config.RabbitMQConn{URL: rabbitURL, Queue: queue}},
			&config.PipelineOutput{RabbitMQ: &config.RabbitMQConn{URL: rabbitURL, RoutingKey: queue}}
	}},
	{kind: "mqtt", service: "Mosquitto", addr: "127.0.0.1:1883", streaming: true, setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		env := &pipeline.Env{Pipeline: pipelinetest.Name("p")}
		topic := "junction/test/" + pipelinetest.Name("t")
		t.Cleanup(func() { endMQTTSession(t, "junction-"+env.Pipeline) })
		return env,
			&config.PipelineInput{MQTT: &config.MQTTConn{URL: mqttURL, Topic: topic}},
			&config.PipelineOutput{MQTT: &config.MQTTConn{URL: mqttURL, Topic: topic}}
	}},
	{kind: "redis", service: "Redis", addr: "127.0.0.1:6379", streaming: true, setup: func(t *testing.T) (*pipeline.Env, *config.PipelineInput, *config.PipelineOutput) {
		stream := pipelinetest.Name("junction_test")
		t.Cleanup(func() {
			opt, _ := redis.ParseURL(redisURL)
			cl := redis.NewClient(opt)
			defer cl.Close()
			if err := cl.Del(context.Background(), stream).Err(); err != nil {
				t.Logf("deleting stream %s: %v", stream, err)
			}
		})
		return &pipeline.Env{Pipeline: pipelinetest.Name("p")},
			&config.PipelineInput{Redis: &config.RedisConn{URL: redisURL, Stream: stream, Consumer: "c1"}},
			&config.PipelineOutput{Redis: &config.RedisConn{URL: redisURL, Stream: stream}}
	}},
}

func csvRecord(i int) map[string]any {
	return map[string]any{"n": i, "name": fmt.Sprintf("record %d, \"quoted\"\nsecond line", i), "price": float64(i) + 0.25, "ok": i%2 == 0, "tags": []any{"a", i}}
}

func sqlRecord(i int) map[string]any {
	return map[string]any{"n": i, "name": fmt.Sprintf("record %d «ü»", i), "price": float64(i) + 0.25, "none": nil}
}

// TestConformance runs the conformance suite on every connector of this
// build whose service is here.
func TestConformance(t *testing.T) {
	for _, c := range connectors {
		t.Run(c.kind, func(t *testing.T) {
			if !pipeline.HasKind(c.kind) {
				t.Skipf("no %s input and output in this build", c.kind)
			}
			if c.service != "" {
				testutil.RequireService(t, c.service, c.addr)
			}
			t.Parallel()
			pipelinetest.Run(t, pipelinetest.Kind{
				Name: c.kind, Streaming: c.streaming, Unordered: c.unordered, Record: c.record,
				Setup: func(t *testing.T) pipelinetest.Endpoint {
					env, inCfg, outCfg := c.setup(t)
					return pipelinetest.Endpoint{
						NewOutput: func(t *testing.T) pipeline.Output {
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							defer cancel()
							out, err := pipeline.BuildOutput(ctx, env, outCfg)
							if err != nil {
								t.Fatalf("building the %s output: %v", c.kind, err)
							}
							return out
						},
						NewInput: func(t *testing.T, resume json.RawMessage) pipeline.Input {
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							defer cancel()
							in, err := pipeline.BuildInput(ctx, env, inCfg, resume)
							if err != nil {
								t.Fatalf("building the %s input: %v", c.kind, err)
							}
							return in
						},
					}
				},
			})
		})
	}
}

// rabbit runs f on a channel of the test broker.
func rabbit(t *testing.T, f func(*amqp.Channel) error) {
	t.Helper()
	conn, err := amqp.Dial(rabbitURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := f(ch); err != nil {
		t.Fatal(err)
	}
}

// endMQTTSession removes the broker's persistent session of a client id:
// connecting with a clean start and no expiry, then disconnecting.
func endMQTTSession(t *testing.T, clientID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:1883")
	if err != nil {
		t.Logf("ending the mqtt session of %s: %v", clientID, err)
		return
	}
	cl := paho.NewClient(paho.ClientConfig{ClientID: clientID, Conn: conn})
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 10}); err != nil {
		t.Logf("ending the mqtt session of %s: %v", clientID, err)
		conn.Close()
		return
	}
	_ = cl.Disconnect(&paho.Disconnect{})
}

// input and output build a component of a pipeline named pipelineName.
func input(ctx context.Context, pipelineName string, cfg *config.PipelineInput) (pipeline.Input, error) {
	return pipeline.BuildInput(ctx, &pipeline.Env{Pipeline: pipelineName}, cfg, nil)
}

func output(ctx context.Context, pipelineName string, cfg *config.PipelineOutput) (pipeline.Output, error) {
	return pipeline.BuildOutput(ctx, &pipeline.Env{Pipeline: pipelineName}, cfg)
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
