package pipeline

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/junctionhq/junction/config"
)

// filePos is a file input's position: the file (by its index in the
// sorted glob) and the number of records of it already done.
type filePos struct {
	File    int    `json:"file"`
	Name    string `json:"name"`
	Records int64  `json:"records"`
}

// fileInput reads CSV, JSON lines or JSON arrays from the files a glob
// matches.
type fileInput struct {
	kind   string
	cfg    *config.FileInput
	files  []string
	idx    int
	f      *os.File
	closer io.Closer
	n      int64 // records of the current file read
	skip   int64 // records to pass over on resume
	csv    *csv.Reader
	header []string
	cols   *columns // header's, for the rows of records
	types  []string
	// vals is where a CSV batch's rows take their values from: one
	// allocation for many records.
	vals  []any
	lines *bufio.Reader
	dec   *json.Decoder
	batch int
	size  int64 // of every file, for progress
	// done counts the bytes read, of every file: atomic, as the input
	// reads ahead of the run's progress reports.
	done atomic.Int64
}

// readsAhead: Commit does nothing, and progress reads an atomic count.
func (in *fileInput) readsAhead() {}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (in *fileInput) progress() (done, total int64, unit string) {
	return in.done.Load(), in.size, "bytes"
}

// batchRecords is how many records an input hands out at a time.
const batchRecords = 512

func openFiles(kind string, cfg *config.FileInput, resume json.RawMessage) (*fileInput, error) {
	files, err := filepath.Glob(cfg.Path)
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	in := &fileInput{kind: kind, cfg: cfg, files: files, batch: batchRecords}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			in.size += st.Size()
		}
	}
	if len(resume) > 0 {
		var p filePos
		if err := json.Unmarshal(resume, &p); err != nil {
			return nil, fmt.Errorf("resume position: %w", err)
		}
		if p.File < len(files) && files[p.File] == p.Name {
			in.idx, in.skip = p.File, p.Records
		} else {
			return nil, fmt.Errorf("resume: the files changed since the interrupted run (%s was file %d)", p.Name, p.File)
		}
	}
	return in, nil
}

func (in *fileInput) open() error {
	path := in.files[in.idx]
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	in.f, in.closer, in.n = f, f, 0
	// The files before this one count as read in full.
	var before int64
	for _, p := range in.files[:in.idx] {
		if st, err := os.Stat(p); err == nil {
			before += st.Size()
		}
	}
	in.done.Store(before)
	var r io.Reader = countReader{f, &in.done}
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", path, err)
		}
		r = gz
	}
	br := bufio.NewReaderSize(r, 256<<10)
	switch in.kind {
	case "csv":
		in.csv = csv.NewReader(br)
		in.csv.ReuseRecord = true
		if d := in.cfg.Delimiter; d != "" {
			in.csv.Comma = []rune(d)[0]
		}
		h, err := in.csv.Read()
		if err != nil {
			return fmt.Errorf("%s: header: %w", path, err)
		}
		in.header = append([]string(nil), h...)
		in.cols = newColumns(in.header)
		in.types = make([]string, len(h))
		for i, c := range in.header {
			in.types[i] = in.cfg.Columns[c]
		}
	case "jsonl":
		in.lines = br
	case "json":
		in.dec = json.NewDecoder(br)
		if t, err := in.dec.Token(); err != nil || t != json.Delim('[') {
			return fmt.Errorf("%s: want a JSON array of objects", path)
		}
	}
	return nil
}

