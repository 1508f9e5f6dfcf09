package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// AggregateFuncs are the functions a window aggregate may use: count
// alone, the others of a CEL expression over row.
var AggregateFuncs = []string{"count", "sum", "min", "max", "avg", "first", "last"}

// MaxWindowsPerRecord bounds the sliding windows one record falls in
// (size / slide), so that one record cannot make millions of windows.
const MaxWindowsPerRecord = 1000

// WindowFields are the fields every window record has; aggregates may
// not use these names.
var WindowFields = []string{"key", "window_start", "window_end"}

// ParseAggregate splits a window aggregate into its function and the
// source of its expression: "count" (or "count()") has none, the others
// are written fn(expr), as "sum(row.amount)".
func ParseAggregate(s string) (fn, arg string, err error) {
	s = strings.TrimSpace(s)
	if s == "count" || strings.ReplaceAll(s, " ", "") == "count()" {
		return "count", "", nil
	}
	i := strings.IndexByte(s, '(')
	if i < 0 || !strings.HasSuffix(s, ")") {
		return "", "", fmt.Errorf("aggregate %q: use count, or sum, min, max, avg, first or last of a CEL expression over row, as \"sum(row.amount)\"", s)
	}
	fn, arg = strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:len(s)-1])
	switch {
	case fn == "count":
		return "", "", fmt.Errorf("aggregate %q: count takes no expression", s)
	case !containsStr(AggregateFuncs, fn):
		return "", "", fmt.Errorf("aggregate %q: unknown function %q: use %s", s, fn, strings.Join(AggregateFuncs, ", "))
	case arg == "":
		return "", "", fmt.Errorf("aggregate %q: %s needs an expression over row, as \"%s(row.amount)\"", s, fn, fn)
	}
	return fn, arg, nil
}

func init() {
	processorChecks["window"] = checkWindow
	processorChecks["dedupe"] = checkDedupe
	processorChecks["enrich"] = checkEnrich
	processorChecks["validate"] = checkValidate
	processorChecks["switch"] = checkSwitch
	processorChecks["rate_limit"] = checkRateLimit
}

func issuef(field, format string, args ...any) issue {
	return issue{Issue: Issue{field, fmt.Sprintf(format, args...)}}
}

func checkWindow(p *PipelineProcess, c exprCheck, path string) []issue {
	w := p.Window
	var is []issue
	c.cel(path+".key", w.Key, false)
	if strings.TrimSpace(w.Time) == "" {
		is = append(is, issuef(path+".time", "a window needs time: CEL over row yielding the record's event time (a timestamp or RFC 3339 text)"))
	} else {
		c.cel(path+".time", w.Time, false)
	}
	size, slide, gap := w.Size.D(), w.Slide.D(), w.Gap.D()
	switch {
	case size < 0 || slide < 0 || gap < 0:
		is = append(is, issuef(path, "window size, slide and gap must not be negative"))
	case gap > 0 && (size > 0 || slide > 0):
		is = append(is, issuef(path+".gap", "a window is tumbling (size), sliding (size and slide) or session (gap), not both: remove gap or size and slide"))
	case gap == 0 && size == 0:
		is = append(is, issuef(path, "a window needs size (tumbling), size and slide (sliding) or gap (session)"))
	case slide > 0 && size == 0:
		is = append(is, issuef(path+".slide", "a sliding window needs size as well as slide"))
	case slide > size:
		is = append(is, issuef(path+".slide", "slide (%s) must not exceed size (%s)", slide, size))
	case slide > 0 && (size+slide-1)/slide > MaxWindowsPerRecord:
		is = append(is, issuef(path+".slide", "size / slide puts each record in %d windows; at most %d", (size+slide-1)/slide, MaxWindowsPerRecord))
	}
	if w.AllowedLateness < 0 {
		is = append(is, issuef(path+".allowed_lateness", "allowed_lateness must not be negative"))
	}
	for _, f := range sortedNames(w.Aggregates) {
		fp := path + ".aggregates." + f
		if f == "" || containsStr(WindowFields, f) {
			is = append(is, issuef(fp, "aggregate field %q: every window record has %s; choose another name", f, strings.Join(WindowFields, ", ")))
			continue
		}
		fn, arg, err := ParseAggregate(w.Aggregates[f])
		if err != nil {
			is = append(is, issuef(fp, "%v", err))
			continue
		}
		if fn != "count" {
			c.cel(fp, arg, false)
		}
	}
	return is
}

