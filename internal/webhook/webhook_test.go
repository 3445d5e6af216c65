package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/webhook"
)

// The reference vector of the Standard Webhooks libraries (svix and
// standard-webhooks test suites): secret, id, timestamp and payload give
// exactly this signature.
const (
	refSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	refID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	refTimestamp = 1614265330
	refPayload   = `{"test": 2432232314}`
	refSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustKey(t *testing.T, s string) webhook.Key {
	t.Helper()
	k, err := webhook.ParseKey(config.Secret(s))
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	return k
}

func TestSignReferenceVector(t *testing.T) {
	got := webhook.Sign(mustKey(t, refSecret), refID, time.Unix(refTimestamp, 0), []byte(refPayload))
	if diff := cmp.Diff(refSignature, got); diff != "" {
		t.Errorf("Sign (-want +got):\n%s", diff)
	}
	// Header names in any case, as proxies may rewrite them.
	h := http.Header{"Webhook-Id": {refID}, "Webhook-Timestamp": {strconv.Itoa(refTimestamp)}, "Webhook-Signature": {refSignature}}
	id, err := webhook.Verify(mustKey(t, refSecret), h, []byte(refPayload), time.Unix(refTimestamp+10, 0), time.Minute)
	if err != nil || id != refID {
		t.Errorf("Verify(reference vector) = %q, %v; want %q, nil", id, err, refID)
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		name    string
		secret  string
		want    webhook.Key
		wantErr string
	}{
		{"whsec_ base64", "whsec_aGVsbG8=", webhook.Key("hello"), ""},
		{"whsec_ unpadded", "whsec_aGVsbG8", webhook.Key("hello"), ""},
		{"raw", "plain-shared-secret", webhook.Key("plain-shared-secret"), ""},
		{"empty", "", nil, "webhook secret is empty"},
		{"whsec_ not base64", "whsec_%%%%not-b64", nil, "webhook secret has the whsec_ prefix but its rest is not base64"},
		{"whsec_ nothing", "whsec_", nil, "webhook secret has the whsec_ prefix but its rest is not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := webhook.ParseKey(config.Secret(tt.secret))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ParseKey error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseKey (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	const secret = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==" // "secret-key-for-tests-only"
	key := mustKey(t, secret)
	wrong := mustKey(t, "whsec_d3Jvbmcta2V5")
	now := time.Unix(1_800_000_000, 0)
	const tol = 5 * time.Minute
	body := []byte(`{"prompt":"a watercolor fox"}`)
	good := webhook.Sign(key, "msg_1", now, body)

	headers := func(id string, ts time.Time, sig string) http.Header {
		h := http.Header{}
		if id != "" {
			h.Set(webhook.HeaderID, id)
		}
		if !ts.IsZero() {
			h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		}
		if sig != "" {
			h.Set(webhook.HeaderSignature, sig)
		}
		return h
	}
	tests := []struct {
		name    string
		key     webhook.Key
		h       http.Header
		body    []byte
		wantID  string
		wantErr string // substring; every error must wrap ErrUnauthorized
	}{
		{name: "valid", key: key, h: headers("msg_1", now, good), body: body, wantID: "msg_1"},
		{name: "several signatures, the last valid (key rotation)", key: key,
			h:    headers("msg_1", now, webhook.Sign(wrong, "msg_1", now, body)+" v1a,c29tZXRoaW5n v1,bm90LWJhc2U2NA "+good),
			body: body, wantID: "msg_1"},
		{name: "timestamp at the tolerance edge", key: key,
			h: headers("msg_1", now.Add(-tol), webhook.Sign(key, "msg_1", now.Add(-tol), body)), body: body, wantID: "msg_1"},
		{name: "wrong secret", key: wrong, h: headers("msg_1", now, good), body: body, wantErr: "no signature in webhook-signature matches the body"},
		{name: "tampered body", key: key, h: headers("msg_1", now, good), body: []byte(`{"prompt":"a watercolor wolf"}`), wantErr: "matches the body"},
		{name: "id swapped", key: key, h: headers("msg_2", now, good), body: body, wantErr: "matches the body"},
		{name: "missing id", key: key, h: headers("", now, good), body: body, wantErr: "missing header webhook-id"},
		{name: "missing everything", key: key, h: http.Header{}, body: body, wantErr: "missing header webhook-id, webhook-timestamp, webhook-signature"},
		{name: "missing signature", key: key, h: headers("msg_1", now, ""), body: body, wantErr: "missing header webhook-signature"},
		{name: "old timestamp", key: key,
			h:    headers("msg_1", now.Add(-tol-time.Second), webhook.Sign(key, "msg_1", now.Add(-tol-time.Second), body)),
			body: body, wantErr: "is 5m1s away from the server's clock, outside the tolerance of 5m0s"},
		{name: "future timestamp", key: key,
			h:    headers("msg_1", now.Add(10*time.Minute), webhook.Sign(key, "msg_1", now.Add(10*time.Minute), body)),
			body: body, wantErr: "is 10m0s away from the server's clock"},
		{name: "timestamp in milliseconds", key: key,
			h:    http.Header{"Webhook-Id": {"msg_1"}, "Webhook-Timestamp": {"1800000000000"}, "Webhook-Signature": {good}},
			body: body, wantErr: "outside the tolerance"},
		{name: "timestamp not a number", key: key,
			h:    http.Header{"Webhook-Id": {"msg_1"}, "Webhook-Timestamp": {"yesterday"}, "Webhook-Signature": {good}},
			body: body, wantErr: `webhook-timestamp "yesterday" is not Unix seconds`},
		{name: "only other schemes", key: key, h: headers("msg_1", now, "v1a,"+strings.TrimPrefix(good, "v1,")), body: body,
			wantErr: "holds no v1 signature"},
		{name: "no key configured", key: nil, h: headers("msg_1", now, good), body: body, wantErr: "no webhook secret is configured"},
		{name: "id with spaces", key: key, h: headers("msg 1", now, good), body: body, wantErr: "holds white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := webhook.Verify(tt.key, tt.h, tt.body, now, tol)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id != tt.wantID {
					t.Errorf("Verify id = %q, want %q", id, tt.wantID)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify = %q, nil error; want an error containing %q", id, tt.wantErr)
			}
			if !errors.Is(err, webhook.ErrUnauthorized) {
				t.Errorf("Verify error %v does not wrap ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Verify error = %q, want it to contain %q", err, tt.wantErr)
			}
			if id != "" {
				t.Errorf("Verify id = %q on error, want empty", id)
			}
			// No error may carry the secret, its key, or the signature that
			// would have been right.
			expected := webhook.Sign(key, tt.h.Get(webhook.HeaderID), now, tt.body)
			for _, leak := range []string{secret, strings.TrimPrefix(secret, "whsec_"), "secret-key-for-tests-only",
				strings.TrimPrefix(expected, "v1,"), strings.TrimPrefix(good, "v1,")} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("Verify error %q contains secret material %q", err, leak)
				}
			}
		})
	}
}

func TestSignHeadersRoundTrip(t *testing.T) {
	key := mustKey(t, "raw secret")
	now := time.Unix(1_700_000_000, 0)
	h := http.Header{}
	webhook.SignHeaders(h, key, "msg_rt", now, []byte("body"))
	id, err := webhook.Verify(key, h, []byte("body"), now.Add(30*time.Second), time.Minute)
	if err != nil || id != "msg_rt" {
		t.Fatalf("Verify(SignHeaders) = %q, %v; want msg_rt, nil", id, err)
	}
	want := http.Header{
		"Webhook-Id":        {"msg_rt"},
		"Webhook-Timestamp": {"1700000000"},
		"Webhook-Signature": {webhook.Sign(key, "msg_rt", now, []byte("body"))},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("SignHeaders (-want +got):\n%s", diff)
	}
}
