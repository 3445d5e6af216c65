// Package batch is genimg's batch lane: jobs submitted together to the
// Gemini Batch API (or, on Vertex AI, as a batch prediction job reading and
// writing JSONL under gs://OUTPUT/batches/<chunk>/) at the batch price, and
// split back into the online
// lane's per-job images, records and completion events when the batch is
// done.
//
// Submit takes validated, normalised jobs with ids, groups them by model,
// cuts them into chunks of config.Batch.Chunk and submits each chunk as one
// batch. Every chunk's state lives in the output bucket at
// gs://OUTPUT/batches/<chunk>.json, so that any instance can Poll. Poll
// checks each open chunk's batch and, when it is done, hands every answer
// to a Finisher, which the pipeline implements with its online steps
// (claim, write images, commit the record, publish the event).
//
// # Paying once
//
// At-least-once delivery must not pay a batch twice, so submission is
// idempotent: a chunk's id is a hash of its jobs (ids and fingerprints) and
// the times it was resubmitted, its state object is created only if absent,
// and each job is reserved for one chunk by a create-only
// jobs/<id>/batch.json. A redelivered submission finds its chunks and
// submits nothing; a job already reserved by another chunk, or already
// holding a record, is reported and skipped. Submit takes no claim
// (storage.Claim): a claim's lease is minutes, a batch's life hours. The
// Finisher claims each job when its answer arrives, exactly as the online
// lane does, so a job that also ran online (same id) gets one record: the
// first committed wins and the other answer is reported, not written.
// Keys answered twice within a batch are finished once and reported.
//
// A chunk is sent exactly once. Its submitter holds a lease on it while
// it is "submitting" (owner and expiry in the state, renewed while it
// works, every write conditional on the state's generation), and Poll
// takes a "submitting" chunk over only once that lease ran out. Before any
// submission that may follow an earlier one (a crash, an answer lost on
// the way back) the lane looks the batch up by its display name and
// adopts the one it finds instead of paying for another. Poll-driven
// submissions pass the spend guard (an Admitter) at the batch price: a
// refused one (kill switch, budget) leaves the chunk "submitting", its
// lease released, for a later Poll. A submission the model refuses for
// good fails the chunk's jobs through the Finisher, one failed record each.
//
// A batch that fails, is cancelled, expires, or stays open past
// config.Batch.MaxAge is reported, and its unfinished jobs resubmitted (up
// to MaxResubmits) or failed with a retryable error, by OnExpired. A batch
// still open past MaxAge is cancelled first; the chunk it belonged to
// names its replacement and is never polled again, so its late answers are
// ignored.
package batch

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// An Entry is one job of a batch submission and where it came from.
type Entry struct {
	Job     job.Job     `json:"job"`
	Trigger job.Trigger `json:"trigger"`
}

// Finished is one job's end in the batch lane, for the Finisher.
type Finished struct {
	Job     job.Job
	Trigger job.Trigger
	// Result is the model's answer, priced at the batch rate; nil when Err
	// is set. Result.JSON is already checked for structured output.
	Result *gemini.Result
	// Err is why the job has no answer (its request failed, or its batch
	// expired and the policy is to fail it): record it failed.
	Err error
	// Batch names the batch, for the record.
	Batch job.BatchInfo
}

// A Finisher turns a batch answer into the job's images, record and
// completion event, exactly as the online lane does. It must be idempotent:
// Poll may hand it the same job again after a crash. An error wrapping
// job.ErrTransient makes Poll stop that batch and try it again later.
type Finisher interface {
	Finish(ctx context.Context, f Finished) error
}

// Model is what the lane needs of the model client (*gemini.Client). The
// lane passes every call gemini.InCloudStorage with the chunk's directory,
// gs://OUTPUT/batches/<chunk>/, where a Vertex AI batch keeps its input and
// predictions (the Gemini API ignores it).
type Model interface {
	SubmitBatch(ctx context.Context, model, displayName string, jobs []job.Job, inlineLimit int, opts ...gemini.BatchOption) (gemini.Submitted, error)
	GetBatch(ctx context.Context, name string, opts ...gemini.BatchOption) (gemini.BatchStatus, error)
	// FindBatch names the batch an earlier submission created under
	// displayName, or "".
	FindBatch(ctx context.Context, displayName string) (string, error)
	CancelBatch(ctx context.Context, name string) error
}

// An Admitter admits a batch submission the lane makes by itself (a Poll's
// retry or resubmission) to be paid: the pipeline's spend guard at the
// batch price. An error (wrapping job.ErrTransient: paused, over budget,
// the ledger unreadable) holds the submission for a later Poll. release
// must be called once: paid is false when nothing was submitted.
type Admitter interface {
	AdmitBatch(ctx context.Context, jobs []job.Job) (release func(paid bool), err error)
}

