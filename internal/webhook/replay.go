package webhook

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// Prefix is the folder of the output bucket where the Replay guard
// records webhook ids. The deployment gives it a lifecycle rule that
// deletes objects under it after one day (the shortest age a rule can
// have); a record only needs to outlive twice the tolerance.
const Prefix = "webhooks/"

// metaOwner marks which Check wrote a record, so that a create-only write
// the client retried after a lost answer is recognised as its own.
const metaOwner = "genimg-webhook-owner"

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
	client *gcs.Client
	bucket string
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

// NewReplay builds a Replay guard recording ids in bucket (the output
// bucket) for requests accepted within tolerance.
func NewReplay(client *gcs.Client, bucket string, tolerance time.Duration, opts ...ReplayOption) *Replay {
	r := &Replay{
		client: client, bucket: bucket, keep: 2 * tolerance, now: time.Now,
		timeout: DefaultCheckTimeout, max: DefaultMemory, order: list.New(), byHash: map[string]*list.Element{},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// ObjectName is where the record of a webhook id lives: the id is hashed,
// so that no caller-chosen text becomes an object name.
func ObjectName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return Prefix + hex.EncodeToString(sum[:])
}

// Check records id as used. It returns nil the first time an id is seen
// by any instance; an error wrapping ErrReplay after that; an error
// wrapping job.ErrTransient when Cloud Storage cannot be asked (answer 503:
// the caller retries later), or job.ErrPermanent when the instance may not
// write the bucket. Call it only after Verify succeeded, so that
// unauthenticated requests cannot fill the bucket.
func (r *Replay) Check(ctx context.Context, id string) error {
	name := ObjectName(id)
	hash := name[len(Prefix):]
	if r.remembered(hash) {
		return fmt.Errorf("%w: %s was seen by this instance", ErrReplay, HeaderID)
	}

	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
	owner := hex.EncodeToString(nonce)
	obj := r.client.Bucket(r.bucket).Object(name)
	// The deadline also cancels an abandoned Writer: it never commits later.
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	w := obj.If(gcs.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.ChunkSize = storage.DefaultChunkSize // never 0: that turns off the client's retries
	w.ContentType = "text/plain"
	w.Metadata = map[string]string{
		storage.MetaGeneratedBy: storage.GeneratedBy, // never an upload job
		metaOwner:               owner,
	}
	err := w.Close()
	switch {
	case err == nil:
		r.remember(hash)
		return nil
	case isPrecondition(err):
		// Someone holds the id, or our own first try committed and the
		// client's retry met it: read it back before calling it a replay.
		attrs, aerr := obj.Attrs(ctx)
		if aerr != nil {
			return classify(aerr)
		}
		r.remember(hash)
		if attrs.Metadata[metaOwner] == owner {
			return nil
		}
		return fmt.Errorf("%w: %s was already used (first seen %s)", ErrReplay, HeaderID, attrs.Created.UTC().Format(time.RFC3339))
	default:
		return classify(err)
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

func isPrecondition(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == 412
}

// classify wraps a Cloud Storage error in genimg's categories, once, here.
func classify(err error) error {
	var ge *googleapi.Error
	if errors.As(err, &ge) && (ge.Code == 401 || ge.Code == 403) {
		// A missing permission is the deployment's, not fixed by a retry.
		return fmt.Errorf("webhook replay record: %w: %w", job.ErrPermanent, err)
	}
	// Anything else (5xx, 429, network, deadline) may pass: the caller
	// retries the request.
	return fmt.Errorf("webhook replay record: %w: %w", job.ErrTransient, err)
}
