data "google_project" "this" {
  project_id = var.project_id
}

# The Cloud Storage service agent publishes upload events (Eventarc) and
# bucket notifications.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  upload_bucket = "${var.project_id}-${var.name_prefix}-uploads"
  output_bucket = "${var.project_id}-${var.name_prefix}-outputs"
  source_bucket = "${var.project_id}-${var.name_prefix}-source"

  # Function names are also the names of their Cloud Run services, which the
  # log filters and the invoker bindings use.
  generate_name   = "${var.name_prefix}-generate"
  on_message_name = "${var.name_prefix}-on-message"
  on_upload_name  = "${var.name_prefix}-on-upload"

  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  vertex_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-aiplatform.iam.gserviceaccount.com"

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
      GENIMG_OUTPUT_PREFIX        = "images/"
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
    },
    var.backend == "vertex" ? {
      GOOGLE_GENAI_USE_VERTEXAI = "true"
      GOOGLE_CLOUD_LOCATION     = var.vertex_location
    } : {},
  )
}
