package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/webhook"
)

// FuzzVerify: whatever the headers and body, Verify never panics, refuses
// with ErrUnauthorized, never echoes the key, and accepts only a request
// that carries the signature Sign makes for it.
func FuzzVerify(f *testing.F) {
	key := webhook.Key("fuzz-key-not-a-secret-0123456789")
	now := time.Unix(1_764_000_000, 0)
	body := []byte(`{"prompt": "a fox"}`)
	f.Add("msg_1", "1764000000", webhook.Sign(key, "msg_1", now, body), body)
	f.Add("msg_1", "1764000000", "v1,AAAA v1a,BBBB", body)
	f.Add("", "", "", []byte(nil))
	f.Add("msg_2", "17640000000000", "v1,"+strings.Repeat("A", 5000), body)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", sig)
		got, err := webhook.Verify(key, h, body, now, 5*time.Minute)
		if err != nil {
			if !errors.Is(err, webhook.ErrUnauthorized) {
				t.Fatalf("error of no category: %v", err)
			}
			if strings.Contains(err.Error(), string(key)) {
				t.Fatal("the key leaked into an error")
			}
			return
		}
		secs, perr := strconv.ParseInt(strings.TrimSpace(h.Get("webhook-timestamp")), 10, 64)
		if perr != nil {
			t.Fatalf("accepted a timestamp %q that is not a number", ts)
		}
		want := webhook.Sign(key, h.Get("webhook-id"), time.Unix(secs, 0), body)
		if got != h.Get("webhook-id") || !strings.Contains(h.Get("webhook-signature"), want) {
			t.Fatalf("accepted id %q with signature %q; the valid one is %q", got, h.Get("webhook-signature"), want)
		}
	})
}
