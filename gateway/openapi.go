package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/problem"
)

// spec is an OpenAPI document a route imports: its operations validate
// the route's requests, and appear in the gateway's own document.
type spec struct {
	file string
	doc  map[string]any
	ops  []*operation
}

// operation is one operation of a spec, with its compiled schemas.
type operation struct {
	method  string
	path    string // the spec's template
	pattern pattern
	raw     map[string]any
	body    *jsonschema.Schema // nil: no JSON body schema
	bodyReq bool
	params  []param
}

type param struct {
	name, in string
	required bool
	typ      string // the schema's type, to read query and path text
	schema   *jsonschema.Schema
}

// loadSpec reads an OpenAPI 3.x file (YAML or JSON) and compiles the
// schemas of its operations' JSON bodies and parameters.
func loadSpec(file string) (*spec, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var y any
	if err := yaml.Unmarshal(b, &y); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	// Through JSON, so that numbers and keys are what JSON Schema expects.
	jb, err := json.Marshal(y)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(jb))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	root, _ := doc.(map[string]any)
	paths, _ := root["paths"].(map[string]any)
	if paths == nil {
		return nil, fmt.Errorf("%s: not an OpenAPI document (no paths)", file)
	}
	const base = "urn:junction:openapi"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(base, doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	compile := func(ptr ...string) (*jsonschema.Schema, error) {
		esc := make([]string, len(ptr))
		for i, p := range ptr {
			esc[i] = url.PathEscape(strings.NewReplacer("~", "~0", "/", "~1").Replace(p))
		}
		return c.Compile(base + "#/" + strings.Join(esc, "/"))
	}
	s := &spec{file: file, doc: root}
	for _, p := range sortedKeys(paths) {
		item, _ := paths[p].(map[string]any)
		for _, m := range []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"} {
			raw, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			op := &operation{method: strings.ToUpper(m), path: p, pattern: compilePattern(p), raw: raw}
			if rb, ok := raw["requestBody"].(map[string]any); ok {
				op.bodyReq, _ = rb["required"].(bool)
				if content, ok := rb["content"].(map[string]any); ok {
					if _, ok := content["application/json"].(map[string]any)["schema"]; ok {
						if op.body, err = compile("paths", p, m, "requestBody", "content", "application/json", "schema"); err != nil {
							return nil, fmt.Errorf("%s: %s %s: request body schema: %w", file, op.method, p, err)
						}
					}
				}
			}
			for _, where := range []struct {
				list []any
				ptr  []string
			}{{asList(item["parameters"]), []string{"paths", p, "parameters"}}, {asList(raw["parameters"]), []string{"paths", p, m, "parameters"}}} {
				for i, pr := range where.list {
					pm, _ := pr.(map[string]any)
					name, _ := pm["name"].(string)
					in, _ := pm["in"].(string)
					if name == "" || (in != "query" && in != "path") {
						continue // headers and cookies are not checked
					}
					q := param{name: name, in: in}
					q.required, _ = pm["required"].(bool)
					if sch, ok := pm["schema"].(map[string]any); ok {
						q.typ, _ = sch["type"].(string)
						ptr := append(append([]string(nil), where.ptr...), strconv.Itoa(i), "schema")
						if q.schema, err = compile(ptr...); err != nil {
							return nil, fmt.Errorf("%s: %s %s: parameter %s: %w", file, op.method, p, name, err)
						}
					}
					op.params = append(op.params, q)
				}
			}
			s.ops = append(s.ops, op)
		}
	}
	return s, nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

// printer renders validation messages in English.
var printer = message.NewPrinter(language.English)

func readCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// find returns the operation of the spec that r is a request for.
func (s *spec) find(r *http.Request) (*operation, map[string]string) {
	for _, op := range s.ops {
		if op.method != r.Method {
			continue
		}
		if ps, ok := op.pattern.match(r.URL.EscapedPath()); ok {
			return op, ps
		}
	}
	return nil, nil
}

// validate refuses (422 validation_failed, naming every problem) a request
// whose parameters or JSON body do not match its operation in the spec.
// Requests for operations the spec does not have pass unchecked: the
// route's methods and path decide what reaches it.
func (s *spec) validate(limit int64) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			op, ps := s.find(r)
			if op == nil {
				next.ServeHTTP(w, r)
				return
			}
			var errs []problem.FieldError
			q := r.URL.Query()
			for _, p := range op.params {
				v, ok := ps[p.name], p.in == "path"
				if p.in == "query" {
					v, ok = q.Get(p.name), q.Has(p.name)
				}
				if !ok {
					if p.required {
						errs = append(errs, problem.FieldError{Field: p.name, Message: "required " + p.in + " parameter is missing"})
					}
					continue
				}
				if p.schema == nil {
					continue
				}
				if err := p.schema.Validate(textValue(v, p.typ)); err != nil {
					errs = append(errs, problem.FieldError{Field: p.name, Message: leafMessage(err)})
				}
			}
			if op.body != nil {
				b, err := readBody(w, r, limit)
				if err != nil {
					problem.Write(w, r, err)
					return
				}
				r.Body, r.ContentLength = readCloser(b), int64(len(b))
				switch {
				case len(bytes.TrimSpace(b)) == 0:
					if op.bodyReq {
						errs = append(errs, problem.FieldError{Field: "body", Message: "a JSON body is required"})
					}
				default:
					inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
					if err != nil {
						errs = append(errs, problem.FieldError{Field: "body", Message: "not JSON: " + err.Error()})
						break
					}
					if err := op.body.Validate(inst); err != nil {
						errs = append(errs, fieldErrors(err)...)
					}
				}
			}
			if len(errs) > 0 {
				p := problem.New(problem.CodeValidation, "the request does not match %s %s in %s", op.method, op.path, s.file)
				p.Errors = errs
				problem.Write(w, r, p)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// textValue reads a parameter's text as its schema's type, so "42" is
// checked as the integer it stands for.
func textValue(v, typ string) any {
	switch typ {
	case "integer", "number":
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			if typ == "integer" && n == float64(int64(n)) {
				return json.Number(strconv.FormatInt(int64(n), 10))
			}
			return json.Number(v)
		}
	case "boolean":
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	}
	return v
}

