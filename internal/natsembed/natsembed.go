// Package natsembed gives Junction its NATS connection: an in-process
// nats-server with JetStream on disk (the default, nothing to install) or
// a connection to an external cluster. Either way the rest of Junction
// sees one *nats.Conn and one jetstream.JetStream.
package natsembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options selects and tunes the NATS substrate.
type Options struct {
	URL         string // external cluster; empty = embedded
	Credentials string // .creds file for the external cluster
	DataDir     string // embedded: JetStream store lives in DataDir/jetstream
	Listen      string // embedded: optional TCP listen address; empty = in-process only
	SyncAlways  bool   // embedded: fsync every write before acknowledging
	Logger      *slog.Logger
}

// Conn is a ready NATS connection with JetStream.
type Conn struct {
	NC  *nats.Conn
	JS  jetstream.JetStream
	srv *server.Server
	log *slog.Logger
}

// ErrDataDirLocked means another process uses the data dir.
var ErrDataDirLocked = errors.New("data dir is in use by another junction process")

// Start connects to the external cluster or starts the embedded server.
func Start(ctx context.Context, o Options) (*Conn, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Conn{log: o.Logger}
	var nopts []nats.Option
	nopts = append(nopts,
		nats.Name("junction"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				o.Logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { o.Logger.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	)
	url := o.URL
	if url == "" {
		srv, err := startServer(o)
		if err != nil {
			return nil, err
		}
		c.srv = srv
		nopts = append(nopts, nats.InProcessServer(srv))
	} else if o.Credentials != "" {
		nopts = append(nopts, nats.UserCredentials(o.Credentials))
	}
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		c.shutdownServer()
		return nil, fmt.Errorf("connecting to nats %s: %w", displayURL(url), err)
	}
	c.NC = nc
	js, err := jetstream.New(nc)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c.JS = js
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		c.Close()
		return nil, fmt.Errorf("jetstream is not available on nats %s: %w", displayURL(url), err)
	}
	return c, nil
}

func displayURL(u string) string {
	if u == "" {
		return "(embedded)"
	}
	return u
}

func startServer(o Options) (*server.Server, error) {
	if o.DataDir == "" {
		return nil, errors.New("embedded nats needs a data dir")
	}
	if err := CheckWritable(o.DataDir); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:         "junction",
		JetStream:          true,
		StoreDir:           filepath.Join(o.DataDir, "jetstream"),
		SyncAlways:         o.SyncAlways,
		NoSigs:             true,
		MaxPayload:         8 << 20, // bus.max_message_bytes is capped below this
		JetStreamMaxMemory: 256 << 20,
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats.listen %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("nats.listen %q: bad port", o.Listen)
		}
		// Probe first so a taken port is one clear error, not a server log.
		l, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats.listen %s: %w", o.Listen, err)
		}
		l.Close()
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(&slogAdapter{l: o.Logger.With("component", "nats")}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats did not become ready within 30s")
	}
	return srv, nil
}

// CheckWritable creates dir if needed and proves it is writable, so an
// unusable data dir is one clear error rather than a failure deep inside
// the store.
func CheckWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data dir %s is not usable: %w", dir, err)
	}
	probe := filepath.Join(dir, ".write-probe")
	if err := os.WriteFile(probe, []byte("ok"), 0o644); err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	return os.Remove(probe)
}

// LockDataDir takes an exclusive lock on dir for as long as the returned
// file stays open, so a second process on the same data dir fails with a
// clear error instead of corrupting it. The kernel drops the lock when the
// process dies, kill -9 included.
func LockDataDir(dir string) (*os.File, error) {
	if err := CheckWritable(dir); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", dir, ErrDataDirLocked)
	}
	return f, nil
}

// Embedded reports whether the server runs in this process.
func (c *Conn) Embedded() bool { return c.srv != nil }

// Ready reports whether NATS and JetStream answer.
func (c *Conn) Ready(ctx context.Context) error {
	if c.NC == nil || !c.NC.IsConnected() {
		return errors.New("nats is not connected")
	}
	if _, err := c.JS.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// Close drains the connection and stops the embedded server.
func (c *Conn) Close() {
	if c.NC != nil {
		_ = c.NC.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !c.NC.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		c.NC.Close()
	}
	c.shutdownServer()
}

func (c *Conn) shutdownServer() {
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
}

type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a *slogAdapter) Tracef(f string, v ...any)  {}

// NodeID returns the id of the node whose data dir is dir, kept in
// dir/node-id (created at the first start): a node that restarts keeps
// its id, and so takes back at once the work it claimed before.
func NodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	id := uuid.NewString()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	return id, nil
}
