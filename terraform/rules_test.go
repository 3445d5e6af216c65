package terraform

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// valueRules are the values the providers check only at apply time (the
// schema carries types, not allowed values), each with the page it comes
// from. A value not in the list is a problem; a computed value is skipped.
var valueRules = []struct {
	resource, path string
	allowed        []string
	source         string
}{
	{"google_cloudfunctions2_function", "build_config.runtime", []string{"go121", "go122", "go123", "go124", "go125", "go126"},
		"https://cloud.google.com/functions/docs/runtime-support (Go: go1NN, no dot)"},
	{"google_cloudfunctions2_function", "service_config.ingress_settings", []string{"ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"},
		"https://registry.terraform.io/providers/hashicorp/google/7.45.0/docs/resources/cloudfunctions2_function#ingress_settings-1"},
	{"google_cloudfunctions2_function", "event_trigger.retry_policy", []string{"RETRY_POLICY_UNSPECIFIED", "RETRY_POLICY_DO_NOT_RETRY", "RETRY_POLICY_RETRY"},
		"https://registry.terraform.io/providers/hashicorp/google/7.45.0/docs/resources/cloudfunctions2_function#retry_policy-1"},
	{"google_cloudfunctions2_function", "event_trigger.event_type", []string{"google.cloud.storage.object.v1.finalized"},
		"https://cloud.google.com/functions/docs/calling/storage (the event genimg's OnUpload decodes)"},
	{"google_storage_bucket", "lifecycle_rule.action.type", []string{"Delete", "SetStorageClass", "AbortIncompleteMultipartUpload"},
		"https://cloud.google.com/storage/docs/lifecycle#actions"},
	{"google_storage_bucket", "public_access_prevention", []string{"enforced", "inherited"},
		"https://registry.terraform.io/providers/hashicorp/google/7.45.0/docs/resources/storage_bucket#public_access_prevention-1"},
	{"google_secret_manager_secret_version", "deletion_policy", []string{"DELETE", "DISABLE", "ABANDON"},
		"https://registry.terraform.io/providers/hashicorp/google/7.45.0/docs/resources/secret_manager_secret_version#deletion_policy-1"},
	{"google_storage_notification", "payload_format", []string{"JSON_API_V1", "NONE"},
		"https://cloud.google.com/storage/docs/pubsub-notifications#payload"},
	{"google_cloud_scheduler_job", "http_target.http_method", []string{"POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"},
		"https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs#httpmethod"},
	{"google_monitoring_alert_policy", "combiner", []string{"AND", "OR", "AND_WITH_MATCHING_RESOURCE"},
		"https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies#conditioncombinertype"},
}

// knownRoles are the predefined roles genimg grants (or that its grants may
// be confused with), as listed at
// https://cloud.google.com/iam/docs/roles-permissions. A misspelled role is
// refused here rather than by the IAM API at apply time.
var knownRoles = map[string]bool{
	"roles/artifactregistry.writer": true, "roles/eventarc.eventReceiver": true, "roles/cloudtrace.agent": true,
	"roles/iam.serviceAccountOpenIdTokenCreator": true, "roles/iam.serviceAccountTokenCreator": true,
	"roles/iam.serviceAccountUser": true, "roles/logging.logWriter": true,
	"roles/pubsub.publisher": true, "roles/pubsub.subscriber": true, "roles/pubsub.viewer": true,
	"roles/run.invoker": true, "roles/secretmanager.secretAccessor": true,
	"roles/storage.objectUser": true, "roles/storage.objectViewer": true, "roles/storage.objectCreator": true,
	"roles/storage.objectAdmin": true, "roles/aiplatform.user": true, "roles/editor": true, "roles/owner": true,
}

// allowedRoles is README.md's "Identities" table: the roles each principal
// may hold. Principals are google_service_account names (runtime roles as
// runtime[KEY]), the service agents' locals, and the variables of people
// and callers. Anything else is a problem: no role broader than the table.
var allowedRoles = map[string][]string{
	// The front door never calls the model: no Vertex AI role (and no
	// model key: checkIAM).
	"runtime[front]":           {"roles/storage.objectUser", "roles/storage.objectViewer", "roles/pubsub.publisher", "roles/secretmanager.secretAccessor", "roles/cloudtrace.agent"},
	"runtime[worker]":          {"roles/storage.objectUser", "roles/storage.objectViewer", "roles/pubsub.publisher", "roles/secretmanager.secretAccessor", "roles/cloudtrace.agent", "custom:vertex_caller"},
	"runtime[poller]":          {"roles/storage.objectUser", "roles/storage.objectViewer", "roles/pubsub.publisher", "roles/secretmanager.secretAccessor", "roles/cloudtrace.agent", "custom:vertex_caller"},
	"runtime[callback]":        {"roles/secretmanager.secretAccessor", "roles/cloudtrace.agent"},
	"trigger":                  {"roles/eventarc.eventReceiver", "roles/run.invoker"},
	"build":                    {"roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer"},
	"client":                   {"roles/run.invoker"},
	"local.pubsub_agent":       {"roles/pubsub.publisher", "roles/pubsub.subscriber", "roles/iam.serviceAccountTokenCreator"},
	"local.scheduler_agent":    {"roles/iam.serviceAccountTokenCreator"},
	"local.gcs_agent":          {"roles/pubsub.publisher"},
	"local.vertex_agent":       {"roles/storage.objectViewer", "roles/storage.objectUser"},
	"var.deployer":             {"roles/iam.serviceAccountUser"},
	"var.http_invokers":        {"roles/run.invoker"},
	"var.client_impersonators": {"roles/iam.serviceAccountOpenIdTokenCreator"},
	"allUsers":                 {"roles/run.invoker"},
}

// grant is one IAM member resource, as far as it can be known offline.
type grant struct {
	b          *hclsyntax.Block
	principals []string // see allowedRoles
	roles      []string // literal roles, or custom:NAME
	target     string   // TYPE.NAME of what it is granted on, "project", or "" when unknown
	conditions []string // condition expressions, as source text
	absent     bool     // for_each or count is known to make no instance
}

func (g grant) name() string { return g.b.Labels[0] + "." + g.b.Labels[1] }

func (g grant) has(principal, role string) bool {
	return slices.Contains(g.principals, principal) && slices.Contains(g.roles, role)
}

