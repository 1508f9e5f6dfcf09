package bus

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// Message is a CloudEvent on a topic. Publishers fill the attributes they
// care about; Junction fills ID (UUIDv7), Source, Type, SpecVersion and
// Time when they are empty.
type Message struct {
	ID              string
	Source          string
	Type            string
	Subject         string
	Time            time.Time
	DataContentType string
	DataSchema      string
	// Key is the CloudEvents partitionkey extension: the ordering key.
	Key string
	// Extensions are other CloudEvents extension attributes.
	Extensions map[string]string
	Data       []byte

	// Set on delivery.
	Topic      string
	Sequence   uint64
	Deliveries int
	Published  time.Time
	header     nats.Header
}

// Header names. CloudEvents attributes are stored under their HTTP
// binary-mode names so a stored message is a valid binary-mode event.
const (
	hdrMsgID       = "Nats-Msg-Id"
	hdrContentType = "Content-Type"
	cePrefix       = "ce-"
	hdrReplayFor   = "Junction-Replay-For"
	hdrDLReason    = "Junction-Dead-Letter-Reason"
	hdrDLSub       = "Junction-Dead-Letter-Subscription"
	hdrDLTopic     = "Junction-Dead-Letter-Topic"
	hdrDLSeq       = "Junction-Dead-Letter-Sequence"
	hdrDLDeliv     = "Junction-Dead-Letter-Deliveries"
)

var coreAttrs = map[string]bool{"id": true, "source": true, "type": true, "subject": true, "time": true,
	"specversion": true, "datacontenttype": true, "dataschema": true, "partitionkey": true, "data": true, "data_base64": true}

// fill sets defaults for missing attributes.
func (m *Message) fill(topic string, now time.Time) {
	if m.ID == "" {
		m.ID = uuid.Must(uuid.NewV7()).String()
	}
	if m.Source == "" {
		m.Source = "/topics/" + topic
	}
	if m.Type == "" {
		m.Type = "junction.message"
	}
	if m.Time.IsZero() {
		m.Time = now
	}
}

// validate checks the attributes CloudEvents constrains, and that every
// value survives storage as a NATS header unchanged (NATS trims values and
// cannot carry line breaks).
func (m *Message) validate() error {
	if len(m.ID) > 256 {
		return fmt.Errorf("id is longer than 256 characters")
	}
	for k, v := range m.Extensions {
		if !validExtName(k) {
			return fmt.Errorf("extension attribute %q: names are lower-case letters and digits, at most 20", k)
		}
		if err := checkAttr(k, v); err != nil {
			return err
		}
	}
	for _, a := range [...]struct{ k, v string }{{"id", m.ID}, {"source", m.Source}, {"type", m.Type},
		{"subject", m.Subject}, {"partitionkey", m.Key}, {"dataschema", m.DataSchema}, {"datacontenttype", m.DataContentType}} {
		if err := checkAttr(a.k, a.v); err != nil {
			return err
		}
	}
	return nil
}

func checkAttr(name, v string) error {
	if v != strings.TrimSpace(v) {
		return fmt.Errorf("attribute %s must not begin or end with white space", name)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("attribute %s must not contain control characters", name)
		}
	}
	return nil
}

func validExtName(k string) bool {
	if k == "" || len(k) > 20 || coreAttrs[k] {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// toNATS encodes m for storage on subject.
func (m *Message) toNATS(subject string) *nats.Msg {
	h := nats.Header{}
	h[hdrMsgID] = []string{m.ID}
	h["ce-specversion"] = []string{"1.0"}
	h["ce-source"] = []string{m.Source}
	h["ce-type"] = []string{m.Type}
	h["ce-time"] = []string{m.Time.UTC().Format(time.RFC3339Nano)}
	if m.Subject != "" {
		h["ce-subject"] = []string{m.Subject}
	}
	if m.DataContentType != "" {
		h[hdrContentType] = []string{m.DataContentType}
	}
	if m.DataSchema != "" {
		h["ce-dataschema"] = []string{m.DataSchema}
	}
	if m.Key != "" {
		h["ce-partitionkey"] = []string{m.Key}
	}
	for k, v := range m.Extensions {
		h[cePrefix+k] = []string{v}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: m.Data}
}

// setAttr sets a CloudEvents attribute by its CloudEvents name; names
// that are not context attributes are extensions. It is the one mapping
// behind binary-mode headers, structured JSON and stored NATS headers.
func (m *Message) setAttr(name, v string) error {
	switch name {
	case "specversion":
		if v != "1.0" {
			return fmt.Errorf("specversion %q is not supported (use 1.0)", v)
		}
	case "id":
		m.ID = v
	case "source":
		m.Source = v
	case "type":
		m.Type = v
	case "subject":
		m.Subject = v
	case "dataschema":
		m.DataSchema = v
	case "datacontenttype":
		m.DataContentType = v
	case "partitionkey":
		m.Key = v
	case "time":
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return fmt.Errorf("time %q is not an RFC 3339 time", v)
		}
		m.Time = t
	default:
		if m.Extensions == nil {
			m.Extensions = map[string]string{}
		}
		m.Extensions[name] = v
	}
	return nil
}

// fromNATS decodes a stored message.
func fromNATS(h nats.Header, data []byte) Message {
	m := Message{Data: data, header: h}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		switch lk := strings.ToLower(k); lk {
		case "nats-msg-id":
			if m.ID == "" {
				m.ID = vs[0]
			}
		case "content-type":
			m.DataContentType = vs[0]
		case "ce-id":
			// Stored only where it differs from Nats-Msg-Id (dead letters
			// and replays), and then it is the event's id.
			m.ID = vs[0]
		default:
			if name, ok := strings.CutPrefix(lk, cePrefix); ok {
				_ = m.setAttr(name, vs[0]) // validated when published
			}
		}
	}
	if id := h.Get("ce-id"); id != "" {
		m.ID = id
	}
	return m
}

