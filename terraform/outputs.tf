output "generate_url" {
  description = "URL of the Generate function (POST a job; GET ?id=JOB)."
  value       = google_cloudfunctions2_function.generate.service_config[0].uri
}

output "output_bucket" {
  description = "Bucket of images (images/) and job state (jobs/<jobId>/result.json)."
  value       = google_storage_bucket.output.name
}

output "upload_bucket" {
  description = "Bucket whose uploads become jobs."
  value       = google_storage_bucket.uploads.name
}

output "requests_topic" {
  description = "Topic to publish jobs to."
  value       = google_pubsub_topic.requests.name
}

output "completions_topic" {
  description = "Topic of completion events (ce-type genimg.job.v1.completed)."
  value       = google_pubsub_topic.completions.name
}

output "dead_letter_subscription" {
  description = "Subscription holding requests that failed every delivery."
  value       = google_pubsub_subscription.dead_letter.name
}

output "callbacks_dead_letter_subscription" {
  description = "Pull subscription holding callbacks Pub/Sub gave up on (gcloud pubsub subscriptions pull ...)."
  value       = google_pubsub_subscription.callbacks_dead_letter.name
}

output "client_service_account" {
  description = "Service account that may call Generate; impersonate it to mint an ID token."
  value       = google_service_account.client.email
}

output "dashboard_url" {
  description = "The genimg dashboard in the Cloud console."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.genimg.id), 3)}?project=${var.project_id}"
}

output "alerts_url" {
  description = "genimg's alert policies in the Cloud console."
  value       = "https://console.cloud.google.com/monitoring/alerting/policies?project=${var.project_id}"
}

output "genimg_http" {
  description = "A first job over HTTP with the genimg CLI (from the module root)."
  value       = "go run ./cmd/genimg generate \"a red fox\" --url ${google_cloudfunctions2_function.generate.service_config[0].uri} --token \"$(gcloud auth print-identity-token --impersonate-service-account=${google_service_account.client.email} --audiences=${google_cloudfunctions2_function.generate.service_config[0].uri})\""
}

output "genimg_pubsub" {
  description = "The same job through the requests topic with the genimg CLI (your own credentials)."
  value       = "go run ./cmd/genimg generate \"a red fox\" --via pubsub --project ${var.project_id} --output-bucket ${google_storage_bucket.output.name}"
}
