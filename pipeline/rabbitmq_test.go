package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
	"github.com/junctionhq/junction/pipeline/pipelinetest"
)

const testRabbitURL = "amqp://guest:guest@127.0.0.1:5672/"

func TestRabbitMQConfig(t *testing.T) {
	pipeline.CheckConfigs(t, []pipeline.ConfigCase{
		{`{rabbitmq: {url: "amqp://guest:guest@localhost:5672/", queue: orders}}`, `{rabbitmq: {url: "amqps://h/vhost", exchange: events, routing_key: order.created}}`, nil},
		{`{generate: {count: 1}}`, `{rabbitmq: {url: "amqp://h", queue: orders}}`, nil},
		{`{rabbitmq: {url: "http://h", exchange: x}}`, `{rabbitmq: {url: "amqp://h"}}`, []string{
			"pipelines.p.input.rabbitmq: exchange and routing_key are for rabbitmq outputs",
			"pipelines.p.input.rabbitmq.queue: a rabbitmq input needs the queue",
			"pipelines.p.input.rabbitmq.url: url scheme \"http\"",
			"pipelines.p.output.rabbitmq.routing_key: a rabbitmq output needs"}},
		{`{generate: {count: 1}}`, `{rabbitmq: {exchange: x, queue: q}}`, []string{
			"pipelines.p.output.rabbitmq.queue: queue sends through the default exchange",
			"pipelines.p.output.rabbitmq.url: a url is needed"}},
	})
}

// TestRabbitMQUnroutable: a message no queue takes fails the write, and
// a missing queue fails the input.
func TestRabbitMQUnroutable(t *testing.T) {
	testutil.RequireService(t, "RabbitMQ", "127.0.0.1:5672")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missing := pipelinetest.Name("junction_missing")
	out, err := output(ctx, "p", &config.PipelineOutput{RabbitMQ: &config.RabbitMQConn{URL: testRabbitURL, Queue: missing}})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	err = out.Write(ctx, []*pipeline.Record{{Fields: map[string]any{"a": 1}}, {Fields: map[string]any{"a": 2}}})
	if err == nil || !strings.Contains(err.Error(), "2 of 2 messages reached no queue") {
		t.Fatalf("writing to a missing queue: %v", err)
	}
	if _, err := input(ctx, "p", &config.PipelineInput{RabbitMQ: &config.RabbitMQConn{URL: testRabbitURL, Queue: missing}}); err == nil {
		t.Fatal("consuming a missing queue succeeded")
	}
	if _, err := input(ctx, "p", &config.PipelineInput{RabbitMQ: &config.RabbitMQConn{URL: "amqp://guest:guest@127.0.0.1:1/", Queue: "q"}}); err == nil {
		t.Fatal("connecting to no broker succeeded")
	}
}

// TestRabbitMQForeignMessages: messages other producers sent, JSON or
// not, become records.
func TestRabbitMQForeignMessages(t *testing.T) {
	testutil.RequireService(t, "RabbitMQ", "127.0.0.1:5672")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	queue := pipelinetest.Name("junction_test")
	conn, err := amqp.Dial(testRabbitURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	for _, body := range []string{`{"a":1}`, `[1]`, `plain text`} {
		if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	in, err := input(ctx, "p", &config.PipelineInput{RabbitMQ: &config.RabbitMQConn{URL: testRabbitURL, Queue: queue}})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var got []string
	for len(got) < 3 && ctx.Err() == nil {
		recs, err := in.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got = append(got, js(r.Fields))
		}
	}
	want := []string{`{"a":1}`, `{"value":[1]}`, `{"value":"plain text"}`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("records %v, want %v", got, want)
	}
}
