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
	"unicode/utf8"

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
	if bytes.HasPrefix(data, []byte{0xfe, 0xff}) || bytes.HasPrefix(data, []byte{0xff, 0xfe}) {
		// yaml.v3 would decode UTF-16, but every position Junction reports
		// counts UTF-8 lines and characters.
		return nil, Errors{{File: file, Pos: Pos{1, 1}, Msg: "the file is UTF-16 encoded; save it as UTF-8"}}
	}
	c := Default()
	d := &decoder{file: file, pos: map[string]Pos{}, lookup: lookup, scalars: map[string]*yaml.Node{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	switch err := dec.Decode(&root); {
	case errors.Is(err, io.EOF):
		// An empty file is the defaults.
	case err != nil:
		return nil, Errors{syntaxError(file, data, err)}
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return nil, Errors{syntaxError(file, data, err)}
		default:
			return nil, Errors{{File: file, Pos: Pos{extra.Line, extra.Column}, Msg: "a config file holds one YAML document; found a second"}}
		}
		d.decode(&root, reflect.ValueOf(c).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, sortErrors(d.errs)
	}
	for _, is := range c.validate() {
		pos := d.locate(is.Field)
		if p, ok := exprPos(data, d.scalars[is.Field], is.line, is.col); ok {
			pos = p
		}
		d.errs = append(d.errs, Error{File: file, Pos: pos, Path: is.Field, Msg: is.Msg})
	}
	if len(d.errs) > 0 {
		return nil, sortErrors(d.errs)
	}
	return c, nil
}

// sortErrors puts errors in file order. Map entries are validated in
// random order and an alias repeats its anchor's positions, so ties are
// broken by path and message to keep the output the same on every run.
func sortErrors(es Errors) Errors {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line < b.Pos.Line
		}
		if a.Pos.Col != b.Pos.Col {
			return a.Pos.Col < b.Pos.Col
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Msg < b.Msg
	})
	return es
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

// exprPos places a position inside an expression (1-based line and column,
// in characters) in the file, where the expression's text stands there
// verbatim: on the value's line for a plain or quoted scalar, on its own
// line in a literal block. Escapes, folding and interpolation move the
// text, and then the caller keeps the value's own position.
func exprPos(data []byte, n *yaml.Node, line, col int) (Pos, bool) {
	if n == nil || line < 1 || col < 1 {
		return Pos{}, false
	}
	src := strings.Split(n.Value, "\n")
	if line > len(src) {
		return Pos{}, false
	}
	want := []rune(src[line-1])
	if col-1 > len(want) {
		return Pos{}, false
	}
	lines := yamlLines(data)
	text := func(l int) []rune {
		if l < 1 || l > len(lines) {
			return nil
		}
		return []rune(string(data[lines[l-1].start:lines[l-1].end]))
	}
	var fl, start int // file line, and rune offset of the expression line in it
	switch n.Style &^ yaml.TaggedStyle {
	case 0, yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if line != 1 {
			return Pos{}, false
		}
		fl, start = n.Line, n.Column-1
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			start++
		}
		want = want[:col-1]
	case yaml.LiteralStyle:
		fl = n.Line + line
		start = len(text(fl)) - len(want)
		if start < 0 || strings.TrimLeft(string(text(fl)[:start]), " ") != "" {
			return Pos{}, false
		}
	default:
		return Pos{}, false
	}
	t := text(fl)
	if start < 0 || start+len(want) > len(t) || string(t[start:start+len(want)]) != string(want) {
		return Pos{}, false
	}
	return Pos{fl, start + col}, true
}

// syntaxError turns a yaml.v3 parse error into an Error. yaml.v3 gives a
// line that is often not the error's: for parser errors it is the zero-based
// line where the enclosing block started, for some errors there is none, and
// there is never a column. So the message keeps only yaml.v3's text and the
// position is found again by syntaxPos.
func syntaxError(file string, data []byte, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	pos, ok := syntaxPos(data)
	if !ok {
		return Error{File: file, Msg: "YAML syntax: " + msg}
	}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok && strings.Trim(n, "0123456789") == "" {
			msg = after
		}
	}
	l := yamlLines(data)[pos.Line-1]
	if r := []rune(string(data[l.start:l.end])); pos.Col <= len(r) && r[pos.Col-1] == '\t' {
		msg += " (YAML indents with spaces, not tabs)"
	}
	return Error{File: file, Pos: pos, Msg: "YAML syntax: " + msg}
}

