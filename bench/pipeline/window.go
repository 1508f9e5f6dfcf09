package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/junctionhq/junction/config"
)

// The window phase: records key,ts,amount in event-time order, spread
// evenly over windowMinutes minutes and over the keys, through a
// tumbling one-minute window per key (count and sum of amount) into a
// JSON lines file, one line per window, a batch of lines written and
// synced at a time. Both sides must write the same file.

const (
	windowMinutes = 100
	windowSize    = time.Minute
)

var windowBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (e *env) windowPhase() *phase {
	in := filepath.Join(e.dir, "events.csv")
	out := func(side string, round int) string {
		return filepath.Join(e.dir, fmt.Sprintf("windows-%s-%d.jsonl", side, round))
	}
	p := &phase{name: "window", records: e.o.records}
	p.prepare = func(context.Context) error {
		if err := generateEvents(in, e.o.records, e.o.keys); err != nil {
			return err
		}
		st, err := os.Stat(in)
		if err != nil {
			return err
		}
		p.what = fmt.Sprintf("%d records (%.1f MB of CSV) over %d keys and %d minutes through a tumbling 1-minute window (count, sum) into a JSON lines file",
			e.o.records, float64(st.Size())/1e6, e.o.keys, windowMinutes)
		return nil
	}
	p.direct = func(_ context.Context, round int) error {
		return directWindow(in, out("direct", round), e.o.batch)
	}
	p.pipe = func(ctx context.Context, round int) error {
		pl := &config.Pipeline{
			Input: &config.PipelineInput{CSV: &config.FileInput{Path: in, Columns: map[string]string{"amount": "real"}}},
			Processors: []*config.PipelineProcess{{Window: &config.WindowProcess{
				Key: "row.key", Time: "row.ts", Size: config.Duration(windowSize),
				Aggregates: map[string]string{"count": "count", "total": "sum(row.amount)"},
			}}},
			Batch:  config.PipelineBatch{Count: e.o.batch, Period: config.Duration(time.Hour)},
			Output: &config.PipelineOutput{JSONL: &config.FileOutput{Path: out("pipeline", round)}},
		}
		s, err := e.runBatch(ctx, fmt.Sprintf("window_%d", round), pl, e.db)
		if err != nil {
			return err
		}
		if s.Read != int64(e.o.records) || s.Failed != 0 {
			return fmt.Errorf("read %d records, %d failed; want %d and 0", s.Read, s.Failed, e.o.records)
		}
		return nil
	}
	p.verify = func(_ context.Context, round int) error {
		d, err := os.ReadFile(out("direct", round))
		if err != nil {
			return err
		}
		pl, err := os.ReadFile(out("pipeline", round))
		if err != nil {
			return err
		}
		if !bytes.Equal(d, pl) {
			return fmt.Errorf("the output files differ (direct %d bytes, %d lines; pipeline %d bytes, %d lines)",
				len(d), bytes.Count(d, []byte{'\n'}), len(pl), bytes.Count(pl, []byte{'\n'}))
		}
		if bytes.Count(d, []byte{'\n'}) == 0 {
			return fmt.Errorf("no window written")
		}
		return nil
	}
	return p
}

// generateEvents writes records rows of key,ts,amount: record i has key
// k(i mod keys) and the event time windowBase + i*step, so that they
// span windowMinutes minutes in order.
func generateEvents(path string, records, keys int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "key,ts,amount")
	step := windowMinutes * time.Minute / time.Duration(records)
	for i := range records {
		t := windowBase.Add(time.Duration(i) * step)
		fmt.Fprintf(w, "k%04d,%s,%d.5\n", i%keys, t.Format(time.RFC3339Nano), i%100)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// windowLine is a line of the output file (the fields in the order the
// pipeline's JSON has them: sorted).
type windowLine struct {
	Count       int64   `json:"count"`
	Key         string  `json:"key"`
	Total       float64 `json:"total"`
	WindowEnd   string  `json:"window_end"`
	WindowStart string  `json:"window_start"`
}

type windowID struct {
	key   string
	start int64 // Unix nanoseconds
}

type windowAgg struct {
	count int64
	total float64
}

// directWindow is the hand-written program: a map keyed by (key, window
// start) holding count and sum; when the latest event time seen passes
// the end of open windows, they are emitted (ordered by end, start, key),
// and once batch lines are pending they are written and the file synced.
func directWindow(in, out string, batch int) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 256<<10))
	r.ReuseRecord = true
	if _, err := r.Read(); err != nil {
		return err
	}
	of, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer of.Close()
	w := bufio.NewWriterSize(of, 256<<10)
	size := int64(windowSize)
	open := map[windowID]*windowAgg{}
	var (
		maxT, nextEnd int64 // nextEnd 0: no open window
		seen          bool
		pending       []windowLine
	)
	write := func() error {
		for _, l := range pending {
			b, err := json.Marshal(l)
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
		pending = pending[:0]
		if err := w.Flush(); err != nil {
			return err
		}
		return of.Sync()
	}
	// closeUpTo emits the windows ending at or before wm (all: every one).
	closeUpTo := func(wm int64, all bool) {
		var done []windowID
		nextEnd = 0
		for id := range open {
			end := id.start + size
			if all || end <= wm {
				done = append(done, id)
			} else if nextEnd == 0 || end < nextEnd {
				nextEnd = end
			}
		}
		slices.SortFunc(done, func(a, b windowID) int {
			// Tumbling windows: by start is by end.
			return cmp.Or(cmp.Compare(a.start, b.start), strings.Compare(a.key, b.key))
		})
		for _, id := range done {
			a := open[id]
			delete(open, id)
			pending = append(pending, windowLine{Count: a.count, Key: id.key, Total: a.total,
				WindowStart: time.Unix(0, id.start).UTC().Format(time.RFC3339Nano), WindowEnd: time.Unix(0, id.start+size).UTC().Format(time.RFC3339Nano)})
		}
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339Nano, rec[1])
		if err != nil {
			return err
		}
		amount, err := strconv.ParseFloat(rec[2], 64)
		if err != nil {
			return err
		}
		ns := t.UnixNano()
		start := ns - ns%size
		id := windowID{rec[0], start}
		a := open[id]
		if a == nil {
			if seen && start+size <= maxT {
				return fmt.Errorf("late record at %s", rec[1])
			}
			a = &windowAgg{}
			open[id] = a
			if nextEnd == 0 || start+size < nextEnd {
				nextEnd = start + size
			}
		}
		a.count++
		a.total += amount
		if !seen || ns > maxT {
			maxT, seen = ns, true
		}
		if nextEnd != 0 && maxT >= nextEnd {
			closeUpTo(maxT, false)
			if len(pending) >= batch {
				if err := write(); err != nil {
					return err
				}
			}
		}
	}
	closeUpTo(0, true)
	if err := write(); err != nil {
		return err
	}
	return of.Close()
}
