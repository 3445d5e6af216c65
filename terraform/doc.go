// Package terraform holds genimg's deployment to Google Cloud: the Terraform
// configuration in this directory (APIs, Cloud Run functions, Pub/Sub, Cloud
// Storage, Secret Manager, Cloud Scheduler, identities, metrics and alerts)
// and, beside it at the module root, cloudbuild.yaml.
//
// The package has no Go API. Its tests check the configuration offline,
// without terraform or the providers: every .tf file parses and is
// formatted; every block and argument is checked against the providers'
// own schema (../shared/terraform/provider-schema.json.gz, read in place
// and skipped when absent) for unknown names, missing required ones, wrong
// nesting and wrong types; every reference resolves; values the schema
// cannot carry (runtimes, ingress settings, roles) come from a short table
// with its sources; genimg's IAM rules hold (every push, schedule and
// trigger identity may invoke what it calls, agents have what their feature
// needs, grants on the shared output bucket are limited to prefixes, no
// role outside the README's table); entry points match function.go,
// environment variables match config.LoadConfig; every function is in the
// metrics and alerts; every prefix genimg writes has a lifecycle rule; and
// the build is reproducible (exact versions, lock file, deterministic zip).
// TestSeededMistakes shows each check failing on the mistake it exists for.
package terraform
