package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/junctionhq/junction/client"
)

func appendCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var api apiFlags
	var ev client.EventData
	var expected string
	c := &cobra.Command{
		Use:   "append STREAM [DATA|-]",
		Short: "Append one event to a stream (JSON DATA, or stdin with -) and print where it landed",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			exp, err := client.ParseExpectedVersion(expected)
			if err != nil {
				return err
			}
			var data []byte
			if len(args) == 1 || args[1] == "-" {
				if data, err = io.ReadAll(stdin); err != nil {
					return fmt.Errorf("reading stdin: %w", err)
				}
			} else {
				data = []byte(args[1])
			}
			if !json.Valid(data) {
				return errors.New("event data must be JSON (quote plain text: '\"text\"')")
			}
			ev.Data = data
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			r, err := api.client().Append(ctx, args[0], exp, ev)
			var ce *client.Error
			if errors.As(err, &ce) && ce.Code == "wrong_expected_version" && ce.CurrentVersion != nil {
				cur := "the stream does not exist"
				if *ce.CurrentVersion >= 0 {
					cur = fmt.Sprintf("its current version is %d", *ce.CurrentVersion)
				}
				return fmt.Errorf("stream %s: wrong expected version %s: %s", args[0], exp, cur)
			}
			if err != nil {
				return err
			}
			return json.NewEncoder(stdout).Encode(r)
		},
	}
	api.register(c)
	f := c.Flags()
	f.StringVar(&ev.Type, "type", "", "event type (required)")
	f.StringVar(&ev.ID, "id", "", "event id, the idempotency key (default: assigned by the server)")
	f.StringVar(&expected, "expected", "any", "expected version: any, no_stream, exists or the stream's current version N")
	_ = c.MarkFlagRequired("type")
	return c
}

func readCmd(stdout io.Writer) *cobra.Command {
	var api apiFlags
	var o client.ReadStreamOptions
	var follow bool
	c := &cobra.Command{
		Use:   "read STREAM",
		Short: "Print a stream's events, one JSON object per line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			enc := json.NewEncoder(stdout)
			if follow {
				// Until interrupted: the events so far, then each new one.
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return api.client().FollowStream(ctx, args[0], o.From, func(e client.StreamEvent) error { return enc.Encode(e) })
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			es, err := api.client().ReadStream(ctx, args[0], o)
			if err != nil {
				return err
			}
			for _, e := range es {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			return nil
		},
	}
	api.register(c)
	f := c.Flags()
	f.Uint64Var(&o.From, "from", 0, "first version to read (default: 0, or the last event with --backward)")
	f.IntVarP(&o.Limit, "limit", "n", 0, "most events to print (default 100, at most 10000)")
	f.BoolVar(&o.Backward, "backward", false, "read from the newest event down")
	f.BoolVar(&follow, "follow", false, "after the events so far, print each new one as it is appended, until interrupted")
	return c
}
