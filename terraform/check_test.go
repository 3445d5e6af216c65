package terraform

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"go.yaml.in/yaml/v3"

	"github.com/genimg/genimg/internal/config"
)

// tree is the deployment as files: the .tf (and .hcl) files of this
// directory by base name, and cloudbuild.yaml and function.go from the
// module root. Checks read a tree, so tests can seed mistakes into a copy.
type tree struct {
	tf          map[string][]byte
	cloudbuild  []byte
	goMod       []byte
	lock        []byte // .terraform.lock.hcl
	functionGo  []byte // nil when function.go does not exist
	functionErr error
	// schema is the providers' schema, nil when the file is absent: then
	// the checks that need it do not run (TestSchemaPresent says so).
	schema *providerSchema
}

// readTree reads the deployment from dir (this directory) and its parent.
func readTree(dir string) (tree, error) {
	t := tree{tf: map[string][]byte{}}
	for _, pattern := range []string{"*.tf", ".tflint.hcl"} {
		names, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return t, err
		}
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				return t, err
			}
			t.tf[filepath.Base(n)] = b
		}
	}
	var err error
	if t.cloudbuild, err = os.ReadFile(filepath.Join(dir, "..", "cloudbuild.yaml")); err != nil {
		return t, err
	}
	if t.goMod, err = os.ReadFile(filepath.Join(dir, "..", "go.mod")); err != nil {
		return t, err
	}
	if t.lock, err = os.ReadFile(filepath.Join(dir, ".terraform.lock.hcl")); err != nil {
		return t, err
	}
	t.functionGo, t.functionErr = os.ReadFile(filepath.Join(dir, "..", "function.go"))
	t.schema, err = sharedSchema()
	return t, err
}

// clone copies a tree so that a test can change it.
func (t tree) clone() tree {
	c := t
	c.tf = maps.Clone(t.tf)
	return c
}

// module is a parsed configuration.
type module struct {
	files  map[string]*hcl.File
	blocks []*hclsyntax.Block // top-level blocks of every .tf file, in file order
	locals map[string]hclsyntax.Expression
}

// problems collects what the checks find, as "where: what" lines.
type problems []string

func (p *problems) add(rng hcl.Range, format string, args ...any) {
	*p = append(*p, fmt.Sprintf("%s:%d: %s", rng.Filename, rng.Start.Line, fmt.Sprintf(format, args...)))
}

// variants are the shapes of the deployment the IAM rules are checked in:
// the defaults, and each choice that adds or moves grants. project_id has
// no default; any valid id does.
var variants = []map[string]cty.Value{
	{"project_id": cty.StringVal("example-project")},
	{"project_id": cty.StringVal("example-project"), "backend": cty.StringVal("vertex"), "upload_via": cty.StringVal("notification")},
	{"project_id": cty.StringVal("example-project"), "webhook_secret_version": cty.NumberIntVal(1), "public_webhook": cty.True,
		"callback_secret_version": cty.NumberIntVal(1), "trace_exporter": cty.StringVal("none"),
		"legacy_service_agent_grants": cty.True, "deployer": cty.StringVal("serviceAccount:genimg-deployer@example-project.iam.gserviceaccount.com"),
		"http_invokers":        cty.ListVal([]cty.Value{cty.StringVal("user:alice@example.com")}),
		"client_impersonators": cty.ListVal([]cty.Value{cty.StringVal("user:alice@example.com")})},
}

