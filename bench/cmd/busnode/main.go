// Command busnode runs a Junction node exactly as `junction serve` builds
// one (-config, -data, -listen) and can write a CPU profile of
// the whole process, so that load from busload can be profiled on the
// server side. It prints "listening on ADDR" once serving and stops on
// SIGINT/SIGTERM or after -max.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/config"
)

func main() {
	cfgPath := flag.String("config", "", "junction.yaml (default: built-in defaults)")
	data := flag.String("data", "", "data directory (required)")
	listen := flag.String("listen", "127.0.0.1:0", "API listen address")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	maxRun := flag.Duration("max", 2*time.Minute, "stop after this long")
	flag.Parse()
	if err := run(*cfgPath, *data, *listen, *cpuprofile, *maxRun); err != nil {
		fmt.Fprintln(os.Stderr, "busnode:", err)
		os.Exit(1)
	}
}

func run(cfgPath, data, listen, cpuprofile string, maxRun time.Duration) error {
	if data == "" {
		return fmt.Errorf("-data is required")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	cfg.DataDir, cfg.API.Listen = data, listen
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, maxRun)
	defer cancel()
	node, err := junction.New(ctx, cfg, junction.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return err
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			node.Close()
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			node.Close()
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Println("listening on", node.Addr())
	return node.Run(ctx)
}
