// Package cli is the junction command: serve, validate, publish, tail,
// append, read and version. Every failure ends as one readable line on stderr and a
// non-zero exit status (validate prints one line per config error).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
)

// exitError carries an exit status with an already-printed message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs the command line and returns the process exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// Client errors name Junction already; say it once.
	fmt.Fprintln(stderr, "junction: "+strings.TrimPrefix(oneLine(err.Error()), "junction: "))
	return 1
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "junction",
		Short:         "Junction: integration patterns for microservices in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(pipelineCmd(stdout, stderr), serveCmd(), validateCmd(stdout, stderr), publishCmd(stdin, stdout), tailCmd(stdout),
		appendCmd(stdin, stdout), readCmd(stdout), runCmd(stdin, stdout), runsCmd(stdout, stderr), signalCmd(stdin), cancelCmd(),
		versionCmd(stdout), caCmd(stdout))
	return root
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(config.Locate(path))
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) && len(es) > 1 {
			return nil, fmt.Errorf("%s (and %d more errors; run junction validate)", es[0].Error(), len(es)-1)
		}
		return nil, err
	}
	return cfg, nil
}

func serveCmd() *cobra.Command {
	var cfgPath, dataDir, listen, sidecarFor, app, meshListen string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run a Junction node (embedded NATS JetStream and SQLite unless configured otherwise)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			// The flags override the file, now and at every reload.
			adjust := func(cfg *config.Config) {
				if dataDir != "" {
					cfg.DataDir = dataDir
				}
				if listen != "" {
					cfg.API.Listen = listen
				}
				if sidecarFor != "" {
					cfg.Mesh.Sidecar.Service = sidecarFor
				}
				if app != "" {
					cfg.Mesh.Sidecar.App = app
				}
				if meshListen != "" {
					cfg.Mesh.Listen = meshListen
				}
				if cfg.API.Token == "" {
					cfg.API.Token = os.Getenv("JUNCTION_API_TOKEN")
				}
			}
			adjust(cfg)
			if err := cfg.Validate(); err != nil {
				return err
			}
			var opts []junction.Option
			if file := config.Locate(cfgPath); file != "" {
				opts = append(opts, junction.WithConfigFile(file, adjust))
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			node, err := junction.New(ctx, cfg, opts...)
			if err != nil {
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					_ = node.Reload() // a refused file is logged; the node goes on
				}
			}()
			go func() {
				// A second signal during shutdown exits at once.
				<-ctx.Done()
				stop()
				sig := make(chan os.Signal, 1)
				signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
				<-sig
				fmt.Fprintln(cmd.ErrOrStderr(), "junction: second signal, exiting now")
				os.Exit(1)
			}()
			return node.Run(ctx)
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (default $JUNCTION_CONFIG, then ./junction.yaml)")
	c.Flags().StringVar(&dataDir, "data", "", "data directory (overrides data_dir)")
	c.Flags().StringVar(&listen, "listen", "", "API listen address (overrides api.listen)")
	c.Flags().StringVar(&sidecarFor, "sidecar-for", "", "run as the sidecar of this service (overrides mesh.sidecar.service)")
	c.Flags().StringVar(&app, "app", "", "the app's base URL in sidecar mode (overrides mesh.sidecar.app)")
	c.Flags().StringVar(&meshListen, "mesh-listen", "", "mTLS listen address for calls from other nodes (overrides mesh.listen)")
	return c
}

func validateCmd(stdout, stderr io.Writer) *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "validate",
		Short: "Check a config file and print every error with file:line:col",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			path := config.Locate(cfgPath)
			if path == "" {
				return errors.New("no config file: pass -c FILE or set JUNCTION_CONFIG")
			}
			_, err := config.Load(path)
			var es config.Errors
			if errors.As(err, &es) {
				for _, e := range es {
					fmt.Fprintln(stderr, e.Error())
				}
				return exitError{1}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: ok\n", path)
			return nil
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "", "config file")
	return c
}

// apiFlags are shared by commands that talk to a running node.
type apiFlags struct{ url, token string }

func (a *apiFlags) register(c *cobra.Command) {
	def := os.Getenv("JUNCTION_API_URL")
	if def == "" {
		def = "http://127.0.0.1:4000"
	}
	c.Flags().StringVar(&a.url, "api", def, "API base URL ($JUNCTION_API_URL)")
	c.Flags().StringVar(&a.token, "token", os.Getenv("JUNCTION_API_TOKEN"), "API bearer token ($JUNCTION_API_TOKEN)")
}

func (a *apiFlags) client() *client.Client { return client.New(a.url, client.WithToken(a.token)) }

func publishCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var api apiFlags
	var ev client.Event
	c := &cobra.Command{
		Use:   "publish TOPIC [DATA|-]",
		Short: "Publish one message (DATA, or stdin with -)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 || args[1] == "-":
				b, err := io.ReadAll(stdin)
				if err != nil {
					return fmt.Errorf("reading stdin: %w", err)
				}
				ev.Data = b
			default:
				ev.Data = []byte(args[1])
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			r, err := api.client().Publish(ctx, args[0], ev)
			if err != nil {
				return err
			}
			return json.NewEncoder(stdout).Encode(r)
		},
	}
	api.register(c)
	f := c.Flags()
	f.StringVar(&ev.ID, "id", "", "event id (ce-id; deduplicated inside the window)")
	f.StringVar(&ev.Type, "type", "", "event type (ce-type)")
	f.StringVar(&ev.Source, "source", "", "event source (ce-source)")
	f.StringVar(&ev.Subject, "subject", "", "event subject (ce-subject)")
	f.StringVar(&ev.Key, "key", "", "ordering key (ce-partitionkey)")
	f.StringVar(&ev.ContentType, "content-type", "", "data content type (default: application/json when DATA is JSON)")
	return c
}

func tailCmd(stdout io.Writer) *cobra.Command {
	var api apiFlags
	var from string
	var count int
	c := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Print a topic's messages as JSON lines: replay from a position, then live",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(stdout)
			n := 0
			errDone := errors.New("done")
			err := api.client().Tail(ctx, args[0], from, func(m client.Message) error {
				if err := enc.Encode(m); err != nil {
					return err
				}
				n++
				if count > 0 && n >= count {
					return errDone
				}
				return nil
			})
			if errors.Is(err, errDone) {
				return nil
			}
			return err
		},
	}
	api.register(c)
	c.Flags().StringVar(&from, "from", "new", "start: new, all, seq:N or time:RFC3339")
	c.Flags().IntVarP(&count, "count", "n", 0, "stop after this many messages (0 = follow forever)")
	return c
}

func versionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(*cobra.Command, []string) { fmt.Fprintln(stdout, "junction", junction.BuildVersion()) },
	}
}
