package meshbench

import (
	"net/http"
	"runtime"
	"testing"
	"time"
)

// The benchmarks run client, node(s) and backend in this one process, so
// ns/op, allocs/op and CPU us/op cover all of them: what a path adds is
// its figure minus BenchmarkDirect's. BenchmarkProxy is the reference
// for any proxy: a bare httputil.ReverseProxy in front of the same
// backend. Every request is a GET of the backend's /hello answered with
// 200 and 5 bytes.

func BenchmarkDirect(b *testing.B) { benchSerial(b, Backend(b).URL+"/hello") }

func BenchmarkProxy(b *testing.B) { benchSerial(b, Proxy(b, Backend(b).URL)+"/hello") }

func BenchmarkInvoke(b *testing.B) { benchSerial(b, InvokeNode(b, Backend(b).URL)+"/hello") }

func BenchmarkSidecar(b *testing.B) { benchSerial(b, SidecarPair(b, Backend(b).URL)+"/hello") }

func BenchmarkDirectParallel(b *testing.B) { benchParallel(b, Backend(b).URL+"/hello") }

func BenchmarkProxyParallel(b *testing.B) { benchParallel(b, Proxy(b, Backend(b).URL)+"/hello") }

func BenchmarkInvokeParallel(b *testing.B) {
	benchParallel(b, InvokeNode(b, Backend(b).URL)+"/hello")
}

func BenchmarkSidecarParallel(b *testing.B) {
	benchParallel(b, SidecarPair(b, Backend(b).URL)+"/hello")
}

// benchSerial sends one request at a time: ns/op is the round trip.
func benchSerial(b *testing.B, url string) {
	c := Client()
	defer c.Transport.(*http.Transport).CloseIdleConnections()
	if err := Get(c, url); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := ProcessCPU()
	b.ResetTimer()
	for b.Loop() {
		if err := Get(c, url); err != nil {
			b.Fatal(err)
		}
	}
	report(b, cpu0)
}

// benchParallel sends from GOMAXPROCS*parallelism goroutines (default 32
// in all: -cpu changes it), each keeping one request in flight.
func benchParallel(b *testing.B, url string) {
	c := Client()
	defer c.Transport.(*http.Transport).CloseIdleConnections()
	if err := Get(c, url); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	cpu0 := ProcessCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := Get(c, url); err != nil {
				b.Error(err)
				return
			}
		}
	})
	report(b, cpu0)
}

// report adds req/s and the process's CPU time per request.
func report(b *testing.B, cpu0 time.Duration) {
	b.StopTimer()
	if el := b.Elapsed(); el > 0 {
		b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
	}
	b.ReportMetric(float64((ProcessCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
}
