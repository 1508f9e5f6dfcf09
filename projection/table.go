package projection

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// dialect is what differs between SQLite and PostgreSQL. Every identifier
// that reaches SQL comes from validated config (lower-case letters, digits
// and '_'), never from a request, and is quoted anyway.
type dialect string

const (
	sqlite   dialect = "sqlite"
	postgres dialect = "postgres"
)

// ph is the i-th (1-based) bind parameter, numbered in both dialects so
// that text order and argument order may differ (UPDATE ... WHERE key).
func (d dialect) ph(i int) string {
	if d == postgres {
		return "$" + strconv.Itoa(i)
	}
	return "?" + strconv.Itoa(i)
}

func (d dialect) sqlType(t string) string {
	pg := d == postgres
	switch t {
	case "integer":
		if pg {
			return "BIGINT"
		}
		return "INTEGER"
	case "real":
		if pg {
			return "DOUBLE PRECISION"
		}
		return "REAL"
	case "boolean":
		if pg {
			return "BOOLEAN"
		}
		return "INTEGER"
	case "json":
		if pg {
			return "JSONB"
		}
		return "TEXT"
	case "timestamp":
		if pg {
			return "TIMESTAMPTZ"
		}
		return "TEXT" // fixed-width UTC text, so it sorts as time does
	}
	return "TEXT"
}

// forUpdate locks the checkpoint row on PostgreSQL, where several nodes
// may apply the same projection to one database; SQLite has one writer.
func (d dialect) forUpdate() string {
	if d == postgres {
		return " FOR UPDATE"
	}
	return ""
}

func q(ident string) string { return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"` }

// sqliteTime is how SQLite stores timestamps: UTC, fixed width, so text
// order is time order.
const sqliteTime = "2006-01-02T15:04:05.000000Z"

// column is one declared column.
type column struct {
	name, typ string
}

// schema is a view table's columns, key first then by name.
type schema struct {
	cols []column
	key  column
	idx  map[string]int
}

func newSchema(cols map[string]string, key string) *schema {
	s := &schema{idx: map[string]int{}}
	names := make([]string, 0, len(cols))
	for n := range cols {
		if n != key {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	s.key = column{key, cols[key]}
	s.cols = append(s.cols, s.key)
	for _, n := range names {
		s.cols = append(s.cols, column{n, cols[n]})
	}
	for i, c := range s.cols {
		s.idx[c.name] = i
	}
	return s
}

func (s *schema) col(name string) (column, bool) {
	i, ok := s.idx[name]
	if !ok {
		return column{}, false
	}
	return s.cols[i], true
}

func (s *schema) createTable(d dialect, table string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s (", q(table))
	for i, c := range s.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", q(c.name), d.sqlType(c.typ))
		if c.name == s.key.name {
			b.WriteString(" PRIMARY KEY")
		}
	}
	b.WriteString(")")
	return b.String()
}

// selectList names the columns to read, casting JSON to text on
// PostgreSQL so both dialects hand back the document's text.
func (s *schema) selectList(d dialect) string {
	parts := make([]string, len(s.cols))
	for i, c := range s.cols {
		parts[i] = q(c.name)
		if d == postgres && c.typ == "json" {
			parts[i] += "::text"
		}
	}
	return strings.Join(parts, ", ")
}

// bind converts a mapped value (plain Go from expr.Eval) to what the
// column stores. A nil value is SQL NULL.
func bind(d dialect, c column, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	bad := func() (any, error) { return nil, fmt.Errorf("column %s: want %s, got %s", c.name, c.typ, kind(v)) }
	switch c.typ {
	case "text":
		if s, ok := v.(string); ok {
			return s, nil
		}
		return bad()
	case "integer":
		switch x := v.(type) {
		case int64:
			return x, nil
		case uint64:
			if x > math.MaxInt64 {
				return nil, fmt.Errorf("column %s: %d does not fit a 64-bit integer", c.name, x)
			}
			return int64(x), nil
		case float64:
			// JSON numbers arrive as doubles; accept the integral ones.
			if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
				return nil, fmt.Errorf("column %s: %v is not an integer", c.name, x)
			}
			return int64(x), nil
		}
		return bad()
	case "real":
		switch x := v.(type) {
		case float64:
			// JSON has no NaN or infinity, and SQLite stores NaN as NULL.
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("column %s: %v is not a finite number", c.name, x)
			}
			return x, nil
		case int64:
			return float64(x), nil
		case uint64:
			return float64(x), nil
		}
		return bad()
	case "boolean":
		b, ok := v.(bool)
		if !ok {
			return bad()
		}
		if d == sqlite {
			if b {
				return int64(1), nil
			}
			return int64(0), nil
		}
		return b, nil
	case "json":
		if t, ok := v.(time.Time); ok {
			v = t.UTC().Format(time.RFC3339Nano)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", c.name, err)
		}
		return string(b), nil
	case "timestamp":
		var t time.Time
		switch x := v.(type) {
		case time.Time:
			t = x
		case string:
			var err error
			if t, err = time.Parse(time.RFC3339Nano, x); err != nil {
				return nil, fmt.Errorf("column %s: %q is not an RFC 3339 time", c.name, x)
			}
		default:
			return bad()
		}
		if d == sqlite {
			return t.UTC().Format(sqliteTime), nil
		}
		return t.UTC(), nil
	}
	return bad()
}

func kind(v any) string {
	switch v.(type) {
	case string:
		return "text"
	case int64, uint64:
		return "an integer"
	case float64:
		return "a double"
	case bool:
		return "a bool"
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	case time.Time:
		return "a timestamp"
	case time.Duration:
		return "a duration"
	case []byte:
		return "bytes"
	}
	return fmt.Sprintf("%T", v)
}

// parseParam reads a key or filter value given as text in a URL.
func parseParam(d dialect, c column, s string) (any, error) {
	var v any
	switch c.typ {
	case "text":
		v = s
	case "integer":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s must be an integer, got %q", c.name, s)
		}
		v = n
	case "real":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%s must be a number, got %q", c.name, s)
		}
		v = f
	case "boolean":
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%s must be true or false, got %q", c.name, s)
		}
		v = b
	case "timestamp":
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("%s must be an RFC 3339 time, got %q", c.name, s)
		}
		v = t
	default:
		return nil, fmt.Errorf("%s is a %s column, which cannot be filtered on", c.name, c.typ)
	}
	return bind(d, c, v)
}

