package job

import (
	"context"
	"errors"
)

// Error categories. Adapter packages wrap what went wrong in one of these
// with %w; the edge (function.go) decides, once, whether that means an ack,
// a retry or which HTTP status.
var (
	// ErrInvalid: the job or one of its inputs is wrong. Permanent: a
	// failed record, HTTP 400.
	ErrInvalid = errors.New("invalid job")
	// ErrTooLarge: a body, message, image or event is over a limit.
	// Permanent: a failed record, HTTP 413.
	ErrTooLarge = errors.New("too large")
	// ErrConflict: a job id was reused for different work. Permanent: a
	// failed record for the new delivery, HTTP 409; the first job's record
	// is left alone.
	ErrConflict = errors.New("job id reused for a different job")
	// ErrPermanent: a dependency refused the job for good (bad API key, no
	// permission, unknown model). Permanent: a failed record.
	ErrPermanent = errors.New("permanent failure")
	// ErrTransient: worth trying again later (quota, 5xx, deadline,
	// connection reset, job claimed elsewhere). The platform redelivers.
	ErrTransient = errors.New("transient failure")
)

// Retryable reports whether err is worth another delivery: it wraps
// ErrTransient or a context deadline. Everything else is permanent.
func Retryable(err error) bool {
	return errors.Is(err, ErrTransient) || errors.Is(err, context.DeadlineExceeded)
}

// Code names err's category for the completion record's error.code.
func Code(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrInvalid):
		return "invalid_argument"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrPermanent):
		return "permanent"
	case Retryable(err):
		return "unavailable"
	default:
		return "internal"
	}
}
