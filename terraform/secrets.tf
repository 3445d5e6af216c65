# Secret Manager holds the containers only. Values are added out of band
# (`gcloud secrets versions add`), so they never enter Terraform state, and
# the functions read a pinned version number.

resource "google_secret_manager_secret" "gemini_api_key" {
  count     = var.backend == "gemini-api" ? 1 : 0
  secret_id = "${var.name_prefix}-gemini-api-key"

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret" "webhook" {
  count     = var.webhook_secret_version != "" ? 1 : 0
  secret_id = "${var.name_prefix}-webhook-secret"

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "runtime_reads_gemini_api_key" {
  count     = var.backend == "gemini-api" ? 1 : 0
  secret_id = google_secret_manager_secret.gemini_api_key[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}

resource "google_secret_manager_secret_iam_member" "runtime_reads_webhook_secret" {
  count     = var.webhook_secret_version != "" ? 1 : 0
  secret_id = google_secret_manager_secret.webhook[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}