// check runs every check on a tree and returns what is wrong.
func check(t tree) problems {
	var p problems
	m := parse(t, &p)
	checkFormat(t, &p)
	if m == nil {
		return p
	}
	ev := newEvaluator(m, variants[0])
	if t.schema != nil {
		checkSchema(m, t.schema, ev, &p)
	}
	checkRefs(m, t.schema, &p)
	checkValues(m, ev, &p)
	checkRuntime(m, t.goMod, ev, &p)
	checkBackend(m, t.lock, &p)
	checkEntryPoints(m, t, &p)
	checkEnv(m, &p)
	checkIdentities(m, &p)
	// The IAM rules hold for every shape of the deployment.
	seen := map[string]bool{}
	for _, vars := range variants {
		var vp problems
		checkIAM(m, newEvaluator(m, vars), &vp)
		for _, msg := range vp {
			if !seen[msg] {
				seen[msg] = true
				p = append(p, msg)
			}
		}
	}
	checkPublic(m, &p)
	checkOperations(m, ev, &p)
	checkCloudBuild(t.cloudbuild, &p)
	return p
}

// parse parses every file; it returns nil when any does not parse.
func parse(t tree, p *problems) *module {
	parser := hclparse.NewParser()
	m := &module{files: map[string]*hcl.File{}, locals: map[string]hclsyntax.Expression{}}
	ok := true
	for _, name := range slices.Sorted(maps.Keys(t.tf)) {
		f, diags := parser.ParseHCL(t.tf[name], name)
		for _, d := range diags {
			if d.Subject != nil {
				p.add(*d.Subject, "%s: %s", d.Summary, d.Detail)
			} else {
				*p = append(*p, fmt.Sprintf("%s: %s: %s", name, d.Summary, d.Detail))
			}
		}
		if diags.HasErrors() {
			ok = false
			continue
		}
		if !strings.HasSuffix(name, ".tf") {
			continue // .tflint.hcl: only parsed and formatted
		}
		m.files[name] = f
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			m.blocks = append(m.blocks, b)
			if b.Type == "locals" {
				for n, a := range b.Body.Attributes {
					m.locals[n] = a.Expr
				}
			}
		}
	}
	if !ok {
		return nil
	}
	return m
}

// checkFormat wants every file exactly as hclwrite.Format (terraform fmt)
// writes it.
func checkFormat(t tree, p *problems) {
	for _, name := range slices.Sorted(maps.Keys(t.tf)) {
		src := t.tf[name]
		if got := hclwrite.Format(src); !bytes.Equal(got, src) {
			line := 1
			for i := range min(len(got), len(src)) {
				if got[i] != src[i] {
					break
				}
				if src[i] == '\n' {
					line++
				}
			}
			*p = append(*p, fmt.Sprintf("%s:%d: not formatted as terraform fmt would (hclwrite.Format)", name, line))
		}
	}
}

// blocksOf returns the nested blocks of a type, dynamic ones by their content.
func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Body {
	var out []*hclsyntax.Body
	for _, b := range body.Blocks {
		switch {
		case b.Type == typ:
			out = append(out, b.Body)
		case b.Type == "dynamic" && b.Labels[0] == typ:
			for _, inner := range b.Body.Blocks {
				if inner.Type == "content" {
					out = append(out, inner.Body)
				}
			}
		}
	}
	return out
}

// resourcesOf returns the resource blocks of a type.
func (m *module) resourcesOf(typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range m.blocks {
		if b.Type == "resource" && b.Labels[0] == typ {
			out = append(out, b)
		}
	}
	return out
}

// literal evaluates an expression that must not refer to anything.
func literal(e hclsyntax.Expression) (cty.Value, bool) {
	v, diags := e.Value(nil)
	return v, !diags.HasErrors() && v.IsWhollyKnown()
}

// literalString is literal for strings.
func literalString(e hclsyntax.Expression) (string, bool) {
	v, ok := literal(e)
	if !ok || v.Type() != cty.String || v.IsNull() {
		return "", false
	}
	return v.AsString(), true
}

// refersTo reports whether an expression refers to root.name (such as
// var.public_webhook), or to root at all when name is empty.
func refersTo(e hclsyntax.Expression, root, name string) bool {
	for _, tr := range e.Variables() {
		if tr.RootName() != root {
			continue
		}
		if name == "" {
			return true
		}
		if len(tr) > 1 {
			if a, ok := tr[1].(hcl.TraverseAttr); ok && a.Name == name {
				return true
			}
		}
	}
	return false
}

