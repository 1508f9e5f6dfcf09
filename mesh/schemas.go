package mesh

// JSON Schemas for the OpenAPI document. They describe the wire shapes of
// api.go.

type obj = map[string]any

func arrayOf(s obj) obj { return obj{"type": "array", "items": s} }

var (
	str      = obj{"type": "string"}
	integer  = obj{"type": "integer"}
	boolean  = obj{"type": "boolean"}
	strMap   = obj{"type": "object", "additionalProperties": str}
	duration = obj{"type": "string", "description": "Go duration, e.g. 1.5s"}

	registrationSchema = obj{"type": "object", "additionalProperties": false, "required": []string{"url"}, "properties": obj{
		"url": str, "ttl": duration, "weight": integer, "mtls": boolean, "metadata": strMap}}
	instanceSchema = obj{"type": "object", "properties": obj{
		"id": str, "url": str, "source": obj{"enum": []string{"static", "registered"}}, "weight": integer, "mtls": boolean,
		"metadata": strMap, "health": obj{"enum": []string{"unknown", "healthy", "unhealthy"}}, "health_error": str,
		"ejected": boolean, "ejected_until": str, "breaker": str, "in_flight": integer, "latency": duration,
		"available": boolean, "registered_at": str, "expires_at": str}}
	serviceSchema = obj{"type": "object", "properties": obj{
		"name": str, "source": obj{"enum": []string{"config", "registry"}}, "balancer": str, "policy": str,
		"breaker": str, "in_flight": integer, "instances": arrayOf(instanceSchema)}}
)
