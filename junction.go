// Package junction assembles a Junction node: config, the NATS and SQL
// substrate, every enabled component and the API listener. Go programs
// embed Junction with New and Run; the junction command does the same.
package junction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/aggregate"
	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	espostgres "github.com/junctionhq/junction/eventstore/postgres"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/mesh"
	"github.com/junctionhq/junction/observe"
	"github.com/junctionhq/junction/pipeline"
	"github.com/junctionhq/junction/projection"
	"github.com/junctionhq/junction/workflow"
)

// Version is set at build time with -ldflags "-X github.com/junctionhq/junction.Version=v1.2.3".
var Version = ""

// BuildVersion returns Version, or the module version, or "dev".
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Node is one running Junction process.
type Node struct {
	cfg       *config.Config
	log       *slog.Logger
	reg       *prometheus.Registry
	nats      *natsembed.Conn
	db        *sqldb.DB
	bus       *bus.Bus
	mesh      *mesh.Mesh
	events    eventstore.Store
	eventsDB  *sqldb.DB // the postgres event store's own database, when not n.db
	views     *projection.Manager
	workflows *workflow.Engine
	pipelines *pipeline.Manager
	bridges   *bridges
	gateway   *gatewayServer
	cfgFile   string               // the config's file, for Reload
	adjust    func(*config.Config) // command-line overrides, re-applied on reload
	running   *config.Config       // the config last applied (reloads compare with it)
	reloadMu  sync.Mutex
	stopWatch context.CancelFunc
	snapshots aggregate.Snapshots
	router    *httpserver.Router
	handler   http.Handler
	listener  net.Listener
	tracing   func(context.Context) error
	tp        trace.TracerProvider
	lock      *os.File
	draining  atomic.Bool
	stopping  chan struct{} // closed when shutdown starts: ends event store follows
	stopOnce  sync.Once
	closed    sync.Once
}

// Option adjusts a node before it starts.
type Option func(*nodeOptions)

type nodeOptions struct {
	logger   *slog.Logger
	registry *prometheus.Registry
	httpc    bus.HTTPDoer
	tp       trace.TracerProvider
	cfgFile  string
	adjust   func(*config.Config)
}

// WithLogger sets the logger (default: from config, on stderr).
func WithLogger(l *slog.Logger) Option { return func(o *nodeOptions) { o.logger = l } }

// WithRegistry sets the Prometheus registry (default: a new one).
func WithRegistry(r *prometheus.Registry) Option { return func(o *nodeOptions) { o.registry = r } }

// WithTracerProvider records Junction's spans with tp instead of the
// provider tracing.exporter would build (for programs that embed Junction
// in their own tracing, and for tests).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *nodeOptions) { o.tp = tp } }

// WithPushClient sets the HTTP client used for push deliveries.
func WithPushClient(c bus.HTTPDoer) Option { return func(o *nodeOptions) { o.httpc = c } }