// lockEntry matches one provider of .terraform.lock.hcl.
var lockEntry = regexp.MustCompile(`provider "registry\.terraform\.io/hashicorp/([a-z]+)" \{\s*version\s*=\s*"([^"]+)"`)

// checkBackend wants state in a gcs backend configured at init, the exact
// provider versions of the schema, in versions.tf and in the lock file, and
// a Terraform version that has write-only arguments.
func checkBackend(m *module, lock []byte, p *problems) {
	locked := map[string]string{}
	for _, mm := range lockEntry.FindAllSubmatch(lock, -1) {
		locked[string(mm[1])] = string(mm[2])
	}
	for name, ver := range providerVersions {
		if locked[name] != ver {
			*p = append(*p, fmt.Sprintf(".terraform.lock.hcl: hashicorp/%s is locked at %q, want %s (the schema's version)", name, locked[name], ver))
		}
	}
	var backends int
	for _, b := range m.blocks {
		if b.Type != "terraform" {
			continue
		}
		for _, inner := range b.Body.Blocks {
			if inner.Type != "backend" {
				continue
			}
			backends++
			if inner.Labels[0] != "gcs" {
				p.add(inner.DefRange(), "backend %q: state must live in a gcs backend", inner.Labels[0])
			}
			if len(inner.Body.Attributes) > 0 {
				p.add(inner.DefRange(), "backend %q sets attributes: keep it a partial configuration, the bucket is given at terraform init", inner.Labels[0])
			}
		}
		if a, ok := b.Body.Attributes["required_version"]; !ok {
			p.add(b.DefRange(), "terraform needs required_version (>= 1.11.0: write-only secret data)")
		} else if v, _ := literalString(a.Expr); !strings.HasPrefix(v, ">= 1.11") {
			p.add(a.SrcRange, "required_version %q: want \">= 1.11.0, ...\" (write-only arguments need 1.11)", v)
		}
		for _, rp := range blocksOf(b.Body, "required_providers") {
			for name, ver := range providerVersions {
				w := [2]string{"hashicorp/" + name, ver}
				a, ok := rp.Attributes[name]
				if !ok {
					p.add(rp.SrcRange, "required_providers lacks %s", name)
					continue
				}
				v, ok := literal(a.Expr)
				if !ok || !v.Type().IsObjectType() || !v.Type().HasAttribute("source") || !v.Type().HasAttribute("version") {
					p.add(a.SrcRange, "required_providers.%s must be a literal {source, version}", name)
					continue
				}
				if src := v.GetAttr("source").AsString(); src != w[0] {
					p.add(a.SrcRange, "provider %s source %q, want %q", name, src, w[0])
				}
				if ver := v.GetAttr("version").AsString(); ver != w[1] {
					p.add(a.SrcRange, "provider %s version %q, want exactly %s (the version of the schema the checks read)", name, ver, w[1])
				}
			}
		}
	}
	if backends != 1 {
		*p = append(*p, fmt.Sprintf("want exactly one backend block (gcs), found %d: state must never be local", backends))
	}
}

// registered returns the names function.go registers with the functions
// framework, parsing it (syntax only: it need not compile).
func registered(src []byte) (map[string]bool, error) {
	f, err := parser.ParseFile(token.NewFileSet(), "function.go", src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	const frameworkPath = "github.com/GoogleCloudPlatform/functions-framework-go/functions"
	pkg := ""
	for _, imp := range f.Imports {
		if path, _ := strconv.Unquote(imp.Path.Value); path == frameworkPath {
			pkg = "functions"
			if imp.Name != nil {
				pkg = imp.Name.Name
			}
		}
	}
	if pkg == "" {
		return nil, fmt.Errorf("function.go does not import %s", frameworkPath)
	}
	names := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); !ok || id.Name != pkg {
			return true
		}
		switch sel.Sel.Name {
		case "HTTP", "CloudEvent", "Typed":
		default:
			return true
		}
		if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if name, err := strconv.Unquote(lit.Value); err == nil {
				names[name] = true
			}
		}
		return true
	})
	return names, nil
}

