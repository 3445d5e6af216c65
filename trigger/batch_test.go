package trigger

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// item is what a test compares of a BatchItem.
type item struct {
	ID, Prompt, Where string
	Err               string // a substring of the error, "" for none
}

func items(t *testing.T, b Batch) []item {
	t.Helper()
	var out []item
	for _, it := range b.Items {
		got := item{ID: it.ID, Prompt: it.Job.Prompt, Where: it.Where}
		if it.Err != nil {
			got.Err = it.Err.Error()
			got.Prompt = ""
		} else if it.Job.ID != it.ID {
			t.Errorf("%s: job id %q, item id %q", it.Where, it.Job.ID, it.ID)
		}
		out = append(out, got)
	}
	return out
}

// errLike compares item errors by substring.
var errLike = cmp.Comparer(func(a, b item) bool {
	if a.ID != b.ID || a.Prompt != b.Prompt || a.Where != b.Where || (a.Err == "") != (b.Err == "") {
		return false
	}
	return strings.Contains(a.Err, b.Err) || strings.Contains(b.Err, a.Err)
})

func TestIsBatch(t *testing.T) {
	for _, tt := range []struct {
		body string
		want bool
	}{
		{`{"batch": []}`, true},
		{`{"batch": [{"prompt": "x"}]}`, true},
		{` {"batch": null}`, true}, // a batch, and DecodeBatch says it is empty
		{`{"prompt": "x"}`, false},
		{`{"prompt": "batch"}`, false},
		{`not json`, false},
		{`[{"batch": []}]`, false},
	} {
		if got := IsBatch([]byte(tt.body)); got != tt.want {
			t.Errorf("IsBatch(%s) = %v, want %v", tt.body, got, tt.want)
		}
	}
}

func TestDecodeBatch(t *testing.T) {
	d := func(i string) string { return job.DeriveID("batch", "src-1", i) }
	tests := []struct {
		name    string
		body    string
		want    []item
		wantErr error
		errText string
	}{
		{
			name: "ids own and derived",
			body: `{"batch": [{"prompt": "a"}, {"id": "mine-1", "prompt": "b"}, {"prompt": "c"}]}`,
			want: []item{
				{ID: d("0"), Prompt: "a", Where: "batch[0]"},
				{ID: "mine-1", Prompt: "b", Where: "batch[1]"},
				{ID: d("2"), Prompt: "c", Where: "batch[2]"},
			},
		},
		{
			name: "a bad job does not sink the others",
			body: `{"batch": [{"prompt": "a", "colour": "red"}, {"id": "mine-2", "prompt": "b", "aspect_ratio": "1:1"}, {"id": "../x", "prompt": "c"}, {"prompt": "d"}]}`,
			want: []item{
				{ID: d("0"), Where: "batch[0]", Err: `"colour"`},
				{ID: "mine-2", Where: "batch[1]", Err: `"aspect_ratio"`},
				{ID: d("2"), Where: "batch[2]", Err: `id "../x"`},
				{ID: d("3"), Prompt: "d", Where: "batch[3]"},
			},
		},
		{name: "empty", body: `{"batch": []}`, wantErr: job.ErrInvalid, errText: "no jobs"},
		{name: "not a list", body: `{"batch": {"prompt": "a"}}`, wantErr: job.ErrInvalid, errText: "batch"},
		{name: "a field beside batch", body: `{"batch": [{"prompt": "a"}], "prompt": "b"}`, wantErr: job.ErrInvalid, errText: `"prompt"`},
		{name: "too many", body: `{"batch": [` + strings.Repeat(`{},`, MaxBatchJobs) + `{}]}`, wantErr: job.ErrTooLarge, errText: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := DecodeBatch([]byte(tt.body), "src-1")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err %v; want %v mentioning %q", err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, items(t, b), errLike); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
			for _, it := range b.Items {
				if it.Err != nil && !errors.Is(it.Err, job.ErrInvalid) {
					t.Errorf("%s: error %v does not wrap ErrInvalid", it.Where, it.Err)
				}
			}
		})
	}
}

