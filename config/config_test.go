package config

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestInterpolate(t *testing.T) {
	env := map[string]string{
		"HOST":   "db.internal",
		"PORT":   "5432",
		"EMPTY":  "",
		"DOLLAR": "pa$$word",
		"REF":    "${HOST}",
		"_x1":    "lower",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name, in string
		want     string
		err      string // substring of the error; empty means success
	}{
		{"no dollar", "plain text", "plain text", ""},
		{"empty", "", "", ""},
		{"whole value", "${HOST}", "db.internal", ""},
		{"inside text", "postgres://${HOST}:${PORT}/j", "postgres://db.internal:5432/j", ""},
		{"adjacent", "${HOST}${PORT}", "db.internal5432", ""},
		{"lower case and digits", "${_x1}", "lower", ""},
		{"unset without default", "${NOPE}", "", "environment variable NOPE is not set (write ${NOPE:-default} to allow that)"},
		{"unset with default", "${NOPE:-fallback}", "fallback", ""},
		{"unset with empty default", "a${NOPE:-}b", "ab", ""},
		{"set and empty without default", "a${EMPTY}b", "ab", ""},
		{"set and empty with default", "${EMPTY:-fallback}", "fallback", ""},
		{"set wins over default", "${HOST:-other}", "db.internal", ""},
		{"default holds :-", "${NOPE:-a:-b}", "a:-b", ""},
		{"default holds a colon URL", "${NOPE:-http://x:80/}", "http://x:80/", ""},
		{"nested default", "${NOPE:-${HOST}}", "db.internal", ""},
		{"doubly nested default", "${NOPE:-${NADA:-${PORT}}}", "5432", ""},
		{"nested default unset", "${NOPE:-${NADA}}", "", "environment variable NADA is not set"},
		{"unused default is not evaluated", "${HOST:-${NADA}}", "db.internal", ""},
		{"text after a nested default", "${NOPE:-${NADA:-x}}y", "xy", ""},
		{"brace after the reference is text", "${NOPE:-a}b}", "ab}", ""},
		{"$$ is a dollar", "cost: $$5", "cost: $5", ""},
		{"$$$$ is two dollars", "$$$$", "$$", ""},
		{"$${ is not a reference", "$${HOST}", "${HOST}", ""},
		{"$$ in a default", "${NOPE:-$$5}", "$5", ""},
		{"$$ then a reference", "$$${HOST}", "$db.internal", ""},
		{"bare $NAME is text", "$HOST", "$HOST", ""},
		{"lone dollar", "5 $ each", "5 $ each", ""},
		{"trailing dollar", "a$", "a$", ""},
		{"values are not interpolated again", "${REF}", "${HOST}", ""},
		{"dollars in values stay", "${DOLLAR}", "pa$$word", ""},
		{"unterminated", "${HOST", "", `unterminated ${ in "${HOST"`},
		{"unterminated with default", "x ${NOPE:-abc", "", "unterminated ${"},
		{"unterminated nested", "${NOPE:-${HOST}", "", "unterminated ${"},
		{"just ${", "${", "", "unterminated ${"},
		{"empty name", "${}", "", `invalid environment variable name "" in ${}`},
		{"empty name with default", "${:-x}", "", `invalid environment variable name ""`},
		{"leading digit", "${1HOST}", "", `invalid environment variable name "1HOST"`},
		{"dash", "${MY-VAR}", "", `invalid environment variable name "MY-VAR"`},
		{"shell's - without colon", "${HOST-x}", "", `invalid environment variable name "HOST-x"`},
		{"space", "${ HOST}", "", `invalid environment variable name " HOST"`},
		{"dot", "${a.b}", "", `invalid environment variable name "a.b"`},
		{"non-ASCII letter", "${É}", "", `invalid environment variable name "É"`},
		{"reference inside a name", "${A${HOST}}", "", `invalid environment variable name "A${HOST}"`},
		{"error after good text", "${HOST}/${NOPE}", "", "NOPE is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := interpolate(tt.in, lookup)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("interpolate(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("interpolate(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseStart(t *testing.T) {
	ts := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		kind string
		seq  uint64
		t    time.Time
		err  string
	}{
		{in: "", kind: "new"},
		{in: "new", kind: "new"},
		{in: "all", kind: "all"},
		{in: "seq:1", kind: "seq", seq: 1},
		{in: "seq:18446744073709551615", kind: "seq", seq: 1<<64 - 1},
		{in: "time:2026-01-02T15:04:05Z", kind: "time", t: ts},
		{in: "time:2026-01-02T17:04:05.5+02:00", kind: "time", t: ts.Add(500 * time.Millisecond)},
		{in: "seq:0", err: `start "seq:0": seq:N needs a positive integer`},
		{in: "seq:", err: "seq:N needs a positive integer"},
		{in: "seq:-1", err: "seq:N needs a positive integer"},
		{in: "seq:+1", err: "seq:N needs a positive integer"},
		{in: "seq:1.5", err: "seq:N needs a positive integer"},
		{in: "seq:18446744073709551616", err: "seq:N needs a positive integer"},
		{in: "time:2026-01-02", err: `start "time:2026-01-02": time:T needs an RFC 3339 time`},
		{in: "time:", err: "time:T needs an RFC 3339 time"},
		{in: "New", err: `start "New": use new, all, seq:N or time:RFC3339`},
		{in: "latest", err: "use new, all, seq:N or time:RFC3339"},
		{in: "42", err: "use new, all, seq:N or time:RFC3339"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			kind, seq, tm, err := ParseStart(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseStart(%q) error = %v, want %q", tt.in, err, tt.err)
				}
				if kind != "" {
					t.Errorf("kind = %q with an error, want empty", kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.kind || seq != tt.seq || !tm.Equal(tt.t) {
				t.Errorf("ParseStart(%q) = %q, %d, %v; want %q, %d, %v", tt.in, kind, seq, tm, tt.kind, tt.seq, tt.t)
			}
		})
	}
}

func TestSubscriptionNormalize(t *testing.T) {
	sec := func(n int) Duration { return Duration(time.Duration(n) * time.Second) }
	tests := []struct {
		name string
		in   Subscription
		want Subscription
	}{
		{
			name: "pull gets every default",
			in:   Subscription{Topic: "orders"},
			want: Subscription{Topic: "orders", Start: "new", MaxInFlight: DefaultPullMaxInFlight, MaxDeliver: DefaultMaxDeliver,
				AckWait: Duration(DefaultAckWait), Backoff: DefaultBackoff, DeadLetterTopic: "billing.dlq"},
		},
		{
			name: "push has its own in-flight default and a timeout",
			in:   Subscription{Topic: "orders", Push: &Push{URL: "http://x/"}},
			want: Subscription{Topic: "orders", Start: "new", Push: &Push{URL: "http://x/", Timeout: Duration(DefaultPushTimeout)},
				MaxInFlight: DefaultMaxInFlight, MaxDeliver: DefaultMaxDeliver, AckWait: Duration(DefaultAckWait),
				Backoff: DefaultBackoff, DeadLetterTopic: "billing.dlq"},
		},
		{
			name: "set values are kept",
			in: Subscription{Topic: "orders", Start: "all", Push: &Push{URL: "http://x/", Timeout: sec(2)}, MaxInFlight: 3,
				MaxDeliver: 9, AckWait: sec(7), Backoff: []Duration{sec(1)}, DeadLetterTopic: "dead"},
			want: Subscription{Topic: "orders", Start: "all", Push: &Push{URL: "http://x/", Timeout: sec(2)}, MaxInFlight: 3,
				MaxDeliver: 9, AckWait: sec(7), Backoff: []Duration{sec(1)}, DeadLetterTopic: "dead"},
		},
		{
			name: "invalid values are left for Check",
			in:   Subscription{Topic: "orders", MaxInFlight: -1, MaxDeliver: -2, AckWait: -1},
			want: Subscription{Topic: "orders", Start: "new", MaxInFlight: -1, MaxDeliver: -2, AckWait: -1,
				Backoff: DefaultBackoff, DeadLetterTopic: "billing.dlq"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.in
			s.Normalize("billing")
			if !reflect.DeepEqual(s, tt.want) {
				t.Errorf("got  %+v\nwant %+v", s, tt.want)
			}
			again := s
			again.Normalize("billing")
			if !reflect.DeepEqual(again, s) {
				t.Errorf("Normalize is not idempotent: %+v then %+v", s, again)
			}
		})
	}
}

func TestNormalizeCopiesDefaultBackoff(t *testing.T) {
	want := slices.Clone(DefaultBackoff)
	var s Subscription
	s.Normalize("x")
	s.Backoff[0] = 42
	if !slices.Equal(DefaultBackoff, want) {
		t.Fatalf("changing one subscription's backoff changed DefaultBackoff to %v", DefaultBackoff)
	}
}

func TestSubscriptionCheck(t *testing.T) {
	valid := func() Subscription {
		s := Subscription{Topic: "orders", Push: &Push{URL: "http://127.0.0.1:7002/events"}}
		s.Normalize("billing")
		return s
	}
	tests := []struct {
		name   string
		change func(*Subscription)
		fields []string // fields with issues, in order
	}{
		{"valid push", func(*Subscription) {}, nil},
		{"valid pull", func(s *Subscription) { s.Push = nil }, nil},
		{"valid filter", func(s *Subscription) { s.Filter = `event.type == "a" && event.data.n > 1` }, nil},
		{"dynamic filter is accepted", func(s *Subscription) { s.Filter = `event.data.flag` }, nil},
		{"ordered push", func(s *Subscription) { s.OrderedByKey = true }, nil},
		{"https", func(s *Subscription) { s.Push.URL = "https://example.com/hook?x=1" }, nil},
		{"every start form", func(s *Subscription) { s.Start = "time:2026-01-02T15:04:05Z" }, nil},
		{"in-flight bounds", func(s *Subscription) { s.MaxInFlight = 10000 }, nil},
		{"ack_wait of 1s", func(s *Subscription) { s.AckWait = Duration(time.Second) }, nil},
		{"no topic", func(s *Subscription) { s.Topic = "" }, []string{"topic"}},
		{"bad topic", func(s *Subscription) { s.Topic = "a b" }, []string{"topic"}},
		{"syntax error in filter", func(s *Subscription) { s.Filter = `event.type = "a"` }, []string{"filter"}},
		{"non-bool filter", func(s *Subscription) { s.Filter = `1 + 2` }, []string{"filter"}},
		{"undeclared variable", func(s *Subscription) { s.Filter = `foo.bar` }, []string{"filter"}},
		{"bad start", func(s *Subscription) { s.Start = "yesterday" }, []string{"start"}},
		{"relative push url", func(s *Subscription) { s.Push.URL = "/events" }, []string{"push.url"}},
		{"ftp push url", func(s *Subscription) { s.Push.URL = "ftp://x/y" }, []string{"push.url"}},
		{"push url without host", func(s *Subscription) { s.Push.URL = "http:///x" }, []string{"push.url"}},
		{"negative push timeout", func(s *Subscription) { s.Push.Timeout = -1 }, []string{"push.timeout"}},
		{"ordered pull", func(s *Subscription) { s.Push = nil; s.OrderedByKey = true }, []string{"ordered_by_key"}},
		{"zero in flight", func(s *Subscription) { s.MaxInFlight = 0 }, []string{"max_in_flight"}},
		{"too many in flight", func(s *Subscription) { s.MaxInFlight = 10001 }, []string{"max_in_flight"}},
		{"max_deliver zero", func(s *Subscription) { s.MaxDeliver = 0 }, []string{"max_deliver"}},
		{"ack_wait too short", func(s *Subscription) { s.AckWait = Duration(999 * time.Millisecond) }, []string{"ack_wait"}},
		{"non-positive backoff", func(s *Subscription) { s.Backoff = []Duration{1, 0, -1} }, []string{"backoff[1]", "backoff[2]"}},
		{"bad dead letter topic", func(s *Subscription) { s.DeadLetterTopic = "dlq/" }, []string{"dead_letter_topic"}},
		{"dead letters into the topic", func(s *Subscription) { s.DeadLetterTopic = "orders" }, []string{"dead_letter_topic"}},
		{"several at once", func(s *Subscription) { s.Topic = ""; s.Start = "x"; s.MaxDeliver = 0 }, []string{"topic", "start", "max_deliver"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid()
			tt.change(&s)
			is := s.Check()
			var fields []string
			for _, i := range is {
				fields = append(fields, i.Field)
				if i.Msg == "" || strings.Contains(i.Msg, "\n") {
					t.Errorf("issue %s: message must be one non-empty line, got %q", i.Field, i.Msg)
				}
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("issues on %v, want %v: %+v", fields, tt.fields, is)
			}
		})
	}
}

func TestFilterIssueText(t *testing.T) {
	tests := []struct {
		filter, want string
	}{
		{`event.type = "a"`, `filter: Syntax error: token recognition error at: '= ' (at 1:12 of the expression)`},
		{"event.a &&\n  foo.b", `filter: undeclared reference to 'foo' (at 2:3 of the expression)`},
		{`"text"`, `filter: expression must yield a bool, it yields string`},
	}
	for _, tt := range tests {
		s := Subscription{Topic: "orders", Filter: tt.filter}
		s.Normalize("billing")
		is := s.Check()
		if len(is) != 1 || is[0].Msg != tt.want {
			t.Errorf("filter %q: got %+v\nwant one issue %q", tt.filter, is, tt.want)
		}
	}
}

func TestTopicCheck(t *testing.T) {
	tests := []struct {
		name   string
		topic  Topic
		fields []string
	}{
		{"zero means defaults", Topic{}, nil},
		{"all set", Topic{MaxAge: Duration(time.Hour), MaxBytes: 1, MaxMsgs: 1, Replicas: 5, DedupWindow: Duration(time.Minute)}, nil},
		{"one replica", Topic{Replicas: 1}, nil},
		{"negative max_age", Topic{MaxAge: -1}, []string{"max_age"}},
		{"negative max_bytes", Topic{MaxBytes: -1}, []string{"max_bytes"}},
		{"negative max_msgs", Topic{MaxMsgs: -1}, []string{"max_msgs"}},
		{"negative replicas", Topic{Replicas: -1}, []string{"replicas"}},
		{"six replicas", Topic{Replicas: 6}, []string{"replicas"}},
		{"negative dedup_window", Topic{DedupWindow: -1}, []string{"dedup_window"}},
		{"everything wrong", Topic{MaxAge: -1, MaxBytes: -1, MaxMsgs: -1, Replicas: 9, DedupWindow: -1},
			[]string{"max_age", "max_bytes", "max_msgs", "replicas", "dedup_window"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fields []string
			for _, i := range tt.topic.Check() {
				fields = append(fields, i.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("issues on %v, want %v", fields, tt.fields)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name       string
		topic, sub bool
	}{
		{"orders", true, true},
		{"orders.dlq", true, false},
		{"a.b-c.d_e.F9", true, false},
		{"under_score-dash", true, true},
		{"", false, false},
		{".orders", false, false},
		{"orders.", false, false},
		{"orders..dlq", false, false},
		{"orders dlq", false, false},
		{"orders/dlq", false, false},
		{"orders*", false, false},
		{"orders>", false, false},
		{"é", false, false},
		{strings.Repeat("a", 100), true, true},
		{strings.Repeat("a", 101), true, false},
		{strings.Repeat("a", 200), true, false},
		{strings.Repeat("a", 201), false, false},
	}
	for _, tt := range tests {
		if got := ValidTopicName(tt.name); got != tt.topic {
			t.Errorf("ValidTopicName(%q) = %v, want %v", tt.name, got, tt.topic)
		}
		if got := ValidSubscriptionName(tt.name); got != tt.sub {
			t.Errorf("ValidSubscriptionName(%q) = %v, want %v", tt.name, got, tt.sub)
		}
	}
}

func TestDefaultIsValid(t *testing.T) {
	if is := Default().validate(); len(is) > 0 {
		t.Fatalf("the built-in defaults do not validate: %+v", is)
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Duration
		err  bool
	}{
		{`"1.5s"`, Duration(1500 * time.Millisecond), false},
		{`"0s"`, 0, false},
		{`"2h45m"`, Duration(2*time.Hour + 45*time.Minute), false},
		{`1500`, 0, true},
		{`"1.5"`, 0, true},
		{`null`, 0, true},
	}
	for _, tt := range tests {
		var d Duration
		err := json.Unmarshal([]byte(tt.in), &d)
		if (err != nil) != tt.err || d != tt.want {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v, error %v", tt.in, d, err, tt.want, tt.err)
			continue
		}
		if tt.err {
			continue
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || back != d {
			t.Errorf("round trip of %v through %s gave %v, %v", d, b, back, err)
		}
	}
}
