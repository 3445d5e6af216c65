# Uploads: objects here become jobs (README, "Upload").
resource "google_storage_bucket" "uploads" {
  name                        = local.upload_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  depends_on = [time_sleep.apis]

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

# Outputs: images, job state, and genimg's own records, by prefix (main.tf,
# local.output_access, lists them). Each function role may touch only its
# prefixes (iam.tf).
resource "google_storage_bucket" "output" {
  name                        = local.output_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets

  # One rule per prefix genimg writes (main.tf, local.retention). Job state
  # is the idempotency window: while jobs/<id>/ exists, the same id never
  # pays for a second model call; once this rule deletes it, a resubmitted
  # id runs again. Replay records of signed webhook calls only need to
  # outlive the signature tolerance (minutes), spend ledgers their day.
  dynamic "lifecycle_rule" {
    for_each = { for prefix, days in local.retention : prefix => days if days > 0 }
    content {
      action {
        type = "Delete"
      }
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [lifecycle_rule.key]
      }
    }
  }

  depends_on = [time_sleep.apis]
}

# Function source archives, one object per content hash.
resource "google_storage_bucket" "source" {
  name                        = local.source_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  # No lifecycle rule: Terraform deletes an archive once the functions have
  # moved to the next one, and a rule would make the next plan re-upload it.
  depends_on = [time_sleep.apis]
}

# The module root (package genimg and everything it imports), without what
# the build does not need.
data "archive_file" "source" {
  type        = "zip"
  source_dir  = "${path.module}/.."
  output_path = "${path.module}/.build/genimg-source.zip"
  # Fixed permissions: otherwise the zip (and its hash, and so every
  # function) differs between a laptop's umask and Cloud Build's.
  output_file_mode = "0644"
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

  lifecycle {
    # The functions still point at the old archive while they move to the
    # new one: upload the new one first.
    create_before_destroy = true
  }
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
