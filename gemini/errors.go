package gemini

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// apiError is a classified model error. It unwraps to its category and to
// the SDK's genai.APIError (by value, as the SDK returns it), and its
// message never holds the API key.
type apiError struct {
	kind       error
	cause      error
	msg        string
	retryDelay time.Duration // from google.rpc.RetryInfo
	perDay     bool          // a google.rpc.QuotaFailure names a per-day quota
}

func (e *apiError) Error() string   { return e.msg }
func (e *apiError) Unwrap() []error { return []error{e.kind, e.cause} }

// PerDayQuota reports whether err is a 429 for a per-day quota, which is not
// worth retrying within the hour.
func PerDayQuota(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.perDay
}

// RetryDelay is the wait the service asked for with err (RetryInfo), if any.
func RetryDelay(err error) (time.Duration, bool) {
	var ae *apiError
	if errors.As(err, &ae) && ae.retryDelay > 0 {
		return ae.retryDelay, true
	}
	return 0, false
}

// classify wraps an SDK error in job's categories, once, at this edge.
func classify(err error, key string) error {
	var ae genai.APIError // the SDK returns it by value
	if errors.As(err, &ae) {
		return classifyAPI(ae, err, key)
	}
	msg := "gemini: " + redact(shorten(err.Error()), key)
	var urlErr *url.Error
	var netErr net.Error
	var syntaxErr *json.SyntaxError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{kind: job.ErrTransient, cause: err, msg: msg} // the call's deadline passed: the next attempt may be faster
	case errors.Is(err, context.Canceled):
		return &apiError{kind: job.ErrTransient, cause: err, msg: msg} // the job was not done; a redelivery may finish it
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, io.EOF), errors.As(err, &netErr), errors.As(err, &urlErr):
		return &apiError{kind: job.ErrTransient, cause: err, msg: msg} // the network failed, not the request
	case errors.As(err, &syntaxErr):
		return &apiError{kind: job.ErrTransient, cause: err, msg: msg} // a garbled answer: the service or the wire glitched
	default:
		// The SDK refused to build the request (a field this backend does
		// not take): sending it again cannot help.
		return &apiError{kind: job.ErrPermanent, cause: err, msg: msg}
	}
}

func classifyAPI(ae genai.APIError, err error, key string) error {
	out := &apiError{cause: err, msg: fmt.Sprintf("gemini: %d %s: %s", ae.Code, ae.Status, redact(shorten(ae.Message), key))}
	var reason string
	for _, d := range ae.Details {
		typ, _ := d["@type"].(string)
		switch {
		case strings.HasSuffix(typ, "google.rpc.RetryInfo"):
			if s, ok := d["retryDelay"].(string); ok {
				if delay, err := time.ParseDuration(s); err == nil && delay > 0 {
					out.retryDelay = delay
				}
			}
		case strings.HasSuffix(typ, "google.rpc.QuotaFailure"):
			vs, _ := d["violations"].([]any)
			for _, v := range vs {
				m, _ := v.(map[string]any)
				id, _ := m["quotaId"].(string)
				metric, _ := m["quotaMetric"].(string)
				if perDay(id) || perDay(metric) {
					out.perDay = true
					out.msg += " (quota " + id + ")"
				}
			}
		case strings.HasSuffix(typ, "google.rpc.ErrorInfo"):
			reason, _ = d["reason"].(string)
		}
	}
	switch code := ae.Code; {
	case code == 400 && (reason == "API_KEY_INVALID" || ae.Status == "FAILED_PRECONDITION"):
		out.kind = job.ErrPermanent // a bad key or an unsupported location: fix the deployment, not the job
	case code == 400:
		out.kind = job.ErrInvalid // the request itself is wrong: never retry
	case code == 401, code == 403, code == 404:
		out.kind = job.ErrPermanent // bad key, no permission, unknown model: retrying cannot help
	case code == 413:
		out.kind = job.ErrTooLarge // the request is over the service's size limit: permanent
	case code == 429:
		out.kind = job.ErrTransient // quota: retry after RetryInfo.retryDelay (per-day: later, by redelivery)
	case code == 408, code == 499, code >= 500:
		out.kind = job.ErrTransient // 500/502/503/504: the service's trouble; retry with backoff
	default:
		out.kind = job.ErrPermanent // other 4xx: the request will fail the same way again
	}
	return out
}

// perDay reports whether a quota id or metric names a per-day quota
// (GenerateRequestsPerDayPerProjectPerModel, …_per_day).
func perDay(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "perday") || strings.Contains(s, "per_day")
}

// shorten keeps error messages readable: an SDK decode error can carry the
// whole answer body, images included.
func shorten(s string) string {
	const max = 500
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
