// Package gemini turns a job into a Gemini generateContent call and the
// model's answer into a Result, on either backend of the Gen AI SDK: the
// Gemini API (API key) or Vertex AI (project, location and Application
// Default Credentials).
//
// Errors are classified once, here, into job's categories: job.ErrInvalid
// (the request was wrong), job.ErrTooLarge, job.ErrPermanent (bad key, no
// permission, unknown model) and job.ErrTransient (quota, 5xx, deadline,
// connection reset, retries spent). Transient errors are retried in process
// with exponential backoff and full jitter, honouring the service's
// RetryInfo.retryDelay, inside a per-job budget; a per-day quota is not
// retried in process.
package gemini

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"google.golang.org/genai"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// A Client calls the model. It is safe for concurrent use; build one per
// process and share it.
type Client struct {
	genai   *genai.Client
	backend job.Backend
	cfg     config.Model
	prices  config.Prices
	key     string // only to redact it from messages

	sem        chan struct{}
	sleep      func(context.Context, time.Duration) error
	backoffMin time.Duration
	backoffMax time.Duration
	now        func() time.Time
	jitter     func(time.Duration) time.Duration
}

// An Option changes how New builds a Client.
type Option func(*options)

type options struct {
	httpClient *http.Client
	sleep      func(context.Context, time.Duration) error
	backoffMin time.Duration
	backoffMax time.Duration
	jitter     func(time.Duration) time.Duration
}

// WithHTTPClient makes the SDK send its requests with hc. On Vertex AI this
// also skips the lookup of Application Default Credentials, which is what a
// test against a stand-in needs.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.httpClient = hc } }

// WithSleep replaces the wait between attempts (tests record the delays
// instead of waiting). sleep must return ctx's error if ctx ends first.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(o *options) { o.sleep = sleep }
}

// WithBackoff sets the exponential backoff's first and largest ceilings
// (defaults 1 s and 30 s). The wait before attempt n+1 is uniformly random
// in [0, min(max, base·2^(n-1))) — "full jitter" — unless the service asked
// for a longer RetryInfo.retryDelay.
func WithBackoff(base, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = base, max }
}

// WithJitter replaces the random draw of full jitter: given the ceiling, it
// returns the wait. Tests pass the identity to make delays exact.
func WithJitter(jitter func(ceiling time.Duration) time.Duration) Option {
	return func(o *options) { o.jitter = jitter }
}

// New builds a client for the backend cfg selects, honouring cfg.BaseURL
// (GOOGLE_GEMINI_BASE_URL or GOOGLE_VERTEX_BASE_URL). Everything the SDK
// needs is passed explicitly, so it never falls back to its own reading of
// the environment for the backend's credentials.
func New(ctx context.Context, cfg config.Model, prices config.Prices, opts ...Option) (*Client, error) {
	o := options{sleep: sleepCtx, backoffMin: time.Second, backoffMax: 30 * time.Second, jitter: fullJitter}
	for _, opt := range opts {
		opt(&o)
	}
	cc := &genai.ClientConfig{HTTPOptions: genai.HTTPOptions{BaseURL: cfg.BaseURL}}
	if o.httpClient != nil || cfg.Backend != job.VertexAI {
		// Our transport reads each answer's images out of the body
		// (decode.go); on Vertex AI without a client, the SDK builds its
		// ADC client, wrapped below.
		cc.HTTPClient = withAnswerTransport(o.httpClient)
	}
	key := ""
	switch cfg.Backend {
	case job.VertexAI:
		// Vertex AI authenticates with ADC (or the given HTTP client),
		// never with the API key, even if one is set for other uses.
		cc.Backend = genai.BackendVertexAI
		cc.Project, cc.Location = cfg.Project, cfg.Location
	case job.GeminiAPI, "":
		cc.Backend = genai.BackendGeminiAPI
		key = cfg.APIKey.Reveal()
		if key == "" {
			return nil, fmt.Errorf("%w: gemini: no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or GOOGLE_GENAI_USE_VERTEXAI=true", job.ErrPermanent)
		}
		cc.APIKey = key
	default:
		return nil, fmt.Errorf("%w: gemini: unknown backend %q", job.ErrPermanent, cfg.Backend)
	}
	gc, err := genai.NewClient(ctx, cc)
	if err != nil {
		// The SDK's messages print its whole ClientConfig, key included.
		return nil, fmt.Errorf("%w: gemini: building the %s client: %s", job.ErrPermanent, cfg.Backend, redact(err.Error(), key))
	}
	if hc := gc.ClientConfig().HTTPClient; hc != nil && cc.HTTPClient == nil {
		// The SDK's own ADC client (Vertex AI): nobody else holds it.
		*hc = *withAnswerTransport(hc)
	}
	maxConc := cfg.MaxConcurrent
	if maxConc < 1 {
		maxConc = 1
	}
	backend := cfg.Backend
	if backend == "" {
		backend = job.GeminiAPI
	}
	return &Client{
		genai: gc, backend: backend, cfg: cfg, prices: prices, key: key,
		sem: make(chan struct{}, maxConc), sleep: o.sleep,
		backoffMin: o.backoffMin, backoffMax: o.backoffMax, jitter: o.jitter, now: time.Now,
	}, nil
}

