package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/callback"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
)

// tap keeps the log lines the tests look for (a log-based metric's
// message) besides writing the log.
type tap struct {
	slog.Handler
}

var tapped struct {
	mu    sync.Mutex
	lines []map[string]string // message and string attributes
}

func (t *tap) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == callback.DeadLettered {
		line := map[string]string{"message": r.Message, "level": r.Level.String()}
		r.Attrs(func(a slog.Attr) bool {
			line[a.Key] = a.Value.String()
			return true
		})
		tapped.mu.Lock()
		tapped.lines = append(tapped.lines, line)
		tapped.mu.Unlock()
	}
	return t.Handler.Handle(ctx, r)
}

func (t *tap) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrTap{tap: t, attrs: as}
}

func (t *tap) WithGroup(name string) slog.Handler { return &tap{Handler: t.Handler.WithGroup(name)} }

// attrTap is a tap with attributes added by slog.With.
type attrTap struct {
	*tap
	attrs []slog.Attr
}

func (a *attrTap) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(a.attrs...)
	return a.tap.Handle(ctx, r)
}

func (a *attrTap) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrTap{tap: a.tap, attrs: append(append([]slog.Attr(nil), a.attrs...), as...)}
}

// deadLettered returns the dead-letter lines logged for a job.
func deadLettered(id string) []map[string]string {
	tapped.mu.Lock()
	defer tapped.mu.Unlock()
	var out []map[string]string
	for _, l := range tapped.lines {
		if l["jobId"] == id {
			out = append(out, l)
		}
	}
	return out
}

// A hookReceiver is a webhook receiver that answers the statuses it is
// given in turn (the last repeats) and keeps every delivery.
type hookReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	got      []hookDelivery
}

type hookDelivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t *testing.T, statuses ...int) *hookReceiver {
	t.Helper()
	rv := &hookReceiver{statuses: statuses}
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rv.mu.Lock()
		status := rv.statuses[min(len(rv.got), len(rv.statuses)-1)]
		rv.got = append(rv.got, hookDelivery{r.Header.Clone(), body, time.Now()})
		rv.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rv.Close)
	return rv
}

func (rv *hookReceiver) deliveries() []hookDelivery {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]hookDelivery(nil), rv.got...)
}

// waitFor polls until cond holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkSigned checks that every delivery is signed with the local stack's
// secret, names the event, and carries the job's record.
func checkSigned(t *testing.T, ds []hookDelivery, id, ceID string) {
	t.Helper()
	key, err := webhook.ParseKey(callback.LocalSecret)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if _, err := webhook.Verify(key, d.header, d.body, d.at, time.Minute); err != nil {
			t.Errorf("delivery %d: %v", i+1, err)
		}
		want := map[string]string{"webhook-id": ceID, "ce-id": ceID, "ce-type": job.EventType, "ce-subject": "jobs/" + id, "content-type": "application/json"}
		got := map[string]string{}
		for k := range want {
			got[k] = d.header.Get(k)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("delivery %d headers (-want +got):\n%s", i+1, diff)
		}
		var rec job.Record
		if err := json.Unmarshal(d.body, &rec); err != nil || rec.JobID != id {
			t.Errorf("delivery %d body is not job %s's record: %v: %s", i+1, id, err, d.body)
		}
	}
}

// A receiver that fails twice then accepts gets three deliveries of one
// event: one webhook-id, every one signed.
func TestCallbackRetriedThenAccepted(t *testing.T) {
	rv := newReceiver(t, http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusNoContent)
	id := uniq(t)
	resp, body := postJSON(t, fmt.Sprintf(`{"prompt": "a kite", "callback": {"url": %q}}`, rv.URL+"/hooks/genimg"), map[string]string{"Idempotency-Key": id})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if rec := decodeRecord(t, body); rec.Callback == nil || rec.Callback.URL != rv.URL+"/hooks/genimg" {
		t.Errorf("the record's callback = %+v, want the job's", rec.Callback)
	}
	ev := stack.events.waitJob(t, id)
	if got := ev.Attributes[pipeline.AttrHasCallback]; got != "true" {
		t.Errorf("the event's %s attribute = %q, want true (the callback subscription filters on it)", pipeline.AttrHasCallback, got)
	}
	waitFor(t, "three deliveries", func() bool { return len(rv.deliveries()) >= 3 })
	time.Sleep(time.Second) // a fourth would come within the backoff
	ds := rv.deliveries()
	if len(ds) != 3 {
		t.Fatalf("%d deliveries, want 3", len(ds))
	}
	checkSigned(t, ds, id, ev.Attributes["ce-id"])
	if got := deadLettered(id); len(got) != 0 {
		t.Errorf("dead-lettered: %v", got)
	}
}

