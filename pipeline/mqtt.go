package pipeline

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/google/uuid"

	"github.com/junctionhq/junction/config"
)

func init() {
	inputs["mqtt"] = func(ctx context.Context, env *Env, cfg *config.PipelineInput, _ json.RawMessage) (Input, error) {
		return newMQTTInput(ctx, cfg.MQTT, defaultGroup(env))
	}
	outputs["mqtt"] = func(ctx context.Context, env *Env, cfg *config.PipelineOutput) (Output, error) {
		return newMQTTOutput(ctx, cfg.MQTT, defaultGroup(env)+"-out-"+uuid.NewString()[:8])
	}
}

// mqttSessionExpiry is how long the broker keeps an input's session (its
// subscription, and the messages not yet acknowledged or not yet sent)
// while the input is not connected.
const mqttSessionExpiry = 7 * 24 * 3600 // seconds

// mqttQoS is the configured QoS, 1 when unset.
func mqttQoS(cfg *config.MQTTConn) byte {
	if cfg.QoS == nil {
		return 1
	}
	return byte(*cfg.QoS)
}

// dialMQTT opens the network connection to the broker of an mqtt://,
// tcp://, mqtts://, ssl:// or tls:// URL (port 1883, or 8883 with TLS,
// when the URL has none).
func dialMQTT(ctx context.Context, raw string) (net.Conn, *url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("mqtt: url: %w", err)
	}
	secure := false
	switch u.Scheme {
	case "mqtt", "tcp":
	case "mqtts", "ssl", "tls":
		secure = true
	default:
		return nil, nil, fmt.Errorf("mqtt: url scheme %q: use mqtt, tcp, mqtts, ssl or tls", u.Scheme)
	}
	host := u.Host
	if u.Port() == "" {
		if secure {
			host = net.JoinHostPort(u.Hostname(), "8883")
		} else {
			host = net.JoinHostPort(u.Hostname(), "1883")
		}
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	if secure {
		c, err = (&tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: u.Hostname()}}).DialContext(ctx, "tcp", host)
		if err == nil {
			c = packets.NewThreadSafeConn(c)
		}
	} else {
		c, err = d.DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("mqtt: %w", err)
	}
	return c, u, nil
}

// mqttConnect connects a client: with a persistent session (clean false)
// for inputs, a fresh one for outputs.
func mqttConnect(ctx context.Context, raw, clientID string, persistent bool, sess *mqttSession, onPublish func(paho.PublishReceived) (bool, error)) (*paho.Client, error) {
	conn, u, err := dialMQTT(ctx, raw)
	if err != nil {
		return nil, err
	}
	cc := paho.ClientConfig{ClientID: clientID, Conn: conn, PacketTimeout: 10 * time.Second}
	if sess != nil {
		cc.Session = sess
	}
	if onPublish != nil {
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPublish}
	}
	cl := paho.NewClient(cc)
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: !persistent}
	if persistent {
		exp := uint32(mqttSessionExpiry)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	if user := u.User; user != nil {
		cp.Username, cp.UsernameFlag = user.Username(), true
		if pw, ok := user.Password(); ok {
			cp.Password, cp.PasswordFlag = []byte(pw), true
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := cl.Connect(cctx, cp); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mqtt: connect: %w", err)
	}
	return cl, nil
}

// mqttSession is the client's session state, except that a received
// message is acknowledged only when the input commits it: the broker
// redelivers what was not acknowledged when the input reconnects with the
// same client id.
type mqttSession struct {
	*state.State
	mu        sync.Mutex
	last      uint64 // the sequence number of the last message received
	committed uint64
	pending   []mqttPending
}

type mqttPending struct {
	seq uint64
	pb  *packets.Publish
}

// Ack is called by the client after it handed message pb (the one
// numbered last) to the input.
func (s *mqttSession) Ack(pb *packets.Publish) error {
	if pb.QoS == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last <= s.committed {
		return s.State.Ack(pb)
	}
	s.pending = append(s.pending, mqttPending{s.last, pb})
	return nil
}

// commit acknowledges the messages up to seq, in the order received.
func (s *mqttSession) commit(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.committed {
		s.committed = seq
	}
	n := 0
	for _, p := range s.pending {
		if p.seq > seq {
			break
		}
		if err := s.State.Ack(p.pb); err != nil {
			s.pending = s.pending[n:]
			return fmt.Errorf("mqtt: ack: %w", err)
		}
		n++
	}
	s.pending = s.pending[n:]
	return nil
}

// mqttInput subscribes to a topic filter in a persistent session named
// after the pipeline.
type mqttInput struct {
	cl   *paho.Client
	sub  paho.SubscribeOptions
	sess *mqttSession
	msgs chan mqttMsg
	done chan struct{}
	once sync.Once
}

type mqttMsg struct {
	seq     uint64
	payload []byte
}

func newMQTTInput(ctx context.Context, cfg *config.MQTTConn, clientID string) (*mqttInput, error) {
	in := &mqttInput{
		sess: &mqttSession{State: state.NewInMemory()},
		msgs: make(chan mqttMsg, 2*batchRecords),
		done: make(chan struct{}),
	}
	onPublish := func(pr paho.PublishReceived) (bool, error) {
		in.sess.mu.Lock()
		in.sess.last++
		seq := in.sess.last
		in.sess.mu.Unlock()
		select {
		case in.msgs <- mqttMsg{seq, pr.Packet.Payload}:
		case <-in.done:
		}
		return true, nil
	}
	cl, err := mqttConnect(ctx, cfg.URL, clientID, true, in.sess, onPublish)
	if err != nil {
		return nil, err
	}
	in.cl = cl
	in.sub = paho.SubscribeOptions{Topic: cfg.Topic, QoS: mqttQoS(cfg)}
	if err := in.subscribe(ctx); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

func (in *mqttInput) subscribe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sa, err := in.cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{in.sub}})
	if err == nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
		err = fmt.Errorf("refused (reason %d)", sa.Reasons[0])
	}
	if err != nil {
		return fmt.Errorf("mqtt: subscribe %s: %w", in.sub.Topic, err)
	}
	return nil
}

