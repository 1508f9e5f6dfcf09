package bus

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"
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
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, true, fmt.Errorf("a batch must be a JSON array of CloudEvents: %w", err)
		}
		if len(raws) == 0 {
			return nil, true, fmt.Errorf("a batch must hold at least one event")
		}
		msgs = make([]Message, len(raws))
		for i, r := range raws {
			if err := decodeStructured(r, &msgs[i]); err != nil {
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
		lk := strings.ToLower(k)
		name, ok := strings.CutPrefix(lk, cePrefix)
		if !ok || len(vs) == 0 {
			continue
		}
		v := strings.TrimSpace(vs[0])
		switch name {
		case "specversion":
			if v != "1.0" {
				return m, fmt.Errorf("ce-specversion %q is not supported (use 1.0)", v)
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
		case "partitionkey":
			m.Key = v
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return m, fmt.Errorf("ce-time %q is not an RFC 3339 time", v)
			}
			m.Time = t
		default:
			if m.Extensions == nil {
				m.Extensions = map[string]string{}
			}
			m.Extensions[name] = v
		}
	}
	return m, m.validate()
}

// decodeStructured parses one CloudEvent in JSON format.
func decodeStructured(b []byte, m *Message) error {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("a structured CloudEvent must be a JSON object: %w", err)
	}
	str := func(k string) (string, error) {
		r, ok := raw[k]
		if !ok || string(r) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			return "", fmt.Errorf("attribute %q must be a string", k)
		}
		return strings.TrimSpace(s), nil
	}
	var err error
	get := func(k string, dst *string) {
		if err == nil {
			*dst, err = str(k)
		}
	}
	var spec, tm string
	get("specversion", &spec)
	get("id", &m.ID)
	get("source", &m.Source)
	get("type", &m.Type)
	get("subject", &m.Subject)
	get("datacontenttype", &m.DataContentType)
	get("dataschema", &m.DataSchema)
	get("partitionkey", &m.Key)
	get("time", &tm)
	if err != nil {
		return err
	}
	if spec != "" && spec != "1.0" {
		return fmt.Errorf("specversion %q is not supported (use 1.0)", spec)
	}
	if tm != "" {
		t, perr := time.Parse(time.RFC3339Nano, tm)
		if perr != nil {
			return fmt.Errorf("time %q is not an RFC 3339 time", tm)
		}
		m.Time = t
	}
	if d, ok := raw["data_base64"]; ok {
		var s string
		if err := json.Unmarshal(d, &s); err != nil {
			return fmt.Errorf("data_base64 must be a string")
		}
		if m.Data, err = base64.StdEncoding.DecodeString(s); err != nil {
			return fmt.Errorf("data_base64 is not valid base64")
		}
	} else if d, ok := raw["data"]; ok && string(d) != "null" {
		// A JSON string is text unless the content type says JSON; any
		// other JSON value is stored as JSON.
		var s string
		if d[0] == '"' && !isJSON(m.DataContentType, nil) && json.Unmarshal(d, &s) == nil && m.DataContentType != "" {
			m.Data = []byte(s)
		} else {
			m.Data = append([]byte(nil), d...)
			if m.DataContentType == "" {
				m.DataContentType = "application/json"
			}
		}
	}
	for k, v := range raw {
		if coreAttrs[k] {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			// Extension values of other JSON types keep their JSON text.
			s = string(v)
		}
		s = strings.TrimSpace(s)
		if m.Extensions == nil {
			m.Extensions = map[string]string{}
		}
		m.Extensions[k] = s
	}
	return m.validate()
}
