package pipeline

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
)

// jsonLine encodes flat records (text, numbers, booleans, nulls: what
// CSV rows and window results hold) as encoding/json does, byte for byte
// (keys sorted, the same escaping and number forms), without its
// reflection and per-call allocations; anything else it hands to
// encoding/json. A JSON lines output spends most of its time here.
type jsonLine struct {
	buf  []byte
	keys []string
}

// encode returns m's JSON followed by a newline, in a buffer that is
// reused by the next call.
func (e *jsonLine) encode(m map[string]any) ([]byte, error) {
	if m == nil {
		return e.fallback(m) // null
	}
	e.keys = e.keys[:0]
	for k := range m {
		e.keys = append(e.keys, k)
	}
	slices.Sort(e.keys)
	b := append(e.buf[:0], '{')
	for i, k := range e.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		var ok bool
		if b, ok = appendJSONValue(b, m[k]); !ok {
			return e.fallback(m)
		}
	}
	e.buf = append(b, '}', '\n')
	return e.buf, nil
}

func (e *jsonLine) fallback(m map[string]any) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	e.buf = append(append(e.buf[:0], b...), '\n')
	return e.buf, nil
}

// appendJSONValue appends v if it is a value encoded here; ok is false
// for any other (and for what encoding/json refuses, NaN and infinities,
// so that its error is the one reported).
func appendJSONValue(b []byte, v any) (_ []byte, ok bool) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), true
	case string:
		return appendJSONString(b, x), true
	case bool:
		return strconv.AppendBool(b, x), true
	case int64:
		return strconv.AppendInt(b, x, 10), true
	case int:
		return strconv.AppendInt(b, int64(x), 10), true
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return b, false
		}
		// encoding/json's form: ES6 number formatting.
		abs, f := math.Abs(x), byte('f')
		if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
			f = 'e'
		}
		b = strconv.AppendFloat(b, x, f, -1, 64)
		if f == 'e' {
			// e-09 becomes e-9.
			if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
				b[n-2] = b[n-1]
				b = b[:n-1]
			}
		}
		return b, true
	}
	return b, false
}

// appendJSONString appends s quoted; a string with anything that
// encoding/json escapes (control characters, quotes, backslashes, HTML
// characters, anything not ASCII) is left to it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