// checkEntryPoints wants every build_config.entry_point to be a literal name
// that function.go registers.
func checkEntryPoints(m *module, t tree, p *problems) {
	var names map[string]bool
	var err error
	if t.functionErr != nil {
		err = t.functionErr
	} else {
		names, err = registered(t.functionGo)
	}
	entries := map[string]bool{}
	for _, fn := range m.resourcesOf("google_cloudfunctions2_function") {
		for _, bc := range blocksOf(fn.Body, "build_config") {
			a, ok := bc.Attributes["entry_point"]
			if !ok {
				p.add(bc.SrcRange, "function %s has no build_config.entry_point", fn.Labels[1])
				continue
			}
			ep, ok := literalString(a.Expr)
			entries[ep] = ok
			switch {
			case !ok:
				p.add(a.SrcRange, "entry_point of %s must be a literal name, so that it can be checked against function.go", fn.Labels[1])
			case err != nil:
				p.add(a.SrcRange, "entry_point %q cannot be checked: %v", ep, err)
			case !names[ep]:
				p.add(a.SrcRange, "entry_point %q is not registered in function.go (registered: %s)", ep, strings.Join(slices.Sorted(maps.Keys(names)), ", "))
			}
		}
	}
	// A function genimg registers but nobody deploys is a feature that
	// silently does nothing (OnCompletion: callbacks never sent).
	if err == nil {
		for _, name := range slices.Sorted(maps.Keys(names)) {
			if !entries[name] {
				*p = append(*p, fmt.Sprintf("functions.tf: function.go registers %s, but no function deploys it", name))
			}
		}
	}
}

// secretEnv names the variables that hold secrets: they may only come from
// Secret Manager, never from plain environment_variables (and so state).
var secretEnv = map[string]bool{"GEMINI_API_KEY": true, "GOOGLE_API_KEY": true, "GENIMG_WEBHOOK_SECRET": true, "GENIMG_CALLBACK_SECRET": true}

// requiredEnv are the variables every function gets from Terraform: the
// spend guard, so that a budget set in Terraform reaches every instance.
var requiredEnv = []string{"GENIMG_BUDGET_HOURLY_USD", "GENIMG_BUDGET_DAILY_USD", "GENIMG_CALLS_PER_MINUTE", "GENIMG_PAUSED"}

// knownEnv is every variable config.LoadConfig reads, for both backends, and
// the platform's own variables that genimg honours.
func knownEnv() map[string]bool {
	known := map[string]bool{
		// Set by the platform or by the deployer to log execution ids; the
		// functions framework reads it, LoadConfig does not.
		"LOG_EXECUTION_ID": true,
		// The Go runtime's soft memory limit, from go_memory_limit_percent,
		// and its scheduler threads, from cpu.
		"GOMEMLIMIT": true, "GOMAXPROCS": true,
	}
	for _, env := range []map[string]string{{}, {"GOOGLE_GENAI_USE_VERTEXAI": "true"}} {
		// LoadConfig reads every variable even when some are invalid, so
		// its errors (an empty environment has many) do not matter here.
		config.LoadConfig(func(name string) string {
			known[name] = true
			return env[name]
		})
	}
	return known
}