// Lane submits and polls batches. It is safe for concurrent use.
type Lane struct {
	model    Model
	objects  *storage.Objects
	cfg      config.Batch
	resolve  gemini.Resolver
	contexts *gemini.ContextCaches
	now      func() time.Time
	admit    Admitter
	// owner names this lane in the leases it takes; lease is how long one
	// lasts unless renewed (every third of it while the submitter works).
	owner string
	lease time.Duration
}

// An Option changes a Lane built by New.
type Option func(*Lane)

// WithResolver resolves jobs' gs:// images before their requests are built
// (storage.Store on the Gemini API).
func WithResolver(r gemini.Resolver) Option { return func(l *Lane) { l.resolve = r } }

// WithContexts resolves jobs' shared contexts to caches before submission.
func WithContexts(x *gemini.ContextCaches) Option { return func(l *Lane) { l.contexts = x } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(l *Lane) { l.now = now } }

// WithAdmitter admits the submissions Poll makes (without one, they are
// not checked).
func WithAdmitter(a Admitter) Option { return func(l *Lane) { l.admit = a } }

// WithSubmitLease sets how long a submitter's lease on a chunk lasts
// (default DefaultSubmitLease); it is renewed every third of it.
func WithSubmitLease(d time.Duration) Option { return func(l *Lane) { l.lease = d } }

// DefaultSubmitLease is how long a chunk's submitter holds it unless it
// renews its lease.
const DefaultSubmitLease = 2 * time.Minute

// New builds a lane on the model client, keeping state in objects (the
// output bucket).
func New(model Model, objects *storage.Objects, cfg config.Batch, opts ...Option) *Lane {
	l := &Lane{model: model, objects: objects, cfg: cfg, now: time.Now, lease: DefaultSubmitLease, owner: randomOwner()}
	if l.cfg.Chunk < 1 {
		l.cfg.Chunk = 16
	}
	for _, o := range opts {
		o(l)
	}
	if l.lease <= 0 {
		l.lease = DefaultSubmitLease
	}
	return l
}

// Chunk states.
const (
	stateSubmitting = "submitting"
	stateOpen       = "open"
	stateDone       = "done"
	stateFailed     = "failed" // ended without answers; its jobs failed or were resubmitted
)

