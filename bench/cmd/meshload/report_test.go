package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 1000; i++ {
		xs = append(xs, time.Duration(i)*time.Microsecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 500 * time.Microsecond}, {99, 990 * time.Microsecond}, {99.9, 999 * time.Microsecond}, {100, time.Millisecond}, {0, time.Microsecond}} {
		if got := pct(xs, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
}

func TestSummarizePairsRounds(t *testing.T) {
	rs := []Result{
		{Name: "direct", Round: 1, Mode: "rate", TargetRPS: 1000, RPS: 1000, P50ms: 0.3, P99ms: 1},
		{Name: "invoke", Round: 1, Mode: "rate", TargetRPS: 1000, RPS: 1000, P50ms: 0.5, P99ms: 1.5},
		{Name: "direct", Round: 2, Mode: "rate", TargetRPS: 1000, RPS: 1000, P50ms: 0.4, P99ms: 9},
		{Name: "invoke", Round: 2, Mode: "rate", TargetRPS: 1000, RPS: 1000, P50ms: 0.9, P99ms: 9.5},
		{Name: "direct", Round: 1, Mode: "max", Conns: 32, RPS: 1000},
		{Name: "invoke", Round: 1, Mode: "max", Conns: 32, RPS: 700},
		{Name: "proxy", Round: 1, Mode: "max", Conns: 32, RPS: 500},
	}
	s := summarize(rs, "direct")
	if len(s.Rows) != 5 || s.Rows[0].Path != "direct" || s.Rows[0].Mode != "rate" || s.Rows[4].Path != "invoke" {
		t.Fatalf("rows: %+v", s.Rows)
	}
	inv := s.Rows[1]
	// Added latency is per round, then the median: (0.2 + 0.5) / 2.
	if inv.AddedP50ms == nil || math.Abs(*inv.AddedP50ms-0.35) > 1e-9 || math.Abs(*inv.AddedP99ms-0.5) > 1e-9 {
		t.Errorf("added: %v %v", *inv.AddedP50ms, *inv.AddedP99ms)
	}
	// Targets: two for invoke at the fixed rate, one at max; none for the
	// reference proxy.
	if len(s.Targets) != 3 {
		t.Fatalf("targets: %+v", s.Targets)
	}
	if s.Targets[0].Met || !s.Targets[1].Met || !s.Targets[2].Met || s.Targets[2].Measured != 0.7 {
		t.Errorf("targets: %+v", s.Targets)
	}
}

func TestSummarizeGatewayTargets(t *testing.T) {
	rs := []Result{
		{Name: "direct", Round: 1, Mode: "max", Conns: 32, RPS: 1000},
		{Name: "plain", Round: 1, Mode: "max", Conns: 32, RPS: 700},
		{Name: "full", Round: 1, Mode: "max", Conns: 32, RPS: 500},
		{Name: "nginx", Round: 1, Mode: "max", Conns: 32, RPS: 800},
		{Name: "direct", Round: 2, Mode: "max", Conns: 32, RPS: 1000},
		{Name: "plain", Round: 2, Mode: "max", Conns: 32, RPS: 600},
		{Name: "full", Round: 2, Mode: "max", Conns: 32, RPS: 400},
	}
	s := benchmarks["gateway"].summarize(rs, "direct")
	if len(s.Rows) != 4 || s.Rows[1].Path != "plain" || s.Rows[3].Path != "nginx" || s.Rows[1].Label != "gateway plain: client → junction gateway → backend" {
		t.Fatalf("rows: %+v", s.Rows)
	}
	// Each ratio is paired by round, then the median: plain/direct of
	// 0.7 and 0.6; plain/nginx only in round 1, which has nginx;
	// full/plain of 5/7 and 2/3.
	want := []struct {
		path     string
		measured float64
		met      bool
	}{{"plain/direct", 0.65, true}, {"plain/nginx", 0.875, false}, {"full/plain", (5.0/7 + 2.0/3) / 2, false}}
	if len(s.Targets) != len(want) {
		t.Fatalf("targets: %+v", s.Targets)
	}
	for i, w := range want {
		got := s.Targets[i]
		if got.Path != w.path || math.Abs(got.Measured-w.measured) > 1e-9 || got.Met != w.met {
			t.Errorf("target %d: %+v, want %+v", i, got, w)
		}
	}
}
