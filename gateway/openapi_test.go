package gateway_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junctionhq/junction/config"
)

const ordersSpec = `openapi: 3.1.0
info: { title: orders, version: "1" }
paths:
  /orders:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/NewOrder" }
      responses: { "202": { description: accepted } }
  /orders/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer, minimum: 1 } }
    get:
      parameters:
        - { name: fields, in: query, schema: { type: string, enum: [all, summary] } }
      responses: { "200": { description: the order } }
components:
  schemas:
    NewOrder:
      type: object
      required: [sku, qty]
      additionalProperties: false
      properties:
        sku: { type: string, minLength: 1 }
        qty: { type: integer, minimum: 1 }
`

func TestOpenAPIValidationAndDocument(t *testing.T) {
	file := filepath.Join(t.TempDir(), "orders.yaml")
	if err := os.WriteFile(file, []byte(ordersSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	_, gw := gatewayNode(t, []*config.GatewayRoute{
		{Path: "/orders", Methods: []string{"POST"}, OpenAPI: file, Static: &config.GatewayStatic{Status: 202, Body: "queued"}},
		{Path: "/orders/{id}", Methods: []string{"GET"}, OpenAPI: file, Service: "orders"},
		{Path: "/ping", Static: &config.GatewayStatic{Body: "pong"}},
	})
	for _, tc := range []struct {
		method, path, body string
		status             int
		fields             string
	}{
		{"POST", "/orders", `{"sku":"tea","qty":2}`, 202, ""},
		{"POST", "/orders", `{"sku":"","qty":0,"x":1}`, 422, "body/qty body/sku body/"},
		{"POST", "/orders", ``, 422, "body"},
		{"POST", "/orders", `{"sku":`, 422, "body"},
		{"GET", "/orders/7?fields=summary", ``, 200, ""},
		{"GET", "/orders/0", ``, 422, "id"},
		{"GET", "/orders/abc", ``, 422, "id"},
		{"GET", "/orders/7?fields=everything", ``, 422, "fields"},
	} {
		code, _, m, body := get(t, tc.method, gw+tc.path, map[string]string{"Content-Type": "application/json"}, tc.body)
		if code != tc.status {
			t.Errorf("%s %s %s = %d %s, want %d", tc.method, tc.path, tc.body, code, body, tc.status)
			continue
		}
		if tc.status == 422 {
			var fields []string
			for _, e := range m["errors"].([]any) {
				fields = append(fields, e.(map[string]any)["field"].(string))
			}
			got := " " + strings.Join(fields, " ") + " "
			missing := false
			for _, f := range strings.Fields(tc.fields) {
				missing = missing || !strings.Contains(got, " "+f+" ")
			}
			if m["code"] != "validation_failed" || missing || len(fields) != len(strings.Fields(tc.fields)) {
				t.Errorf("%s %s %s: %s", tc.method, tc.path, tc.body, body)
			}
		}
	}

	code, _, _, body := get(t, "GET", gw+"/openapi.json", nil, "")
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("document: %d %s", code, body)
	}
	if doc.Paths["/orders"]["post"]["requestBody"] == nil || doc.Paths["/orders/{id}"]["get"] == nil || doc.Paths["/ping"]["get"] == nil || doc.Components.Schemas["NewOrder"] == nil {
		t.Errorf("document paths: %s", body)
	}
}