// maxSyntaxScan bounds the input syntaxPos takes on; a larger file's syntax
// error keeps yaml.v3's own, rougher, line.
const maxSyntaxScan = 256 << 10

// syntaxPos finds where data stops being valid YAML: the end of the longest
// prefix, cut at a line and then at a character, that still parses, when
// every longer one fails. Taking the last such point rather than the first
// keeps a multi-line flow list or quoted string, which fails when cut
// inside it, from being blamed for an error further down.
func syntaxPos(data []byte) (Pos, bool) {
	if len(data) > maxSyntaxScan {
		return Pos{}, false
	}
	read, ok := parseRead(data)
	if ok {
		return Pos{}, false
	}
	lines := yamlLines(data)
	// Every prefix holding the bytes yaml.v3 had read when it failed fails
	// the same way, which bounds the search to just past the error.
	hi := 0
	for hi+1 < len(lines) && lines[hi+1].start <= read {
		hi++
	}
	k := lastOK(hi, func(k int) bool { return parses(data[:lines[k].start]) })
	l := lines[k]
	// Cut only between characters: cuts are offsets into the line.
	cuts := []int{l.start}
	for c := l.start + 1; c <= l.end; c++ {
		if c == l.end || utf8.RuneStart(data[c]) {
			cuts = append(cuts, c)
		}
	}
	c := lastOK(len(cuts)-1, func(i int) bool { return parses(data[:cuts[i]]) })
	col := utf8.RuneCount(data[l.start:cuts[c]]) + 1
	if k == 0 && bytes.HasPrefix(data, []byte(bom)) && c > 0 {
		col-- // yaml.v3 drops the byte order mark before counting columns
	}
	return Pos{k + 1, col}, true
}

const bom = "\ufeff"

// span is one line of a file, without its line break.
type span struct{ start, end int }

// yamlLines splits data into lines where YAML breaks them, which is where
// yaml.v3 counts them: at CR LF, CR, LF, NEL, LS and PS.
func yamlLines(data []byte) []span {
	var lines []span
	start := 0
	for i := 0; i < len(data); {
		n := 0
		switch {
		case data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n':
			n = 2
		case data[i] == '\r' || data[i] == '\n':
			n = 1
		case bytes.HasPrefix(data[i:], []byte("\u0085")):
			n = 2
		case bytes.HasPrefix(data[i:], []byte("\u2028")), bytes.HasPrefix(data[i:], []byte("\u2029")):
			n = 3
		}
		if n == 0 {
			i++
			continue
		}
		lines = append(lines, span{start, i})
		i += n
		start = i
	}
	return append(lines, span{start, len(data)})
}

// lastOK returns the largest i in [0, hi] for which ok(i) holds, given
// ok(0). It walks down from hi, which finds the last point even where ok
// changes back and forth, as it does across a multi-line flow collection;
// after linearSteps failures it bisects the rest instead, so that an error
// far below its cause (an unclosed quote) costs a few parses, not one per
// line.
func lastOK(hi int, ok func(int) bool) int {
	const linearSteps = 32
	for i := hi; i > 0; i-- {
		if ok(i) {
			return i
		}
		if hi-i+1 == linearSteps {
			lo, bad := 0, i
			for bad-lo > 1 {
				mid := lo + (bad-lo)/2
				if ok(mid) {
					lo = mid
				} else {
					bad = mid
				}
			}
			return lo
		}
	}
	return 0
}

// parses reports whether data's first two YAML documents parse, as Parse
// reads no further than that.
func parses(data []byte) bool {
	if len(data) == 0 {
		return true
	}
	_, ok := parseRead(data)
	return ok
}

// parseRead parses like parses and also returns how many bytes of data the
// YAML reader had consumed when it stopped.
func parseRead(data []byte) (read int, ok bool) {
	r := &countingReader{r: bytes.NewReader(data)}
	dec := yaml.NewDecoder(r)
	for range 2 {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			return r.n, errors.Is(err, io.EOF)
		}
	}
	return r.n, true
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
