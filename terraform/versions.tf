terraform {
  # 1.11 or later: secret_data_wo (write-only arguments, 1.11) and ephemeral
  # variables (1.10) keep the model key out of state and plans. Cloud Build
  # runs exactly the version in cloudbuild.yaml (_TF_VERSION).
  required_version = ">= 1.11.0, < 2.0.0"

  # Exact versions: the ones the offline checks read the schema of
  # (../shared/terraform/provider-schema.json.gz) and the ones in
  # .terraform.lock.hcl. Raise all three together.
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "7.45.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "2.8.0"
    }
    time = {
      source  = "hashicorp/time"
      version = "0.14.0"
    }
  }

  # State is never local: in Cloud Build the workspace is thrown away after
  # every run. Partial configuration: the bucket (and prefix) are given at
  # init, `terraform init -backend-config=bucket=STATE_BUCKET`.
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    app = "genimg"
  }
}
