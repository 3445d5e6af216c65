package callback

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
)

// receiver records deliveries and answers the statuses it is given in
// turn (the last repeats).
type receiver struct {
	mu       sync.Mutex
	statuses []int
	got      []delivery
}

type delivery struct {
	header http.Header
	body   []byte
}

func (rv *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rv.mu.Lock()
	n := min(len(rv.got), len(rv.statuses)-1)
	rv.got = append(rv.got, delivery{r.Header.Clone(), body})
	status := rv.statuses[n]
	rv.mu.Unlock()
	w.WriteHeader(status)
}

// completionEvent is the completion event for rec as the callback
// subscription delivers it to OnCompletion (messagePublished).
func completionEvent(t *testing.T, rec job.Record, completed time.Time) cloudevents.Event {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	msg := map[string]any{
		"subscription": "projects/p/subscriptions/genimg-completions-callbacks",
		"message": map[string]any{
			"data": data, "messageId": "m1", "publishTime": completed.Format(time.RFC3339Nano),
			"attributes": map[string]string{
				"ce-specversion": "1.0", "ce-type": job.EventType, "ce-source": "//genimg.dev/projects/p",
				"ce-id": rec.JobID + ".0123456789abcdef", "ce-subject": "jobs/" + rec.JobID,
				"ce-time": completed.Format(time.RFC3339Nano), "content-type": "application/json",
				"ce-outcome": string(rec.Outcome), "ce-trigger": string(rec.Trigger.Kind),
			},
		},
	}
	e := cloudevents.NewEvent()
	e.SetID("m1")
	e.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	e.SetSource("//pubsub.googleapis.com/projects/p/topics/genimg-completions")
	if err := e.SetData("application/json", msg); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestOnCompletion(t *testing.T) {
	completed := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		statuses       []int
		after          []time.Duration // the clock at each delivery, after completion
		wantErrs       []bool
		wantDeliveries int
		wantStats      Stats
	}{
		{"accepted at once", []int{200}, []time.Duration{time.Second}, []bool{false}, 1, Stats{Delivered: 1}},
		{"fails twice then accepts", []int{503, 500, 204}, []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}, []bool{true, true, false}, 3, Stats{Delivered: 1, Failed: 2}},
		{"a redirect is not followed", []int{302, 200}, []time.Duration{time.Second, 2 * time.Second}, []bool{true, false}, 2, Stats{Delivered: 1, Failed: 1}},
		{"never accepts: dead-lettered at the maximum age", []int{410}, []time.Duration{time.Second, time.Hour, 2 * time.Hour}, []bool{true, true, false}, 3, Stats{Failed: 2, DeadLettered: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rv := &receiver{statuses: tt.statuses}
			srv := httptest.NewServer(rv)
			defer srv.Close()
			var now time.Time
			s, err := New(config.Callback{Secret: LocalSecret, AllowLoopback: true, MaxAge: 2 * time.Hour, Timeout: 5 * time.Second},
				WithClock(func() time.Time { return now }))
			if err != nil {
				t.Fatal(err)
			}
			rec := job.Record{JobID: "job-1", Outcome: job.Succeeded, Trigger: job.Trigger{Kind: job.HTTP},
				Callback: &job.Callback{URL: srv.URL + "/hooks?token=abc"}}
			e := completionEvent(t, rec, completed)
			for i, d := range tt.after {
				now = completed.Add(d)
				err := s.OnCompletion(t.Context(), e)
				if (err != nil) != tt.wantErrs[i] {
					t.Fatalf("delivery %d: OnCompletion = %v, want error %v", i+1, err, tt.wantErrs[i])
				}
				if err != nil && strings.Contains(err.Error(), "token=abc") {
					t.Errorf("the error quotes the callback URL's query: %v", err)
				}
			}
			if diff := cmp.Diff(tt.wantStats, s.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if len(rv.got) != tt.wantDeliveries {
				t.Fatalf("the receiver got %d deliveries, want %d", len(rv.got), tt.wantDeliveries)
			}
			key, _ := webhook.ParseKey(LocalSecret)
			for i, d := range rv.got {
				wantHeaders := map[string]string{
					"Ce-Specversion": "1.0", "Ce-Type": job.EventType, "Ce-Source": "//genimg.dev/projects/p",
					"Ce-Id": "job-1.0123456789abcdef", "Ce-Subject": "jobs/job-1", "Ce-Time": completed.Format(time.RFC3339Nano),
					"Ce-Outcome": "succeeded", "Ce-Trigger": "http", "Content-Type": "application/json",
					"Webhook-Id": "job-1.0123456789abcdef",
				}
				got := map[string]string{}
				for k := range wantHeaders {
					got[k] = d.header.Get(k)
				}
				if diff := cmp.Diff(wantHeaders, got); diff != "" {
					t.Errorf("delivery %d headers (-want +got):\n%s", i+1, diff)
				}
				at := completed.Add(tt.after[i])
				if _, err := webhook.Verify(key, d.header, d.body, at, time.Minute); err != nil {
					t.Errorf("delivery %d: signature: %v", i+1, err)
				}
				var body job.Record
				if err := json.Unmarshal(d.body, &body); err != nil || body.JobID != "job-1" {
					t.Errorf("delivery %d: body is not the record: %v %s", i+1, err, d.body)
				}
			}
		})
	}
}

