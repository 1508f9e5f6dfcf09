package bus

// JSON Schemas for the OpenAPI document. They describe the wire shapes of
// api.go.

type obj = map[string]any

func arrayOf(s obj) obj { return obj{"type": "array", "items": s} }

var (
	str      = obj{"type": "string"}
	integer  = obj{"type": "integer"}
	boolean  = obj{"type": "boolean"}
	duration = obj{"type": "string", "description": "Go duration, e.g. 1.5s"}

	topicSchema = obj{"type": "object", "additionalProperties": false, "properties": obj{
		"max_age": duration, "max_bytes": integer, "max_msgs": integer, "replicas": integer, "dedup_window": duration}}
	topicInfoSchema = obj{"type": "object", "properties": obj{
		"name": str, "config": topicSchema,
		"stats": obj{"type": "object", "properties": obj{"messages": integer, "bytes": integer, "first_sequence": integer,
			"last_sequence": integer, "first_time": str, "last_time": str, "subscriptions": integer}}}}
	publishResultSchema = obj{"oneOf": []any{
		obj{"type": "object", "properties": obj{"id": str, "sequence": integer, "duplicate": boolean}},
		arrayOf(obj{"type": "object", "properties": obj{"id": str, "sequence": integer, "duplicate": boolean, "error": obj{"$ref": "#/components/schemas/Problem"}}}),
	}}
	subSchema = obj{"type": "object", "additionalProperties": false, "required": []string{"topic"}, "properties": obj{
		"topic": str, "filter": obj{"type": "string", "description": "CEL over event"}, "start": obj{"type": "string", "description": "new, all, seq:N or time:RFC3339"},
		"push":          obj{"type": "object", "properties": obj{"url": str, "timeout": duration, "headers": obj{"type": "object", "additionalProperties": str}}},
		"max_in_flight": integer, "ordered_by_key": boolean, "ack_wait": duration, "max_deliver": integer,
		"backoff": arrayOf(duration), "dead_letter_topic": str}}
	subInfoSchema = obj{"type": "object", "properties": obj{
		"name": str, "config": subSchema,
		"stats": obj{"type": "object", "properties": obj{"pending": integer, "in_flight": integer, "delivered": integer, "redelivered": integer, "dead_lettered": integer}}}}
	pullSchema        = obj{"type": "object", "properties": obj{"max": integer, "wait": duration}}
	wireMessageSchema = obj{"type": "object", "properties": obj{
		"ack_id": str, "id": str, "topic": str, "sequence": integer, "type": str, "source": str, "subject": str, "time": str,
		"key": str, "datacontenttype": str, "deliveries": integer, "headers": obj{"type": "object", "additionalProperties": str},
		"data": obj{}, "data_base64": str}}
	pullResponseSchema = obj{"type": "object", "properties": obj{"messages": arrayOf(wireMessageSchema)}}
	settleSchema       = obj{"type": "object", "required": []string{"ack_ids"}, "properties": obj{"ack_ids": arrayOf(str), "delay": duration}}
	settledSchema      = obj{"type": "object", "properties": obj{"settled": integer}}
	replaySchema       = obj{"type": "object", "properties": obj{"max": integer}}
	replayedSchema     = obj{"type": "object", "properties": obj{"replayed": integer}}
)