// grants collects every *_iam_member resource.
func grants(m *module, ev *evaluator) []grant {
	var out []grant
	for _, b := range m.blocks {
		if b.Type != "resource" || !strings.HasSuffix(b.Labels[0], "_iam_member") {
			continue
		}
		g := grant{b: b}
		if keys, ok := forEachKeys(b, ev); ok && len(keys) == 0 {
			g.absent = true
		}
		if a, ok := b.Body.Attributes["count"]; ok {
			if v := ev.value(a.Expr); v.IsKnown() && v.Type() == cty.Number && v.RawEquals(cty.NumberIntVal(0)) {
				g.absent = true
			}
		}
		if a, ok := b.Body.Attributes["member"]; ok {
			g.principals = principalsOf(a.Expr, b, ev)
		}
		if a, ok := b.Body.Attributes["role"]; ok {
			g.roles = rolesOf(a.Expr, b, ev)
		}
		for _, attr := range []string{"bucket", "topic", "subscription", "secret_id", "name", "service_account_id", "project"} {
			a, ok := b.Body.Attributes[attr]
			if !ok {
				continue
			}
			if attr == "project" {
				if b.Labels[0] == "google_project_iam_member" {
					g.target = "project"
				}
				continue
			}
			for _, tr := range a.Expr.Variables() {
				if r := tr.RootName(); strings.HasPrefix(r, "google_") && len(tr) > 1 {
					g.target = r + "." + tr[1].(hcl.TraverseAttr).Name
				}
			}
		}
		for _, c := range blocksOf(b.Body, "condition") {
			if a, ok := c.Attributes["expression"]; ok {
				g.conditions = append(g.conditions, exprText(m, a.Expr))
			}
		}
		out = append(out, g)
	}
	return out
}

// exprText is an expression's source, with the locals it names expanded
// once, for conditions built in locals.
func exprText(m *module, e hclsyntax.Expression) string {
	text := string(e.Range().SliceBytes(m.files[e.Range().Filename].Bytes))
	for _, tr := range e.Variables() {
		if tr.RootName() == "local" {
			if def, ok := m.locals[tr[1].(hcl.TraverseAttr).Name]; ok {
				text += " " + string(def.Range().SliceBytes(m.files[def.Range().Filename].Bytes))
			}
		}
	}
	return text
}

// forEachKeys expands a block's for_each (keys of a map, values of a set)
// when it is known offline.
func forEachKeys(b *hclsyntax.Block, ev *evaluator) ([]string, bool) {
	a, ok := b.Body.Attributes["for_each"]
	if !ok {
		return nil, false
	}
	v := ev.value(a.Expr)
	return knownStrings(v, v.Type().IsMapType() || v.Type().IsObjectType())
}

// principalsOf names the principals a member expression stands for.
func principalsOf(e hclsyntax.Expression, b *hclsyntax.Block, ev *evaluator) []string {
	if s, ok := literalString(e); ok {
		return []string{s}
	}
	var out []string
	account := refTo(e, "google_service_account") != ""
	for _, tr := range e.Variables() {
		switch root := tr.RootName(); {
		case root == "google_service_account" && len(tr) > 1:
			name := tr[1].(hcl.TraverseAttr).Name
			if len(tr) > 2 {
				if ix, ok := tr[2].(hcl.TraverseIndex); ok && ix.Key.Type() == cty.String {
					out = append(out, fmt.Sprintf("%s[%s]", name, ix.Key.AsString()))
					continue
				}
			}
			if keys := eachKeysIn(e, b, ev); len(keys) > 0 {
				for _, k := range keys {
					out = append(out, fmt.Sprintf("%s[%s]", name, k))
				}
				continue
			}
			out = append(out, name)
		case root == "local" || root == "var":
			out = append(out, root+"."+tr[1].(hcl.TraverseAttr).Name)
		case root == "each" && !account:
			// each.value: whoever the for_each lists (lists of members,
			// not the flags that switch the grant on).
			if a, ok := b.Body.Attributes["for_each"]; ok {
				for _, ftr := range a.Expr.Variables() {
					name := ftr[1].(hcl.TraverseAttr).Name
					switch ftr.RootName() {
					case "local":
						out = append(out, "local."+name)
					case "var":
						if ty := ev.vars[name].Type(); ty.IsListType() || ty.IsSetType() {
							out = append(out, "var."+name)
						}
					}
				}
			}
		}
	}
	return out
}

// eachKeysIn returns the for_each keys when e indexes by each.key or
// each.value[0] (a setproduct pair).
func eachKeysIn(e hclsyntax.Expression, b *hclsyntax.Block, ev *evaluator) []string {
	uses := false
	for _, tr := range e.Variables() {
		uses = uses || tr.RootName() == "each"
	}
	if !uses {
		return nil
	}
	a, ok := b.Body.Attributes["for_each"]
	if !ok {
		return nil
	}
	v := ev.value(a.Expr)
	if keys, ok := knownStrings(v, v.Type().IsMapType() || v.Type().IsObjectType()); ok {
		// A map of "role/bucket" pairs keys the role first.
		for i, k := range keys {
			keys[i], _, _ = strings.Cut(k, "/")
		}
		slices.Sort(keys)
		return slices.Compact(keys)
	}
	return nil
}

// rolesOf names the roles a role expression stands for.
func rolesOf(e hclsyntax.Expression, b *hclsyntax.Block, ev *evaluator) []string {
	if s, ok := literalString(e); ok {
		return []string{s}
	}
	for _, tr := range e.Variables() {
		if tr.RootName() == "google_project_iam_custom_role" {
			return []string{"custom:" + tr[1].(hcl.TraverseAttr).Name}
		}
	}
	if keys, ok := forEachKeys(b, ev); ok {
		return keys
	}
	return nil
}

// delivery is something that calls a function as a service account: a push
// subscription, a Cloud Scheduler job, an event trigger.
type delivery struct {
	what, function, principal string
	rng                       hcl.Range
}

func refTo(e hclsyntax.Expression, typ string) string {
	for _, tr := range e.Variables() {
		if tr.RootName() == typ && len(tr) > 1 {
			return tr[1].(hcl.TraverseAttr).Name
		}
	}
	return ""
}

