package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/junctionhq/junction/config"
)

// Static makes name a declared service whose instances are exactly urls,
// for callers that name their upstreams by URL (gateway routes with
// url:). Calling it again replaces the instances: those still listed
// keep their statistics and breakers. The service has the default
// policy and balancer.
func (m *Mesh) Static(name string, urls []string) error {
	for _, u := range urls {
		if err := config.CheckInstanceURL(u); err != nil {
			return fmt.Errorf("service %s: %w", name, err)
		}
	}
	m.mu.Lock()
	s := m.services[name]
	if s == nil {
		s = m.newService(name, config.Service{}, true)
		m.services[name] = s
	}
	m.mu.Unlock()
	keep := map[string]bool{}
	for _, u := range urls {
		h := sha256.Sum256([]byte(u))
		id := "url-" + hex.EncodeToString(h[:6]) // stable across reloads and reorderings
		keep[id] = true
		m.upsert(s, id, u, 1, SourceStatic, false, nil)
	}
	s.mu.Lock()
	var drop []string
	for id := range s.instances {
		if !keep[id] {
			drop = append(drop, id)
		}
	}
	s.mu.Unlock()
	for _, id := range drop {
		m.remove(s, id)
	}
	return nil
}
