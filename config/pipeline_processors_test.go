package config

import (
	"strings"
	"testing"
)

// pipelineWith is a config with one pipeline whose processors are procs
// (YAML, indented as list items of processors).
func pipelineWith(procs string) string {
	return "pipelines:\n  p:\n    input: {generate: {count: 1}}\n    output: {stdout: {}}\n    processors:\n" + procs
}

func TestPipelineProcessorsValid(t *testing.T) {
	procs := `      - window: {key: row.k, time: row.at, size: 1m, allowed_lateness: 10s, aggregates: {n: count, total: "sum(row.amount)", hi: "max(row.amount)"}}
      - window: {time: "timestamp(row.at)", size: 10m, slide: 5m}
      - window: {key: row.k, time: row.at, gap: 30m, aggregates: {first: "first(row.x)", last: "last( row.x )", n: "count()", lo: min(row.x), mean: avg(row.x)}}
      - dedupe: {key: row.id, window: 1h}
      - enrich: {service: customers, path: "/customers/{{ row.id }}", into: customer, cache: 5m}
      - enrich: {url: "https://api.example.com", path: "/x?id={{ row.id }}"}
      - validate: {type: object, required: [id], properties: {id: {type: string}}}
      - rate_limit: 0.5
      - switch:
          - when: row.amount > 100.0
            output: {jsonl: {path: big.jsonl}}
          - when: "true"
            output: {stdout: {}}
`
	if _, err := Parse("f.yaml", []byte(pipelineWith(procs)), noEnv); err != nil {
		t.Fatal(err)
	}
}

func TestPipelineProcessorsCheck(t *testing.T) {
	tests := []struct {
		name, procs string
		want        []string
	}{
		{"window without time or shape", "      - window: {key: row.k}\n",
			[]string{"6:9: a window needs time", "6:9: a window needs size (tumbling)"}},
		{"window with size and gap", "      - window: {time: row.at, size: 1m, gap: 1m}\n", []string{"not both"}},
		{"window slide above size", "      - window: {time: row.at, size: 1m, slide: 2m}\n", []string{"6:49: slide (2m0s) must not exceed size (1m0s)"}},
		{"window slide without size", "      - window: {time: row.at, slide: 2m}\n", []string{"a window needs size"}},
		{"window with too many slides", "      - window: {time: row.at, size: 1h, slide: 1s}\n", []string{"each record in 3600 windows; at most 1000"}},
		{"window negative", "      - window: {time: row.at, size: 1m, allowed_lateness: -1s}\n", []string{"allowed_lateness must not be negative"}},
		{"window negative size", "      - window: {time: row.at, size: -1m}\n", []string{"must not be negative"}},
		{"window bad CEL", "      - window: {key: 'row.', time: 'row.at +', size: 1m}\n", []string{"6:28: key: Syntax error", "6:46: time: Syntax error"}},
		{"window aggregates", "      - window: {time: row.at, size: 1m, aggregates: {a: median(row.x), b: sum(), c: count(row.x), d: sum(row.), e: total, key: count}}\n",
			[]string{`6:55: aggregate "median(row.x)": unknown function "median"`, `6:73: aggregate "sum()": sum needs an expression`,
				`6:83: aggregate "count(row.x)": count takes no expression`, "6:107: d: Syntax error",
				`6:114: aggregate "total": use count`, `6:124: aggregate field "key"`}},
		{"dedupe", "      - dedupe: {window: 0s}\n", []string{"6:9: dedupe needs key", "6:26: dedupe needs a positive window"}},
		{"dedupe bad key", "      - dedupe: {key: 'row.', window: 1m}\n", []string{"key: Syntax error"}},
		{"enrich neither", "      - enrich: {path: /x}\n", []string{"enrich needs service"}},
		{"enrich both", "      - enrich: {service: a, url: 'http://x'}\n", []string{"not both"}},
		{"enrich bad url", "      - enrich: {url: 'ftp://x'}\n", []string{"6:23: url must be an absolute http(s) URL"}},
		{"enrich bad fields", "      - enrich: {service: 'a/b', path: '/x/{{ row. }}', into: Customer}\n",
			[]string{`6:27: invalid service name "a/b"`, "in {{ row. }}: Syntax error", `invalid field name "Customer"`}},
		{"validate not a schema", "      - validate: {type: objekt}\n", []string{"6:9: validate is not a valid JSON Schema: at '/type': value must be one of"}},
		{"validate a scalar", "      - validate: yes\n", []string{"validate is a JSON Schema"}},
		{"switch", "      - switch:\n          - when: 'row.'\n            output: {stdout: {}}\n          - output: {stdout: {}, jsonl: {path: x}}\n          - when: 'true'\n          - when: '\"text\"'\n            output: {}\n",
			[]string{"7:24: when: Syntax error", "9:13: a case needs when", "9:13: an output has one kind, this one has jsonl and stdout",
				"10:13: a case needs an output", "11:19: when: expression must yield a bool", "12:13: an output is one of"}},
		{"switch case outputs", "      - switch:\n          - {when: 'true', output: {sql: {table: Bad}}}\n          - {when: 'true', output: {jsonl: {}}}\n          - {when: 'true', output: {topic: {topic: 'a b'}}}\n",
			[]string{`7:50: invalid table name "Bad"`, "8:37: a file output needs a path", `9:52: invalid topic "a b"`}},
		{"empty switch", "      - switch: []\n", []string{"a switch needs cases"}},
		{"rate limit", "      - rate_limit: -2\n", []string{"6:21: rate_limit is records per second and must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(pipelineWith(tt.procs))
			_, err := Parse("f.yaml", data, noEnv)
			if err == nil {
				t.Fatal("parsed without error")
			}
			checkPositions(t, data, err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors lack %q:\n%v", w, err)
				}
			}
			if n, want := len(err.(Errors)), len(tt.want); n != want {
				t.Errorf("%d errors, want %d:\n%v", n, want, err)
			}
		})
	}
}

func TestParseAggregate(t *testing.T) {
	for _, tt := range []struct{ in, fn, arg, err string }{
		{"count", "count", "", ""},
		{" count ( ) ", "count", "", ""},
		{"sum(row.a)", "sum", "row.a", ""},
		{"avg( row.a * 2.0 )", "avg", "row.a * 2.0", ""},
		{"first(f(row.a))", "first", "f(row.a)", ""},
		{"max (row.a)", "max", "row.a", ""},
		{"sum", "", "", "use count"},
		{"sum(row.a", "", "", "use count"},
		{"median(row.a)", "", "", "unknown function"},
		{"min()", "", "", "needs an expression"},
		{"count(row.a)", "", "", "takes no expression"},
	} {
		fn, arg, err := ParseAggregate(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want one with %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || fn != tt.fn || arg != tt.arg {
			t.Errorf("%q: %q, %q, %v; want %q, %q", tt.in, fn, arg, err, tt.fn, tt.arg)
		}
	}
}