func deliveries(m *module, ev *evaluator) []delivery {
	var out []delivery
	sa := func(body *hclsyntax.Body, b *hclsyntax.Block) string {
		if a, ok := body.Attributes["service_account_email"]; ok {
			if ps := principalsOf(a.Expr, b, ev); len(ps) == 1 {
				return ps[0]
			}
		}
		return ""
	}
	for _, b := range m.resourcesOf("google_pubsub_subscription") {
		for _, pc := range blocksOf(b.Body, "push_config") {
			fn := ""
			if a, ok := pc.Attributes["push_endpoint"]; ok {
				fn = refTo(a.Expr, "google_cloudfunctions2_function")
			}
			for _, tok := range blocksOf(pc, "oidc_token") {
				out = append(out, delivery{"google_pubsub_subscription." + b.Labels[1], fn, sa(tok, b), b.DefRange()})
			}
		}
	}
	for _, b := range m.resourcesOf("google_cloud_scheduler_job") {
		for _, ht := range blocksOf(b.Body, "http_target") {
			fn := ""
			if a, ok := ht.Attributes["uri"]; ok {
				fn = refTo(a.Expr, "google_cloudfunctions2_function")
			}
			for _, tok := range blocksOf(ht, "oidc_token") {
				out = append(out, delivery{"google_cloud_scheduler_job." + b.Labels[1], fn, sa(tok, b), b.DefRange()})
			}
		}
	}
	for _, b := range m.resourcesOf("google_cloudfunctions2_function") {
		if none(b, ev) {
			continue
		}
		for _, et := range blocksOf(b.Body, "event_trigger") {
			out = append(out, delivery{"google_cloudfunctions2_function." + b.Labels[1] + ".event_trigger", b.Labels[1], sa(et, b), et.SrcRange})
		}
	}
	return out
}

// checkIAM applies genimg's own IAM rules: every delivery identity may
// invoke what it calls; event triggers may receive events; every agent has
// what its feature needs (dead-lettering); every function may read the
// secrets it mounts; grants on the shared output bucket are conditional;
// the front door shares no account; no principal holds a role outside the
// README's table; roles exist.
func checkIAM(m *module, ev *evaluator, p *problems) {
	gs := grants(m, ev)
	find := func(target, principal, role string) bool {
		for _, g := range gs {
			if !g.absent && (target == "" || g.target == target) && g.has(principal, role) {
				return true
			}
		}
		return false
	}
	for _, d := range deliveries(m, ev) {
		switch {
		case d.principal == "":
			p.add(d.rng, "%s: cannot tell which service account it calls as", d.what)
		case d.function == "":
			p.add(d.rng, "%s: cannot tell which function it calls", d.what)
		case !find("google_cloudfunctions2_function."+d.function, d.principal, "roles/run.invoker"):
			p.add(d.rng, "%s calls %s as %s, which may not invoke it: grant roles/run.invoker on its Cloud Run service", d.what, d.function, d.principal)
		}
		if strings.HasSuffix(d.what, ".event_trigger") && !find("project", d.principal, "roles/eventarc.eventReceiver") {
			p.add(d.rng, "%s delivers as %s, which lacks roles/eventarc.eventReceiver on the project", d.what, d.principal)
		}
	}
	// Dead-lettering: the Pub/Sub service agent publishes to the topic and
	// acknowledges on the subscription.
	for _, b := range m.resourcesOf("google_pubsub_subscription") {
		for _, dl := range blocksOf(b.Body, "dead_letter_policy") {
			a, ok := dl.Attributes["dead_letter_topic"]
			if !ok {
				continue
			}
			topic := refTo(a.Expr, "google_pubsub_topic")
			if !find("google_pubsub_topic."+topic, "local.pubsub_agent", "roles/pubsub.publisher") {
				p.add(dl.SrcRange, "the Pub/Sub service agent may not publish to the dead-letter topic %s (roles/pubsub.publisher): messages would never be dead-lettered", topic)
			}
			if !find("google_pubsub_subscription."+b.Labels[1], "local.pubsub_agent", "roles/pubsub.subscriber") {
				p.add(dl.SrcRange, "the Pub/Sub service agent may not acknowledge on %s (roles/pubsub.subscriber), which dead-lettering needs", b.Labels[1])
			}
		}
	}
	// Functions: the secrets they mount, and a front door of its own.
	type fn struct {
		name, principal string
		public          bool
	}
	var fns []fn
	for _, b := range m.resourcesOf("google_cloudfunctions2_function") {
		if none(b, ev) {
			continue
		}
		for _, sc := range blocksOf(b.Body, "service_config") {
			f := fn{name: b.Labels[1]}
			if a, ok := sc.Attributes["service_account_email"]; ok {
				if ps := principalsOf(a.Expr, b, ev); len(ps) == 1 {
					f.principal = ps[0]
				}
			}
			if a, ok := sc.Attributes["ingress_settings"]; ok {
				s, _ := literalString(a.Expr)
				f.public = s == "ALLOW_ALL"
			}
			fns = append(fns, f)
			for _, blk := range sc.Blocks {
				if blk.Type != "dynamic" && blk.Type != "secret_environment_variables" {
					continue
				}
				if blk.Type == "dynamic" && blk.Labels[0] != "secret_environment_variables" {
					continue
				}
				if fe, ok := blk.Body.Attributes["for_each"]; ok && blk.Type == "dynamic" {
					if v := ev.value(fe.Expr); v.IsKnown() && !v.IsNull() && v.CanIterateElements() && v.LengthInt() == 0 {
						continue // mounts nothing in this shape
					}
				}
				for _, secret := range secretsIn(m, blk.Body) {
					if !find("google_secret_manager_secret."+secret, f.principal, "roles/secretmanager.secretAccessor") {
						p.add(blk.DefRange(), "%s mounts secret %s but runs as %s, which may not read it (roles/secretmanager.secretAccessor)", f.name, secret, f.principal)
					}
				}
			}
		}
	}
	for _, f := range fns {
		if !f.public {
			continue
		}
		for _, o := range fns {
			if o.name != f.name && o.principal == f.principal {
				p.add(hcl.Range{Filename: "functions.tf"}, "%s faces the internet (ALLOW_ALL) and shares its account %s with %s: give the front door an account of its own", f.name, f.principal, o.name)
			}
		}
	}
	// The table, role names, and conditions on the shared output bucket.
	for _, g := range gs {
		if g.absent {
			continue
		}
		for _, r := range g.roles {
			if strings.HasPrefix(r, "roles/") && !knownRoles[r] {
				p.add(g.b.DefRange(), "%s grants %s, which is not a predefined role (knownRoles, from https://cloud.google.com/iam/docs/roles-permissions)", g.name(), r)
			}
		}
		if len(g.principals) == 0 || len(g.roles) == 0 {
			p.add(g.b.DefRange(), "%s: cannot tell who gets which role; write member and role so that they can be checked", g.name())
			continue
		}
		for _, pr := range g.principals {
			allowed, ok := allowedRoles[pr]
			if !ok {
				p.add(g.b.DefRange(), "%s grants to %s, who is not in the README's table of identities (allowedRoles)", g.name(), pr)
				continue
			}
			for _, r := range g.roles {
				if !slices.Contains(allowed, r) {
					p.add(g.b.DefRange(), "%s grants %s to %s, broader than or outside the README's table (allowed: %s)", g.name(), r, pr, strings.Join(allowed, ", "))
				}
			}
		}
		if g.target == "google_storage_bucket.output" && len(g.conditions) == 0 {
			p.add(g.b.DefRange(), "%s grants on the shared output bucket without a condition: limit it to its prefixes", g.name())
		}
	}
	// Uploads: the Cloud Storage agent publishes the events, to the
	// project's Eventarc topics (storage triggers) or to the topic a
	// notification names.
	for _, d := range deliveries(m, ev) {
		if strings.HasSuffix(d.what, ".event_trigger") && !find("project", "local.gcs_agent", "roles/pubsub.publisher") {
			p.add(d.rng, "%s is a storage trigger, but the Cloud Storage service agent may not publish (roles/pubsub.publisher on the project)", d.what)
		}
	}
	for _, b := range m.resourcesOf("google_storage_notification") {
		if a, ok := b.Body.Attributes["topic"]; ok && !none(b, ev) {
			if keys, known := forEachKeys(b, ev); known && len(keys) == 0 {
				continue
			}
			topic := refTo(a.Expr, "google_pubsub_topic")
			if !find("google_pubsub_topic."+topic, "local.gcs_agent", "roles/pubsub.publisher") {
				p.add(b.DefRange(), "notification %s publishes to %s, but the Cloud Storage service agent may not (roles/pubsub.publisher)", b.Labels[1], topic)
			}
		}
	}
	// Vertex AI's batch prediction writes its answers itself, as its agent.
	vertex := false
	for _, g := range gs {
		vertex = vertex || (!g.absent && slices.Contains(g.roles, "custom:vertex_caller"))
	}
	if vertex {
		ok := false
		for _, g := range gs {
			if !g.absent && g.target == "google_storage_bucket.output" && g.has("local.vertex_agent", "roles/storage.objectUser") &&
				slices.ContainsFunc(g.conditions, func(c string) bool { return strings.Contains(c, "batches/") }) {
				ok = true
			}
		}
		if !ok {
			*p = append(*p, "iam.tf: with backend = vertex, the Vertex AI service agent must write batch predictions under batches/ of the output bucket (roles/storage.objectUser on that prefix)")
		}
	}
	checkFunctionRoles(m, ev, find, p)
	// The build account reads the source where Cloud Functions copies it.
	gcfSources := false
	for _, g := range gs {
		if g.target == "project" && g.has("build", "roles/storage.objectViewer") && slices.ContainsFunc(g.conditions, func(c string) bool { return strings.Contains(c, "gcf-v2-sources-") }) {
			gcfSources = true
		}
	}
	if !gcfSources && len(m.resourcesOf("google_cloudfunctions2_function")) > 0 {
		*p = append(*p, "iam.tf: the build account may not read gcf-v2-sources-<number>-<region>, where Cloud Functions copies the source it builds")
	}
}

