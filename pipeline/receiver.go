package pipeline

// Receiver passes the records posted to a pipeline over HTTP to its
// http_server input.
type Receiver struct{}
