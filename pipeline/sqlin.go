package pipeline

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/sqldb"
)

// The sql input reads the rows of a query: each row is a record, column
// name to value ([]byte as text, times as RFC 3339 text).
//
// With a cursor column, a run reads only what is new: :cursor in the
// query stands for the high-water mark, the largest cursor value whose
// rows were all written (NULL before anything was), as in
//
//	SELECT * FROM orders WHERE (:cursor IS NULL OR id > :cursor) ORDER BY id
//
// (PostgreSQL needs the parameter's type for IS NULL: :cursor::bigint).
// The rows must come ordered by the cursor column (the input checks, and
// fails the run when they do not): then every row up to a committed one
// is written, and the high-water mark (in the pipelines' KV bucket, key
// hw.PIPELINE) advances with each committed batch. Rows sharing a cursor
// value count as written together: the mark passes a value only once the
// row after its last one was read.
//
// A resumed run starts from the mark its last batch left and passes over
// the rows of the cursor value it was in the middle of that it already
// handed out; without a cursor, over the rows it handed out (the query
// must then yield its rows in a stable order).

func init() {
	inputs["sql"] = func(ctx context.Context, env *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
		return newSQLInput(ctx, env, cfg.SQL, resume)
	}
}

// sqlPageRows is how many rows the sql input hands out at a time.
const sqlPageRows = 1000

// cursorVal is a cursor column's value, kept with its type so that it
// binds as the same type it was read as.
type cursorVal struct {
	T string          `json:"t"` // int, float, string or time
	V json.RawMessage `json:"v"`
	v any
}

func newCursorVal(v any) (*cursorVal, error) {
	c := &cursorVal{v: v}
	switch x := v.(type) {
	case int64:
		c.T = "int"
	case float64:
		c.T = "float"
	case string:
		c.T = "string"
	case time.Time:
		c.T = "time"
		v = x.Format(time.RFC3339Nano)
	case nil:
		return nil, errors.New("the cursor column is NULL")
	default:
		return nil, fmt.Errorf("the cursor column's values (%T) are not numbers, text or times", v)
	}
	b, err := json.Marshal(v)
	c.V = b
	return c, err
}

// value decodes a stored cursor value to what it binds as.
func (c *cursorVal) value() (any, error) {
	if c.v != nil {
		return c.v, nil
	}
	var err error
	switch c.T {
	case "int":
		var n int64
		err = json.Unmarshal(c.V, &n)
		c.v = n
	case "float":
		var f float64
		err = json.Unmarshal(c.V, &f)
		c.v = f
	case "string":
		var s string
		err = json.Unmarshal(c.V, &s)
		c.v = s
	case "time":
		var t time.Time
		err = json.Unmarshal(c.V, &t)
		c.v = t
	default:
		err = fmt.Errorf("unknown cursor type %q", c.T)
	}
	return c.v, err
}

// compareCursor orders two cursor values of one column.
func compareCursor(a, b any) int {
	switch x := a.(type) {
	case int64:
		switch y := b.(type) {
		case int64:
			return cmp3(x < y, x > y)
		case float64:
			return cmp3(float64(x) < y, float64(x) > y)
		}
	case float64:
		switch y := b.(type) {
		case int64:
			return cmp3(x < float64(y), x > float64(y))
		case float64:
			return cmp3(x < y, x > y)
		}
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y)
		}
	case string:
		if y, ok := b.(string); ok {
			// Decimals come as text: compare them as numbers.
			fx, ex := strconv.ParseFloat(x, 64)
			fy, ey := strconv.ParseFloat(y, 64)
			if ex == nil && ey == nil {
				return cmp3(fx < fy, fx > fy)
			}
			return strings.Compare(x, y)
		}
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

func cmp3(less, more bool) int {
	switch {
	case less:
		return -1
	case more:
		return 1
	}
	return 0
}

// sqlPos is the sql input's position after a record.
type sqlPos struct {
	// HW is the high-water mark: the rows of every cursor value up to it
	// are handed out.
	HW *cursorVal `json:"hw,omitempty"`
	// C is the record's cursor value, N how many rows of that value are
	// handed out up to it; without a cursor, N counts every row.
	C *cursorVal `json:"c,omitempty"`
	N int64      `json:"n"`
}