// New starts the substrate and components and binds the API listener.
// Every failure (a taken port, an unwritable data dir, an unreachable
// NATS) is returned here, before Run, as one error.
func New(ctx context.Context, cfg *config.Config, opts ...Option) (_ *Node, err error) {
	var o nodeOptions
	for _, f := range opts {
		f(&o)
	}
	if o.logger == nil {
		o.logger = observe.NewLogger(os.Stderr, cfg.Log.Level, cfg.Log.Format)
	}
	if o.registry == nil {
		o.registry = observe.NewRegistry()
	}
	// A config from a file was validated when loaded; one built in Go or
	// changed by flags is checked here, before anything starts.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !httpserver.IsLoopback(cfg.API.Listen) && cfg.API.Token == "" {
		return nil, httpserver.ErrTokenRequired
	}
	n := &Node{cfg: cfg, log: o.logger, reg: o.registry, stopping: make(chan struct{}), cfgFile: o.cfgFile, adjust: o.adjust, running: cfg}
	defer func() {
		if err != nil {
			n.close(context.Background())
		}
	}()
	if n.tp = o.tp; n.tp == nil {
		if n.tp, n.tracing, err = observe.NewTracerProvider(ctx, observe.TracingOptions{
			Exporter: cfg.Tracing.Exporter, Endpoint: cfg.Tracing.Endpoint, Sample: cfg.Tracing.Sample,
		}); err != nil {
			return nil, err
		}
	}
	// Bind first: a taken port should fail before anything is started.
	if n.listener, err = httpserver.Listen(cfg.API.Listen); err != nil {
		return nil, err
	}
	if err := n.bindGateway(); err != nil {
		return nil, err
	}
	if cfg.NATS.URL == "" || cfg.SQL.DSN == "" {
		if n.lock, err = natsembed.LockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if n.nats, err = natsembed.Start(ctx, natsembed.Options{
		URL: cfg.NATS.URL, Credentials: cfg.NATS.Credentials, DataDir: cfg.DataDir, Listen: cfg.NATS.Listen,
		SyncAlways: cfg.Storage.Sync == "always", Logger: n.log,
	}); err != nil {
		return nil, err
	}
	if n.db, err = sqldb.Open(ctx, cfg.SQL.DSN, cfg.DataDir); err != nil {
		return nil, err
	}
	if n.bus, err = bus.New(ctx, bus.Options{
		NC: n.nats.NC, JS: n.nats.JS, Prefix: cfg.NATS.Prefix, Config: cfg.Bus, Logger: n.log,
		Registerer: n.reg, HTTPClient: o.httpc, Tracer: observe.Tracer(n.tp, "bus"),
	}); err != nil {
		return nil, err
	}
	if n.mesh, err = mesh.New(ctx, mesh.Options{
		JS: n.nats.JS, Prefix: cfg.NATS.Prefix, Services: cfg.Services, Policies: cfg.Policies, Mesh: cfg.Mesh,
		Logger: n.log, Registerer: n.reg, Tracer: observe.Tracer(n.tp, "mesh"), APIToken: cfg.API.Token,
	}); err != nil {
		return nil, err
	}
	if err := n.openEvents(ctx); err != nil {
		return nil, err
	}
	if err := n.openSnapshots(ctx); err != nil {
		return nil, err
	}
	projections := cfg.Projections
	if len(cfg.Workflows) > 0 {
		// The runs view (GET /v1/runs) is a projection of the runs' histories.
		projections = maps.Clone(projections)
		if projections == nil {
			projections = map[string]*config.Projection{}
		}
		projections[workflow.RunsView] = workflow.RunsProjection()
	}
	if n.views, err = projection.New(ctx, projection.Options{
		Store: n.events, Projections: projections, DB: n.db, Logger: n.log, Registerer: n.reg,
		Open: func(ctx context.Context, dsn string) (*sqldb.DB, error) { return sqldb.Open(ctx, dsn, cfg.DataDir) },
	}); err != nil {
		return nil, err
	}
	if n.workflows, err = workflow.New(ctx, workflow.Options{
		Store: n.events, JS: n.nats.JS, Prefix: cfg.NATS.Prefix, Workflows: cfg.Workflows, Bus: n.bus, Messages: n.bus,
		Services: n.mesh, Logger: n.log, Registerer: n.reg, Tracer: observe.Tracer(n.tp, "workflow"),
	}); err != nil {
		return nil, err
	}
	nodeID, err := natsembed.NodeID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if n.pipelines, err = pipeline.New(ctx, pipeline.Options{Pipelines: cfg.Pipelines, Registerer: n.reg, NodeID: nodeID, Env: pipeline.Env{
		DB: n.db, JS: n.nats.JS, Prefix: cfg.NATS.Prefix, Bus: n.bus, Events: n.events, Services: n.mesh, Stdout: os.Stdout, Logger: n.log,
		HTTP: http.DefaultTransport, Receiver: pipeline.NewReceiver(),
		Open: func(ctx context.Context, dsn string) (*sqldb.DB, error) { return sqldb.Open(ctx, dsn, cfg.DataDir) },
	}}); err != nil {
		return nil, err
	}
	if err := n.applyDeclared(ctx); err != nil {
		return nil, err
	}
	if err := n.bus.Start(ctx); err != nil {
		return nil, err
	}
	if err := n.mesh.Start(ctx); err != nil {
		return nil, err
	}
	n.views.Start(ctx)
	if err := n.startBridges(ctx); err != nil {
		return nil, err
	}
	if err := n.startGateway(); err != nil {
		return nil, err
	}
	if err := n.workflows.Start(ctx); err != nil {
		return nil, err
	}
	n.recoverRuns()
	n.pipelines.Launch()
	n.startWatch()
	n.mount()
	n.log.Info("junction started", "version", BuildVersion(), "api", n.listener.Addr().String(),
		"nats", natsDesc(cfg), "sql", n.db.Dialect, "eventstore", cfg.EventStore.Backend, "data_dir", cfg.DataDir,
		"gateway", n.GatewayAddr())
	return n, nil
}

