package workflow

import "sync"

// runCache keeps, per run, the state a node last committed, so the next
// turn on that run here starts without reading its history. A turn
// takes the state out (one owner at a time) and puts it back when it
// ends. A cached state may be stale (another node moved the run): a
// decision from it then either conflicts on append, or decides nothing,
// and both make the turn read the history (see work.commit).
type runCache struct {
	mu   sync.Mutex
	idle map[string]cachedRun
	busy map[string]int // turns in progress on this node
}

type cachedRun struct {
	run *Run
	def *Definition
}

// maxCached bounds the cache; beyond it an arbitrary entry goes.
const maxCached = 20000

func (c *runCache) checkout(id string) (cachedRun, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy == nil {
		c.busy = map[string]int{}
	}
	c.busy[id]++
	cr, ok := c.idle[id]
	delete(c.idle, id)
	return cr, ok
}

// checkin ends a turn; a run that has not ended is kept for the next.
func (c *runCache) checkin(id string, r *Run, d *Definition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[id]--; c.busy[id] <= 0 {
		delete(c.busy, id)
	}
	if r != nil && !r.Terminal() {
		c.keep(id, cachedRun{r, d})
	}
}

func (c *runCache) put(id string, r *Run, d *Definition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keep(id, cachedRun{r, d})
}

func (c *runCache) keep(id string, cr cachedRun) {
	if c.idle == nil {
		c.idle = map[string]cachedRun{}
	}
	if len(c.idle) >= maxCached {
		for k := range c.idle {
			delete(c.idle, k)
			break
		}
	}
	c.idle[id] = cr
}

// local reports whether this node holds or works on run id: its end will
// most likely be recorded here.
func (c *runCache) local(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.idle[id]
	return ok || c.busy[id] > 0
}