// secretsIn names the google_secret_manager_secret resources a block
// refers to, through locals.
func secretsIn(m *module, body *hclsyntax.Body) []string {
	seen := map[string]bool{}
	var visit func(e hclsyntax.Expression)
	visit = func(e hclsyntax.Expression) {
		for _, tr := range e.Variables() {
			switch tr.RootName() {
			case "google_secret_manager_secret":
				seen[tr[1].(hcl.TraverseAttr).Name] = true
			case "local":
				name := tr[1].(hcl.TraverseAttr).Name
				if def, ok := m.locals[name]; ok && !seen["local."+name] {
					seen["local."+name] = true
					visit(def)
				}
			}
		}
	}
	walkExprs(body, map[string]bool{}, func(e hclsyntax.Expression, _ map[string]bool) { visit(e) })
	var out []string
	for k := range seen {
		if !strings.HasPrefix(k, "local.") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// checkValues applies valueRules.
func checkValues(m *module, ev *evaluator, p *problems) {
	for _, r := range valueRules {
		for _, b := range m.resourcesOf(r.resource) {
			parts := strings.Split(r.path, ".")
			bodies := []*hclsyntax.Body{b.Body}
			for _, part := range parts[:len(parts)-1] {
				var next []*hclsyntax.Body
				for _, body := range bodies {
					next = append(next, blocksOf(body, part)...)
				}
				bodies = next
			}
			for _, body := range bodies {
				a, ok := body.Attributes[parts[len(parts)-1]]
				if !ok {
					continue
				}
				v := ev.value(a.Expr)
				if !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
					continue
				}
				if !slices.Contains(r.allowed, v.AsString()) {
					p.add(a.SrcRange, "%s.%s = %q is not one of %s (%s)", b.Labels[1], r.path, v.AsString(), strings.Join(r.allowed, ", "), r.source)
				}
			}
		}
	}
}

// goRuntime matches go.mod's go directive.
var goDirective = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`)

// checkRuntime wants every function on the Go version go.mod names.
func checkRuntime(m *module, goMod []byte, ev *evaluator, p *problems) {
	mm := goDirective.FindSubmatch(goMod)
	if mm == nil {
		*p = append(*p, "go.mod has no go directive")
		return
	}
	want := "go" + string(mm[1]) + string(mm[2])
	for _, b := range m.resourcesOf("google_cloudfunctions2_function") {
		for _, bc := range blocksOf(b.Body, "build_config") {
			if a, ok := bc.Attributes["runtime"]; ok {
				if v := ev.value(a.Expr); v.IsKnown() && v.Type() == cty.String && v.AsString() != want {
					p.add(a.SrcRange, "%s runs %q, but go.mod says %s", b.Labels[1], v.AsString(), want)
				}
			}
		}
	}
}

// checkOperations wants every function's logs in the metrics and alerts,
// every API genimg's resources use enabled by Terraform, a lifecycle rule
// for every prefix genimg writes, and the waits and reproducibility
// settings a first apply depends on.
func checkOperations(m *module, ev *evaluator, p *problems) {
	// Monitoring sees every function.
	names, _ := m.locals["function_names"]
	for _, b := range m.resourcesOf("google_cloudfunctions2_function") {
		a, ok := b.Body.Attributes["name"]
		if !ok {
			continue
		}
		local := refTo(a.Expr, "local")
		if names == nil || local == "" || !refersTo(names, "local", local) {
			p.add(a.SrcRange, "function %s is missing from local.function_names: its jobs would be missing from the metrics and alerts", b.Labels[1])
		}
	}
	if fl, ok := m.locals["function_logs"]; ok && !refersTo(fl, "local", "function_names") {
		p.add(fl.Range(), "local.function_logs must filter on local.function_names")
	}
	for _, b := range m.resourcesOf("google_logging_metric") {
		if a, ok := b.Body.Attributes["filter"]; !ok || !refersTo(a.Expr, "local", "function_logs") {
			p.add(b.DefRange(), "metric %s must filter on local.function_logs (every function)", b.Labels[1])
		}
	}
	for _, b := range m.resourcesOf("google_monitoring_alert_policy") {
		for _, c := range blocksOf(b.Body, "conditions") {
			for _, ml := range blocksOf(c, "condition_matched_log") {
				if a, ok := ml.Attributes["filter"]; !ok || !refersTo(a.Expr, "local", "function_logs") {
					p.add(ml.SrcRange, "alert %s must filter on local.function_logs (every function)", b.Labels[1])
				}
			}
			for _, q := range blocksOf(c, "condition_prometheus_query_language") {
				a, ok := q.Attributes["query"]
				if !ok || !refersTo(a.Expr, "local", "") {
					continue
				}
				if v, ok := q.Attributes["disable_metric_validation"]; !ok || !isTrue(v.Expr) {
					p.add(q.SrcRange, "alert %s queries a log-based metric created in the same apply: set disable_metric_validation = true", b.Labels[1])
				}
			}
		}
	}

	// APIs: what each resource type needs, for both backends.
	needs := map[string][]string{
		"google_cloudfunctions2_function":  {"cloudfunctions.googleapis.com", "run.googleapis.com", "cloudbuild.googleapis.com", "artifactregistry.googleapis.com", "eventarc.googleapis.com"},
		"google_pubsub_topic":              {"pubsub.googleapis.com"},
		"google_storage_bucket":            {"storage.googleapis.com"},
		"google_secret_manager_secret":     {"secretmanager.googleapis.com"},
		"google_cloud_scheduler_job":       {"cloudscheduler.googleapis.com"},
		"google_logging_metric":            {"logging.googleapis.com"},
		"google_monitoring_alert_policy":   {"monitoring.googleapis.com"},
		"google_service_account":           {"iam.googleapis.com", "iamcredentials.googleapis.com"},
		"google_project_iam_member":        {"cloudresourcemanager.googleapis.com"},
		"google_project_iam_custom_role":   {"iam.googleapis.com"},
		"google_storage_bucket_iam_member": {"storage.googleapis.com"},
	}
	services := m.resourcesOf("google_project_service")
	if len(services) == 0 {
		*p = append(*p, "apis.tf: no google_project_service: a new project has none of genimg's APIs enabled")
	}
	for _, backend := range []string{"gemini-api", "vertex"} {
		bev := newEvaluator(m, map[string]cty.Value{"backend": cty.StringVal(backend)})
		enabled := map[string]bool{}
		for _, s := range services {
			if d, ok := s.Body.Attributes["disable_on_destroy"]; !ok || isTrue(d.Expr) {
				p.add(s.DefRange(), "google_project_service.%s must set disable_on_destroy = false", s.Labels[1])
			}
			if keys, ok := forEachKeys(s, bev); ok {
				for _, k := range keys {
					enabled[k] = true
				}
			} else if a, ok := s.Body.Attributes["service"]; ok {
				if v, ok := literalString(a.Expr); ok {
					enabled[v] = true
				}
			}
		}
		traces := false
		for _, g := range grants(m, bev) {
			traces = traces || (!g.absent && slices.Contains(g.roles, "roles/cloudtrace.agent"))
		}
		if traces && !enabled["cloudtrace.googleapis.com"] && len(services) > 0 {
			*p = append(*p, "apis.tf: the functions write spans to Cloud Trace, which needs cloudtrace.googleapis.com enabled")
		}
		if backend == "vertex" && !enabled["aiplatform.googleapis.com"] && len(services) > 0 {
			*p = append(*p, "apis.tf: backend = vertex needs aiplatform.googleapis.com enabled")
		}
		for typ, apis := range needs {
			if len(m.resourcesOf(typ)) == 0 || len(services) == 0 {
				continue
			}
			for _, api := range apis {
				if !enabled[api] {
					*p = append(*p, fmt.Sprintf("apis.tf: %s needs %s, which Terraform does not enable (backend %s)", typ, api, backend))
				}
			}
		}
	}

	// A lifecycle rule for every prefix genimg writes.
	access := ev.local("output_access")
	retention, okR := knownStrings(ev.local("retention"), true)
	if access.IsWhollyKnown() && !access.IsNull() && okR {
		covered := map[string]bool{}
		for _, k := range retention {
			covered[k] = true
		}
		missing := map[string]bool{}
		for it := access.ElementIterator(); it.Next(); {
			_, v := it.Element()
			for _, side := range []string{"write", "read"} {
				prefixes, _ := knownStrings(v.GetAttr(side), false)
				for _, pr := range prefixes {
					if !covered[pr] {
						missing[pr] = true
					}
				}
			}
		}
		for _, pr := range slices.Sorted(maps.Keys(missing)) {
			*p = append(*p, fmt.Sprintf("main.tf: genimg writes under %s but local.retention has no entry for it (days, or 0 to keep on purpose)", pr))
		}
	} else {
		*p = append(*p, "main.tf: local.output_access and local.retention must be known without a plan (prefix tables)")
	}
	for _, b := range m.resourcesOf("google_storage_bucket") {
		if b.Labels[1] != "output" {
			continue
		}
		ok := false
		for _, blk := range b.Body.Blocks {
			if blk.Type == "dynamic" && blk.Labels[0] == "lifecycle_rule" {
				if fe, has := blk.Body.Attributes["for_each"]; has && refersTo(fe.Expr, "local", "retention") {
					ok = true
				}
			}
		}
		if !ok {
			p.add(b.DefRange(), "the output bucket's lifecycle rules must come from local.retention")
		}
	}

	// Reproducible source and waits.
	for _, b := range m.blocks {
		if b.Type == "data" && b.Labels[0] == "archive_file" {
			if _, ok := b.Body.Attributes["output_file_mode"]; !ok {
				p.add(b.DefRange(), "archive_file.%s needs output_file_mode: the zip's hash would differ between machines and every function redeploy", b.Labels[1])
			}
		}
	}
	for _, b := range m.resourcesOf("google_storage_bucket_object") {
		cbd := false
		for _, lc := range blocksOf(b.Body, "lifecycle") {
			if a, ok := lc.Attributes["create_before_destroy"]; ok && isTrue(a.Expr) {
				cbd = true
			}
		}
		if !cbd {
			p.add(b.DefRange(), "google_storage_bucket_object.%s needs lifecycle { create_before_destroy = true }: the functions use the old archive until they move", b.Labels[1])
		}
	}
	for _, b := range m.resourcesOf("google_cloudfunctions2_function") {
		a, ok := b.Body.Attributes["depends_on"]
		if !ok || !refersTo(a.Expr, "time_sleep", "") {
			p.add(b.DefRange(), "function %s must wait for IAM to propagate (depends_on a time_sleep after the grants)", b.Labels[1])
		}
	}
	// Dead-letter patience: deliveries must outlast genimg's own age limit,
	// so that a burst of 429s from busy instances never dead-letters a
	// healthy request (genimg records a too-old one itself).
	for _, b := range m.resourcesOf("google_pubsub_subscription") {
		for _, dl := range blocksOf(b.Body, "dead_letter_policy") {
			a, has := dl.Attributes["max_delivery_attempts"]
			attempts := ev.value(exprOf(a, has))
			backoff := time.Duration(0)
			for _, rp := range blocksOf(b.Body, "retry_policy") {
				if a, ok := rp.Attributes["maximum_backoff"]; ok {
					if s, ok := literalString(a.Expr); ok {
						backoff, _ = time.ParseDuration(s)
					}
				}
			}
			age := ev.vars["max_event_age"]
			maxAge := time.Duration(0)
			if age.IsKnown() && age.Type() == cty.String {
				maxAge, _ = time.ParseDuration(age.AsString())
			}
			if !attempts.IsKnown() || attempts.Type() != cty.Number || backoff == 0 || maxAge == 0 {
				p.add(dl.SrcRange, "%s: cannot tell whether its deliveries outlast max_event_age (max_delivery_attempts, retry_policy.maximum_backoff)", b.Labels[1])
				continue
			}
			n, _ := attempts.AsBigFloat().Int64()
			if time.Duration(n)*backoff < maxAge {
				p.add(dl.SrcRange, "%s dead-letters after %d deliveries, at most %s of retries at %s backoff: less than max_event_age %s, so a burst of 429s from busy instances dead-letters healthy requests", b.Labels[1], n, time.Duration(n)*backoff, backoff, maxAge)
			}
		}
	}
	// Every dead-letter topic has a subscription that keeps what lands
	// there: a topic without one drops every message published to it.
	for _, b := range m.resourcesOf("google_pubsub_subscription") {
		for _, dl := range blocksOf(b.Body, "dead_letter_policy") {
			a, ok := dl.Attributes["dead_letter_topic"]
			if !ok {
				continue
			}
			topic := refTo(a.Expr, "google_pubsub_topic")
			kept := false
			for _, h := range m.resourcesOf("google_pubsub_subscription") {
				if t, ok := h.Body.Attributes["topic"]; ok && refTo(t.Expr, "google_pubsub_topic") == topic && len(blocksOf(h.Body, "push_config")) == 0 {
					kept = true
				}
			}
			if !kept {
				p.add(dl.SrcRange, "%s dead-letters to %s, which no pull subscription keeps: the messages would be lost", b.Labels[1], topic)
			}
		}
	}
	for _, b := range m.resourcesOf("google_secret_manager_secret_version") {
		if _, ok := b.Body.Attributes["secret_data"]; ok {
			p.add(b.DefRange(), "google_secret_manager_secret_version.%s sets secret_data, which Terraform stores in state: use secret_data_wo", b.Labels[1])
		}
		// Plans without the value pass "": only a precondition against the
		// applied version keeps that from becoming an empty secret.
		guarded := false
		for _, lc := range blocksOf(b.Body, "lifecycle") {
			for _, pre := range blocksOf(lc, "precondition") {
				if a, ok := pre.Attributes["condition"]; ok && refersTo(a.Expr, "local", "applied_versions") {
					guarded = true
				}
			}
		}
		if _, wo := b.Body.Attributes["secret_data_wo"]; wo && !guarded {
			p.add(b.DefRange(), "google_secret_manager_secret_version.%s needs a precondition against local.applied_versions: a plan without the value would write an empty secret", b.Labels[1])
		}
	}
}

// none reports whether a resource's count is known to be 0.
func none(b *hclsyntax.Block, ev *evaluator) bool {
	a, ok := b.Body.Attributes["count"]
	if !ok {
		return false
	}
	v := ev.value(a.Expr)
	return v.IsKnown() && v.Type() == cty.Number && v.RawEquals(cty.NumberIntVal(0))
}

func isTrue(e hclsyntax.Expression) bool {
	v, ok := literal(e)
	return ok && v.Type() == cty.Bool && v.True()
}

// deployerRoles are the roles the deployer needs for each resource type it
// manages (terraform/README.md, "The deployer's permissions, and why").
var deployerRoles = map[string][]string{
	"google_project_service":                 {"roles/serviceusage.serviceUsageAdmin"},
	"google_cloudfunctions2_function":        {"roles/cloudfunctions.developer", "roles/run.admin", "roles/eventarc.admin"},
	"google_storage_bucket":                  {"roles/storage.admin"},
	"google_pubsub_topic":                    {"roles/pubsub.admin"},
	"google_secret_manager_secret":           {"roles/secretmanager.admin"},
	"google_cloud_scheduler_job":             {"roles/cloudscheduler.admin"},
	"google_logging_metric":                  {"roles/logging.configWriter"},
	"google_monitoring_alert_policy":         {"roles/monitoring.alertPolicyEditor"},
	"google_monitoring_dashboard":            {"roles/monitoring.dashboardEditor"},
	"google_service_account":                 {"roles/iam.serviceAccountAdmin"},
	"google_project_iam_custom_role":         {"roles/iam.roleAdmin"},
	"google_project_iam_member":              {"roles/resourcemanager.projectIamAdmin"},
	"google_cloud_run_v2_service_iam_member": {"roles/run.admin"},
}

var (
	roleLoop  = regexp.MustCompile(`(?s)for role in (.*?); do`)
	roleName  = regexp.MustCompile(`roles/[A-Za-z.]+`)
	grantable = regexp.MustCompile(`(?s)hasOnly\(\[(.*?)\]\)`)
	quoted    = regexp.MustCompile(`'([^']+)'`)
)

