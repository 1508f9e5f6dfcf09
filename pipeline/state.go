package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// The Stateful processors' state is saved with each checkpoint. Small
// state (the usual: open windows of a few thousand keys) goes inside
// the checkpoint's KV entry, so that position and state change in one
// write. Larger state would pass the server's largest message, so it
// goes to an object of the state bucket, named in the checkpoint: the
// run alternates between two objects, so that the one the saved
// checkpoint names is never the one being replaced.
const (
	inlineStateMax    = 256 << 10
	stateBucketSuffix = "_pipeline_state"
)

// putState records states (by processor index) in ck, before ck is
// saved.
func (m *Manager) putState(ctx context.Context, name string, ck *checkpoint, states map[int][]byte) error {
	size := 0
	for _, b := range states {
		size += len(b)
	}
	if size <= inlineStateMax {
		ck.State, ck.StateObject = states, ""
		return nil
	}
	obs, err := m.stateStore(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(states)
	if err != nil {
		return err
	}
	obj := stateObject(name, ck.RunID, 0)
	if ck.StateObject == obj || strings.HasSuffix(ck.StateObject, ".0") {
		obj = stateObject(name, ck.RunID, 1)
	}
	if _, err := obs.PutBytes(ctx, obj, b); err != nil {
		return fmt.Errorf("saving the processors' state (%d bytes): %w", len(b), err)
	}
	ck.State, ck.StateObject = nil, obj
	return nil
}

// getState returns the states a checkpoint recorded.
func (m *Manager) getState(ctx context.Context, ck *checkpoint) (map[int][]byte, error) {
	if ck.StateObject == "" {
		return ck.State, nil
	}
	obs, err := m.stateStore(ctx)
	if err != nil {
		return nil, err
	}
	b, err := obs.GetBytes(ctx, ck.StateObject)
	if err != nil {
		return nil, fmt.Errorf("reading the processors' state %s: %w", ck.StateObject, err)
	}
	var st map[int][]byte
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("the processors' state %s: %w", ck.StateObject, err)
	}
	return st, nil
}

// dropState deletes the objects a run's state may have used, once the
// run is over.
func (m *Manager) dropState(ctx context.Context, name string, ck *checkpoint) error {
	if ck.StateObject == "" && !m.usedStateStore() {
		return nil
	}
	obs, err := m.stateStore(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for g := range 2 {
		if err := obs.Delete(ctx, stateObject(name, ck.RunID, g)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func stateObject(pipeline, run string, gen int) string {
	return fmt.Sprintf("%s.%s.%d", pipeline, run, gen)
}

// stateStore opens the state bucket, creating it the first time a
// state needs it.
func (m *Manager) stateStore(ctx context.Context) (jetstream.ObjectStore, error) {
	m.obsMu.Lock()
	defer m.obsMu.Unlock()
	if m.obs != nil {
		return m.obs, nil
	}
	obs, err := m.o.Env.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      m.o.Env.Prefix + stateBucketSuffix,
		Description: "Junction pipelines: processors' state (open windows) too large for a checkpoint",
	})
	if err != nil {
		return nil, fmt.Errorf("state bucket: %w", err)
	}
	m.obs = obs
	return obs, nil
}

func (m *Manager) usedStateStore() bool {
	m.obsMu.Lock()
	defer m.obsMu.Unlock()
	return m.obs != nil
}

// restoreStates hands each Stateful processor its state from the
// checkpoint of the run being resumed.
func restoreStates(procs []Processor, states map[int][]byte) error {
	for i, b := range states {
		var s Stateful
		if i >= 0 && i < len(procs) {
			s, _ = procs[i].(Stateful)
		}
		if s == nil {
			return fmt.Errorf("the interrupted run saved a state for processors[%d], which holds none now: the pipeline changed (run it again to start over)", i)
		}
		if err := s.Restore(b); err != nil {
			return fmt.Errorf("processors[%d]: restoring the interrupted run's state: %w (run it again to start over)", i, err)
		}
	}
	return nil
}
