package junction

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"reflect"
	"time"

	"github.com/junctionhq/junction/config"
)

// WithConfigFile names the file the node's config was loaded from, so
// that Reload (SIGHUP for junction serve) and a change of the file apply
// its gateway routes without a restart. adjust, if not nil, re-applies to
// every reloaded config what the command line overrode.
func WithConfigFile(path string, adjust func(*config.Config)) Option {
	return func(o *nodeOptions) { o.cfgFile, o.adjust = path, adjust }
}

// ConfigWatchInterval is how often the node looks for a change of its
// config file.
var ConfigWatchInterval = time.Second

// Reload reads the config file again and swaps the gateway's routes and
// middleware at once; requests in flight finish on the routes they
// started with. A file that does not load or validate is refused, each
// problem logged with its file:line:col, and the running config stays.
// Changes to anything else are logged as needing a restart.
func (n *Node) Reload() error {
	if n.cfgFile == "" {
		return errors.New("reload: the node was not started from a config file")
	}
	cfg, err := config.Load(n.cfgFile)
	if err == nil && n.adjust != nil {
		n.adjust(cfg)
		err = cfg.Validate()
	}
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				n.log.Error("config reload refused; the running config stays", "error", e.Error())
			}
		} else {
			n.log.Error("config reload refused; the running config stays", "error", err.Error())
		}
		return err
	}
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	old := n.running
	switch {
	case n.gateway == nil && len(cfg.Gateway.Routes) > 0:
		n.log.Warn("the gateway starts with the node: restart to serve gateway.routes")
	case n.gateway != nil:
		if cfg.Gateway.Listen != old.Gateway.Listen || cfg.Gateway.TLS != old.Gateway.TLS {
			n.log.Warn("gateway.listen and gateway.tls take effect at the next restart")
		}
		if err := n.gateway.gw.Reload(cfg.Gateway); err != nil {
			n.log.Error("config reload refused; the running config stays", "error", err.Error())
			return err
		}
		n.log.Info("gateway reloaded", "routes", len(cfg.Gateway.Routes), "file", n.cfgFile)
	}
	a, b := *old, *cfg
	a.Gateway, b.Gateway = config.Gateway{}, config.Gateway{}
	if !reflect.DeepEqual(a, b) {
		n.log.Warn("config changes outside gateway take effect at the next restart", "file", n.cfgFile)
	}
	n.running = cfg
	return nil
}

// watchConfig reloads when the config file's content changes, until ctx
// ends. Editors often replace a file rather than write it, so the file is
// looked at by name, not followed by a watch on what it was.
func (n *Node) fileSum() []byte {
	b, err := os.ReadFile(n.cfgFile)
	if err != nil {
		return nil
	}
	h := sha256.Sum256(b)
	return h[:]
}

// watchConfig reloads when the file's content differs from last. The
// first sum is taken before the node reports that it started, so a
// change made once it has is never taken for the starting state.
func (n *Node) watchConfig(ctx context.Context, last []byte) {
	sum := n.fileSum
	t := time.NewTicker(ConfigWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := sum()
		if s == nil || bytes.Equal(s, last) {
			continue
		}
		last = s
		n.log.Info("config file changed: reloading", "file", n.cfgFile)
		_ = n.Reload() // refusals are logged
	}
}

func (n *Node) startWatch() {
	if n.cfgFile == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.stopWatch = cancel
	go n.watchConfig(ctx, n.fileSum())
}
