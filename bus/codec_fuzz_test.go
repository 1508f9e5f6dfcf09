package bus

import (
	"bytes"
	"context"
	"encoding/base64"
	"maps"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
)

// FuzzDecodeRequest feeds arbitrary bodies and headers to the CloudEvents
// decoder. Whatever it accepts must survive the trip through NATS headers
// unchanged, because that is how it is stored.
func FuzzDecodeRequest(f *testing.F) {
	f.Add("application/json", []byte(`{"a":1}`), "ce-type", "order.created")
	f.Add("application/cloudevents+json", []byte(`{"specversion":"1.0","id":"1","type":"t","source":"/s","data":{"x":1},"ext1":"v"}`), "", "")
	f.Add("application/cloudevents+json", []byte(`{"id":"1","data_base64":"aGVsbG8=","datacontenttype":"text/plain"}`), "", "")
	f.Add("application/cloudevents-batch+json", []byte(`[{"id":"a","data":1},{"id":"b","data":"x","partitionkey":"k"}]`), "", "")
	f.Add("text/plain", []byte("hello"), "ce-time", "2026-01-02T03:04:05.123Z")
	f.Add("", []byte{0xff, 0x00}, "ce-partitionkey", "key-1")
	f.Fuzz(func(t *testing.T, ct string, body []byte, hk, hv string) {
		h := http.Header{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		if hk != "" {
			h.Set(hk, hv)
		}
		msgs, _, err := decodeRequest(h, body)
		if err != nil {
			return
		}
		for _, m := range msgs {
			m.fill("t", time.Now())
			if m.validate() != nil {
				continue // Publish rejects these
			}
			nm := m.toNATS("subj")
			// Encode and parse the headers as the NATS wire protocol would.
			back := fromNATS(roundTripHeaders(t, nm.Header), nm.Data)
			if back.ID != m.ID || back.Type != m.Type || back.Source != m.Source || back.Subject != m.Subject ||
				back.Key != m.Key || back.DataContentType != m.DataContentType || !bytes.Equal(back.Data, m.Data) ||
				!back.Time.Equal(m.Time) || !maps.Equal(back.Extensions, m.Extensions) {
				t.Fatalf("round trip changed the message:\n in  %+v\n out %+v", m, back)
			}
			_ = back.Wire()
		}
	})
}

var (
	fuzzNATS     *natsembed.Conn
	fuzzSub      *nats.Subscription
	fuzzNATSOnce sync.Once
)

// roundTripHeaders sends h through a real (in-process) NATS server and
// returns the headers as received, so the fuzz target checks the actual
// wire encoding rather than a model of it.
func roundTripHeaders(t *testing.T, h nats.Header) nats.Header {
	fuzzNATSOnce.Do(func() {
		dir, err := os.MkdirTemp("", "junction-fuzz-")
		if err != nil {
			panic(err)
		}
		if fuzzNATS, err = natsembed.Start(context.Background(), natsembed.Options{DataDir: dir}); err != nil {
			panic(err)
		}
		if fuzzSub, err = fuzzNATS.NC.SubscribeSync("fuzz"); err != nil {
			panic(err)
		}
	})
	if err := fuzzNATS.NC.PublishMsg(&nats.Msg{Subject: "fuzz", Header: h}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got, err := fuzzSub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return got.Header
}

// FuzzParseAckID: no input may be accepted unless it names the
// subscription's own stream and consumer.
func FuzzParseAckID(f *testing.F) {
	b := &Bus{pfx: "junction"}
	s := &compiled{name: "work", cfg: config.Subscription{Topic: "orders"}}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	f.Add(enc("$JS.ACK.junction_T_orders.work.1.2.3.1700000000.0"))
	f.Add(enc("$JS.ACK.dom.acc.junction_T_orders.work.1.2.3.1700000000.0.tok"))
	f.Add(enc("$JS.ACK.junction_T_other.work.1.2.3.1700000000.0"))
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, id string) {
		r, err := b.parseAckID(s, id)
		if err != nil {
			return
		}
		if r.stream != "junction_T_orders" || r.consumer != "work" {
			t.Fatalf("accepted %q for another stream or consumer: %+v", id, r)
		}
	})
}
