package httpserver

import "sync"

// ProxyBuffers recycles the copy buffers of reverse proxies: without a
// pool, httputil.ReverseProxy allocates (and zeroes) 32 KiB per response,
// which dominates what a proxied request allocates and so how often the
// garbage collector runs.
var ProxyBuffers proxyBuffers

type proxyBuffers struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (proxyBuffers) Get() []byte { return *(buffers.Get().(*[]byte)) }

func (proxyBuffers) Put(b []byte) { buffers.Put(&b) }
