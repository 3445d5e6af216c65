# Identities, each with only what its part needs. README.md, "Identities",
# is the table of what each may do; terraform_test.go refuses any role that
# is not in it (allowedRoles).

# One runtime account per function role:
#   front     Generate, the internet-facing door: queues jobs and HTTP
#             batches, reports progress. Never calls the model, holds no
#             model key, writes no images.
#   worker    OnMessage and OnUpload: run jobs, write images and records.
#   poller    PollBatches: finishes the jobs of done batches, resumes held
#             jobs.
#   callback  OnCompletion: posts completion records to callback URLs.
# A new function gets a role here and its grants below (for_each over
# these keys), not a share of another role's account.
locals {
  runtime_roles = {
    front    = "genimg Generate (HTTP front door)"
    worker   = "genimg OnMessage and OnUpload (job workers)"
    poller   = "genimg PollBatches (batch poller)"
    callback = "genimg OnCompletion (callbacks)"
  }
  # Roles whose functions publish completion events, and who may queue
  # requests (Generate its jobs and batches, PollBatches the held jobs it
  # resumes).
  completion_publishers = toset(["front", "worker", "poller"])
  request_publishers    = toset(["front", "poller"])
  # Roles that call the model (GENIMG_ROLE=all).
  model_callers = toset(["worker", "poller"])
  # Roles that read gs:// job inputs.
  input_readers = toset(["front", "worker", "poller"])
  # Roles that read the callback secret: every function that checks jobs,
  # and OnCompletion.
  callback_secret_readers = toset(["front", "worker", "poller", "callback"])

  # Every account the deployer must act as (functions run as them, pushes
  # and schedules sign as them, builds run as them).
  acted_as = merge(
    { for k, sa in google_service_account.runtime : k => sa.name },
    { trigger = google_service_account.trigger.name, build = google_service_account.build.name },
  )
}

resource "google_service_account" "runtime" {
  for_each = local.runtime_roles

  account_id   = "${var.name_prefix}-${each.key}"
  display_name = each.value

  depends_on = [time_sleep.apis]
}

# trigger: what Eventarc, the push subscription and Cloud Scheduler invoke
# the functions as.
resource "google_service_account" "trigger" {
  account_id   = "${var.name_prefix}-trigger"
  display_name = "genimg triggers (event delivery)"

  depends_on = [time_sleep.apis]
}

# build: what Cloud Build builds the function images as.
resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "genimg function builds"

  depends_on = [time_sleep.apis]
}

# client: an identity for callers of Generate (the genimg CLI impersonates it;
# person accounts cannot mint ID tokens for a function themselves).
resource "google_service_account" "client" {
  account_id   = "${var.name_prefix}-client"
  display_name = "genimg HTTP callers"

  depends_on = [time_sleep.apis]
}

# ---- runtime: the output bucket, by prefix ----

resource "google_storage_bucket_iam_member" "runtime_writes_outputs" {
  for_each = local.output_access
  bucket   = google_storage_bucket.output.name
  role     = "roles/storage.objectUser"
  member   = google_service_account.runtime[each.key].member

  condition {
    title       = "genimg ${each.key} writes"
    description = "Objects under ${join(", ", local.output_access[each.key].write)} and listings of them."
    expression  = local.prefix_condition[each.key].write
  }
}

resource "google_storage_bucket_iam_member" "runtime_reads_outputs" {
  for_each = local.output_access
  bucket   = google_storage_bucket.output.name
  role     = "roles/storage.objectViewer"
  member   = google_service_account.runtime[each.key].member

  condition {
    title       = "genimg ${each.key} reads"
    description = "Objects under ${join(", ", local.output_access[each.key].read)} and listings of them."
    expression  = local.prefix_condition[each.key].read
  }
}

# Job inputs: the upload bucket and any extra input buckets, whole (they
# hold nothing but inputs).
resource "google_storage_bucket_iam_member" "runtime_reads_inputs" {
  for_each = { for pair in setproduct(tolist(local.input_readers), local.input_buckets) : "${pair[0]}/${pair[1]}" => pair }
  bucket   = each.value[1]
  role     = "roles/storage.objectViewer"
  member   = google_service_account.runtime[each.value[0]].member

  depends_on = [google_storage_bucket.uploads]
}

# ---- runtime: topics ----

resource "google_pubsub_topic_iam_member" "runtime_publishes_requests" {
  for_each = local.request_publishers
  topic    = google_pubsub_topic.requests.id
  role     = "roles/pubsub.publisher"
  member   = google_service_account.runtime[each.key].member
}

resource "google_pubsub_topic_iam_member" "runtime_publishes_completions" {
  for_each = local.completion_publishers
  topic    = google_pubsub_topic.completions.id
  role     = "roles/pubsub.publisher"
  member   = google_service_account.runtime[each.key].member
}

# ---- runtime: Cloud Trace ----

# Every function writes its spans to Cloud Trace as its own account
# (GENIMG_TRACE_EXPORTER=cloudtrace).
resource "google_project_iam_member" "runtime_writes_traces" {
  for_each = { for k, v in local.runtime_roles : k => v if var.trace_exporter == "cloudtrace" }
  project  = var.project_id
  role     = "roles/cloudtrace.agent"
  member   = google_service_account.runtime[each.key].member
}

# ---- runtime: Vertex AI ----

