package workflow_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/workflow"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// node starts a node whose config is yaml (workflows, services...), with
// $NAME replaced by vars[NAME] first.
func node(t *testing.T, yaml string, vars map[string]string) *testutil.Node {
	t.Helper()
	for k, v := range vars {
		yaml = strings.ReplaceAll(yaml, "$"+k, v)
	}
	parsed, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Workflows, cfg.Services, cfg.Topics = parsed.Workflows, parsed.Services, parsed.Topics
	if len(parsed.Gateway.Routes) > 0 {
		cfg.Gateway = parsed.Gateway
		cfg.Gateway.Listen = "127.0.0.1:0"
	}
	return testutil.Start(t, cfg)
}

// service is a test HTTP service; h answers every request.
func service(t *testing.T, h http.HandlerFunc) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func start(t *testing.T, n *testutil.Node, wf string, input any) *workflow.Run {
	t.Helper()
	raw, _ := json.Marshal(input)
	r, created, err := n.Workflows().StartRun(ctxT(t), wf, raw, workflow.StartOptions{})
	if err != nil || !created {
		t.Fatalf("start %s: created %v, %v", wf, created, err)
	}
	return r
}

// finish waits for run id to end.
func finish(t *testing.T, n *testutil.Node, id string) *workflow.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := n.Workflows().Wait(ctx, id)
	if err != nil {
		t.Fatalf("run %s did not end: %v (state %+v)", id, err, dump(r))
	}
	return r
}

func dump(r *workflow.Run) string {
	b, _ := json.Marshal(r)
	return string(b)
}
