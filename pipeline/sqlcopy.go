package pipeline

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL writes. Inserts go through COPY (binary), which takes a few
// times less than one INSERT per row; COPY sends every value in the
// column's binary form, so values are first converted to what the
// column's type takes (RFC 3339 text into timestamps, numbers into text
// columns, ...). Upserts are one multi-row INSERT ... ON CONFLICT per
// chunk of rows: against COPY into a temporary table followed by
// INSERT ... SELECT ... ON CONFLICT, the two took about the same time
// for batches of 1000 rows (BenchmarkPostgresWrite), and the INSERT
// needs no per-connection state.

// pgColumns are the target table's column types, by output column.
type pgColumns struct {
	oids []uint32
	m    *pgtype.Map
}

// withPgx runs f on the pgx connection under one of db's connections.
func withPgx(ctx context.Context, db *sql.DB, f func(c *pgx.Conn) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("not a pgx connection: %T", dc)
		}
		return f(sc.Conn())
	})
}

// pgColumnTypes looks up the types of table's columns.
func pgColumnTypes(ctx context.Context, c *pgx.Conn, table string, columns []string) (*pgColumns, error) {
	q := fmt.Sprintf("SELECT %s FROM %s LIMIT 0", strings.Join(columns, ", "), table)
	rows, err := c.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	fds := rows.FieldDescriptions()
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	pc := &pgColumns{m: c.TypeMap()}
	for _, fd := range fds {
		pc.oids = append(pc.oids, fd.DataTypeOID)
	}
	return pc, nil
}

// copyable says whether every column's type has a binary encoding pgx
// knows (enums and other custom types do not).
func (pc *pgColumns) copyable() bool {
	for _, oid := range pc.oids {
		if _, ok := pc.m.TypeForOID(oid); !ok {
			return false
		}
	}
	return true
}

// convert makes v encodable in binary for column i.
func (pc *pgColumns) convert(i int, v any) (any, error) {
	v = sqlValue(v)
	if v == nil {
		return nil, nil
	}
	oid := pc.oids[i]
	t, _ := pc.m.TypeForOID(oid)
	if t != nil {
		if _, ok := t.Codec.(pgtype.TextCodec); ok {
			if s, ok := v.(string); ok {
				return s, nil
			}
			return text(v), nil
		}
	}
	s, ok := v.(string)
	if !ok {
		return v, nil
	}
	switch oid {
	case pgtype.JSONOID, pgtype.JSONBOID:
		return s, nil
	case pgtype.TimestamptzOID, pgtype.TimestampOID, pgtype.DateOID:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02"} {
			if tm, err := time.Parse(layout, s); err == nil {
				return tm, nil
			}
		}
	}
	var out any
	if err := pc.m.Scan(oid, pgx.TextFormatCode, []byte(s), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// pgCopy inserts recs with COPY.
func (o *sqlOutput) pgCopy(ctx context.Context, recs []*Record) error {
	return withPgx(ctx, o.db.DB, func(c *pgx.Conn) error {
		rows := make([][]any, len(recs))
		for r, rec := range recs {
			row := make([]any, len(o.columns))
			for i, col := range o.columns {
				v, err := o.pg.convert(i, rec.Value(col))
				if err != nil {
					return fmt.Errorf("%s.%s: %w", o.cfg.Table, col, err)
				}
				row[i] = v
			}
			rows[r] = row
		}
		_, err := c.CopyFrom(ctx, pgx.Identifier{o.cfg.Table}, o.columns, pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("%s: %w", o.cfg.Table, err)
		}
		return nil
	})
}

// maxParams is PostgreSQL's and MySQL's limit of bound parameters per
// statement.
const maxParams = 65535

// writeMulti writes recs in one transaction with multi-row INSERT
// statements (each within maxParams), upserting on the key when the
// mode says so. A batch holding one key twice keeps the last record of
// it, as one upsert after the other would.
func (o *sqlOutput) writeMulti(ctx context.Context, recs []*Record) error {
	if o.cfg.Mode == "upsert" {
		recs = lastPerKey(recs, o.cfg.Key)
	}
	per := max(1, min(1000, maxParams/max(1, len(o.columns))))
	tx, err := o.db.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for start := 0; start < len(recs); start += per {
		chunk := recs[start:min(len(recs), start+per)]
		q, args := o.multiInsert(chunk)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", o.cfg.Table, err)
		}
	}
	return tx.Commit()
}

// multiInsert builds INSERT ... VALUES (...), (...) [upsert clause].
func (o *sqlOutput) multiInsert(recs []*Record) (string, []any) {
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", o.cfg.Table, strings.Join(o.columns, ", "))
	args := make([]any, 0, len(recs)*len(o.columns))
	for r, rec := range recs {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i, col := range o.columns {
			if i > 0 {
				b.WriteString(", ")
			}
			args = append(args, sqlValue(rec.Value(col)))
			if o.db.Dialect == "postgres" {
				fmt.Fprintf(&b, "$%d", len(args))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	b.WriteString(o.upsertClause())
	return b.String(), args
}

// upsertClause is the statement's ending that turns an insert into an
// upsert on the key, in the database's dialect ("" for inserts).
func (o *sqlOutput) upsertClause() string {
	if o.cfg.Mode != "upsert" {
		return ""
	}
	var set []string
	for _, c := range o.columns {
		if !slices.Contains(o.cfg.Key, c) {
			if o.db.Dialect == "mysql" {
				set = append(set, fmt.Sprintf("%s = VALUES(%s)", c, c))
			} else {
				set = append(set, fmt.Sprintf("%s = excluded.%s", c, c))
			}
		}
	}
	if o.db.Dialect == "mysql" {
		// MySQL and MariaDB upsert on any unique key of the table.
		if len(set) == 0 {
			set = []string{fmt.Sprintf("%s = %s", o.cfg.Key[0], o.cfg.Key[0])}
		}
		return " ON DUPLICATE KEY UPDATE " + strings.Join(set, ", ")
	}
	if len(set) == 0 {
		return fmt.Sprintf(" ON CONFLICT (%s) DO NOTHING", strings.Join(o.cfg.Key, ", "))
	}
	return fmt.Sprintf(" ON CONFLICT (%s) DO UPDATE SET %s", strings.Join(o.cfg.Key, ", "), strings.Join(set, ", "))
}

// lastPerKey drops every record whose key a later record of recs has.
func lastPerKey(recs []*Record, key []string) []*Record {
	last := make(map[string]int, len(recs))
	keys := make([]string, len(recs))
	for i, r := range recs {
		var b strings.Builder
		for _, k := range key {
			v := r.Value(k)
			fmt.Fprintf(&b, "%T:%v\x00", v, v)
		}
		keys[i] = b.String()
		last[keys[i]] = i
	}
	if len(last) == len(recs) {
		return recs
	}
	out := make([]*Record, 0, len(last))
	for i, r := range recs {
		if last[keys[i]] == i {
			out = append(out, r)
		}
	}
	return out
}