func checkDedupe(p *PipelineProcess, c exprCheck, path string) []issue {
	d := p.Dedupe
	var is []issue
	if strings.TrimSpace(d.Key) == "" {
		is = append(is, issuef(path+".key", "dedupe needs key: CEL over row yielding what makes a record a duplicate"))
	} else {
		c.cel(path+".key", d.Key, false)
	}
	if d.Window <= 0 {
		is = append(is, issuef(path+".window", "dedupe needs a positive window: how long a key is remembered"))
	}
	return is
}

func checkEnrich(p *PipelineProcess, c exprCheck, path string) []issue {
	e := p.Enrich
	var is []issue
	switch {
	case e.Service == "" && e.URL == "":
		is = append(is, issuef(path, "enrich needs service (called through the mesh) or url"))
	case e.Service != "" && e.URL != "":
		is = append(is, issuef(path, "enrich calls a service or a url, not both"))
	case strings.ContainsAny(e.Service, "/:?#@ "):
		is = append(is, issuef(path+".service", "invalid service name %q", e.Service))
	case e.URL != "" && !strings.HasPrefix(e.URL, "http://") && !strings.HasPrefix(e.URL, "https://"):
		is = append(is, issuef(path+".url", "url must be an absolute http(s) URL, got %q", e.URL))
	}
	c.template(path+".path", e.Path)
	if e.Into != "" && !ValidIdent(e.Into) {
		is = append(is, issuef(path+".into", "invalid field name %q: use lower-case letters, digits and '_'", e.Into))
	}
	return is
}

func checkValidate(p *PipelineProcess, _ exprCheck, path string) []issue {
	if _, ok := p.Validate.(map[string]any); !ok {
		if _, ok := p.Validate.(bool); !ok {
			return []issue{issuef(path, "validate is a JSON Schema: a mapping such as {type: object, required: [id]}")}
		}
	}
	if err := compileSchema(p.Validate); err != nil {
		lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
		reason := lines[len(lines)-1]
		for _, l := range lines[1:] {
			if !strings.HasSuffix(l, "failed") {
				reason = l
				break
			}
		}
		return []issue{issuef(path, "validate is not a valid JSON Schema: %s", strings.TrimLeft(reason, " -"))}
	}
	return nil
}

func checkSwitch(p *PipelineProcess, c exprCheck, path string) []issue {
	var is []issue
	if len(p.Switch) == 0 {
		return []issue{issuef(path, "a switch needs cases: each a when (CEL over row) and an output")}
	}
	for i, r := range p.Switch {
		rp := fmt.Sprintf("%s[%d]", path, i)
		if r == nil {
			is = append(is, issuef(rp, "empty case: it needs when and output"))
			continue
		}
		if strings.TrimSpace(r.When) == "" {
			is = append(is, issuef(rp+".when", "a case needs when: CEL over row that selects its records"))
		} else {
			c.cel(rp+".when", r.When, true)
		}
		if r.Output == nil {
			is = append(is, issuef(rp+".output", "a case needs an output"))
			continue
		}
		is = append(is, checkCaseOutput(r.Output, c, rp+".output")...)
	}
	return is
}

// checkCaseOutput checks a switch case's output: its kind, and what the
// common checks of a pipeline's output would find most often.
func checkCaseOutput(o *PipelineOutput, c exprCheck, path string) []issue {
	switch k := o.Kind(); {
	case k == "":
		return []issue{issuef(path, "an output is one of sql, jsonl, csv, stdout, topic, http, kafka, rabbitmq, mqtt and redis")}
	case strings.Contains(k, " and "):
		return []issue{issuef(path, "an output has one kind, this one has %s", k)}
	case k == "sql":
		if !ValidIdent(o.SQL.Table) {
			return []issue{issuef(path+".sql.table", "invalid table name %q: use lower-case letters, digits and '_'", o.SQL.Table)}
		}
	case k == "jsonl" || k == "csv":
		f := o.JSONL
		if k == "csv" {
			f = o.CSV
		}
		if f.Path == "" {
			return []issue{issuef(path+"."+k+".path", "a file output needs a path")}
		}
		if _, err := filepath.Match(f.Path, ""); err != nil {
			return []issue{issuef(path+"."+k+".path", "invalid path %q: %v", f.Path, err)}
		}
	case k == "topic":
		if !ValidTopicName(o.Topic.Topic) {
			return []issue{issuef(path+".topic.topic", "invalid topic %q", o.Topic.Topic)}
		}
		c.cel(path+".topic.key", o.Topic.Key, false)
	default:
		if f := outputChecks[k]; f != nil {
			return f(o, c, path+"."+k)
		}
	}
	return nil
}

func checkRateLimit(p *PipelineProcess, _ exprCheck, path string) []issue {
	if p.RateLimit < 0 {
		return []issue{issuef(path, "rate_limit is records per second and must be positive, got %v", p.RateLimit)}
	}
	return nil
}