// envKeys resolves an environment map expression to its keys, following
// merge(), conditionals and locals.
func envKeys(m *module, e hclsyntax.Expression, p *problems, seen map[string]bool) []string {
	switch e := e.(type) {
	case *hclsyntax.ObjectConsExpr:
		var keys []string
		for _, item := range e.Items {
			k, ok := literalString(item.KeyExpr)
			if !ok {
				p.add(item.KeyExpr.Range(), "environment variable names must be literal")
				continue
			}
			keys = append(keys, k)
		}
		return keys
	case *hclsyntax.FunctionCallExpr:
		if e.Name != "merge" {
			break
		}
		var keys []string
		for _, arg := range e.Args {
			keys = append(keys, envKeys(m, arg, p, seen)...)
		}
		return keys
	case *hclsyntax.ConditionalExpr:
		return append(envKeys(m, e.TrueResult, p, seen), envKeys(m, e.FalseResult, p, seen)...)
	case *hclsyntax.ParenthesesExpr:
		return envKeys(m, e.Expression, p, seen)
	case *hclsyntax.ScopeTraversalExpr:
		if e.Traversal.RootName() == "local" && len(e.Traversal) == 2 {
			name := e.Traversal[1].(hcl.TraverseAttr).Name
			if def, ok := m.locals[name]; ok && !seen[name] {
				seen[name] = true
				return envKeys(m, def, p, seen)
			}
		}
	}
	p.add(e.Range(), "cannot tell which environment variables this sets: use literal maps, merge(), conditionals and locals")
	return nil
}

// checkEnv wants every variable a function sets to be one genimg reads, and
// secrets to come from Secret Manager only.
func checkEnv(m *module, p *problems) {
	known := knownEnv()
	for _, fn := range m.resourcesOf("google_cloudfunctions2_function") {
		for _, sc := range blocksOf(fn.Body, "service_config") {
			if a, ok := sc.Attributes["environment_variables"]; ok {
				keys := envKeys(m, a.Expr, p, map[string]bool{})
				for _, k := range requiredEnv {
					if !slices.Contains(keys, k) {
						p.add(a.SrcRange, "%s does not set %s: the spend guard must be set from Terraform", fn.Labels[1], k)
					}
				}
				for _, k := range keys {
					switch {
					case secretEnv[k]:
						p.add(a.SrcRange, "%s sets secret %s in plain environment_variables: use secret_environment_variables", fn.Labels[1], k)
					case !known[k]:
						p.add(a.SrcRange, "%s sets %s, which config.LoadConfig does not read", fn.Labels[1], k)
					}
				}
			}
			for _, sev := range blocksOf(sc, "secret_environment_variables") {
				a, ok := sev.Attributes["key"]
				if !ok {
					p.add(sev.SrcRange, "secret_environment_variables without key")
					continue
				}
				k, ok := literalString(a.Expr)
				if !ok || !known[k] {
					p.add(a.SrcRange, "%s sets secret variable %q, which config.LoadConfig does not read", fn.Labels[1], k)
				}
				if v, ok := sev.Attributes["version"]; ok {
					if s, ok := literalString(v.Expr); ok && s == "latest" {
						p.add(v.SrcRange, "pin secret versions by number, not latest")
					}
				}
			}
		}
	}
}

// wantServiceAccount wants attr in body to name a service account that
// this configuration creates (never the default compute account).
func wantServiceAccount(body *hclsyntax.Body, rng hcl.Range, attr, what string, p *problems) {
	a, ok := body.Attributes[attr]
	if !ok {
		p.add(rng, "%s has no %s: every function and trigger runs as an explicit service account", what, attr)
		return
	}
	if !refersTo(a.Expr, "google_service_account", "") {
		p.add(a.SrcRange, "%s.%s must refer to a google_service_account of this configuration", what, attr)
	}
}

