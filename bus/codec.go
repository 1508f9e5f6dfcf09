package bus

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
)

// Content types of the CloudEvents HTTP binding.
const (
	ctStructured = "application/cloudevents+json"
	ctBatch      = "application/cloudevents-batch+json"
)

// decodeRequest reads one message (binary or structured mode) or a batch
// from an HTTP request whose body is already read into body.
func decodeRequest(h http.Header, body []byte) (msgs []Message, batch bool, err error) {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	switch mt {
	case ctBatch:
		// One parse of the whole batch into attribute maps: decoding each
		// event from its own raw text again was the costliest step of a
		// batch publish.
		var items []map[string]json.RawMessage
		if err := json.Unmarshal(body, &items); err != nil {
			return nil, true, fmt.Errorf("a batch must be a JSON array of CloudEvent objects: %w", err)
		}
		if len(items) == 0 {
			return nil, true, fmt.Errorf("a batch must hold at least one event")
		}
		msgs = make([]Message, len(items))
		for i, raw := range items {
			if err := decodeEvent(raw, &msgs[i]); err != nil {
				return nil, true, fmt.Errorf("event %d: %w", i, err)
			}
		}
		return msgs, true, nil
	case ctStructured:
		var m Message
		if err := decodeStructured(body, &m); err != nil {
			return nil, false, err
		}
		return []Message{m}, false, nil
	default:
		m, err := decodeBinary(h, body)
		if err != nil {
			return nil, false, err
		}
		return []Message{m}, false, nil
	}
}

func decodeBinary(h http.Header, body []byte) (Message, error) {
	m := Message{Data: body, DataContentType: strings.TrimSpace(h.Get("Content-Type"))}
	for k, vs := range h {
		name, ok := strings.CutPrefix(strings.ToLower(k), cePrefix)
		if !ok || len(vs) == 0 || name == "datacontenttype" {
			continue // binary mode carries the content type in Content-Type
		}
		if err := m.setAttr(name, strings.TrimSpace(vs[0])); err != nil {
			return m, fmt.Errorf("ce-%w", err)
		}
	}
	return m, m.validate()
}

// decodeStructured parses one CloudEvent in JSON format.
func decodeStructured(b []byte, m *Message) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("a structured CloudEvent must be a JSON object: %w", err)
	}
	return decodeEvent(raw, m)
}

// jsonString decodes a JSON string value; escape-free strings (nearly all
// attribute values) are sliced out without a second parse.
func jsonString(r json.RawMessage) (string, bool) {
	if len(r) >= 2 && r[0] == '"' && r[len(r)-1] == '"' && bytes.IndexByte(r, '\\') < 0 {
		return string(r[1 : len(r)-1]), true
	}
	var s string
	return s, json.Unmarshal(r, &s) == nil
}

// decodeEvent fills m from a CloudEvent's JSON members.
func decodeEvent(raw map[string]json.RawMessage, m *Message) error {
	if raw == nil {
		return fmt.Errorf("a CloudEvent must be a JSON object")
	}
	for k, r := range raw {
		if k == "data" || k == "data_base64" || string(r) == "null" {
			continue
		}
		v, ok := jsonString(r)
		if !ok {
			if coreAttrs[k] {
				return fmt.Errorf("attribute %q must be a string", k)
			}
			v = string(r) // extension values of other JSON types keep their JSON text
		}
		if err := m.setAttr(k, strings.TrimSpace(v)); err != nil {
			return err
		}
	}
	if d, ok := raw["data_base64"]; ok {
		var s string
		if err := json.Unmarshal(d, &s); err != nil {
			return fmt.Errorf("data_base64 must be a string")
		}
		var err error
		if m.Data, err = base64.StdEncoding.DecodeString(s); err != nil {
			return fmt.Errorf("data_base64 is not valid base64")
		}
	} else if d, ok := raw["data"]; ok && string(d) != "null" {
		// A JSON string is text when the content type says a non-JSON
		// type; anything else is stored as JSON.
		var s string
		if d[0] == '"' && m.DataContentType != "" && !isJSON(m.DataContentType, nil) && json.Unmarshal(d, &s) == nil {
			m.Data = []byte(s)
		} else {
			m.Data = append([]byte(nil), d...)
			if m.DataContentType == "" {
				m.DataContentType = "application/json"
			}
		}
	}
	return m.validate()
}