// value turns what the database returned for c into its JSON form and the
// form CEL mappings see as row.<column> (JSON documents decoded,
// timestamps as time.Time).
func value(c column, raw any) (any, error) {
	if raw == nil {
		return nil, nil
	}
	if b, ok := raw.([]byte); ok {
		raw = string(b)
	}
	switch c.typ {
	case "text":
		if s, ok := raw.(string); ok {
			return s, nil
		}
	case "integer":
		switch x := raw.(type) {
		case int64:
			return x, nil
		case float64:
			return int64(x), nil
		}
	case "real":
		switch x := raw.(type) {
		case float64:
			return x, nil
		case int64:
			return float64(x), nil
		}
	case "boolean":
		switch x := raw.(type) {
		case bool:
			return x, nil
		case int64:
			return x != 0, nil
		}
	case "json":
		if s, ok := raw.(string); ok {
			var v any
			if err := json.Unmarshal([]byte(s), &v); err != nil {
				return nil, fmt.Errorf("column %s: stored JSON: %w", c.name, err)
			}
			return v, nil
		}
	case "timestamp":
		switch x := raw.(type) {
		case time.Time:
			return x.UTC(), nil
		case string:
			t, err := time.Parse(time.RFC3339Nano, x)
			if err != nil {
				return nil, fmt.Errorf("column %s: stored time %q: %w", c.name, x, err)
			}
			return t, nil
		}
	}
	return nil, fmt.Errorf("column %s (%s): unexpected stored value of type %T", c.name, c.typ, raw)
}

// jsonValue is value ready for encoding: timestamps as RFC 3339 text.
func jsonValue(v any) any {
	if t, ok := v.(time.Time); ok {
		return t.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// scanRow reads one row of s.selectList into a column -> value map.
func (s *schema) scanRow(sc interface{ Scan(...any) error }) (map[string]any, error) {
	raw := make([]any, len(s.cols))
	ptrs := make([]any, len(s.cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	if err := sc.Scan(ptrs...); err != nil {
		return nil, err
	}
	row := make(map[string]any, len(s.cols))
	for i, c := range s.cols {
		v, err := value(c, raw[i])
		if err != nil {
			return nil, err
		}
		row[c.name] = v
	}
	return row, nil
}

// tableExists reports whether table exists in the database's default
// schema.
func tableExists(ctx context.Context, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, d dialect, table string) (bool, error) {
	var n int
	var err error
	if d == postgres {
		err = db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`, table).Scan(&n)
	} else {
		err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&n)
	}
	return n > 0, err
}
