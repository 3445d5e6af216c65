// Package storage is genimg's Cloud Storage edge: it checks and reads input
// images, writes output images and completion records, and keeps each job's
// state under jobs/<jobId>/ in the output bucket so that at-least-once
// delivery pays for a job once and always leaves a state the next delivery
// can finish.
//
// The layout in the output bucket:
//
//	jobs/<id>/claim.json          the lease: owner, attempt, expiry, fingerprint
//	jobs/<id>/attempt-<n>.json    attempt n's draft record (when its record was refused)
//	jobs/<id>/result.json         the completion record; create-only, it decides
//	jobs/<id>/inputs/<sha256>.ext inline inputs staged by the HTTP path
//	<prefix><id>/a<n>-<k>.<ext>   attempt n's k-th image
//
// A job runs as: Claim → Resolve → model call → WriteImages → Commit (which
// writes a draft only when it cannot write the record). Every write that can race is conditional (create-only or
// generation-match), and a conditional write answering 412 is read back
// before it is taken as someone else's, because the client retries
// conditional writes itself and a retry whose first try committed answers
// 412.
package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/googleapis/gax-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// Custom metadata keys genimg sets on every object it writes.
const (
	// MetaJob names the job the object belongs to.
	MetaJob = "genimg-job"
	// MetaSource is the object (with #generation) or message the job came
	// from, when there is one.
	MetaSource = "genimg-source"
	// MetaModel is the model that made an image.
	MetaModel = "genimg-model"
	// MetaPromptSHA256 is the SHA-256 of the prompt, hex; prompts themselves
	// are never stored in metadata.
	MetaPromptSHA256 = "genimg-prompt-sha256"
	// MetaGeneratedBy is the loop-guard marker: an object carrying it with
	// value GeneratedBy was written by genimg and is never taken for a job.
	MetaGeneratedBy = "genimg-generated-by"
	// GeneratedBy is MetaGeneratedBy's value.
	GeneratedBy = "genimg"
	// metaRun ties a draft to the run of the job it belongs to: the
	// generation of the result.json a reclaiming run replaces, or 0.
	metaRun = "genimg-run"
)

// IsGenerated reports whether an object's custom metadata marks it as
// written by genimg (the upload loop guard).
func IsGenerated(metadata map[string]string) bool {
	return metadata[MetaGeneratedBy] == GeneratedBy
}

// DefaultChunkSize is the upload buffer per writer when the configuration
// leaves it unset: the client's own default is 16 MiB per writer, enough to
// exhaust a small instance under concurrency, and 0 would disable retries.
const DefaultChunkSize = 256 << 10

// DefaultUploadRetryDeadline bounds one upload with its retries: the
// client's own per-chunk retry deadline (32 s), applied to every upload.
const DefaultUploadRetryDeadline = 32 * time.Second

// A Store reads inputs and writes outputs and job state. It is safe for
// concurrent use; build one per instance and share it.
type Store struct {
	client  *gcs.Client
	owned   bool // Close closes client
	output  *Objects
	cfg     config.Storage
	limits  config.Limits
	backend job.Backend
	owner   string
	now     func() time.Time
	// spooled is the budget of output images held in memory
	// (cfg.SpoolBytes).
	spooled spoolBudget
	// retryDeadline bounds one upload with the client's own retries: the
	// client retries a single-request upload until its context ends, so
	// without this a storage outage would hold a write until the function
	// times out.
	retryDeadline time.Duration
	// backoff and attempts pace the retries of one-request writes (WithRetry).
	backoff  gax.Backoff
	attempts int
	// queued are the queued claims this instance wrote (Queue), for its own
	// Claim of the job moments later.
	queued queuedClaims
}

// An Option changes a Store built by New.
type Option func(*Store)

// WithOwner names this instance in the leases it takes (default: random).
func WithOwner(owner string) Option { return func(s *Store) { s.owner = owner } }

// WithClock replaces time.Now, for lease expiry in tests.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithUploadRetryDeadline bounds how long one upload, with the client's own
// retries, may take before its error surfaces as transient (default
// DefaultUploadRetryDeadline). Tests shorten it.
func WithUploadRetryDeadline(d time.Duration) Option {
	return func(s *Store) { s.retryDeadline = d }
}

// New builds a Store on client. cfg.OutputBucket holds job state and images;
// limits bound input images; backend decides whether gs:// inputs are read
// (Gemini API) or passed by URI (Vertex AI).
func New(client *gcs.Client, cfg config.Storage, limits config.Limits, backend job.Backend, opts ...Option) *Store {
	s := &Store{client: client, cfg: cfg, limits: limits, backend: backend, now: time.Now, retryDeadline: DefaultUploadRetryDeadline}
	if s.cfg.ChunkSize <= 0 {
		s.cfg.ChunkSize = DefaultChunkSize
	}
	if s.cfg.Lease <= 0 {
		s.cfg.Lease = 10 * time.Minute
	}
	for _, o := range opts {
		o(s)
	}
	if s.retryDeadline <= 0 {
		s.retryDeadline = DefaultUploadRetryDeadline
	}
	if s.owner == "" {
		s.owner = "instance-" + randomHex(6)
	}
	s.output = NewObjects(client, cfg.OutputBucket, s.cfg.ChunkSize, s.retryDeadline).WithRetry(s.backoff, s.attempts)
	return s
}