// checkDeployerDocs checks the bootstrap in terraform/README.md: the
// deployer gets a role for every kind of resource Terraform manages, never
// Owner, Editor or project-wide serviceAccountUser, and its conditional
// projectIamAdmin admits every role the configuration grants on the
// project, in every shape.
func checkDeployerDocs(readme string, m *module, p *problems) {
	given := map[string]bool{}
	for _, loop := range roleLoop.FindAllStringSubmatch(readme, -1) {
		for _, r := range roleName.FindAllString(loop[1], -1) {
			given[r] = true
		}
	}
	for _, r := range regexp.MustCompile(`--role=(roles/[A-Za-z.]+)`).FindAllStringSubmatch(readme, -1) {
		if !strings.Contains(readme, "--member=$DEPLOYER --role="+r[1]) && !strings.Contains(readme, "--member=$DEPLOYER \\\n  --role="+r[1]) {
			continue
		}
		given[r[1]] = true
	}
	for _, bad := range []string{"roles/owner", "roles/editor", "roles/iam.serviceAccountUser", "roles/monitoring.editor"} {
		if given[bad] {
			*p = append(*p, "README: the deployer gets "+bad+", broader than it needs")
		}
	}
	for _, typ := range slices.Sorted(maps.Keys(deployerRoles)) {
		if len(m.resourcesOf(typ)) == 0 {
			continue
		}
		for _, r := range deployerRoles[typ] {
			if !given[r] {
				*p = append(*p, fmt.Sprintf("README: the deployer lacks %s, which %s needs", r, typ))
			}
		}
	}
	allowed := map[string]bool{}
	if mm := grantable.FindStringSubmatch(readme); mm != nil {
		for _, q := range quoted.FindAllStringSubmatch(mm[1], -1) {
			allowed[q[1]] = true
		}
	}
	for _, vars := range variants {
		for _, g := range grants(m, newEvaluator(m, vars)) {
			if g.absent || g.target != "project" {
				continue
			}
			for _, r := range g.roles {
				if name, ok := strings.CutPrefix(r, "custom:"); ok {
					r = "projects/$PROJECT/roles/genimg_" + name
				}
				if !allowed[r] {
					*p = append(*p, fmt.Sprintf("README: %s grants %s on the project, which the deployer's conditional projectIamAdmin does not admit (modifiedGrantsByRole)", g.name(), r))
				}
			}
		}
	}
}

