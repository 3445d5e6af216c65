package job_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

func TestErrorCategories(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		code      string
		retryable bool
	}{
		{"nil", nil, "", false},
		{"invalid", fmt.Errorf("%w: prompt is required", job.ErrInvalid), "invalid_argument", false},
		{"too large", fmt.Errorf("%w: body over 32 MiB", job.ErrTooLarge), "too_large", false},
		{"too large inside invalid", fmt.Errorf("%w: %w: image", job.ErrInvalid, job.ErrTooLarge), "too_large", false},
		{"conflict", fmt.Errorf("wrapped: %w", job.ErrConflict), "conflict", false},
		{"permanent", fmt.Errorf("gemini: 403: %w", job.ErrPermanent), "permanent", false},
		{"transient", fmt.Errorf("gemini: 503: %w", job.ErrTransient), "unavailable", true},
		{"deadline", fmt.Errorf("model call: %w", context.DeadlineExceeded), "unavailable", true},
		{"canceled", context.Canceled, "internal", false},
		{"anything else", errors.New("boom"), "internal", false},
		{"joined permanent", errors.Join(errors.New("a"), job.ErrPermanent), "permanent", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := job.Code(tt.err); got != tt.code {
				t.Errorf("Code = %q, want %q", got, tt.code)
			}
			if got := job.Retryable(tt.err); got != tt.retryable {
				t.Errorf("Retryable = %v, want %v", got, tt.retryable)
			}
			rec := job.ErrorOf(tt.err)
			if tt.err == nil {
				if rec != nil {
					t.Errorf("ErrorOf(nil) = %+v, want nil", rec)
				}
				if rec.Err() != nil {
					t.Errorf("(*Error)(nil).Err() = %v, want nil", rec.Err())
				}
				return
			}
			want := &job.Error{Code: tt.code, Message: tt.err.Error(), Retryable: tt.retryable}
			if diff := cmp.Diff(want, rec); diff != "" {
				t.Errorf("ErrorOf (-want +got):\n%s", diff)
			}
			// A stored failure maps to the same answer as a fresh one.
			back := rec.Err()
			got := job.Error{Code: job.Code(back), Message: back.Error(), Retryable: job.Retryable(back)}
			if diff := cmp.Diff(*want, got); diff != "" {
				t.Errorf("ErrorOf(err).Err() round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrorErrCategory(t *testing.T) {
	for code, sentinel := range map[string]error{
		"invalid_argument": job.ErrInvalid, "too_large": job.ErrTooLarge, "conflict": job.ErrConflict,
		"permanent": job.ErrPermanent, "unavailable": job.ErrTransient,
	} {
		err := (&job.Error{Code: code, Message: "m"}).Err()
		if !errors.Is(err, sentinel) || err.Error() != "m" {
			t.Errorf("Error{Code: %s}.Err() = %v, want %v wrapped with message m", code, err, sentinel)
		}
	}
}

func TestUsageAdd(t *testing.T) {
	var u job.Usage
	u.Add(job.Usage{PromptTokens: 10, CandidatesTokens: 1290, TotalTokens: 1300, PromptTokensByModality: map[string]int32{"TEXT": 10}})
	u.Add(job.Usage{PromptTokens: 268, CandidatesTokens: 1290, TotalTokens: 1558, ThoughtsTokens: 3, CachedTokens: 4,
		PromptTokensByModality: map[string]int32{"TEXT": 10, "IMAGE": 258}, CandidatesTokensByModality: map[string]int32{"IMAGE": 1290}})
	want := job.Usage{PromptTokens: 278, CandidatesTokens: 2580, TotalTokens: 2858, ThoughtsTokens: 3, CachedTokens: 4,
		PromptTokensByModality: map[string]int32{"TEXT": 20, "IMAGE": 258}, CandidatesTokensByModality: map[string]int32{"IMAGE": 1290}}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("Usage.Add (-want +got):\n%s", diff)
	}
}
