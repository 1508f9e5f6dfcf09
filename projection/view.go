package projection

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Limits of a list query.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Query selects rows of a view: equality filters on columns (values as
// text, parsed by column type), an order column (key by default), a page
// size and the cursor of the previous page.
type Query struct {
	Filters map[string]string
	Order   string // column name, "-name" for descending
	Limit   int
	Cursor  string
}

// Page is one page of a list; Next is the cursor of the following page,
// empty on the last one.
type Page struct {
	Rows []map[string]any `json:"rows"`
	Next string           `json:"next_cursor,omitempty"`
}

// Get reads the row whose key is key (as text: parsed by the key's type).
func (p *Projection) Get(ctx context.Context, key string) (map[string]any, error) {
	s := p.def.schema
	k, err := parseParam(p.d, s.key, key)
	if err != nil {
		return nil, fmt.Errorf("%w: key: %v", ErrInvalid, err)
	}
	row, err := s.scanRow(p.db.QueryRowContext(ctx, `SELECT `+s.selectList(p.d)+` FROM `+q(p.def.table)+` WHERE `+q(s.key.name)+` = `+p.d.ph(1), k))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s %q", ErrRowNotFound, s.key.name, key)
	}
	if err != nil {
		return nil, err
	}
	return wireRow(row), nil
}

func wireRow(row map[string]any) map[string]any {
	for k, v := range row {
		row[k] = jsonValue(v)
	}
	return row
}

// cursor is where a page ended: the order column's value (JSON form) and
// whether it was null, the key, and the query shape it belongs to.
type cursor struct {
	Order string          `json:"o"`
	Value json.RawMessage `json:"v,omitempty"`
	Null  bool            `json:"n,omitempty"`
	Key   json.RawMessage `json:"k"`
}

// List reads one page of the view. Pages are keyset-paginated on (order
// column, key), so rows written between two pages neither repeat nor
// shift the pages that follow; nulls of the order column come last.
func (p *Projection) List(ctx context.Context, qr Query) (Page, error) {
	s := p.def.schema
	bad := func(format string, a ...any) (Page, error) {
		return Page{}, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	limit := qr.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return bad("limit must be between 1 and %d", MaxLimit)
	}
	desc := strings.HasPrefix(qr.Order, "-")
	oname := strings.TrimPrefix(qr.Order, "-")
	if oname == "" {
		oname = s.key.name
	}
	oc, ok := s.col(oname)
	if !ok {
		return bad("order: no column %q", oname)
	}
	if oc.typ == "json" {
		return bad("order: %s is a json column, which has no order", oname)
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return p.d.ph(len(args))
	}
	names := make([]string, 0, len(qr.Filters))
	for n := range qr.Filters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c, ok := s.col(n)
		if !ok {
			return bad("no column %q to filter on", n)
		}
		v, err := parseParam(p.d, c, qr.Filters[n])
		if err != nil {
			return bad("%v", err)
		}
		where = append(where, q(c.name)+" = "+arg(v))
	}
	cmp := ">"
	dir := "ASC"
	if desc {
		cmp, dir = "<", "DESC"
	}
	keyed := oc.name == s.key.name
	if qr.Cursor != "" {
		cur, err := decodeCursor(qr.Cursor)
		if err != nil || cur.Order != qr.Order {
			return bad("cursor: not a cursor of this query (the order must stay the same)")
		}
		k, err := cursorValue(p.d, s.key, cur.Key)
		if err != nil || k == nil {
			return bad("cursor: bad key")
		}
		kc := func() string { return q(s.key.name) + " " + cmp + " " + arg(k) }
		switch {
		case keyed:
			where = append(where, kc())
		case cur.Null:
			where = append(where, "("+q(oc.name)+" IS NULL AND "+kc()+")")
		default:
			v, err := cursorValue(p.d, oc, cur.Value)
			if err != nil || v == nil {
				return bad("cursor: bad value")
			}
			o := q(oc.name)
			// Placeholders are numbered on PostgreSQL, so the value is
			// bound twice rather than referenced twice.
			where = append(where, "("+o+" IS NULL OR "+o+" "+cmp+" "+arg(v)+" OR ("+o+" = "+arg(v)+" AND "+q(s.key.name)+" "+cmp+" "+arg(k)+"))")
		}
	}
	var b strings.Builder
	b.WriteString("SELECT " + s.selectList(p.d) + " FROM " + q(p.def.table))
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY ")
	if !keyed {
		fmt.Fprintf(&b, "(%s IS NULL), %s %s, ", q(oc.name), q(oc.name), dir)
	}
	fmt.Fprintf(&b, "%s %s LIMIT %d", q(s.key.name), dir, limit+1)
	rows, err := p.db.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return Page{}, err
	}
	defer rows.Close()
	page := Page{Rows: []map[string]any{}}
	for rows.Next() {
		row, err := s.scanRow(rows)
		if err != nil {
			return Page{}, err
		}
		page.Rows = append(page.Rows, wireRow(row))
	}
	if err := rows.Err(); err != nil {
		return Page{}, err
	}
	if len(page.Rows) > limit {
		page.Rows = page.Rows[:limit]
		last := page.Rows[limit-1]
		cur := cursor{Order: qr.Order}
		cur.Key, _ = json.Marshal(last[s.key.name])
		if v := last[oc.name]; v == nil {
			cur.Null = true
		} else if !keyed {
			cur.Value, _ = json.Marshal(v)
		}
		raw, _ := json.Marshal(cur)
		page.Next = base64.RawURLEncoding.EncodeToString(raw)
	}
	return page, nil
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return c, err
	}
	err = json.Unmarshal(raw, &c)
	return c, err
}

// cursorValue turns a value a cursor carries back into a bind argument,
// reading numbers exactly (an integer key beyond 2^53 stays exact).
func cursorValue(d dialect, c column, raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if n, ok := v.(json.Number); ok {
		if c.typ == "integer" {
			i, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				return nil, err
			}
			v = i
		} else {
			f, err := n.Float64()
			if err != nil {
				return nil, err
			}
			v = f
		}
	}
	return bind(d, c, v)
}
