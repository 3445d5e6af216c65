package config

import (
	"strconv"
	"time"
)

// Batch is the batch lane: jobs submitted together to the Gemini Batch API
// at the batch price, polled by PollBatches.
type Batch struct {
	// Chunk is the most jobs in one model batch (GENIMG_BATCH_CHUNK): small
	// enough that a finished batch's answers (about 2 MB of base64 per
	// image) can always be fetched and split by one function instance.
	Chunk int
	// InlineBytes is the largest request body sent inline
	// (GENIMG_BATCH_INLINE_BYTES); a larger chunk is uploaded as a JSONL
	// file. The Gemini API takes inline batches under 20 MB.
	InlineBytes int
	// MaxAge (GENIMG_BATCH_MAX_AGE): a batch still open this long after
	// submission is reported stuck and handled by OnExpired. The Gemini
	// API expires batches after 48 h; its target is 24 h.
	MaxAge time.Duration
	// OnExpired is what becomes of the jobs of an expired, failed,
	// cancelled or stuck batch (GENIMG_BATCH_ON_EXPIRED): "resubmit" (in a
	// new batch, up to MaxResubmits times) or "fail" (a failed, retryable
	// record each).
	OnExpired string
	// MaxResubmits bounds resubmissions of one job
	// (GENIMG_BATCH_MAX_RESUBMITS); past it, the job fails.
	MaxResubmits int
}

// The OnExpired policies.
const (
	BatchResubmit = "resubmit"
	BatchFail     = "fail"
)

// readBatch reads the Batch section.
func (r *reader) readBatch() Batch {
	b := Batch{
		Chunk:        r.integer("GENIMG_BATCH_CHUNK", 16, 1, 1000),
		InlineBytes:  r.integer("GENIMG_BATCH_INLINE_BYTES", 19_000_000, 1, 20_000_000),
		MaxAge:       r.duration("GENIMG_BATCH_MAX_AGE", 30*time.Hour),
		OnExpired:    r.str("GENIMG_BATCH_ON_EXPIRED", BatchResubmit),
		MaxResubmits: r.integer("GENIMG_BATCH_MAX_RESUBMITS", 1, 0, 10),
	}
	if b.OnExpired != BatchResubmit && b.OnExpired != BatchFail {
		r.fail("GENIMG_BATCH_ON_EXPIRED", b.OnExpired, "expected resubmit or fail")
	}
	if b.MaxAge < time.Minute {
		r.fail("GENIMG_BATCH_MAX_AGE", r.str("GENIMG_BATCH_MAX_AGE", ""), "must be at least 1m: batches take minutes to hours ("+strconv.Itoa(int(b.MaxAge/time.Second))+"s given)")
	}
	return b
}
