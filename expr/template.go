package expr

import (
	"errors"
	"fmt"
	"strings"
)

// Template is a string in which each {{ expr }} is replaced by the value
// of the CEL expression expr (DESIGN section 6). A template that is
// exactly one {{ expr }} yields the expression's value with its type (a
// list, a map, a number); any other yields text. An expression ends at
// the first }}: write a map literal's closing braces apart (} }).
type Template struct {
	src   string
	parts []part // literal text and expressions, in order
	whole bool   // the template is one expression and nothing else
}

type part struct {
	text string
	prg  *Program // nil for literal text
}

// ErrTemplate is wrapped by every template syntax error.
var ErrTemplate = errors.New("invalid template")

// CompileTemplate parses s and compiles its expressions. Text without
// {{ is a template that yields itself.
func CompileTemplate(s string) (*Template, error) {
	t := &Template{src: s}
	rest := s
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if strings.Contains(rest, "}}") {
				return nil, fmt.Errorf("%w: %q has }} without {{", ErrTemplate, s)
			}
			if rest != "" {
				t.parts = append(t.parts, part{text: rest})
			}
			break
		}
		if strings.Contains(rest[:i], "}}") {
			return nil, fmt.Errorf("%w: %q has }} without {{", ErrTemplate, s)
		}
		j := strings.Index(rest[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("%w: %q has {{ without }}", ErrTemplate, s)
		}
		if i > 0 {
			t.parts = append(t.parts, part{text: rest[:i]})
		}
		src := strings.TrimSpace(rest[i+2 : i+2+j])
		if src == "" {
			return nil, fmt.Errorf("%w: %q has an empty {{ }}", ErrTemplate, s)
		}
		prg, err := Compile(src)
		if err != nil {
			return nil, fmt.Errorf("in {{ %s }}: %w", src, err)
		}
		t.parts = append(t.parts, part{prg: prg})
		rest = rest[i+2+j+2:]
	}
	t.whole = len(t.parts) == 1 && t.parts[0].prg != nil
	return t, nil
}

// String returns the template's source.
func (t *Template) String() string { return t.src }

// Programs returns the template's compiled expressions, for checks such
// as which variables they use.
func (t *Template) Programs() []*Program {
	var out []*Program
	for _, p := range t.parts {
		if p.prg != nil {
			out = append(out, p.prg)
		}
	}
	return out
}

// Eval renders the template with vars. A template that is one expression
// returns its value as plain Go (see Program.Eval); otherwise the result
// is a string, with each value in its text form (strings as they are).
func (t *Template) Eval(vars map[string]any) (any, error) {
	if t.whole {
		return t.parts[0].prg.Eval(vars)
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.prg == nil {
			b.WriteString(p.text)
			continue
		}
		s, err := p.prg.EvalString(vars)
		if err != nil {
			return nil, err
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

// Sources returns the source text of the template's expressions.
func (t *Template) Sources() []string {
	var out []string
	for _, p := range t.parts {
		if p.prg != nil {
			out = append(out, p.prg.String())
		}
	}
	return out
}
