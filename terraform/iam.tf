# Identities, each with only what its part needs.

# runtime: what the three functions run as.
resource "google_service_account" "runtime" {
  account_id   = "${var.name_prefix}-runtime"
  display_name = "genimg functions (runtime)"
}

# trigger: what Eventarc and the push subscription invoke the functions as.
resource "google_service_account" "trigger" {
  account_id   = "${var.name_prefix}-trigger"
  display_name = "genimg triggers (event delivery)"
}

# build: what Cloud Build builds the function images as.
resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "genimg function builds"
}

# client: an identity for callers of Generate (the genimg CLI impersonates it;
# person accounts cannot mint ID tokens for a function themselves).
resource "google_service_account" "client" {
  account_id   = "${var.name_prefix}-client"
  display_name = "genimg HTTP callers"
}

# ---- runtime ----

# Reads job inputs: the upload bucket and any extra input buckets.
resource "google_storage_bucket_iam_member" "runtime_reads_inputs" {
  for_each = toset(local.input_buckets)
  bucket   = each.value
  role     = "roles/storage.objectViewer"
  member   = google_service_account.runtime.member

  depends_on = [google_storage_bucket.uploads]
}

# Creates images and job state in the output bucket, reads state back, and
# replaces an expired claim (a generation-matched overwrite needs delete):
# objectUser, on this bucket only.
resource "google_storage_bucket_iam_member" "runtime_writes_outputs" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectUser"
  member = google_service_account.runtime.member
}

# Generate queues HTTP jobs on the requests topic.
resource "google_pubsub_topic_iam_member" "runtime_publishes_requests" {
  topic  = google_pubsub_topic.requests.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.runtime.member
}

resource "google_pubsub_topic_iam_member" "runtime_publishes_completions" {
  topic  = google_pubsub_topic.completions.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.runtime.member
}

# Vertex AI backend: calls the model with the runtime identity.
resource "google_project_iam_member" "runtime_calls_vertex" {
  count   = var.backend == "vertex" ? 1 : 0
  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.runtime.member
}

# Vertex AI reads gs:// inputs itself, as its service agent.
resource "google_storage_bucket_iam_member" "vertex_reads_inputs" {
  for_each = var.backend == "vertex" ? toset(concat(local.input_buckets, [local.output_bucket])) : toset([])
  bucket   = each.value
  role     = "roles/storage.objectViewer"
  member   = local.vertex_agent

  depends_on = [google_storage_bucket.uploads, google_storage_bucket.output]
}

# ---- trigger ----

resource "google_project_iam_member" "trigger_receives_events" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.trigger.member
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_on_message" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.on_message.service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_on_upload" {
  count    = var.upload_via == "eventarc" ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.on_upload[0].service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# The Pub/Sub service agent mints the push subscription's OIDC tokens as the
# trigger identity (needed in projects that enabled Pub/Sub before 2021).
resource "google_service_account_iam_member" "pubsub_signs_as_trigger" {
  service_account_id = google_service_account.trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# Dead-lettering: the Pub/Sub service agent publishes to the dead-letter
# topic and acknowledges on the requests subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_forwards" {
  subscription = google_pubsub_subscription.requests.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# ---- Cloud Storage service agent ----

# Storage triggers publish through Pub/Sub as the Cloud Storage service agent.
resource "google_project_iam_member" "gcs_publishes_events" {
  count   = var.upload_via == "eventarc" ? 1 : 0
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Upload notifications go to the requests topic only.
resource "google_pubsub_topic_iam_member" "gcs_publishes_requests" {
  count  = var.upload_via == "notification" ? 1 : 0
  topic  = google_pubsub_topic.requests.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# ---- build ----

resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = google_service_account.build.member
}

resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# ---- callers of Generate ----

resource "google_cloud_run_v2_service_iam_member" "client_invokes_generate" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.generate.service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.client.member
}

resource "google_cloud_run_v2_service_iam_member" "generate_invokers" {
  for_each = toset(var.http_invokers)
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.generate.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}

# Anyone may call Generate, but only with a signed request: refused unless
# the webhook signing secret is configured.
resource "google_cloud_run_v2_service_iam_member" "generate_public" {
  count    = var.public_webhook ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.generate.service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"

  lifecycle {
    precondition {
      condition     = var.public_webhook && var.webhook_secret_version != ""
      error_message = "public_webhook needs webhook_secret_version: without signatures anyone could spend the model budget."
    }
  }
}

resource "google_service_account_iam_member" "client_impersonators" {
  for_each           = toset(var.client_impersonators)
  service_account_id = google_service_account.client.name
  role               = "roles/iam.serviceAccountOpenIdTokenCreator"
  member             = each.value
}
