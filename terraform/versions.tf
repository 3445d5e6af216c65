terraform {
  # 1.9 or later: variable validations refer to other variables
  # (public_webhook needs webhook_secret_version).
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
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
