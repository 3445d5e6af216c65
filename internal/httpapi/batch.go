package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// submitBatch answers POST {"batch": [...]}: every job recorded failed, or
// queued under its id and on the requests topic (OnMessage submits it to
// the batch lane), before the answer (202), so that a caller who
// disconnects loses nothing; each job's Location polls its record. The
// front door never calls the model (pipeline.Service.QueueBatch).
func (a *API) submitBatch(w http.ResponseWriter, r *http.Request, b trigger.Batch, req request) {
	ctx := r.Context()
	durable, cancel, err := a.makeDurable(ctx, &req)
	if err != nil {
		writeJobError(w, err)
		return
	}
	defer cancel()
	trig := job.Trigger{Kind: job.HTTP, Source: "request/" + b.Source}
	ans, err := a.svc.QueueBatch(durable, b, trig)
	if err != nil {
		a.writeUnavailable(ctx, w, "submitting the batch", err)
		return
	}
	if err := a.remember(durable, req, ""); err != nil {
		slog.WarnContext(ctx, "webhook id not recorded; a retry with another body could run", "error", err)
	}
	for i := range ans.Jobs {
		ans.Jobs[i].Location = location(r, ans.Jobs[i].JobID)
	}
	w.Header().Set("Retry-After", "60") // batches take minutes to hours
	writeJSON(w, http.StatusAccepted, ans)
}

// tick is what one scheduled call did: the batch lane's poll, and the held
// jobs resumed.
type tick struct {
	batch.PollReport
	Held pipeline.ResumeReport `json:"held"`
}

// PollBatches handles Cloud Scheduler's call: it checks every open batch,
// finishes the jobs of those that are done, resumes the held jobs whose
// cause has cleared (pipeline.Service.Resume), and answers what it did
// (200). It takes no input, so IAM on the function (the
// scheduler's OIDC token) is its only gate, with or without a webhook
// secret.
func (a *API) PollBatches(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, "use POST (Cloud Scheduler) or GET to poll the open batches")
		return
	}
	// A poll that is cut off keeps what it finished and the next one
	// resumes: stop before the function's timeout rather than be killed
	// mid-write.
	limit := max(a.cfg.Limits.FunctionTimeout-10*time.Second, a.cfg.Limits.FunctionTimeout/2)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), limit)
	defer cancel()
	rep, err := a.svc.PollBatches(ctx)
	if err != nil {
		a.writeUnavailable(r.Context(), w, "listing the open batches", err)
		return
	}
	held, err := a.svc.Resume(ctx)
	if err != nil {
		a.writeUnavailable(r.Context(), w, "listing the held jobs", err)
		return
	}
	writeJSON(w, http.StatusOK, tick{PollReport: rep, Held: held})
}
