# Every API genimg uses, enabled by Terraform itself. The bootstrap step in
# README.md enables only the few Terraform needs to talk to the project at
# all (Service Usage, Resource Manager, IAM, Cloud Storage for the state).
# disable_on_destroy = false: destroying genimg must not switch off an API
# that something else in the project may use.
locals {
  apis = toset(concat(
    [
      "artifactregistry.googleapis.com", # function images
      "cloudbuild.googleapis.com",       # function builds
      "cloudfunctions.googleapis.com",
      "cloudresourcemanager.googleapis.com",
      "cloudscheduler.googleapis.com", # PollBatches
      "cloudtrace.googleapis.com",     # spans (GENIMG_TRACE_EXPORTER=cloudtrace)
      "eventarc.googleapis.com",       # OnUpload's storage trigger
      "iam.googleapis.com",
      "iamcredentials.googleapis.com", # OIDC tokens for pushes and the CLI
      "logging.googleapis.com",
      "monitoring.googleapis.com",
      "pubsub.googleapis.com",
      "run.googleapis.com",
      "secretmanager.googleapis.com",
      "serviceusage.googleapis.com",
      "storage.googleapis.com",
    ],
    var.backend == "vertex" ? ["aiplatform.googleapis.com"] : [],
  ))
}

resource "google_project_service" "this" {
  for_each = local.apis

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Enabling an API returns before every part of Google has seen it; Google's
# own examples wait before the first use.
resource "time_sleep" "apis" {
  create_duration = "30s"

  depends_on = [google_project_service.this]
}
