package job

// State is where a job stands before and after its record (contract 9.1):
// exactly one at a time.
type State string

const (
	// Queued: durable (on the requests topic, or parked by genimg), not
	// claimed by a live attempt.
	Queued State = "queued"
	// Held: genimg itself is waiting — the kill switch, a spent budget, the
	// rate limit or a per-day model quota (HoldReason). A held job runs by
	// itself once its cause clears, or ends failed and retryable once older
	// than GENIMG_MAX_EVENT_AGE.
	Held State = "held"
	// Running: claimed by an attempt whose lease is live.
	Running State = "running"
	// Batched: in a model batch, not answered yet.
	Batched State = "batched"
	// Done: the job's record exists.
	Done State = "done"
)

// Why a job is held.
const (
	HoldPaused = "paused" // the kill switch (gs://OUTPUT_BUCKET/control/paused or GENIMG_PAUSED)
	HoldBudget = "budget" // an hourly or daily spend budget is spent
	HoldRate   = "rate"   // GENIMG_CALLS_PER_MINUTE
	HoldQuota  = "quota"  // the model's per-day quota is out
)
