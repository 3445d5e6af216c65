variable "project_id" {
  description = "Google Cloud project that runs genimg."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id (6-30 lowercase letters, digits and hyphens)."
  }
}

variable "region" {
  description = "Region of the functions, buckets and Eventarc triggers."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of every resource name, so that several deployments can share a project."
  type        = string
  default     = "genimg"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 lowercase letters, digits or hyphens, starting with a letter (service account ids are short)."
  }
}

variable "backend" {
  description = "How genimg reaches the model: gemini-api (an API key in Secret Manager) or vertex (Vertex AI with the runtime service account)."
  type        = string
  default     = "gemini-api"

  validation {
    condition     = contains(["gemini-api", "vertex"], var.backend)
    error_message = "backend must be gemini-api or vertex."
  }
}

variable "vertex_location" {
  description = "Vertex AI location of the model calls (backend = vertex)."
  type        = string
  default     = "global"
}

variable "model" {
  description = "Default model for jobs that name none (GENIMG_MODEL)."
  type        = string
  default     = "gemini-2.5-flash-image"
}

variable "models" {
  description = "Models that jobs may ask for (GENIMG_MODELS); empty means the default model only."
  type        = list(string)
  default     = []
}

variable "gemini_api_key" {
  description = "The Gemini API key (backend = gemini-api), needed only when gemini_api_key_version changes: on the first apply and on a rotation. Pass it as TF_VAR_gemini_api_key; it is write-only, so it never enters state or a plan file."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "gemini_api_key_version" {
  description = "Generation of the Gemini API key. Raise it (with a new gemini_api_key) to rotate: Terraform adds a new secret version, the functions move to it, and the old version is disabled, not destroyed, for a rollback."
  type        = number
  default     = 1

  validation {
    condition     = var.gemini_api_key_version >= 1 && floor(var.gemini_api_key_version) == var.gemini_api_key_version
    error_message = "gemini_api_key_version must be a whole number from 1."
  }
}

variable "webhook_secret" {
  description = "The Standard Webhooks signing secret (whsec_...), needed only when webhook_secret_version changes. Pass it as TF_VAR_webhook_secret; write-only, never in state."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "webhook_secret_version" {
  description = "Generation of the Standard Webhooks signing secret. 0: Generate does not check signatures and callers are authenticated by IAM alone. From 1: Terraform stores webhook_secret in Secret Manager and HTTP callers must sign; raise it to rotate."
  type        = number
  default     = 0

  validation {
    condition     = var.webhook_secret_version >= 0 && floor(var.webhook_secret_version) == var.webhook_secret_version
    error_message = "webhook_secret_version must be 0 (no signatures) or a whole number from 1."
  }
}

variable "public_webhook" {
  description = "Let anyone on the internet call Generate (allUsers as invoker). Only with webhook_secret_version set: then every request must carry a valid signature."
  type        = bool
  default     = false

  validation {
    condition     = !var.public_webhook || var.webhook_secret_version > 0
    error_message = "public_webhook needs webhook_secret_version: a public endpoint without signatures would let anyone spend the model budget."
  }
}

variable "http_invokers" {
  description = "IAM members allowed to call Generate, such as user:alice@example.com or serviceAccount:client@P.iam.gserviceaccount.com."
  type        = list(string)
  default     = []
}

variable "client_impersonators" {
  description = "Members (user:you@example.com) who may mint ID tokens as the client service account, to call Generate from the genimg CLI."
  type        = list(string)
  default     = []
}

variable "upload_via" {
  description = "How uploads reach genimg: eventarc (OnUpload on object finalize, every object of the upload bucket) or notification (a prefix-filtered Cloud Storage notification onto the requests topic, handled by OnMessage)."
  type        = string
  default     = "eventarc"

  validation {
    condition     = contains(["eventarc", "notification"], var.upload_via)
    error_message = "upload_via must be eventarc or notification."
  }
}

variable "upload_prefixes" {
  description = "Object prefixes of the upload bucket that are sent to genimg when upload_via = notification (one notification each); [\"\"] means every object."
  type        = list(string)
  default     = [""]
}

variable "upload_rules" {
  description = "Upload rules (GENIMG_RULES) as a list of objects; bucket defaults to the upload bucket. Example: [{prefix = \"watercolor/\", prompt = \"Turn this photo into a watercolor painting\", aspectRatio = \"1:1\"}]."
  type        = any
  default     = []
}

variable "input_buckets" {
  description = "Further buckets that jobs may read gs:// inputs from (GENIMG_INPUT_BUCKETS); the upload and output buckets are always allowed. The runtime service account gets read access on each."
  type        = list(string)
  default     = []
}

variable "function_timeout_seconds" {
  description = "Timeout of every function (GENIMG_FUNCTION_TIMEOUT). At most 540 s, the limit of event-driven functions, and below the push subscription's 600 s ack deadline."
  type        = number
  default     = 540

  validation {
    condition     = var.function_timeout_seconds >= 60 && var.function_timeout_seconds <= 540
    error_message = "function_timeout_seconds must be from 60 to 540."
  }
}

variable "model_timeout_seconds" {
  description = "Deadline of one model call (GENIMG_MODEL_TIMEOUT); must be shorter than the function timeout."
  type        = number
  default     = 120

  validation {
    condition     = var.model_timeout_seconds > 0 && var.model_timeout_seconds < var.function_timeout_seconds
    error_message = "model_timeout_seconds must be shorter than function_timeout_seconds: genimg refuses to start otherwise."
  }
}

variable "http_wait_seconds" {
  description = "How long Generate waits for a record before answering 202 (GENIMG_HTTP_WAIT); at most the function timeout."
  type        = number
  default     = 60

  validation {
    condition     = var.http_wait_seconds > 0 && var.http_wait_seconds <= var.function_timeout_seconds
    error_message = "http_wait_seconds must be from 1 to function_timeout_seconds: genimg refuses to start otherwise."
  }
}

variable "max_event_age" {
  description = "A delivery older than this is recorded failed and acknowledged (GENIMG_MAX_EVENT_AGE). Under 24h, the platform's retry window, so nothing is dropped silently."
  type        = string
  default     = "12h"

  validation {
    condition     = can(regex("^([0-9]+[hms])+$", var.max_event_age))
    error_message = "max_event_age must be a Go duration such as 12h or 90m."
  }
}

variable "max_image_bytes" {
  description = "Largest input image in bytes (GENIMG_MAX_IMAGE_BYTES); 7 MB is the model's limit."
  type        = number
  default     = 7340032
}

variable "max_request_bytes" {
  description = "Largest HTTP body in bytes (GENIMG_MAX_REQUEST_BYTES); Cloud Run allows 32 MiB."
  type        = number
  default     = 16777216

  validation {
    condition     = var.max_request_bytes > 0 && var.max_request_bytes <= 33554432
    error_message = "max_request_bytes must be from 1 to 33554432 (32 MiB, the Cloud Run limit)."
  }
}

variable "max_concurrent_calls" {
  description = "Model calls in flight per instance (GENIMG_MAX_CONCURRENT_CALLS)."
  type        = number
  default     = 64
}

variable "max_instances" {
  description = "Most instances per function: with concurrency, the ceiling on parallel model calls and so on spend."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be from 1 to 1000."
  }
}

variable "concurrency" {
  description = "Requests one instance serves at once. Model calls mostly wait, so more than one pays off; above 1 needs at least 1 vCPU."
  type        = number
  default     = 16

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be from 1 to 1000."
  }
}

