package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// A request is what authentication learned of a POST: for a signed caller
// (GENIMG_WEBHOOK_SECRET), its webhook-id and the SHA-256 of its body.
type request struct {
	webhookID string
	body      string
	// repeat: the same webhook-id with the same body was taken before; the
	// job is durable already and is not queued again.
	repeat bool
}

// jobID is the id of a job that names none: derived from a signed
// request's webhook-id, so that its retries are the same job; else new.
func (q request) jobID() string {
	if q.webhookID != "" {
		return job.DeriveID("wh", q.webhookID)
	}
	return trigger.NewID()
}

// requestID names the request in the record's trigger: a signed request
// and its retries are one request; every unsigned POST is a new one (so an
// explicit resubmission of a retryable failure runs it again).
func (q request) requestID() string {
	if q.webhookID != "" {
		return job.DeriveID("wh", q.webhookID)
	}
	return trigger.NewID()
}

// authenticate starts checking a Standard Webhooks signature when
// GENIMG_WEBHOOK_SECRET is set (callers outside Google Cloud IAM): the
// headers now, the body as it streams through whatever reads it, so that
// the body is never held whole for the signature's sake. verified must be
// called once the body has been read, before anything it asks for is
// acted on: it reads what is left (within GENIMG_MAX_REQUEST_BYTES),
// compares the signatures, and fills req. Without a secret, IAM on the
// function is the only gate, and verified has nothing to check.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (req *request, verified func() error, err error) {
	req = &request{}
	if a.key == nil {
		return req, func() error { return nil }, nil
	}
	refuse := func(err error) error {
		slog.WarnContext(r.Context(), "webhook signature refused", "error", err)
		w.Header().Set("WWW-Authenticate", `Webhook realm="genimg"`)
		return err
	}
	v, err := webhook.NewVerifier(a.key, r.Header, a.now(), a.cfg.Webhook.Tolerance)
	if err != nil {
		return nil, nil, refuse(err)
	}
	sum := sha256.New()
	body := http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxRequestBytes)
	r.Body = readCloser{io.TeeReader(body, io.MultiWriter(v, sum)), body}
	verified = func() error {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return fmt.Errorf("%w: the request body is over %d bytes", job.ErrTooLarge, a.cfg.Limits.MaxRequestBytes)
			}
			return fmt.Errorf("%w: reading the request body: %v", job.ErrInvalid, err)
		}
		id, err := v.Verify()
		if err != nil {
			return refuse(err)
		}
		req.webhookID, req.body = id, hex.EncodeToString(sum.Sum(nil))
		return nil
	}
	return req, verified, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// makeDurable makes the rest of a request durable — a caller that disconnects
// cancels nothing from it on — and looks a signed request's webhook-id up:
// the same id with another body is refused (409); with the same body, the
// request is a retry (req.repeat) and gets the answer the first one would
// get now.
func (a *API) makeDurable(ctx context.Context, req *request) (context.Context, context.CancelFunc, error) {
	durable, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Limits.FunctionTimeout)
	if a.replay == nil || req.webhookID == "" {
		return durable, cancel, nil
	}
	seen, ok, err := a.replay.Seen(durable, req.webhookID)
	switch {
	case err != nil:
		cancel()
		return nil, nil, err
	case ok && seen.Body != req.body:
		cancel()
		return nil, nil, fmt.Errorf("%w: %s was already used for a request with another body", webhook.ErrReplay, webhook.HeaderID)
	}
	req.repeat = ok
	return durable, cancel, nil
}

// remember records a signed request's webhook-id once its work is durable:
// a request that failed before that can simply be retried.
func (a *API) remember(ctx context.Context, req request, jobID string) error {
	if a.replay == nil || req.webhookID == "" || req.repeat {
		return nil
	}
	return a.replay.Remember(ctx, req.webhookID, webhook.Seen{Body: req.body, JobID: jobID})
}