// A receiver that never accepts is retried until the maximum age, then
// the callback is dead-lettered: one log line, the metric's, and no more
// deliveries.
func TestCallbackDeadLettered(t *testing.T) {
	rv := newReceiver(t, http.StatusBadGateway)
	id := uniq(t)
	data := []byte(fmt.Sprintf(`{"id": %q, "prompt": "a lantern", "callback": {"url": %q}}`, id, rv.URL))
	publish(t, data, nil)
	ev := stack.events.waitJob(t, id)
	waitFor(t, "the dead-letter line", func() bool { return len(deadLettered(id)) > 0 })
	n := len(rv.deliveries())
	time.Sleep(time.Second)
	ds := rv.deliveries()
	if len(ds) != n {
		t.Errorf("%d deliveries after the dead-letter line, want none", len(ds)-n)
	}
	if len(ds) < 2 {
		t.Errorf("%d deliveries, want retries before giving up", len(ds))
	}
	checkSigned(t, ds, id, ev.Attributes["ce-id"])
	lines := deadLettered(id)
	if len(lines) != 1 {
		t.Fatalf("%d dead-letter lines, want 1: %v", len(lines), lines)
	}
	want := map[string]string{"message": callback.DeadLettered, "level": "ERROR", "jobId": id, "webhookId": ev.Attributes["ce-id"], "status": "502"}
	got := map[string]string{}
	for k := range want {
		got[k] = lines[0][k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead-letter line (-want +got):\n%s", diff)
	}
}

// resolver answers from a map: no name is looked up off the machine.
type resolver map[string][]netip.Addr

func (r resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if as, ok := r[host]; ok {
		return as, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// Callback URLs genimg must not call reject the job before any model call,
// over HTTP (400) and over Pub/Sub (a failed record); nothing is dialled.
// The instance runs as production does: https only, no loopback.
func TestCallbackRefused(t *testing.T) {
	model := newModel(t)
	cfg := baseConfig(t, model)
	cfg.Callback.AllowLoopback = false
	cfg.Callback.Allow = nil
	in := newInstance(t, cfg, "callbacks-prod", pipeline.WithCallbackOptions(callback.WithResolver(resolver{
		"hooks.internal.test": {netip.MustParseAddr("10.20.30.40")},
		"hooks.public.test":   {netip.MustParseAddr("203.0.113.7")},
	})))
	tests := []struct {
		name, url, want string
	}{
		{"loopback without the allow-list", "https://127.0.0.1:8443/hooks", "127.0.0.1 is a loopback address"},
		{"private", "https://10.0.0.1/hooks", "10.0.0.1 is a private address"},
		{"metadata server", "https://169.254.169.254/computeMetadata/v1/", "169.254.169.254 is the metadata server"},
		{"name resolving to a private address", "https://hooks.internal.test/hooks", "hooks.internal.test resolves to a refused address: 10.20.30.40 is a private address"},
		{"http in production", "http://hooks.public.test/hooks", "is not accepted; use https://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := model.Calls()
			id := uniq(t)
			body := fmt.Sprintf(`{"id": %q, "prompt": "a harbour", "callback": {"url": %q}}`, id, tt.url)
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/"+in.path+"/Generate", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, answer := do(t, req)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(answer), tt.want) {
				t.Errorf("HTTP: %d %s, want 400 saying %q", resp.StatusCode, answer, tt.want)
			}

			deliver(t, in.path+"/OnMessage", "cb-"+id, []byte(body), time.Now(), http.StatusOK)
			rec := storedRecord(t, id)
			if rec.Outcome != job.Failed || rec.Error == nil || rec.Error.Code != "invalid_argument" || !strings.Contains(rec.Error.Message, tt.want) {
				t.Errorf("Pub/Sub: record %s %+v, want failed invalid_argument saying %q", rec.Outcome, rec.Error, tt.want)
			}
			if rec.Callback != nil {
				t.Errorf("the record names the refused callback %+v: OnCompletion would call it", rec.Callback)
			}
			if got := model.Calls() - calls; got != 0 {
				t.Errorf("%d model calls, want 0", got)
			}
		})
	}
	// The control: the same instance accepts a public https callback
	// (checked only: running it would look the name up off the machine).
	ok := job.Job{Callback: &job.Callback{URL: "https://hooks.public.test/hooks"}}
	if err := in.CheckCallback(t.Context(), ok); err != nil {
		t.Errorf("a public https callback: %v", err)
	}
}
