package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Checks of the SQL, HTTP and Junction connectors of pipelines.

var (
	sqlCursorRe = regexp.MustCompile(`(^|[^:A-Za-z0-9_]):cursor\b`)
	sqlOrderRe  = regexp.MustCompile(`(?i)\border\s+by\b`)
)

func init() {
	inputChecks["sql"] = checkSQLInput
	inputChecks["http_poll"] = checkHTTPPollInput
	inputChecks["topic"] = checkTopicInput
	inputChecks["events"] = checkEventsInput
	outputChecks["http"] = checkHTTPOut
}

func connIssue(field, format string, args ...any) issue {
	return issue{Issue: Issue{field, fmt.Sprintf(format, args...)}}
}

func checkSQLInput(in *PipelineInput, _ exprCheck, path string) []issue {
	s := in.SQL
	var is []issue
	if strings.TrimSpace(s.Query) == "" {
		is = append(is, connIssue(path+".query", "an sql input needs a query"))
	}
	if s.Database != "" && !validSQLDSN(s.Database) {
		is = append(is, connIssue(path+".database", "database is postgres://..., mysql://user:pass@tcp(host:port)/db or sqlite:PATH"))
	}
	uses := sqlCursorRe.MatchString(s.Query)
	switch {
	case s.Cursor == "" && uses:
		is = append(is, connIssue(path+".cursor", "the query uses :cursor: name the cursor column"))
	case s.Cursor != "" && !ValidIdent(s.Cursor):
		is = append(is, connIssue(path+".cursor", "invalid column name %q", s.Cursor))
	case s.Cursor != "" && !sqlOrderRe.MatchString(s.Query):
		is = append(is, connIssue(path+".query", "with a cursor the query must ORDER BY %s", s.Cursor))
	case s.Cursor != "" && !uses:
		is = append(is, connIssue(path+".query", "with a cursor the query must use :cursor (as WHERE (:cursor IS NULL OR %s > :cursor)), or each run reads every row", s.Cursor))
	}
	return is
}

func validSQLDSN(s string) bool {
	for _, p := range []string{"postgres://", "postgresql://", "mysql://", "mariadb://", "sqlite:"} {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// validHTTPURL accepts absolute http and https URLs.
func validHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func checkHTTPPollInput(in *PipelineInput, c exprCheck, path string) []issue {
	h := in.HTTPPoll
	var is []issue
	if !validHTTPURL(h.URL) {
		is = append(is, connIssue(path+".url", "url must be an http or https URL, not %q", h.URL))
	}
	if h.Interval < 0 {
		is = append(is, connIssue(path+".interval", "interval must not be negative"))
	}
	c.cel(path+".records", h.Records, false)
	c.cel(path+".next", h.Next, false)
	return is
}

func checkTopicInput(in *PipelineInput, c exprCheck, path string) []issue {
	t := in.Topic
	var is []issue
	if !ValidTopicName(t.Topic) {
		is = append(is, connIssue(path+".topic", "invalid topic %q", t.Topic))
	}
	if _, _, _, err := ParseStart(t.Start); err != nil {
		is = append(is, connIssue(path+".start", "%v", err))
	}
	c.cel(path+".filter", t.Filter, true)
	return is
}

func checkEventsInput(in *PipelineInput, _ exprCheck, path string) []issue {
	var is []issue
	for i, c := range in.Events.Categories {
		if c == "" || strings.ContainsAny(c, " \t") {
			is = append(is, connIssue(fmt.Sprintf("%s.categories[%d]", path, i), "invalid category %q", c))
		}
	}
	for i, t := range in.Events.Types {
		if t == "" {
			is = append(is, connIssue(fmt.Sprintf("%s.types[%d]", path, i), "empty event type"))
		}
	}
	return is
}

func checkHTTPOut(o *PipelineOutput, _ exprCheck, path string) []issue {
	h := o.HTTP
	var is []issue
	if !validHTTPURL(h.URL) {
		is = append(is, connIssue(path+".url", "url must be an http or https URL, not %q", h.URL))
	}
	if h.Method != "" && !httpMethods[strings.ToUpper(h.Method)] {
		is = append(is, connIssue(path+".method", "unknown HTTP method %q", h.Method))
	}
	return is
}
