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

# ---- callbacks ----

# Completion events OnCompletion gave up on: Pub/Sub moves them here after
# max_delivery_attempts (100) failed deliveries.
resource "google_pubsub_topic" "callbacks_dead_letter" {
  name = "${var.name_prefix}-callbacks-dead-letter"

  depends_on = [time_sleep.apis]
}

# Delivers the completion events of records that name a callback to
# OnCompletion (genimg sets the genimg-callback attribute on those only, so
# the rest never wake the function). OnCompletion answers 500 for a failed
# callback, so that Pub/Sub retries with backoff, until the event is older
# than callback_max_age; then it logs "callback dead-lettered" and
# acknowledges.
resource "google_pubsub_subscription" "callbacks" {
  name   = "${var.name_prefix}-callbacks-push"
  topic  = google_pubsub_topic.completions.id
  filter = "attributes.genimg-callback = \"true\""

  # Above the function timeout: a delivery still running is never
  # redelivered beside itself.
  ack_deadline_seconds = 600
  # At least a day, and longer than callback_max_age: an event must not
  # expire while OnCompletion would still retry it.
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.on_completion.service_config[0].uri}/${google_pubsub_topic.completions.id}"

    oidc_token {
      service_account_email = google_service_account.trigger.email
      audience              = google_cloudfunctions2_function.on_completion.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # 100 deliveries at up to 600 s apart: about 16 h of retries, Pub/Sub's
  # most. A receiver that stays down longer ends here (alerted) even when
  # callback_max_age is longer.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.callbacks_dead_letter.id
    max_delivery_attempts = 100
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.trigger_invokes_on_completion,
    google_pubsub_topic_iam_member.pubsub_agent_dead_letters_callbacks,
    time_sleep.iam,
  ]
}

# Keeps dead-lettered callbacks for 31 days: pull them to see which
# receivers failed; republishing one onto the completion topic (with its
# attributes) delivers it again, under the same webhook-id.
resource "google_pubsub_subscription" "callbacks_dead_letter" {
  name                       = "${var.name_prefix}-callbacks-dead-letter"
  topic                      = google_pubsub_topic.callbacks_dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "2678400s"

  expiration_policy {
    ttl = ""
  }
}