# Instead of roles/aiplatform.user (every Vertex AI resource): model calls,
# the Batch API and context caches, which is all genimg does.
resource "google_project_iam_custom_role" "vertex_caller" {
  count       = var.backend == "vertex" ? 1 : 0
  role_id     = "${replace(var.name_prefix, "-", "_")}_vertex_caller"
  title       = "genimg Vertex AI caller"
  description = "Generate content, run batch prediction jobs and keep context caches: what genimg's functions do on Vertex AI."
  permissions = [
    "aiplatform.endpoints.predict",
    "aiplatform.batchPredictionJobs.create",
    "aiplatform.batchPredictionJobs.get",
    "aiplatform.batchPredictionJobs.list",
    "aiplatform.batchPredictionJobs.cancel",
    "aiplatform.cachedContents.create",
    "aiplatform.cachedContents.get",
    "aiplatform.cachedContents.update",
    "aiplatform.cachedContents.delete",
  ]

  depends_on = [time_sleep.apis]
}

resource "google_project_iam_member" "runtime_calls_vertex" {
  for_each = var.backend == "vertex" ? local.model_callers : toset([])
  project  = var.project_id
  role     = google_project_iam_custom_role.vertex_caller[0].name
  member   = google_service_account.runtime[each.key].member
}

# Vertex AI reads gs:// inputs and batch chunks itself, as its service
# agent, and writes batch predictions under batches/<chunk>/output/.
resource "google_storage_bucket_iam_member" "vertex_reads_inputs" {
  for_each = var.backend == "vertex" ? toset(local.input_buckets) : toset([])
  bucket   = each.value
  role     = "roles/storage.objectViewer"
  member   = local.vertex_agent

  depends_on = [google_storage_bucket.uploads]
}

resource "google_storage_bucket_iam_member" "vertex_reads_outputs" {
  count  = var.backend == "vertex" ? 1 : 0
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectViewer"
  member = local.vertex_agent

  condition {
    title       = "Vertex AI reads job inputs"
    description = "Staged inputs under jobs/, earlier images, and batch chunks under batches/."
    expression = join(" || ", [for p in concat(["jobs/", local.image_prefix, "batches/"], var.job_output_prefixes) :
    "resource.name.startsWith(\"${local.output_objects}${p}\")"])
  }
}

resource "google_storage_bucket_iam_member" "vertex_writes_batches" {
  count  = var.backend == "vertex" ? 1 : 0
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectUser"
  member = local.vertex_agent

  condition {
    title       = "Vertex AI writes batch predictions"
    description = "Batch prediction output under batches/."
    expression  = "resource.name.startsWith(\"${local.output_objects}batches/\") || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"batches/\")"
  }
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

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_poll_batches" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.poll_batches.service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_on_completion" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.on_completion.service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

# Old projects only (legacy_service_agent_grants): their Pub/Sub and Cloud
# Scheduler agents mint the OIDC tokens as the trigger account with this
# grant. Projects that enabled the APIs after April 2021 (Pub/Sub) and
# March 2019 (Scheduler) need none, and on a new project these agents may
# not exist yet.
resource "google_service_account_iam_member" "agents_sign_as_trigger" {
  # Keyed by name: the agents' e-mails are unknown until the project's
  # number is read, and for_each keys must be known at plan.
  for_each           = { for agent, member in { pubsub = local.pubsub_agent, scheduler = local.scheduler_agent } : agent => member if var.legacy_service_agent_grants }
  service_account_id = google_service_account.trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.value
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

# The same for callbacks: their own dead-letter topic.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letters_callbacks" {
  topic  = google_pubsub_topic.callbacks_dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_forwards_callbacks" {
  subscription = google_pubsub_subscription.callbacks.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# ---- Cloud Storage service agent ----

# Storage triggers publish through Pub/Sub as the Cloud Storage service agent.
resource "google_project_iam_member" "gcs_publishes_events" {
  count   = var.upload_via == "eventarc" ? 1 : 0
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = local.gcs_agent
}

# Upload notifications go to the requests topic only.
resource "google_pubsub_topic_iam_member" "gcs_publishes_requests" {
  count  = var.upload_via == "notification" ? 1 : 0
  topic  = google_pubsub_topic.requests.id
  role   = "roles/pubsub.publisher"
  member = local.gcs_agent
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

# Cloud Functions copies the source zip into its own bucket,
# gcf-v2-sources-<project number>-<region>, and the build reads it there.
# That bucket appears with the first deploy, so the grant is on the
# project, with a condition naming the bucket.
resource "google_project_iam_member" "build_reads_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "gcf-v2-sources only"
    description = "The bucket Cloud Functions copies function sources into."
    expression  = "resource.name == \"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\" || resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}/\")"
  }
}

# ---- the deployer ----

# The deployer acts as each genimg account (a function runs as one, a push,
# a schedule and a build sign as one), and only as these: no project-wide
# serviceAccountUser.
resource "google_service_account_iam_member" "deployer_acts_as" {
  for_each           = { for k, name in local.acted_as : k => name if var.deployer != "" }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = var.deployer
}

# ---- IAM propagation ----

# IAM changes take up to a few minutes to reach every Google service. The
# functions' builds (build account), their deploys (deployer acting as the
# runtime accounts) and the Eventarc storage trigger (Cloud Storage agent,
# trigger account) fail when they run first; Google's own examples wait
# about a minute here.
resource "time_sleep" "iam" {
  create_duration = "60s"

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.build_reads_gcf_sources,
    google_storage_bucket_iam_member.build_reads_source,
    google_project_iam_member.gcs_publishes_events,
    google_project_iam_member.trigger_receives_events,
    google_service_account_iam_member.deployer_acts_as,
    google_secret_manager_secret_iam_member.reads_gemini_api_key,
    google_secret_manager_secret_iam_member.front_reads_webhook_secret,
    google_secret_manager_secret_iam_member.reads_callback_secret,
    google_project_iam_member.runtime_writes_traces,
  ]
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
      condition     = var.public_webhook && var.webhook_secret_version > 0
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
