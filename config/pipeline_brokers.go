package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Checks of the broker inputs and outputs: Kafka, RabbitMQ, MQTT and
// Redis streams.
func init() {
	inputChecks["kafka"] = func(in *PipelineInput, _ exprCheck, path string) []issue {
		k := in.Kafka
		is := checkKafka(k, path)
		if k.Key != "" {
			is = append(is, brokerIssue(path+".key", "key is for kafka outputs: an input reads the messages' values"))
		}
		return is
	}
	outputChecks["kafka"] = func(o *PipelineOutput, c exprCheck, path string) []issue {
		k := o.Kafka
		is := checkKafka(k, path)
		if k.Group != "" {
			is = append(is, brokerIssue(path+".group", "group is for kafka inputs"))
		}
		c.cel(path+".key", k.Key, false)
		return is
	}
	inputChecks["rabbitmq"] = func(in *PipelineInput, _ exprCheck, path string) []issue {
		r := in.RabbitMQ
		is := checkURL(path+".url", r.URL, "amqp", "amqps")
		if r.Queue == "" {
			is = append(is, brokerIssue(path+".queue", "a rabbitmq input needs the queue to consume"))
		}
		if r.Exchange != "" || r.RoutingKey != "" {
			is = append(is, brokerIssue(path, "exchange and routing_key are for rabbitmq outputs: an input consumes a queue (bind it to the exchange in the broker)"))
		}
		return is
	}
	outputChecks["rabbitmq"] = func(o *PipelineOutput, _ exprCheck, path string) []issue {
		r := o.RabbitMQ
		is := checkURL(path+".url", r.URL, "amqp", "amqps")
		switch {
		case r.Exchange == "" && r.RoutingKey == "" && r.Queue == "":
			is = append(is, brokerIssue(path+".routing_key", "a rabbitmq output needs an exchange and routing_key, or the queue to send to"))
		case r.Exchange != "" && r.Queue != "":
			is = append(is, brokerIssue(path+".queue", "queue sends through the default exchange: use either exchange and routing_key, or queue"))
		case r.Queue != "" && r.RoutingKey != "" && r.Queue != r.RoutingKey:
			is = append(is, brokerIssue(path+".queue", "with the default exchange the routing key is the queue: set one of queue and routing_key"))
		}
		return is
	}
	inputChecks["mqtt"] = func(in *PipelineInput, _ exprCheck, path string) []issue {
		return checkMQTT(in.MQTT, path, true)
	}
	outputChecks["mqtt"] = func(o *PipelineOutput, _ exprCheck, path string) []issue {
		return checkMQTT(o.MQTT, path, false)
	}
	inputChecks["redis"] = func(in *PipelineInput, _ exprCheck, path string) []issue {
		return checkRedis(in.Redis, path)
	}
	outputChecks["redis"] = func(o *PipelineOutput, _ exprCheck, path string) []issue {
		r := o.Redis
		is := checkRedis(r, path)
		if r.Group != "" || r.Consumer != "" {
			is = append(is, brokerIssue(path, "group and consumer are for redis inputs"))
		}
		return is
	}
}

func brokerIssue(field, format string, args ...any) issue {
	return issue{Issue: Issue{field, fmt.Sprintf(format, args...)}}
}

// checkURL checks that raw is a URL of one of the schemes, with a host.
func checkURL(field, raw string, schemes ...string) []issue {
	if raw == "" {
		return []issue{brokerIssue(field, "a url is needed: %s://host:port", schemes[0])}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return []issue{brokerIssue(field, "invalid url: %v", err)}
	}
	if !containsStr(schemes, u.Scheme) {
		return []issue{brokerIssue(field, "url scheme %q: use %s", u.Scheme, strings.Join(schemes, ", "))}
	}
	if u.Host == "" {
		return []issue{brokerIssue(field, "the url %q has no host", raw)}
	}
	return nil
}

func checkKafka(k *KafkaConn, path string) []issue {
	var is []issue
	if len(k.Brokers) == 0 {
		is = append(is, brokerIssue(path+".brokers", "kafka needs brokers: a list of host:port"))
	}
	for i, b := range k.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			is = append(is, brokerIssue(fmt.Sprintf("%s.brokers[%d]", path, i), "broker %q: want host:port", b))
		}
	}
	if k.Topic == "" {
		is = append(is, brokerIssue(path+".topic", "kafka needs a topic"))
	} else if !validKafkaTopic(k.Topic) {
		is = append(is, brokerIssue(path+".topic", "invalid kafka topic %q: use letters, digits, '.', '_' and '-', at most 249", k.Topic))
	}
	return is
}

func validKafkaTopic(t string) bool {
	if len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func checkMQTT(m *MQTTConn, path string, input bool) []issue {
	is := checkURL(path+".url", m.URL, "mqtt", "tcp", "mqtts", "ssl", "tls")
	switch {
	case m.Topic == "":
		is = append(is, brokerIssue(path+".topic", "mqtt needs a topic"))
	case !input && strings.ContainsAny(m.Topic, "+#"):
		is = append(is, brokerIssue(path+".topic", "an output publishes to one topic: %q has a wildcard", m.Topic))
	case input && !validMQTTFilter(m.Topic):
		is = append(is, brokerIssue(path+".topic", "invalid topic filter %q: '#' only as the last level, '+' only as a whole level", m.Topic))
	}
	if m.QoS != nil && (*m.QoS < 0 || *m.QoS > 2) {
		is = append(is, brokerIssue(path+".qos", "qos is 0, 1 or 2, not %d", *m.QoS))
	}
	return is
}

func validMQTTFilter(f string) bool {
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

func checkRedis(r *RedisConn, path string) []issue {
	is := checkURL(path+".url", r.URL, "redis", "rediss")
	if r.Stream == "" {
		is = append(is, brokerIssue(path+".stream", "redis needs a stream"))
	}
	return is
}
