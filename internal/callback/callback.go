// Package callback delivers genimg's completion event over HTTP to the
// callback URL a job names (contract 9.2): the record as the body, the
// event in CloudEvents HTTP binary mode, signed the Standard Webhooks way
// with GENIMG_CALLBACK_SECRET.
//
// Delivery is durable and independent of the job: OnCompletion is a
// function of its own, subscribed to the completion topic by a push
// subscription. It answers an error (500) for a delivery that failed, so
// that Pub/Sub's retry policy (exponential backoff) tries again, until the
// event is older than GENIMG_CALLBACK_MAX_AGE; then it logs "callback
// dead-lettered" (a log-based metric counts these) and acknowledges. Every
// delivery of one record carries the same webhook-id (the event's ce-id),
// so receivers deduplicate.
//
// A Guard keeps callbacks to public addresses (SSRF), at job time and at
// connect time.
package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/tracing"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// LocalSecret is the local stack's callback secret, unless
// GENIMG_CALLBACK_SECRET says otherwise; `genimg listen` verifies with it
// by default. It signs nothing outside the machine.
const LocalSecret = "whsec_Z2VuaW1nLWxvY2FsLWNhbGxiYWNrLXNlY3JldA=="

// DeadLettered is the message logged when a callback is given up: a
// log-based metric counts it, an alert watches the metric.
const DeadLettered = "callback dead-lettered"

// A Sender checks jobs' callback URLs and delivers completion events to
// them.
type Sender struct {
	guard  *Guard
	key    webhook.Key // nil: this deployment sends no callbacks
	client *http.Client
	maxAge time.Duration
	now    func() time.Time
	traces *tracing.Tracer // nil: no spans

	delivered, failed, deadLettered atomic.Int64
}

// An Option changes how New builds a Sender.
type Option func(*Sender)

// WithResolver looks callback hosts up with r instead of the system's
// resolver (tests: no name is looked up off the machine).
func WithResolver(r Resolver) Option {
	return func(s *Sender) { s.guard = NewGuard(s.guard.policy, r) }
}

// WithTracer records each delivery as a "callback" span in the job's
// trace (the event's ce-traceparent).
func WithTracer(t *tracing.Tracer) Option { return func(s *Sender) { s.traces = t } }

// WithClock replaces time.Now, for tests of the maximum age.
func WithClock(now func() time.Time) Option { return func(s *Sender) { s.now = now } }

// New builds a Sender from the configuration. A malformed secret stops
// the start; the error never contains it.
func New(cfg config.Callback, opts ...Option) (*Sender, error) {
	s := &Sender{
		guard:  NewGuard(Policy{Allow: cfg.Allow, AllowLoopback: cfg.AllowLoopback}, nil),
		maxAge: cfg.MaxAge,
		now:    time.Now,
	}
	if cfg.Secret != "" {
		k, err := webhook.ParseKey(cfg.Secret)
		if err != nil {
			return nil, fmt.Errorf("GENIMG_CALLBACK_SECRET: %w", err)
		}
		s.key = k
	}
	for _, o := range opts {
		o(s)
	}
	g := s.guard
	s.client = &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			// No proxy: the Guard must see the address actually dialled.
			Proxy:                 nil,
			DialContext:           g.DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
		},
		// A redirect is an answer, not 2xx: it is retried, never followed
		// to a place the Guard did not see at job time.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s, nil
}

// Check reports whether a job's callback may be called: callbacks are
// configured, and the URL passes the Guard. The error wraps job.ErrInvalid
// (the job is rejected before any model call) or job.ErrTransient.
func (s *Sender) Check(ctx context.Context, c *job.Callback) error {
	if c == nil {
		return nil
	}
	if s.key == nil {
		return fmt.Errorf("%w: callback: this deployment sends no callbacks (GENIMG_CALLBACK_SECRET is not set); submit the job without callback, or ask its operator to configure callbacks", job.ErrInvalid)
	}
	return s.guard.Check(ctx, c.URL)
}

// Stats counts what a Sender did.
type Stats struct{ Delivered, Failed, DeadLettered int64 }

// Stats returns the counts so far.
func (s *Sender) Stats() Stats {
	return Stats{s.delivered.Load(), s.failed.Load(), s.deadLettered.Load()}
}

