package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every phase at a tiny size, once: each side must finish
// and produce what the other does (run checks it). PostgreSQL is tried
// only when JUNCTION_BENCH_PG names a database. It asserts correctness
// only, never speed.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := os.Getenv("JUNCTION_BENCH_PG")
	var out bytes.Buffer
	o := options{phases: parsePhases("", dsn), rows: 3000, messages: 2500, records: 5000, keys: 20, batch: 500, rounds: 1,
		dsn: dsn, json: true, label: "smoke", out: &out}
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, o); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var table bytes.Buffer
	if err := reportMarkdown(&out, &table); err != nil {
		t.Fatal(err)
	}
	for _, p := range o.phases {
		if !strings.Contains(table.String(), "| smoke | 1 | "+p+" |") {
			t.Errorf("no row for %s in\n%s", p, table.String())
		}
	}
}

func TestPhases(t *testing.T) {
	for _, c := range []struct{ in, dsn, want string }{
		{"", "", "csv,stream,window"},
		{"", "postgres://x", "csv,pg,stream,window"},
		{"window, csv,window", "", "csv,window"},
	} {
		if got := strings.Join(parsePhases(c.in, c.dsn), ","); got != c.want {
			t.Errorf("parsePhases(%q, %q) = %s, want %s", c.in, c.dsn, got, c.want)
		}
	}
	if err := (&options{phases: []string{"pg"}, rows: 1, messages: 1, records: 1, keys: 1, batch: 1, rounds: 1}).check(); err == nil {
		t.Error("pg without -dsn accepted")
	}
}
