package pipeline_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
	"github.com/junctionhq/junction/pipeline/pipelinetest"
)

const testMQTTURL = "mqtt://127.0.0.1:1883"

func TestMQTTConfig(t *testing.T) {
	pipeline.CheckConfigs(t, []pipeline.ConfigCase{
		{`{mqtt: {url: "mqtt://h:1883", topic: "sensors/+/temp/#", qos: 2}}`, `{mqtt: {url: "mqtts://u:p@h", topic: "out/x"}}`, nil},
		{`{mqtt: {url: "mqtt://h", topic: "a/b#"}}`, `{mqtt: {url: "ws://h", topic: "a/+", qos: 3}}`, []string{
			"pipelines.p.input.mqtt.topic: invalid topic filter",
			"pipelines.p.output.mqtt.qos: qos is 0, 1 or 2, not 3",
			"pipelines.p.output.mqtt.topic: an output publishes to one topic",
			"pipelines.p.output.mqtt.url: url scheme \"ws\""}},
		{`{mqtt: {url: "mqtt://", qos: -1}}`, `{stdout: {}}`, []string{
			"pipelines.p.input.mqtt.qos: qos is 0, 1 or 2, not -1",
			"pipelines.p.input.mqtt.topic: mqtt needs a topic",
			"pipelines.p.input.mqtt.url: the url \"mqtt://\" has no host"}},
	})
}

// TestMQTTFilterAndForeignPayloads: an input's topic filter takes the
// messages of every topic it matches, JSON or not.
func TestMQTTFilterAndForeignPayloads(t *testing.T) {
	testutil.RequireService(t, "Mosquitto", "127.0.0.1:1883")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := "junction/test/" + pipelinetest.Name("f")
	name := pipelinetest.Name("p")
	in, err := input(ctx, name, &config.PipelineInput{MQTT: &config.MQTTConn{URL: testMQTTURL, Topic: base + "/+/temp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		in.Close()
		endMQTTSession(t, "junction-"+name)
	}()
	conn, err := net.Dial("tcp", "127.0.0.1:1883")
	if err != nil {
		t.Fatal(err)
	}
	pub := paho.NewClient(paho.ClientConfig{ClientID: name + "-pub", Conn: conn})
	if _, err := pub.Connect(ctx, &paho.Connect{ClientID: name + "-pub", CleanStart: true, KeepAlive: 10}); err != nil {
		t.Fatal(err)
	}
	defer pub.Disconnect(&paho.Disconnect{})
	for _, m := range []struct{ topic, body string }{
		{base + "/a/temp", `{"c":21.5}`},
		{base + "/a/humidity", `{"h":40}`},
		{base + "/b/temp", `22`},
		{base + "/c/temp", `not json`},
	} {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: m.topic, QoS: 1, Payload: []byte(m.body)}); err != nil {
			t.Fatal(err)
		}
	}
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
	want := []string{`{"c":21.5}`, `{"value":22}`, `{"value":"not json"}`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("records %v, want %v", got, want)
	}
	if err := in.Commit(ctx, []byte("3")); err != nil {
		t.Fatal(err)
	}
}

func TestMQTTUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := input(ctx, "p", &config.PipelineInput{MQTT: &config.MQTTConn{URL: "mqtt://127.0.0.1:1", Topic: "x"}}); err == nil {
		t.Fatal("connecting to no broker succeeded")
	}
	if _, err := output(ctx, "p", &config.PipelineOutput{MQTT: &config.MQTTConn{URL: "http://127.0.0.1:1883", Topic: "x"}}); err == nil {
		t.Fatal("an http url was accepted")
	}
}
