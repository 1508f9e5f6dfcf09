package projection

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/expr"
)

// definition is a projection's config compiled once: its schema, its
// handlers' programs and the events it reads.
type definition struct {
	name     string
	table    string
	schema   *schema
	indexes  []string
	handlers map[string]*handler
	filter   eventstore.ReadAllOptions
	batch    int
	skip     bool // on_error: skip
	// fingerprint changes whenever what the view holds would change, so a
	// changed definition is rebuilt rather than mixed with the old one.
	fingerprint string
}

type handler struct {
	op      string // insert, upsert, update, delete
	when    *expr.Program
	cols    []column // mapped columns, key first
	progs   []*expr.Program
	needRow bool // a mapping reads row: load the current row first
}

// rowRef spots a mapping that reads the current row. A false positive
// (the word in a string literal) only costs one extra read.
var rowRef = regexp.MustCompile(`\brow\b`)

func compile(name string, p *config.Projection) (*definition, error) {
	d := &definition{
		name:     name,
		table:    p.Table.Name,
		schema:   newSchema(p.Table.Columns, p.Table.Key),
		indexes:  append([]string(nil), p.Table.Indexes...),
		handlers: map[string]*handler{},
		batch:    p.BatchSize,
		skip:     p.OnError == "skip",
	}
	d.filter.Categories = append([]string(nil), p.From.Categories...)
	for typ, hc := range p.Handlers {
		op, m := hc.Op()
		h := &handler{op: op}
		if hc.When != "" {
			prg, err := expr.CompileBool(hc.When)
			if err != nil {
				return nil, fmt.Errorf("projection %s: handler %s: when: %w", name, typ, err)
			}
			h.when = prg
		}
		for _, c := range d.schema.cols {
			src, ok := m[c.name]
			if !ok {
				continue
			}
			prg, err := expr.Compile(src)
			if err != nil {
				return nil, fmt.Errorf("projection %s: handler %s: column %s: %w", name, typ, c.name, err)
			}
			h.cols = append(h.cols, c)
			h.progs = append(h.progs, prg)
			if op != "insert" && rowRef.MatchString(src) {
				h.needRow = true
			}
		}
		d.handlers[typ] = h
		d.filter.Types = append(d.filter.Types, typ)
	}
	sort.Strings(d.filter.Types)
	sort.Strings(d.filter.Categories)
	sum, err := json.Marshal(struct {
		Cats, Types []string
		Columns     map[string]string
		Key         string
		Indexes     []string
		Handlers    map[string]*config.ProjectionHandler
	}{d.filter.Categories, d.filter.Types, p.Table.Columns, p.Table.Key, p.Table.Indexes, p.Handlers})
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(sum)
	d.fingerprint = hex.EncodeToString(h[:12])
	return d, nil
}

// shadow is the table a rebuild fills before it replaces the view.
// Config forbids "__" in table names, so it never names a view.
func (d *definition) shadow() string { return d.table + "__rebuild" }

// eventVars is the CEL view of an event: its attributes, data and
// metadata decoded from JSON.
func eventVars(e eventstore.Event) (map[string]any, error) {
	var data, meta any
	if len(e.Data) > 0 {
		if err := json.Unmarshal(e.Data, &data); err != nil {
			return nil, fmt.Errorf("event data: %w", err)
		}
	}
	if len(e.Metadata) > 0 {
		if err := json.Unmarshal(e.Metadata, &meta); err != nil {
			return nil, fmt.Errorf("event metadata: %w", err)
		}
	}
	if meta == nil {
		meta = map[string]any{}
	}
	return map[string]any{
		"stream":   e.Stream,
		"category": eventstore.Category(e.Stream),
		"id":       e.ID,
		"type":     e.Type,
		"version":  int64(e.Version),
		"position": int64(e.Position),
		"time":     e.Time.UTC(),
		"data":     data,
		"metadata": meta,
	}, nil
}

// statements are the SQL of one handler against one table.
func (h *handler) statement(d dialect, table string, key column) string {
	var b strings.Builder
	switch h.op {
	case "insert", "upsert":
		names := make([]string, len(h.cols))
		phs := make([]string, len(h.cols))
		for i, c := range h.cols {
			names[i] = q(c.name)
			phs[i] = d.ph(i + 1)
		}
		fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES (%s)", q(table), strings.Join(names, ", "), strings.Join(phs, ", "))
		if h.op == "upsert" {
			fmt.Fprintf(&b, " ON CONFLICT (%s) DO ", q(key.name))
			if len(h.cols) == 1 {
				b.WriteString("NOTHING")
				break
			}
			b.WriteString("UPDATE SET ")
			for i, c := range h.cols[1:] {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "%s = excluded.%s", q(c.name), q(c.name))
			}
		}
	case "update":
		// cols[0] is the key (schema order puts it first).
		fmt.Fprintf(&b, "UPDATE %s SET ", q(table))
		for i, c := range h.cols[1:] {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s = %s", q(c.name), d.ph(i+2))
		}
		fmt.Fprintf(&b, " WHERE %s = %s", q(key.name), d.ph(1))
	case "delete":
		fmt.Fprintf(&b, "DELETE FROM %s WHERE %s = %s", q(table), q(key.name), d.ph(1))
	}
	return b.String()
}