// checkIdentities wants explicit service accounts on every function, build
// and trigger, retries on every event trigger, and a dead-letter policy and
// signed pushes on every push subscription.
func checkIdentities(m *module, p *problems) {
	for _, fn := range m.resourcesOf("google_cloudfunctions2_function") {
		name := fn.Labels[1]
		for _, sc := range blocksOf(fn.Body, "service_config") {
			wantServiceAccount(sc, fn.DefRange(), "service_account_email", name+".service_config", p)
		}
		for _, bc := range blocksOf(fn.Body, "build_config") {
			wantServiceAccount(bc, bc.SrcRange, "service_account", name+".build_config", p)
		}
		if len(blocksOf(fn.Body, "service_config")) == 0 {
			p.add(fn.DefRange(), "function %s has no service_config (and so no service account)", name)
		}
		for _, et := range blocksOf(fn.Body, "event_trigger") {
			wantServiceAccount(et, et.SrcRange, "service_account_email", name+".event_trigger", p)
			a, ok := et.Attributes["retry_policy"]
			if v, lit := literalString(exprOf(a, ok)); !ok || !lit || v != "RETRY_POLICY_RETRY" {
				p.add(et.SrcRange, "%s.event_trigger must set retry_policy = \"RETRY_POLICY_RETRY\": a transient failure would otherwise lose the event", name)
			}
		}
	}
	for _, sub := range m.resourcesOf("google_pubsub_subscription") {
		name := sub.Labels[1]
		for _, pc := range blocksOf(sub.Body, "push_config") {
			tokens := blocksOf(pc, "oidc_token")
			if len(tokens) == 0 {
				p.add(pc.SrcRange, "%s.push_config has no oidc_token: pushes must be signed by the trigger identity", name)
			}
			for _, tok := range tokens {
				wantServiceAccount(tok, tok.SrcRange, "service_account_email", name+".push_config.oidc_token", p)
			}
			if len(blocksOf(sub.Body, "dead_letter_policy")) == 0 {
				p.add(sub.DefRange(), "push subscription %s has no dead_letter_policy", name)
			}
		}
	}
}

func exprOf(a *hclsyntax.Attribute, ok bool) hclsyntax.Expression {
	if !ok {
		return &hclsyntax.LiteralValueExpr{Val: cty.NullVal(cty.String)}
	}
	return a.Expr
}

// checkPublic wants allUsers only in resources that exist under
// var.public_webhook and refuse to exist without the webhook secret, and
// the public_webhook variable to refuse the same; allAuthenticatedUsers
// never.
func checkPublic(m *module, p *problems) {
	const secretVar = "webhook_secret_version"
	for _, b := range m.blocks {
		if b.Type == "variable" && b.Labels[0] == "public_webhook" {
			ok := false
			for _, v := range blocksOf(b.Body, "validation") {
				if a, has := v.Attributes["condition"]; has && refersTo(a.Expr, "var", "public_webhook") && refersTo(a.Expr, "var", secretVar) {
					ok = true
				}
			}
			if !ok {
				p.add(b.DefRange(), "variable public_webhook needs a validation that refuses it without var.%s", secretVar)
			}
		}
		if b.Type != "resource" {
			continue
		}
		src := m.files[b.Range().Filename].Bytes
		var public []hcl.Range
		walkAttrs(b.Body, func(a *hclsyntax.Attribute) {
			text := src[a.Expr.Range().Start.Byte:a.Expr.Range().End.Byte]
			if bytes.Contains(text, []byte("allAuthenticatedUsers")) {
				p.add(a.SrcRange, "allAuthenticatedUsers is never granted")
			}
			if bytes.Contains(text, []byte("allUsers")) {
				public = append(public, a.SrcRange)
			}
		})
		for _, rng := range public {
			count, ok := b.Body.Attributes["count"]
			if !ok || !refersTo(count.Expr, "var", "public_webhook") {
				p.add(rng, "allUsers outside public_webhook: %s.%s needs count = var.public_webhook ? 1 : 0", b.Labels[0], b.Labels[1])
			}
			guarded := false
			for _, lc := range blocksOf(b.Body, "lifecycle") {
				for _, pre := range blocksOf(lc, "precondition") {
					if a, has := pre.Attributes["condition"]; has && refersTo(a.Expr, "var", secretVar) {
						guarded = true
					}
				}
			}
			if !guarded {
				p.add(rng, "allUsers without the webhook secret: %s.%s needs a lifecycle precondition on var.%s", b.Labels[0], b.Labels[1], secretVar)
			}
		}
	}
}

