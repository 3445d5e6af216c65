package localstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/genimg/genimg/internal/console"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/internal/tracing"
	"github.com/genimg/genimg/storage"
)

// Console builds the stack's web console (contract 9.6) on its buckets and
// topics: it subscribes to the completion and dead-letter topics (its own
// subscriptions, so nothing is taken from anyone else), until ctx ends.
func (s *Stack) Console(ctx context.Context) (*console.Console, error) {
	output := storage.NewObjects(s.Storage, s.OutputBucket, 0, 0)
	cfg, err := s.Config()
	if err != nil {
		return nil, err
	}
	ev := &stackEvents{s: s, requests: s.PubSub.Publisher(s.Topic(s.RequestsTopic))}
	s.closers = append(s.closers, ev.requests.Stop)
	for _, t := range []struct{ sub, topic, kind string }{
		{s.CompletionTopic + "-console", s.CompletionTopic, console.TopicCompletion},
		{s.DeadLetterTopic + "-console", s.DeadLetterTopic, console.TopicDeadLetter},
	} {
		if _, err := s.PubSub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
			Name: s.Subscription(t.sub), Topic: s.Topic(t.topic), AckDeadlineSeconds: 60,
		}); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
			return nil, fmt.Errorf("console subscription %s: %w", t.sub, err)
		}
		ev.subs = append(ev.subs, subscription{s.PubSub.Subscriber(s.Subscription(t.sub)), t.kind})
	}
	return console.New(ctx, console.Options{
		Jobs:   &stackJobs{output: output, input: output.In(s.InputBucket)},
		Events: ev,
		Spend:  &stackSpend{output: output, hourly: cfg.Spend.HourlyUSD, daily: cfg.Spend.DailyUSD},
		Submit: &stackSubmit{s: s, input: output.In(s.InputBucket), requests: ev.requests},
		Traces: stackTraces{s.Traces},
	}), nil
}

// stackTraces finds a job's spans in the stack's in-memory exporter.
type stackTraces struct{ ring *tracing.Ring }

func (t stackTraces) Trace(_ context.Context, jobID string) ([]console.Span, error) {
	if t.ring == nil {
		return nil, nil
	}
	var out []console.Span
	for _, sp := range t.ring.JobTraces(jobID) {
		out = append(out, console.Span{Name: sp.Name, Start: sp.Start, End: sp.End, Parent: sp.ParentID,
			ID: sp.SpanID, Attrs: sp.Attributes, Error: sp.Error})
	}
	return out, nil
}

// stackJobs lists and reads the output bucket.
type stackJobs struct{ output, input *storage.Objects }

