package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
	"github.com/junctionhq/junction/pipeline/pipelinetest"
)

const testRedisURL = "redis://127.0.0.1:6379/0"

func TestRedisConfig(t *testing.T) {
	pipeline.CheckConfigs(t, []pipeline.ConfigCase{
		{`{redis: {url: "redis://:pw@h:6379/2", stream: events, group: g, consumer: c}}`, `{redis: {url: "rediss://h", stream: out}}`, nil},
		{`{redis: {url: "http://h"}}`, `{redis: {url: "redis://h", stream: s, group: g}}`, []string{
			"pipelines.p.input.redis.stream: redis needs a stream",
			"pipelines.p.input.redis.url: url scheme \"http\"",
			"pipelines.p.output.redis: group and consumer are for redis inputs"}},
	})
}

// TestRedisForeignEntries: entries other producers appended become
// records (their fields as text), and a new group starts at the
// beginning of the stream; two consumers of one group share the entries.
func TestRedisForeignEntries(t *testing.T) {
	testutil.RequireService(t, "Redis", "127.0.0.1:6379")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := pipelinetest.Name("junction_test")
	opt, _ := redis.ParseURL(testRedisURL)
	cl := redis.NewClient(opt)
	defer cl.Close()
	defer cl.Del(context.Background(), stream)
	for _, vals := range [][]any{{"data", `{"a":1}`}, {"data", `"text"`}, {"x", "1", "y", "two"}} {
		if err := cl.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: vals}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	conn := &config.RedisConn{URL: testRedisURL, Stream: stream}
	in, err := input(ctx, "p", &config.PipelineInput{Redis: conn})
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
	want := []string{`{"a":1}`, `{"value":"text"}`, `{"x":"1","y":"two"}`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("records %v, want %v", got, want)
	}
	groups, err := cl.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) != 1 || groups[0].Name != "junction-p" || groups[0].Pending != 3 {
		t.Fatalf("groups %+v, %v: want junction-p with 3 pending", groups, err)
	}
	consumers, err := cl.XInfoConsumers(ctx, stream, "junction-p").Result()
	if err != nil || len(consumers) != 1 || !strings.HasPrefix(consumers[0].Name, "junction-") {
		t.Fatalf("consumers %+v, %v: want one named after the node", consumers, err)
	}

	// A second consumer of the group gets what the first did not.
	other, err := input(ctx, "other", &config.PipelineInput{Redis: &config.RedisConn{URL: testRedisURL, Stream: stream, Group: "junction-p", Consumer: "other"}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	out, err := output(ctx, "p", &config.PipelineOutput{Redis: conn})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Write(ctx, []*pipeline.Record{{Fields: map[string]any{"b": 2}}}); err != nil {
		t.Fatal(err)
	}
	var recs []*pipeline.Record
	for len(recs) == 0 && ctx.Err() == nil {
		if recs, err = other.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(recs) != 1 || js(recs[0].Fields) != `{"b":2}` {
		t.Fatalf("the second consumer read %d records", len(recs))
	}
}
