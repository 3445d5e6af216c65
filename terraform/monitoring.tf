# Operations: log-based metrics from genimg's structured logs (JSON on
# stdout; `message` is constant, the rest are fields of jsonPayload), alert
# policies, and a dashboard. Alerts go to var.notification_channels.

locals {
  # Metric names take underscores only, so that PromQL can name them
  # (logging.googleapis.com/user/NAME is logging_googleapis_com:user_NAME).
  metric_prefix = replace(var.name_prefix, "-", "_")

  # Every function's logs count: a job finished by PollBatches is a job
  # too (and paid for). terraform_test.go checks that each function is here.
  function_names = [local.generate_name, local.on_message_name, local.on_upload_name, local.poll_batches_name, local.on_completion_name]

  function_logs = join(" ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=(${join(" OR ", [for n in local.function_names : "\"${n}\""])})",
  ])

  jobs_metric    = "${local.metric_prefix}_jobs"
  cost_metric    = "${local.metric_prefix}_job_cost_usd"
  latency_metric = "${local.metric_prefix}_model_latency"
  quota_metric   = "${local.metric_prefix}_model_429s"
  callback_dl    = "${local.metric_prefix}_callbacks_dead_lettered"
  storage_denied = "${local.metric_prefix}_storage_denied"

  promql_jobs    = "logging_googleapis_com:user_${local.jobs_metric}"
  promql_cost    = "logging_googleapis_com:user_${local.cost_metric}"
  promql_latency = "logging_googleapis_com:user_${local.latency_metric}"
  promql_429s    = "logging_googleapis_com:user_${local.quota_metric}"
  promql_cb_dl   = "logging_googleapis_com:user_${local.callback_dl}"
  promql_denied  = "logging_googleapis_com:user_${local.storage_denied}"
}

# Jobs by outcome (succeeded, blocked, no_image, failed), trigger and model.
resource "google_logging_metric" "jobs" {
  name        = local.jobs_metric
  description = "genimg jobs completed, by outcome, trigger and model."
  filter      = "${local.function_logs} AND jsonPayload.message=\"job completed\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "genimg jobs"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "succeeded, blocked, no_image or failed"
    }
    labels {
      key        = "trigger"
      value_type = "STRING"
    }
    labels {
      key        = "model"
      value_type = "STRING"
    }
  }

  label_extractors = {
    outcome = "EXTRACT(jsonPayload.outcome)"
    trigger = "EXTRACT(jsonPayload.trigger)"
    model   = "EXTRACT(jsonPayload.model)"
  }
}

# Estimated cost per job (the price table's estimate, not the bill).
resource "google_logging_metric" "cost" {
  name            = local.cost_metric
  description     = "Estimated model cost of each genimg job in US dollars."
  filter          = "${local.function_logs} AND jsonPayload.message=\"job completed\""
  value_extractor = "EXTRACT(jsonPayload.costUsd)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "{USD}"
    display_name = "genimg job cost"
    labels {
      key        = "trigger"
      value_type = "STRING"
    }
  }

  label_extractors = {
    trigger = "EXTRACT(jsonPayload.trigger)"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = 2
      scale              = 0.001
    }
  }
}

# Time spent in model calls per job.
resource "google_logging_metric" "model_latency" {
  name            = local.latency_metric
  description     = "Milliseconds genimg jobs spent in model calls."
  filter          = "${local.function_logs} AND jsonPayload.message=\"job completed\""
  value_extractor = "EXTRACT(jsonPayload.modelMs)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "genimg model latency"
    labels {
      key        = "model"
      value_type = "STRING"
    }
  }

  label_extractors = {
    model = "EXTRACT(jsonPayload.model)"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 1.4
      scale              = 100
    }
  }
}

# Model calls refused for quota (HTTP 429).
resource "google_logging_metric" "model_429s" {
  name        = local.quota_metric
  description = "genimg model calls answered 429 (quota or rate limit)."
  filter      = "${local.function_logs} AND jsonPayload.message=\"model call failed\" AND jsonPayload.status=429"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "genimg model 429s"
  }
}

# Callbacks OnCompletion gave up on (older than callback_max_age).
resource "google_logging_metric" "callbacks_dead_lettered" {
  name        = local.callback_dl
  description = "genimg callbacks given up after GENIMG_CALLBACK_MAX_AGE (\"callback dead-lettered\")."
  filter      = "${local.function_logs} AND jsonPayload.message=\"callback dead-lettered\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "genimg callbacks dead-lettered"
  }
}

# Cloud Storage refused genimg (401/403). genimg retries these as transient
# (IAM changes take a minute to reach Cloud Storage), and every such error
# says "cloud storage refused the request (401/403): check genimg's IAM".
# Any of them after the first minutes of a deploy means a grant is missing.
resource "google_logging_metric" "storage_denied" {
  name        = local.storage_denied
  description = "genimg log lines with a Cloud Storage 401/403: a missing grant."
  filter      = "${local.function_logs} AND jsonPayload.error:\"cloud storage refused the request (401/403)\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "genimg Cloud Storage refusals"
  }
}

# ---- alerts ----

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "genimg: requests dead-lettered (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "dead-letter subscription holds messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.dead_letter.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "60s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Requests failed ${var.max_delivery_attempts} deliveries and sit in subscription `${google_pubsub_subscription.dead_letter.name}`. Pull them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter.name} --limit=10`, fix the cause, and republish them onto `${google_pubsub_topic.requests.name}`."
  }
}

resource "google_monitoring_alert_policy" "oldest_request" {
  display_name          = "genimg: requests waiting (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "oldest unacknowledged request"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.requests.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_oldest_request_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Requests are not being processed: OnMessage is failing, throttled (see the 429 metric) or at max instances. Jobs older than GENIMG_MAX_EVENT_AGE (${var.max_event_age}) end as failed records."
  }
}

