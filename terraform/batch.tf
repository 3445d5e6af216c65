# The batch lane and held jobs: PollBatches (functions.tf) checks the open
# Gemini Batch API batches and finishes the jobs of those that are done,
# then resumes the held jobs (held/ in the output bucket) whose cause has
# cleared by putting them back on the requests topic. Cloud Scheduler calls
# it every batch_poll_minutes, signed as the trigger account, so a held job
# resumes within batch_poll_minutes of its cause clearing; any instance may
# poll, since all of this state lives in the output bucket.

resource "google_cloud_scheduler_job" "poll_batches" {
  name        = local.poll_batches_name
  project     = var.project_id
  region      = var.region
  description = "Finish the jobs of done Gemini batches and resume held jobs (genimg PollBatches)."
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

  depends_on = [google_cloud_run_v2_service_iam_member.trigger_invokes_poll_batches]
}