func (in *mqttInput) Next(ctx context.Context) ([]*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := time.NewTimer(brokerWait)
	defer t.Stop()
	var out []*Record
	add := func(m mqttMsg) {
		out = append(out, &Record{Fields: decodeMessage(m.payload), Pos: json.RawMessage(strconv.FormatUint(m.seq, 10))})
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, nil
	case <-in.cl.Done():
		return nil, errors.New("mqtt: the connection to the broker was lost")
	case m := <-in.msgs:
		add(m)
	}
	for len(out) < batchRecords {
		select {
		case m := <-in.msgs:
			add(m)
		default:
			return out, nil
		}
	}
	return out, nil
}

func (in *mqttInput) Commit(_ context.Context, pos json.RawMessage) error {
	seq, err := strconv.ParseUint(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("mqtt: position %s: %w", pos, err)
	}
	return in.sess.commit(seq)
}

func (in *mqttInput) Close() error {
	in.once.Do(func() { close(in.done) })
	// The broker handles a client's packets in order: the answer to a
	// repeated subscription (one that sends no retained messages) means it
	// has taken the acknowledgements sent before. Closing at once could
	// lose them with the connection.
	in.sub.RetainHandling = 2
	_ = in.subscribe(context.Background())
	// A normal disconnect keeps the session: the broker holds on to what
	// was not acknowledged, and to what arrives meanwhile.
	return in.cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// mqttOutput publishes each record's JSON to the topic, waiting for the
// broker's acknowledgement at QoS 1 and 2.
type mqttOutput struct {
	mu    sync.Mutex
	cl    *paho.Client
	topic string
	qos   byte
}

func newMQTTOutput(ctx context.Context, cfg *config.MQTTConn, clientID string) (*mqttOutput, error) {
	cl, err := mqttConnect(ctx, cfg.URL, clientID, false, nil, nil)
	if err != nil {
		return nil, err
	}
	return &mqttOutput{cl: cl, topic: cfg.Topic, qos: mqttQoS(cfg)}, nil
}

func (o *mqttOutput) Write(ctx context.Context, recs []*Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	format := byte(1) // UTF-8 text
	for _, r := range recs {
		b, err := encodeMessage(r)
		if err != nil {
			return err
		}
		resp, err := o.cl.Publish(ctx, &paho.Publish{
			Topic: o.topic, QoS: o.qos, Payload: b,
			Properties: &paho.PublishProperties{ContentType: "application/json", PayloadFormat: &format},
		})
		if err != nil {
			return fmt.Errorf("mqtt: publish: %w", err)
		}
		if resp != nil && resp.ReasonCode >= 0x80 {
			return fmt.Errorf("mqtt: publish refused (reason %d)", resp.ReasonCode)
		}
	}
	return nil
}

func (o *mqttOutput) Close() error {
	return o.cl.Disconnect(&paho.Disconnect{ReasonCode: 0})
}
