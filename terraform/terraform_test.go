package terraform

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/zclconf/go-cty/cty"
)

// functionGoFixture registers genimg's entry points the way
// function.go does, so that the seeded-mistake table does not depend on the
// state of the real file.
const functionGoFixture = `package genimg

import "github.com/GoogleCloudPlatform/functions-framework-go/functions"

func init() {
	functions.HTTP("Generate", generate)
	functions.CloudEvent("OnMessage", onMessage)
	functions.CloudEvent("OnUpload", onUpload)
	functions.HTTP("PollBatches", pollBatches)
	functions.CloudEvent("OnCompletion", onCompletion)
}
`

// TestDeployment runs every check on the configuration as committed.
func TestDeployment(t *testing.T) {
	tr, err := readTree(".")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(problems(nil), check(tr)); diff != "" {
		t.Errorf("check (-want +got):\n%s", diff)
	}
}

// TestSeededMistakes shows that each check fails on the mistake it exists
// for: each case changes a copy of the configuration and wants a problem
// that contains the given text (or none, for changes that are fine).
func TestSeededMistakes(t *testing.T) {
	base, err := readTree(".")
	if err != nil {
		t.Fatal(err)
	}
	base.functionGo, base.functionErr = []byte(functionGoFixture), nil

	type edit struct{ file, old, new string }
	tests := []struct {
		name  string
		edits []edit
		// function replaces function.go when set.
		function string
		want     string // substring of a problem; "" wants none
		// schema marks mistakes only the providers' schema can catch:
		// skipped when ../shared/terraform/provider-schema.json.gz is absent.
		schema bool
	}{
		{name: "as committed"},

		// ---- seven mistakes a first deployment made ----
		{
			name:  "probe: reference to a missing resource",
			edits: []edit{{"iam.tf", "topic    = google_pubsub_topic.completions.id", "topic    = google_pubsub_topic.completion.id"}},
			want:  "refers to google_pubsub_topic.completion, which is not declared",
		},
		{
			name:  "probe: invalid ingress_settings",
			edits: []edit{{"functions.tf", `ingress_settings                 = "ALLOW_ALL"`, `ingress_settings                 = "ALLOW_PUBLIC"`}},
			want:  `generate.service_config.ingress_settings = "ALLOW_PUBLIC" is not one of`,
		},
		{
			name:  "probe: runtime with a dot",
			edits: []edit{{"functions.tf", "runtime         = \"go126\"\n    entry_point     = \"OnMessage\"", "runtime         = \"go1.26\"\n    entry_point     = \"OnMessage\""}},
			want:  `on_message.build_config.runtime = "go1.26" is not one of`,
		},
		{
			name:   "probe: required topic removed",
			edits:  []edit{{"pubsub.tf", "  name  = \"${var.name_prefix}-requests-push\"\n  topic = google_pubsub_topic.requests.id\n", "  name = \"${var.name_prefix}-requests-push\"\n"}},
			want:   `google_pubsub_subscription.requests is missing the required argument "topic"`,
			schema: true,
		},
		{
			name: "probe: Scheduler invoker binding removed",
			edits: []edit{
				{"iam.tf", "resource \"google_cloud_run_v2_service_iam_member\" \"trigger_invokes_poll_batches\" {\n  project  = var.project_id\n  location = var.region\n  name     = google_cloudfunctions2_function.poll_batches.service_config[0].service\n  role     = \"roles/run.invoker\"\n  member   = google_service_account.trigger.member\n}\n", ""},
				{"batch.tf", "\n  depends_on = [google_cloud_run_v2_service_iam_member.trigger_invokes_poll_batches]\n", ""},
			},
			want: "google_cloud_scheduler_job.poll_batches calls poll_batches as trigger, which may not invoke it",
		},
		{
			name:  "probe: viewer instead of publisher on the dead-letter topic",
			edits: []edit{{"iam.tf", "  topic  = google_pubsub_topic.dead_letter.id\n  role   = \"roles/pubsub.publisher\"", "  topic  = google_pubsub_topic.dead_letter.id\n  role   = \"roles/pubsub.viewer\""}},
			want:  "the Pub/Sub service agent may not publish to the dead-letter topic dead_letter",
		},
		{
			name:   "probe: a string for a number",
			edits:  []edit{{"pubsub.tf", "never redelivered beside itself.\n  ack_deadline_seconds = 600", "never redelivered beside itself.\n  ack_deadline_seconds = \"600\""}},
			want:   `ack_deadline_seconds is a number, given the string "600"`,
			schema: true,
		},
		{
			name:   "a word for a number",
			edits:  []edit{{"functions.tf", "max_instance_count               = 1\n", "max_instance_count               = \"one\"\n"}},
			want:   `max_instance_count is a number, given the string "one"`,
			schema: true,
		},
		{
			name:   "a string variable for a number",
			edits:  []edit{{"pubsub.tf", "never redelivered beside itself.\n  ack_deadline_seconds = 600", "never redelivered beside itself.\n  ack_deadline_seconds = var.max_event_age"}},
			want:   "ack_deadline_seconds must be number",
			schema: true,
		},

		// ---- schema and references ----
		{
			name:   "misspelled attribute",
			edits:  []edit{{"pubsub.tf", "never redelivered beside itself.\n  ack_deadline_seconds = 600", "never redelivered beside itself.\n  ack_deadline_second = 600"}},
			want:   "unknown argument google_pubsub_subscription.requests.ack_deadline_second",
			schema: true,
		},
		{
			name:   "misspelled nested attribute",
			edits:  []edit{{"functions.tf", "    ingress_settings                 = \"ALLOW_ALL\"", "    ingress_setting                  = \"ALLOW_ALL\""}},
			want:   "unknown argument google_cloudfunctions2_function.generate.service_config.ingress_setting",
			schema: true,
		},
		{
			name:   "misspelled block",
			edits:  []edit{{"pubsub.tf", "  dead_letter_policy {\n    dead_letter_topic     = google_pubsub_topic.dead_letter.id", "  deadletter_policy {\n    dead_letter_topic     = google_pubsub_topic.dead_letter.id"}},
			want:   "unknown block google_pubsub_subscription.requests.deadletter_policy",
			schema: true,
		},
		{
			name:   "misspelled dynamic block",
			edits:  []edit{{"storage.tf", "dynamic \"lifecycle_rule\" {\n    for_each = var.upload_retention_days", "dynamic \"lifecycle_rules\" {\n    for_each = var.upload_retention_days"}},
			want:   "unknown block google_storage_bucket.uploads.lifecycle_rules",
			schema: true,
		},
		{
			name:   "block written as an argument",
			edits:  []edit{{"batch.tf", "  retry_config {\n    retry_count = 0\n  }", "  retry_config = {\n    retry_count = 0\n  }"}},
			want:   "google_cloud_scheduler_job.poll_batches.retry_config is a block, not an argument",
			schema: true,
		},
		{
			name:   "block that may appear once, twice",
			edits:  []edit{{"batch.tf", "  retry_config {\n    retry_count = 0\n  }", "  retry_config {\n    retry_count = 0\n  }\n  retry_config {\n    retry_count = 1\n  }"}},
			want:   "google_cloud_scheduler_job.poll_batches.retry_config may appear once",
			schema: true,
		},
		{
			name:   "computed attribute set",
			edits:  []edit{{"batch.tf", "  time_zone   = \"Etc/UTC\"", "  time_zone   = \"Etc/UTC\"\n  state       = \"ENABLED\""}},
			want:   "google_cloud_scheduler_job.poll_batches.state is computed by the provider and cannot be set",
			schema: true,
		},
		{
			name:   "unknown resource type",
			edits:  []edit{{"pubsub.tf", `resource "google_pubsub_topic" "requests"`, `resource "google_pubsub_topics" "requests"`}},
			want:   `resource type "google_pubsub_topics" does not exist in the providers`,
			schema: true,
		},
		{
			name:   "attribute the resource does not have",
			edits:  []edit{{"batch.tf", "uri         = google_cloudfunctions2_function.poll_batches.service_config[0].uri", "uri         = google_cloudfunctions2_function.poll_batches.service_config[0].url"}},
			want:   `google_cloudfunctions2_function.poll_batches.service_config has no attribute "url"`,
			schema: true,
		},
		{
			name:  "undeclared variable",
			edits: []edit{{"batch.tf", "var.batch_poll_minutes", "var.batch_poll_minute"}},
			want:  "refers to var.batch_poll_minute, which is not declared",
		},
		{
			name:  "counted resource without an index",
			edits: []edit{{"functions.tf", "secret     = google_secret_manager_secret.webhook[0].secret_id", "secret     = google_secret_manager_secret.webhook.secret_id"}},
			want:  "google_secret_manager_secret.webhook has count or for_each: refer to one instance",
		},

		// ---- the defects ----
		{
			name:  "1: build account cannot read gcf-v2-sources",
			edits: []edit{{"iam.tf", `title       = "gcf-v2-sources only"`, `title       = "source only"`}, {"iam.tf", "resource.name == \\\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\\\" || resource.name.startsWith(\\\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}/\\\")", "resource.name.startsWith(\\\"projects/_/buckets/${local.source_bucket}/\\\")"}},
			want:  "the build account may not read gcf-v2-sources",
		},
		{
			name:  "3: an API left out",
			edits: []edit{{"apis.tf", "      \"cloudscheduler.googleapis.com\", # PollBatches\n", ""}},
			want:  "google_cloud_scheduler_job needs cloudscheduler.googleapis.com, which Terraform does not enable",
		},
		{
			name:  "3: APIs disabled on destroy",
			edits: []edit{{"apis.tf", "  disable_on_destroy = false\n", "  disable_on_destroy = true\n"}},
			want:  "must set disable_on_destroy = false",
		},
		{
			name:  "4 and 12: functions do not wait for IAM",
			edits: []edit{{"functions.tf", "  depends_on = [time_sleep.iam]\n}\n\n# OnMessage", "}\n\n# OnMessage"}},
			want:  "function generate must wait for IAM to propagate",
		},
		{
			name:  "5: the key in state",
			edits: []edit{{"secrets.tf", "  secret_data_wo         = var.gemini_api_key != null ? var.gemini_api_key : \"\"\n", "  secret_data            = var.gemini_api_key\n"}},
			want:  "sets secret_data, which Terraform stores in state",
		},
		{
			name:  "5: a plan without the key could write an empty secret",
			edits: []edit{{"secrets.tf", "      condition     = var.gemini_api_key != null || lookup(local.applied_versions, \"${var.name_prefix}-gemini-api-key\", 0) == var.gemini_api_key_version\n", "      condition     = true\n"}},
			want:  "google_secret_manager_secret_version.gemini_api_key needs a precondition against local.applied_versions",
		},
		{
			name:  "6: metric validation on a new metric",
			edits: []edit{{"monitoring.tf", "      # As above: the metric is new.\n      disable_metric_validation = true\n", ""}},
			want:  "alert spend_rate queries a log-based metric created in the same apply",
		},
		{
			name:  "7: PollBatches missing from monitoring",
			edits: []edit{{"monitoring.tf", "local.poll_batches_name, ", ""}},
			want:  "function poll_batches is missing from local.function_names",
		},
		{
			name:  "8: spend guard not set",
			edits: []edit{{"main.tf", "      GENIMG_CALLS_PER_MINUTE  = tostring(var.calls_per_minute)\n", ""}},
			want:  "does not set GENIMG_CALLS_PER_MINUTE",
		},
		{
			name:  "9: Vertex AI agent cannot write batch predictions",
			edits: []edit{{"iam.tf", "  role   = \"roles/storage.objectUser\"\n  member = local.vertex_agent", "  role   = \"roles/storage.objectViewer\"\n  member = local.vertex_agent"}},
			want:  "the Vertex AI service agent must write batch predictions under batches/",
		},
		{
			name:  "10: dead letters after ten deliveries",
			edits: []edit{{"variables.tf", "  type        = number\n  default     = 100\n", "  type        = number\n  default     = 10\n"}},
			want:  "requests dead-letters after 10 deliveries",
		},
		{
			name:  "11: zip without a fixed file mode",
			edits: []edit{{"storage.tf", "  output_file_mode = \"0644\"\n", ""}},
			want:  "archive_file.source needs output_file_mode",
		},
		{
			name:  "11: source object replaced destroy-first",
			edits: []edit{{"storage.tf", "    create_before_destroy = true\n", "    create_before_destroy = false\n"}},
			want:  "google_storage_bucket_object.source needs lifecycle { create_before_destroy = true }",
		},
		{
			name:  "11: floating provider version",
			edits: []edit{{"versions.tf", `version = "7.45.0"`, `version = "~> 7.0"`}},
			want:  `provider google version "~> 7.0", want exactly 7.45.0`,
		},
		{
			name:  "11: lock file at another version",
			edits: []edit{{".terraform.lock.hcl", `version     = "2.8.0"`, `version     = "2.7.1"`}},
			want:  `hashicorp/archive is locked at "2.7.1", want 2.8.0`,
		},
		{
			name:  "11: golang image from Docker Hub, floating",
			edits: []edit{{"cloudbuild.yaml", "  - id: vet\n    name: mirror.gcr.io/library/golang:${_GO_VERSION}", "  - id: vet\n    name: golang:1.26"}},
			want:  "step vet must run mirror.gcr.io/library/golang: vet",
		},
		{
			name:  "11: floating Terraform image",
			edits: []edit{{"cloudbuild.yaml", `_TF_VERSION: "1.11.4"`, `_TF_VERSION: "1.11"`}},
			want:  "image hashicorp/terraform:1.11 is not pinned to an exact version",
		},
		{
			name:  "11: cloudbuild without tflint",
			edits: []edit{{"cloudbuild.yaml", "  - id: tflint\n", "  - id: lint\n"}},
			want:  "no step with id tflint",
		},
		{
			name:  "11: modules downloaded per step",
			edits: []edit{{"cloudbuild.yaml", "      path: /go/pkg/mod\n", "      path: /tmp/mod\n"}},
			want:  "options.volumes must keep /go/pkg/mod across steps",
		},
		{
			name:  "12: front door shares the workers' account",
			edits: []edit{{"functions.tf", `service_account_email            = google_service_account.runtime["front"].email`, `service_account_email            = google_service_account.runtime["worker"].email`}},
			want:  "generate faces the internet (ALLOW_ALL) and shares its account runtime[worker]",
		},
		{
			name:  "12: the whole output bucket",
			edits: []edit{{"iam.tf", "  condition {\n    title       = \"genimg ${each.key} writes\"\n    description = \"Objects under ${join(\", \", local.output_access[each.key].write)} and listings of them.\"\n    expression  = local.prefix_condition[each.key].write\n  }\n", ""}},
			want:  "runtime_writes_outputs grants on the shared output bucket without a condition",
		},
		{
			name:  "12: aiplatform.user instead of the narrow role",
			edits: []edit{{"iam.tf", "  role     = google_project_iam_custom_role.vertex_caller[0].name", "  role     = \"roles/aiplatform.user\""}},
			want:  "grants roles/aiplatform.user to runtime[worker], broader than or outside the README's table",
		},
		{
			name:  "12: a role nobody has heard of",
			edits: []edit{{"iam.tf", "  role    = \"roles/eventarc.eventReceiver\"", "  role    = \"roles/eventarc.eventreceiver\""}},
			want:  "grants roles/eventarc.eventreceiver, which is not a predefined role",
		},
		{
			name:  "12: a prefix without a lifecycle rule",
			edits: []edit{{"main.tf", "      \"batches/\"           = var.batch_retention_days\n", ""}},
			want:  "genimg writes under batches/ but local.retention has no entry for it",
		},
		{
			name:  "runtime off go.mod's version",
			edits: []edit{{"functions.tf", "runtime         = \"go126\"\n    entry_point     = \"PollBatches\"", "runtime         = \"go125\"\n    entry_point     = \"PollBatches\""}},
			want:  `poll_batches runs "go125", but go.mod says go126`,
		},

		// ---- the front door, callbacks, held jobs, traces ----
		{
			name: "12: the front door mounts the model key",
			edits: []edit{{"functions.tf", "    environment_variables = merge(local.env, { GENIMG_ROLE = \"front\" })\n", `    environment_variables = merge(local.env, { GENIMG_ROLE = "front" })
    dynamic "secret_environment_variables" {
      for_each = local.gemini_api_key
      content {
        key        = "GEMINI_API_KEY"
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
`}},
			want: "generate faces the internet (ALLOW_ALL) and mounts the model key GEMINI_API_KEY",
		},
		{
			name:  "12: the front door may read the model key",
			edits: []edit{{"secrets.tf", "for_each  = var.backend == \"gemini-api\" ? local.model_callers : toset([])", "for_each  = var.backend == \"gemini-api\" ? toset([\"front\", \"worker\", \"poller\"]) : toset([])"}},
			want:  "generate faces the internet and its account runtime[front] may read the model key",
		},
		{
			name:  "12: the front door may call Vertex AI",
			edits: []edit{{"iam.tf", "for_each = var.backend == \"vertex\" ? local.model_callers : toset([])", "for_each = var.backend == \"vertex\" ? toset([\"front\", \"worker\", \"poller\"]) : toset([])"}},
			want:  "grants custom:vertex_caller to runtime[front], broader than or outside the README's table",
		},
		{
			name:  "12: the front door without its role",
			edits: []edit{{"functions.tf", "merge(local.env, { GENIMG_ROLE = \"front\" })", "local.env"}},
			want:  `generate faces the internet (ALLOW_ALL) but sets GENIMG_ROLE="all"`,
		},
		{
			name:  "a function that runs jobs without the key",
			edits: []edit{{"functions.tf", "merge(local.env, { GENIMG_ROLE = \"callback\" })", "merge(local.env, { GENIMG_ROLE = \"all\" })"}},
			want:  "on_completion runs jobs (GENIMG_ROLE=all) without GEMINI_API_KEY",
		},
		{
			name:  "OnCompletion not deployed",
			edits: []edit{{"functions.tf", `entry_point     = "OnCompletion"`, `entry_point     = "OnMessage"`}},
			want:  "function.go registers OnCompletion, but no function deploys it",
		},
		{
			name:  "the callback secret on some functions only",
			edits: []edit{{"functions.tf", "GENIMG_ROLE = \"callback\" })\n\n    dynamic \"secret_environment_variables\" {\n      for_each = local.callback_secret", "GENIMG_ROLE = \"callback\" })\n\n    dynamic \"secret_environment_variables\" {\n      for_each = []"}},
			want:  "on_completion does not mount GENIMG_CALLBACK_SECRET though other functions do",
		},
		{
			name:  "the callback secret in plain environment",
			edits: []edit{{"main.tf", "      GENIMG_CALLBACK_TIMEOUT = var.callback_timeout\n", "      GENIMG_CALLBACK_TIMEOUT = var.callback_timeout\n      GENIMG_CALLBACK_SECRET  = \"whsec_x\"\n"}},
			want:  "sets secret GENIMG_CALLBACK_SECRET in plain environment_variables",
		},
		{
			name:  "the trigger may not invoke OnCompletion",
			edits: []edit{{"iam.tf", "name     = google_cloudfunctions2_function.on_completion.service_config[0].service", "name     = google_cloudfunctions2_function.on_message.service_config[0].service"}},
			want:  "google_pubsub_subscription.callbacks calls on_completion as trigger, which may not invoke it",
		},
		{
			name:  "Pub/Sub may not dead-letter callbacks",
			edits: []edit{{"iam.tf", "  topic  = google_pubsub_topic.callbacks_dead_letter.id\n  role   = \"roles/pubsub.publisher\"", "  topic  = google_pubsub_topic.callbacks_dead_letter.id\n  role   = \"roles/pubsub.viewer\""}},
			want:  "the Pub/Sub service agent may not publish to the dead-letter topic callbacks_dead_letter",
		},
		{
			name:  "dead-lettered callbacks kept nowhere",
			edits: []edit{{"pubsub.tf", "  topic                      = google_pubsub_topic.callbacks_dead_letter.id", "  topic                      = google_pubsub_topic.dead_letter.id"}},
			want:  "callbacks dead-letters to callbacks_dead_letter, which no pull subscription keeps",
		},
		{
			name:  "callbacks kept under a day",
			edits: []edit{{"pubsub.tf", `message_retention_duration = "604800s"`, `message_retention_duration = "3600s"`}},
			want:  "callbacks keeps events 1h0m0s, less than 24h0m0s",
		},
		{
			name:  "callbacks without the filter",
			edits: []edit{{"pubsub.tf", "  filter = \"attributes.genimg-callback = \\\"true\\\"\"\n", ""}},
			want:  "callbacks must filter on attributes.genimg-callback",
		},
		{
			name:  "PollBatches may not requeue held jobs",
			edits: []edit{{"iam.tf", `request_publishers    = toset(["front", "poller"])`, `request_publishers    = toset(["front"])`}},
			want:  "poll_batches resumes held jobs onto the requests topic, but runtime[poller] may not publish there",
		},
		{
			name:  "PollBatches may not write held/",
			edits: []edit{{"main.tf", "    poller = {\n      write = concat([\"jobs/\", local.image_prefix, \"spend/\", \"batches/\", \"caches/\", \"held/\"]", "    poller = {\n      write = concat([\"jobs/\", local.image_prefix, \"spend/\", \"batches/\", \"caches/\"]"}},
			want:  "poll_batches resumes held jobs, but runtime[poller] may not write held/",
		},
		{
			name:  "held/ without a lifecycle rule",
			edits: []edit{{"main.tf", "      \"held/\" = 2\n", ""}},
			want:  "genimg writes under held/ but local.retention has no entry for it",
		},
		{
			name:  "spans without cloudtrace.agent",
			edits: []edit{{"iam.tf", `k => v if var.trace_exporter == "cloudtrace" }`, `k => v if false }`}},
			want:  "sends spans to Cloud Trace (GENIMG_TRACE_EXPORTER=cloudtrace) as runtime[front], which lacks roles/cloudtrace.agent",
		},
		{
			name:  "Cloud Trace API not enabled",
			edits: []edit{{"apis.tf", "      \"cloudtrace.googleapis.com\",     # spans (GENIMG_TRACE_EXPORTER=cloudtrace)\n", ""}},
			want:  "needs cloudtrace.googleapis.com enabled",
		},

		// ---- entry points and environment ----
		{
			name:  "misspelled entry point",
			edits: []edit{{"functions.tf", `entry_point     = "OnMessage"`, `entry_point     = "OnMesage"`}},
			want:  `entry_point "OnMesage" is not registered in function.go`,
		},
		{
			name:  "entry point from a variable",
			edits: []edit{{"functions.tf", `entry_point     = "OnUpload"`, `entry_point     = var.model`}},
			want:  "must be a literal name",
		},
		{
			name:     "later registration counts",
			edits:    []edit{{"functions.tf", `entry_point     = "OnUpload"`, `entry_point     = "Later"`}},
			function: strings.Replace(strings.Replace(functionGoFixture, "\tfunctions.CloudEvent(\"OnUpload\", onUpload)\n", "", 1), "}\n", "\tfunctions.HTTP(\"Later\", later)\n}\n", 1),
		},
		{
			name:     "renamed framework import",
			function: strings.NewReplacer(`import "github`, `import ff "github`, "functions.", "ff.").Replace(functionGoFixture),
		},
		{
			name:     "entry point missing from function.go",
			function: strings.Replace(functionGoFixture, `functions.CloudEvent("OnUpload", onUpload)`, "", 1),
			want:     `entry_point "OnUpload" is not registered`,
		},
		{
			name:  "unknown variable",
			edits: []edit{{"main.tf", "GENIMG_MAX_EVENT_AGE        = var.max_event_age", "GENIMG_MAX_EVENT_AG         = var.max_event_age"}},
			want:  "sets GENIMG_MAX_EVENT_AG, which config.LoadConfig does not read",
		},
		{
			name:  "unknown variable in a conditional",
			edits: []edit{{"main.tf", "GOOGLE_CLOUD_LOCATION     = var.vertex_location", "GOOGLE_CLOUD_REGION       = var.vertex_location"}},
			want:  "sets GOOGLE_CLOUD_REGION, which config.LoadConfig does not read",
		},
		{
			name:  "unknown secret variable",
			edits: []edit{{"functions.tf", `key        = "GENIMG_WEBHOOK_SECRET"`, `key        = "GENIMG_WEBHOOK_SECRETS"`}},
			want:  `sets secret variable "GENIMG_WEBHOOK_SECRETS"`,
		},
		{
			name:  "secret in plain environment",
			edits: []edit{{"main.tf", "GENIMG_MODEL                = var.model", "GENIMG_MODEL                = var.model\n      GEMINI_API_KEY              = \"AIza-not-a-key\""}},
			want:  "sets secret GEMINI_API_KEY in plain environment_variables",
		},
		{
			name:  "function without the secret's grant",
			edits: []edit{{"iam.tf", `model_callers = toset(["worker", "poller"])`, `model_callers = toset(["worker"])`}},
			want:  "poll_batches mounts secret gemini_api_key but runs as runtime[poller], which may not read it",
		},

		// ---- identities, triggers, public access ----
		{
			name:  "missing runtime service account",
			edits: []edit{{"functions.tf", "    service_account_email            = google_service_account.runtime[\"front\"].email\n", ""}},
			want:  "generate.service_config has no service_account_email",
		},
		{
			name:  "default build service account",
			edits: []edit{{"functions.tf", "    entry_point     = \"OnUpload\"\n    service_account = google_service_account.build.id", "    entry_point     = \"OnUpload\"\n    service_account = \"projects/p/serviceAccounts/123-compute@developer.gserviceaccount.com\""}},
			want:  "on_upload.build_config.service_account must refer to a google_service_account",
		},
		{
			name:  "missing trigger service account",
			edits: []edit{{"functions.tf", "    retry_policy          = \"RETRY_POLICY_RETRY\"\n    service_account_email = google_service_account.trigger.email\n", "    retry_policy          = \"RETRY_POLICY_RETRY\"\n"}},
			want:  "on_upload.event_trigger has no service_account_email",
		},
		{
			name:  "trigger cannot receive events",
			edits: []edit{{"iam.tf", "resource \"google_project_iam_member\" \"trigger_receives_events\" {\n  project = var.project_id\n  role    = \"roles/eventarc.eventReceiver\"", "resource \"google_project_iam_member\" \"trigger_receives_events\" {\n  project = var.project_id\n  role    = \"roles/run.invoker\""}},
			want:  "lacks roles/eventarc.eventReceiver on the project",
		},
		{
			name:  "storage agent cannot publish upload events",
			edits: []edit{{"iam.tf", "resource \"google_project_iam_member\" \"gcs_publishes_events\" {\n  count   = var.upload_via == \"eventarc\" ? 1 : 0", "resource \"google_project_iam_member\" \"gcs_publishes_events\" {\n  count   = 0"}},
			want:  "is a storage trigger, but the Cloud Storage service agent may not publish",
		},
		{
			name:  "storage agent cannot publish notifications",
			edits: []edit{{"iam.tf", "resource \"google_pubsub_topic_iam_member\" \"gcs_publishes_requests\" {\n  count  = var.upload_via == \"notification\" ? 1 : 0", "resource \"google_pubsub_topic_iam_member\" \"gcs_publishes_requests\" {\n  count  = 0"}},
			want:  "notification uploads publishes to requests, but the Cloud Storage service agent may not",
		},
		{
			name:  "retries off",
			edits: []edit{{"functions.tf", `retry_policy          = "RETRY_POLICY_RETRY"`, `retry_policy          = "RETRY_POLICY_DO_NOT_RETRY"`}},
			want:  `on_upload.event_trigger must set retry_policy = "RETRY_POLICY_RETRY"`,
		},
		{
			name:  "unsigned push",
			edits: []edit{{"pubsub.tf", "      service_account_email = google_service_account.trigger.email\n      audience              = google_cloudfunctions2_function.on_message", "      audience              = google_cloudfunctions2_function.on_message"}},
			want:  "requests.push_config.oidc_token has no service_account_email",
		},
		{
			name:  "push without dead letters",
			edits: []edit{{"pubsub.tf", "  dead_letter_policy {\n    dead_letter_topic     = google_pubsub_topic.dead_letter.id\n    max_delivery_attempts = var.max_delivery_attempts\n  }\n", ""}},
			want:  "push subscription requests has no dead_letter_policy",
		},
		{
			name: "allUsers without the webhook secret",
			edits: []edit{{"iam.tf", `  lifecycle {
    precondition {
      condition     = var.public_webhook && var.webhook_secret_version > 0
      error_message = "public_webhook needs webhook_secret_version: without signatures anyone could spend the model budget."
    }
  }
`, ""}},
			want: "allUsers without the webhook secret: google_cloud_run_v2_service_iam_member.generate_public",
		},
		{
			name:  "allUsers outside public_webhook",
			edits: []edit{{"iam.tf", "count    = var.public_webhook ? 1 : 0", "count    = 1"}},
			want:  "allUsers outside public_webhook",
		},
		{
			name:  "allUsers on a bucket",
			edits: []edit{{"iam.tf", "  role   = \"roles/storage.objectViewer\"\n  member = google_service_account.build.member\n}", "  role   = \"roles/storage.objectViewer\"\n  member = \"allUsers\"\n}"}},
			want:  "allUsers outside public_webhook: google_storage_bucket_iam_member.build_reads_source",
		},
		{
			name:  "public_webhook accepted without the secret",
			edits: []edit{{"variables.tf", `condition     = !var.public_webhook || var.webhook_secret_version > 0`, `condition     = true`}},
			want:  "variable public_webhook needs a validation",
		},

		// ---- state, format, Cloud Build ----
		{
			name:  "no backend",
			edits: []edit{{"versions.tf", "  backend \"gcs\" {}\n", ""}},
			want:  "want exactly one backend block (gcs), found 0",
		},
		{
			name:  "local backend",
			edits: []edit{{"versions.tf", `backend "gcs" {}`, `backend "local" {}`}},
			want:  `backend "local": state must live in a gcs backend`,
		},
		{
			name:  "bucket in the backend",
			edits: []edit{{"versions.tf", `backend "gcs" {}`, "backend \"gcs\" {\n    bucket = \"my-state\"\n  }"}},
			want:  "keep it a partial configuration",
		},
		{
			name:  "Terraform without write-only arguments",
			edits: []edit{{"versions.tf", `required_version = ">= 1.11.0, < 2.0.0"`, `required_version = ">= 1.9"`}},
			want:  `required_version ">= 1.9"`,
		},
		{
			name:  "not formatted",
			edits: []edit{{"pubsub.tf", "  name  = \"${var.name_prefix}-requests-push\"", "  name = \"${var.name_prefix}-requests-push\""}},
			want:  "pubsub.tf:27: not formatted",
		},
		{
			name:  "syntax error",
			edits: []edit{{"outputs.tf", `output "generate_url" {`, `output "generate_url" {{`}},
			want:  "outputs.tf:1:",
		},
		{
			name:  "cloudbuild: undeclared substitution",
			edits: []edit{{"cloudbuild.yaml", "-var=region=${_REGION}", "-var=region=${REGION}"}},
			want:  "refers to $REGION, which is neither built in nor declared",
		},
		{
			name:  "cloudbuild: user substitution without underscore",
			edits: []edit{{"cloudbuild.yaml", "  _REGION: us-central1", "  _REGION: us-central1\n  REGION: us-central1"}},
			want:  "user substitution REGION must start with _",
		},
		{
			name:  "cloudbuild: no service account",
			edits: []edit{{"cloudbuild.yaml", "serviceAccount: projects/${PROJECT_ID}/serviceAccounts/genimg-deployer@${PROJECT_ID}.iam.gserviceaccount.com\n", ""}},
			want:  "serviceAccount must name the deployer",
		},
		{
			name:  "cloudbuild: default logging",
			edits: []edit{{"cloudbuild.yaml", "  logging: CLOUD_LOGGING_ONLY\n", ""}},
			want:  `options.logging is ""`,
		},
		{
			name:  "cloudbuild: misspelled key",
			edits: []edit{{"cloudbuild.yaml", "    entrypoint: go\n    args: [vet, ./...]", "    entrypoint: go\n    arg: [vet, ./...]"}},
			want:  "field arg not found",
		},
		{
			name:  "cloudbuild: step without id",
			edits: []edit{{"cloudbuild.yaml", "  - id: tf-validate\n    name:", "  - name:"}},
			want:  "step 7 has no id",
		},
		{
			name:  "cloudbuild: apply before plan",
			edits: []edit{{"cloudbuild.yaml", "id: tf-plan", "id: tf-plan-x"}, {"cloudbuild.yaml", "id: tf-apply", "id: tf-plan"}, {"cloudbuild.yaml", "id: tf-plan-x", "id: tf-apply"}},
			want:  "step tf-apply must run hashicorp/terraform: apply",
		},
		{
			name:  "cloudbuild: state bucket not given",
			edits: []edit{{"cloudbuild.yaml", "      - -backend-config=bucket=${_TF_STATE_BUCKET}\n", ""}},
			want:  "must give the state bucket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.schema && base.schema == nil {
				t.Skipf("needs the providers' schema at %s", schemaPath)
			}
			tr := base.clone()
			for _, e := range tt.edits {
				src := string(tr.tf[e.file])
				switch e.file {
				case "cloudbuild.yaml":
					src = string(tr.cloudbuild)
				case ".terraform.lock.hcl":
					src = string(tr.lock)
				}
				if n := strings.Count(src, e.old); n != 1 {
					t.Fatalf("seed: %q occurs %d times in %s, want once", e.old, n, e.file)
				}
				src = strings.Replace(src, e.old, e.new, 1)
				switch e.file {
				case "cloudbuild.yaml":
					tr.cloudbuild = []byte(src)
				case ".terraform.lock.hcl":
					tr.lock = []byte(src)
				default:
					tr.tf[e.file] = []byte(src)
				}
			}
			if tt.function != "" {
				tr.functionGo = []byte(tt.function)
			}
			got := check(tr)
			if tt.want == "" {
				if diff := cmp.Diff(problems(nil), got); diff != "" {
					t.Errorf("check (-want +got):\n%s", diff)
				}
				return
			}
			found := false
			for _, p := range got {
				found = found || strings.Contains(p, tt.want)
			}
			if !found {
				t.Errorf("check found no problem containing %q; found:\n%s", tt.want, strings.Join(got, "\n"))
			}
		})
	}
}