// A State is one chunk: gs://OUTPUT/batches/<id>.json.
type State struct {
	ID        string    `json:"id"`
	Model     string    `json:"model"`
	State     string    `json:"state"`
	Name      string    `json:"name,omitempty"` // batches/ID once submitted
	InputFile string    `json:"inputFile,omitempty"`
	Created   time.Time `json:"createdAt"`
	Submitted time.Time `json:"submittedAt,omitzero"`
	Ended     time.Time `json:"endedAt,omitzero"`
	// Resubmits is how many times these jobs were resubmitted before.
	Resubmits int     `json:"resubmits"`
	Entries   []Entry `json:"entries"`
	// Finished are the job ids handed to the Finisher; Duplicates the keys
	// answered more than once; Note what ended the chunk otherwise.
	Finished   []string `json:"finished,omitempty"`
	Duplicates []string `json:"duplicates,omitempty"`
	Note       string   `json:"note,omitempty"`
	// LeaseOwner is the submitter at work on a "submitting" chunk, until
	// LeaseUntil; Poll takes the chunk over only after it.
	LeaseOwner string    `json:"leaseOwner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// Adopted: the batch was found by its display name, created by an
	// earlier submitter that never recorded it.
	Adopted bool `json:"adopted,omitempty"`
	// Cancelled is the batch cancelled (open past MaxAge) before its jobs
	// were resubmitted; ReplacedBy the chunk they went to. A replaced
	// chunk is not polled again: its batch's late answers are ignored.
	Cancelled  string `json:"cancelled,omitempty"`
	ReplacedBy string `json:"replacedBy,omitempty"`

	gen int64
}

// A SubmitReport says what Submit did with each job.
type SubmitReport struct {
	// Chunks are the chunk ids submitted now; Existing those a previous
	// delivery already submitted.
	Chunks   []string `json:"chunks"`
	Existing []string `json:"existing,omitempty"`
	// Jobs is how many jobs went into new batches.
	Jobs int `json:"jobs"`
	// Duplicates are ids given twice for the same work, or already in
	// another batch; Done ids that already have a record; Rejected ids
	// (or positions) refused, with why.
	Duplicates []string          `json:"duplicates,omitempty"`
	Done       []string          `json:"done,omitempty"`
	Rejected   map[string]string `json:"rejected,omitempty"`
	// Pending are chunks whose submission failed transiently: state is
	// kept and Poll submits them.
	Pending []string `json:"pending,omitempty"`
}

// Submit submits entries in chunks. Each job must be validated and
// normalised; one without an id is rejected (the caller derives ids, e.g.
// job.DeriveID from the message id and the position). It returns an error
// only when nothing could be decided (Cloud Storage unreachable); every
// per-job problem is in the report.
func (l *Lane) Submit(ctx context.Context, entries []Entry) (SubmitReport, error) {
	rep := SubmitReport{Rejected: map[string]string{}}
	seen := map[string]string{} // id → fingerprint
	byModel := map[string][]Entry{}
	for i, e := range entries {
		id := e.Job.ID
		if !job.ValidID(id) {
			rep.Rejected[fmt.Sprintf("#%d", i)] = "a batch job needs an id ([A-Za-z0-9._-]{1,128}) to key its answer"
			continue
		}
		fp := e.Job.Fingerprint()
		if prev, ok := seen[id]; ok {
			if prev == fp {
				rep.Duplicates = append(rep.Duplicates, id)
			} else {
				rep.Rejected[id+"#"+fmt.Sprint(i)] = job.ErrConflict.Error() + ": the id is given twice for different work"
			}
			continue
		}
		seen[id] = fp
		done, err := l.exists(ctx, storage.RecordObject(id))
		if err != nil {
			return rep, err
		}
		if done {
			rep.Done = append(rep.Done, id)
			continue
		}
		byModel[e.Job.Model] = append(byModel[e.Job.Model], e)
	}
	models := make([]string, 0, len(byModel))
	for m := range byModel {
		models = append(models, m)
	}
	sort.Strings(models)
	for _, m := range models {
		es := byModel[m]
		for start := 0; start < len(es); start += l.cfg.Chunk {
			chunk := es[start:min(start+l.cfg.Chunk, len(es))]
			if err := l.submitChunk(ctx, m, chunk, 0, false, &rep); err != nil {
				return rep, err
			}
		}
	}
	if len(rep.Rejected) == 0 {
		rep.Rejected = nil
	}
	return rep, nil
}

// chunkID names a chunk by its jobs and resubmission count.
func chunkID(entries []Entry, resubmits int) string {
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Job.ID + "\x00" + e.Job.Fingerprint()
	}
	sort.Strings(keys)
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00", resubmits)
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
	}
	return "c-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// submitChunk reserves a chunk's jobs, records its state under this
// lane's lease and submits it. admit says whether the submission must pass
// the Admitter (a Poll's resubmission; Submit's caller admitted its own).
func (l *Lane) submitChunk(ctx context.Context, model string, entries []Entry, resubmits int, admit bool, rep *SubmitReport) error {
	id := chunkID(entries, resubmits)
	if _, err := l.readState(ctx, id); err == nil {
		rep.Existing = append(rep.Existing, id)
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	var kept []Entry
	for _, e := range entries {
		owner, err := l.reserve(ctx, e.Job.ID, id, resubmits > 0)
		if err != nil {
			return err
		}
		if owner != id {
			rep.Duplicates = append(rep.Duplicates, e.Job.ID)
			slog.InfoContext(ctx, "batch job already reserved", "jobId", e.Job.ID, "chunk", owner)
			continue
		}
		kept = append(kept, e)
	}
	if len(kept) == 0 {
		return nil
	}
	now := l.now()
	st := &State{ID: id, Model: model, State: stateSubmitting, Created: now, Resubmits: resubmits, Entries: kept,
		LeaseOwner: l.owner, LeaseUntil: now.Add(l.lease)}
	created, err := l.createState(ctx, st)
	if err != nil {
		return err
	}
	if !created {
		rep.Existing = append(rep.Existing, id)
		return nil
	}
	// A state just created was never sent: no batch to look up.
	if err := l.submit(ctx, st, false, admit); err != nil {
		if job.Retryable(err) {
			slog.WarnContext(ctx, "batch submission failed or held; Poll will retry", "chunk", id, "error", err)
			l.releaseLease(ctx, st)
			rep.Pending = append(rep.Pending, id)
			return nil
		}
		return l.failChunk(ctx, st, err, rep)
	}
	rep.Chunks = append(rep.Chunks, id)
	rep.Jobs += len(kept)
	return nil
}

// failChunk fails every job of a chunk that could not be submitted for
// good (a permanent error): the state says failed with the note, and the
// jobs are reported rejected to Submit's caller, who records them failed.
func (l *Lane) failChunk(ctx context.Context, st *State, cause error, rep *SubmitReport) error {
	st.State, st.Note, st.Ended = stateFailed, "submission refused: "+cause.Error(), l.now()
	st.LeaseOwner, st.LeaseUntil = "", time.Time{}
	for _, e := range st.Entries {
		rep.Rejected[e.Job.ID] = cause.Error()
	}
	// The chunk keeps its state so that a redelivery does not retry it.
	_, err := l.writeState(ctx, st)
	return err
}

// errHeld marks a submission the Admitter refused for now.
var errHeld = errors.New("batch submission held")

// submit sends a chunk whose lease this lane holds, renewing the lease
// while it works. With lookup (the chunk may have been sent before) it
// first looks the batch up by its display name and adopts one it finds;
// with admit a new submission must pass the Admitter. It records the
// batch's name and opens the chunk. A refused admission is an error
// wrapping errHeld and job.ErrTransient.
func (l *Lane) submit(ctx context.Context, st *State, lookup, admit bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex // st and its generation, shared with the renewals
	stop := l.keepLease(ctx, st, &mu, cancel)
	defer stop()

	display := displayName(st.ID)
	if lookup {
		name, err := l.model.FindBatch(ctx, display)
		if err != nil {
			return err
		}
		if name != "" {
			slog.WarnContext(ctx, "batch found already submitted; adopted, not paid again", "chunk", st.ID, "batch", name)
			return l.opened(ctx, st, &mu, stop, gemini.Submitted{Name: name}, true)
		}
	}
	jobs, err := l.requests(ctx, st)
	if err != nil {
		return err
	}
	release := func(bool) {}
	if admit && l.admit != nil {
		r, err := l.admit.AdmitBatch(ctx, jobs)
		if err != nil {
			return fmt.Errorf("%w: %w: %w", job.ErrTransient, errHeld, err)
		}
		release = r
	}
	sub, err := l.model.SubmitBatch(ctx, st.Model, display, jobs, l.cfg.InlineBytes, l.inStorage(st.ID))
	// A transient failure may have created the batch all the same (its
	// answer lost): count it; the next submitter adopts it.
	release(err == nil || job.Retryable(err))
	if err != nil {
		return err
	}
	slog.InfoContext(ctx, "batch submitted", "chunk", st.ID, "batch", sub.Name, "jobs", len(jobs), "file", sub.InputFile, "bytes", sub.Bytes)
	return l.opened(ctx, st, &mu, stop, sub, false)
}

// opened records a chunk's batch and opens it, ending the lease.
func (l *Lane) opened(ctx context.Context, st *State, mu *sync.Mutex, stop func(), sub gemini.Submitted, adopted bool) error {
	stop()
	mu.Lock()
	defer mu.Unlock()
	st.Name, st.InputFile, st.State, st.Submitted, st.Adopted = sub.Name, sub.InputFile, stateOpen, l.now(), adopted
	st.LeaseOwner, st.LeaseUntil = "", time.Time{}
	if _, err := l.writeState(context.WithoutCancel(ctx), st); err != nil {
		// The batch runs, but nobody will poll it until the lease runs
		// out and the next submitter finds it by its display name.
		// Never a refusal: the batch exists, whatever the write's error.
		slog.ErrorContext(ctx, "batch submitted but its state was not saved", "chunk", st.ID, "batch", sub.Name, "error", err)
		if !job.Retryable(err) {
			err = fmt.Errorf("%w: %w", job.ErrTransient, err)
		}
		return err
	}
	return nil
}

// keepLease renews this lane's lease on st every third of its length until
// stop is called; a renewal that finds the chunk taken over cancels the
// submission (cancel), which then fails rather than pays twice.
func (l *Lane) keepLease(ctx context.Context, st *State, mu *sync.Mutex, cancel context.CancelFunc) (stop func()) {
	ctx, end := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mu.Lock()
			if ctx.Err() != nil {
				mu.Unlock()
				return
			}
			st.LeaseOwner, st.LeaseUntil = l.owner, l.now().Add(l.lease)
			_, err := l.writeState(ctx, st)
			mu.Unlock()
			if errors.Is(err, errStateChanged) {
				slog.WarnContext(ctx, "batch chunk taken over while submitting; stopping", "chunk", st.ID)
				cancel()
				return
			}
			if err != nil && ctx.Err() == nil {
				slog.WarnContext(ctx, "renewing a batch submission's lease failed", "chunk", st.ID, "error", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			end()
			<-done
		})
	}
}

// releaseLease gives up this lane's lease on a chunk still "submitting",
// so that the next Poll may send it at once.
func (l *Lane) releaseLease(ctx context.Context, st *State) {
	st.LeaseOwner, st.LeaseUntil = "", l.now()
	if _, err := l.writeState(context.WithoutCancel(ctx), st); err != nil {
		slog.WarnContext(ctx, "releasing a batch submission's lease failed; it runs out by itself", "chunk", st.ID, "error", err)
	}
}

// leaseLive reports whether a "submitting" chunk's submitter may still be
// at work. A state written before leases has its creation plus a lease.
func (l *Lane) leaseLive(st *State) bool {
	until := st.LeaseUntil
	if until.IsZero() && st.LeaseOwner == "" {
		until = st.Created.Add(l.lease)
	}
	return l.now().Before(until)
}

// displayName names a chunk's batch at the model: how a later submitter
// finds it.
func displayName(chunk string) string { return "genimg " + chunk }

// requests builds a chunk's jobs as the model takes them: images resolved,
// contexts cached.
func (l *Lane) requests(ctx context.Context, st *State) ([]job.Job, error) {
	jobs := make([]job.Job, 0, len(st.Entries))
	for _, e := range st.Entries {
		j := e.Job
		j.Images = slices.Clone(j.Images)
		if l.resolve != nil && len(j.Images) > 0 {
			if err := l.resolve.ResolveImages(ctx, &j); err != nil {
				return nil, fmt.Errorf("batch job %s: %w", j.ID, err)
			}
		}
		if j.Context != nil {
			if l.contexts == nil {
				return nil, fmt.Errorf("%w: batch job %s names a context, and the lane has no Contexts", job.ErrInvalid, j.ID)
			}
			if _, err := l.contexts.UseCache(ctx, &j, ""); err != nil {
				return nil, fmt.Errorf("batch job %s: %w", j.ID, err)
			}
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

func randomOwner() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "lane-" + hex.EncodeToString(b)
}

// A PollReport says what one Poll found and did.
type PollReport struct {
	// Checked chunks were open or submitting; Open are still running.
	Checked int `json:"checked"`
	Open    int `json:"open"`
	// Finished are the job ids handed to the Finisher; Failed those handed
	// with an error.
	Finished []string `json:"finished,omitempty"`
	Failed   []string `json:"failed,omitempty"`
	// Duplicates are keys answered more than once (finished once);
	// Unknown keys answered that no job of the batch carries.
	Duplicates []string `json:"duplicates,omitempty"`
	Unknown    []string `json:"unknown,omitempty"`
	// Stuck are chunks open past MaxAge, Expired chunks whose batch ended
	// without answers (failed, cancelled, expired); Resubmitted the new
	// chunks their jobs went to.
	Stuck       []string `json:"stuck,omitempty"`
	Expired     []string `json:"expired,omitempty"`
	Resubmitted []string `json:"resubmitted,omitempty"`
	// Cancelled are the batches cancelled (open past MaxAge) before their
	// jobs were resubmitted.
	Cancelled []string `json:"cancelled,omitempty"`
	// Submitted are "submitting" chunks this Poll sent (their submitter's
	// lease had run out), Adopted those whose batch it found already
	// created; Held those the spend guard holds (still "submitting", sent
	// by a later Poll); Refused those the model refused for good, their
	// jobs failed.
	Submitted []string `json:"submitted,omitempty"`
	Adopted   []string `json:"adopted,omitempty"`
	Held      []string `json:"heldChunks,omitempty"` // "held" is the resume report in PollBatches' answer
	Refused   []string `json:"refused,omitempty"`
	// Errors are chunks Poll could not advance now (retried next time).
	Errors map[string]string `json:"errors,omitempty"`
}

// Poll checks every open chunk and finishes those whose batch is done.
func (l *Lane) Poll(ctx context.Context, fin Finisher) (PollReport, error) {
	rep := PollReport{Errors: map[string]string{}}
	ids, err := l.list(ctx)
	if err != nil {
		return rep, err
	}
	for _, id := range ids {
		st, err := l.readState(ctx, id)
		if err != nil {
			rep.Errors[id] = err.Error()
			continue
		}
		if st.State != stateOpen && st.State != stateSubmitting {
			continue
		}
		rep.Checked++
		if err := l.pollChunk(ctx, st, fin, &rep); err != nil {
			slog.WarnContext(ctx, "batch poll failed", "chunk", id, "error", err)
			rep.Errors[id] = err.Error()
		}
	}
	if len(rep.Errors) == 0 {
		rep.Errors = nil
	}
	return rep, nil
}

func (l *Lane) pollChunk(ctx context.Context, st *State, fin Finisher, rep *PollReport) error {
	if st.State == stateSubmitting {
		return l.resend(ctx, st, fin, rep)
	}
	bs, err := l.model.GetBatch(ctx, st.Name, l.inStorage(st.ID))
	if err != nil {
		return err
	}
	if !bs.Done {
		if l.cfg.MaxAge > 0 && l.now().Sub(st.Submitted) > l.cfg.MaxAge {
			slog.WarnContext(ctx, "batch stuck past its maximum age", "chunk", st.ID, "batch", st.Name, "state", bs.State, "since", st.Submitted)
			rep.Stuck = append(rep.Stuck, st.ID)
			// Cancelled before its jobs go elsewhere: a batch left running
			// would go on being paid for answers nobody reads.
			if st.Cancelled != st.Name {
				if err := l.model.CancelBatch(ctx, st.Name); err != nil {
					if job.Retryable(err) {
						return fmt.Errorf("cancelling the stuck batch %s: %w", st.Name, err)
					}
					slog.WarnContext(ctx, "cancelling a stuck batch failed for good; resubmitting all the same", "chunk", st.ID, "batch", st.Name, "error", err)
				}
				st.Cancelled = st.Name
				rep.Cancelled = append(rep.Cancelled, st.Name)
			}
			return l.expire(ctx, st, fin, fmt.Sprintf("open (%s) past GENIMG_BATCH_MAX_AGE %v; cancelled", bs.State, l.cfg.MaxAge), rep)
		}
		rep.Open++
		return nil
	}
	if bs.State != gemini.BatchSucceeded && len(bs.Results) == 0 {
		slog.WarnContext(ctx, "batch ended without answers", "chunk", st.ID, "batch", st.Name, "state", bs.State, "error", bs.Error)
		rep.Expired = append(rep.Expired, st.ID)
		return l.expire(ctx, st, fin, fmt.Sprintf("batch %s ended %s %s", st.Name, bs.State, bs.Error), rep)
	}
	return l.finish(ctx, st, bs, fin, rep)
}

// finish hands every answer to the Finisher, once per key, saving
// progress so that a crash resumes where it stopped.
func (l *Lane) finish(ctx context.Context, st *State, bs gemini.BatchStatus, fin Finisher, rep *PollReport) error {
	byID := map[string]Entry{}
	for _, e := range st.Entries {
		byID[e.Job.ID] = e
	}
	done := map[string]bool{}
	for _, id := range st.Finished {
		done[id] = true
	}
	answered := map[string]bool{}
	info := job.BatchInfo{Name: st.Name, ID: st.ID}
	for _, r := range bs.Results {
		key := r.Key
		if key == "" && r.Index < len(st.Entries) {
			key = st.Entries[r.Index].Job.ID // answers are in request order
		}
		e, ok := byID[key]
		if !ok {
			rep.Unknown = append(rep.Unknown, key)
			continue
		}
		if answered[key] {
			slog.WarnContext(ctx, "batch answered a key twice; finished once", "chunk", st.ID, "jobId", key)
			rep.Duplicates = append(rep.Duplicates, key)
			if !slices.Contains(st.Duplicates, key) {
				st.Duplicates = append(st.Duplicates, key)
			}
			continue
		}
		answered[key] = true
		if done[key] {
			continue
		}
		f := Finished{Job: e.Job, Trigger: e.Trigger, Result: r.Result, Err: r.Err, Batch: info}
		if r.Result != nil {
			gemini.CheckAnswer(e.Job, r.Result)
		}
		if err := fin.Finish(ctx, f); err != nil {
			if job.Retryable(err) {
				_, _ = l.writeState(ctx, st) // keep what is finished
				return fmt.Errorf("finishing %s: %w", key, err)
			}
			slog.ErrorContext(ctx, "batch job could not be finished", "jobId", key, "error", err)
		}
		st.Finished = append(st.Finished, key)
		done[key] = true
		if f.Err != nil {
			rep.Failed = append(rep.Failed, key)
		} else {
			rep.Finished = append(rep.Finished, key)
		}
	}
	// A job the batch never answered is failed, retryably.
	for _, e := range st.Entries {
		if answered[e.Job.ID] || done[e.Job.ID] {
			continue
		}
		err := fmt.Errorf("%w: batch %s answered no request for job %s", job.ErrTransient, st.Name, e.Job.ID)
		if ferr := fin.Finish(ctx, Finished{Job: e.Job, Trigger: e.Trigger, Err: err, Batch: info}); ferr != nil && job.Retryable(ferr) {
			_, _ = l.writeState(ctx, st)
			return ferr
		}
		st.Finished = append(st.Finished, e.Job.ID)
		rep.Failed = append(rep.Failed, e.Job.ID)
	}
	st.State, st.Ended = stateDone, l.now()
	_, err := l.writeState(ctx, st)
	return err
}

// resend advances a chunk left "submitting": while its submitter's lease
// runs, nothing; then it takes the lease, adopts the batch an earlier
// submitter created (found by its display name) or submits the chunk
// through the Admitter. Held by the spend guard, the chunk stays
// "submitting", its lease released; refused by the model for good, its
// jobs are failed through the Finisher and the chunk with them.
func (l *Lane) resend(ctx context.Context, st *State, fin Finisher, rep *PollReport) error {
	if l.leaseLive(st) {
		rep.Open++ // its submitter is at work
		return nil
	}
	st.LeaseOwner, st.LeaseUntil = l.owner, l.now().Add(l.lease)
	if _, err := l.writeState(ctx, st); err != nil {
		if errors.Is(err, errStateChanged) {
			rep.Open++ // another poller took it first
			return nil
		}
		return err
	}
	err := l.submit(ctx, st, true, true)
	switch {
	case err == nil:
		if st.Adopted {
			rep.Adopted = append(rep.Adopted, st.ID)
		} else {
			rep.Submitted = append(rep.Submitted, st.ID)
		}
		rep.Open++
		return nil
	case errors.Is(err, errHeld):
		slog.InfoContext(ctx, "batch submission held by the spend guard", "chunk", st.ID, "error", err)
		l.releaseLease(ctx, st)
		rep.Held = append(rep.Held, st.ID)
		rep.Open++
		return nil
	case job.Retryable(err):
		l.releaseLease(ctx, st)
		return err
	}
	slog.ErrorContext(ctx, "batch submission refused for good; failing its jobs", "chunk", st.ID, "error", err)
	rep.Refused = append(rep.Refused, st.ID)
	return l.refused(ctx, st, fin, err, rep)
}

// refused fails, through the Finisher, every job of a chunk the model
// refused for good, and then the chunk; a crash in between resumes from
// the jobs it finished.
func (l *Lane) refused(ctx context.Context, st *State, fin Finisher, cause error, rep *PollReport) error {
	st.LeaseOwner, st.LeaseUntil = "", time.Time{}
	done := map[string]bool{}
	for _, id := range st.Finished {
		done[id] = true
	}
	err := cause
	if !errors.Is(err, job.ErrPermanent) && !errors.Is(err, job.ErrInvalid) {
		err = fmt.Errorf("%w: %w", job.ErrPermanent, cause)
	}
	err = fmt.Errorf("the batch was refused: %w", err)
	for _, e := range st.Entries {
		if done[e.Job.ID] {
			continue
		}
		if ferr := fin.Finish(ctx, Finished{Job: e.Job, Trigger: e.Trigger, Err: err, Batch: job.BatchInfo{ID: st.ID}}); ferr != nil && job.Retryable(ferr) {
			_, _ = l.writeState(ctx, st) // keep what is finished
			return ferr
		}
		st.Finished = append(st.Finished, e.Job.ID)
		rep.Failed = append(rep.Failed, e.Job.ID)
	}
	st.State, st.Note, st.Ended = stateFailed, "submission refused: "+cause.Error(), l.now()
	_, werr := l.writeState(ctx, st)
	return werr
}

// expire ends a chunk whose batch gave no answers: its unfinished jobs are
// resubmitted or failed, by policy.
func (l *Lane) expire(ctx context.Context, st *State, fin Finisher, why string, rep *PollReport) error {
	done := map[string]bool{}
	for _, id := range st.Finished {
		done[id] = true
	}
	var again []Entry
	for _, e := range st.Entries {
		if done[e.Job.ID] {
			continue
		}
		if l.cfg.OnExpired == config.BatchResubmit && st.Resubmits < l.cfg.MaxResubmits {
			again = append(again, e)
			continue
		}
		err := fmt.Errorf("%w: %s", job.ErrTransient, why)
		if ferr := fin.Finish(ctx, Finished{Job: e.Job, Trigger: e.Trigger, Err: err, Batch: job.BatchInfo{Name: st.Name, ID: st.ID}}); ferr != nil && job.Retryable(ferr) {
			_, _ = l.writeState(ctx, st)
			return ferr
		}
		st.Finished = append(st.Finished, e.Job.ID)
		rep.Failed = append(rep.Failed, e.Job.ID)
	}
	if len(again) > 0 {
		sub := SubmitReport{Rejected: map[string]string{}}
		if err := l.submitChunk(ctx, st.Model, again, st.Resubmits+1, true, &sub); err != nil {
			return err
		}
		if len(sub.Rejected) > 0 {
			// The model refused the resubmission for good (the new chunk
			// is failed): each job gets its failed record here.
			for _, e := range again {
				if cause, ok := sub.Rejected[e.Job.ID]; ok {
					err := fmt.Errorf("%w: the batch was refused: %s", job.ErrPermanent, cause)
					if ferr := fin.Finish(ctx, Finished{Job: e.Job, Trigger: e.Trigger, Err: err, Batch: job.BatchInfo{ID: chunkID(again, st.Resubmits+1)}}); ferr != nil && job.Retryable(ferr) {
						return ferr
					}
					rep.Failed = append(rep.Failed, e.Job.ID)
				}
			}
		}
		st.ReplacedBy = chunkID(again, st.Resubmits+1)
		rep.Resubmitted = append(rep.Resubmitted, append(sub.Chunks, sub.Pending...)...)
	}
	st.State, st.Note, st.Ended = stateFailed, why, l.now()
	_, err := l.writeState(ctx, st)
	return err
}

// ---- Cloud Storage ----

// maxStateBytes bounds a chunk state's read.
const maxStateBytes = 4 << 20

// inStorage places a chunk's Vertex AI batch in the output bucket, under
// gs://OUTPUT/batches/<chunk>/ (input.jsonl, output/).
func (l *Lane) inStorage(chunk string) gemini.BatchOption {
	return gemini.InCloudStorage(storage.NewBatchFiles(l.objects), "gs://"+l.objects.Bucket()+"/"+storage.BatchDir(chunk))
}

func (l *Lane) list(ctx context.Context) ([]string, error) {
	var ids []string
	err := l.objects.List(ctx, storage.BatchesPrefix, "/", func(a storage.Attrs) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(a.Name, storage.BatchesPrefix), ".json"); ok && id != "" && !strings.Contains(id, "/") {
			ids = append(ids, id)
		}
		return nil
	})
	return ids, err
}

func (l *Lane) exists(ctx context.Context, name string) (bool, error) {
	_, err := l.objects.Stat(ctx, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, storage.ErrNotFound):
		return false, nil
	default:
		return false, err
	}
}

// readState reads a chunk's state; an error wrapping storage.ErrNotFound
// when there is none.
func (l *Lane) readState(ctx context.Context, id string) (*State, error) {
	b, a, err := l.objects.Get(ctx, storage.BatchStateObject(id), maxStateBytes)
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %s is not a batch state: %v", job.ErrPermanent, storage.BatchStateObject(id), err)
	}
	st.gen = a.Generation
	return &st, nil
}

// put writes data under cond; created is false when another writer's
// object stood in the way (storage.Objects reads a 412 back first).
func (l *Lane) put(ctx context.Context, name string, data []byte, cond storage.Precondition) (gen int64, created bool, err error) {
	a, err := l.objects.Put(ctx, name, data, storage.Put{If: cond, ContentType: "application/json"})
	switch {
	case errors.Is(err, storage.ErrPrecondition):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return a.Generation, true, nil
}

func (l *Lane) createState(ctx context.Context, st *State) (bool, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return false, err
	}
	gen, created, err := l.put(ctx, storage.BatchStateObject(st.ID), b, storage.CreateOnly)
	if created {
		st.gen = gen
	}
	return created, err
}

// writeState replaces a chunk's state if nobody else changed it since it
// was read; a lost race is an error (the other writer's state stands).
func (l *Lane) writeState(ctx context.Context, st *State) (bool, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return false, err
	}
	cond := storage.IfGeneration(st.gen)
	if st.gen == 0 {
		cond = storage.CreateOnly
	}
	gen, ok, err := l.put(ctx, storage.BatchStateObject(st.ID), b, cond)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("%w: %w: %s", job.ErrTransient, errStateChanged, st.ID)
	}
	st.gen = gen
	return true, nil
}

// errStateChanged: a chunk's state was written by another writer since it
// was read.
var errStateChanged = errors.New("batch state changed under this writer")

// reserve makes chunk the owner of a job (jobs/<id>/batch.json) unless
// another chunk owns it; it returns the owner. A resubmission takes the
// reservation over from the chunk it replaces.
func (l *Lane) reserve(ctx context.Context, jobID, chunk string, takeover bool) (string, error) {
	name := storage.BatchMarkerObject(jobID)
	b, _ := json.Marshal(map[string]string{"chunk": chunk})
	cond := storage.CreateOnly
	if takeover {
		if a, err := l.objects.Stat(ctx, name); err == nil {
			cond = storage.IfGeneration(a.Generation)
		}
	}
	_, created, err := l.put(ctx, name, b, cond)
	if err != nil || created {
		return chunk, err
	}
	data, _, err := l.objects.Get(ctx, name, maxStateBytes)
	if err != nil {
		return "", err
	}
	var owner struct{ Chunk string }
	if err := json.Unmarshal(data, &owner); err != nil || owner.Chunk == "" {
		return chunk, nil // unreadable: nobody's
	}
	return owner.Chunk, nil
}

// States lists every chunk's state (for reports and tests).
func (l *Lane) States(ctx context.Context) ([]*State, error) {
	ids, err := l.list(ctx)
	if err != nil {
		return nil, err
	}
	var out []*State
	for _, id := range ids {
		st, err := l.readState(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