func TestBatchFromHTTP(t *testing.T) {
	post := func(body, contentType, key string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/Generate", strings.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		if key != "" {
			r.Header.Set(IdempotencyKeyHeader, key)
		}
		return r
	}
	batch := `{"batch": [{"prompt": "a"}, {"prompt": "b"}]}`

	// The same key derives the same ids: a retried POST is the same batch.
	b1, ok1, err1 := BatchFromHTTP(post(batch, "application/json", "order-9"), 1<<20)
	b2, ok2, err2 := BatchFromHTTP(post(batch, "application/json; charset=utf-8", "order-9"), 1<<20)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		t.Fatalf("ok %v %v, err %v %v", ok1, ok2, err1, err2)
	}
	want := []item{
		{ID: job.DeriveID("batch", "order-9", "0"), Prompt: "a", Where: "batch[0]"},
		{ID: job.DeriveID("batch", "order-9", "1"), Prompt: "b", Where: "batch[1]"},
	}
	if diff := cmp.Diff(want, items(t, b1)); diff != "" || b1.Source != "order-9" {
		t.Errorf("source %q, items (-want +got):\n%s", b1.Source, diff)
	}
	if diff := cmp.Diff(items(t, b1), items(t, b2)); diff != "" {
		t.Errorf("same key, other ids (-first +second):\n%s", diff)
	}

	// Without a key, each POST is a new submission.
	b3, _, _ := BatchFromHTTP(post(batch, "", ""), 1<<20)
	b4, _, _ := BatchFromHTTP(post(batch, "", ""), 1<<20)
	if len(b3.Items) != 2 || b3.Items[0].ID == b4.Items[0].ID || !strings.HasPrefix(b3.Source, "http-") {
		t.Errorf("keyless batches: source %q, ids %q and %q", b3.Source, b3.Items[0].ID, b4.Items[0].ID)
	}

	// A single job is left for FromHTTP, body intact.
	r := post(`{"prompt": "one"}`, "application/json", "")
	if _, ok, err := BatchFromHTTP(r, 1<<20); ok || err != nil {
		t.Fatalf("single job: ok %v err %v", ok, err)
	}
	if j, err := FromHTTP(r, 1<<20); err != nil || j.Prompt != "one" {
		t.Errorf("FromHTTP after BatchFromHTTP: %+v, %v", j, err)
	}

	// Multipart is never a batch, and is not read.
	mp, mpType := multipartBody(t, map[string]string{"prompt": "p"}, nil)
	r = httptest.NewRequest(http.MethodPost, "/Generate", mp)
	r.Header.Set("Content-Type", mpType)
	if _, ok, err := BatchFromHTTP(r, 1<<20); ok || err != nil {
		t.Fatalf("multipart: ok %v err %v", ok, err)
	}
	if j, err := FromHTTP(r, 1<<20); err != nil || j.Prompt != "p" {
		t.Errorf("FromHTTP after BatchFromHTTP: %+v, %v", j, err)
	}

	for _, tt := range []struct {
		name, body, key string
		want            error
	}{
		{"too large", batch, "", job.ErrTooLarge},
		{"bad key", batch, "../k", job.ErrInvalid},
		{"empty batch", `{"batch": []}`, "", job.ErrInvalid},
	} {
		limit := int64(1 << 20)
		if tt.want == job.ErrTooLarge {
			limit = 10
		}
		if _, _, err := BatchFromHTTP(post(tt.body, "application/json", tt.key), limit); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestFromMessageBatch(t *testing.T) {
	data := []byte(`{"batch": [{"prompt": "a"}, {"id": "own", "prompt": "b"}, {"prompt": "c", "colour": "red"}]}`)
	d := FromMessage(messageEvent(t, data, nil), config.Uploads{})
	if d.Err != nil || d.Batch == nil {
		t.Fatalf("err %v, batch %v", d.Err, d.Batch)
	}
	if d.Trigger != (job.Trigger{Kind: job.PubSub, Source: "1234"}) || d.Batch.Source != d.ID {
		t.Errorf("trigger %+v, source %q (delivery %q)", d.Trigger, d.Batch.Source, d.ID)
	}
	want := []item{
		{ID: job.DeriveID("batch", d.ID, "0"), Prompt: "a", Where: "batch[0]"},
		{ID: "own", Prompt: "b", Where: "batch[1]"},
		{ID: job.DeriveID("batch", d.ID, "2"), Where: "batch[2]", Err: `"colour"`},
	}
	if diff := cmp.Diff(want, items(t, *d.Batch), errLike); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
	// A redelivery of the message is the same batch, job for job.
	again := FromMessage(messageEvent(t, data, nil), config.Uploads{})
	if diff := cmp.Diff(items(t, *d.Batch), items(t, *again.Batch)); diff != "" {
		t.Errorf("redelivery (-first +again):\n%s", diff)
	}
	// A batch that is not one is recorded failed under the message's id.
	bad := FromMessage(messageEvent(t, []byte(`{"batch": "x"}`), nil), config.Uploads{})
	if bad.Batch != nil || !errors.Is(bad.Err, job.ErrInvalid) || bad.ID != d.ID {
		t.Errorf("bad batch: batch %v, err %v, id %q", bad.Batch, bad.Err, bad.ID)
	}
}

func TestJobsFile(t *testing.T) {
	uploads := config.Uploads{Buckets: []string{"in"}}
	o := Object{Bucket: "in", Name: "runs/night.jobs.jsonl", Generation: 5, ContentType: "application/jsonl", MetadataKnown: true}
	d := FromObject(o, time.Now(), uploads)
	if d.Ignore != "" || d.Object == nil || !d.Object.JobFile || !strings.HasPrefix(d.ID, "up-") {
		t.Fatalf("a .jobs.jsonl upload must be read: %+v", d)
	}
	src := "gs://in/runs/night.jobs.jsonl#5"
	line := func(n string) string { return job.DeriveID("batch", src, "line", n) }
	got := JobFile(d, []byte("{\"prompt\": \"a\"}\n\n  \n{\"id\": \"own-1\", \"prompt\": \"b\"}\r\n{\"prompt\": \"c\", \"colour\": 1}\n{\"prompt\": \"d\"}"))
	if got.Err != nil || got.Batch == nil {
		t.Fatalf("err %v batch %v", got.Err, got.Batch)
	}
	want := []item{
		{ID: line("1"), Prompt: "a", Where: "line 1"},
		{ID: "own-1", Prompt: "b", Where: "line 4"},
		{ID: line("5"), Where: "line 5", Err: `"colour"`},
		{ID: line("6"), Prompt: "d", Where: "line 6"},
	}
	if diff := cmp.Diff(want, items(t, *got.Batch), errLike); diff != "" || got.Batch.Source != src {
		t.Errorf("source %q; items (-want +got):\n%s", got.Batch.Source, diff)
	}
	if got.Trigger != (job.Trigger{Kind: job.Upload, Source: src}) {
		t.Errorf("trigger %+v", got.Trigger)
	}
	// An empty file is recorded failed under the upload's id.
	empty := JobFile(d, []byte("\n\n"))
	if empty.Batch != nil || !errors.Is(empty.Err, job.ErrInvalid) || empty.ID != d.ID {
		t.Errorf("empty file: batch %v err %v id %q", empty.Batch, empty.Err, empty.ID)
	}
	// A lone job file is still a lone job.
	one := FromObject(Object{Bucket: "in", Name: "a.job.json", Generation: 1, MetadataKnown: true}, time.Now(), uploads)
	if one = JobFile(one, []byte(`{"prompt": "x"}`)); one.Batch != nil || one.Job.Prompt != "x" {
		t.Errorf("job file: %+v", one)
	}
}
