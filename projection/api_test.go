package projection_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/projection"
)

func TestAPI(t *testing.T) {
	store := newStore(t)
	db, open := newDB(t, "sqlite")
	m := start(t, store, db, open, ordersConfig(t))
	r := httpserver.NewRouter()
	r.HandleAll((&projection.API{Manager: m}).Routes())
	srv := httptest.NewServer(r)
	defer srv.Close()

	// Read-your-writes: append, then read with min_position at once.
	res := appendEv(t, store, "order-7", "OrderPlaced", map[string]any{"customer": "ada", "total": 12, "lines": []any{1, 2}})
	code, _, body := testutil.Do(t, "GET", fmt.Sprintf("%s/v1/views/order_summary/order-7?min_position=%d", srv.URL, res.Position), nil, "")
	if code != 200 || !strings.Contains(body, `"status":"placed"`) || !strings.Contains(body, `"items":2`) {
		t.Fatalf("read-your-writes: %d %s", code, body)
	}
	for _, id := range []string{"order-8", "order-9"} {
		res = appendEv(t, store, id, "OrderPlaced", map[string]any{"customer": "bob", "total": 5, "lines": []any{}})
	}
	// A position of another category is reached without waiting.
	other := appendEv(t, store, "stock-1", "StockReserved", map[string]any{})
	code, _, body = testutil.Do(t, "GET", fmt.Sprintf("%s/v1/views/order_summary?customer=bob&order=-id&limit=1&min_position=%d&wait=10s", srv.URL, other.Position), nil, "")
	var page projection.Page
	if code != 200 || json.Unmarshal([]byte(body), &page) != nil || len(page.Rows) != 1 || page.Rows[0]["id"] != "order-9" || page.Next == "" {
		t.Fatalf("list: %d %s", code, body)
	}
	code, _, body = testutil.Do(t, "GET", srv.URL+"/v1/views/order_summary?customer=bob&order=-id&limit=1&cursor="+url.QueryEscape(page.Next), nil, "")
	if code != 200 || !strings.Contains(body, `"order-8"`) || strings.Contains(body, "next_cursor") {
		t.Fatalf("second page: %d %s", code, body)
	}

	code, _, body = testutil.Do(t, "GET", srv.URL+"/v1/projections", nil, "")
	if code != 200 || !strings.Contains(body, `"name":"order_summary"`) || !strings.Contains(body, `"state":"running"`) {
		t.Fatalf("projections: %d %s", code, body)
	}
	code, _, body = testutil.Do(t, "POST", srv.URL+"/v1/projections/order_summary/rebuild", nil, "")
	if code != 202 || !strings.Contains(body, `"rebuild"`) {
		t.Fatalf("rebuild: %d %s", code, body)
	}

	for _, tc := range []struct {
		path, code string
		status     int
	}{
		{"/v1/views/nope/x", "view_not_found", 404},
		{"/v1/views/nope", "view_not_found", 404},
		{"/v1/views/order_summary/order-404", "row_not_found", 404},
		{"/v1/projections/nope", "projection_not_found", 404},
		{"/v1/views/order_summary?colour=red", "validation_failed", 422},
		{"/v1/views/order_summary?total=abc", "validation_failed", 422},
		{"/v1/views/order_summary?lines=x", "validation_failed", 422},
		{"/v1/views/order_summary?order=lines", "validation_failed", 422},
		{"/v1/views/order_summary?order=nope", "validation_failed", 422},
		{"/v1/views/order_summary?limit=0", "validation_failed", 422},
		{"/v1/views/order_summary?limit=5000", "validation_failed", 422},
		{"/v1/views/order_summary?status=a&status=b", "validation_failed", 422},
		{"/v1/views/order_summary?cursor=%25%25", "validation_failed", 422},
		{"/v1/views/order_summary?order=-total&cursor=" + url.QueryEscape(page.Next), "validation_failed", 422},
		{"/v1/views/order_summary?min_position=-1", "validation_failed", 422},
		{"/v1/views/order_summary?wait=1s", "validation_failed", 422},
		{"/v1/views/order_summary?min_position=1&wait=1h", "validation_failed", 422},
		{"/v1/views/order_summary?min_position=1&wait=soon", "validation_failed", 422},
	} {
		code, hdr, body := testutil.Do(t, "GET", srv.URL+tc.path, nil, "")
		if code != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) || !strings.HasPrefix(hdr.Get("Content-Type"), "application/problem+json") {
			t.Errorf("GET %s = %d %s, want %d %s", tc.path, code, body, tc.status, tc.code)
		}
	}
}

// A view that has stopped on a failing event answers min_position reads
// with 503 projection_failed at once, not after the wait.
func TestAPIFailedProjection(t *testing.T) {
	store := newStore(t)
	db, open := newDB(t, "sqlite")
	m := start(t, store, db, open, counterConfig(""))
	r := httpserver.NewRouter()
	r.HandleAll((&projection.API{Manager: m}).Routes())
	srv := httptest.NewServer(r)
	defer srv.Close()
	res := appendEv(t, store, "acct-1", "Deposited", map[string]any{"amount": "NaN"})
	code, _, body := testutil.Do(t, "GET", fmt.Sprintf("%s/v1/views/counts/acct-1?min_position=%d&wait=20s", srv.URL, res.Position), nil, "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"projection_failed"`) {
		t.Fatalf("got %d %s", code, body)
	}
}
