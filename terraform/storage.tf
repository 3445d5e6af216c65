# Uploads: objects here become jobs (README, "Upload").
resource "google_storage_bucket" "uploads" {
  name                        = local.upload_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  dynamic "lifecycle_rule" {
    for_each = var.upload_retention_days > 0 ? [var.upload_retention_days] : []
    content {
      action {
        type = "Delete"
      }
      condition {
        age = lifecycle_rule.value
      }
    }
  }
}

# Outputs: images under images/, job state under jobs/<jobId>/ (the claim,
# result.json, and staged HTTP inputs under jobs/<jobId>/inputs/), webhook
# replay records under webhooks/, spend ledgers under spend/, context cache
# records under caches/ and batch state under batches/.
resource "google_storage_bucket" "output" {
  name                        = local.output_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  # Job state is the idempotency window: while jobs/<id>/ exists, the same
  # id never pays for a second model call; once this rule deletes it, a
  # resubmitted id runs again.
  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      age            = var.job_state_retention_days
      matches_prefix = ["jobs/"]
    }
  }

  # Replay-protection records of signed webhook calls only need to outlive
  # the signature tolerance (minutes); spend ledgers their day.
  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      age            = 1
      matches_prefix = ["webhooks/"]
    }
  }

  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      age            = 2
      matches_prefix = ["spend/"]
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.image_retention_days > 0 ? [var.image_retention_days] : []
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["images/"]
      }
    }
  }
}

# Function source archives, one object per content hash.
resource "google_storage_bucket" "source" {
  name                        = local.source_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
}

# The module root (package genimg and everything it imports), without what
# the build does not need.
data "archive_file" "source" {
  type        = "zip"
  source_dir  = "${path.module}/.."
  output_path = "${path.module}/.build/genimg-source.zip"
  excludes = [
    ".git/**",
    ".ci/**",
    "terraform/**",
    "testdata/**",
    "**/testdata/**",
    "**/*_test.go",
    "genimg-out/**",
  ]
}

# Named by the zip's hash: Cloud Functions redeploys only when the source
# object's name changes, so every change of the code gets a new name.
resource "google_storage_bucket_object" "source" {
  name   = "genimg-${data.archive_file.source.output_sha256}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

# Uploads routed as Cloud Storage notifications onto the requests topic
# (upload_via = notification): prefix-filtered, so only the folders that
# hold jobs reach genimg, and behind the push subscription's dead-letter
# policy. OnMessage treats an OBJECT_FINALIZE notification exactly like an
# upload.
resource "google_storage_notification" "uploads" {
  for_each = var.upload_via == "notification" ? toset(var.upload_prefixes) : toset([])

  bucket             = google_storage_bucket.uploads.name
  topic              = google_pubsub_topic.requests.id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = each.value == "" ? null : each.value

  depends_on = [google_pubsub_topic_iam_member.gcs_publishes_requests]
}
