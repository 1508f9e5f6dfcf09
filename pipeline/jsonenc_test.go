package pipeline

import (
	"encoding/json"
	"math"
	"testing"
)

// TestJSONLineMatchesEncodingJSON: the encoder's bytes are encoding/json's
// for every kind of value, those it encodes itself and those it hands
// over.
func TestJSONLineMatchesEncodingJSON(t *testing.T) {
	var e jsonLine
	for _, m := range []map[string]any{
		nil,
		{},
		{"b": "x", "a": 1.5, "c": int64(-3), "d": true, "e": nil, "f": 7},
		{"floats": 1e21, "small": 1e-7, "neg": -0.000001, "zero": 0.0, "negzero": math.Copysign(0, -1), "big": 123456789.125, "tiny": 5e-324},
		{"html": "<a href='x'>&</a>", "quote": `"\`, "ctl": "a\tb\x01", "utf8": "héllo ☃", "bad": "\xff", "sep": "\u2028", "del": "\x7f"},
		{"é": 1.0, "<k>": "v"},
		{"nested": map[string]any{"a": []any{1.0, "x"}}, "t": "2026-01-01T00:00:00Z"},
		{"list": []any{}, "u": uint64(1)},
	} {
		want, werr := json.Marshal(m)
		got, gerr := e.encode(m)
		if werr != nil || gerr != nil {
			t.Fatalf("%v: errors %v, %v", m, gerr, werr)
		}
		if string(got) != string(want)+"\n" {
			t.Errorf("%v:\n got %s\nwant %s", m, got, want)
		}
	}
	for _, bad := range []any{math.NaN(), math.Inf(1)} {
		_, werr := json.Marshal(map[string]any{"x": bad})
		_, gerr := e.encode(map[string]any{"x": bad})
		if gerr == nil || gerr.Error() != werr.Error() {
			t.Errorf("%v: error %v, want %v", bad, gerr, werr)
		}
	}
}

// FuzzJSONLine: for any text and numbers, the same bytes as encoding/json.
func FuzzJSONLine(f *testing.F) {
	f.Add("k", "v", 1.5, int64(2), true)
	f.Add("<é>", "\x00\"\\\u2028", 1e-7, int64(-1), false)
	f.Add("", "\xff\xfe", 1e21, int64(math.MinInt64), true)
	f.Fuzz(func(t *testing.T, k, s string, x float64, n int64, b bool) {
		m := map[string]any{k: s, "x": x, "n": n, "b": b, "z": nil}
		want, werr := json.Marshal(m)
		var e jsonLine
		got, gerr := e.encode(m)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors %v, %v", gerr, werr)
		}
		if werr == nil && string(got) != string(want)+"\n" {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}
