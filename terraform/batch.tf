# The batch lane: PollBatches (function.go) checks the open Gemini Batch API
# batches and finishes the jobs of those that are done. Cloud Scheduler
# calls it every batch_poll_minutes, signed as the trigger identity; any
# instance may poll, since batch state lives in the output bucket.

locals {
  poll_batches_name = "${var.name_prefix}-poll-batches"
  scheduler_agent   = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
}

resource "google_cloudfunctions2_function" "poll_batches" {
  name     = local.poll_batches_name
  location = var.region

  build_config {
    runtime         = "go126"
    entry_point     = "PollBatches"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    # One poll at a time is enough; a second one meanwhile only contends
    # for the same chunks' state.
    max_instance_count               = 1
    max_instance_request_concurrency = 1
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    timeout_seconds                  = var.function_timeout_seconds
    # Cloud Scheduler in this project counts as internal traffic.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime.email
    environment_variables          = local.env

    dynamic "secret_environment_variables" {
      for_each = var.backend == "gemini-api" ? [var.gemini_api_key_version] : []
      content {
        key        = "GEMINI_API_KEY"
        project_id = var.project_id
        secret     = google_secret_manager_secret.gemini_api_key[0].secret_id
        version    = secret_environment_variables.value
      }
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.runtime_reads_gemini_api_key,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_poll_batches" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.poll_batches.service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# The Cloud Scheduler service agent mints the job's OIDC tokens as the
# trigger identity.
resource "google_service_account_iam_member" "scheduler_signs_as_trigger" {
  service_account_id = google_service_account.trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.scheduler_agent
}

resource "google_cloud_scheduler_job" "poll_batches" {
  name        = local.poll_batches_name
  project     = var.project_id
  region      = var.region
  description = "Finish the jobs of done Gemini batches (genimg PollBatches)."
  schedule    = "*/${var.batch_poll_minutes} * * * *"
  time_zone   = "Etc/UTC"
  # The poll stops itself before the function's timeout; wait that long.
  attempt_deadline = "${var.function_timeout_seconds}s"

  # No retries: the next scheduled poll picks up whatever this one left.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.poll_batches.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.trigger.email
      audience              = google_cloudfunctions2_function.poll_batches.service_config[0].uri
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.trigger_invokes_poll_batches,
    google_service_account_iam_member.scheduler_signs_as_trigger,
  ]
}