// OnCompletion handles one completion event from the completion topic's
// callback subscription: a messagePublished event whose message is the
// completion event in binary content mode (or, from an unwrapped
// subscription, the completion event itself). Events of other types, and
// records without a callback, are acknowledged at once.
func (s *Sender) OnCompletion(ctx context.Context, e cloudevents.Event) error {
	ev, err := decode(e)
	if err != nil {
		// Nothing a retry would change: say so once, and let it go.
		slog.ErrorContext(ctx, "callback event undecodable", "error", err, "eventId", e.ID())
		return nil
	}
	if ev.attrs["ce-type"] != job.EventType {
		return nil
	}
	rec, err := decodeRecord(ev.body)
	if err != nil {
		slog.ErrorContext(ctx, "callback event undecodable", "error", err, "eventId", e.ID())
		return nil
	}
	if rec.Callback == nil || rec.Callback.URL == "" {
		return nil
	}
	log := slog.With("jobId", rec.JobID, "webhookId", ev.attrs["ce-id"], "callbackHost", hostOf(rec.Callback.URL))
	status, err := s.traced(ctx, rec.Callback.URL, ev)
	if err == nil {
		s.delivered.Add(1)
		log.InfoContext(ctx, "callback delivered", "status", status)
		return nil
	}
	age := s.now().Sub(ev.time)
	if age >= s.maxAge {
		// Given up: counted by the log-based metric on this message, and
		// acknowledged, so the subscription stops retrying.
		s.deadLettered.Add(1)
		log.ErrorContext(ctx, DeadLettered, "status", status, "error", err, "age", age.Round(time.Second).String(), "maxAge", s.maxAge.String())
		return nil
	}
	s.failed.Add(1)
	log.WarnContext(ctx, "callback failed; will be retried", "status", status, "error", err, "age", age.Round(time.Second).String())
	return fmt.Errorf("callback to %s for job %s: %w", hostOf(rec.Callback.URL), rec.JobID, err) // retry: Pub/Sub redelivers with backoff
}

// traced posts one delivery as a "callback" span of the job's trace.
func (s *Sender) traced(ctx context.Context, target string, ev completion) (int, error) {
	if s.traces == nil {
		return s.post(ctx, target, ev)
	}
	ctx, end := s.traces.Step(tracing.FromAttributes(ctx, map[string]string{tracing.AttrCETraceparent: ev.attrs[tracing.AttrCETraceparent]}), "callback")
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("genimg.callback_host", hostOf(target)))
	status, err := s.post(ctx, target, ev)
	trace.SpanFromContext(ctx).SetAttributes(attribute.Int("http.response.status_code", status))
	end(err)
	s.traces.Flush(ctx)
	return status, err
}

// post sends one delivery and answers its status; err is nil only for 2xx.
func (s *Sender) post(ctx context.Context, target string, ev completion) (int, error) {
	if s.key == nil {
		return 0, errors.New("GENIMG_CALLBACK_SECRET is not set: callbacks cannot be signed")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(ev.body))
	if err != nil {
		return 0, err
	}
	for k, v := range ev.attrs {
		if strings.HasPrefix(k, "ce-") {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "genimg-callback/1")
	// webhook-id is ce-id: the same record always signs with the same id.
	webhook.SignHeaders(req.Header, s.key, ev.attrs["ce-id"], s.now(), ev.body)
	// The HTTP hop of the trace (ce-traceparent names the event's origin).
	if tp := tracing.Traceparent(ctx); tp != "" {
		req.Header.Set("traceparent", tp)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, scrub(err, target)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// completion is the completion event as the callback subscription
// delivers it.
type completion struct {
	attrs map[string]string
	body  []byte
	time  time.Time // ce-time, else the publish time: the age's origin
}

func decode(e cloudevents.Event) (completion, error) {
	if e.Type() == job.EventType {
		attrs := map[string]string{
			"ce-specversion": e.SpecVersion(), "ce-type": e.Type(), "ce-source": e.Source(), "ce-id": e.ID(),
			"ce-subject": e.Subject(), "ce-time": e.Time().UTC().Format(time.RFC3339Nano),
		}
		for k, v := range e.Extensions() {
			attrs["ce-"+k] = fmt.Sprint(v)
		}
		return completion{attrs: attrs, body: e.Data(), time: e.Time()}, nil
	}
	m, err := trigger.DecodeMessage(e)
	if err != nil {
		return completion{}, err
	}
	c := completion{attrs: m.Message.Attributes, body: m.Message.Data, time: m.Message.PublishTime}
	if t, err := time.Parse(time.RFC3339Nano, c.attrs["ce-time"]); err == nil {
		c.time = t
	}
	return c, nil
}

func decodeRecord(body []byte) (job.Record, error) {
	var rec struct {
		JobID    string        `json:"jobId"`
		Callback *job.Callback `json:"callback"`
	}
	if err := json.Unmarshal(body, &rec); err != nil {
		return job.Record{}, fmt.Errorf("completion record: %w", err)
	}
	return job.Record{JobID: rec.JobID, Callback: rec.Callback}, nil
}

// hostOf names a callback in logs: its host only, since a URL's path or
// query may carry a receiver's token.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}

// scrub keeps a transport error but drops the URL (and its query) that
// net/http quotes in it.
func scrub(err error, target string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, hostOf(target), ue.Err)
	}
	return err
}
