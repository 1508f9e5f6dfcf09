package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/sqldb"
)

// Env is what components may use: the node's substrate and services.
type Env struct {
	// Pipeline names the pipeline the component serves (for durable
	// names: subscriptions, consumer groups, KV keys).
	Pipeline string
	// Stream is set for a continuous pipeline: an input that could end
	// (the event log) follows instead.
	Stream bool
	DB     *sqldb.DB
	// Open opens another database (postgres://..., sqlite:PATH).
	Open   func(ctx context.Context, dsn string) (*sqldb.DB, error)
	JS     jetstream.JetStream
	Prefix string
	Bus    *bus.Bus
	Events eventstore.Store
	// Services carries calls to services by name (the mesh); HTTP calls
	// to URLs.
	Services http.RoundTripper
	HTTP     http.RoundTripper
	Stdout   io.Writer
	Logger   *slog.Logger
	// Receiver hands out the records posted to the pipeline's
	// http_server input.
	Receiver *Receiver
}

// Factories build components by kind. Files that add a kind register
// its factory in an init function.
type (
	InputFactory     func(ctx context.Context, env *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error)
	OutputFactory    func(ctx context.Context, env *Env, cfg *config.PipelineOutput) (Output, error)
	ProcessorFactory func(ctx context.Context, env *Env, cfg *config.PipelineProcess) (Processor, error)
)

var (
	inputs     = map[string]InputFactory{}
	outputs    = map[string]OutputFactory{}
	processors = map[string]ProcessorFactory{}
)

func init() {
	for _, k := range []string{"csv", "jsonl", "json"} {
		inputs[k] = func(_ context.Context, _ *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
			f := map[string]*config.FileInput{"csv": cfg.CSV, "jsonl": cfg.JSONL, "json": cfg.JSON}[k]
			return openFiles(k, f, resume)
		}
	}
	inputs["generate"] = func(_ context.Context, _ *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
		return newGenerator(cfg.Generate, resume)
	}
	outputs["sql"] = func(ctx context.Context, env *Env, cfg *config.PipelineOutput) (Output, error) {
		db := env.DB
		if cfg.SQL.Database != "" {
			var err error
			if db, err = env.Open(ctx, cfg.SQL.Database); err != nil {
				return nil, err
			}
			return &closingOutput{newSQLOutput(db, cfg.SQL), db.Close}, nil
		}
		return newSQLOutput(db, cfg.SQL), nil
	}
	outputs["jsonl"] = func(_ context.Context, _ *Env, cfg *config.PipelineOutput) (Output, error) {
		return newFileOutput("jsonl", cfg.JSONL), nil
	}
	outputs["csv"] = func(_ context.Context, _ *Env, cfg *config.PipelineOutput) (Output, error) {
		return newFileOutput("csv", cfg.CSV), nil
	}
	outputs["stdout"] = func(_ context.Context, env *Env, _ *config.PipelineOutput) (Output, error) {
		return &writerOutput{w: env.Stdout}, nil
	}
	for _, k := range []string{"filter", "map", "set", "remove", "split"} {
		processors[k] = func(_ context.Context, _ *Env, cfg *config.PipelineProcess) (Processor, error) {
			return compileProcessor(cfg)
		}
	}
}

// closingOutput closes what the output opened for itself.
type closingOutput struct {
	Output
	close func() error
}

func (c *closingOutput) Close() error {
	err := c.Output.Close()
	if cerr := c.close(); err == nil {
		err = cerr
	}
	return err
}

func buildInput(ctx context.Context, env *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
	f := inputs[cfg.Kind()]
	if f == nil {
		return nil, fmt.Errorf("input %q is not available in this build", cfg.Kind())
	}
	return f(ctx, env, cfg, resume)
}

func buildOutput(ctx context.Context, env *Env, cfg *config.PipelineOutput) (Output, error) {
	f := outputs[cfg.Kind()]
	if f == nil {
		return nil, fmt.Errorf("output %q is not available in this build", cfg.Kind())
	}
	return f(ctx, env, cfg)
}

func buildProcessor(ctx context.Context, env *Env, cfg *config.PipelineProcess) (Processor, error) {
	f := processors[cfg.Kind()]
	if f == nil {
		return nil, fmt.Errorf("processor %q is not available in this build", cfg.Kind())
	}
	return f(ctx, env, cfg)
}

// Optional interfaces of processors.
type (
	// Ticker is a processor that emits on its own as time passes (a
	// window closing); the runner calls Tick after each read and at
	// least once a second.
	Ticker interface {
		Tick(ctx context.Context) ([]*Record, error)
	}
	// Ender is a processor that holds records until the input ends (open
	// windows at the end of a batch run); End emits them.
	Ender interface {
		End(ctx context.Context) ([]*Record, error)
	}
	// Router is a processor that sends some records to other outputs (a
	// switch): Outputs lists them, and a record's Route is the index in
	// that list plus one (0: it goes on to the pipeline's output). The
	// runner maps it to its place among every router's outputs, and the
	// first router to route a record decides.
	Router interface {
		Outputs() []*config.PipelineOutput
	}
	// Closer is a processor with resources to release.
	Closer interface{ Close() error }
	// Stateful is a processor that holds what records it absorbed (open
	// windows) from batch to batch. Its State is taken as each batch is
	// handed to the writer, so that it matches the position that batch
	// commits, and saved with that position in the run's checkpoint; a
	// resumed run Restores it. Without this, a record absorbed and then
	// committed at its input would be lost with the node.
	Stateful interface {
		// State encodes the state as of the last record processed.
		State() ([]byte, error)
		// Restore sets the state a resumed run starts from.
		Restore(state []byte) error
	}
	// Committer is a processor with an effect that must last only once
	// the records it let through are written (a dedupe's record of the
	// keys it has seen). Prepare is called as a batch is handed to the
	// writer, for the records processed until then; what it returns
	// (nil: nothing) runs once that batch is written, before its
	// position is committed.
	Committer interface {
		Prepare() func(ctx context.Context) error
	}
)
