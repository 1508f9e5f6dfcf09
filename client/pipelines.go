package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// PipelineRun is the summary of a pipeline run: live while it runs.
type PipelineRun struct {
	Pipeline     string    `json:"pipeline"`
	RunID        string    `json:"run_id"`
	Status       string    `json:"status"` // running, completed, failed, interrupted
	Read         int64     `json:"read"`
	Written      int64     `json:"written"`
	Filtered     int64     `json:"filtered"`
	Failed       int64     `json:"failed"`
	DeadLettered int64     `json:"dead_lettered"`
	Started      time.Time `json:"started"`
	Ended        time.Time `json:"ended,omitzero"`
	Duration     string    `json:"duration"`
	Rate         float64   `json:"rate"`
	Resumed      bool      `json:"resumed,omitempty"`
	Error        string    `json:"error,omitempty"`
	// Progress is Done of Total (in Unit) of the input, when its size is
	// known.
	Progress *struct {
		Done  int64  `json:"done"`
		Total int64  `json:"total"`
		Unit  string `json:"unit"`
	} `json:"progress,omitempty"`
}

// PipelineInfo is a declared pipeline and its state.
type PipelineInfo struct {
	Name     string       `json:"name"`
	Input    string       `json:"input"`
	Output   string       `json:"output"`
	Schedule string       `json:"schedule,omitempty"`
	Stream   bool         `json:"stream,omitempty"`
	Running  *PipelineRun `json:"running,omitempty"`
	LastRun  *PipelineRun `json:"last_run,omitempty"`
}

// Pipelines lists the node's pipelines.
func (c *Client) Pipelines(ctx context.Context) ([]PipelineInfo, error) {
	var r struct {
		Pipelines []PipelineInfo `json:"pipelines"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/pipelines", nil, nil, &r)
	return r.Pipelines, err
}

// StartPipelineRun starts a run of pipeline name (resuming an interrupted
// one); with wait > 0 it returns when the run ends or the wait does.
func (c *Client) StartPipelineRun(ctx context.Context, name string, wait time.Duration) (*PipelineRun, error) {
	var r PipelineRun
	if err := c.do(ctx, http.MethodPost, "/v1/pipelines/"+esc(name)+"/runs"+waitQuery(wait), nil, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetPipelineRun returns run id of pipeline name; with wait > 0 it
// returns when the run ends or the wait does.
func (c *Client) GetPipelineRun(ctx context.Context, name, id string, wait time.Duration) (*PipelineRun, error) {
	var r PipelineRun
	if err := c.do(ctx, http.MethodGet, "/v1/pipelines/"+esc(name)+"/runs/"+esc(id)+waitQuery(wait), nil, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func waitQuery(wait time.Duration) string {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	return encodeQuery(q)
}
