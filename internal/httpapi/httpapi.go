// Package httpapi is genimg's front door: the Generate function (submit a
// job or a batch, read a job's record, wait for it, stream its progress)
// and the batch lane's PollBatches. It makes each job durable before it
// answers, and leaves the running of jobs to the pipeline.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/spend"
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
		large: make(chan struct{}, maxLargeBodies)}
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

// submit makes the job durable — inline images staged to Cloud Storage,
// the job queued on the requests topic — before it answers anything, then
// waits for the record. The caller may disconnect at any moment and CPU is
// throttled once a response is sent, so no work is left for after the
// answer: OnMessage runs the job.
func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	webhookID, err := a.authenticate(w, r)
	if err != nil {
		writeJobError(w, err)
		return
	}
	// One pass over the body: {"batch": [...]} goes to the batch lane,
	// each job on its own; a job's inline images are decoded as read.
	release, err := a.admitBody(r)
	if err != nil {
		writeJobError(w, err)
		return
	}
	defer release()
	j, b, err := trigger.ReadHTTP(r, a.cfg.Limits.MaxRequestBytes)
	if err != nil {
		release()
		writeJobError(w, err)
		return
	}
	if b != nil {
		release()
		a.submitBatch(w, r, *b, webhookID)
		return
	}
	// A job without an id gets a new one, which no earlier job can have.
	newID := j.ID == ""
	if newID {
		j.ID = trigger.NewID()
	}
	ctx := pipeline.WithJobID(r.Context(), j.ID)
	j.Normalize(a.policy)
	if err := j.Validate(a.policy); err != nil {
		slog.InfoContext(ctx, "job rejected", "error", err)
		writeJobError(w, err)
		return
	}

	// Paused, or the budget spent: say so now, rather than queue work that
	// cannot run.
	if err := a.spend.Check(ctx); err != nil {
		var limit *spend.LimitError
		if !errors.As(err, &limit) {
			a.writeUnavailable(ctx, w, "reading the spend ledger", err)
			return
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(limit.RetryAfter.Seconds()))))
		writeError(w, http.StatusTooManyRequests, limit.Error())
		return
	}
	durable, cancel, err := a.takeOnce(ctx, webhookID)
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
	if !newID {
		// The same id again: the same answer, or a conflict.
		rec, err := a.store.Record(durable, j.ID)
		switch {
		case err != nil && !errors.Is(err, storage.ErrNotFound):
			a.writeUnavailable(ctx, w, "reading the job's state", err)
			return
		case rec != nil && rec.Fingerprint != fp:
			writeError(w, http.StatusConflict, fmt.Sprintf("job id %s was already used for a different job; use a new id", j.ID))
			return
		case rec != nil && !(rec.Outcome == job.Failed && rec.Error != nil && rec.Error.Retryable):
			writeRecord(w, *rec) // done before: the same answer, no new work
			return
		}
	}

	// Watch before queueing, so that a run on this instance that ends
	// before the wait starts is still seen.
	watch := a.svc.Watch(j.ID)
	defer watch.Close()
	if err := a.svc.Enqueue(durable, j, "request/"+trigger.NewID()); err != nil {
		a.writeUnavailable(ctx, w, "queueing the job", err)
		return
	}
	slog.InfoContext(ctx, "job queued", "trigger", "http")

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
		writeAccepted(w, r, j.ID)
	default:
		a.await(ctx, w, r, watch, j.ID, fp, wait)
	}
}

// await waits for the job's record until it is there or wait runs out.
// When this instance runs the job, the run hands the record over in
// process (pipeline.Watch); otherwise — the job runs on another instance,
// or a run here ended without a record and was redelivered — the record
// in Cloud Storage is read with backoff, so any instance's work is seen.
// While the job runs here, that read is only a slow safety net.
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
			writeAccepted(w, r, id)
			return
		case <-timer.C:
		}
		rec, _, _, err := a.store.Status(ctx, id)
		switch {
		case rec != nil:
			answer(rec)
			return
		case err != nil && !errors.Is(err, storage.ErrNotFound) && ctx.Err() == nil:
			slog.WarnContext(ctx, "reading the job's state", "error", err)
		}
		delay = min(delay*2, maxPoll)
		timer.Reset(nextPoll(watch, delay))
	}
}

// The record is read after firstPoll, then at doubling intervals up to
// maxPoll; while this instance runs the job, every runningPoll. A job run
// on another instance is seen at most maxPoll late; one run here at once.
// (Each read is one or two Cloud Storage requests: reading every 100 ms,
// as before, cost more than the rest of the front door.)
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

// status answers GET ?id=JOB: the record (200), running (202) or unknown (404).
func (a *API) status(w http.ResponseWriter, r *http.Request) {
	// Only callers allowed to submit may read records.
	if _, err := a.authenticate(w, r); err != nil {
		writeJobError(w, err)
		return
	}
	id := r.URL.Query().Get("id")
	if !job.ValidID(id) {
		writeError(w, http.StatusBadRequest, "give ?id=JOB with a job id of 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
		return
	}
	rec, _, running, err := a.store.Status(r.Context(), id)
	switch {
	case rec != nil:
		writeRecord(w, *rec)
	case running:
		writeAccepted(w, r, id)
	case errors.Is(err, storage.ErrNotFound) && a.svc.InBatch(r.Context(), id):
		writeAccepted(w, r, id) // submitted to a model batch, not answered yet
	case errors.Is(err, storage.ErrNotFound):
		writeError(w, http.StatusNotFound, "no job with id "+id)
	default:
		a.writeUnavailable(r.Context(), w, "reading the job's state", err)
	}
}

// authenticate checks a Standard Webhooks signature when
// GENIMG_WEBHOOK_SECRET is set (callers outside Google Cloud IAM), and
// returns the webhook id. It reads the body, bounded, and puts it back for
// decoding. Without a secret, IAM on the function is the only gate.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (string, error) {
	if a.key == nil {
		return "", nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", fmt.Errorf("%w: the request body is over %d bytes", job.ErrTooLarge, a.cfg.Limits.MaxRequestBytes)
		}
		return "", fmt.Errorf("%w: reading the request body: %v", job.ErrInvalid, err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	id, err := webhook.Verify(a.key, r.Header, body, a.now(), a.cfg.Webhook.Tolerance)
	if err != nil {
		slog.WarnContext(r.Context(), "webhook signature refused", "error", err)
		w.Header().Set("WWW-Authenticate", `Webhook realm="genimg"`)
		return "", err
	}
	return id, nil
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

func writeAccepted(w http.ResponseWriter, r *http.Request, id string) {
	w.Header().Set("Location", location(r, id))
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusAccepted, map[string]string{"jobId": id, "status": "running"})
}

// location is where a job's record is polled: this function with ?id=.
func location(r *http.Request, id string) string {
	return (&url.URL{Path: r.URL.Path, RawQuery: url.Values{"id": {id}}.Encode()}).String()
}

// takeOnce makes the rest of a request durable — a caller that disconnects
// cancels nothing from it on — and refuses a replayed signed request: a
// signed request is taken once, even while its signature is still fresh.
func (a *API) takeOnce(ctx context.Context, webhookID string) (context.Context, context.CancelFunc, error) {
	durable, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Limits.FunctionTimeout)
	if a.replay != nil {
		if err := a.replay.Check(durable, webhookID); err != nil {
			cancel()
			return nil, nil, err
		}
	}
	return durable, cancel, nil
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
