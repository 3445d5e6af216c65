package callback

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/webhook"
)

func TestReceiver(t *testing.T) {
	key, err := webhook.ParseKey(LocalSecret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"jobId": "j1", "outcome": "succeeded", "outputs": [{"uri": "gs://out/j1/0.png", "width": 8, "height": 4}], "costUsd": 0.0387}`)
	tests := []struct {
		name       string
		sign       func(h http.Header)
		wantStatus int
		wantOut    string
	}{
		{"signed", func(h http.Header) { webhook.SignHeaders(h, key, "j1.ab", time.Now(), body) }, http.StatusNoContent,
			"jobs/j1 succeeded j1.ab 1 image(s) $0.0387\n  gs://out/j1/0.png 8x4\n"},
		{"signed again", func(h http.Header) { webhook.SignHeaders(h, key, "j1.ab", time.Now(), body) }, http.StatusNoContent,
			"jobs/j1 succeeded j1.ab 1 image(s) $0.0387 (delivery 2 of this webhook-id)\n  gs://out/j1/0.png 8x4\n"},
		{"wrong key", func(h http.Header) { webhook.SignHeaders(h, webhook.Key("other"), "j1.cd", time.Now(), body) }, http.StatusUnauthorized,
			`REJECTED j1.cd: webhook signature rejected: no signature in webhook-signature matches the body (check the secret, and sign "id.timestamp.body" over the exact bytes sent)` + "\n"},
	}
	rv := &Receiver{Key: key}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			rv.Out = &out
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			req.Header.Set("ce-subject", "jobs/j1")
			tt.sign(req.Header)
			w := httptest.NewRecorder()
			rv.ServeHTTP(w, req)
			if w.Code != tt.wantStatus {
				t.Errorf("status %d, want %d", w.Code, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.wantOut, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if strings.Contains(out.String(), strings.TrimPrefix(LocalSecret, "whsec_")) {
				t.Errorf("the secret is printed")
			}
		})
	}
}
