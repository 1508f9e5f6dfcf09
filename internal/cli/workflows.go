package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/junctionhq/junction/client"
)

// maxWait is the longest wait one request asks the server for; the
// server caps its waits there too.
const maxWait = 60 * time.Second

// jsonArg returns args[i] as JSON, stdin's JSON when it is "-", and nil
// when there is no args[i].
func jsonArg(args []string, i int, stdin io.Reader, what string) (json.RawMessage, error) {
	if len(args) <= i {
		return nil, nil
	}
	data := []byte(args[i])
	if args[i] == "-" {
		var err error
		if data, err = io.ReadAll(stdin); err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("%s must be JSON (quote plain text: '\"text\"')", what)
	}
	return data, nil
}

func printIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var api apiFlags
	var wait bool
	var timeout time.Duration
	var key string
	c := &cobra.Command{
		Use:   "run WORKFLOW [INPUT|-]",
		Short: "Start a run of a workflow with JSON INPUT (stdin with -; null without) and print its id, or with --wait its outcome",
		Long: `Start a run of a workflow. INPUT is the run's input as JSON text, - to
read it from stdin, or absent for a null input.

Without --wait the run's id is printed alone. With --wait the command
waits for the run to end (up to --timeout) and prints it as JSON; it
exits 1 when the run did not complete, or did not end in time.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			input, err := jsonArg(args, 1, stdin, "the run's input")
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("timeout") && !wait {
				return errors.New("--timeout applies to --wait; add --wait")
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, got %s", timeout)
			}
			cl := api.client()
			if !wait {
				ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
				defer cancel()
				r, err := cl.StartRun(ctx, args[0], input, client.StartRunOptions{IdempotencyKey: key})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(stdout, r.RunID)
				return err
			}
			// Each request waits at most maxWait; the context bounds the
			// whole exchange in case the server does not answer.
			deadline := time.Now().Add(timeout)
			ctx, cancel := context.WithDeadline(cmd.Context(), deadline.Add(30*time.Second))
			defer cancel()
			r, err := cl.StartRun(ctx, args[0], input, client.StartRunOptions{IdempotencyKey: key, Wait: min(timeout, maxWait)})
			for err == nil && !r.Ended() {
				left := time.Until(deadline)
				if left < time.Millisecond {
					break
				}
				r, err = cl.GetRun(ctx, r.RunID, min(left, maxWait))
			}
			if err != nil {
				return err
			}
			if err := printIndented(stdout, r); err != nil {
				return err
			}
			switch {
			case !r.Ended():
				return fmt.Errorf("run %s did not end within %s: it is %s", r.RunID, timeout, r.Status)
			case r.Status != client.RunCompleted && r.Error != "":
				return fmt.Errorf("run %s ended %s: %s", r.RunID, r.Status, r.Error)
			case r.Status != client.RunCompleted:
				return fmt.Errorf("run %s ended %s", r.RunID, r.Status)
			}
			return nil
		},
	}
	api.register(c)
	f := c.Flags()
	f.BoolVar(&wait, "wait", false, "wait for the run to end and print it; exit 1 unless it completed")
	f.DurationVar(&timeout, "timeout", maxWait, "how long --wait waits before giving up (exit 1)")
	f.StringVar(&key, "idempotency-key", "", "a start with the same key returns the same run instead of starting another")
	return c
}

func runsCmd(stdout, stderr io.Writer) *cobra.Command {
	var api apiFlags
	var filter client.RunFilter
	var asJSON bool
	c := &cobra.Command{
		Use:   "runs",
		Short: "List recent workflow runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			p, err := api.client().ListRuns(ctx, filter)
			if err != nil {
				return err
			}
			if asJSON {
				return printIndented(stdout, p)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN ID\tWORKFLOW\tSTATUS\tSTARTED\tDURATION\tERROR")
			for _, r := range p.Runs {
				var d string
				if r.EndedAt != nil {
					d = r.EndedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
				} else {
					d = now.Sub(r.StartedAt).Round(time.Millisecond).String() + "…"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.RunID, r.Workflow, r.Status,
					r.StartedAt.Local().Format("2006-01-02 15:04:05"), d, truncate(oneLine(r.Error), 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if p.NextCursor != "" {
				fmt.Fprintf(stderr, "more runs: add --cursor %s\n", p.NextCursor)
			}
			return nil
		},
	}
	api.register(c)
	f := c.Flags()
	f.StringVar(&filter.Workflow, "workflow", "", "only runs of this workflow")
	f.StringVar(&filter.Status, "status", "", "only runs with this status: running, compensating, completed, compensated, failed or cancelled")
	f.IntVarP(&filter.Limit, "limit", "n", 0, "most runs to list (default 20, at most 1000)")
	f.StringVar(&filter.Cursor, "cursor", "", "continue after the page that printed this cursor")
	f.BoolVar(&asJSON, "json", false, "print the page as JSON, with its next_cursor")
	return c
}

// truncate shortens s to at most n characters, marking a cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func signalCmd(stdin io.Reader) *cobra.Command {
	var api apiFlags
	var key string
	c := &cobra.Command{
		Use:   "signal RUN SIGNAL [DATA|-]",
		Short: "Send a signal with JSON DATA (stdin with -; none without) to a run",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := jsonArg(args, 2, stdin, "the signal's data")
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return api.client().SignalRun(ctx, args[0], args[1], data, key)
		},
	}
	api.register(c)
	c.Flags().StringVar(&key, "idempotency-key", "", "a resend with the same key counts once")
	return c
}

func cancelCmd() *cobra.Command {
	var api apiFlags
	var reason string
	c := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run: it compensates its completed steps (ending compensated), or ends cancelled when there is nothing to undo",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return api.client().CancelRun(ctx, args[0], reason)
		},
	}
	api.register(c)
	c.Flags().StringVar(&reason, "reason", "", "why, recorded in the run's error")
	return c
}