// Backend is the backend the client calls.
func (c *Client) Backend() job.Backend { return c.backend }

// Generate makes one job's model call, retrying transient errors. j must be
// validated and normalised, with its images resolved: each has Data and
// MIMEType, or, on Vertex AI, a gs:// URI and MIMEType that is passed as
// fileData. The returned Result is never nil: on error it still counts the
// attempts and the time spent in the model. The images are in
// Result.Images; GenerateTo streams them instead.
func (c *Client) Generate(ctx context.Context, j job.Job) (*Result, error) {
	return c.generate(ctx, j, nil)
}

// GenerateTo is Generate, except that the answer's images are streamed into
// sink as the answer is read, never held whole in memory; Result.Images stays
// empty and Result.StreamedImages counts the images sink kept.
//
// Once an image has been opened on sink, a failure of that call is not
// retried here: it returns an error wrapping job.ErrTransient (or the sink's
// own error, with its category), and the job's next attempt pays again —
// a retry in process would write the same image names twice. An error of
// sink (storage) is never retried here either: the call was paid and its
// answer is lost.
func (c *Client) GenerateTo(ctx context.Context, j job.Job, sink ImageSink) (*Result, error) {
	if sink == nil {
		return nil, errors.New("gemini: GenerateTo needs a sink")
	}
	return c.generate(ctx, j, sink)
}

