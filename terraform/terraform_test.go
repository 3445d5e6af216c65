package terraform

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
	}{
		{name: "as committed"},
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
			function: strings.Replace(functionGoFixture, "}\n", "\tfunctions.HTTP(\"Later\", later)\n}\n", 1),
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
			name:  "misspelled attribute",
			edits: []edit{{"pubsub.tf", "ack_deadline_seconds = 600", "ack_deadline_second = 600"}},
			want:  "unknown attribute google_pubsub_subscription.ack_deadline_second",
		},
		{
			name:  "misspelled nested attribute",
			edits: []edit{{"functions.tf", "max_instance_request_concurrency = var.concurrency\n    available_memory                 = var.memory\n    available_cpu                    = var.cpu\n    timeout_seconds                  = var.function_timeout_seconds\n    ingress_settings                 = \"ALLOW_ALL\"", "max_instance_request_concurrency = var.concurrency\n    available_memory                 = var.memory\n    available_cpu                    = var.cpu\n    timeout_second                   = var.function_timeout_seconds\n    ingress_settings                 = \"ALLOW_ALL\""}},
			want:  "unknown attribute google_cloudfunctions2_function.service_config.timeout_second",
		},
		{
			name:  "misspelled block",
			edits: []edit{{"pubsub.tf", "  dead_letter_policy {", "  deadletter_policy {"}},
			want:  "unknown block google_pubsub_subscription.deadletter_policy",
		},
		{
			name: "misspelled dynamic block",
			edits: []edit{{"storage.tf", `dynamic "lifecycle_rule" {
    for_each = var.upload_retention_days`, `dynamic "lifecycle_rules" {
    for_each = var.upload_retention_days`}},
			want: "unknown block google_storage_bucket.lifecycle_rules",
		},
		{
			name:  "unknown resource type",
			edits: []edit{{"pubsub.tf", `resource "google_pubsub_topic" "requests"`, `resource "google_pubsub_topics" "requests"`}},
			want:  `resource type "google_pubsub_topics" is not in the allow-list`,
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
			name:  "missing runtime service account",
			edits: []edit{{"functions.tf", "    service_account_email            = google_service_account.runtime.email\n    environment_variables            = local.env\n\n    dynamic \"secret_environment_variables\" {\n      for_each = var.backend == \"gemini-api\" ? [var.gemini_api_key_version] : []\n      content {\n        key        = \"GEMINI_API_KEY\"\n        project_id = var.project_id\n        secret     = google_secret_manager_secret.gemini_api_key[0].secret_id\n        version    = secret_environment_variables.value\n      }\n    }\n\n    dynamic \"secret_environment_variables\" {", "    environment_variables            = local.env\n\n    dynamic \"secret_environment_variables\" {\n      for_each = var.backend == \"gemini-api\" ? [var.gemini_api_key_version] : []\n      content {\n        key        = \"GEMINI_API_KEY\"\n        project_id = var.project_id\n        secret     = google_secret_manager_secret.gemini_api_key[0].secret_id\n        version    = secret_environment_variables.value\n      }\n    }\n\n    dynamic \"secret_environment_variables\" {"}},
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
			name:  "retries off",
			edits: []edit{{"functions.tf", `retry_policy          = "RETRY_POLICY_RETRY"`, `retry_policy          = "RETRY_POLICY_DO_NOT_RETRY"`}},
			want:  `on_upload.event_trigger must set retry_policy = "RETRY_POLICY_RETRY"`,
		},
		{
			name:  "unsigned push",
			edits: []edit{{"pubsub.tf", "      service_account_email = google_service_account.trigger.email\n", ""}},
			want:  "requests.push_config.oidc_token has no service_account_email",
		},
		{
			name:  "push without dead letters",
			edits: []edit{{"pubsub.tf", "  dead_letter_policy {\n    dead_letter_topic     = google_pubsub_topic.dead_letter.id\n    max_delivery_attempts = var.dead_letter_after\n  }\n", ""}},
			want:  "push subscription requests has no dead_letter_policy",
		},
		{
			name: "allUsers without the webhook secret",
			edits: []edit{{"iam.tf", `  lifecycle {
    precondition {
      condition     = var.public_webhook && var.webhook_secret_version != ""
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
			edits: []edit{{"iam.tf", "  member = google_service_account.build.member\n}", "  member = \"allUsers\"\n}"}},
			want:  "allUsers outside public_webhook: google_storage_bucket_iam_member.build_reads_source",
		},
		{
			name:  "public_webhook accepted without the secret",
			edits: []edit{{"variables.tf", `condition     = !var.public_webhook || var.webhook_secret_version != ""`, `condition     = true`}},
			want:  "variable public_webhook needs a validation",
		},
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
			name:  "old provider",
			edits: []edit{{"versions.tf", `version = "~> 7.0"`, `version = "~> 6.0"`}},
			want:  `provider google version "~> 6.0"`,
		},
		{
			name:  "not formatted",
			edits: []edit{{"pubsub.tf", "  name  = \"${var.name_prefix}-requests-push\"", "  name = \"${var.name_prefix}-requests-push\""}},
			want:  "pubsub.tf:21: not formatted",
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
			want:  "step 4 has no id",
		},
		{
			name:  "cloudbuild: apply before plan",
			edits: []edit{{"cloudbuild.yaml", "id: tf-plan", "id: tf-plan-x"}, {"cloudbuild.yaml", "id: tf-apply", "id: tf-plan"}, {"cloudbuild.yaml", "id: tf-plan-x", "id: tf-apply"}},
			want:  "step tf-apply must run hashicorp/terraform apply",
		},
		{
			name:  "cloudbuild: state bucket not given",
			edits: []edit{{"cloudbuild.yaml", "      - -backend-config=bucket=${_TF_STATE_BUCKET}\n", ""}},
			want:  "must give the state bucket",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := base.clone()
			for _, e := range tt.edits {
				src := string(tr.tf[e.file])
				if e.file == "cloudbuild.yaml" {
					src = string(tr.cloudbuild)
				}
				if n := strings.Count(src, e.old); n != 1 {
					t.Fatalf("seed: %q occurs %d times in %s, want once", e.old, n, e.file)
				}
				src = strings.Replace(src, e.old, e.new, 1)
				if e.file == "cloudbuild.yaml" {
					tr.cloudbuild = []byte(src)
				} else {
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
		{"entry points", functionGoFixture, map[string]bool{"Generate": true, "OnMessage": true, "OnUpload": true, "PollBatches": true}},
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