// fieldErrors flattens a validation error to its leaves, each named by
// its place in the body (a JSON pointer).
func fieldErrors(err error) []problem.FieldError {
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []problem.FieldError{{Field: "body", Message: err.Error()}}
	}
	var out []problem.FieldError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, problem.FieldError{Field: "body/" + strings.Join(e.InstanceLocation, "/"), Message: e.ErrorKind.LocalizedString(printer)})
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return out
}

func leafMessage(err error) string {
	if fe := fieldErrors(err); len(fe) > 0 {
		return fe[0].Message
	}
	return err.Error()
}

// document builds the gateway's OpenAPI 3.1 document from its routes:
// one operation per route and method (all the usual methods for a route
// without methods), the operations of imported specs where they apply,
// and the security a route requires.
func document(routes []*route, specs map[*route]*spec) map[string]any {
	paths := map[string]any{}
	schemas := map[string]any{}
	schemes := map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
	for _, rt := range routes {
		c := rt.cfg
		path := strings.ReplaceAll(c.Path, "...}", "}")
		item, _ := paths[path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[path] = item
		}
		methods := rt.methods
		if len(methods) == 0 {
			methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
		}
		sp := specs[rt]
		if sp != nil {
			if comps, ok := sp.doc["components"].(map[string]any); ok {
				if ss, ok := comps["schemas"].(map[string]any); ok {
					for k, v := range ss {
						schemas[k] = v
					}
				}
			}
		}
		for _, m := range methods {
			lm := strings.ToLower(m)
			if _, taken := item[lm]; taken {
				continue // a more specific route of the same path already has it
			}
			var op map[string]any
			if sp != nil {
				for _, o := range sp.ops {
					if o.method == m && strings.ReplaceAll(o.path, "...}", "}") == path {
						op = copyMap(o.raw)
					}
				}
			}
			if op == nil {
				op = map[string]any{"responses": responses(c)}
			}
			op["summary"] = c.Name
			op["operationId"] = operationID(m, path)
			if ps := pathParams(c.Path); len(ps) > 0 {
				if _, has := op["parameters"]; !has {
					op["parameters"] = ps
				}
			}
			if a := rt.auth; a != nil && !a.None {
				var sec []any
				if k := a.APIKey; k != nil {
					for name, scheme := range apiKeySchemes(k) {
						schemes[name] = scheme
						sec = append(sec, map[string]any{name: []any{}})
					}
				}
				if a.JWT != nil {
					sec = append(sec, map[string]any{"bearer": []any{}})
				}
				op["security"] = sec
			}
			item[lm] = op
		}
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "Junction gateway", "version": "1"},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         schemas,
			"securitySchemes": schemes,
		},
	}
	return doc
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, seg := range strings.Split(path, "/") {
		seg = strings.Trim(seg, "{}")
		if seg == "" {
			continue
		}
		b.WriteByte('_')
		for _, r := range seg {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			} else {
				b.WriteByte('_')
			}
		}
	}
	return b.String()
}

func pathParams(tmpl string) []any {
	names, _ := config.PathParams(tmpl)
	out := make([]any, len(names))
	for i, n := range names {
		out[i] = map[string]any{"name": n, "in": "path", "required": true, "schema": map[string]any{"type": "string"}}
	}
	return out
}

// responses describes what a route's backend answers.
func responses(c *config.GatewayRoute) map[string]any {
	d := func(code int) map[string]any { return map[string]any{"description": http.StatusText(code)} }
	switch c.Backend() {
	case "publish", "workflow":
		return map[string]any{"202": d(202)}
	case "static":
		return map[string]any{strconv.Itoa(c.Static.Status): d(c.Static.Status)}
	case "redirect":
		return map[string]any{strconv.Itoa(c.Redirect.Status): d(c.Redirect.Status)}
	}
	return map[string]any{"default": map[string]any{"description": "the backend's answer"}}
}

// apiKeySchemes are the OpenAPI security schemes of an API key setting,
// one per place the key is read (a scheme names one place): its header,
// and its query parameter when one is configured. Either one is enough.
func apiKeySchemes(k *config.APIKeyAuth) iter.Seq2[string, map[string]any] {
	return func(yield func(string, map[string]any) bool) {
		h := k.Header
		name := "apiKey"
		if h == "" || http.CanonicalHeaderKey(h) == "X-Api-Key" {
			h = "X-Api-Key"
		} else {
			name = "apiKey_" + h
		}
		if !yield(name, map[string]any{"type": "apiKey", "in": "header", "name": h}) {
			return
		}
		if k.Query != "" {
			yield("apiKeyQuery_"+k.Query, map[string]any{"type": "apiKey", "in": "query", "name": k.Query})
		}
	}
}
