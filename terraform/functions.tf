# The three entry points of function.go. Entry point names must equal the
# names registered there (terraform_test.go checks it).

# Generate: the HTTP webhook. Invokers by IAM only, unless public_webhook.
resource "google_cloudfunctions2_function" "generate" {
  name     = local.generate_name
  location = var.region

  build_config {
    runtime         = "go126"
    entry_point     = "Generate"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count               = var.max_instances
    max_instance_request_concurrency = var.concurrency
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    timeout_seconds                  = var.function_timeout_seconds
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime.email
    environment_variables            = local.env

    dynamic "secret_environment_variables" {
      for_each = var.backend == "gemini-api" ? [var.gemini_api_key_version] : []
      content {
        key        = "GEMINI_API_KEY"
        project_id = var.project_id
        secret     = google_secret_manager_secret.gemini_api_key[0].secret_id
        version    = secret_environment_variables.value
      }
    }

    dynamic "secret_environment_variables" {
      for_each = var.webhook_secret_version != "" ? [var.webhook_secret_version] : []
      content {
        key        = "GENIMG_WEBHOOK_SECRET"
        project_id = var.project_id
        secret     = google_secret_manager_secret.webhook[0].secret_id
        version    = secret_environment_variables.value
      }
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.runtime_reads_gemini_api_key,
    google_secret_manager_secret_iam_member.runtime_reads_webhook_secret,
  ]
}

# OnMessage: requests, delivered by the push subscription in pubsub.tf (no
# event_trigger: see there why).
resource "google_cloudfunctions2_function" "on_message" {
  name     = local.on_message_name
  location = var.region

  build_config {
    runtime         = "go126"
    entry_point     = "OnMessage"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count               = var.max_instances
    max_instance_request_concurrency = var.concurrency
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    timeout_seconds                  = var.function_timeout_seconds
    # Pub/Sub push from this project counts as internal traffic.
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

# OnUpload: objects finalized in the upload bucket, through Eventarc
# (upload_via = eventarc). Retries stay on: GENIMG_MAX_EVENT_AGE (under 24 h)
# makes genimg record a failure before the platform drops the event.
resource "google_cloudfunctions2_function" "on_upload" {
  count = var.upload_via == "eventarc" ? 1 : 0

  name     = local.on_upload_name
  location = var.region

  build_config {
    runtime         = "go126"
    entry_point     = "OnUpload"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    max_instance_count               = var.max_instances
    max_instance_request_concurrency = var.concurrency
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    timeout_seconds                  = var.function_timeout_seconds
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime.email
    environment_variables            = local.env

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

  event_trigger {
    # A storage trigger must be in the bucket's region.
    trigger_region        = var.region
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.uploads.name
    }
  }

  depends_on = [
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.runtime_reads_gemini_api_key,
    google_project_iam_member.gcs_publishes_events,
    google_project_iam_member.trigger_receives_events,
  ]
}