// openEvents opens the event store: on the node's JetStream under its
// prefix, or in a PostgreSQL schema, sharing the node's SQL database when
// eventstore.dsn names the same one.
func (n *Node) openEvents(ctx context.Context) error {
	var err error
	switch n.cfg.EventStore.Backend {
	case "postgres":
		dsn := n.cfg.EventStoreDSN()
		db := n.db
		if dsn != n.cfg.SQL.DSN {
			if n.eventsDB, err = sqldb.Open(ctx, dsn, n.cfg.DataDir); err != nil {
				return fmt.Errorf("event store: %w", err)
			}
			db = n.eventsDB
		}
		n.events, err = espostgres.Open(ctx, db.DB, n.cfg.EventStore.Schema)
	default:
		n.events, err = esjetstream.Open(ctx, n.nats.JS, n.cfg.NATS.Prefix)
	}
	if err != nil {
		return fmt.Errorf("event store (%s): %w", n.cfg.EventStore.Backend, err)
	}
	return nil
}

// recoverRuns queues, in the background, a task for every unfinished
// run (see workflow.Engine.Recover).
func (n *Node) recoverRuns() {
	v, err := n.views.Get(workflow.RunsView)
	if err != nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		go func() {
			select {
			case <-n.stopping:
				cancel()
			case <-ctx.Done():
			}
		}()
		count, err := n.workflows.Recover(ctx, v)
		switch {
		case err != nil && ctx.Err() == nil:
			n.log.Warn("workflow recovery", "err", err)
		case count > 0:
			n.log.Info("unfinished runs resumed", "runs", count)
		}
	}()
}

func natsDesc(cfg *config.Config) string {
	if cfg.NATS.URL != "" {
		return cfg.NATS.URL
	}
	if cfg.NATS.Listen != "" {
		return "embedded, listening on " + cfg.NATS.Listen
	}
	return "embedded, in-process"
}

// applyDeclared creates the topics and subscriptions of the config file.
func (n *Node) applyDeclared(ctx context.Context) error {
	for _, name := range sortedKeys(n.cfg.Topics) {
		t := n.cfg.Topics[name]
		if t == nil {
			t = &config.Topic{}
		}
		if _, err := n.bus.PutTopic(ctx, name, *t); err != nil {
			return fmt.Errorf("topic %s: %w", name, err)
		}
	}
	for _, name := range sortedKeys(n.cfg.Subscriptions) {
		if _, err := n.bus.PutSubscription(ctx, name, *n.cfg.Subscriptions[name]); err != nil {
			return fmt.Errorf("subscription %s: %w", name, err)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func (n *Node) mount() {
	r := httpserver.NewRouter()
	r.HandleAll((&bus.API{Bus: n.bus, MaxBodyBytes: n.cfg.API.MaxBodyBytes}).Routes())
	r.HandleAll((&mesh.API{Mesh: n.mesh}).Routes())
	r.HandleAll((&eventstore.API{Store: n.events, MaxBodyBytes: n.cfg.API.MaxBodyBytes, Closing: n.stopping}).Routes())
	r.HandleAll((&projection.API{Manager: n.views}).Routes())
	var runs workflow.Lister
	if v, err := n.views.Get(workflow.RunsView); err == nil {
		runs = v
	}
	r.HandleAll((&workflow.API{Engine: n.workflows, Runs: runs, MaxBodyBytes: n.cfg.API.MaxBodyBytes}).Routes())
	r.HandleAll((&pipeline.API{Manager: n.pipelines, MaxBodyBytes: n.cfg.API.MaxBodyBytes}).Routes())
	r.Handle(httpserver.Route{Method: "GET", Path: "/healthz", Tag: "operations", Summary: "Liveness: the process serves HTTP", Handler: n.healthz})
	r.Handle(httpserver.Route{Method: "GET", Path: "/readyz", Tag: "operations", Summary: "Readiness: NATS and SQL answer", Handler: n.readyz})
	r.Handle(httpserver.Route{Method: "GET", Path: "/metrics", Tag: "operations", Summary: "Prometheus metrics",
		Handler: promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}).ServeHTTP})
	r.Handle(httpserver.Route{Method: "GET", Path: "/openapi.json", Tag: "operations", Summary: "This OpenAPI 3.1 document", Handler: r.OpenAPIHandler(BuildVersion())})
	n.router = r
	n.handler = httpserver.Wrap(r, httpserver.Options{Token: n.cfg.API.Token, Logger: n.log,
		Metrics: httpserver.NewMetrics(n.reg), Tracer: observe.Tracer(n.tp, "api")})
}

func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	httpserver.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"nats": "ok", "sql": "ok"}
	var failed []string
	if err := n.nats.Ready(ctx); err != nil {
		checks["nats"], failed = err.Error(), append(failed, "nats")
	}
	if err := n.db.Ready(ctx); err != nil {
		checks["sql"], failed = err.Error(), append(failed, "sql")
	}
	if n.draining.Load() {
		checks["node"], failed = "shutting down", append(failed, "node")
	}
	if len(failed) > 0 {
		p := problem.New(problem.CodeUnavailable, "not ready: %v", failed).With("checks", checks)
		problem.Write(w, r, p)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": checks})
}