type sqlInput struct {
	db     *sqldb.DB
	closer func() error
	cfg    *config.SQLInput
	kv     jetstream.KeyValue
	key    string
	query  string
	args   []any

	rows   *sql.Rows
	cols   []string
	types  []*sql.ColumnType
	cur    int // index of the cursor column, -1 without one
	peek   []any
	ended  bool
	closed bool

	n     int64      // rows handed out (without a cursor)
	hw    *cursorVal // high-water mark
	last  *cursorVal // cursor of the last row handed out
	tie   int64      // rows handed out with cursor last
	skipC *cursorVal // on resume: rows of this value to pass over
	skipN int64
	saved string // the mark last stored
}

var cursorRe = regexp.MustCompile(`(^|[^:A-Za-z0-9_]):cursor\b`)

func newSQLInput(ctx context.Context, env *Env, cfg *config.SQLInput, resume json.RawMessage) (*sqlInput, error) {
	in := &sqlInput{cfg: cfg, cur: -1, db: env.DB}
	uses := cursorRe.MatchString(cfg.Query)
	if uses && cfg.Cursor == "" {
		return nil, errors.New("the query uses :cursor but the input has no cursor column")
	}
	var pos sqlPos
	if len(resume) > 0 {
		if err := json.Unmarshal(resume, &pos); err != nil {
			return nil, fmt.Errorf("resume position: %w", err)
		}
	}
	if cfg.Cursor != "" {
		if env.JS == nil {
			return nil, errors.New("a cursor needs JetStream to keep its high-water mark")
		}
		var err error
		if in.kv, err = env.JS.KeyValue(ctx, env.Prefix+"_pipelines"); err != nil {
			return nil, fmt.Errorf("pipelines bucket: %w", err)
		}
		in.key = "hw." + env.Pipeline
		if len(resume) > 0 {
			in.hw, in.skipC, in.skipN = pos.HW, pos.C, pos.N
		} else {
			e, err := in.kv.Get(ctx, in.key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return nil, fmt.Errorf("high-water mark: %w", err)
			default:
				in.hw = new(cursorVal)
				if err := json.Unmarshal(e.Value(), in.hw); err != nil {
					return nil, fmt.Errorf("high-water mark: %w", err)
				}
			}
		}
		if in.hw != nil {
			b, _ := json.Marshal(in.hw)
			in.saved = string(b)
		}
	} else {
		in.skipN = pos.N
	}
	if cfg.Database != "" {
		db, err := env.Open(ctx, cfg.Database)
		if err != nil {
			return nil, err
		}
		in.db, in.closer = db, db.Close
	}
	if in.db == nil {
		return nil, errors.New("no SQL database")
	}
	// :cursor becomes a bound parameter: $1 on PostgreSQL (every use),
	// one ? per use elsewhere.
	var mark any
	if in.hw != nil {
		v, err := in.hw.value()
		if err != nil {
			in.Close()
			return nil, fmt.Errorf("high-water mark: %w", err)
		}
		mark = v
	}
	in.query = cursorRe.ReplaceAllStringFunc(cfg.Query, func(m string) string {
		pre := m[:len(m)-len(":cursor")]
		if in.db.Dialect == "postgres" {
			in.args = []any{mark}
			return pre + "$1"
		}
		in.args = append(in.args, mark)
		return pre + "?"
	})
	return in, nil
}

func (in *sqlInput) start(ctx context.Context) error {
	rows, err := in.db.QueryContext(ctx, in.query, in.args...)
	if err != nil {
		return fmt.Errorf("sql input: %w", err)
	}
	in.rows = rows
	if in.cols, err = rows.Columns(); err != nil {
		return err
	}
	if in.types, err = rows.ColumnTypes(); err != nil {
		return err
	}
	if in.cfg.Cursor != "" {
		for i, c := range in.cols {
			if c == in.cfg.Cursor {
				in.cur = i
			}
		}
		if in.cur < 0 {
			return fmt.Errorf("sql input: the query does not select the cursor column %s", in.cfg.Cursor)
		}
	}
	return nil
}

// read returns the next row's values, nil at the end.
func (in *sqlInput) read() ([]any, error) {
	if in.ended {
		return nil, nil
	}
	if !in.rows.Next() {
		in.ended = true
		if err := in.rows.Err(); err != nil {
			return nil, fmt.Errorf("sql input: %w", err)
		}
		return nil, in.rows.Close()
	}
	vals := make([]any, len(in.cols))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := in.rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("sql input: %w", err)
	}
	for i, v := range vals {
		vals[i] = in.native(i, v)
	}
	return vals, nil
}

