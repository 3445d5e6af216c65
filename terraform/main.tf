data "google_project" "this" {
  project_id = var.project_id

  depends_on = [google_project_service.this]
}

# The Cloud Storage service agent publishes upload events (Eventarc) and
# bucket notifications. Reading it also creates it on a new project (the
# API behind this data source makes the agent on first call).
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [time_sleep.apis]
}

locals {
  upload_bucket = "${var.project_id}-${var.name_prefix}-uploads"
  output_bucket = "${var.project_id}-${var.name_prefix}-outputs"
  source_bucket = "${var.project_id}-${var.name_prefix}-source"

  # Function names are also the names of their Cloud Run services, which the
  # log filters and the invoker bindings use.
  generate_name      = "${var.name_prefix}-generate"
  on_message_name    = "${var.name_prefix}-on-message"
  on_upload_name     = "${var.name_prefix}-on-upload"
  poll_batches_name  = "${var.name_prefix}-poll-batches"
  on_completion_name = "${var.name_prefix}-on-completion"

  # Service agents, by the names Google gives them. The Pub/Sub and Vertex AI
  # agents must exist before the first apply: README.md's bootstrap creates
  # them (`gcloud beta services identity create`), because the google
  # provider (unlike google-beta) has no google_project_service_identity.
  pubsub_agent    = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  vertex_agent    = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
  scheduler_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
  gcs_agent       = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"

  # ---- the output bucket, by prefix ----
  #
  # What genimg writes where (the Go packages that own each prefix):
  #   jobs/      job state: claims, result.json, staged inputs (storage/, batch/)
  #   images/    generated images, GENIMG_OUTPUT_PREFIX (storage/)
  #   webhooks/  replay records of signed calls (webhook/)
  #   spend/     spend ledgers, one object per instance and hour (spend/)
  #   batches/   batch lane state and JSONL chunks (batch/)
  #   caches/    context-cache records (gemini/cache.go)
  #   control/   the kill switch control/paused, written by people (spend/)
  #   held/      markers of held jobs, for PollBatches to resume (storage/)
  image_prefix = "images/"

  # Each function role gets only its prefixes (IAM conditions: the output
  # bucket is shared). Generate never calls the model (GENIMG_ROLE=front):
  # it queues jobs and HTTP batches under jobs/, records webhook ids, and
  # only reads images (streams and waits report them). Workers hold jobs
  # under held/; the poller resumes them (lists, reads and deletes the
  # markers). OnCompletion (callback) touches no bucket at all.
  output_access = {
    front = {
      write = ["jobs/", "webhooks/"]
      read  = concat([local.image_prefix, "control/"], var.job_output_prefixes)
    }
    worker = {
      write = concat(["jobs/", local.image_prefix, "spend/", "batches/", "caches/", "held/"], var.job_output_prefixes)
      read  = ["control/"]
    }
    poller = {
      write = concat(["jobs/", local.image_prefix, "spend/", "batches/", "caches/", "held/"], var.job_output_prefixes)
      read  = ["control/"]
    }
  }

  # Days objects under each prefix are kept; 0 keeps them (no rule).
  # control/ is kept on purpose: the kill switch must stay until a person
  # lifts it.
  retention = merge(
    {
      "jobs/"              = var.job_state_retention_days
      (local.image_prefix) = var.image_retention_days
      "webhooks/"          = 1
      "spend/"             = 2
      "batches/"           = var.batch_retention_days
      "caches/"            = var.cache_retention_days
      "control/"           = 0
      # A held job ends (runs, or fails as too old) within
      # GENIMG_MAX_EVENT_AGE, under 24 h: a marker older than that is stale.
      "held/" = 2
    },
    { for p in var.job_output_prefixes : p => var.image_retention_days },
  )

  # An IAM condition that admits objects under the given prefixes and
  # listings of them (a list request is checked against the bucket, so it
  # needs the objectListPrefix attribute, not resource.name).
  output_objects = "projects/_/buckets/${local.output_bucket}/objects/"
  prefix_condition = { for role, access in local.output_access : role => {
    write = join(" || ", flatten([for p in access.write : [
      "resource.name.startsWith(\"${local.output_objects}${p}\")",
      "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${p}\")",
    ]]))
    read = join(" || ", flatten([for p in access.read : [
      "resource.name.startsWith(\"${local.output_objects}${p}\")",
      "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${p}\")",
    ]]))
  } }

  # Buckets jobs may read gs:// inputs from, besides the output bucket (its
  # staged HTTP inputs under jobs/<id>/inputs/ are always readable).
  input_buckets = distinct(concat([local.upload_bucket], var.input_buckets))

  rules = [for r in var.upload_rules : merge({ bucket = local.upload_bucket }, r)]

  # Every variable here is one config.LoadConfig reads; terraform_test.go
  # checks that, so a typo cannot silently fall back to a default.
  env = merge(
    {
      GOOGLE_CLOUD_PROJECT        = var.project_id
      GENIMG_OUTPUT_BUCKET        = google_storage_bucket.output.name
      GENIMG_OUTPUT_PREFIX        = local.image_prefix
      GENIMG_INPUT_BUCKETS        = join(",", local.input_buckets)
      GENIMG_UPLOAD_BUCKETS       = google_storage_bucket.uploads.name
      GENIMG_RULES                = jsonencode(local.rules)
      GENIMG_REQUESTS_TOPIC       = google_pubsub_topic.requests.name
      GENIMG_COMPLETION_TOPIC     = google_pubsub_topic.completions.name
      GENIMG_EVENT_SOURCE         = "//genimg.dev/projects/${var.project_id}/deployments/${var.name_prefix}"
      GENIMG_MODEL                = var.model
      GENIMG_MODELS               = join(",", length(var.models) > 0 ? var.models : [var.model])
      GENIMG_FUNCTION_TIMEOUT     = "${var.function_timeout_seconds}s"
      GENIMG_MODEL_TIMEOUT        = "${var.model_timeout_seconds}s"
      GENIMG_RETRY_BUDGET         = "${min(180, var.function_timeout_seconds - 30)}s"
      GENIMG_HTTP_WAIT            = "${var.http_wait_seconds}s"
      GENIMG_LEASE                = "${var.function_timeout_seconds + 60}s"
      GENIMG_MAX_EVENT_AGE        = var.max_event_age
      GENIMG_MAX_IMAGE_BYTES      = tostring(var.max_image_bytes)
      GENIMG_MAX_REQUEST_BYTES    = tostring(var.max_request_bytes)
      GENIMG_MAX_CONCURRENT_CALLS = tostring(var.max_concurrent_calls)
      # The spend guard (README, "Spending and authentication"): shared by
      # every instance through the ledgers under spend/.
      GENIMG_BUDGET_HOURLY_USD = tostring(var.budget_hourly_usd)
      GENIMG_BUDGET_DAILY_USD  = tostring(var.budget_daily_usd)
      GENIMG_CALLS_PER_MINUTE  = tostring(var.calls_per_minute)
      GENIMG_PAUSED            = tostring(var.paused)
      GENIMG_QUOTA_RETRY       = var.quota_retry
      GENIMG_SPOOL_BYTES       = tostring(var.spool_bytes)
      # Callbacks (README, "Callbacks and tracing"): every function that
      # checks jobs checks their callback URLs the same way.
      GENIMG_CALLBACK_ALLOW   = join(",", var.callback_allow)
      GENIMG_CALLBACK_MAX_AGE = var.callback_max_age
      GENIMG_CALLBACK_TIMEOUT = var.callback_timeout
      # Spans go to Cloud Trace as each runtime account (cloudtrace.agent).
      GENIMG_TRACE_SAMPLE   = tostring(var.trace_sample)
      GENIMG_TRACE_EXPORTER = var.trace_exporter
    },
    var.backend == "vertex" ? {
      GOOGLE_GENAI_USE_VERTEXAI = "true"
      GOOGLE_CLOUD_LOCATION     = var.vertex_location
    } : {},
    # The Go runtime's, not LoadConfig's: one scheduler thread per vCPU.
    # In a container Go takes at least two, and on an instance of one vCPU
    # the second only hands work back and forth: about 15 % more CPU per job
    # (BENCHMARKS.md, "side by side").
    {
      GOMAXPROCS = tostring(max(1, ceil(tonumber(var.cpu))))
    },
    # The Go runtime's too: a share of the instance's memory.
    var.go_memory_limit_percent > 0 ? {
      GOMEMLIMIT = "${floor(local.memory_mib * var.go_memory_limit_percent / 100)}MiB"
    } : {},
  )

  # var.memory (512Mi, 1Gi) in MiB.
  memory_parts = regex("^([0-9]+)(Mi|Gi)$", var.memory)
  memory_mib   = tonumber(local.memory_parts[0]) * (local.memory_parts[1] == "Gi" ? 1024 : 1)
}
