package config

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Pos is a location in a config file, 1-based.
type Pos struct {
	Line, Col int
}

// Error is one config problem with its location. The text form is
// "file:line:col: message" so editors and CI logs can jump to it.
type Error struct {
	File string
	Pos  Pos
	Path string
	Msg  string
}

func (e Error) Error() string {
	if e.File == "" {
		return e.Msg
	}
	if e.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// Errors is every problem found in one file, in file order.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// decoder turns a yaml.Node tree into Go values strictly: unknown keys,
// duplicate keys and wrongly-typed scalars are errors that keep their
// position, and decoding goes on so that one run reports every error.
// yaml.v3's own decoder stops at the first type error and drops columns.
type decoder struct {
	file   string
	errs   Errors
	pos    map[string]Pos
	lookup func(string) (string, bool)
	// scalars keeps the node of each scalar value that interpolation left
	// alone, so that an error found later inside it (a CEL expression's
	// line and column) can be placed exactly in the file.
	scalars map[string]*yaml.Node
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, Error{File: d.file, Pos: Pos{n.Line, n.Column}, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var durationType = reflect.TypeOf(Duration(0))

// scalarForm is a struct that may also be written as one value, such as a
// service instance given as just its URL.
type scalarForm interface{ fromScalar(s string) }

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	n = resolve(n)
	d.pos[path] = Pos{n.Line, n.Column}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the default
	}
	if v.Type() == durationType {
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.errorf(n, path, "%s: invalid duration %q (use Go durations such as 500ms, 2s, 1h30m)", path, s)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		if sf, ok := v.Addr().Interface().(scalarForm); ok && n.Kind == yaml.ScalarNode {
			if s, ok := d.scalar(n, path); ok {
				sf.fromScalar(s)
			}
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Interface:
		// A free-form value (an inline JSON Schema): taken as YAML gives it,
		// with mapping keys as strings so it reads as JSON would.
		var x any
		if err := n.Decode(&x); err != nil {
			d.errorf(n, path, "%s: %v", path, err)
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "%s: expected a list, got %s", path, kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		switch s {
		case "true":
			v.SetBool(true)
		case "false":
			v.SetBool(false)
		default:
			d.errorf(n, path, "%s: expected true or false, got %q", path, s)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
		if err != nil {
			d.errorf(n, path, "%s: expected an integer, got %q", path, s)
			return
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		s, ok := d.scalar(n, path)
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.errorf(n, path, "%s: expected a number, got %q", path, s)
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(n, path, "%s: unsupported config type %s", path, v.Type())
	}
}

// scalar returns the node's text after ${ENV} interpolation.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "%s: expected a single value, got %s", path, kindName(n))
		return "", false
	}
	s, err := interpolate(n.Value, d.lookup)
	if err != nil {
		d.errorf(n, path, "%s: %v", path, err)
		return "", false
	}
	if d.scalars != nil && s == n.Value {
		d.scalars[path] = n
	}
	return s, true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "%s: expected a mapping, got %s", pathOrRoot(path), kindName(n))
		return
	}
	fields := map[string][]int{}
	yamlFields(v.Type(), nil, fields)
	seen := map[string]Pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key, ok := d.key(k, path)
		if !ok {
			continue
		}
		sub := join(path, key)
		idx, ok := fields[key]
		if !ok {
			d.errorf(k, sub, "unknown key %q in %s (known keys: %s)", key, pathOrRoot(path), knownKeys(fields))
			continue
		}
		if first, ok := seen[key]; ok {
			d.errorf(k, sub, "duplicate key %q (first at %d:%d)", key, first.Line, first.Col)
			continue
		}
		seen[key] = Pos{k.Line, k.Column}
		d.decode(val, v.FieldByIndex(idx), sub)
		if resolve(val).Kind == yaml.MappingNode {
			// A section's own problems (a missing key) are reported at its
			// name, not at whichever of its keys happens to come first.
			d.pos[sub] = Pos{k.Line, k.Column}
		}
	}
}

// yamlFields maps each YAML key of struct type t to its field's index
// path; the fields of a struct tagged `yaml:",inline"` count as t's own.
func yamlFields(t reflect.Type, prefix []int, out map[string][]int) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		idx := append(append([]int(nil), prefix...), i)
		switch {
		case name == "" && opts == "inline" && f.Type.Kind() == reflect.Struct:
			yamlFields(f.Type, idx, out)
		case name != "" && name != "-":
			out[name] = idx
		}
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "%s: expected a mapping, got %s", path, kindName(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]Pos{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key, ok := d.key(k, path)
		if !ok {
			continue
		}
		sub := join(path, key)
		if first, ok := seen[key]; ok {
			d.errorf(k, sub, "duplicate key %q (first at %d:%d)", key, first.Line, first.Col)
			continue
		}
		seen[key] = Pos{k.Line, k.Column}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, sub)
		d.pos[sub] = Pos{k.Line, k.Column}
		v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
	}
}

// key returns a mapping key's text. An alias node's Value is the anchor's
// name, not the aliased text, so aliases are followed; a list or mapping
// used as a key has no text at all and is refused.
func (d *decoder) key(k *yaml.Node, path string) (string, bool) {
	k = resolve(k)
	if k.Kind != yaml.ScalarNode {
		d.errorf(k, path, "%s: a key must be a single value, got %s", pathOrRoot(path), kindName(k))
		return "", false
	}
	return k.Value, true
}

// resolve follows an alias to the node its anchor names.
func resolve(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathOrRoot(p string) string {
	if p == "" {
		return "the top level"
	}
	return p
}

func knownKeys[V any](m map[string]V) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// interpolate replaces ${VAR} and ${VAR:-default}; $$ is a literal $.
// An unset variable without a default is an error rather than an empty
// string, because a silently empty token or URL is worse than a refusal.
// A default is interpolated in turn, so ${A:-${B:-x}} falls back twice,
// and only when it is used, so an unused default may name unset variables.
func interpolate(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := closingBrace(s, i+2)
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s)
		}
		expr := s[i+2 : end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment variable name %q in ${%s}", name, expr)
		}
		val, ok := lookup(name)
		switch {
		case ok && (val != "" || !hasDef):
			b.WriteString(val)
		case hasDef:
			v, err := interpolate(def, lookup)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		default:
			return "", fmt.Errorf("environment variable %s is not set (write ${%s:-default} to allow that)", name, name)
		}
		i = end
	}
	return b.String(), nil
}

// closingBrace returns the index of the '}' that ends a ${ whose body
// starts at i, or -1. Without counting nested ${...} in a default, the
// first '}' would end the outer reference and leak the rest as text.
func closingBrace(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch {
		case s[i] == '$' && i+1 < len(s) && s[i+1] == '$':
			i++
		case s[i] == '$' && i+1 < len(s) && s[i+1] == '{':
			depth++
			i++
		case s[i] == '}':
			if depth == 0 {
				return i
			}
			depth--
		}
	}
	return -1
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}
