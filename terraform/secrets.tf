# Secret Manager holds the model key and the webhook signing secret. The
# values reach Secret Manager through write-only arguments (secret_data_wo):
# Terraform sends them on create and never stores them in state or in a
# plan. They are only needed when the version variable changes (the first
# apply, a rotation): every other plan, such as Cloud Build's, runs without
# them.
#
# The provider wants secret_data_wo set on every plan (exactly one of
# secret_data, secret_data_wo), so a plan without the value passes "" — and
# a precondition refuses that whenever it would be sent: when the version
# applied so far (an annotation on the secret, read back from Secret
# Manager) is not the version asked for. A forgotten key fails the plan; it
# never becomes an empty secret version.

# Metadata of genimg's secrets as they are now (no secret data). Read at
# every plan, so that a missing key stops the plan before anything changes;
# that is why the bootstrap enables Secret Manager.
data "google_secret_manager_secrets" "applied" {
  filter = "name:${var.name_prefix}-"
}

locals {
  # Version (generation) of each secret that the last apply wrote.
  applied_versions = {
    for sm in data.google_secret_manager_secrets.applied.secrets :
    sm.secret_id => tonumber(lookup(sm.annotations, "genimg-version", "0"))
  }
}

resource "google_secret_manager_secret" "gemini_api_key" {
  count     = var.backend == "gemini-api" ? 1 : 0
  secret_id = "${var.name_prefix}-gemini-api-key"

  # The generation written (see above); updated in the apply that writes it.
  annotations = {
    genimg-version = tostring(var.gemini_api_key_version)
  }

  replication {
    auto {}
  }

  depends_on = [time_sleep.apis]
}

resource "google_secret_manager_secret_version" "gemini_api_key" {
  count  = var.backend == "gemini-api" ? 1 : 0
  secret = google_secret_manager_secret.gemini_api_key[0].id

  secret_data_wo         = var.gemini_api_key != null ? var.gemini_api_key : ""
  secret_data_wo_version = var.gemini_api_key_version
  # A rotation replaces this version; the old one is disabled, not
  # destroyed, so that a rollback can enable it again.
  deletion_policy = "DISABLE"

  lifecycle {
    # Functions move to the new version before the old one is disabled.
    create_before_destroy = true

    precondition {
      condition     = var.gemini_api_key != null || lookup(local.applied_versions, "${var.name_prefix}-gemini-api-key", 0) == var.gemini_api_key_version
      error_message = "gemini_api_key_version ${var.gemini_api_key_version} is not the version applied so far: give the key as TF_VAR_gemini_api_key (the first apply, a rotation)."
    }
  }
}

resource "google_secret_manager_secret" "webhook" {
  count     = var.webhook_secret_version > 0 ? 1 : 0
  secret_id = "${var.name_prefix}-webhook-secret"

  annotations = {
    genimg-version = tostring(var.webhook_secret_version)
  }

  replication {
    auto {}
  }

  depends_on = [time_sleep.apis]
}

resource "google_secret_manager_secret_version" "webhook" {
  count  = var.webhook_secret_version > 0 ? 1 : 0
  secret = google_secret_manager_secret.webhook[0].id

  secret_data_wo         = var.webhook_secret != null ? var.webhook_secret : ""
  secret_data_wo_version = var.webhook_secret_version
  deletion_policy        = "DISABLE"

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.webhook_secret != null || lookup(local.applied_versions, "${var.name_prefix}-webhook-secret", 0) == var.webhook_secret_version
      error_message = "webhook_secret_version ${var.webhook_secret_version} is not the version applied so far: give the secret as TF_VAR_webhook_secret."
    }
  }
}

resource "google_secret_manager_secret" "callback" {
  count     = var.callback_secret_version > 0 ? 1 : 0
  secret_id = "${var.name_prefix}-callback-secret"

  annotations = {
    genimg-version = tostring(var.callback_secret_version)
  }

  replication {
    auto {}
  }

  depends_on = [time_sleep.apis]
}

resource "google_secret_manager_secret_version" "callback" {
  count  = var.callback_secret_version > 0 ? 1 : 0
  secret = google_secret_manager_secret.callback[0].id

  secret_data_wo         = var.callback_secret != null ? var.callback_secret : ""
  secret_data_wo_version = var.callback_secret_version
  deletion_policy        = "DISABLE"

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.callback_secret != null || lookup(local.applied_versions, "${var.name_prefix}-callback-secret", 0) == var.callback_secret_version
      error_message = "callback_secret_version ${var.callback_secret_version} is not the version applied so far: give the secret as TF_VAR_callback_secret (whsec_ and base64)."
    }
  }
}

# Only the roles that run jobs read the model key. Generate (front) never
# calls the model (GENIMG_ROLE=front: no model client, HTTP batches go to
# OnMessage through the requests topic), and OnCompletion (callback) only
# posts records: neither holds it.
resource "google_secret_manager_secret_iam_member" "reads_gemini_api_key" {
  for_each  = var.backend == "gemini-api" ? local.model_callers : toset([])
  secret_id = google_secret_manager_secret.gemini_api_key[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.key].member
}

# Only Generate checks signatures.
resource "google_secret_manager_secret_iam_member" "front_reads_webhook_secret" {
  count     = var.webhook_secret_version > 0 ? 1 : 0
  secret_id = google_secret_manager_secret.webhook[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["front"].member
}

# Every function that checks jobs checks their callback URLs (a job naming
# a callback is rejected without the secret), and OnCompletion signs with it.
resource "google_secret_manager_secret_iam_member" "reads_callback_secret" {
  for_each  = var.callback_secret_version > 0 ? local.callback_secret_readers : toset([])
  secret_id = google_secret_manager_secret.callback[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime[each.key].member
}