// walkAttrs calls fn for every attribute in body and its nested blocks.
func walkAttrs(body *hclsyntax.Body, fn func(*hclsyntax.Attribute)) {
	for _, name := range slices.Sorted(maps.Keys(body.Attributes)) {
		fn(body.Attributes[name])
	}
	for _, b := range body.Blocks {
		walkAttrs(b.Body, fn)
	}
}

// cloudBuild is the part of a Cloud Build configuration genimg uses; an
// unknown key fails the decode, so a misspelled key cannot pass unnoticed.
type cloudBuild struct {
	Steps []struct {
		ID         string   `yaml:"id"`
		Name       string   `yaml:"name"`
		Entrypoint string   `yaml:"entrypoint"`
		Args       []string `yaml:"args"`
		Dir        string   `yaml:"dir"`
		Env        []string `yaml:"env"`
		WaitFor    []string `yaml:"waitFor"`
		Script     string   `yaml:"script"`
	} `yaml:"steps"`
	ServiceAccount string `yaml:"serviceAccount"`
	Options        struct {
		Logging              string `yaml:"logging"`
		DynamicSubstitutions bool   `yaml:"dynamicSubstitutions"`
		SubstitutionOption   string `yaml:"substitutionOption"`
		MachineType          string `yaml:"machineType"`
		Volumes              []struct {
			Name string `yaml:"name"`
			Path string `yaml:"path"`
		} `yaml:"volumes"`
	} `yaml:"options"`
	Substitutions map[string]string `yaml:"substitutions"`
	Timeout       string            `yaml:"timeout"`
	Tags          []string          `yaml:"tags"`
}

// builtinSubstitutions are the ones Cloud Build defines itself.
var builtinSubstitutions = map[string]bool{
	"PROJECT_ID": true, "PROJECT_NUMBER": true, "BUILD_ID": true, "LOCATION": true,
	"TRIGGER_NAME": true, "COMMIT_SHA": true, "SHORT_SHA": true, "REVISION_ID": true,
	"BRANCH_NAME": true, "TAG_NAME": true, "REF_NAME": true, "REPO_NAME": true,
	"REPO_FULL_NAME": true, "TRIGGER_BUILD_CONFIG_PATH": true, "SERVICE_ACCOUNT_EMAIL": true,
	"SERVICE_ACCOUNT": true,
}

