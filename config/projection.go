package config

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/junctionhq/junction/expr"
)

// Projection keeps one SQL table (a view) up to date from the event
// store: each event of a handled type, in the source categories, becomes
// an insert, upsert, update or delete whose column values are CEL over
// event (and row, the current row, for updates and upserts).
type Projection struct {
	From ProjectionSource `yaml:"from"`
	// Database is where the view lives: empty for the node's SQL database
	// (sql.dsn, SQLite in the data dir by default), postgres://... or
	// sqlite:PATH for another one.
	Database string          `yaml:"database"`
	Table    ProjectionTable `yaml:"table"`
	// Handlers maps an event type to what it does to the table. Events of
	// other types are passed over.
	Handlers map[string]*ProjectionHandler `yaml:"handlers"`
	// BatchSize is the most events applied in one transaction.
	BatchSize int `yaml:"batch_size"`
	// OnError is what a failing event does: stop (the projection stops,
	// the error in its status, until it is fixed and restarted or rebuilt)
	// or skip (the event is counted, logged and passed over).
	OnError string `yaml:"on_error"`
}

// ProjectionSource selects the events a projection reads.
type ProjectionSource struct {
	// Categories are stream categories ("order" for order-42); empty
	// means every stream.
	Categories []string `yaml:"categories"`
}

// ProjectionTable declares the view's table. Columns map a name to a type:
// text, integer, real, boolean, json or timestamp.
type ProjectionTable struct {
	Name    string            `yaml:"name"` // default: the projection's name
	Columns map[string]string `yaml:"columns"`
	Key     string            `yaml:"key"` // the primary key column
	// Indexes are columns to index, for the filters and orderings the
	// views API serves.
	Indexes []string `yaml:"indexes"`
}

// ProjectionHandler is what one event type does. Exactly one of Insert,
// Upsert, Update and Delete is set; each maps columns to CEL expressions
// and must map the key column (Delete maps only the key).
type ProjectionHandler struct {
	When   string            `yaml:"when"` // optional CEL condition over event
	Insert map[string]string `yaml:"insert"`
	Upsert map[string]string `yaml:"upsert"`
	Update map[string]string `yaml:"update"`
	Delete map[string]string `yaml:"delete"`
}

// Op returns the handler's operation and its column mappings.
func (h *ProjectionHandler) Op() (string, map[string]string) {
	switch {
	case h.Insert != nil:
		return "insert", h.Insert
	case h.Upsert != nil:
		return "upsert", h.Upsert
	case h.Update != nil:
		return "update", h.Update
	case h.Delete != nil:
		return "delete", h.Delete
	}
	return "", nil
}

// ColumnTypes are the types a projection column may have.
var ColumnTypes = []string{"text", "integer", "real", "boolean", "json", "timestamp"}

// ReservedViewParams are query parameters of the views API, so no column
// may take their names.
var ReservedViewParams = []string{"order", "limit", "cursor", "min_position", "wait"}

var identRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidIdent reports whether s can name a projection, table or column:
// lower-case letters, digits and '_', not starting with a digit, so it
// needs no quoting in SQL and reads the same in every dialect.
func ValidIdent(s string) bool { return identRe.MatchString(s) }

// Normalize fills defaults.
func (p *Projection) Normalize(name string) {
	if p.Table.Name == "" {
		p.Table.Name = name
	}
	if p.BatchSize == 0 {
		p.BatchSize = 500
	}
	if p.OnError == "" {
		p.OnError = "stop"
	}
}

