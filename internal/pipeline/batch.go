package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/trigger"
)

// The batch lane (package batch) in the pipeline: a batch submission — an
// HTTP POST of {"batch": [jobs…]}, a Pub/Sub message of the same, or a
// *.jobs.jsonl upload — is validated job by job and submitted to the Gemini
// Batch API; PollBatches, called by Cloud Scheduler, finishes each answered
// job with the online lane's own steps (claim, images, record, event), so a
// batch job ends in the same record and event as an online one, priced at
// the batch rate and with the record's batch field set.

// Statuses of a job in a batch answer.
const (
	// BatchSubmitted: in a model batch, submitted now or by an earlier
	// delivery of the same submission; GET ?id= answers 202 until done.
	BatchSubmitted = "submitted"
	// BatchDone: the job already has a record; nothing was submitted.
	BatchDone = "done"
	// BatchDuplicate: the id came twice in the submission, or is already
	// in another batch; it runs once.
	BatchDuplicate = "duplicate"
	// BatchFailed: the job is invalid (or the model refused its batch): it
	// is recorded failed, with its error.
	BatchFailed = "failed"
	// BatchConflict: the id already stands for different work.
	BatchConflict = "conflict"
)

// BatchAnswer is what a batch submission became: the HTTP answer (202) and
// the log line of an event's batch.
type BatchAnswer struct {
	// Batch names the submission: the Idempotency-Key, a new id, the
	// message's delivery id or the uploaded object.
	Batch string     `json:"batch"`
	Jobs  []BatchJob `json:"jobs"`
	// Submitted is the lane's report: chunks submitted now (or found from
	// an earlier delivery) and the jobs it did not submit, with why.
	Submitted batch.SubmitReport `json:"submitted"`
}

// BatchJob is one job of a batch answer, in submission order.
type BatchJob struct {
	Index int    `json:"index"`
	JobID string `json:"jobId"`
	// Status is one of submitted, done, duplicate, failed, conflict.
	Status string `json:"status"`
	// Location is where to GET the job's record.
	Location string     `json:"location,omitempty"`
	Error    *job.Error `json:"error,omitempty"`
}

// TakeBatch validates each job of b, records the invalid ones failed,
// stages inline images, and submits the rest to the lane. It returns an
// error only when a job's fate could not be decided (Cloud Storage or the
// model unavailable): a transient error, for a retry of the whole
// submission, which is idempotent.
func (s *Service) TakeBatch(ctx context.Context, b trigger.Batch, trig job.Trigger, when time.Time) (BatchAnswer, error) {
	ans := BatchAnswer{Batch: b.Source, Jobs: make([]BatchJob, len(b.Items))}
	var (
		entries []batch.Entry
		itemOf  []int // entries[k] is b.Items[itemOf[k]]
	)
	for i, it := range b.Items {
		bj := &ans.Jobs[i]
		bj.Index, bj.JobID = i, it.ID
		jctx := WithJobID(ctx, it.ID)
		j, cause, err := s.checkBatchItem(jctx, it, when)
		if err != nil {
			return ans, err
		}
		if cause != nil {
			if err := s.failBatchJob(jctx, bj, it, trig, when, cause); err != nil {
				return ans, err
			}
			continue
		}
		// The same id with different work is a conflict, as for a lone
		// job (the lane only checks that a record exists).
		fp := j.Fingerprint()
		st, err := s.store.Status(jctx, j.ID)
		switch {
		case err != nil && !errors.Is(err, storage.ErrNotFound):
			return ans, err
		case st.Fingerprint != "" && st.Fingerprint != fp:
			cerr := fmt.Errorf("%w: job id %s was already used for a different job; use a new id", job.ErrConflict, j.ID)
			if err := s.batchConflict(jctx, bj, j, trig, when, cerr); err != nil {
				return ans, err
			}
			continue
		}
		bj.Status = BatchSubmitted
		entries = append(entries, batch.Entry{Job: j, Trigger: trig})
		itemOf = append(itemOf, i)
	}
	if len(entries) > 0 && s.lane == nil {
		return ans, s.errNoModel()
	}
	if len(entries) > 0 {
		// Batch work is paid too: the spend guard admits the submission at
		// the batch price, and counts only the jobs that went into new
		// batches (a redelivered submission adds nothing).
		total := 0.0
		for _, e := range entries {
			total += s.estimate(e.Job) * s.cfg.Prices.BatchDiscount
		}
		release, err := s.spend.Admit(ctx, total)
		if err != nil {
			return ans, err // paused or over budget: the submission is retried later
		}
		rep, err := s.lane.Submit(ctx, entries)
		if err != nil {
			release(0)
			return ans, err
		}
		release(total * float64(rep.Jobs) / float64(len(entries)))
		ans.Submitted = rep
		if err := s.applyReport(ctx, &ans, b, entries, itemOf, trig, when); err != nil {
			return ans, err
		}
	}
	counts := map[string]int{}
	for _, bj := range ans.Jobs {
		counts[bj.Status]++
	}
	slog.InfoContext(ctx, "batch taken", "batch", b.Source, "trigger", string(trig.Kind), "jobs", len(b.Items),
		"submitted", counts[BatchSubmitted], "failed", counts[BatchFailed], "conflicts", counts[BatchConflict],
		"duplicates", counts[BatchDuplicate], "done", counts[BatchDone],
		"chunks", ans.Submitted.Chunks, "existing", ans.Submitted.Existing, "pending", ans.Submitted.Pending)
	return ans, nil
}

