package trigger

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
)

var pngHead = []byte("\x89PNG\r\n\x1a\nrest")

func multipartBody(t *testing.T, fields map[string]string, files map[string][]byte) (*bytes.Buffer, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	for name, data := range files {
		f, err := w.CreateFormFile("image", name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
	}
	w.Close()
	return &b, w.FormDataContentType()
}

func TestFromHTTP(t *testing.T) {
	mp, mpType := multipartBody(t, map[string]string{"prompt": "make it snow", "aspectRatio": "1:1"}, map[string][]byte{"in.png": pngHead})
	mpJob, mpJobType := multipartBody(t, map[string]string{"job": `{"prompt": "p", "candidateCount": 2}`}, map[string][]byte{"in.png": pngHead})
	mpBad, mpBadType := multipartBody(t, map[string]string{"prompt": "p", "colour": "red"}, nil)
	tests := []struct {
		name     string
		body     *bytes.Buffer
		ctype    string
		key      string
		max      int64
		want     job.Job
		wantErr  error
		wantText string
	}{
		{name: "json", body: bytes.NewBufferString(`{"prompt": "a fox"}`), ctype: "application/json", want: job.Job{Prompt: "a fox"}},
		{name: "json with idempotency key", body: bytes.NewBufferString(`{"prompt": "a fox"}`), key: "k-1", want: job.Job{ID: "k-1", Prompt: "a fox"}},
		{name: "key and id agree", body: bytes.NewBufferString(`{"id": "k-1", "prompt": "a fox"}`), key: "k-1", want: job.Job{ID: "k-1", Prompt: "a fox"}},
		{name: "key and id disagree", body: bytes.NewBufferString(`{"id": "k-2", "prompt": "a fox"}`), key: "k-1", wantErr: job.ErrInvalid, wantText: "disagree"},
		{name: "bad key", body: bytes.NewBufferString(`{"prompt": "a fox"}`), key: "../../etc", wantErr: job.ErrInvalid, wantText: "1 to 128"},
		{name: "unknown field", body: bytes.NewBufferString(`{"prompt": "a fox", "size": 3}`), wantErr: job.ErrInvalid, wantText: `"size"`},
		{name: "not json", body: bytes.NewBufferString(`prompt=a fox`), ctype: "application/json", wantErr: job.ErrInvalid},
		{name: "too large", body: bytes.NewBufferString(`{"prompt": "` + strings.Repeat("x", 2000) + `"}`), max: 1000, wantErr: job.ErrTooLarge, wantText: "1000 bytes"},
		{name: "wrong type", body: bytes.NewBufferString(`a`), ctype: "text/plain", wantErr: job.ErrInvalid, wantText: "multipart/form-data"},
		{name: "curl -d default type", body: bytes.NewBufferString(` {"prompt": "a fox"}`), ctype: "application/x-www-form-urlencoded", want: job.Job{Prompt: "a fox"}},
		{name: "a real form", body: bytes.NewBufferString(`prompt=a+fox`), ctype: "application/x-www-form-urlencoded", wantErr: job.ErrInvalid, wantText: "application/json"},
		{name: "multipart fields and file", body: mp, ctype: mpType,
			want: job.Job{Prompt: "make it snow", AspectRatio: "1:1", Images: []job.Image{{Data: pngHead, MIMEType: "application/octet-stream"}}}},
		{name: "multipart job part and file", body: mpJob, ctype: mpJobType,
			want: job.Job{Prompt: "p", CandidateCount: 2, Images: []job.Image{{Data: pngHead, MIMEType: "application/octet-stream"}}}},
		{name: "multipart unknown field", body: mpBad, ctype: mpBadType, wantErr: job.ErrInvalid, wantText: `"colour"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/Generate", tt.body)
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			if tt.key != "" {
				r.Header.Set(IdempotencyKeyHeader, tt.key)
			}
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			got, err := FromHTTP(r, max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("err = %v, want %v mentioning %q", err, tt.wantErr, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("job (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrefer(t *testing.T) {
	tests := []struct {
		values []string
		wait   time.Duration
		async  bool
	}{
		{nil, 0, false},
		{[]string{"wait=10"}, 10 * time.Second, false},
		{[]string{"respond-async"}, 0, true},
		{[]string{"respond-async, wait=5"}, 5 * time.Second, true},
		{[]string{"Wait=3", "handling=lenient"}, 3 * time.Second, false},
		{[]string{"wait=-1"}, 0, false},
		{[]string{"wait=abc"}, 0, false},
	}
	for _, tt := range tests {
		h := http.Header{"Prefer": tt.values}
		wait, async := Prefer(h)
		if wait != tt.wait || async != tt.async {
			t.Errorf("Prefer(%q) = %v, %v; want %v, %v", tt.values, wait, async, tt.wait, tt.async)
		}
	}
	if a, b := NewID(), NewID(); a == b || !job.ValidID(a) {
		t.Errorf("NewID gave %q and %q", a, b)
	}
}
