package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// statusOf is the one place an error category becomes an HTTP status.
func TestStatusOf(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: bad signature", webhook.ErrUnauthorized), http.StatusUnauthorized},
		{fmt.Errorf("%w: other body", webhook.ErrReplay), http.StatusConflict},
		{fmt.Errorf("%w: 40 MB", job.ErrTooLarge), http.StatusRequestEntityTooLarge},
		{fmt.Errorf("%w: no prompt", job.ErrInvalid), http.StatusBadRequest},
		{fmt.Errorf("%w: other work", job.ErrConflict), http.StatusConflict},
		{fmt.Errorf("%w: the model said no", job.ErrPermanent), http.StatusBadGateway},
		{fmt.Errorf("%w: storage down", job.ErrTransient), http.StatusServiceUnavailable},
		{fmt.Errorf("something else"), http.StatusInternalServerError},
	}
	for _, tt := range tests {
		if got := statusOf(tt.err); got != tt.want {
			t.Errorf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// A job that is not done answers 202 with its state (contract 9.1), a
// Location to poll, and a Retry-After that fits the state.
func TestWriteAccepted(t *testing.T) {
	since := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		st    storage.JobStatus
		want  string
		retry string
	}{
		{storage.JobStatus{}, `{"jobId":"j1","state":"queued"}`, "1"},
		{storage.JobStatus{State: job.Running, Since: since}, `{"jobId":"j1","state":"running","since":"2026-12-07T10:00:00Z"}`, "1"},
		{storage.JobStatus{State: job.Held, Reason: job.HoldBudget, Since: since}, `{"jobId":"j1","state":"held","reason":"budget","since":"2026-12-07T10:00:00Z"}`, "60"},
		{storage.JobStatus{State: job.Batched}, `{"jobId":"j1","state":"batched"}`, "60"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		writeAccepted(w, httptest.NewRequest(http.MethodGet, "/Generate?id=j1", nil), "j1", tt.st)
		var got, want any
		json.Unmarshal(w.Body.Bytes(), &got)
		json.Unmarshal([]byte(tt.want), &want)
		if w.Code != http.StatusAccepted || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%+v: %d %s, want 202 %s", tt.st, w.Code, w.Body, tt.want)
		}
		if loc := w.Header().Get("Location"); loc != "/Generate?id=j1" {
			t.Errorf("Location %q", loc)
		}
		if ra := w.Header().Get("Retry-After"); ra != tt.retry {
			t.Errorf("%s: Retry-After %q, want %q", tt.st.State, ra, tt.retry)
		}
	}
}
