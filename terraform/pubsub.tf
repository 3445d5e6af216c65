# Jobs to run: published by Generate (HTTP jobs are made durable here before
# it answers), by callers, and by upload notifications.
resource "google_pubsub_topic" "requests" {
  name = "${var.name_prefix}-requests"

  depends_on = [time_sleep.apis]
}

# Completion events (ce-type genimg.job.v1.completed).
resource "google_pubsub_topic" "completions" {
  name = "${var.name_prefix}-completions"

  depends_on = [time_sleep.apis]
}

# Requests that failed every delivery attempt.
resource "google_pubsub_topic" "dead_letter" {
  name = "${var.name_prefix}-dead-letter"

  depends_on = [time_sleep.apis]
}

# Delivers requests to OnMessage. Terraform owns this subscription (rather
# than an Eventarc trigger) so that it can have a dead-letter topic: the
# Eventarc subscription behind an event_trigger cannot get one.
resource "google_pubsub_subscription" "requests" {
  name  = "${var.name_prefix}-requests-push"
  topic = google_pubsub_topic.requests.id

  # Above the function timeout (at most 540 s): a delivery that is still
  # running is never redelivered beside itself.
  ack_deadline_seconds = 600

  push_config {
    # The functions framework reads the topic from the push path when it
    # turns the raw push body into a messagePublished CloudEvent.
    push_endpoint = "${google_cloudfunctions2_function.on_message.service_config[0].uri}/${google_pubsub_topic.requests.id}"

    # The trigger identity signs every push; only it may invoke OnMessage.
    oidc_token {
      service_account_email = google_service_account.trigger.email
      audience              = google_cloudfunctions2_function.on_message.service_config[0].uri
    }
  }

  # A transient failure (genimg answers 500, Cloud Run 429 when every
  # instance is busy) is retried with backoff; a permanent one is recorded
  # failed and acknowledged by genimg itself. Each retry counts towards
  # max_delivery_attempts (variables.tf says why 100).
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.trigger_invokes_on_message,
    google_pubsub_topic_iam_member.pubsub_agent_dead_letters,
    time_sleep.iam,
  ]
}

# Keeps dead-lettered requests (for 31 days, Pub/Sub's maximum) so nothing is
# lost: inspect with `gcloud pubsub subscriptions pull`, and republish onto
# the requests topic once the cause is fixed.
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${var.name_prefix}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "2678400s"

  expiration_policy {
    ttl = ""
  }
}
