package gateway

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		tmpl, path string
		ok         bool
		params     string
	}{
		{"/orders", "/orders", true, ""},
		{"/orders", "/orders/", false, ""},
		{"/orders/{id}", "/orders/42", true, "id=42"},
		{"/orders/{id}", "/orders/", false, ""},
		{"/orders/{id}", "/orders/42/items", false, ""},
		{"/orders/{id}/items/{item}", "/orders/4%2F2/items/x%20y", true, "id=4/2 item=x y"},
		{"/files/{rest...}", "/files/a/b/c", true, "rest=a/b/c"},
		{"/files/{rest...}", "/files/", true, "rest="},
		{"/files/{rest...}", "/files", true, "rest="},
		{"/files/{rest...}", "/file", false, ""},
		{"/{rest...}", "/", true, "rest="},
		{"/", "/", true, ""},
		{"/a/{b}", "/a/%zz", false, ""},
	} {
		ps, ok := compilePattern(tc.tmpl).match(tc.path)
		var got []string
		for _, k := range []string{"id", "item", "rest"} {
			if v, has := ps[k]; has {
				got = append(got, k+"="+v)
			}
		}
		if ok != tc.ok || (ok && strings.Join(got, " ") != tc.params) {
			t.Errorf("%s ~ %s = %v %v, want %v %q", tc.tmpl, tc.path, ok, got, tc.ok, tc.params)
		}
	}
}

// The most specific route wins, whatever the order of the config.
func TestSpecificity(t *testing.T) {
	routes := []*config.GatewayRoute{
		{Name: "catch-all", Path: "/{rest...}"},
		{Name: "any-order", Path: "/orders/{id}"},
		{Name: "get-order", Path: "/orders/{id}", Methods: []string{"GET"}},
		{Name: "recent", Path: "/orders/recent"},
		{Name: "beta", Path: "/orders/{id}", Methods: []string{"GET"}, Headers: map[string]string{"X-Beta": "1"}},
		{Name: "eu", Path: "/orders/{id}", Methods: []string{"GET"}, Host: "*.eu.example.com"},
		{Name: "shop", Path: "/orders/{id}", Methods: []string{"GET"}, Host: "shop.eu.example.com"},
		{Name: "vip", Path: "/orders/{id}", When: `request.query.vip == "1"`},
		{Name: "files", Path: "/orders/{id}/files/{rest...}"},
		{Name: "orders-rest", Path: "/orders/{rest...}"},
		{Name: "orders", Path: "/orders"},
	}
	var compiled []*route
	for i, rc := range routes {
		rt := &route{cfg: rc, pattern: compilePattern(rc.Path), methods: rc.Methods, order: i}
		if rc.When != "" {
			rt.when, _ = expr.CompileBool(rc.When)
		}
		compiled = append(compiled, rt)
	}
	// Insertion sort with moreSpecific, then pick the first match, as the
	// table does.
	for i := range compiled {
		for j := i; j > 0 && moreSpecific(compiled[j], compiled[j-1]); j-- {
			compiled[j], compiled[j-1] = compiled[j-1], compiled[j]
		}
	}
	for _, tc := range []struct {
		method, url string
		hdr         map[string]string
		want        string
	}{
		{"GET", "http://x/orders/recent", nil, "recent"},
		{"GET", "http://x/orders/7", nil, "get-order"},
		{"POST", "http://x/orders/7", nil, "any-order"},
		{"POST", "http://x/orders/7?vip=1", nil, "vip"},
		{"GET", "http://x/orders/7", map[string]string{"X-Beta": "1"}, "beta"},
		{"GET", "http://a.eu.example.com/orders/7", nil, "eu"},
		{"GET", "http://shop.eu.example.com:8080/orders/7", nil, "shop"},
		{"GET", "http://x/orders/7/files/a/b", nil, "files"},
		{"GET", "http://x/other", nil, "catch-all"},
		{"GET", "http://x/orders", nil, "orders"},
		{"GET", "http://x/orders/", nil, "orders-rest"},
		{"GET", "http://x/orders/7/x", nil, "orders-rest"},
	} {
		r := httptest.NewRequest(tc.method, tc.url, nil)
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		got := ""
		for _, rt := range compiled {
			if _, ok := rt.matches(r); ok {
				got = rt.cfg.Name
				break
			}
		}
		if got != tc.want {
			t.Errorf("%s %s %v -> %s, want %s", tc.method, tc.url, tc.hdr, got, tc.want)
		}
	}
}

func TestExpand(t *testing.T) {
	ps := map[string]string{"id": "a b/c", "rest": "x y/z"}
	if got := expand("/v2/orders/{id}/f/{rest...}", ps, true); got != "/v2/orders/a%20b%2Fc/f/x%20y/z" {
		t.Errorf("expand = %s", got)
	}
}

// FuzzMatch matches arbitrary paths against arbitrary templates that
// config accepts: no panic, parameters only when matched, and a matched
// literal template gives back its own path.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"/orders/{id}", "/orders/42"}, {"/files/{rest...}", "/files/a/b"}, {"/", "/"},
		{"/a/{b}/c", "/a/%2F/c"}, {"/{x}", "//"}, {"/a", "/a%"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, tmpl, path string) {
		if _, err := config.PathParams(tmpl); err != nil {
			return
		}
		p := compilePattern(tmpl)
		ps, ok := p.match(path)
		if !ok && ps != nil {
			t.Fatalf("%q ~ %q: no match but params %v", tmpl, path, ps)
		}
		if !strings.Contains(tmpl, "{") {
			if _, ok := p.match(tmpl); !ok && !strings.Contains(tmpl, "%") {
				t.Fatalf("literal template %q does not match itself", tmpl)
			}
		}
	})
}
