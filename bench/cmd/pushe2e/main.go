// Command pushe2e measures publish-to-push delivery end to end, through a
// Junction push subscription and through a hand-written raw JetStream
// equivalent, on one embedded nats-server to one local webhook. It prints
// one line per phase and, with -json, one RESULT line of JSON each.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	busbench "github.com/junctionhq/junction/bench/bus"
)

func main() {
	var o busbench.E2EOptions
	flag.IntVar(&o.Messages, "n", 40000, "messages in the throughput phase")
	flag.IntVar(&o.Batch, "batch", 100, "messages per publish call in the throughput phase")
	flag.DurationVar(&o.LatencyFor, "latency-for", 5*time.Second, "length of the fixed-rate latency phase")
	flag.Float64Var(&o.Rate, "rate", 0, "latency phase rate in msg/s (0: half the throughput measured first, Junction's unless -only raw)")
	flag.IntVar(&o.MaxInFlight, "max-in-flight", 0, "subscription max_in_flight (0: Junction's default)")
	flag.DurationVar(&o.Timeout, "timeout", 20*time.Second, "bound on each phase")
	flag.StringVar(&o.Only, "only", "", "run one side only: junction or raw")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run here")
	asJSON := flag.Bool("json", false, "also print RESULT lines of JSON")
	flag.Parse()
	if o.Only != "" && o.Only != "junction" && o.Only != "raw" {
		fmt.Fprintln(os.Stderr, "pushe2e: -only is junction or raw")
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pushe2e:", err)
			os.Exit(1)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "pushe2e:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	dir, err := os.MkdirTemp("", "pushe2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushe2e:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 4*(o.Timeout+o.LatencyFor)+30*time.Second)
	defer cancel()
	err = busbench.RunPushE2E(ctx, dir, o, func(r busbench.E2EResult) {
		fmt.Println(r)
		if *asJSON {
			b, _ := json.Marshal(r)
			fmt.Printf("RESULT e2e %s\n", b)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushe2e:", err)
		pprof.StopCPUProfile()
		os.RemoveAll(dir)
		os.Exit(1)
	}
}
