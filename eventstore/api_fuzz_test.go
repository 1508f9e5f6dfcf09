package eventstore

import (
	"errors"
	"math"
	"net/url"
	"reflect"
	"testing"

	"github.com/junctionhq/junction/internal/problem"
)

func TestParseReadQuery(t *testing.T) {
	tests := []struct {
		stream, query string
		want          ReadOptions
		field         string // the field a 422 names; empty: accepted
	}{
		{"order-1", "", ReadOptions{From: 0, Limit: DefaultReadLimit}, ""},
		{"order-1", "from=3&limit=10", ReadOptions{From: 3, Limit: 10}, ""},
		{"order-1", "direction=forward&limit=10000", ReadOptions{Limit: MaxReadLimit}, ""},
		{"order-1", "direction=backward", ReadOptions{From: math.MaxUint64, Limit: DefaultReadLimit, Backward: true}, ""},
		{"order-1", "direction=backward&from=0&limit=1", ReadOptions{From: 0, Limit: 1, Backward: true}, ""},
		{"order-1", "follow=false", ReadOptions{Limit: DefaultReadLimit}, ""},
		{"a:b.c_d-e", "", ReadOptions{Limit: DefaultReadLimit}, ""},
		{"", "", ReadOptions{}, "stream"},
		{"$all", "", ReadOptions{}, "stream"},
		{"order 1", "", ReadOptions{}, "stream"},
		{"order-1", "limit=0", ReadOptions{}, "limit"},
		{"order-1", "limit=10001", ReadOptions{}, "limit"},
		{"order-1", "limit=ten", ReadOptions{}, "limit"},
		{"order-1", "from=-1", ReadOptions{}, "from"},
		{"order-1", "from=18446744073709551616", ReadOptions{}, "from"},
		{"order-1", "direction=sideways", ReadOptions{}, "direction"},
		{"order-1", "follow=true", ReadOptions{}, ""},
		{"order-1", "follow=true&from=7&direction=forward", ReadOptions{From: 7}, ""},
		{"order-1", "follow=true&limit=5", ReadOptions{}, "limit"},
		{"order-1", "follow=true&direction=backward", ReadOptions{}, "direction"},
		{"order-1", "follow=maybe", ReadOptions{}, "follow"},
		{"order-1", "limit=1&limit=2", ReadOptions{}, "limit"},
		{"order-1", "form=1", ReadOptions{}, "form"},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, follow, err := parseReadQuery(tt.stream, q)
		if tt.field == "" {
			if err != nil || got != tt.want || follow != (q.Get("follow") == "true") {
				t.Errorf("%q ?%s: %+v, %v; want %+v", tt.stream, tt.query, got, err, tt.want)
			}
			continue
		}
		var p *problem.Problem
		if !errors.As(err, &p) || p.Code != problem.CodeValidation || len(p.Errors) != 1 || p.Errors[0].Field != tt.field {
			t.Errorf("%q ?%s: %v; want a 422 naming %s", tt.stream, tt.query, err, tt.field)
		}
	}
}

func TestParseAllQuery(t *testing.T) {
	tests := []struct {
		query string
		want  ReadAllOptions
		field string
	}{
		{"", ReadAllOptions{Limit: DefaultReadLimit}, ""},
		{"from_position=42&limit=5", ReadAllOptions{From: 42, Limit: 5}, ""},
		{"category=order,cart&types=a,b.c", ReadAllOptions{Limit: DefaultReadLimit, Categories: []string{"order", "cart"}, Types: []string{"a", "b.c"}}, ""},
		{"category=order-1", ReadAllOptions{}, "category"},
		{"category=order,", ReadAllOptions{}, "category"},
		{"types=a,,b", ReadAllOptions{}, "types"},
		{"from_position=x", ReadAllOptions{}, "from_position"},
		{"limit=0", ReadAllOptions{}, "limit"},
		{"follow=true", ReadAllOptions{}, ""},
		{"follow=true&from_position=9&category=order", ReadAllOptions{From: 9, Categories: []string{"order"}}, ""},
		{"follow=true&limit=5", ReadAllOptions{}, "limit"},
		{"follow=1", ReadAllOptions{}, "follow"},
		{"from=3", ReadAllOptions{}, "from"},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		got, follow, err := parseAllQuery(q)
		if tt.field == "" {
			if err != nil || !reflect.DeepEqual(got, tt.want) || follow != (q.Get("follow") == "true") {
				t.Errorf("?%s: %+v, %v; want %+v", tt.query, got, err, tt.want)
			}
			continue
		}
		var p *problem.Problem
		if !errors.As(err, &p) || p.Code != problem.CodeValidation || len(p.Errors) != 1 || p.Errors[0].Field != tt.field {
			t.Errorf("?%s: %v; want a 422 naming %s", tt.query, err, tt.field)
		}
	}
}

// FuzzParseReadQuery checks that parsing a stream read never panics,
// refuses with a 422 only, and accepts only options within the limits.
func FuzzParseReadQuery(f *testing.F) {
	f.Add("order-1", "from=3&limit=10&direction=backward")
	f.Add("$all", "")
	f.Add("order-1", "limit=10001&follow=true")
	f.Fuzz(func(t *testing.T, stream, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		o, follow, err := parseReadQuery(stream, q)
		if err != nil {
			var p *problem.Problem
			if !errors.As(err, &p) || p.Status != 422 || len(p.Errors) != 1 {
				t.Fatalf("refusal is not a 422 naming one field: %v", err)
			}
			return
		}
		if !ValidStreamName(stream) {
			t.Fatalf("accepted stream name %q", stream)
		}
		if follow {
			if o.Limit != 0 || o.Backward || q.Has("limit") {
				t.Fatalf("follow accepted with %+v", o)
			}
		} else if o.Limit < 1 || o.Limit > MaxReadLimit {
			t.Fatalf("accepted limit %d", o.Limit)
		}
		for k, vs := range q {
			if len(vs) != 1 {
				t.Fatalf("accepted repeated %s", k)
			}
			switch k {
			case "from", "limit":
			case "direction":
				if (vs[0] == "backward") != o.Backward || (vs[0] != "backward" && vs[0] != "forward" && vs[0] != "") {
					t.Fatalf("direction %q read as backward=%v", vs[0], o.Backward)
				}
			case "follow":
				if (vs[0] == "true") != follow || vs[0] != "true" && vs[0] != "false" && vs[0] != "" {
					t.Fatalf("follow %q read as %v", vs[0], follow)
				}
			default:
				t.Fatalf("accepted unknown parameter %q", k)
			}
		}
		if q.Get("direction") != "backward" && o.Backward {
			t.Fatal("backward without direction=backward")
		}
	})
}