// TestKnownEnv pins the derivation of the known variables from
// config.LoadConfig: both backends' variables, and nothing invented.
func TestKnownEnv(t *testing.T) {
	known := knownEnv()
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"GENIMG_OUTPUT_BUCKET", true},
		{"GENIMG_LEASE", true},
		{"GEMINI_API_KEY", true},
		{"GOOGLE_GEMINI_BASE_URL", true},
		{"GOOGLE_VERTEX_BASE_URL", true}, // read only with GOOGLE_GENAI_USE_VERTEXAI=true
		{"LOG_EXECUTION_ID", true},
		{"GENIMG_OUTPUT_BUCKETS", false},
		{"PORT", false},
	} {
		if got := known[tt.name]; got != tt.want {
			t.Errorf("knownEnv()[%q] = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRegistered pins the function.go parse: registrations by the
// framework's functions only, under any import name.
func TestRegistered(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want map[string]bool
	}{
		{"entry points", functionGoFixture, map[string]bool{"Generate": true, "OnMessage": true, "OnUpload": true, "PollBatches": true, "OnCompletion": true}},
		{
			"other packages' HTTP calls do not count",
			"package genimg\nimport (\n\"net/http\"\n\"github.com/GoogleCloudPlatform/functions-framework-go/functions\"\n)\nfunc init() { functions.HTTP(\"Generate\", g); http.Handle(\"/x\", nil); other.HTTP(\"Nope\", g) }\n",
			map[string]bool{"Generate": true},
		},
		{"does not compile but parses", "package genimg\nimport \"github.com/GoogleCloudPlatform/functions-framework-go/functions\"\nfunc init() { functions.CloudEvent(\"OnMessage\", undefinedName) }\n", map[string]bool{"OnMessage": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := registered([]byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("registered (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSchema pins what the checks read from the providers' schema, so that
// a schema file the parser misreads cannot pass every configuration.
func TestSchema(t *testing.T) {
	sc, err := sharedSchema()
	if err != nil {
		t.Fatal(err)
	}
	if sc == nil {
		t.Skipf("no providers' schema at %s (a clone without shared/): the schema checks did not run", schemaPath)
	}
	sub := sc.resources["google_pubsub_subscription"]
	if sub == nil || !sub.Attributes["topic"].Required || sub.Attributes["ack_deadline_seconds"].ty != cty.Number {
		t.Errorf("google_pubsub_subscription: want topic required and ack_deadline_seconds a number")
	}
	if nb := sub.BlockTypes["dead_letter_policy"]; nb == nil || nb.MaxItems != 1 {
		t.Errorf("google_pubsub_subscription.dead_letter_policy: want a block with max_items 1")
	}
	if sv := sc.resources["google_secret_manager_secret_version"]; sv == nil || !sv.Attributes["secret_data_wo"].WriteOnly {
		t.Errorf("google_secret_manager_secret_version.secret_data_wo: want write_only")
	}
	for _, typ := range []string{"time_sleep", "google_project_service", "google_cloudfunctions2_function"} {
		if sc.resources[typ] == nil {
			t.Errorf("resource type %s missing from the schema", typ)
		}
	}
	if sc.dataSources["archive_file"] == nil || sc.providers["google"] == nil {
		t.Errorf("want the archive_file data source and the google provider block")
	}
	if sc.resources["google_project_service_identity"] != nil {
		t.Errorf("google_project_service_identity is google-beta only; if google %s has it, use it for the service agents (main.tf)", providerVersions["google"])
	}
}

// TestDeployerDocs checks the deployer's roles in the README's bootstrap
// against what the configuration manages, and fails on the README's old
// mistakes.
func TestDeployerDocs(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := parsedModule(t)
	for _, tt := range []struct{ name, old, new, want string }{
		{name: "as written"},
		{"no Scheduler admin", "roles/cloudscheduler.admin ", "", "the deployer lacks roles/cloudscheduler.admin"},
		{"project-wide actAs", "roles/logging.logWriter; do", "roles/logging.logWriter roles/iam.serviceAccountUser; do", "the deployer gets roles/iam.serviceAccountUser"},
		{"a grant the condition does not admit", "'roles/eventarc.eventReceiver', ", "", "grants roles/eventarc.eventReceiver on the project, which the deployer's conditional"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := string(readme)
			if tt.old != "" {
				if strings.Count(doc, tt.old) != 1 {
					t.Fatalf("seed: %q occurs %d times", tt.old, strings.Count(doc, tt.old))
				}
				doc = strings.Replace(doc, tt.old, tt.new, 1)
			}
			var got problems
			checkDeployerDocs(doc, m, &got)
			if tt.want == "" {
				if len(got) > 0 {
					t.Errorf("problems:\n%s", strings.Join(got, "\n"))
				}
				return
			}
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tt.want) }) {
				t.Errorf("no problem containing %q; found:\n%s", tt.want, strings.Join(got, "\n"))
			}
		})
	}
}

// TestGoMemoryLimit: GOMEMLIMIT is the given share of the function's
// memory, in MiB, or unset.
func TestGoMemoryLimit(t *testing.T) {
	m := parsedModule(t)
	for _, tt := range []struct {
		memory  string
		percent int
		want    string // "" for unset
	}{
		{"1Gi", 80, "819MiB"},
		{"512Mi", 80, "409MiB"},
		{"2Gi", 90, "1843MiB"},
		{"1Gi", 0, ""},
	} {
		ev := newEvaluator(m, map[string]cty.Value{"memory": cty.StringVal(tt.memory), "go_memory_limit_percent": cty.NumberIntVal(int64(tt.percent))})
		env := ev.local("env")
		got := ""
		if env.IsKnown() && env.Type().IsObjectType() && env.Type().HasAttribute("GOMEMLIMIT") {
			got = env.GetAttr("GOMEMLIMIT").AsString()
		} else if !env.IsKnown() || !env.Type().IsObjectType() {
			t.Fatalf("memory %s: local.env = %#v, want an object", tt.memory, env)
		}
		if got != tt.want {
			t.Errorf("memory %s, %d %%: GOMEMLIMIT = %q, want %q", tt.memory, tt.percent, got, tt.want)
		}
	}
}

// TestGoMaxProcs: GOMAXPROCS is the instance's vCPUs, rounded up, at least
// one — not the two Go would take in a container of one vCPU.
func TestGoMaxProcs(t *testing.T) {
	m := parsedModule(t)
	for _, tt := range []struct{ cpu, want string }{
		{"1", "1"}, {"2", "2"}, {"0.583", "1"}, {"1.5", "2"}, {"4", "4"},
	} {
		env := newEvaluator(m, map[string]cty.Value{"cpu": cty.StringVal(tt.cpu)}).local("env")
		if !env.IsKnown() || !env.Type().IsObjectType() || !env.Type().HasAttribute("GOMAXPROCS") {
			t.Fatalf("cpu %s: local.env = %#v, want an object with GOMAXPROCS", tt.cpu, env)
		}
		if got := env.GetAttr("GOMAXPROCS").AsString(); got != tt.want {
			t.Errorf("cpu %s: GOMAXPROCS = %q, want %q", tt.cpu, got, tt.want)
		}
	}
}

// parsedModule is this folder's configuration, parsed.
func parsedModule(t *testing.T) *module {
	t.Helper()
	tr, err := readTree(".")
	if err != nil {
		t.Fatal(err)
	}
	var p problems
	m := parse(tr, &p)
	if m == nil {
		t.Fatalf("parse: %v", p)
	}
	return m
}
