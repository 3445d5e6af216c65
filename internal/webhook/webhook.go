// Package webhook authenticates HTTP callers outside Google Cloud IAM with
// Standard Webhooks signatures (https://www.standardwebhooks.com):
//
//	webhook-id:        msg_2KWPBgLlAfxdpx2AI54pPJ85f4W
//	webhook-timestamp: 1714567890                        (Unix seconds)
//	webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,…
//
// Each signature is the standard base64 of HMAC-SHA256(key,
// "<id>.<timestamp>.<body>"). The key is the secret's base64 part after
// "whsec_", or the secret's bytes when it has no such prefix.
//
// Verify checks the headers, the timestamp against a tolerance and the
// signatures (in constant time). A Replay guard then rejects a webhook-id
// seen before, across every instance, by recording each id create-only in
// Cloud Storage.
//
// Errors never contain the secret or an expected signature: they say which
// check failed, and wrap ErrUnauthorized or ErrReplay so that the HTTP edge
// can answer 401 or 409.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/genimg/genimg/internal/config"
)

// Header names of the Standard Webhooks specification.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix marks a base64-encoded secret, as Standard Webhooks
// libraries generate them.
const secretPrefix = "whsec_"

// Limits on what is read from the headers, so that a hostile request
// cannot make Verify do unbounded work.
const (
	maxIDLength    = 256
	maxSignatures  = 16
	maxHeaderBytes = 4096
)

var (
	// ErrUnauthorized is wrapped by every failed check of Verify: missing
	// or malformed headers, a timestamp outside the tolerance, no valid
	// signature. The HTTP edge answers 401.
	ErrUnauthorized = errors.New("webhook signature rejected")
	// ErrReplay is wrapped when a correctly signed request reuses a
	// webhook-id seen before. The HTTP edge answers 409: the caller is
	// authenticated (401 would send it looking for a wrong secret) but
	// this delivery was already taken.
	ErrReplay = errors.New("webhook-id already used")
)

// A Key is a decoded signing secret.
type Key []byte

// ParseKey decodes a secret: "whsec_<base64>" is the base64 part decoded;
// anything else is taken as raw bytes. Call it once at start, so that a
// malformed secret stops the start instead of failing every request. The
// error never contains the secret.
func ParseKey(secret config.Secret) (Key, error) {
	s := secret.Reveal()
	if s == "" {
		return nil, errors.New("webhook secret is empty")
	}
	enc, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return Key(s), nil
	}
	// Libraries emit padded standard base64; accept unpadded too.
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(enc)
	}
	if err != nil || len(b) == 0 {
		// Not %w: the decoder's error quotes the offending input byte.
		return nil, errors.New("webhook secret has the whsec_ prefix but its rest is not base64")
	}
	return Key(b), nil
}

// Sign returns the webhook-signature header value ("v1,<base64>") for a
// request with this id, timestamp and body. Clients and tests use it;
// genimg's own CLI signs with it.
func Sign(key Key, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, strconv.FormatInt(ts.Unix(), 10), body))
}

// SignHeaders sets all three Standard Webhooks headers on h.
func SignHeaders(h http.Header, key Key, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(key, id, ts, body))
}

// mac is HMAC-SHA256 over "id.timestamp.body". The timestamp is signed as
// the caller sent it, digit for digit.
func mac(key Key, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify authenticates a request: the three headers are present, the
// timestamp is within tolerance of now (either way: a clock ahead of ours
// is as suspect as one behind), and one of the v1 signatures matches. It
// returns the webhook-id, for the Replay guard. Every error wraps
// ErrUnauthorized and names the failed check, never the secret or the
// signature expected.
func Verify(key Key, h http.Header, body []byte, now time.Time, tolerance time.Duration) (string, error) {
	v, err := NewVerifier(key, h, now, tolerance)
	if err != nil {
		return "", err
	}
	v.Write(body)
	return v.Verify()
}

// A Verifier checks a request's signature over its body as the body
// streams through it (an io.Writer), so that the body need not be held
// whole: NewVerifier checks the headers, Write takes the body's bytes in
// order, Verify compares the signatures once the body has ended. Nothing
// the body asks for may be acted on before Verify succeeds.
type Verifier struct {
	id, sigs string
	mac      hash.Hash
}

// NewVerifier checks a request's signature headers (present, well formed,
// the timestamp within tolerance) and starts the MAC over the body.
func NewVerifier(key Key, h http.Header, now time.Time, tolerance time.Duration) (*Verifier, error) {
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: no webhook secret is configured", ErrUnauthorized)
	}
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	var missing []string
	for _, f := range []struct{ name, v string }{{HeaderID, id}, {HeaderTimestamp, tsText}, {HeaderSignature, sigs}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing header %s (sign requests with Standard Webhooks)", ErrUnauthorized, strings.Join(missing, ", "))
	}
	if len(id) > maxIDLength || strings.ContainsAny(id, " \t\r\n") {
		return nil, fmt.Errorf("%w: %s is longer than %d characters or holds white space", ErrUnauthorized, HeaderID, maxIDLength)
	}
	sec, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || len(tsText) > 20 {
		return nil, fmt.Errorf("%w: %s %q is not Unix seconds", ErrUnauthorized, HeaderTimestamp, truncate(tsText))
	}
	ts := time.Unix(sec, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return nil, fmt.Errorf("%w: %s %s is %s away from the server's clock, outside the tolerance of %s",
			ErrUnauthorized, HeaderTimestamp, tsText, d.Abs().Round(time.Second), tolerance)
	}
	if len(sigs) > maxHeaderBytes {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrUnauthorized, HeaderSignature, maxHeaderBytes)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(tsText))
	m.Write([]byte{'.'})
	return &Verifier{id: id, sigs: sigs, mac: m}, nil
}

// Write takes the next bytes of the body. It never fails.
func (v *Verifier) Write(p []byte) (int, error) { return v.mac.Write(p) }

// Verify answers the request's webhook-id when one of its v1 signatures
// matches the body written; an error wrapping ErrUnauthorized otherwise.
func (v *Verifier) Verify() (string, error) {
	want := v.mac.Sum(nil)
	seen := 0
	for _, s := range strings.Fields(v.sigs) {
		version, enc, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue // other schemes (v1a: asymmetric) are not ours to check
		}
		if seen++; seen > maxSignatures {
			break
		}
		got, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			continue
		}
		// hmac.Equal is constant-time: the time taken tells nothing about
		// how much of a forged signature was right.
		if hmac.Equal(got, want) {
			return v.id, nil
		}
	}
	if seen == 0 {
		return "", fmt.Errorf("%w: %s holds no v1 signature", ErrUnauthorized, HeaderSignature)
	}
	return "", fmt.Errorf("%w: no signature in %s matches the body (check the secret, and sign \"id.timestamp.body\" over the exact bytes sent)",
		ErrUnauthorized, HeaderSignature)
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
