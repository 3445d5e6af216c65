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

variable "gemini_api_key_version" {
  description = "Version number of the Gemini API key secret (backend = gemini-api). Add the value out of band with `gcloud secrets versions add`; it never enters Terraform state."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[1-9][0-9]*$", var.gemini_api_key_version))
    error_message = "gemini_api_key_version must be a version number such as 1: a pinned version, so that a new key is a deliberate deploy."
  }
}

variable "webhook_secret_version" {
  description = "Version number of the Standard Webhooks signing secret. Empty: Generate does not check signatures and callers are authenticated by IAM alone. Set: Terraform creates the secret (value added out of band) and HTTP callers must sign."
  type        = string
  default     = ""

  validation {
    condition     = var.webhook_secret_version == "" || can(regex("^[1-9][0-9]*$", var.webhook_secret_version))
    error_message = "webhook_secret_version must be empty or a version number such as 1."
  }
}

variable "public_webhook" {
  description = "Let anyone on the internet call Generate (allUsers as invoker). Only with webhook_secret_version set: then every request must carry a valid signature."
  type        = bool
  default     = false

  validation {
    condition     = !var.public_webhook || var.webhook_secret_version != ""
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
  default     = 33554432

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
  description = "vCPUs per instance (concurrency above 1 needs at least 1)."
  type        = string
  default     = "1"
}

variable "dead_letter_after" {
  description = "Deliveries of a request message before it moves to the dead-letter topic (5-100)."
  type        = number
  default     = 10

  validation {
    condition     = var.dead_letter_after >= 5 && var.dead_letter_after <= 100
    error_message = "dead_letter_after must be from 5 to 100 (Pub/Sub's limits)."
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
