// Package httpapi is genimg's front door: the Generate function (submit a
// job or a batch, read a job's record, wait for it, stream its progress)
// and the batch lane's PollBatches. It makes each job durable before it
// answers, and leaves the running of jobs to the pipeline.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/internal/tracing"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/trigger"
)

// An API serves genimg's HTTP functions for one pipeline Service.
type API struct {
	svc    *pipeline.Service
	cfg    config.Config
	policy job.Policy
	store  *storage.Store
	spend  *spend.Guard
	// key and replay verify signed callers when GENIMG_WEBHOOK_SECRET is
	// set; key is nil otherwise.
	key    webhook.Key
	replay *webhook.Replay
	// large holds a slot per large body being read and staged (body.go).
	large chan struct{}
}

// New builds the API of svc.
func New(svc *pipeline.Service) (*API, error) {
	cfg := svc.Config()
	a := &API{svc: svc, cfg: cfg, policy: svc.Policy(), store: svc.Store(), spend: svc.Spend(),
		large: make(chan struct{}, largeBodies(cfg.Limits.LargeBodies))}
	if cfg.Webhook.Secret != "" {
		key, err := webhook.ParseKey(cfg.Webhook.Secret)
		if err != nil {
			return nil, fmt.Errorf("GENIMG_WEBHOOK_SECRET: %w", err)
		}
		a.key = key
		a.replay = webhook.NewReplay(svc.Output(), cfg.Webhook.Tolerance)
	}
	return a, nil
}

func (a *API) now() time.Time { return a.svc.Now() }

// Generate handles the webhook: POST a job, GET ?id= a job's record.
func (a *API) Generate(w http.ResponseWriter, r *http.Request) {
	// The caller's trace (a traceparent header) continues here, and through
	// the requests topic into OnMessage.
	ctx, span := a.svc.Traces().Start(tracing.Continue(r.Context(), r.Header.Get("traceparent")), "Generate", trace.SpanKindServer,
		attribute.String("http.request.method", r.Method))
	defer span.End()
	r = r.WithContext(ctx)
	switch r.Method {
	case http.MethodPost:
		a.submit(w, r)
	case http.MethodGet, http.MethodHead:
		a.status(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeError(w, http.StatusMethodNotAllowed, "use POST to submit a job or GET ?id=JOB for its record")
	}
}

// submit makes the job durable — the id taken for this work (queued),
// inline images staged to Cloud Storage, the job on the requests topic —
// before it answers anything, then waits for the record. The caller may
// disconnect at any moment and CPU is throttled once a response is sent, so
// no work is left for after the answer: OnMessage runs the job.
func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	// A large body waits for one of the instance's slots before anything
	// reads it — a signed one too, whose signature needs the whole body.
	release, err := a.admitBody(r)
	if err != nil {
		writeJobError(w, err)
		return
	}
	defer release()
	req, verified, err := a.authenticate(w, r)
	if err != nil {
		writeJobError(w, err)
		return
	}
	// One pass over the body: {"batch": [...]} goes to the batch lane,
	// each job on its own; a job's inline images are decoded as read, and
	// a signed body is checked as it streams — nothing it asks for is done
	// before its signature is.
	j, b, err := trigger.ReadHTTP(r, a.cfg.Limits.MaxRequestBytes)
	if verr := verified(); verr != nil {
		release()
		writeJobError(w, verr)
		return
	}
	if err != nil {
		release()
		writeJobError(w, err)
		return
	}
	if b != nil {
		release()
		a.submitBatch(w, r, *b, *req)
		return
	}
	// A job without an id gets a new one, which no earlier job can have —
	// or, for a signed request, one derived from its webhook-id, so that
	// its retries are the same job, never a second payment.
	fresh := j.ID == "" && req.webhookID == ""
	if j.ID == "" {
		j.ID = req.jobID()
	}
	ctx := pipeline.WithJobID(r.Context(), j.ID)
	j.Normalize(a.policy)
	if err := j.Validate(a.policy); err != nil {
		slog.InfoContext(ctx, "job rejected", "error", err)
		writeJobError(w, err)
		return
	}
	// A callback URL genimg will not call rejects the job now, before it
	// is queued and long before any model call.
	if err := a.svc.CheckCallback(ctx, j); err != nil {
		slog.InfoContext(ctx, "job rejected", "error", err)
		writeJobError(w, err)
		return
	}
	durable, cancel, err := a.makeDurable(ctx, req)
	if err != nil {
		writeJobError(w, err)
		return
	}
	defer cancel()
	if err := a.store.StageInputs(durable, j.ID, &j); err != nil {
		a.writeUnavailable(ctx, w, "staging the job's images", err)
		return
	}
	release() // the images are staged: the body's memory is done with
	fp := j.Fingerprint()
	trig := job.Trigger{Kind: job.HTTP, Source: "request/" + req.requestID()}
	rec, err := a.store.Queue(durable, j.ID, fp, trig, fresh)
	switch {
	case errors.Is(err, job.ErrConflict):
		writeError(w, http.StatusConflict, fmt.Sprintf("job id %s was already used for a different job; use a new id", j.ID))
		return
	case err != nil:
		a.writeUnavailable(ctx, w, "taking the job id", err)
		return
	case rec != nil:
		writeRecord(w, *rec) // done before: the same answer, no new work
		return
	}
	// Watch before queueing, so that a run on this instance that ends
	// before the wait starts is still seen.
	watch := a.svc.Watch(j.ID)
	defer watch.Close()
	if !req.repeat {
		if err := a.svc.Enqueue(durable, j, trig.Source); err != nil {
			a.writeUnavailable(ctx, w, "queueing the job", err)
			return
		}
		if err := a.remember(durable, *req, j.ID); err != nil {
			slog.WarnContext(ctx, "webhook id not recorded; a retry with another body could run", "error", err)
		}
		slog.InfoContext(ctx, "job queued", "trigger", "http")
	}

	wait, async := trigger.Prefer(r.Header)
	if wait == 0 {
		wait = a.cfg.Limits.HTTPWait
	}
	// Leave the function a few seconds to answer before its own timeout.
	wait = min(wait, a.cfg.Limits.FunctionTimeout-5*time.Second)
	switch {
	case wantsStream(r):
		a.stream(ctx, w, r, j, fp, wait)
	case async || wait <= 0:
		writeAccepted(w, r, j.ID, storage.JobStatus{State: job.Queued})
	default:
		a.await(ctx, w, r, watch, j.ID, fp, wait)
	}
}

