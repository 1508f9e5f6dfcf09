package eventstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/junctionhq/junction/eventstore"
)

func TestValidStreamName(t *testing.T) {
	cases := []struct {
		name string
		ok   bool
	}{
		{"order-1", true},
		{"Order_1.v2:x-y", true},
		{strings.Repeat("a", 200), true},
		{strings.Repeat("a", 201), false},
		{"", false},
		{"$all", false},
		{"a$b", false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
	}
	for _, c := range cases {
		if got := eventstore.ValidStreamName(c.name); got != c.ok {
			t.Errorf("ValidStreamName(%q) = %v, want %v", c.name, got, c.ok)
		}
	}
}

func TestCategory(t *testing.T) {
	for in, want := range map[string]string{"order-1": "order", "order-1-2": "order", "invoice": "invoice", "-x": ""} {
		if got := eventstore.Category(in); got != want {
			t.Errorf("Category(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		expected eventstore.ExpectedVersion
		current  int64
		ok       bool
	}{
		{eventstore.Any, -1, true},
		{eventstore.Any, 5, true},
		{eventstore.NoStream, -1, true},
		{eventstore.NoStream, 0, false},
		{eventstore.StreamExists, -1, false},
		{eventstore.StreamExists, 0, true},
		{3, 3, true},
		{3, 2, false},
		{0, -1, false},
	}
	for _, c := range cases {
		err := eventstore.Check("s", c.expected, c.current)
		if (err == nil) != c.ok {
			t.Errorf("Check(%v, %d) = %v", c.expected, c.current, err)
		}
		var ve *eventstore.VersionError
		if err != nil && (!errors.Is(err, eventstore.ErrWrongVersion) || !errors.As(err, &ve) || ve.Current != c.current) {
			t.Errorf("Check(%v, %d) = %#v, want a VersionError", c.expected, c.current, err)
		}
	}
}

func TestPrepareAssignsIDs(t *testing.T) {
	out, err := eventstore.Prepare("s-1", eventstore.Any, []eventstore.EventData{
		{Type: "E", Data: []byte(`{}`)},
		{ID: "mine", Type: "E", Data: []byte(`[]`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out[0].ID) != 36 || out[1].ID != "mine" {
		t.Errorf("ids %q %q", out[0].ID, out[1].ID)
	}
	if _, err := eventstore.Prepare("s-1", -4, []eventstore.EventData{{Type: "E", Data: []byte(`1`)}}); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("expected version -4: %v", err)
	}
}

func TestExpectedVersionString(t *testing.T) {
	for v, want := range map[eventstore.ExpectedVersion]string{eventstore.Any: "any", eventstore.NoStream: "no_stream", eventstore.StreamExists: "exists", 7: "7"} {
		if v.String() != want {
			t.Errorf("%d: %q", int64(v), v.String())
		}
	}
}
