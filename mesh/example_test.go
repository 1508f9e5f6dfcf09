package mesh_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/config"
)

// A Go program that embeds a node calls services by name: the mesh is the
// http.Client's transport, so the URL's host is the service and the node
// picks the instance and applies the service's policy.
func ExampleMesh_RoundTrip() {
	// One instance of the service "inventory".
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "stock of %s: 7\n", r.URL.Path)
	}))
	defer app.Close()

	dir, _ := os.MkdirTemp("", "junction-example-")
	defer os.RemoveAll(dir)
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.API.Listen = "127.0.0.1:0"
	cfg.Services = map[string]*config.Service{
		"inventory": {Instances: []config.Instance{{URL: app.URL}}},
	}
	node, err := junction.New(context.Background(), cfg, junction.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()

	client := &http.Client{Transport: node.Mesh()}
	resp, err := client.Get("http://inventory/stock/42")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.StatusCode, " ", string(body))

	// The mesh's own errors are the call's error, with a stable code.
	_, err = client.Get("http://shipping/parcels")
	fmt.Println(err)
	// Output:
	// 200 stock of /stock/42: 7
	// Get "http://shipping/parcels": service_not_found: no service "shipping" is declared or registered
}