func TestOnCompletionSkips(t *testing.T) {
	rv := &receiver{statuses: []int{200}}
	srv := httptest.NewServer(rv)
	defer srv.Close()
	s, err := New(config.Callback{Secret: LocalSecret, AllowLoopback: true, MaxAge: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	noCallback := completionEvent(t, job.Record{JobID: "j", Outcome: job.Succeeded}, time.Now())
	if err := s.OnCompletion(t.Context(), noCallback); err != nil {
		t.Errorf("a record without callback: %v", err)
	}
	other := cloudevents.NewEvent()
	other.SetID("x")
	other.SetType("google.cloud.pubsub.topic.v1.messagePublished")
	other.SetSource("//pubsub.googleapis.com/projects/p/topics/t")
	other.SetData("application/json", map[string]any{"message": map[string]any{"data": []byte(`{}`), "attributes": map[string]string{"ce-type": "genimg.delivery.v1.rejected"}}})
	if err := s.OnCompletion(t.Context(), other); err != nil {
		t.Errorf("a rejected-delivery event: %v", err)
	}
	if len(rv.got) != 0 {
		t.Errorf("the receiver got %d deliveries, want 0", len(rv.got))
	}
}

// TestDeadLetteredLog: the line a log-based metric counts, without the
// secret or the URL's query.
func TestDeadLetteredLog(t *testing.T) {
	srv := httptest.NewServer(&receiver{statuses: []int{500}})
	defer srv.Close()
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, nil)))
	defer slog.SetDefault(prev)
	completed := time.Now().Add(-2 * time.Hour)
	s, err := New(config.Callback{Secret: LocalSecret, AllowLoopback: true, MaxAge: time.Hour, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec := job.Record{JobID: "job-dl", Outcome: job.Failed, Callback: &job.Callback{URL: srv.URL + "/?token=secret-token"}}
	if err := s.OnCompletion(t.Context(), completionEvent(t, rec, completed)); err != nil {
		t.Fatalf("OnCompletion past the maximum age = %v, want nil (acknowledged)", err)
	}
	var line struct {
		Msg, Level, JobID, WebhookID, CallbackHost string
		Status                                     int
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log: %v: %s", err, buf.Bytes())
	}
	want := struct {
		Msg, Level, JobID, WebhookID, CallbackHost string
		Status                                     int
	}{DeadLettered, "ERROR", "job-dl", "job-dl.0123456789abcdef", strings.TrimPrefix(srv.URL, "http://"), 500}
	if diff := cmp.Diff(want, line); diff != "" {
		t.Errorf("dead-letter line (-want +got):\n%s", diff)
	}
	for _, leak := range []string{"secret-token", strings.TrimPrefix(LocalSecret, "whsec_")} {
		if strings.Contains(buf.String(), leak) {
			t.Errorf("the log holds %q: %s", leak, buf.String())
		}
	}
}