// checkBatchItem checks one job of a batch submission and stages its
// inline images: j is the job to run, or cause why it is invalid (to be
// recorded failed); err is a transient failure of the whole submission.
func (s *Service) checkBatchItem(ctx context.Context, it trigger.BatchItem, when time.Time) (j job.Job, cause, err error) {
	j = it.Job
	j.ID = it.ID
	j.Normalize(s.policy)
	cause = it.Err
	if cause == nil {
		cause = s.tooOld(when)
	}
	if cause == nil {
		cause = j.Validate(s.policy)
	}
	if cause == nil && j.Parent != "" {
		// The batch lane keeps no conversation turns and reads no
		// history: an edit session runs online.
		cause = fmt.Errorf("%w: parent: edit sessions run one job at a time, not in the batch lane; submit the job without \"batch\"", job.ErrInvalid)
	}
	if cause == nil {
		if cause = s.CheckCallback(ctx, j); job.Retryable(cause) {
			return j, nil, cause
		}
	}
	if cause == nil {
		if err := s.store.StageInputs(ctx, j.ID, &j); err != nil {
			if job.Retryable(err) {
				return j, nil, err
			}
			cause = err
		}
	}
	return j, cause, nil
}

// BatchQueued: the job is durable (queued under its id) and on the
// requests topic, where OnMessage submits it to the batch lane; GET ?id=
// answers 202 until done.
const BatchQueued = "queued"

// QueueBatch is the front door's take of a batch submission (HTTP): it
// never calls the model. Each job is checked as TakeBatch checks it; an
// invalid one is recorded failed at once; a valid one is queued under its
// id (storage.Store.Queue: done before, or a conflict with other work,
// is answered here) with its inline images staged, and the queued jobs go
// on the requests topic as batch messages with their ids set, for
// OnMessage's TakeBatch to submit to the lane. Ids are b's (derived from
// the submission and the position), so a retried submission maps to the
// same jobs and, through the lane's own checks, submits nothing twice. It
// returns an error only when a job's fate could not be decided or the
// queue refused: a transient error, for a retry of the whole submission.
func (s *Service) QueueBatch(ctx context.Context, b trigger.Batch, trig job.Trigger) (BatchAnswer, error) {
	ans := BatchAnswer{Batch: b.Source, Jobs: make([]BatchJob, len(b.Items))}
	var queued []job.Job
	first := map[string]string{} // id → fingerprint of its first valid job in b
	for i, it := range b.Items {
		bj := &ans.Jobs[i]
		bj.Index, bj.JobID = i, it.ID
		jctx := WithJobID(ctx, it.ID)
		j, cause, err := s.checkBatchItem(jctx, it, time.Time{})
		if err != nil {
			return ans, err
		}
		if cause != nil {
			if err := s.failBatchJob(jctx, bj, it, trig, time.Time{}, cause); err != nil {
				return ans, err
			}
			continue
		}
		fp := j.Fingerprint()
		if prev, ok := first[j.ID]; ok {
			// The same id again in the submission: the first stands.
			if prev == fp {
				bj.Status = BatchDuplicate
			} else {
				bj.Status, bj.Error = BatchConflict, job.ErrorOf(fmt.Errorf("%w: job id %s is given twice in the batch for different work", job.ErrConflict, j.ID))
			}
			continue
		}
		rec, err := s.store.Queue(jctx, j.ID, fp, trig, false)
		switch {
		case errors.Is(err, job.ErrConflict):
			slog.InfoContext(jctx, "batch job rejected", "error", err)
			bj.Status, bj.Error = BatchConflict, job.ErrorOf(err)
			continue
		case err != nil:
			return ans, err
		case rec != nil:
			bj.Status = BatchDone
			first[j.ID] = fp
			continue
		}
		first[j.ID] = fp
		bj.Status = BatchQueued
		queued = append(queued, j)
	}
	if err := s.enqueueBatch(ctx, queued, trig.Source); err != nil {
		return ans, err
	}
	counts := map[string]int{}
	for _, bj := range ans.Jobs {
		counts[bj.Status]++
	}
	slog.InfoContext(ctx, "batch queued", "batch", b.Source, "trigger", string(trig.Kind), "jobs", len(b.Items),
		"queued", counts[BatchQueued], "failed", counts[BatchFailed], "conflicts", counts[BatchConflict],
		"duplicates", counts[BatchDuplicate], "done", counts[BatchDone])
	return ans, nil
}