resource "google_monitoring_alert_policy" "failure_rate" {
  display_name          = "genimg: jobs failing (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "failed share of jobs over 15 minutes"
    condition_prometheus_query_language {
      query               = "sum(increase(${local.promql_jobs}{outcome=\"failed\"}[15m])) / sum(increase(${local.promql_jobs}[15m])) > ${var.alert_failure_ratio}"
      duration            = "0s"
      evaluation_interval = "60s"
      # The log-based metric is created in the same apply; Monitoring would
      # refuse a query on a metric it has no data for yet.
      disable_metric_validation = true
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "More than ${var.alert_failure_ratio * 100}% of jobs failed. Look at the `error` of recent records under `gs://${local.output_bucket}/jobs/` or at the functions' logs."
  }

  depends_on = [google_logging_metric.jobs]
}

resource "google_monitoring_alert_policy" "spend_rate" {
  display_name          = "genimg: spend rate (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "estimated model spend over the last hour"
    condition_prometheus_query_language {
      query               = "sum(increase(${local.promql_cost}_sum[1h])) > ${var.alert_spend_usd_per_hour}"
      duration            = "0s"
      evaluation_interval = "300s"
      # As above: the metric is new.
      disable_metric_validation = true
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Estimated model spend exceeded USD ${var.alert_spend_usd_per_hour} in an hour (from the price table, not the bill)."
  }

  depends_on = [google_logging_metric.cost]
}

# genimg logs "spend budget reached" when its own spend limit stops jobs.
resource "google_monitoring_alert_policy" "spend_budget" {
  display_name          = "genimg: spend budget reached (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "spend budget reached"
    condition_matched_log {
      filter = "${local.function_logs} AND jsonPayload.message=\"spend budget reached\""
      label_extractors = {
        window = "EXTRACT(jsonPayload.window)"
      }
    }
  }

  # Log-match alerts need a rate limit.
  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "genimg refused jobs because its spend budget for the current window is used up."
  }
}

# Callbacks given up: by genimg (older than callback_max_age) or by
# Pub/Sub (100 failed deliveries, into the callbacks dead-letter topic).
resource "google_monitoring_alert_policy" "callbacks_dead_lettered" {
  display_name          = "genimg: callbacks dead-lettered (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "OnCompletion gave up on a callback"
    condition_prometheus_query_language {
      query               = "sum(increase(${local.promql_cb_dl}[10m])) > 0"
      duration            = "0s"
      evaluation_interval = "60s"
      # The log-based metric is created in the same apply.
      disable_metric_validation = true
    }
  }

  conditions {
    display_name = "Pub/Sub dead-lettered a callback"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${google_pubsub_subscription.callbacks.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A job's callback URL kept failing and genimg stopped trying. Logs with message `callback dead-lettered` name the job and the receiver's host; events Pub/Sub gave up on sit in `${google_pubsub_subscription.callbacks_dead_letter.name}` (`gcloud pubsub subscriptions pull ${google_pubsub_subscription.callbacks_dead_letter.name} --limit=10`). The records themselves are complete: `GET /Generate?id=JOB` still answers."
  }

  depends_on = [google_logging_metric.callbacks_dead_lettered]
}

# Cloud Storage 401/403: genimg lacks a grant (or IAM has not propagated).
resource "google_monitoring_alert_policy" "storage_denied" {
  display_name          = "genimg: Cloud Storage refuses genimg (${var.name_prefix})"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Cloud Storage 401/403 over 10 minutes"
    condition_prometheus_query_language {
      query               = "sum(increase(${local.promql_denied}[10m])) > 0"
      duration            = "300s"
      evaluation_interval = "60s"
      # The log-based metric is created in the same apply.
      disable_metric_validation = true
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Cloud Storage answered 401/403 to genimg for five minutes: a runtime account lacks a grant on a prefix of `${local.output_bucket}` or an input bucket (terraform/README.md, \"The output bucket, by prefix\"). genimg retries these, so jobs wait rather than fail; the functions' logs name the object (`cloud storage refused the request (401/403): check genimg's IAM`)."
  }

  depends_on = [google_logging_metric.storage_denied]
}

# ---- dashboard ----

resource "google_monitoring_dashboard" "genimg" {
  dashboard_json = jsonencode({
    displayName = "genimg (${var.name_prefix})"
    mosaicLayout = {
      columns = 48
      tiles = [
        for i, w in [
          { title = "Jobs per minute by outcome", query = "sum by (outcome) (rate(${local.promql_jobs}[5m])) * 60" },
          { title = "Estimated spend per hour (USD)", query = "sum(increase(${local.promql_cost}_sum[1h]))" },
          { title = "Model latency p95 (ms)", query = "histogram_quantile(0.95, sum by (le) (rate(${local.promql_latency}_bucket[5m])))" },
          { title = "Model 429s per minute", query = "sum(rate(${local.promql_429s}[5m])) * 60" },
          { title = "Requests waiting", query = "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{monitored_resource=\"pubsub_subscription\",subscription_id=\"${google_pubsub_subscription.requests.name}\"})" },
          { title = "Dead-lettered requests", query = "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{monitored_resource=\"pubsub_subscription\",subscription_id=\"${google_pubsub_subscription.dead_letter.name}\"})" },
          ] : {
          xPos   = (i % 2) * 24
          yPos   = floor(i / 2) * 16
          width  = 24
          height = 16
          widget = {
            title = w.title
            xyChart = {
              dataSets = [{
                plotType        = "LINE"
                timeSeriesQuery = { prometheusQuery = w.query }
              }]
            }
          }
        }
      ]
    }
  })
}