func (c *Client) generate(ctx context.Context, j job.Job, sink ImageSink) (*Result, error) {
	res := &Result{}
	contents, gcfg, err := c.request(j)
	if err != nil {
		return res, err
	}
	inline := spliceInline(contents)
	start := c.now()
	budget := c.cfg.RetryBudget
	maxAttempts := max(c.cfg.MaxAttempts, 1)
	for {
		if n, ok := sink.(RetryNoter); ok && res.Attempts > 0 {
			// The retry is paid too, should its answer be lost: the
			// caller notes it before it is made.
			if err := n.BeforeRetry(); err != nil {
				return res, err
			}
		}
		st := newCallState(sink)
		st.inline = inline
		resp, err := c.call(st.context(ctx), j.Model, contents, gcfg, res)
		if err == nil {
			err = fillResult(res, resp, st)
		}
		if err == nil {
			res.CostUSD = c.Cost(j.Model, res.Usage, false)
			return res, nil
		}
		if st.sinkErr != nil {
			logFailedCall(ctx, err, st.sinkErr)
			return res, sinkError(st.sinkErr)
		}
		cerr := classify(err, c.key)
		if ae := (genai.APIError{}); errors.As(err, &ae) {
			res.Refused++ // the service said no: nothing was generated, nothing is paid
		}
		logFailedCall(ctx, err, cerr)
		if sink != nil && st.opened > 0 {
			return res, fmt.Errorf("%w: gemini: the answer broke off after its images began to be stored: %w", job.ErrTransient, cerr) // redeliver: the next attempt writes under new names
		}
		if !errors.Is(cerr, job.ErrTransient) {
			return res, cerr // permanent: retrying cannot help
		}
		if ctx.Err() != nil {
			// The caller gave up (or its deadline passed): the job is
			// not done, so redelivery is right.
			return res, fmt.Errorf("%w: gemini: %w", job.ErrTransient, context.Cause(ctx))
		}
		if PerDayQuota(cerr) {
			return res, cerr // a per-day quota will not recover in this job's budget: let the platform redeliver later
		}
		if res.Attempts >= maxAttempts {
			return res, fmt.Errorf("%w: gemini: giving up after %d attempts: %w", job.ErrTransient, res.Attempts, cerr)
		}
		delay := c.jitter(min(c.backoffMax, c.backoffMin<<(res.Attempts-1)))
		if wait, ok := RetryDelay(cerr); ok && wait > delay {
			delay = wait // the service said when quota returns; sooner only burns attempts
		}
		if budget > 0 && c.now().Sub(start)+delay > budget {
			return res, fmt.Errorf("%w: gemini: retry budget %v spent after %d attempts: %w", job.ErrTransient, budget, res.Attempts, cerr)
		}
		if err := c.sleep(ctx, delay); err != nil {
			return res, fmt.Errorf("%w: gemini: waiting to retry: %w (last error: %w)", job.ErrTransient, err, cerr)
		}
	}
}

// A RetryNoter is an ImageSink that wants to know of each retry before it
// is made (the pipeline notes the call on the job's claim, so that a crash
// during it still counts it). An error stops the retries and is returned.
type RetryNoter interface {
	BeforeRetry() error
}

// call makes one HTTP call under the concurrency limit and the per-call
// deadline, counting it and the time it took.
func (c *Client) call(ctx context.Context, model string, contents []*genai.Content, gcfg *genai.GenerateContentConfig, res *Result) (*genai.GenerateContentResponse, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	t0 := c.now()
	res.Attempts++
	resp, err := c.genai.Models.GenerateContent(callCtx, model, contents, gcfg)
	res.ModelTime += c.now().Sub(t0)
	return resp, err
}

// sinkError keeps the category storage gave its error; one without a
// category is transient (the images could not be stored this time).
func sinkError(err error) error {
	for _, kind := range []error{job.ErrTransient, job.ErrPermanent, job.ErrInvalid, job.ErrTooLarge, job.ErrConflict} {
		if errors.Is(err, kind) {
			return fmt.Errorf("gemini: storing the answer's images: %w", err)
		}
	}
	return fmt.Errorf("%w: gemini: storing the answer's images: %w", job.ErrTransient, err)
}

// logFailedCall is the one line per failed model call that the 429 metric
// and quota alerts are built on; the job's fate is logged by the pipeline.
func logFailedCall(ctx context.Context, err, classified error) {
	status := 0
	var ae genai.APIError
	if errors.As(err, &ae) {
		status = ae.Code
	}
	slog.WarnContext(ctx, "model call failed", "status", status,
		"retryable", errors.Is(classified, job.ErrTransient), "perDayQuota", PerDayQuota(classified), "error", classified)
}

// callDeadline bounds one call to the service by GENIMG_MODEL_TIMEOUT,
// shorter than the function's own deadline: the SDK sets none.
func (c *Client) callDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.CallTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.CallTimeout)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func fullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// redact removes the API key from a message.
func redact(msg, key string) string {
	if key == "" {
		return msg
	}
	return strings.ReplaceAll(msg, key, "[redacted]")
}
