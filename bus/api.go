package bus

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
)

// API serves the bus over HTTP (DESIGN section 4).
type API struct {
	Bus          *Bus
	MaxBodyBytes int64 // structured and batch bodies; binary bodies are capped by bus.max_message_bytes
}

// Routes returns the bus's HTTP operations.
func (a *API) Routes() []httpserver.Route {
	const tt, ts = "topics", "subscriptions"
	return []httpserver.Route{
		{Method: "GET", Path: "/v1/topics", Tag: tt, Summary: "List topics with their settings and stats", Response: arrayOf(topicInfoSchema), Handler: a.listTopics},
		{Method: "PUT", Path: "/v1/topics/{topic}", Tag: tt, Summary: "Create or update a topic's retention", Request: topicSchema, Response: topicInfoSchema, Handler: a.putTopic},
		{Method: "GET", Path: "/v1/topics/{topic}", Tag: tt, Summary: "Get a topic's settings and stats", Response: topicInfoSchema, Handler: a.getTopic},
		{Method: "DELETE", Path: "/v1/topics/{topic}", Tag: tt, Summary: "Delete a topic, its messages and subscriptions", Status: 204, Handler: a.deleteTopic},
		{Method: "POST", Path: "/v1/topics/{topic}/messages", Tag: tt, Summary: "Publish a CloudEvent (binary or structured mode) or a batch", Status: 202, Response: publishResultSchema, Handler: a.publish},
		{Method: "GET", Path: "/v1/topics/{topic}/tail", Tag: tt, Summary: "Stream a topic as server-sent events: replay from a position, then live", Query: []string{"from"}, Stream: true, Handler: a.tail},
		{Method: "GET", Path: "/v1/subscriptions", Tag: ts, Summary: "List subscriptions with their stats", Response: arrayOf(subInfoSchema), Handler: a.listSubs},
		{Method: "PUT", Path: "/v1/subscriptions/{name}", Tag: ts, Summary: "Create or update a subscription", Request: subSchema, Response: subInfoSchema, Handler: a.putSub},
		{Method: "GET", Path: "/v1/subscriptions/{name}", Tag: ts, Summary: "Get a subscription with its stats", Response: subInfoSchema, Handler: a.getSub},
		{Method: "DELETE", Path: "/v1/subscriptions/{name}", Tag: ts, Summary: "Delete a subscription", Status: 204, Handler: a.deleteSub},
		{Method: "POST", Path: "/v1/subscriptions/{name}/pull", Tag: ts, Summary: "Pull messages (competing consumers)", Request: pullSchema, Response: pullResponseSchema, Handler: a.pull},
		{Method: "POST", Path: "/v1/subscriptions/{name}/ack", Tag: ts, Summary: "Acknowledge pulled messages", Request: settleSchema, Response: settledSchema, Handler: a.settle(SettleAck)},
		{Method: "POST", Path: "/v1/subscriptions/{name}/nack", Tag: ts, Summary: "Hand pulled messages back for redelivery after an optional delay", Request: settleSchema, Response: settledSchema, Handler: a.settle(SettleNack)},
		{Method: "POST", Path: "/v1/subscriptions/{name}/reject", Tag: ts, Summary: "Send pulled messages to the dead-letter topic now", Request: settleSchema, Response: settledSchema, Handler: a.settle(SettleReject)},
		{Method: "POST", Path: "/v1/subscriptions/{name}/dead-letters/replay", Tag: ts, Summary: "Re-deliver a subscription's dead letters to it", Request: replaySchema, Response: replayedSchema, Handler: a.replay},
	}
}

func (a *API) listTopics(w http.ResponseWriter, r *http.Request) {
	ts, err := a.Bus.ListTopics(r.Context())
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, ts)
}

func (a *API) putTopic(w http.ResponseWriter, r *http.Request) {
	var t config.Topic
	if err := httpserver.DecodeJSON(w, r, &t, 64<<10, true); err != nil {
		problem.Write(w, r, err)
		return
	}
	topic := r.PathValue("topic")
	_, getErr := a.Bus.GetTopic(r.Context(), topic)
	ti, err := a.Bus.PutTopic(r.Context(), topic, t)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	st := http.StatusOK
	if getErr != nil { // it did not exist before
		st = http.StatusCreated
	}
	httpserver.WriteJSON(w, st, ti)
}

func (a *API) getTopic(w http.ResponseWriter, r *http.Request) {
	ti, err := a.Bus.GetTopic(r.Context(), r.PathValue("topic"))
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, ti)
}