variable "memory" {
  description = "Memory per instance, such as 512Mi or 1Gi. Decoding a model answer takes about 8 MB per MiB of image, per request in flight."
  type        = string
  default     = "1Gi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must look like 512Mi or 1Gi."
  }
}

variable "cpu" {
  description = "vCPUs per instance (concurrency above 1 needs at least 1), such as 1, 2 or 0.583. The Go runtime gets as many scheduler threads (GOMAXPROCS), rounded up."
  type        = string
  default     = "1"

  validation {
    condition     = can(tonumber(var.cpu)) && try(tonumber(var.cpu) > 0, false)
    error_message = "cpu must be a number of vCPUs, such as 1, 2 or 0.583."
  }
}

variable "max_delivery_attempts" {
  description = <<-EOT
    Deliveries of a request message before Pub/Sub moves it to the dead-letter topic (5-100).
    Every answer other than success counts, including the 429s Cloud Run sends when all
    max_instances x concurrency slots are busy: at the defaults (10 x 16) a burst of a few
    hundred requests gets 429s for minutes, and with backoff from 10 s a limit of 10 was used up
    within the hour by healthy requests. At 100, with backoff up to 600 s, a message is retried
    for well over max_event_age (12 h), so genimg itself records a job that waited too long as
    failed and acknowledges it; the dead-letter topic keeps only what genimg cannot read at all.
  EOT
  type        = number
  default     = 100

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "job_state_retention_days" {
  description = "Days job state (jobs/ in the output bucket) is kept. This is the idempotency window: a job id reused after its state is deleted runs, and is paid for, again."
  type        = number
  default     = 30

  validation {
    condition     = var.job_state_retention_days >= 2
    error_message = "job_state_retention_days must be at least 2: state must outlive every redelivery (24 h)."
  }
}

variable "image_retention_days" {
  description = "Days generated images are kept (0 keeps them forever)."
  type        = number
  default     = 0
}

variable "upload_retention_days" {
  description = "Days uploaded inputs are kept in the upload bucket (0 keeps them forever)."
  type        = number
  default     = 7
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/P/notificationChannels/N) that alerts go to."
  type        = list(string)
  default     = []
}

