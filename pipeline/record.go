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
	Fields map[string]any
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