// applyReport turns the lane's report into each job's status, and records
// failed the jobs whose batch the model refused for good.
func (s *Service) applyReport(ctx context.Context, ans *BatchAnswer, b trigger.Batch, entries []batch.Entry, itemOf []int, trig job.Trigger, when time.Time) error {
	rep := ans.Submitted
	done := map[string]bool{}
	for _, id := range rep.Done {
		done[id] = true
	}
	// The lane lists an id as a duplicate once per repeat of the same work
	// in the submission, and once more if another batch already holds it:
	// only then is the first occurrence a duplicate too.
	dups, repeats, firstFP := map[string]int{}, map[string]int{}, map[string]string{}
	for _, id := range rep.Duplicates {
		dups[id]++
	}
	for _, e := range entries {
		fp := e.Job.Fingerprint()
		if prev, ok := firstFP[e.Job.ID]; !ok {
			firstFP[e.Job.ID] = fp
		} else if prev == fp {
			repeats[e.Job.ID]++
		}
	}
	seen := map[string]bool{}
	for k, e := range entries {
		i, id := itemOf[k], e.Job.ID
		bj := &ans.Jobs[i]
		jctx := WithJobID(ctx, id)
		first := !seen[id]
		seen[id] = true
		switch {
		case rep.Rejected[id+"#"+strconv.Itoa(k)] != "":
			// The same id twice in the submission, for different work:
			// the first stands.
			cerr := fmt.Errorf("%w: job id %s is given twice in the batch for different work", job.ErrConflict, id)
			if err := s.batchConflict(jctx, bj, e.Job, trig, when, cerr); err != nil {
				return err
			}
		case rep.Rejected[id] != "" && first:
			// The model refused the chunk's batch for good: the lane
			// leaves the jobs' records to us.
			cause := fmt.Errorf("%w: the batch was refused: %s", job.ErrPermanent, rep.Rejected[id])
			if err := s.failBatchJob(jctx, bj, b.Items[i], trig, when, cause); err != nil {
				return err
			}
		case done[id]:
			bj.Status = BatchDone
		case !first, dups[id] > repeats[id]:
			bj.Status = BatchDuplicate
		}
	}
	return nil
}

// failBatchJob records an invalid batch job failed, through the pipeline's
// own path for a delivery that is not a valid job.
func (s *Service) failBatchJob(ctx context.Context, bj *BatchJob, it trigger.BatchItem, trig job.Trigger, when time.Time, cause error) error {
	rec, err := s.Run(ctx, trigger.Delivery{ID: it.ID, Job: it.Job, Trigger: trig, Time: when, Err: cause})
	switch {
	case errors.Is(err, ErrRejected):
		bj.Status, bj.Error = BatchConflict, job.ErrorOf(cause)
		return nil
	case err != nil && !errors.Is(err, ErrIgnored):
		return err
	}
	bj.Status, bj.Error = BatchFailed, rec.Error
	if bj.Error == nil {
		bj.Error = job.ErrorOf(cause)
	}
	return nil
}

// batchConflict reports a job whose id stands for different work. An HTTP
// caller reads it in the answer (as a lone job's 409); an event's batch
// publishes a rejected event, as the online lane does.
func (s *Service) batchConflict(ctx context.Context, bj *BatchJob, j job.Job, trig job.Trigger, when time.Time, cause error) error {
	bj.Status, bj.Error = BatchConflict, job.ErrorOf(cause)
	if trig.Kind == job.HTTP {
		slog.InfoContext(ctx, "batch job rejected", "error", cause)
		return nil
	}
	err := s.reject(ctx, trigger.Delivery{ID: j.ID, Trigger: trig, Time: when}, cause)
	if errors.Is(err, ErrRejected) {
		return nil
	}
	return err
}

// InBatch reports whether a job without a record or claim is waiting in
// a model batch: the lane reserves each job it submits with
// jobs/<id>/batch.json (package batch). An unreadable answer is "no".
func (s *Service) InBatch(ctx context.Context, id string) bool {
	_, err := s.output.Stat(ctx, storage.BatchMarkerObject(id))
	return err == nil
}