// Dial builds a Store on a client of its own, made with clientOpts (the
// emulator is found through STORAGE_EMULATOR_HOST, as the client library
// defines it). Close closes the client.
func Dial(ctx context.Context, cfg config.Storage, limits config.Limits, backend job.Backend, clientOpts []option.ClientOption, opts ...Option) (*Store, error) {
	// JSON reads: the XML path fails against fake-gcs-server unless its
	// public host matches, and costs nothing here.
	client, err := gcs.NewClient(ctx, append([]option.ClientOption{gcs.WithJSONReads()}, clientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("cloud storage client: %w", err)
	}
	s := New(client, cfg, limits, backend, opts...)
	s.owned = true
	return s, nil
}

// WithRetry replaces the retry backoff and attempts, of the client and of
// the one-request writes (Objects.Put) alike (tests make faults surface in
// milliseconds, not after the default 1 s doubling).
func WithRetry(backoff gax.Backoff, attempts int) Option {
	return func(s *Store) {
		s.client.SetRetry(gcs.WithBackoff(backoff), gcs.WithMaxAttempts(attempts))
		s.backoff, s.attempts = backoff, attempts
	}
}

// Close closes the client if the Store made it (Dial).
func (s *Store) Close() error {
	if s.owned {
		return s.client.Close()
	}
	return nil
}

// reserve takes n bytes of the spool budget, if there is room.
func (s *Store) reserve(n int) bool { return s.spooled.take(int64(n), s.cfg.SpoolBytes) }

func (s *Store) unreserve(n int) { s.spooled.give(int64(n)) }

// Output is the output bucket through the write primitive, for the state
// that is not a job's (spend ledgers, the kill switch, cache records, batch
// chunks, webhook ids).
func (s *Store) Output() *Objects { return s.output }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// jobDir is jobs/<id>/. It refuses any id that could escape its folder,
// even though callers pass ids already checked by job.ValidID: a wrong
// object name here could overwrite another job's state.
func jobDir(jobID string) (string, error) {
	if !job.ValidID(jobID) {
		return "", fmt.Errorf("%w: job id %q cannot name a folder", job.ErrInvalid, truncate(jobID))
	}
	return "jobs/" + jobID + "/", nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// writeOpts are what one object write needs.
type writeOpts struct {
	contentType  string
	cacheControl string
	metadata     map[string]string
	// cond: DoesNotExist for create-only, GenerationMatch for replace-if.
	cond *gcs.Conditions
}

// write stores data at name in the bucket and returns its attributes: one
// request, retried as Objects.write retries it.
func (s *Store) write(ctx context.Context, bucket, name string, data []byte, o writeOpts) (*gcs.ObjectAttrs, error) {
	return s.output.In(bucket).write(ctx, name, [][]byte{data}, o.contentType, o.cacheControl, o.metadata, o.cond)
}

// read returns an object's bytes (at most limit) and attributes.
func (s *Store) read(ctx context.Context, bucket, name string, limit int64) ([]byte, gcs.ReaderObjectAttrs, error) {
	r, err := s.client.Bucket(bucket).Object(name).NewReader(ctx)
	if err != nil {
		return nil, gcs.ReaderObjectAttrs{}, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit))
	return b, r.Attrs, err
}

// isPrecondition reports a 412: a create-only or generation-match write
// found the object in another state.
func isPrecondition(err error) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == 412
}

// ErrForbidden marks a Cloud Storage refusal (401/403): retried like any
// transient fault, and alerted on (terraform/monitoring.tf).
var ErrForbidden = errors.New("cloud storage refused the request (401/403): check genimg's IAM")

// classify wraps a Cloud Storage error in genimg's categories. This is the
// edge where storage failures are classified, once.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == 408 || ge.Code == 429 || ge.Code >= 500:
			// Quota or a server-side fault: the redelivery may succeed.
			return fmt.Errorf("%s: %w: %w", what, job.ErrTransient, err)
		case ge.Code == 401 || ge.Code == 403:
			// Retry, never drop: on genimg's own buckets a refusal is the
			// deployment's IAM, most often still propagating after an apply
			// (about a minute). The logs name ErrForbidden for the alert;
			// a refusal that lasts runs into GENIMG_MAX_EVENT_AGE and a
			// failed, retryable record.
			return fmt.Errorf("%s: %w: %w: %w", what, job.ErrTransient, ErrForbidden, err)
		default:
			return fmt.Errorf("%s: %w: %w", what, job.ErrPermanent, err)
		}
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// The caller went away; retrying later is the caller's call.
		return fmt.Errorf("%s: %w: %w", what, job.ErrTransient, err)
	}
	var ne net.Error
	var ue *url.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) || errors.As(err, &ue) ||
		errors.Is(err, io.ErrUnexpectedEOF) || gcs.ShouldRetry(err) {
		// Network trouble or a deadline: retry on redelivery.
		return fmt.Errorf("%s: %w: %w", what, job.ErrTransient, err)
	}
	// Anything else from the client at this edge is most likely transport
	// trouble too; a redelivery is cheaper than a lost job.
	return fmt.Errorf("%s: %w: %w", what, job.ErrTransient, err)
}

// gsURI names an object.
func gsURI(bucket, name string) string { return "gs://" + bucket + "/" + name }

// within reports whether name is a plain child of dir (no "..", no
// further slashes), the guard on every name built from job data.
func within(dir, name string) bool {
	rest, ok := strings.CutPrefix(name, dir)
	return ok && rest != "" && !strings.Contains(rest, "/") && rest != "." && rest != ".."
}
