package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/junctionhq/junction/config"
)

// BuildInput and BuildOutput build components by their config, for the
// conformance tests of package pipeline_test.
var (
	BuildInput  = buildInput
	BuildOutput = buildOutput
)

// HasKind says whether this build has both an input and an output of
// kind.
func HasKind(kind string) bool { return inputs[kind] != nil && outputs[kind] != nil }

func TestDecodeMessage(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{`{"a":1,"b":[true,null]}`, `{"a":1,"b":[true,null]}`},
		{`[1,2]`, `{"value":[1,2]}`},
		{`"text"`, `{"value":"text"}`},
		{`42`, `{"value":42}`},
		{`not json`, `{"value":"not json"}`},
		{``, `{"value":""}`},
	} {
		b, _ := json.Marshal(decodeMessage([]byte(c.in)))
		if string(b) != c.want {
			t.Errorf("decodeMessage(%q) = %s, want %s", c.in, b, c.want)
		}
	}
}

// TestKafkaKeyAndPartitions produces with a key to a topic of several
// partitions: the records of one key keep their order, and the input
// commits the offsets of every partition it read.
func TestKafkaKeyAndPartitions(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := &config.KafkaConn{Brokers: c.ListenAddrs(), Topic: "orders", Key: "row.customer"}
	out, err := newKafkaOutput(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var recs []*Record
	for i := range 30 {
		recs = append(recs, &Record{Fields: map[string]any{"customer": []string{"a", "b", "c"}[i%3], "i": i}})
	}
	if err := out.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// The key is the expression's value.
	probe, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("orders"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int32{}
	for n := 0; n < 30; {
		fs := probe.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 30 messages: %v", n, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			f := decodeMessage(r.Value)
			if string(r.Key) != f["customer"] {
				t.Errorf("message %v has key %q", f, r.Key)
			}
			if p, ok := keys[string(r.Key)]; ok && p != r.Partition {
				t.Errorf("key %s in partitions %d and %d", r.Key, p, r.Partition)
			}
			keys[string(r.Key)] = r.Partition
		})
	}
	probe.Close()

	read := func(in *kafkaInput, want int) []*Record {
		var got []*Record
		for len(got) < want {
			rs, err := in.Next(ctx)
			if err != nil {
				t.Fatalf("next after %d records: %v", len(got), err)
			}
			got = append(got, rs...)
		}
		return got
	}
	in, err := newKafkaInput(ctx, &config.KafkaConn{Brokers: c.ListenAddrs(), Topic: "orders"}, "g")
	if err != nil {
		t.Fatal(err)
	}
	got := read(in, 30)
	last := map[string]float64{}
	for _, r := range got {
		cust, i := r.Fields["customer"].(string), r.Fields["i"].(float64)
		if p, ok := last[cust]; ok && p > i {
			t.Errorf("customer %s: record %v after %v", cust, i, p)
		}
		last[cust] = i
	}
	var pos map[string][2]int64
	if err := json.Unmarshal(got[len(got)-1].Pos, &pos); err != nil {
		t.Fatal(err)
	}
	parts := map[int32]bool{}
	for _, p := range keys {
		parts[p] = true
	}
	if len(pos) != len(parts) {
		t.Errorf("the last position %s does not hold the %d partitions read", got[len(got)-1].Pos, len(parts))
	}
	if err := in.Commit(ctx, got[len(got)-1].Pos); err != nil {
		t.Fatal(err)
	}
	in.Close()
	in, err = newKafkaInput(ctx, &config.KafkaConn{Brokers: c.ListenAddrs(), Topic: "orders"}, "g")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := out.Write(ctx, []*Record{{Fields: map[string]any{"customer": "a", "i": 30}}}); err != nil {
		t.Fatal(err)
	}
	got = read(in, 1)
	if len(got) != 1 || got[0].Fields["i"] != float64(30) {
		t.Fatalf("after committing all, read %d records (first %v), want only the new one", len(got), got[0].Fields)
	}
}

func TestKafkaKeyError(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := newKafkaOutput(ctx, &config.KafkaConn{Brokers: c.ListenAddrs(), Topic: "t", Key: "row.missing.x"})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	err = out.Write(ctx, []*Record{{Fields: map[string]any{"a": 1}}})
	if !errors.Is(err, ErrRecord) {
		t.Fatalf("write with a failing key: %v, want a record error", err)
	}
	if _, err := newKafkaOutput(ctx, &config.KafkaConn{Brokers: c.ListenAddrs(), Topic: "t", Key: "row."}); err == nil {
		t.Fatal("an invalid key expression was accepted")
	}
}

// configErrors validates a config file and returns its errors as
// "path: message".
func configErrors(t *testing.T, yaml string) []string {
	t.Helper()
	_, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err == nil {
		return nil
	}
	var es config.Errors
	if !errors.As(err, &es) {
		t.Fatalf("parse: %v", err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Path+": "+e.Msg)
	}
	return out
}

// CheckConfigs checks that each config (a pipeline's input and output, as
// YAML flow mappings) gives the errors whose paths and message fragments
// are listed, and no others.
func CheckConfigs(t *testing.T, cases []ConfigCase) {
	t.Helper()
	for _, c := range cases {
		got := configErrors(t, "pipelines:\n  p:\n    input: "+c.Input+"\n    output: "+c.Output+"\n")
		if len(got) != len(c.Want) {
			t.Errorf("input %s, output %s: errors %q, want %d: %q", c.Input, c.Output, got, len(c.Want), c.Want)
			continue
		}
		// Errors come in file order: match them in any order.
		used := make([]bool, len(got))
	want:
		for _, w := range c.Want {
			for i, g := range got {
				if !used[i] && strings.Contains(g, w) {
					used[i] = true
					continue want
				}
			}
			t.Errorf("input %s, output %s: no error %q among %q", c.Input, c.Output, w, got)
		}
	}
}

// ConfigCase is a pipeline input and output (YAML flow mappings) and the
// errors they give: each a path and a fragment of the message.
type ConfigCase struct {
	Input, Output string
	Want          []string
}

func TestKafkaConfig(t *testing.T) {
	CheckConfigs(t, []ConfigCase{
		{`{kafka: {brokers: ["k1:9092", "k2:9092"], topic: orders, group: g}}`, `{kafka: {brokers: ["k:9092"], topic: out.v1, key: "row.id"}}`, nil},
		{`{kafka: {topic: orders}}`, `{stdout: {}}`, []string{"pipelines.p.input.kafka.brokers: kafka needs brokers"}},
		{`{kafka: {brokers: [k1], topic: "a b", key: "row.id"}}`, `{stdout: {}}`, []string{
			"pipelines.p.input.kafka.brokers[0]: broker \"k1\": want host:port",
			"pipelines.p.input.kafka.topic: invalid kafka topic",
			"pipelines.p.input.kafka.key: key is for kafka outputs"}},
		{`{generate: {count: 1}}`, `{kafka: {brokers: ["k:9092"], group: g, key: "row."}}`, []string{
			"pipelines.p.output.kafka.topic: kafka needs a topic",
			"pipelines.p.output.kafka.group: group is for kafka inputs",
			"pipelines.p.output.kafka.key: key: "}},
	})
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
