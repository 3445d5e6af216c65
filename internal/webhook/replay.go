package webhook

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/genimg/genimg/storage"
)

// DefaultMemory is how many ids a Replay guard remembers in memory.
const DefaultMemory = 10000

// A Replay guard remembers the signed requests genimg has taken, by
// webhook-id, so that a retry of one (Standard Webhooks senders keep the
// webhook-id when they retry) gets the answer the first would get now
// rather than running again, and the same webhook-id with another body is
// refused (ErrReplay, 409). The record that decides is a create-only object
// gs://BUCKET/webhooks/<sha256(id)> holding the body's SHA-256, shared by
// every instance, written only once the request's work is durable: a
// request that failed before that can simply be retried. An in-memory LRU
// in front answers ids this instance has seen without a request to Cloud
// Storage. It is safe for concurrent use.
type Replay struct {
	objects *storage.Objects
	// keep is how long an id must be remembered: a request is accepted
	// while its timestamp is within tolerance, so a replay of it can come
	// up to 2 × tolerance after the first arrival.
	keep time.Duration
	now  func() time.Time
	// timeout bounds one look-up or record, the client's retries included:
	// the caller is waiting on an HTTP request.
	timeout time.Duration

	mu     sync.Mutex
	max    int
	order  *list.List // of *seen, most recent first
	byHash map[string]*list.Element
}

type seen struct {
	hash string
	at   time.Time
	what Seen
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

// Seen is what genimg keeps of a signed request it has taken: the SHA-256
// of its body, and the job it became (empty for a batch).
type Seen struct {
	Body  string `json:"body"`
	JobID string `json:"jobId,omitempty"`
}

// maxSeenBytes bounds a record's read.
const maxSeenBytes = 4 << 10

// Seen looks a webhook id up: ok is false when no instance has taken a
// request with it. Errors wrap job.ErrTransient (Cloud Storage cannot be
// asked: the caller retries later) or job.ErrPermanent.
func (r *Replay) Seen(ctx context.Context, id string) (Seen, bool, error) {
	name := storage.WebhookObject(id)
	if s, ok := r.recall(name); ok {
		return s, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	data, _, err := r.objects.Get(ctx, name, maxSeenBytes)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return Seen{}, false, nil
	case err != nil:
		return Seen{}, false, fmt.Errorf("webhook replay record: %w", err)
	}
	var s Seen
	if err := json.Unmarshal(data, &s); err != nil {
		// Not ours to read (an older, empty record): a replay of unknown
		// content.
		s = Seen{}
	}
	r.keepInMemory(name, s)
	return s, true, nil
}

// Remember records that a request with id was taken, once its work is
// durable: create-only, so that of two requests racing with one id and
// different bodies, one is remembered and the other's retries are refused.
// An existing record of the same body is not an error.
func (r *Replay) Remember(ctx context.Context, id string, s Seen) error {
	name := storage.WebhookObject(id)
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err = r.objects.Put(ctx, name, data, storage.Put{If: storage.CreateOnly, ContentType: "application/json"})
	switch {
	case err == nil:
		r.keepInMemory(name, s)
		return nil
	case errors.Is(err, storage.ErrPrecondition):
		got, _, serr := r.Seen(ctx, id)
		if serr != nil {
			return serr
		}
		if got.Body != s.Body {
			return fmt.Errorf("%w: %s was already used for a request with another body", ErrReplay, HeaderID)
		}
		return nil
	default:
		return fmt.Errorf("webhook replay record: %w", err)
	}
}

// recall answers what this instance remembers of name within keep.
func (r *Replay) recall(name string) (Seen, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.byHash[name]
	if !ok {
		return Seen{}, false
	}
	if r.now().Sub(e.Value.(*seen).at) > r.keep {
		// Past the window the in-memory copy is of no use; Cloud Storage
		// still decides until the lifecycle rule deletes the record.
		r.order.Remove(e)
		delete(r.byHash, name)
		return Seen{}, false
	}
	return e.Value.(*seen).what, true
}

func (r *Replay) keepInMemory(name string, s Seen) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.byHash[name]; ok {
		r.order.MoveToFront(e)
		return
	}
	r.byHash[name] = r.order.PushFront(&seen{hash: name, at: r.now(), what: s})
	for r.order.Len() > r.max {
		last := r.order.Back()
		r.order.Remove(last)
		delete(r.byHash, last.Value.(*seen).hash)
	}
}
