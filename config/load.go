package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Locate picks the config file: the flag, then $JUNCTION_CONFIG, then
// ./junction.yaml if it exists. An empty result means built-in defaults.
func Locate(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("JUNCTION_CONFIG"); env != "" {
		return env
	}
	if _, err := os.Stat("junction.yaml"); err == nil {
		return "junction.yaml"
	}
	return ""
}

// Load reads and validates the file at path, or returns the defaults when
// path is empty. Errors are Errors (every problem, with file:line:col).
func Load(path string) (*Config, error) {
	if path == "" {
		c := Default()
		if is := c.validate(); len(is) > 0 {
			return nil, fmt.Errorf("built-in defaults are invalid: %v", is)
		}
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes YAML bytes named file (for messages) with lookup for
// ${ENV} interpolation, and validates the result.
func Parse(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	c := Default()
	d := &decoder{file: file, pos: map[string]Pos{}, lookup: lookup}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	switch err := dec.Decode(&root); {
	case errors.Is(err, io.EOF):
		// An empty file is the defaults.
	case err != nil:
		return nil, Errors{syntaxError(file, err)}
	default:
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return nil, Errors{{File: file, Pos: Pos{extra.Line, extra.Column}, Msg: "a config file holds one YAML document; found a second"}}
		}
		d.decode(&root, reflect.ValueOf(c).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	for _, is := range c.validate() {
		d.errs = append(d.errs, Error{File: file, Pos: d.locate(is.Field), Path: is.Field, Msg: is.Msg})
	}
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool {
			a, b := d.errs[i].Pos, d.errs[j].Pos
			return a.Line < b.Line || (a.Line == b.Line && a.Col < b.Col)
		})
		return nil, d.errs
	}
	return c, nil
}

// locate finds the position of path, or of its nearest ancestor present
// in the file (a missing required key is reported where its parent is).
func (d *decoder) locate(path string) Pos {
	for p := path; p != ""; {
		if pos, ok := d.pos[p]; ok {
			return pos
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return Pos{}
}

// syntaxError turns a yaml.v3 parse error ("yaml: line 3: ...") into an
// Error with a position; yaml.v3 reports lines but not columns for these.
func syntaxError(file string, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		_, rest, _ := strings.Cut(msg, ":")
		return Error{File: file, Pos: Pos{line, 1}, Msg: "YAML syntax: " + strings.TrimSpace(rest)}
	}
	return Error{File: file, Msg: "YAML syntax: " + msg}
}