// native turns a scanned value into a plain one: MySQL's text protocol
// gives every number as bytes, which the column's type turns back.
func (in *sqlInput) native(i int, v any) any {
	b, ok := v.([]byte)
	if !ok {
		return v
	}
	s := string(b)
	if in.db.Dialect == "mysql" {
		t := in.types[i].DatabaseTypeName()
		switch {
		case strings.Contains(t, "INT") || t == "YEAR":
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n
			}
		case t == "FLOAT" || t == "DOUBLE" || t == "REAL":
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return f
			}
		}
	}
	return s
}

func (in *sqlInput) Next(ctx context.Context) ([]*Record, error) {
	if in.rows == nil {
		if err := in.start(ctx); err != nil {
			return nil, err
		}
		if err := in.skip(); err != nil {
			return nil, err
		}
	}
	out := make([]*Record, 0, sqlPageRows)
	for len(out) < sqlPageRows {
		row := in.peek
		in.peek = nil
		if row == nil {
			var err error
			if row, err = in.read(); err != nil {
				return nil, err
			}
		}
		if row == nil {
			break
		}
		rec := &Record{Fields: make(map[string]any, len(row))}
		for i, c := range in.cols {
			v := row[i]
			if t, ok := v.(time.Time); ok {
				v = t.Format(time.RFC3339Nano)
			}
			rec.Fields[c] = v
		}
		var pos sqlPos
		if in.cur < 0 {
			in.n++
			pos.N = in.n
		} else {
			c, err := in.advance(row)
			if err != nil {
				return nil, err
			}
			// The mark passes this value once the next row has another.
			next, err := in.read()
			if err != nil {
				return nil, err
			}
			in.peek = next
			if next == nil || compareCursor(next[in.cur], c.v) > 0 {
				in.hw = c
			}
			pos = sqlPos{HW: in.hw, C: c, N: in.tie}
		}
		b, err := json.Marshal(pos)
		if err != nil {
			return nil, err
		}
		rec.Pos = b
		out = append(out, rec)
	}
	if len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}

// advance takes row's cursor value, checking the rows' order.
func (in *sqlInput) advance(row []any) (*cursorVal, error) {
	c, err := newCursorVal(row[in.cur])
	if err != nil {
		return nil, fmt.Errorf("sql input: %s: %w", in.cfg.Cursor, err)
	}
	switch {
	case in.last == nil:
		in.tie = 1
	case compareCursor(c.v, in.last.v) < 0:
		return nil, fmt.Errorf("sql input: the rows are not ordered by the cursor (%s %s after %s): the query must ORDER BY %s",
			in.cfg.Cursor, c.V, in.last.V, in.cfg.Cursor)
	case compareCursor(c.v, in.last.v) == 0:
		in.tie++
	default:
		in.tie = 1
	}
	in.last = c
	return c, nil
}

// skip passes over the rows a resumed run already handed out.
func (in *sqlInput) skip() error {
	if in.cur < 0 {
		for in.n < in.skipN {
			row, err := in.read()
			if err != nil || row == nil {
				return err
			}
			in.n++
		}
		return nil
	}
	if in.skipC == nil || in.skipN == 0 {
		return nil
	}
	want, err := in.skipC.value()
	if err != nil {
		return fmt.Errorf("resume position: %w", err)
	}
	for n := int64(0); n < in.skipN; n++ {
		row, err := in.read()
		if err != nil || row == nil {
			return err
		}
		if compareCursor(row[in.cur], want) != 0 {
			in.peek = row
			return nil
		}
		if _, err := in.advance(row); err != nil {
			return err
		}
	}
	return nil
}

// Commit stores the high-water mark of pos.
func (in *sqlInput) Commit(ctx context.Context, pos json.RawMessage) error {
	if in.kv == nil || len(pos) == 0 {
		return nil
	}
	var p sqlPos
	if err := json.Unmarshal(pos, &p); err != nil {
		return fmt.Errorf("sql input: position: %w", err)
	}
	if p.HW == nil {
		return nil
	}
	b, err := json.Marshal(p.HW)
	if err != nil {
		return err
	}
	if string(b) == in.saved {
		return nil
	}
	if _, err := in.kv.Put(ctx, in.key, b); err != nil {
		return fmt.Errorf("sql input: storing the high-water mark: %w", err)
	}
	in.saved = string(b)
	return nil
}

func (in *sqlInput) Close() error {
	if in.closed {
		return nil
	}
	in.closed = true
	var err error
	if in.rows != nil {
		err = in.rows.Close()
	}
	if in.closer != nil {
		if cerr := in.closer(); err == nil {
			err = cerr
		}
	}
	return err
}
