# The five entry points of function.go. Entry point names must equal the
# names registered there (terraform_test.go checks it, and that each is
# deployed). Every function waits for IAM to settle (time_sleep.iam) before
# its first build. GENIMG_ROLE says what each deployment does: only "all"
# builds a model client and so needs the model key; Generate ("front") and
# OnCompletion ("callback") start without one.

locals {
  # The model key, for the roles that call the model (secrets.tf).
  gemini_api_key = var.backend == "gemini-api" ? [{
    secret  = google_secret_manager_secret.gemini_api_key[0].secret_id
    version = google_secret_manager_secret_version.gemini_api_key[0].version
  }] : []

  # The callback signing secret, for every function that checks jobs and
  # for OnCompletion (secrets.tf).
  callback_secret = var.callback_secret_version > 0 ? [{
    secret  = google_secret_manager_secret.callback[0].secret_id
    version = google_secret_manager_secret_version.callback[0].version
  }] : []
}

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
    service_account_email            = google_service_account.runtime["front"].email
    # No model key: the front door never calls the model. It queues jobs
    # and HTTP batches for OnMessage (terraform_test.go checks that the
    # internet-facing function never mounts the key).
    environment_variables = merge(local.env, { GENIMG_ROLE = "front" })

    dynamic "secret_environment_variables" {
      for_each = local.callback_secret
      content {
        key        = "GENIMG_CALLBACK_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }

    dynamic "secret_environment_variables" {
      for_each = var.webhook_secret_version > 0 ? [google_secret_manager_secret_version.webhook[0].version] : []
      content {
        key        = "GENIMG_WEBHOOK_SECRET"
        project_id = var.project_id
        secret     = google_secret_manager_secret.webhook[0].secret_id
        version    = secret_environment_variables.value
      }
    }
  }

  depends_on = [time_sleep.iam]
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
    service_account_email          = google_service_account.runtime["worker"].email
    environment_variables          = merge(local.env, { GENIMG_ROLE = "all" })

    dynamic "secret_environment_variables" {
      for_each = local.gemini_api_key
      content {
        key        = "GEMINI_API_KEY"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }

    dynamic "secret_environment_variables" {
      for_each = local.callback_secret
      content {
        key        = "GENIMG_CALLBACK_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  depends_on = [time_sleep.iam]
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
    service_account_email            = google_service_account.runtime["worker"].email
    environment_variables            = merge(local.env, { GENIMG_ROLE = "all" })

    dynamic "secret_environment_variables" {
      for_each = local.gemini_api_key
      content {
        key        = "GEMINI_API_KEY"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }

    dynamic "secret_environment_variables" {
      for_each = local.callback_secret
      content {
        key        = "GENIMG_CALLBACK_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
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

  depends_on = [time_sleep.iam]
}

# PollBatches: the batch lane's poller, called by Cloud Scheduler (batch.tf).
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
    service_account_email          = google_service_account.runtime["poller"].email
    environment_variables          = merge(local.env, { GENIMG_ROLE = "all" })

    dynamic "secret_environment_variables" {
      for_each = local.gemini_api_key
      content {
        key        = "GEMINI_API_KEY"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }

    dynamic "secret_environment_variables" {
      for_each = local.callback_secret
      content {
        key        = "GENIMG_CALLBACK_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  depends_on = [time_sleep.iam]
}

# OnCompletion: completion events of records that name a callback,
# delivered by the push subscription in pubsub.tf, posted signed to the
# callback URL. It calls no model and touches no bucket.
resource "google_cloudfunctions2_function" "on_completion" {
  name     = local.on_completion_name
  location = var.region

  build_config {
    runtime         = "go126"
    entry_point     = "OnCompletion"
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
    # Pub/Sub push from this project counts as internal traffic; the
    # callbacks themselves go out to the internet.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime["callback"].email
    environment_variables          = merge(local.env, { GENIMG_ROLE = "callback" })

    dynamic "secret_environment_variables" {
      for_each = local.callback_secret
      content {
        key        = "GENIMG_CALLBACK_SECRET"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  depends_on = [time_sleep.iam]
}
