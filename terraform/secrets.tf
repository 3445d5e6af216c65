# Secret Manager holds the model key and the webhook signing secret. The
# values reach Secret Manager through write-only arguments (secret_data_wo):
# Terraform sends them on create and never stores them in state or in a
# plan. They are only needed when the version variable changes (the first
# apply, a rotation): every other plan, such as Cloud Build's, runs without
# them.

resource "google_secret_manager_secret" "gemini_api_key" {
  count     = var.backend == "gemini-api" ? 1 : 0
  secret_id = "${var.name_prefix}-gemini-api-key"

  replication {
    auto {}
  }

  depends_on = [time_sleep.apis]
}

resource "google_secret_manager_secret_version" "gemini_api_key" {
  count  = var.backend == "gemini-api" ? 1 : 0
  secret = google_secret_manager_secret.gemini_api_key[0].id

  secret_data_wo         = var.gemini_api_key
  secret_data_wo_version = var.gemini_api_key_version
  # A rotation replaces this version; the old one is disabled, not
  # destroyed, so that a rollback can enable it again.
  deletion_policy = "DISABLE"

  lifecycle {
    # Functions move to the new version before the old one is disabled.
    create_before_destroy = true
  }
}

resource "google_secret_manager_secret" "webhook" {
  count     = var.webhook_secret_version > 0 ? 1 : 0
  secret_id = "${var.name_prefix}-webhook-secret"

  replication {
    auto {}
  }

  depends_on = [time_sleep.apis]
}

resource "google_secret_manager_secret_version" "webhook" {
  count  = var.webhook_secret_version > 0 ? 1 : 0
  secret = google_secret_manager_secret.webhook[0].id

  secret_data_wo         = var.webhook_secret
  secret_data_wo_version = var.webhook_secret_version
  deletion_policy        = "DISABLE"

  lifecycle {
    create_before_destroy = true
  }
}

# Every role that calls the model reads the key. Generate is among them for
# now: it submits HTTP batches to the Batch API itself (batch.go:
# submitBatch) and genimg does not start without a key (gemini.New). Once
# Generate hands batches to OnMessage, drop "front" here and in
# functions.tf.
resource "google_secret_manager_secret_iam_member" "reads_gemini_api_key" {
  for_each  = var.backend == "gemini-api" ? toset(["front", "worker", "poller"]) : toset([])
  secret_id = google_secret_manager_secret.gemini_api_key[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.key].member
}

# Only Generate checks signatures.
resource "google_secret_manager_secret_iam_member" "front_reads_webhook_secret" {
  count     = var.webhook_secret_version > 0 ? 1 : 0
  secret_id = google_secret_manager_secret.webhook[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["front"].member
}