func (in *fileInput) Next(ctx context.Context) ([]*Record, error) {
	out := make([]*Record, 0, in.batch)
	// One allocation for the batch's records rather than one each.
	slab := make([]Record, in.batch)
	for len(out) < in.batch {
		if in.f == nil {
			if in.idx >= len(in.files) {
				break
			}
			if err := in.open(); err != nil {
				return nil, err
			}
		}
		fields, vals, err := in.read(in.batch - len(out))
		if err == io.EOF {
			in.closer.Close()
			in.f = nil
			in.idx++
			continue
		}
		path := in.files[in.idx]
		in.n++
		if err != nil {
			var re *recordErr
			if errors.As(err, &re) {
				// A bad line is the record's fault: it is dead-lettered.
				rec := &slab[len(out)]
				*rec = Record{Fields: map[string]any{"file": path, "record": in.n, "text": re.text}, lazy: in, at: in.at(), Err: re}
				out = append(out, rec)
				continue
			}
			return nil, fmt.Errorf("%s: record %d: %w", path, in.n, err)
		}
		if in.n <= in.skip {
			continue
		}
		rec := &slab[len(out)]
		*rec = Record{Fields: fields, lazy: in, at: in.at()}
		if fields == nil {
			rec.row = row{cols: in.cols, vals: vals}
		}
		out = append(out, rec)
	}
	if len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}

// at notes the current record's position, encoded (by position) only
// when a batch commits it: encoding every record's would cost more than
// reading it.
func (in *fileInput) at() [2]int64 { return [2]int64{int64(in.idx), in.n} }

// position encodes a position noted by at (the file list does not change
// during a run).
func (in *fileInput) position(at [2]int64) json.RawMessage {
	b, _ := json.Marshal(filePos{File: int(at[0]), Name: in.files[at[0]], Records: at[1]})
	return b
}

type recordErr struct {
	msg, text string
}

func (e *recordErr) Error() string { return e.msg }
func (e *recordErr) Unwrap() error { return ErrRecord }

// read reads the next record: a CSV line as the values of a row (room
// is the most records that the batch may still take, for the values'
// allocation), anything else as a map.
func (in *fileInput) read(room int) (map[string]any, []any, error) {
	switch in.kind {
	case "csv":
		line, err := in.csv.Read()
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, nil, &recordErr{msg: pe.Error(), text: strings.Join(line, ",")}
			}
			return nil, nil, err
		}
		n := min(len(line), len(in.header))
		if cap(in.vals)-len(in.vals) < n {
			in.vals = make([]any, 0, max(n*room, n))
		}
		vals := in.vals[len(in.vals) : len(in.vals)+n : len(in.vals)+n]
		for i, v := range line[:n] {
			tv, err := typed(v, in.types[i])
			if err != nil {
				return nil, nil, &recordErr{msg: fmt.Sprintf("column %s: %v", in.header[i], err), text: strings.Join(line, ",")}
			}
			vals[i] = tv
		}
		in.vals = in.vals[:len(in.vals)+n]
		return nil, vals, nil
	case "jsonl":
		for {
			line, err := in.lines.ReadBytes('\n')
			if len(strings.TrimSpace(string(line))) == 0 {
				if err != nil {
					return nil, nil, err
				}
				continue
			}
			var m map[string]any
			if jerr := json.Unmarshal(line, &m); jerr != nil {
				return nil, nil, &recordErr{msg: "not a JSON object: " + jerr.Error(), text: strings.TrimSpace(string(line))}
			}
			return m, nil, nil
		}
	default:
		if !in.dec.More() {
			return nil, nil, io.EOF
		}
		var m map[string]any
		if err := in.dec.Decode(&m); err != nil {
			return nil, nil, err // the rest of the array cannot be read either
		}
		return m, nil, nil
	}
}

// typed converts a CSV field to its column's type; empty is null for
// every type but text.
func typed(v, t string) (any, error) {
	if t == "" || t == "text" {
		return v, nil
	}
	if v == "" {
		return nil, nil
	}
	switch t {
	case "integer":
		return strconv.ParseInt(v, 10, 64)
	case "real":
		return strconv.ParseFloat(v, 64)
	case "boolean":
		return strconv.ParseBool(v)
	case "json":
		var x any
		err := json.Unmarshal([]byte(v), &x)
		return x, err
	}
	return v, nil
}

func (in *fileInput) Commit(context.Context, json.RawMessage) error { return nil }

func (in *fileInput) Close() error {
	if in.f != nil {
		return in.closer.Close()
	}
	return nil
}