// follow reads a job's state until it is done, or onChange says stop, or
// ctx ends, backing off from 100 ms to 1 s (the SSE stream's loop: it
// reports every change). It returns the last state read.
func (a *API) follow(ctx context.Context, id string, onChange func(storage.JobStatus) bool) (storage.JobStatus, error) {
	delay := 100 * time.Millisecond
	var last storage.JobStatus
	for {
		st, err := a.store.Status(ctx, id)
		switch {
		case err == nil:
			last = st
			if st.State == job.Done || (onChange != nil && !onChange(st)) {
				return st, nil
			}
		case !errors.Is(err, storage.ErrNotFound) && ctx.Err() == nil:
			slog.WarnContext(ctx, "reading the job's state", "error", err)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(delay):
			delay = min(delay*3/2, time.Second)
		}
	}
}

// await waits for the job's record until it is there or wait runs out,
// then answers 202 with the job's state. When this instance runs the job,
// the run hands the record over in process (pipeline.Watch); otherwise —
// the job runs on another instance, or a run here ended without a record
// and was redelivered — the job's state in Cloud Storage is read with
// backoff, so any instance's work is seen. While the job runs here, that
// read is only a slow safety net.
func (a *API) await(ctx context.Context, w http.ResponseWriter, r *http.Request, watch *pipeline.Watch, id, fp string, wait time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	answer := func(rec *job.Record) {
		if rec.Fingerprint != fp {
			writeError(w, http.StatusConflict, fmt.Sprintf("job id %s was already used for a different job; use a new id", id))
			return
		}
		writeRecord(w, *rec)
	}
	last := storage.JobStatus{State: job.Queued}
	delay := firstPoll
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case rec := <-watch.Done():
			answer(&rec)
			return
		case <-watch.Changed():
			// A run here started or ended: re-arm the read for it.
			delay = firstPoll
			timer.Reset(nextPoll(watch, delay))
			continue
		case <-ctx.Done():
			writeAccepted(w, r, id, last)
			return
		case <-timer.C:
		}
		st, err := a.store.Status(ctx, id)
		switch {
		case err == nil && st.State == job.Done:
			answer(st.Record)
			return
		case err == nil:
			last = st
		case !errors.Is(err, storage.ErrNotFound) && ctx.Err() == nil:
			slog.WarnContext(ctx, "reading the job's state", "error", err)
		}
		delay = min(delay*2, maxPoll)
		timer.Reset(nextPoll(watch, delay))
	}
}

