package webhook

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/genimg/genimg/storage"
)

// DefaultMemory is how many ids a Replay guard remembers in memory.
const DefaultMemory = 10000

// A Replay guard rejects webhook ids seen before. The record that decides
// is a create-only object gs://BUCKET/webhooks/<sha256(id)>, shared by every
// instance: the first Check to create it wins, every other one (any
// instance, any time until the lifecycle rule deletes it) gets ErrReplay.
// An in-memory LRU in front answers repeats seen by this instance without
// a request to Cloud Storage. It is safe for concurrent use.
//
// Why reject, not replay the answer: Standard Webhooks senders keep the
// webhook-id when they retry a delivery, so a retry after a lost answer is
// rejected too (409). Callers who retry should set a job id
// (Idempotency-Key): the retry can then poll GET ?id= for the record, and a
// resubmission under a new webhook-id with the same job id is idempotent
// anyway. A caller without a job id gets a new job per accepted request, so
// accepting a replay would pay twice.
type Replay struct {
	objects *storage.Objects
	// keep is how long an id must be remembered: a request is accepted
	// while its timestamp is within tolerance, so a replay of it can come
	// up to 2 × tolerance after the first arrival.
	keep time.Duration
	now  func() time.Time
	// timeout bounds one Check, the client's retries included: the caller
	// is waiting on an HTTP request.
	timeout time.Duration

	mu     sync.Mutex
	max    int
	order  *list.List // of *seen, most recent first
	byHash map[string]*list.Element
}

type seen struct {
	hash string
	at   time.Time
}

// A ReplayOption changes a Replay guard built by NewReplay.
type ReplayOption func(*Replay)

// WithMemory sets how many ids are remembered in memory (DefaultMemory).
func WithMemory(n int) ReplayOption { return func(r *Replay) { r.max = max(n, 1) } }

// WithReplayClock replaces time.Now, for tests of expiry.
func WithReplayClock(now func() time.Time) ReplayOption { return func(r *Replay) { r.now = now } }

// DefaultCheckTimeout bounds one Check unless WithTimeout says otherwise.
const DefaultCheckTimeout = 10 * time.Second

// WithTimeout bounds one Check, the client's own retries of the record's
// write included (DefaultCheckTimeout). Tests shorten it.
func WithTimeout(d time.Duration) ReplayOption {
	return func(r *Replay) { r.timeout = d }
}

// NewReplay builds a Replay guard recording ids in objects (the output
// bucket, under storage.WebhooksPrefix: the deployment gives it a lifecycle
// rule that deletes records after a day, and a record only needs to outlive
// twice the tolerance) for requests accepted within tolerance.
func NewReplay(objects *storage.Objects, tolerance time.Duration, opts ...ReplayOption) *Replay {
	r := &Replay{
		objects: objects, keep: 2 * tolerance, now: time.Now,
		timeout: DefaultCheckTimeout, max: DefaultMemory, order: list.New(), byHash: map[string]*list.Element{},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Check records id as used. It returns nil the first time an id is seen
// by any instance; an error wrapping ErrReplay after that; an error
// wrapping job.ErrTransient when Cloud Storage cannot be asked (answer 503:
// the caller retries later), or job.ErrPermanent when the instance may not
// write the bucket. Call it only after Verify succeeded, so that
// unauthenticated requests cannot fill the bucket.
func (r *Replay) Check(ctx context.Context, id string) error {
	name := storage.WebhookObject(id)
	hash := name[len(storage.WebhooksPrefix):]
	if r.remembered(hash) {
		return fmt.Errorf("%w: %s was seen by this instance", ErrReplay, HeaderID)
	}
	// The deadline bounds the write with the client's retries: the caller
	// is waiting on an HTTP request.
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err := r.objects.Put(ctx, name, nil, storage.Put{If: storage.CreateOnly, ContentType: "text/plain"})
	switch {
	case err == nil:
		r.remember(hash)
		return nil
	case errors.Is(err, storage.ErrPrecondition):
		r.remember(hash)
		first := ""
		if a, serr := r.objects.Stat(ctx, name); serr == nil {
			first = " (first seen " + a.Created.UTC().Format(time.RFC3339) + ")"
		}
		return fmt.Errorf("%w: %s was already used%s", ErrReplay, HeaderID, first)
	default:
		return fmt.Errorf("webhook replay record: %w", err)
	}
}

// remembered reports whether hash was seen by this instance within keep.
func (r *Replay) remembered(hash string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byHash[hash]
	if !ok {
		return false
	}
	if r.now().Sub(e.Value.(*seen).at) > r.keep {
		// Past the window the in-memory copy is of no use; Cloud Storage
		// still decides until the lifecycle rule deletes the record.
		r.order.Remove(e)
		delete(r.byHash, hash)
		return false
	}
	return true
}

func (r *Replay) remember(hash string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byHash[hash]; ok {
		r.order.MoveToFront(e)
		return
	}
	r.byHash[hash] = r.order.PushFront(&seen{hash: hash, at: r.now()})
	for r.order.Len() > r.max {
		last := r.order.Back()
		r.order.Remove(last)
		delete(r.byHash, last.Value.(*seen).hash)
	}
}
