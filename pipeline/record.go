// Package pipeline moves records from an input through processors to an
// output, in batches: ETL runs that end, and continuous streams.
//
// Delivery is at least once, with acknowledgement flowing back: an input
// hands out records with positions, and learns (Commit) the position of
// the last record of each batch once the output has written that batch,
// or once the batch's records were dropped or dead-lettered. A run that
// crashes resumes from the last committed position; with an idempotent
// output (upsert), the result is as if it had run once.
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
)

// Record is one record: its fields, and the input's position of it.
type Record struct {
	// Fields are the record's fields; nil while the record is still in
	// the row form its input made (see row): read them with Map, or one
	// with Value.
	Fields map[string]any
	// row is the fields by column, as an input whose records share their
	// names (a CSV file) hands them out: no map is made per record
	// unless something needs the whole record. A value, not a pointer:
	// the records of a batch are allocated together, rows included.
	row row
	// Pos is where the input can resume after this record (opaque to
	// everything but the input); read it with Position, as an input may
	// encode it only when asked.
	Pos json.RawMessage
	// Err is why the record was dead-lettered.
	Err error
	// Route is the output the record goes to: 0 for the pipeline's
	// output, i for the i-th output of the Router processors (counting
	// from 1, in processor order).
	Route int
	// routed says Route is already global (the runner resolved it).
	routed bool
	// lazy, for an input whose positions are costly to encode, makes Pos
	// from at (the input's own note of where the record is) when the
	// runner needs it: for the last record of a batch. An interface and
	// two numbers rather than a closure: no allocation per record.
	lazy positioner
	at   [2]int64
}

// positioner encodes a position an input noted as two numbers.
type positioner interface {
	position(at [2]int64) json.RawMessage
}

// Map returns the record's fields as a map, made from its row the first
// time (from then on, the record holds the map).
func (r *Record) Map() map[string]any {
	if r.Fields == nil && r.row.cols != nil {
		r.Fields, r.row = r.row.Map(), row{}
	}
	return r.Fields
}

// Value returns field name (nil when absent), without making a map.
func (r *Record) Value(name string) any {
	if r.row.cols != nil {
		v, _ := r.row.Field(name)
		return v
	}
	return r.Fields[name]
}

// vars is what expressions see as row: the map, or the row itself (an
// expr.Fields, read field by field).
func (r *Record) vars() any {
	if r.row.cols != nil {
		return &r.row
	}
	return r.Fields
}

// row is a record's fields by column. cols is shared by the records of
// one input (one file's header); vals holds at most one value per
// column, fewer when the line was short (the missing fields are absent,
// as in the map).
type row struct {
	cols *columns
	vals []any
}

// columns are the names of a row's fields, and their index.
type columns struct {
	names []string
	index map[string]int
}

func newColumns(names []string) *columns {
	c := &columns{names: names, index: make(map[string]int, len(names))}
	for i, n := range names {
		c.index[n] = i // a name given twice: the last column, as in Map
	}
	return c
}

// Field implements expr.Fields.
func (w *row) Field(name string) (any, bool) {
	i, ok := w.cols.index[name]
	if !ok {
		return nil, false
	}
	if i >= len(w.vals) {
		// A short line: the last column of that name it has, if any.
		for i = len(w.vals) - 1; i >= 0 && w.cols.names[i] != name; i-- {
		}
		if i < 0 {
			return nil, false
		}
	}
	return w.vals[i], true
}

// Map implements expr.Fields.
func (w *row) Map() map[string]any {
	m := make(map[string]any, len(w.vals))
	for i, v := range w.vals {
		m[w.cols.names[i]] = v
	}
	return m
}

// Position returns the record's Pos, encoding it if it is lazy.
func (r *Record) Position() json.RawMessage {
	if r.Pos == nil && r.lazy != nil {
		r.Pos = r.lazy.position(r.at)
	}
	return r.Pos
}

// Input produces records. Next returns the next records (io.EOF at the
// end of a finite input); Commit tells it that every record up to pos is
// done with.
type Input interface {
	Next(ctx context.Context) ([]*Record, error)
	Commit(ctx context.Context, pos json.RawMessage) error
	Close() error
}

// Output writes batches of records, all or nothing.
type Output interface {
	Write(ctx context.Context, recs []*Record) error
	Close() error
}

// Processor turns a record into zero or more records.
type Processor interface {
	Process(ctx context.Context, r *Record) ([]*Record, error)
}

// ErrRecord marks an error caused by one record (a processor refused it,
// the output cannot store it): the record goes to the dead letter and
// the pipeline keeps going. Other errors end the run.
var ErrRecord = errors.New("record refused")
