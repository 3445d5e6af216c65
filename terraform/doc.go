// Package terraform holds genimg's deployment to Google Cloud: the Terraform
// configuration in this directory (Cloud Run functions, Pub/Sub, Cloud
// Storage, Secret Manager, identities, metrics and alerts) and, beside it at
// the module root, cloudbuild.yaml.
//
// The package has no Go API. Its tests check the configuration offline, as no
// terraform binary is available in CI: every .tf file parses and is
// formatted, every block and attribute is one the provider defines, entry
// points match function.go, environment variables match config.LoadConfig,
// event triggers retry and run as explicit service accounts, allUsers appears
// only behind public_webhook with the webhook secret, state lives in a gcs
// backend, and cloudbuild.yaml has the steps a deploy needs.
package terraform