func (a *API) deleteTopic(w http.ResponseWriter, r *http.Request) {
	if err := a.Bus.DeleteTopic(r.Context(), r.PathValue("topic")); err != nil {
		problem.Write(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	limit := a.Bus.cfg.MaxMessageBytes
	if mt == ctStructured || mt == ctBatch {
		limit = a.MaxBodyBytes
	}
	bp := bodyPool.Get().(*[]byte)
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), (*bp)[:0])
	defer func() {
		// Keep ordinary buffers for reuse; let a rare huge batch body go
		// rather than pinning megabytes in the pool.
		if cap(body) <= 256<<10 {
			*bp = body[:0]
			bodyPool.Put(bp)
		}
	}()
	if err != nil {
		p := problem.From(err)
		if p.Code == problem.CodeTooLarge && limit == a.Bus.cfg.MaxMessageBytes {
			p = problem.New(problem.CodeTooLarge, "message body exceeds %d bytes (bus.max_message_bytes); nothing was stored", limit)
		}
		problem.Write(w, r, p)
		return
	}
	msgs, batch, err := decodeRequest(r.Header, body)
	if err != nil {
		problem.Write(w, r, problem.New(problem.CodeValidation, "%v", err))
		return
	}
	res, err := a.Bus.Publish(r.Context(), r.PathValue("topic"), msgs...)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if !batch {
		if res[0].Error != nil {
			problem.Write(w, r, res[0].Error)
			return
		}
		httpserver.WriteJSON(w, http.StatusAccepted, res[0])
		return
	}
	httpserver.WriteJSON(w, statusOf(res), res)
}

// readAll reads r into buf, growing it as needed.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (a *API) tail(w http.ResponseWriter, r *http.Request) {
	from := r.URL.Query().Get("from")
	if from == "" {
		from = "new"
	}
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		// An EventSource reconnecting resumes after the last event it saw.
		if n, err := strconv.ParseUint(last, 10, 64); err == nil {
			from = "seq:" + strconv.FormatUint(n+1, 10)
		}
	}
	if _, _, _, err := config.ParseStart(from); err != nil {
		problem.Write(w, r, invalid("from: %v", err))
		return
	}
	topic := r.PathValue("topic")
	if err := a.Bus.topicExists(r.Context(), topic, false); err != nil {
		problem.Write(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	var mu sync.Mutex
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				_, _ = io.WriteString(w, ": keep-alive\n\n")
				_ = rc.Flush()
				mu.Unlock()
			}
		}
	}()
	err := a.Bus.Tail(r.Context(), topic, from, func(m *Message) error {
		b, err := json.Marshal(m.Wire())
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(w, "id: %d\nevent: message\ndata: %s\n\n", m.Sequence, b); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && r.Context().Err() == nil {
		mu.Lock()
		fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
		_ = rc.Flush()
		mu.Unlock()
	}
}

func (a *API) listSubs(w http.ResponseWriter, r *http.Request) {
	ss, err := a.Bus.ListSubscriptions(r.Context())
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, ss)
}

func (a *API) putSub(w http.ResponseWriter, r *http.Request) {
	var s config.Subscription
	if err := httpserver.DecodeJSON(w, r, &s, 64<<10, false); err != nil {
		problem.Write(w, r, err)
		return
	}
	name := r.PathValue("name")
	created, err := a.Bus.PutSubscription(r.Context(), name, s)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	si, err := a.Bus.GetSubscription(r.Context(), name)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	st := http.StatusOK
	if created {
		st = http.StatusCreated
	}
	httpserver.WriteJSON(w, st, si)
}

func (a *API) getSub(w http.ResponseWriter, r *http.Request) {
	si, err := a.Bus.GetSubscription(r.Context(), r.PathValue("name"))
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, si)
}

func (a *API) deleteSub(w http.ResponseWriter, r *http.Request) {
	if err := a.Bus.DeleteSubscription(r.Context(), r.PathValue("name")); err != nil {
		problem.Write(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// PullRequest is the body of POST /v1/subscriptions/{name}/pull.
type PullRequest struct {
	Max  int             `json:"max"`
	Wait config.Duration `json:"wait"`
}

// PullResponse is its answer.
type PullResponse struct {
	Messages []WireMessage `json:"messages"`
}

func (a *API) pull(w http.ResponseWriter, r *http.Request) {
	req := PullRequest{Max: 10}
	if err := httpserver.DecodeJSON(w, r, &req, 4096, true); err != nil {
		problem.Write(w, r, err)
		return
	}
	msgs, err := a.Bus.Pull(r.Context(), r.PathValue("name"), req.Max, req.Wait.D())
	if err != nil && len(msgs) == 0 {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, PullResponse{Messages: msgs})
}

// SettleRequest is the body of ack, nack and reject.
type SettleRequest struct {
	AckIDs []string        `json:"ack_ids"`
	Delay  config.Duration `json:"delay,omitempty"`
}

func (a *API) settle(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req SettleRequest
		if err := httpserver.DecodeJSON(w, r, &req, 1<<20, false); err != nil {
			problem.Write(w, r, err)
			return
		}
		if kind != SettleNack && req.Delay != 0 {
			problem.Write(w, r, invalid("delay applies to nack only"))
			return
		}
		if err := a.Bus.Settle(r.Context(), r.PathValue("name"), kind, req.AckIDs, req.Delay.D()); err != nil {
			problem.Write(w, r, err)
			return
		}
		httpserver.WriteJSON(w, http.StatusOK, map[string]int{"settled": len(req.AckIDs)})
	}
}

func (a *API) replay(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Max int `json:"max"`
	}
	if err := httpserver.DecodeJSON(w, r, &req, 4096, true); err != nil {
		problem.Write(w, r, err)
		return
	}
	if req.Max < 0 {
		problem.Write(w, r, invalid("max must not be negative"))
		return
	}
	n, err := a.Bus.ReplayDeadLetters(r.Context(), r.PathValue("name"), req.Max)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, map[string]int{"replayed": n})
}