variable "alert_failure_ratio" {
  description = "Alert when more than this share of jobs failed over 15 minutes."
  type        = number
  default     = 0.2
}

variable "alert_spend_usd_per_hour" {
  description = "Alert when the estimated model spend over the last hour exceeds this many US dollars."
  type        = number
  default     = 20
}

variable "alert_oldest_request_seconds" {
  description = "Alert when the oldest unacknowledged request is older than this."
  type        = number
  default     = 1800
}

variable "force_destroy_buckets" {
  description = "Let terraform destroy delete buckets that still hold objects (test deployments only)."
  type        = bool
  default     = false
}

variable "batch_poll_minutes" {
  description = "Cloud Scheduler calls PollBatches every this many minutes to finish the jobs of done Gemini batches. A divisor of 60, so that the cron schedule is regular."
  type        = number
  default     = 5

  validation {
    condition     = contains([1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30], var.batch_poll_minutes)
    error_message = "batch_poll_minutes must divide 60 and be under 60: 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30."
  }
}

variable "job_output_prefixes" {
  description = "Further prefixes of the output bucket that jobs may name as output.prefix (such as [\"gallery/\"]), each ending in /. The functions may write images only under images/ and these: a job that names another prefix fails with a permission error."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.job_output_prefixes : can(regex("^[A-Za-z0-9._-]+/([A-Za-z0-9._-]+/)*$", p)) && !contains(["jobs/", "webhooks/", "spend/", "batches/", "caches/", "control/", "held/"], p)])
    error_message = "job_output_prefixes must be relative folders ending in / and must not be one of genimg's own (jobs/, webhooks/, spend/, batches/, caches/, control/, held/)."
  }
}

variable "batch_retention_days" {
  description = "Days batch-lane state and chunks (batches/ in the output bucket: prompts and inline images sent to the Batch API, and its answers) are kept. Longer than GENIMG_BATCH_MAX_AGE (30 h) times its resubmissions, so that no open batch loses its state."
  type        = number
  default     = 7

  validation {
    condition     = var.batch_retention_days >= 3
    error_message = "batch_retention_days must be at least 3: an open batch (30 h, resubmitted once) must keep its state."
  }
}

variable "cache_retention_days" {
  description = "Days context-cache records (caches/ in the output bucket) are kept; a deleted record only means the next job creates the cache again."
  type        = number
  default     = 7

  validation {
    condition     = var.cache_retention_days >= 1
    error_message = "cache_retention_days must be at least 1."
  }
}

variable "budget_hourly_usd" {
  description = "Spend guard (GENIMG_BUDGET_HOURLY_USD): estimated model spend in US dollars that all instances together may reach per clock hour; then jobs fail with a budget error and \"spend budget reached\" is logged (and alerted). 0 is unlimited."
  type        = number
  default     = 20

  validation {
    condition     = var.budget_hourly_usd >= 0
    error_message = "budget_hourly_usd must be 0 (unlimited) or more."
  }
}

variable "budget_daily_usd" {
  description = "Spend guard (GENIMG_BUDGET_DAILY_USD): the same per UTC day; 0 is unlimited. At least budget_hourly_usd when both are set."
  type        = number
  default     = 200

  validation {
    condition     = var.budget_daily_usd >= 0 && (var.budget_daily_usd == 0 || var.budget_hourly_usd <= var.budget_daily_usd)
    error_message = "budget_daily_usd must be 0 (unlimited) or at least budget_hourly_usd: genimg refuses to start otherwise."
  }
}

variable "calls_per_minute" {
  description = "Spend guard (GENIMG_CALLS_PER_MINUTE): model calls per minute across all instances; keep it under the project's model quota, so that genimg waits instead of collecting 429s. 0 is unlimited."
  type        = number
  default     = 60

  validation {
    condition     = var.calls_per_minute >= 0 && var.calls_per_minute <= 1000000 && floor(var.calls_per_minute) == var.calls_per_minute
    error_message = "calls_per_minute must be a whole number from 0 (unlimited) to 1000000."
  }
}

variable "paused" {
  description = "The kill switch (GENIMG_PAUSED): no model calls at all; jobs fail with a paused error. For an instant pause without a deploy, write gs://OUTPUT_BUCKET/control/paused instead (terraform/README.md, \"Rolling back\")."
  type        = bool
  default     = false
}

variable "deployer" {
  description = "The IAM member that applies this configuration (the Cloud Build deployer by default). Terraform lets it act as the genimg service accounts, and as nothing else."
  type        = string
  default     = ""
}