// Header returns a stored header that is not a CloudEvents attribute
// (trace context, dead-letter details), or "".
func (m *Message) Header(name string) string {
	if m.header == nil {
		return ""
	}
	if v := m.header.Get(name); v != "" {
		return v
	}
	return http.Header(m.header).Get(name) // canonical form, as the W3C propagator writes it
}

// isJSON reports whether the content type is JSON (application/json or a
// +json suffix). An empty type is treated as JSON when the bytes parse.
func isJSON(ct string, data []byte) bool {
	if ct == "" {
		return json.Valid(data)
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// WireMessage is a message in the JSON form of the API (pull responses,
// tail events). data is inline JSON for JSON payloads, a string for UTF-8
// text, and data_base64 otherwise.
type WireMessage struct {
	AckID           string            `json:"ack_id,omitempty"`
	ID              string            `json:"id"`
	Topic           string            `json:"topic"`
	Sequence        uint64            `json:"sequence"`
	Type            string            `json:"type"`
	Source          string            `json:"source"`
	Subject         string            `json:"subject,omitempty"`
	Time            time.Time         `json:"time"`
	Key             string            `json:"key,omitempty"`
	DataContentType string            `json:"datacontenttype,omitempty"`
	Deliveries      int               `json:"deliveries,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
	Data            json.RawMessage   `json:"data,omitempty"`
	DataBase64      string            `json:"data_base64,omitempty"`
}

// Wire converts m to its API JSON form.
func (m *Message) Wire() WireMessage {
	w := WireMessage{ID: m.ID, Topic: m.Topic, Sequence: m.Sequence, Type: m.Type, Source: m.Source,
		Subject: m.Subject, Time: m.Time, Key: m.Key, DataContentType: m.DataContentType, Deliveries: m.Deliveries}
	for k, v := range m.Extensions {
		w.setHeader(cePrefix+k, v)
	}
	// Trace context lets a puller continue the publisher's trace; the
	// dead-letter headers say where a dead letter came from and why.
	for _, k := range []string{"traceparent", "tracestate", hdrDLReason, hdrDLSub, hdrDLTopic, hdrDLSeq, hdrDLDeliv} {
		if v := m.Header(k); v != "" {
			w.setHeader(strings.ToLower(k), v)
		}
	}
	switch {
	case len(m.Data) == 0:
	case isJSON(m.DataContentType, m.Data) && json.Valid(m.Data):
		w.Data = m.Data
	case utf8.Valid(m.Data):
		w.Data, _ = json.Marshal(string(m.Data))
	default:
		w.DataBase64 = base64.StdEncoding.EncodeToString(m.Data)
	}
	return w
}

func (w *WireMessage) setHeader(k, v string) {
	if w.Headers == nil {
		w.Headers = map[string]string{}
	}
	w.Headers[k] = v
}

// setBinaryHeaders writes m as CloudEvents binary-mode HTTP headers.
func (m *Message) setBinaryHeaders(h http.Header) {
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", m.ID)
	h.Set("ce-source", m.Source)
	h.Set("ce-type", m.Type)
	if !m.Time.IsZero() {
		h.Set("ce-time", m.Time.UTC().Format(time.RFC3339Nano))
	}
	if m.Subject != "" {
		h.Set("ce-subject", m.Subject)
	}
	if m.DataSchema != "" {
		h.Set("ce-dataschema", m.DataSchema)
	}
	if m.Key != "" {
		h.Set("ce-partitionkey", m.Key)
	}
	for k, v := range m.Extensions {
		h.Set(cePrefix+k, v)
	}
	if m.DataContentType != "" {
		h.Set("Content-Type", m.DataContentType)
	}
}

// celVars is the `event` / `message` variable for filters.
func (m *Message) celVars() map[string]any {
	ev := map[string]any{
		"id": m.ID, "type": m.Type, "source": m.Source, "subject": m.Subject, "key": m.Key,
		"topic": m.Topic, "time": m.Time, "datacontenttype": m.DataContentType, "sequence": m.Sequence,
	}
	for k, v := range m.Extensions {
		if _, taken := ev[k]; !taken {
			ev[k] = v
		}
	}
	if len(m.Data) > 0 {
		var d any
		if isJSON(m.DataContentType, m.Data) && json.Unmarshal(m.Data, &d) == nil {
			ev["data"] = d
		} else {
			ev["data"] = string(m.Data)
		}
	} else {
		ev["data"] = nil
	}
	return map[string]any{"event": ev, "message": ev}
}