// modelKeys are the variables that carry the Gemini API key.
var modelKeys = map[string]bool{"GEMINI_API_KEY": true, "GOOGLE_API_KEY": true}

// deployed is one function as checkFunctionRoles sees it in one shape.
type deployed struct {
	b         *hclsyntax.Block
	entry     string // build_config.entry_point
	principal string // runtime[ROLE]
	role      string // GENIMG_ROLE ("all" when unset, as config.LoadConfig)
	public    bool   // ingress ALLOW_ALL
	secrets   map[string]bool
	rng       hcl.Range
}

// checkFunctionRoles applies the rules of GENIMG_ROLE and of the features
// that span functions, in one shape of the deployment: the internet-facing
// front door never holds the model key (nor a grant on it) and runs as
// GENIMG_ROLE=front; a function that runs jobs mounts the key (gemini-api),
// or genimg refuses to start; the callback secret is mounted by every
// function that checks jobs and by OnCompletion, or by none; PollBatches
// may resume held jobs (write held/ and jobs/, publish requests); spans
// may be written (cloudtrace.agent); callbacks are kept at least a day.
func checkFunctionRoles(m *module, ev *evaluator, find func(target, principal, role string) bool, p *problems) {
	var fns []deployed
	for _, b := range m.resourcesOf("google_cloudfunctions2_function") {
		if none(b, ev) {
			continue
		}
		f := deployed{b: b, role: "all", secrets: map[string]bool{}, rng: b.DefRange()}
		for _, bc := range blocksOf(b.Body, "build_config") {
			if a, ok := bc.Attributes["entry_point"]; ok {
				f.entry, _ = literalString(a.Expr)
			}
		}
		for _, sc := range blocksOf(b.Body, "service_config") {
			if a, ok := sc.Attributes["service_account_email"]; ok {
				if ps := principalsOf(a.Expr, b, ev); len(ps) == 1 {
					f.principal = ps[0]
				}
			}
			if a, ok := sc.Attributes["ingress_settings"]; ok {
				s, _ := literalString(a.Expr)
				f.public = s == "ALLOW_ALL"
			}
			if a, ok := sc.Attributes["environment_variables"]; ok {
				if v, ok := envValue(m, a.Expr, "GENIMG_ROLE", map[string]bool{}); ok {
					f.role = v
				}
			}
			for _, blk := range sc.Blocks {
				var body *hclsyntax.Body
				switch {
				case blk.Type == "secret_environment_variables":
					body = blk.Body
				case blk.Type == "dynamic" && blk.Labels[0] == "secret_environment_variables":
					if fe, ok := blk.Body.Attributes["for_each"]; ok {
						if v := ev.value(fe.Expr); v.IsKnown() && !v.IsNull() && v.CanIterateElements() && v.LengthInt() == 0 {
							continue // mounts nothing in this shape
						}
					}
					for _, inner := range blk.Body.Blocks {
						if inner.Type == "content" {
							body = inner.Body
						}
					}
				}
				if body == nil {
					continue
				}
				if a, ok := body.Attributes["key"]; ok {
					if k, ok := literalString(a.Expr); ok {
						f.secrets[k] = true
					}
				}
			}
		}
		fns = append(fns, f)
	}
	backend := ev.vars["backend"]
	geminiAPI := !backend.IsKnown() || backend.IsNull() || backend.AsString() == "gemini-api"
	mountsCallback := 0
	for _, f := range fns {
		var key string
		for k := range modelKeys {
			if f.secrets[k] {
				key = k
			}
		}
		switch {
		case f.public && key != "":
			p.add(f.rng, "%s faces the internet (ALLOW_ALL) and mounts the model key %s: the front door never calls the model (GENIMG_ROLE=front); mount it on the functions that run jobs only", f.b.Labels[1], key)
		case f.public && f.role != "front":
			p.add(f.rng, "%s faces the internet (ALLOW_ALL) but sets GENIMG_ROLE=%q: set GENIMG_ROLE = \"front\", so that it starts without the model key", f.b.Labels[1], f.role)
		case f.role != "all" && key != "":
			p.add(f.rng, "%s mounts the model key %s but never calls the model (GENIMG_ROLE=%s)", f.b.Labels[1], key, f.role)
		case f.role == "all" && key == "" && geminiAPI:
			p.add(f.rng, "%s runs jobs (GENIMG_ROLE=all) without GEMINI_API_KEY: genimg refuses to start without it", f.b.Labels[1])
		}
		if f.public && find("google_secret_manager_secret.gemini_api_key", f.principal, "roles/secretmanager.secretAccessor") {
			p.add(f.rng, "%s faces the internet and its account %s may read the model key: grant it to the accounts that run jobs only", f.b.Labels[1], f.principal)
		}
		if f.public && find("project", f.principal, "custom:vertex_caller") {
			p.add(f.rng, "%s faces the internet and its account %s may call Vertex AI: grant it to the accounts that run jobs only", f.b.Labels[1], f.principal)
		}
		if f.secrets["GENIMG_CALLBACK_SECRET"] {
			mountsCallback++
		}
		if tr := ev.vars["trace_exporter"]; (!tr.IsKnown() || tr.IsNull() || tr.AsString() == "cloudtrace") && !find("project", f.principal, "roles/cloudtrace.agent") {
			p.add(f.rng, "%s sends spans to Cloud Trace (GENIMG_TRACE_EXPORTER=cloudtrace) as %s, which lacks roles/cloudtrace.agent on the project", f.b.Labels[1], f.principal)
		}
	}
	// Jobs naming a callback are rejected where the secret is missing: one
	// function accepting what another rejects would be a lottery.
	if mountsCallback > 0 && mountsCallback < len(fns) {
		for _, f := range fns {
			if !f.secrets["GENIMG_CALLBACK_SECRET"] {
				p.add(f.rng, "%s does not mount GENIMG_CALLBACK_SECRET though other functions do: every function that checks jobs, and OnCompletion, must read it", f.b.Labels[1])
			}
		}
	}
	// PollBatches resumes held jobs: it lists, reads and deletes held/,
	// updates their claims under jobs/ and puts them back on the requests
	// topic. Workers park them there.
	access := ev.local("output_access")
	writes := func(principal, prefix string) bool {
		role, ok := strings.CutPrefix(principal, "runtime[")
		if !ok || !access.IsKnown() || access.IsNull() {
			return false
		}
		role = strings.TrimSuffix(role, "]")
		if !access.Type().IsObjectType() || !access.Type().HasAttribute(role) {
			return false
		}
		ps, _ := knownStrings(access.GetAttr(role).GetAttr("write"), false)
		return slices.Contains(ps, prefix)
	}
	for _, f := range fns {
		switch f.entry {
		case "PollBatches":
			for _, prefix := range []string{"held/", "jobs/"} {
				if !writes(f.principal, prefix) {
					p.add(f.rng, "%s resumes held jobs, but %s may not write %s in the output bucket (local.output_access)", f.b.Labels[1], f.principal, prefix)
				}
			}
			if !find("google_pubsub_topic.requests", f.principal, "roles/pubsub.publisher") {
				p.add(f.rng, "%s resumes held jobs onto the requests topic, but %s may not publish there", f.b.Labels[1], f.principal)
			}
		case "OnMessage", "OnUpload":
			if !writes(f.principal, "held/") {
				p.add(f.rng, "%s holds jobs (paused, over budget, rate, quota), but %s may not write held/ in the output bucket", f.b.Labels[1], f.principal)
			}
		}
	}
	// Callbacks are retried for up to callback_max_age (24 h by default):
	// their subscription must keep events that long, and at least a day.
	want := 24 * time.Hour
	if v := ev.vars["callback_max_age"]; v.IsKnown() && !v.IsNull() && v.Type() == cty.String {
		if d, err := time.ParseDuration(v.AsString()); err == nil && d > want {
			want = d
		}
	}
	for _, b := range m.resourcesOf("google_pubsub_subscription") {
		target := ""
		for _, pc := range blocksOf(b.Body, "push_config") {
			if a, ok := pc.Attributes["push_endpoint"]; ok {
				target = refTo(a.Expr, "google_cloudfunctions2_function")
			}
		}
		onCompletion := false
		for _, f := range fns {
			onCompletion = onCompletion || (f.b.Labels[1] == target && f.entry == "OnCompletion")
		}
		if !onCompletion {
			continue
		}
		kept := 7 * 24 * time.Hour // Pub/Sub's default
		if a, ok := b.Body.Attributes["message_retention_duration"]; ok {
			if s, ok := literalString(a.Expr); ok {
				kept, _ = time.ParseDuration(s)
			}
		}
		if kept < want {
			p.add(b.DefRange(), "%s keeps events %s, less than %s (a day, and callback_max_age): callbacks would expire while OnCompletion still retries them", b.Labels[1], kept, want)
		}
		if a, ok := b.Body.Attributes["filter"]; !ok || !strings.Contains(exprText(m, a.Expr), "genimg-callback") {
			p.add(b.DefRange(), "%s must filter on attributes.genimg-callback = \"true\": every other completion event would wake OnCompletion for nothing", b.Labels[1])
		}
	}
}

// envValue finds the literal value an environment map expression gives a
// variable, following merge() (the last wins) and locals.
func envValue(m *module, e hclsyntax.Expression, key string, seen map[string]bool) (string, bool) {
	switch e := e.(type) {
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			if k, ok := literalString(item.KeyExpr); ok && k == key {
				return literalString(item.ValueExpr)
			}
		}
	case *hclsyntax.FunctionCallExpr:
		if e.Name == "merge" {
			for i := len(e.Args) - 1; i >= 0; i-- {
				if v, ok := envValue(m, e.Args[i], key, seen); ok {
					return v, true
				}
			}
		}
	case *hclsyntax.ScopeTraversalExpr:
		if e.Traversal.RootName() == "local" && len(e.Traversal) == 2 {
			name := e.Traversal[1].(hcl.TraverseAttr).Name
			if def, ok := m.locals[name]; ok && !seen[name] {
				seen[name] = true
				return envValue(m, def, key, seen)
			}
		}
	}
	return "", false
}
