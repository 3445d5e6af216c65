package pipeline

import (
	"sync"
	"sync/atomic"

	"github.com/genimg/genimg/job"
)

// Waiting for a job in process. Generate queues its job and waits for the
// record; when the instance that runs the job is this one (the local stack,
// and often production, where the push subscription reaches the instance
// that queued the job), the run tells the waiter directly instead of the
// waiter reading the record from Cloud Storage again and again. The record
// in Cloud Storage stays the truth: a waiter whose job runs elsewhere, or
// whose run here ends without a record (a transient error, redelivered to
// any instance), goes on reading it, with backoff.

// A Watch is one waiter's view of a job id on this instance.
type Watch struct {
	id string
	w  *watch
	n  *notifier
}

type watch struct {
	refs int
	// done carries the published record (buffered: the run never blocks).
	done chan job.Record
	// change wakes the waiter when a run here starts or ends.
	change  chan struct{}
	running atomic.Int32
}

// Done delivers the job's record once this instance has published it.
func (w *Watch) Done() <-chan job.Record { return w.w.done }

// Changed is signalled when a run of the job starts or ends here.
func (w *Watch) Changed() <-chan struct{} { return w.w.change }

// Running reports whether this instance is running the job now.
func (w *Watch) Running() bool { return w.w.running.Load() > 0 }

// Close ends the watch.
func (w *Watch) Close() {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	if w.w.refs--; w.w.refs == 0 {
		delete(w.n.m, w.id)
	}
}

// notifier holds the watches of one Service; its zero value is ready.
type notifier struct {
	mu sync.Mutex
	m  map[string]*watch
}

// Watch starts watching job id. Call it before the job is queued, so that
// no signal is missed; Close it when done waiting.
func (s *Service) Watch(id string) *Watch {
	n := &s.waits
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]*watch{}
	}
	w := n.m[id]
	if w == nil {
		w = &watch{done: make(chan job.Record, 1), change: make(chan struct{}, 1)}
		n.m[id] = w
	}
	w.refs++
	return &Watch{id: id, w: w, n: n}
}

func (n *notifier) get(id string) *watch {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[id]
}

// published tells the job's waiters its record.
func (n *notifier) published(rec job.Record) {
	w := n.get(rec.JobID)
	if w == nil {
		return
	}
	select {
	case w.done <- rec:
	default: // a record is there already; waiters read the stored one
	}
}

// running marks a run of job id on this instance; the returned func ends it.
func (n *notifier) running(id string) func() {
	w := n.get(id)
	if w == nil {
		return func() {}
	}
	w.running.Add(1)
	wake(w.change)
	return func() {
		w.running.Add(-1)
		wake(w.change)
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
