# Plans of the whole configuration against mocked providers: no project, no
# network. They catch what only a plan shows (for_each keys unknown at plan,
# conditional types, preconditions), in each shape of the deployment:
#   terraform -chdir=terraform test
mock_provider "google" {}
mock_provider "archive" {}
mock_provider "time" {}

variables {
  project_id = "example-project"
}

run "first_apply_without_the_key_is_refused" {
  command = plan

  expect_failures = [google_secret_manager_secret_version.gemini_api_key]
}

run "first_apply" {
  command = plan

  variables {
    gemini_api_key = "not-a-real-key"
    deployer       = "serviceAccount:genimg-deployer@example-project.iam.gserviceaccount.com"
  }

  assert {
    condition     = length(google_service_account.runtime) == 4
    error_message = "one runtime account per function role"
  }

  assert {
    condition     = alltrue([for f in [google_cloudfunctions2_function.generate, google_cloudfunctions2_function.on_message, google_cloudfunctions2_function.poll_batches, google_cloudfunctions2_function.on_completion] : f.build_config[0].runtime == "go126"])
    error_message = "every function on go126"
  }

  assert {
    condition     = length([for s in google_cloudfunctions2_function.generate.service_config[0].secret_environment_variables : s if s.key == "GEMINI_API_KEY"]) == 0 && google_cloudfunctions2_function.generate.service_config[0].environment_variables["GENIMG_ROLE"] == "front"
    error_message = "the front door holds no model key and runs as GENIMG_ROLE=front"
  }

  assert {
    condition     = length([for s in google_cloudfunctions2_function.on_message.service_config[0].secret_environment_variables : s if s.key == "GEMINI_API_KEY"]) == 1 && length([for s in google_cloudfunctions2_function.poll_batches.service_config[0].secret_environment_variables : s if s.key == "GEMINI_API_KEY"]) == 1
    error_message = "the functions that run jobs hold the model key"
  }

  assert {
    condition     = !contains(keys(google_secret_manager_secret_iam_member.reads_gemini_api_key), "front") && length(google_secret_manager_secret_iam_member.reads_gemini_api_key) == 2
    error_message = "only the worker and the poller may read the model key"
  }

  assert {
    condition     = google_pubsub_subscription.callbacks.filter == "attributes.genimg-callback = \"true\"" && google_pubsub_subscription.callbacks.dead_letter_policy[0].max_delivery_attempts == 100
    error_message = "callbacks: only records that name one, dead letters after 100 deliveries"
  }

  assert {
    condition     = length(google_secret_manager_secret.callback) == 0 && length(google_cloudfunctions2_function.on_completion.service_config[0].secret_environment_variables) == 0
    error_message = "no callback secret unless callback_secret_version is set"
  }

  assert {
    condition     = length(google_project_iam_member.runtime_writes_traces) == 4 && google_cloudfunctions2_function.on_message.service_config[0].environment_variables["GENIMG_TRACE_EXPORTER"] == "cloudtrace"
    error_message = "every runtime account writes spans to Cloud Trace"
  }

  assert {
    condition     = google_pubsub_subscription.requests.dead_letter_policy[0].max_delivery_attempts == 100
    error_message = "dead-letter patience"
  }

  assert {
    condition     = length(google_service_account_iam_member.deployer_acts_as) == 6
    error_message = "the deployer acts as the four runtime accounts, the trigger and the build account"
  }

  assert {
    condition     = google_cloudfunctions2_function.generate.service_config[0].environment_variables["GENIMG_BUDGET_HOURLY_USD"] == "20"
    error_message = "the spend guard reaches the functions"
  }
}

run "vertex_notifications_public_webhook_old_project" {
  command = plan

  variables {
    backend                     = "vertex"
    upload_via                  = "notification"
    upload_prefixes             = ["watercolor/", "sketch/"]
    webhook_secret              = "whsec_bm90LWEtcmVhbC1zZWNyZXQ="
    webhook_secret_version      = 1
    public_webhook              = true
    legacy_service_agent_grants = true
    http_invokers               = ["user:alice@example.com"]
    client_impersonators        = ["user:alice@example.com"]
    job_output_prefixes         = ["gallery/"]
  }

  assert {
    condition     = length(google_cloudfunctions2_function.on_upload) == 0 && length(google_storage_notification.uploads) == 2
    error_message = "notifications instead of OnUpload"
  }

  assert {
    condition     = length(google_project_iam_member.runtime_calls_vertex) == 2 && !contains(keys(google_project_iam_member.runtime_calls_vertex), "front") && length(google_secret_manager_secret.gemini_api_key) == 0
    error_message = "Vertex AI through the custom role, no API key"
  }

  assert {
    condition     = length(google_service_account_iam_member.agents_sign_as_trigger) == 2
    error_message = "legacy token-creator grants"
  }
}

run "public_webhook_without_signatures_is_refused" {
  command = plan

  variables {
    gemini_api_key = "not-a-real-key"
    public_webhook = true
  }

  expect_failures = [var.public_webhook]
}

# Cloud Build's plans: the key was applied at version 1 (the annotation on
# the secret says so), and no key is given.
run "later_plan_without_the_key" {
  command = plan

  override_data {
    target = data.google_secret_manager_secrets.applied
    values = {
      secrets = [{ secret_id = "genimg-gemini-api-key", annotations = { genimg-version = "1" } }]
    }
  }
}

# A rotation (version 2) without the new key is refused at plan.
run "rotation_without_the_key_is_refused" {
  command = plan

  variables {
    gemini_api_key_version = 2
  }

  override_data {
    target = data.google_secret_manager_secrets.applied
    values = {
      secrets = [{ secret_id = "genimg-gemini-api-key", annotations = { genimg-version = "1" } }]
    }
  }

  expect_failures = [google_secret_manager_secret_version.gemini_api_key]
}

# Callbacks on: the secret goes to every function that checks jobs and to
# OnCompletion; a plan without it at a new version is refused.
run "callbacks" {
  command = plan

  variables {
    gemini_api_key          = "not-a-real-key"
    callback_secret         = "whsec_bm90LWEtcmVhbC1zZWNyZXQ="
    callback_secret_version = 1
    callback_allow          = ["hooks.internal.example"]
    trace_exporter          = "none"
  }

  assert {
    condition = alltrue([for f in [google_cloudfunctions2_function.generate, google_cloudfunctions2_function.on_message, google_cloudfunctions2_function.on_upload[0], google_cloudfunctions2_function.poll_batches, google_cloudfunctions2_function.on_completion] :
    length([for s in f.service_config[0].secret_environment_variables : s if s.key == "GENIMG_CALLBACK_SECRET"]) == 1])
    error_message = "every function that checks jobs, and OnCompletion, mounts the callback secret"
  }

  assert {
    condition     = length(google_secret_manager_secret_iam_member.reads_callback_secret) == 4 && google_cloudfunctions2_function.generate.service_config[0].environment_variables["GENIMG_CALLBACK_ALLOW"] == "hooks.internal.example"
    error_message = "the four runtime accounts read the callback secret; the allow-list reaches the functions"
  }

  assert {
    condition     = length(google_project_iam_member.runtime_writes_traces) == 0
    error_message = "no Cloud Trace grants with trace_exporter = none"
  }
}

run "callbacks_without_the_secret_are_refused" {
  command = plan

  variables {
    gemini_api_key          = "not-a-real-key"
    callback_secret_version = 1
  }

  expect_failures = [google_secret_manager_secret_version.callback]
}