// PollBatches checks every open batch and finishes the jobs of those that
// are done, with the online lane's steps. A poll that is cut off keeps what
// it finished (the lane saves its progress) and the next one resumes.
func (s *Service) PollBatches(ctx context.Context) (batch.PollReport, error) {
	if s.lane == nil {
		return batch.PollReport{}, s.errNoModel()
	}
	rep, err := s.lane.Poll(ctx, batchFinisher{s})
	if err != nil {
		return rep, err
	}
	if len(rep.Finished)+len(rep.Failed) > 0 || len(rep.Errors) > 0 || len(rep.Expired)+len(rep.Stuck) > 0 ||
		len(rep.Submitted)+len(rep.Adopted)+len(rep.Held)+len(rep.Refused) > 0 {
		slog.InfoContext(ctx, "batches polled", "checked", rep.Checked, "open", rep.Open, "finished", len(rep.Finished),
			"failed", len(rep.Failed), "duplicates", rep.Duplicates, "expired", rep.Expired, "stuck", rep.Stuck, "cancelled", rep.Cancelled,
			"submitted", rep.Submitted, "adopted", rep.Adopted, "held", rep.Held, "refused", rep.Refused, "errors", len(rep.Errors))
	}
	return rep, nil
}

// batchAdmitter admits the batch lane's own submissions (a Poll's retry or
// resubmission) through the spend guard at the batch price, as TakeBatch
// admits a submission: the kill switch and the budgets stop them too.
type batchAdmitter struct{ s *Service }

func (a batchAdmitter) AdmitBatch(ctx context.Context, jobs []job.Job) (func(paid bool), error) {
	total := 0.0
	for _, j := range jobs {
		total += a.s.estimate(j) * a.s.cfg.Prices.BatchDiscount
	}
	release, err := a.s.spend.Admit(ctx, total)
	if err != nil {
		return nil, err
	}
	return func(paid bool) {
		if paid {
			release(total)
		} else {
			release(0)
		}
	}, nil
}

// batchFinisher finishes batch answers with the online lane's steps.
type batchFinisher struct{ s *Service }

// Finish claims the job as the online lane does (so a job that also ran
// online, or is handed over again after a crash, gets one record), writes
// the answer's images, commits the record and publishes the event. An
// error wrapping job.ErrTransient makes Poll try the batch again later.
func (f batchFinisher) Finish(ctx context.Context, fin batch.Finished) error {
	s := f.s
	j := fin.Job
	ctx = WithJobID(ctx, j.ID)
	rec := s.newRecord(j, fin.Trigger)
	info := fin.Batch
	rec.Batch = &info

	claim, done, err := s.store.Claim(ctx, j.ID, rec.Fingerprint, fin.Trigger)
	switch {
	case errors.Is(err, job.ErrConflict):
		if err := s.reject(ctx, trigger.Delivery{ID: j.ID, Trigger: fin.Trigger}, err); !errors.Is(err, ErrRejected) {
			return err
		}
		return nil
	case err != nil:
		return err // transient: held elsewhere, or storage unavailable; the next poll retries
	case done != nil:
		// Finished before: by this lane before a crash, or online. Its
		// record stands; the same event again.
		slog.InfoContext(ctx, "batch job already done", "outcome", done.Outcome, "batch", info.Name)
		return s.publish(ctx, *done)
	case claim.Draft != nil:
		_, err := s.commit(ctx, claim, *claim.Draft)
		return err
	}
	rec.Attempts, rec.CostUSD = claim.PriorCalls, claim.PriorCost

	res := fin.Result
	if fin.Err == nil && res == nil {
		fin.Err = fmt.Errorf("%w: batch %s handed job %s neither an answer nor an error", job.ErrPermanent, info.Name, j.ID)
	}
	if fin.Err != nil {
		_, err := s.commit(ctx, claim, failed(rec, fin.Err, s.now()))
		return err
	}
	// The batch was paid when it ran: count the call whatever happens next.
	rec.Attempts += res.Attempts
	rec.CostUSD += res.CostUSD
	rec.Timings.ModelMs = res.ModelTime.Milliseconds()
	meta := storage.ImageMeta{Model: j.Model, PromptSHA256: job.PromptHash(j.Prompt), CacheControl: s.cfg.Storage.CacheControl}
	if fin.Trigger.Kind == job.Upload {
		meta.Source = fin.Trigger.Source
	}
	outputs, err := s.store.WriteImages(ctx, claim, &j, res.Images, meta)
	if err != nil {
		if job.Retryable(err) {
			s.release(ctx, claim)
			return err // storage unavailable: the next poll retries
		}
		_, err := s.commit(ctx, claim, failed(rec, err, s.now()))
		return err
	}
	fillFromModel(&rec, res)
	rec.Outputs = outputs
	s.renditions(ctx, claim, j.Renditions, rec.Outputs, meta)
	rec.Timings.CompletedAt = s.now()
	rec.Timings.TotalMs = rec.Timings.CompletedAt.Sub(rec.Timings.CreatedAt).Milliseconds()
	// The batch's answer can be read again: the next poll retries it.
	_, err = s.finish(ctx, claim, rec, nil, nil, time.Now().Add(minKeep))
	return err
}
