// Package resilience holds the small failure-handling primitives that the
// mesh, gateway, workflows and pipelines share: a circuit breaker, a
// bulkhead, a retry budget and retry with exponential backoff.
//
// Every primitive that depends on time takes a Clock, so tests drive windows,
// open periods and backoff with a FakeClock instead of waiting. No primitive
// runs a background goroutine or timer: windows slide and the breaker changes
// state lazily, from the Clock, when a method is called. All types are safe
// for concurrent use.
package resilience