// Handler is the API handler (for tests and embedding under another server).
func (n *Node) Handler() http.Handler { return n.handler }

// Router exposes the mounted routes (for the OpenAPI contract test).
func (n *Node) Router() *httpserver.Router { return n.router }

// Bus is the node's message bus, for Go programs that embed Junction.
func (n *Node) Bus() *bus.Bus { return n.bus }

// Mesh is the node's service mesh: its registry, and an http.RoundTripper
// that calls services by name (http://inventory/stock/42).
func (n *Node) Mesh() *mesh.Mesh { return n.mesh }

// Views runs the projections and serves their views.
func (n *Node) Views() *projection.Manager { return n.views }

// Workflows is the node's workflow engine: start runs, signal, cancel
// and inspect them from Go.
func (n *Node) Workflows() *workflow.Engine { return n.workflows }

// Pipelines runs the node's pipelines.
func (n *Node) Pipelines() *pipeline.Manager { return n.pipelines }

// Events is the node's event store: the streams of /v1/streams and the
// global log of /v1/events.
func (n *Node) Events() eventstore.Store { return n.events }

// Addr is the API listener's address.
func (n *Node) Addr() string { return n.listener.Addr().String() }

// Run serves the API until ctx ends, then shuts down gracefully within
// shutdown_timeout: readiness turns false, no new connections are
// accepted, in-flight requests and webhook deliveries finish, buffered
// deliveries are handed back to JetStream, and the substrate closes.
func (n *Node) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           n.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(n.listener) }()
	if n.gateway != nil {
		n.gateway.serve(n.log)
	}
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	n.draining.Store(true)
	n.stopOnce.Do(func() { close(n.stopping) })
	timeout := n.cfg.ShutdownTimeout.D()
	n.log.Info("shutting down", "deadline", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	n.stopBridges()            // they publish to the bus: stop them first
	_ = n.workflows.Stop(sctx) // its steps publish and call: before the bus and mesh
	n.pipelines.Stop(sctx)     // runs in progress keep their checkpoints
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = n.bus.Stop(sctx) }()  // also ends open tails (n.stopping ends follows)
	go func() { defer wg.Done(); _ = n.mesh.Stop(sctx) }() // deregisters a sidecar first
	gwErr := make(chan error, 1)
	go func() { gwErr <- n.gateway.shutdown(sctx) }()
	if serveErr == nil {
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}
	if err := <-gwErr; err != nil && serveErr == nil {
		serveErr = err
	}
	wg.Wait()
	n.close(sctx)
	n.log.Info("stopped")
	return serveErr
}

// Close releases everything without serving (for a node never Run).
func (n *Node) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout.D())
	defer cancel()
	n.stopBridges()
	if n.workflows != nil {
		_ = n.workflows.Stop(ctx)
	}
	if n.bus != nil {
		_ = n.bus.Stop(ctx)
	}
	n.close(ctx)
}

func (n *Node) close(ctx context.Context) {
	n.closed.Do(func() {
		if n.stopWatch != nil {
			n.stopWatch()
		}
		n.stopBridges()
		if n.workflows != nil {
			_ = n.workflows.Stop(ctx) // a no-op after Run's
		}
		if n.pipelines != nil {
			n.pipelines.Stop(ctx)
		}
		if n.mesh != nil {
			_ = n.mesh.Stop(ctx) // a no-op after Run's
		}
		if n.listener != nil {
			_ = n.listener.Close()
		}
		if n.gateway != nil {
			_ = n.gateway.listener.Close()
		}
		if n.views != nil {
			n.views.Close() // before the store and databases it reads and writes
		}
		if n.events != nil {
			_ = n.events.Close()
		}
		if n.eventsDB != nil {
			_ = n.eventsDB.Close()
		}
		if n.db != nil {
			_ = n.db.Close()
		}
		if n.nats != nil {
			n.nats.Close()
		}
		if n.tracing != nil {
			_ = n.tracing(ctx)
		}
		if n.lock != nil {
			_ = n.lock.Close()
		}
	})
}