variable "legacy_service_agent_grants" {
  description = "Projects that enabled Pub/Sub before 8 April 2021 or Cloud Scheduler before 19 March 2019: their service agents need Service Account Token Creator on the trigger account to sign pushes and scheduled calls. Newer projects have it built in; leave false."
  type        = bool
  default     = false
}

variable "quota_retry" {
  description = "How long a job held for the model's per-day quota waits before PollBatches tries it again (GENIMG_QUOTA_RETRY). Such a quota resets once a day and a refused call costs nothing."
  type        = string
  default     = "30m"

  validation {
    condition     = can(regex("^([0-9]+[hms])+$", var.quota_retry))
    error_message = "quota_retry must be a Go duration such as 30m or 1h."
  }
}

variable "go_memory_limit_percent" {
  description = "The Go runtime's soft memory limit (GOMEMLIMIT) as a percentage of memory: the collector works harder as the heap nears it instead of letting it grow to twice the live data, which keeps bursts of images in flight under the instance's memory. 0 leaves GOMEMLIMIT unset."
  type        = number
  default     = 80

  validation {
    condition     = var.go_memory_limit_percent == 0 || (var.go_memory_limit_percent >= 50 && var.go_memory_limit_percent <= 95 && floor(var.go_memory_limit_percent) == var.go_memory_limit_percent)
    error_message = "go_memory_limit_percent must be 0 (unset) or a whole number from 50 to 95."
  }
}

variable "spool_bytes" {
  description = "Bytes of output images an instance holds in memory until Cloud Storage has them (GENIMG_SPOOL_BYTES): an image within it goes up in one request and, should that fail, is written later instead of paid for again; beyond it images stream unprotected; 0 turns it off. Counts against memory."
  type        = number
  default     = 16777216

  validation {
    condition     = var.spool_bytes >= 0 && var.spool_bytes <= 1073741824 && floor(var.spool_bytes) == var.spool_bytes
    error_message = "spool_bytes must be a whole number from 0 (off) to 1073741824 (1 GiB)."
  }
}

variable "callback_secret" {
  description = "The signing secret of completion callbacks (GENIMG_CALLBACK_SECRET, whsec_ followed by base64), needed only when callback_secret_version changes. Pass it as TF_VAR_callback_secret; write-only, never in state."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true
}

variable "callback_secret_version" {
  description = "Generation of the callback signing secret. 0: no callbacks; jobs that name a callback URL are rejected with a clear error. From 1: Terraform stores callback_secret in Secret Manager, every function that checks jobs and OnCompletion read it, and OnCompletion signs each callback; raise it to rotate."
  type        = number
  default     = 0

  validation {
    condition     = var.callback_secret_version >= 0 && floor(var.callback_secret_version) == var.callback_secret_version
    error_message = "callback_secret_version must be 0 (no callbacks) or a whole number from 1."
  }
}

variable "callback_allow" {
  description = "Callback hosts exempt from the address rules (GENIMG_CALLBACK_ALLOW): host names or addresses, without scheme, port or path. Only for receivers on private addresses that you trust."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.callback_allow : can(regex("^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+)$", h))])
    error_message = "callback_allow must list host names or addresses (IPv6 in brackets), without scheme, port or path."
  }
}

variable "callback_max_age" {
  description = "How long OnCompletion retries a callback (GENIMG_CALLBACK_MAX_AGE); then it logs \"callback dead-lettered\" (alerted) and stops. Pub/Sub itself gives up after 100 deliveries at up to 600 s apart (about 16 h) and moves the event to the callbacks dead-letter topic (alerted too), so a value above 16h only matters for events that were redelivered late."
  type        = string
  default     = "24h"

  validation {
    condition     = can(regex("^([0-9]+[hms])+$", var.callback_max_age))
    error_message = "callback_max_age must be a Go duration such as 24h or 90m."
  }
}

variable "callback_timeout" {
  description = "Deadline of one callback delivery (GENIMG_CALLBACK_TIMEOUT)."
  type        = string
  default     = "30s"

  validation {
    condition     = can(regex("^([0-9]+[hms])+$", var.callback_timeout))
    error_message = "callback_timeout must be a Go duration such as 30s."
  }
}

variable "trace_sample" {
  description = "Share of new traces kept in Cloud Trace (GENIMG_TRACE_SAMPLE), 0 to 1; a caller's sampled traceparent is always kept."
  type        = number
  default     = 0.1

  validation {
    condition     = var.trace_sample >= 0 && var.trace_sample <= 1
    error_message = "trace_sample must be from 0 to 1."
  }
}

variable "trace_exporter" {
  description = "Where spans go (GENIMG_TRACE_EXPORTER): cloudtrace (production; every runtime account may write traces) or none."
  type        = string
  default     = "cloudtrace"

  validation {
    condition     = contains(["cloudtrace", "none"], var.trace_exporter)
    error_message = "trace_exporter must be cloudtrace or none (memory is the local stack's)."
  }
}
