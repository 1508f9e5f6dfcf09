package config

import "testing"

// An explicit qos: 0 is kept apart from an absent one (which defaults to
// 1), and out-of-range values are refused.
func TestMQTTQoS(t *testing.T) {
	doc := func(qos string) string {
		return "pipelines:\n  p:\n    stream: true\n    input: { mqtt: { url: \"mqtt://127.0.0.1:1883\", topic: t" + qos + " } }\n    output: { stdout: {} }\n"
	}
	for _, tc := range []struct {
		qos  string
		want int // -1: absent
		bad  bool
	}{{"", -1, false}, {", qos: 0", 0, false}, {", qos: 2", 2, false}, {", qos: 3", 0, true}} {
		c, err := Parse("t.yaml", []byte(doc(tc.qos)), func(string) (string, bool) { return "", false })
		if tc.bad {
			if err == nil {
				t.Errorf("%q: accepted", tc.qos)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.qos, err)
		}
		q := c.Pipelines["p"].Input.MQTT.QoS
		if got := -1; q != nil {
			got = *q
			if got != tc.want {
				t.Errorf("%q: qos %d, want %d", tc.qos, got, tc.want)
			}
		} else if tc.want != -1 {
			t.Errorf("%q: qos absent, want %d", tc.qos, tc.want)
		}
	}
}