func (j *stackJobs) Index(ctx context.Context) ([]console.Entry, error) {
	byID := map[string]*console.Entry{}
	var order []string
	err := j.output.List(ctx, storage.JobsPrefix, "", func(a storage.Attrs) error {
		rest := strings.TrimPrefix(a.Name, storage.JobsPrefix)
		id, file, ok := strings.Cut(rest, "/")
		if !ok || id == "" {
			return nil
		}
		e := byID[id]
		if e == nil {
			e = &console.Entry{ID: id, Created: a.Created}
			byID[id] = e
			order = append(order, id)
		}
		if a.Created.Before(e.Created) {
			e.Created = a.Created
		}
		switch file {
		case console.FileRecord:
			e.Record = a.Generation
		case console.FileClaim:
			e.Claim = a.Generation
		case console.FileBatch:
			e.Batch = a.Generation
		}
		return nil
	})
	out := make([]console.Entry, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, err
}

func (j *stackJobs) Read(ctx context.Context, id, file string) (json.RawMessage, error) {
	if strings.ContainsAny(id, "/") || id == "" {
		return nil, fmt.Errorf("job id %q: not a job", id)
	}
	data, _, err := j.output.Get(ctx, storage.JobsPrefix+id+"/"+file, 4<<20)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil || !json.Valid(data) {
		return nil, err
	}
	return data, nil
}

func (j *stackJobs) Open(ctx context.Context, uri string) (io.ReadCloser, string, error) {
	bucket, name, _ := strings.Cut(strings.TrimPrefix(uri, "gs://"), "/")
	var o *storage.Objects
	switch bucket {
	case j.output.Bucket():
		o = j.output
	case j.input.Bucket():
		o = j.input
	default:
		return nil, "", fmt.Errorf("%s: the console shows objects of %s and %s only", uri, j.output.Bucket(), j.input.Bucket())
	}
	a, err := o.Stat(ctx, name)
	if err != nil {
		return nil, "", err
	}
	rc, err := o.Reader(ctx, name)
	return rc, a.ContentType, err
}

// stackEvents reads the console's subscriptions.
type stackEvents struct {
	s        *Stack
	requests *pubsub.Publisher
	subs     []subscription
}

type subscription struct {
	sub  *pubsub.Subscriber
	kind string
}

func (e *stackEvents) Watch(ctx context.Context, fn func(console.Message)) error {
	var wg sync.WaitGroup
	errs := make([]error, len(e.subs))
	for i, sub := range e.subs {
		wg.Go(func() {
			errs[i] = sub.sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
				cm := console.Message{Topic: sub.kind, ID: m.ID, Published: m.PublishTime, Attributes: m.Attributes}
				if cm.Attributes == nil {
					cm.Attributes = map[string]string{}
				}
				if json.Valid(m.Data) {
					cm.Data = bytes.Clone(m.Data)
				} else if utf8.Valid(m.Data) {
					cm.Text = string(m.Data)
				} else {
					cm.Text = strconv.Itoa(len(m.Data)) + " bytes of binary data"
				}
				if sub.kind == console.TopicDeadLetter {
					// Keep the bytes to redeliver them exactly.
					cm.Attributes["console-data"] = string(m.Data)
				}
				fn(cm)
				m.Ack()
			})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (e *stackEvents) Redeliver(ctx context.Context, m console.Message) error {
	attrs := map[string]string{}
	for k, v := range m.Attributes {
		if k != "console-data" && !strings.HasPrefix(k, "CloudPubSubDeadLetter") {
			attrs[k] = v
		}
	}
	_, err := e.requests.Publish(ctx, &pubsub.Message{Data: []byte(m.Attributes["console-data"]), Attributes: attrs}).Get(ctx)
	return err
}

// stackSpend sums the spend ledgers and works the kill switch.
type stackSpend struct {
	output        *storage.Objects
	hourly, daily float64
}

func (p *stackSpend) Totals(ctx context.Context, now time.Time) (console.Totals, error) {
	now = now.UTC()
	hour := now.Format("2006-01-02/15")
	t := console.Totals{Hour: now.Format("15:00"), HourlyBudget: p.hourly, DailyBudget: p.daily}
	err := p.output.List(ctx, storage.LedgerDay(now.Format("2006-01-02")), "", func(a storage.Attrs) error {
		v, err := strconv.ParseFloat(a.Metadata[spend.MetaSpend], 64)
		if err != nil || v < 0 {
			return nil
		}
		t.DayUSD += v
		if strings.HasPrefix(a.Name, storage.SpendPrefix+hour+"/") {
			t.HourUSD += v
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	_, err = p.output.Stat(ctx, storage.PauseObject)
	switch {
	case err == nil:
		t.Paused = true
	case !errors.Is(err, storage.ErrNotFound):
		return t, err
	}
	return t, nil
}

func (p *stackSpend) Pause(ctx context.Context) error  { return spend.Pause(ctx, p.output) }
func (p *stackSpend) Resume(ctx context.Context) error { return spend.Resume(ctx, p.output) }

// stackSubmit submits through the stack's three triggers.
type stackSubmit struct {
	s        *Stack
	input    *storage.Objects
	requests *pubsub.Publisher
}

func (b *stackSubmit) Submit(ctx context.Context, sub console.Submission) (console.Submitted, error) {
	var head struct {
		ID string `json:"id"`
	}
	json.Unmarshal(sub.Job, &head)
	switch sub.Via {
	case console.ViaPubSub:
		if _, err := b.requests.Publish(ctx, &pubsub.Message{Data: sub.Job}).Get(ctx); err != nil {
			return console.Submitted{}, fmt.Errorf("publishing to %s: %w", b.s.RequestsTopic, err)
		}
		return console.Submitted{JobID: head.ID, Note: "published to " + b.s.RequestsTopic}, nil
	case console.ViaUpload:
		name := "console/" + console.NewID() + "-" + strings.Map(func(r rune) rune {
			if r == '/' || r < ' ' {
				return '_'
			}
			return r
		}, sub.ImageName)
		md := map[string]string{"prompt": sub.Prompt}
		if sub.AspectRatio != "" {
			md["aspect-ratio"] = sub.AspectRatio
		}
		// A plain upload, as a person's would be: not storage.Objects.Put,
		// which marks objects as genimg's own (never taken for a job).
		w := b.s.Storage.Bucket(b.s.InputBucket).Object(name).NewWriter(ctx)
		w.ContentType, w.Metadata = sub.ImageType, md
		if _, err := w.Write(sub.Image); err != nil {
			w.Close()
			return console.Submitted{}, fmt.Errorf("uploading gs://%s/%s: %w", b.s.InputBucket, name, err)
		}
		if err := w.Close(); err != nil {
			return console.Submitted{}, fmt.Errorf("uploading gs://%s/%s: %w", b.s.InputBucket, name, err)
		}
		return console.Submitted{Note: "uploaded gs://" + b.s.InputBucket + "/" + name + "; its job (up-…) appears in the list once OnUpload takes it"}, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.s.FunctionsURL+"/Generate", bytes.NewReader(sub.Job))
	if err != nil {
		return console.Submitted{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "respond-async")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return console.Submitted{}, fmt.Errorf("POST /Generate: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(body, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return console.Submitted{}, fmt.Errorf("POST /Generate answered %d: %s", resp.StatusCode, e.Error)
	}
	return console.Submitted{JobID: head.ID, Status: resp.StatusCode}, nil
}
