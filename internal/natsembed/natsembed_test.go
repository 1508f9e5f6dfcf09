package natsembed

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEmbeddedInProcessByDefault(t *testing.T) {
	c, err := Start(context.Background(), Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Embedded() || c.srv.Addr() != nil {
		t.Fatalf("embedded server should not listen on TCP: addr %v", c.srv.Addr())
	}
	if c.srv.JetStreamConfig().SyncAlways {
		t.Fatal("SyncAlways on by default")
	}
	if err := c.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSyncAlwaysAndListen(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := Start(context.Background(), Options{DataDir: t.TempDir(), SyncAlways: true, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.srv.JetStreamConfig().SyncAlways {
		t.Fatal("storage.sync: always did not reach JetStream")
	}
	// Another process can use the embedded server through the port.
	nc, err := nats.Connect("nats://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("jetstream over TCP: %v", err)
	}
	// The same port again is one clear error naming it.
	_, err = Start(context.Background(), Options{DataDir: t.TempDir(), Listen: addr})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("taken port: %v", err)
	}
}

func TestDataDirErrors(t *testing.T) {
	dir := t.TempDir()
	f, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockDataDir(dir); !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("second lock: %v", err)
	}
	f.Close()
	g, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	g.Close()

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), Options{DataDir: filepath.Join(file, "sub")}); err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("data dir under a file: %v", err)
	}
}

func TestExternalUnreachable(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Start(ctx, Options{URL: "nats://" + addr})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("unreachable nats: %v", err)
	}
}