// The state is read after firstPoll, then at doubling intervals up to
// maxPoll; while this instance runs the job, every runningPoll. A job run
// on another instance is seen at most maxPoll late; one run here at once.
// (Each read is one or two Cloud Storage requests: reading every 100 ms
// cost more than the rest of the front door.)
const (
	firstPoll   = time.Second
	maxPoll     = 3 * time.Second
	runningPoll = 10 * time.Second
)

func nextPoll(w *pipeline.Watch, delay time.Duration) time.Duration {
	if w.Running() {
		return runningPoll
	}
	return delay
}

// status answers GET ?id=JOB: the record (200), the job's state while it
// is not done (202), or unknown (404).
func (a *API) status(w http.ResponseWriter, r *http.Request) {
	// Only callers allowed to submit may read records.
	_, verified, err := a.authenticate(w, r)
	if err == nil {
		err = verified()
	}
	if err != nil {
		writeJobError(w, err)
		return
	}
	id := r.URL.Query().Get("id")
	if !job.ValidID(id) {
		writeError(w, http.StatusBadRequest, "give ?id=JOB with a job id of 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
		return
	}
	a.writeState(r.Context(), w, r, id)
}

// writeState answers with where a job stands now.
func (a *API) writeState(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) {
	st, err := a.store.Status(ctx, id)
	switch {
	case err == nil && st.State == job.Done:
		writeRecord(w, *st.Record)
	case err == nil:
		writeAccepted(w, r, id, st)
	case errors.Is(err, storage.ErrNotFound):
		writeError(w, http.StatusNotFound, "no job with id "+id)
	default:
		a.writeUnavailable(ctx, w, "reading the job's state", err)
	}
}

// writeRecord answers with a record. Outcomes the model gave (succeeded,
// blocked, no_image) are answers, not errors: 200. A failed record answers
// with the status of its cause.
func writeRecord(w http.ResponseWriter, rec job.Record) {
	status := http.StatusOK
	if rec.Outcome == job.Failed {
		status = statusOf(rec.Error.Err())
		if rec.Error.Retryable {
			w.Header().Set("Retry-After", "30")
		}
	}
	writeJSON(w, status, rec)
}

// A pending is the answer while a job is not done (contract 9.1).
type pending struct {
	JobID string    `json:"jobId"`
	State job.State `json:"state"`
	// Reason says why a held job waits.
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

func writeAccepted(w http.ResponseWriter, r *http.Request, id string, st storage.JobStatus) {
	if st.State == "" {
		st.State = job.Queued // taken, not yet seen in storage
	}
	w.Header().Set("Location", location(r, id))
	retry := "1"
	if st.State == job.Held || st.State == job.Batched {
		retry = "60" // held jobs wait minutes; batches minutes to hours
	}
	w.Header().Set("Retry-After", retry)
	writeJSON(w, http.StatusAccepted, pending{JobID: id, State: st.State, Reason: st.Reason, Since: st.Since})
}

// location is where a job's record is polled: this function with ?id=.
func location(r *http.Request, id string) string {
	return (&url.URL{Path: r.URL.Path, RawQuery: url.Values{"id": {id}}.Encode()}).String()
}

// writeJobError answers a job that cannot be taken, with what was wrong.
func writeJobError(w http.ResponseWriter, err error) {
	writeError(w, statusOf(err), err.Error())
}

func (a *API) writeUnavailable(ctx context.Context, w http.ResponseWriter, doing string, err error) {
	slog.ErrorContext(ctx, "cannot take the job now", "doing", doing, "error", err)
	w.Header().Set("Retry-After", strconv.Itoa(5))
	writeError(w, http.StatusServiceUnavailable, "genimg cannot take the job now ("+doing+"); retry later with the same id")
}

// statusOf is the one place an error category becomes an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, webhook.ErrUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, webhook.ErrReplay):
		return http.StatusConflict
	case errors.Is(err, job.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, job.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, job.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, job.ErrPermanent):
		return http.StatusBadGateway
	case job.Retryable(err):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = status, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