func (p *Projection) check() []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	for i, c := range p.From.Categories {
		if c == "" || strings.ContainsAny(c, "-$") || len(c) > 200 {
			add(fmt.Sprintf("from.categories[%d]", i), "invalid category %q: a category is a stream name's part before its first '-'", c)
		}
	}
	if p.Database != "" && !isPostgresDSN(p.Database) && !strings.HasPrefix(p.Database, "sqlite:") {
		add("database", "database must be empty (the node's SQL database), postgres://..., postgresql://... or sqlite:PATH")
	}
	t := p.Table
	if !ValidIdent(t.Name) || strings.HasPrefix(t.Name, "junction_") || strings.Contains(t.Name, "__") {
		add("table.name", "invalid table name %q: use lower-case letters, digits and '_' (no '__', no junction_ prefix)", t.Name)
	}
	if len(t.Columns) == 0 {
		add("table.columns", "table.columns is required: map each column to a type (%s)", strings.Join(ColumnTypes, ", "))
	}
	for _, c := range sortedNames(t.Columns) {
		if !ValidIdent(c) {
			add("table.columns."+c, "invalid column name %q: use lower-case letters, digits and '_'", c)
		}
		for _, r := range ReservedViewParams {
			if c == r {
				add("table.columns."+c, "column name %q is a views API query parameter; rename the column", c)
			}
		}
		if !slices.Contains(ColumnTypes, t.Columns[c]) {
			add("table.columns."+c, "column %s: type must be one of %s, got %q", c, strings.Join(ColumnTypes, ", "), t.Columns[c])
		}
	}
	switch typ, ok := t.Columns[t.Key]; {
	case t.Key == "":
		add("table.key", "table.key is required: the column each event's row is found by")
	case !ok:
		add("table.key", "table.key %q is not a declared column", t.Key)
	case typ == "json" || typ == "real":
		add("table.key", "table.key %q: a key column must be text, integer, boolean or timestamp, not %s", t.Key, typ)
	}
	for i, c := range t.Indexes {
		if _, ok := t.Columns[c]; !ok {
			add(fmt.Sprintf("table.indexes[%d]", i), "index column %q is not a declared column", c)
		}
	}
	if len(p.Handlers) == 0 {
		add("handlers", "handlers is required: map each event type to an insert, upsert, update or delete")
	}
	for _, typ := range sortedNames(p.Handlers) {
		hp := "handlers." + typ
		h := p.Handlers[typ]
		if h == nil {
			add(hp, "handler for %s is empty: give it an insert, upsert, update or delete", typ)
			continue
		}
		n := 0
		for _, m := range []map[string]string{h.Insert, h.Upsert, h.Update, h.Delete} {
			if m != nil {
				n++
			}
		}
		if n != 1 {
			add(hp, "handler for %s must have exactly one of insert, upsert, update and delete", typ)
			continue
		}
		op, cols := h.Op()
		if h.When != "" {
			if _, err := expr.CompileBool(h.When); err != nil {
				line, col, msg := exprError(err)
				is = append(is, issue{Issue{hp + ".when", "when: " + msg}, line, col})
			}
		}
		if _, ok := cols[t.Key]; !ok && t.Key != "" {
			add(hp+"."+op, "%s must map the key column %q", op, t.Key)
		}
		if op == "delete" && len(cols) > 1 {
			add(hp+".delete", "delete maps only the key column %q", t.Key)
		}
		if op == "update" && len(cols) < 2 {
			add(hp+".update", "update must map at least one column besides the key %q", t.Key)
		}
		for _, c := range sortedNames(cols) {
			cp := hp + "." + op + "." + c
			if _, ok := t.Columns[c]; !ok {
				add(cp, "column %q is not declared in table.columns", c)
				continue
			}
			if _, err := expr.Compile(cols[c]); err != nil {
				line, col, msg := exprError(err)
				is = append(is, issue{Issue{cp, c + ": " + msg}, line, col})
			}
		}
	}
	if p.BatchSize < 1 || p.BatchSize > 10000 {
		add("batch_size", "batch_size must be between 1 and 10000")
	}
	if p.OnError != "stop" && p.OnError != "skip" {
		add("on_error", "on_error must be stop or skip, got %q", p.OnError)
	}
	return is
}

func (c *Config) validateProjections() []issue {
	var is []issue
	tables := map[string]string{} // database + table -> projection
	for _, name := range sortedNames(c.Projections) {
		path := "projections." + name
		if !ValidIdent(name) {
			is = append(is, issue{Issue: Issue{path, fmt.Sprintf("invalid projection name %q: use lower-case letters, digits and '_'", name)}})
		} else if strings.HasPrefix(name, "junction_") {
			is = append(is, issue{Issue: Issue{path, fmt.Sprintf("projection names starting with junction_ are Junction's own (junction_runs is the workflows' runs view): rename %q", name)}})
		}
		p := c.Projections[name]
		if p == nil {
			is = append(is, issue{Issue: Issue{path, fmt.Sprintf("projection %q is empty: it needs a table and handlers", name)}})
			continue
		}
		p.Normalize(name)
		for _, x := range p.check() {
			x.Field = path + "." + x.Field
			is = append(is, x)
		}
		k := p.Database + "\x00" + p.Table.Name
		if other, ok := tables[k]; ok {
			is = append(is, issue{Issue: Issue{path + ".table.name", fmt.Sprintf("table %q is already the view of projection %s", p.Table.Name, other)}})
		}
		tables[k] = name
	}
	return is
}

func sortedNames[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
