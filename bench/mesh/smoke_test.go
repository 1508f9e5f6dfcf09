package meshbench

import (
	"net/http"
	"testing"
)

// TestSmoke sends a few requests along each measured path, so that the
// benchmarks keep working; it asserts correctness only, never speed.
func TestSmoke(t *testing.T) {
	backend := Backend(t).URL
	c := Client()
	defer c.Transport.(*http.Transport).CloseIdleConnections()
	for name, url := range map[string]string{
		"direct":  backend + "/hello",
		"proxy":   Proxy(t, backend) + "/hello",
		"invoke":  InvokeNode(t, backend) + "/hello",
		"sidecar": SidecarPair(t, backend) + "/hello",
	} {
		for range 3 {
			if err := Get(c, url); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
}