// substitutionRef matches $NAME and ${NAME}; $$ is an escaped dollar.
var substitutionRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// checkCloudBuild parses cloudbuild.yaml and checks its steps.
func checkCloudBuild(src []byte, p *problems) {
	fail := func(format string, args ...any) {
		*p = append(*p, "cloudbuild.yaml: "+fmt.Sprintf(format, args...))
	}
	var cb cloudBuild
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cb); err != nil {
		fail("%v", err)
		return
	}
	for k := range cb.Substitutions {
		if !strings.HasPrefix(k, "_") {
			fail("user substitution %s must start with _", k)
		}
	}
	refs := func(where, s string) {
		for _, m := range substitutionRef.FindAllStringSubmatch(s, -1) {
			name := m[1] + m[2]
			if name == "" {
				continue // $$
			}
			if _, declared := cb.Substitutions[name]; !declared && !builtinSubstitutions[name] {
				fail("%s refers to $%s, which is neither built in nor declared (user substitutions start with _)", where, name)
			}
		}
	}
	if cb.ServiceAccount == "" || !strings.HasPrefix(cb.ServiceAccount, "projects/") {
		fail("serviceAccount must name the deployer: projects/PROJECT/serviceAccounts/EMAIL")
	}
	refs("serviceAccount", cb.ServiceAccount)
	for k, v := range cb.Substitutions {
		refs("substitution "+k, v)
	}
	switch cb.Options.Logging {
	case "CLOUD_LOGGING_ONLY", "NONE":
	default:
		fail("options.logging is %q: with a user-specified service account it must be CLOUD_LOGGING_ONLY (or NONE)", cb.Options.Logging)
	}
	ids := map[string]int{}
	for i, st := range cb.Steps {
		where := fmt.Sprintf("step %d", i+1)
		if st.ID == "" {
			fail("%s has no id", where)
		} else if _, dup := ids[st.ID]; dup {
			fail("%s: id %q used twice", where, st.ID)
		} else {
			ids[st.ID] = i
			where = "step " + st.ID
		}
		if st.Name == "" {
			fail("%s has no name (builder image)", where)
		}
		for _, s := range append(append([]string{st.Name, st.Entrypoint, st.Dir, st.Script}, st.Args...), st.Env...) {
			refs(where, s)
		}
	}
	// The steps a deploy needs, in this order, and what each runs: first
	// what .ci/run runs, then Terraform.
	const golang, terraform = "mirror.gcr.io/library/golang:", "hashicorp/terraform:"
	want := []struct{ id, image, verb string }{
		{"go-mod-download", golang, "mod"},
		{"gofmt", golang, "-c"},
		{"vet", golang, "vet"},
		{"test", golang, "test"},
		{"tflint", golang, "run"},
		{"tf-init", terraform, "init"},
		{"tf-validate", terraform, "validate"},
		{"tf-test", terraform, "test"},
		{"tf-plan", terraform, "plan"},
		{"tf-apply", terraform, "apply"},
	}
	// Images resolve their substitutions to exact versions: x.y.z.
	exact := regexp.MustCompile(`:[0-9]+\.[0-9]+\.[0-9]+$`)
	resolve := func(s string) string {
		return substitutionRef.ReplaceAllStringFunc(s, func(ref string) string {
			name := strings.Trim(ref, "${}")
			if v, ok := cb.Substitutions[name]; ok {
				return v
			}
			return ref
		})
	}
	last := -1
	for _, w := range want {
		i, ok := ids[w.id]
		if !ok {
			fail("no step with id %s (%s)", w.id, w.verb)
			continue
		}
		st := cb.Steps[i]
		if !strings.HasPrefix(st.Name, w.image) || len(st.Args) == 0 || st.Args[0] != w.verb {
			fail("step %s must run %s %s, runs %s %v", w.id, w.image, w.verb, st.Name, st.Args)
		}
		if img := resolve(st.Name); !exact.MatchString(img) {
			fail("step %s: image %s is not pinned to an exact version", w.id, img)
		}
		if w.image == terraform && st.Dir != "terraform" {
			fail("step %s must run in dir terraform", w.id)
		}
		if i < last {
			fail("step %s runs out of order", w.id)
		}
		last = i
		if w.verb == "init" && !slices.ContainsFunc(st.Args, func(a string) bool { return strings.HasPrefix(a, "-backend-config=bucket=") }) {
			fail("step %s must give the state bucket: -backend-config=bucket=${_TF_STATE_BUCKET}", w.id)
		}
	}
	if i, ok := ids["tflint"]; ok && !slices.Contains(cb.Steps[i].Args, "github.com/terraform-linters/tflint@v0.64.0") {
		fail("step tflint must run tflint v0.64.0, as .ci/run does")
	}
	// One module download: the Go steps share the module cache.
	if !slices.ContainsFunc(cb.Options.Volumes, func(v struct {
		Name string `yaml:"name"`
		Path string `yaml:"path"`
	}) bool {
		return v.Path == "/go/pkg/mod"
	}) {
		fail("options.volumes must keep /go/pkg/mod across steps, so that modules are downloaded once")
	}
}
