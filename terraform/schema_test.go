package terraform

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// schemaPath is the providers' own schema (`terraform providers schema
// -json` for the versions in versions.tf), kept beside the repository and
// read in place, never copied into it: ../shared/terraform/README.md.
// Relative to this directory: the module root's parent holds shared/.
var schemaPath = filepath.Join("..", "..", "shared", "terraform", "provider-schema.json.gz")

// providerVersions are the versions the schema file describes; versions.tf
// and .terraform.lock.hcl must name exactly these.
var providerVersions = map[string]string{
	"google":  "7.45.0",
	"archive": "2.8.0",
	"time":    "0.14.0",
}

// schemaBlock is one block of the schema: its attributes and nested blocks.
type schemaBlock struct {
	Attributes map[string]*schemaAttr   `json:"attributes"`
	BlockTypes map[string]*schemaNested `json:"block_types"`
}

type schemaAttr struct {
	Type      json.RawMessage `json:"type"`
	Required  bool            `json:"required"`
	Optional  bool            `json:"optional"`
	Computed  bool            `json:"computed"`
	WriteOnly bool            `json:"write_only"`
	ty        cty.Type
}

type schemaNested struct {
	NestingMode string      `json:"nesting_mode"`
	Block       schemaBlock `json:"block"`
	MinItems    int         `json:"min_items"`
	MaxItems    int         `json:"max_items"`
}

// providerSchema is the part of the file the checks use: every resource and
// data source type of every provider, and the provider blocks.
type providerSchema struct {
	resources   map[string]*schemaBlock
	dataSources map[string]*schemaBlock
	providers   map[string]*schemaBlock // by local name: google, archive, time
}

// loadSchema reads the schema file; errors.Is(err, fs.ErrNotExist) when it
// is absent (a clone without shared/).
func loadSchema(path string) (*providerSchema, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var raw struct {
		ProviderSchemas map[string]struct {
			Provider struct {
				Block schemaBlock `json:"block"`
			} `json:"provider"`
			ResourceSchemas map[string]struct {
				Block schemaBlock `json:"block"`
			} `json:"resource_schemas"`
			DataSourceSchemas map[string]struct {
				Block schemaBlock `json:"block"`
			} `json:"data_source_schemas"`
		} `json:"provider_schemas"`
	}
	if err := json.NewDecoder(zr).Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &providerSchema{resources: map[string]*schemaBlock{}, dataSources: map[string]*schemaBlock{}, providers: map[string]*schemaBlock{}}
	for addr, p := range raw.ProviderSchemas {
		name := addr[strings.LastIndex(addr, "/")+1:]
		s.providers[name] = &p.Provider.Block
		for t, r := range p.ResourceSchemas {
			s.resources[t] = &r.Block
		}
		for t, d := range p.DataSourceSchemas {
			s.dataSources[t] = &d.Block
		}
	}
	for _, set := range []map[string]*schemaBlock{s.resources, s.dataSources, s.providers} {
		for _, b := range set {
			if err := b.resolveTypes(); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	return s, nil
}

func (b *schemaBlock) resolveTypes() error {
	for name, a := range b.Attributes {
		if len(a.Type) == 0 {
			a.ty = cty.DynamicPseudoType // nested_type attributes: not used by genimg
			continue
		}
		ty, err := ctyjson.UnmarshalType(a.Type)
		if err != nil {
			return fmt.Errorf("attribute %s: %w", name, err)
		}
		a.ty = ty
	}
	for _, nb := range b.BlockTypes {
		if err := nb.Block.resolveTypes(); err != nil {
			return err
		}
	}
	return nil
}

// schemaOnce caches the schema across tests; a nil schema with a nil error
// means the file is absent.
var schemaCache struct {
	loaded bool
	s      *providerSchema
	err    error
}

func sharedSchema() (*providerSchema, error) {
	if !schemaCache.loaded {
		schemaCache.loaded = true
		schemaCache.s, schemaCache.err = loadSchema(schemaPath)
		if errors.Is(schemaCache.err, fs.ErrNotExist) {
			schemaCache.err = nil
		}
	}
	return schemaCache.s, schemaCache.err
}

// Meta-arguments of the Terraform language, which no provider schema lists.
var (
	resourceMeta    = map[string]bool{"count": true, "for_each": true, "depends_on": true, "provider": true}
	lifecycleSchema = &schemaBlock{
		Attributes: map[string]*schemaAttr{
			"create_before_destroy": {Optional: true, ty: cty.Bool},
			"prevent_destroy":       {Optional: true, ty: cty.Bool},
			"ignore_changes":        {Optional: true, ty: cty.DynamicPseudoType},
			"replace_triggered_by":  {Optional: true, ty: cty.DynamicPseudoType},
		},
		BlockTypes: map[string]*schemaNested{
			"precondition":  {NestingMode: "list", Block: conditionSchema},
			"postcondition": {NestingMode: "list", Block: conditionSchema},
		},
	}
	conditionSchema = schemaBlock{Attributes: map[string]*schemaAttr{
		"condition":     {Required: true, ty: cty.Bool},
		"error_message": {Required: true, ty: cty.String},
	}}
	variableSchema = &schemaBlock{
		Attributes: map[string]*schemaAttr{
			"description": {Optional: true, ty: cty.String}, "type": {Optional: true, ty: cty.DynamicPseudoType},
			"default": {Optional: true, ty: cty.DynamicPseudoType}, "sensitive": {Optional: true, ty: cty.Bool},
			"nullable": {Optional: true, ty: cty.Bool}, "ephemeral": {Optional: true, ty: cty.Bool},
		},
		BlockTypes: map[string]*schemaNested{"validation": {NestingMode: "list", Block: conditionSchema}},
	}
	outputSchema = &schemaBlock{
		Attributes: map[string]*schemaAttr{
			"description": {Optional: true, ty: cty.String}, "value": {Required: true, ty: cty.DynamicPseudoType},
			"sensitive": {Optional: true, ty: cty.Bool}, "depends_on": {Optional: true, ty: cty.DynamicPseudoType},
			"ephemeral": {Optional: true, ty: cty.Bool},
		},
		BlockTypes: map[string]*schemaNested{"precondition": {NestingMode: "list", Block: conditionSchema}},
	}
)

// checkSchema checks every resource, data source and provider block against
// the providers' schema: unknown types, arguments and blocks; missing
// required ones; blocks where arguments belong and the reverse; too many
// blocks; values of the wrong type; computed attributes set.
func checkSchema(m *module, sc *providerSchema, ev *evaluator, p *problems) {
	for _, b := range m.blocks {
		switch b.Type {
		case "resource", "data":
			types, what := sc.resources, "resource"
			if b.Type == "data" {
				types, what = sc.dataSources, "data source"
			}
			s, ok := types[b.Labels[0]]
			if !ok {
				p.add(b.LabelRanges[0], "%s type %q does not exist in the providers (hashicorp/google %s, archive %s, time %s)",
					what, b.Labels[0], providerVersions["google"], providerVersions["archive"], providerVersions["time"])
				continue
			}
			checkBlockBody(b.Body, s, b.Labels[0]+"."+b.Labels[1], true, ev, p)
		case "provider":
			if s, ok := sc.providers[b.Labels[0]]; !ok {
				p.add(b.LabelRanges[0], "provider %q is not one of genimg's providers", b.Labels[0])
			} else {
				s := &schemaBlock{Attributes: maps.Clone(s.Attributes), BlockTypes: s.BlockTypes}
				s.Attributes["alias"] = &schemaAttr{Optional: true, ty: cty.String}
				checkBlockBody(b.Body, s, "provider."+b.Labels[0], false, ev, p)
			}
		case "variable":
			checkBlockBody(b.Body, variableSchema, "variable."+b.Labels[0], false, nil, p)
		case "output":
			checkBlockBody(b.Body, outputSchema, "output."+b.Labels[0], false, nil, p)
		case "terraform", "locals", "check", "moved", "import", "removed":
		default:
			p.add(b.DefRange(), "unexpected top-level block %q", b.Type)
		}
	}
}

// checkBlockBody checks one body against its schema block. top marks a
// resource or data source body, where meta-arguments are allowed.
func checkBlockBody(body *hclsyntax.Body, s *schemaBlock, path string, top bool, ev *evaluator, p *problems) {
	for _, name := range slices.Sorted(maps.Keys(body.Attributes)) {
		a := body.Attributes[name]
		if top && resourceMeta[name] {
			continue
		}
		as, ok := s.Attributes[name]
		if !ok {
			if _, isBlock := s.BlockTypes[name]; isBlock {
				p.add(a.NameRange, "%s.%s is a block, not an argument: write %s { ... }", path, name, name)
			} else {
				p.add(a.NameRange, "unknown argument %s.%s", path, name)
			}
			continue
		}
		if as.Computed && !as.Optional && !as.Required {
			p.add(a.NameRange, "%s.%s is computed by the provider and cannot be set", path, name)
			continue
		}
		checkType(a, as.ty, path, ev, p)
	}
	for name, as := range s.Attributes {
		if as.Required {
			if _, ok := body.Attributes[name]; !ok {
				p.add(body.SrcRange, "%s is missing the required argument %q", path, name)
			}
		}
	}
	counts := map[string]int{}
	dynamic := map[string]bool{}
	for _, b := range body.Blocks {
		name, content := b.Type, b.Body
		switch {
		case top && b.Type == "lifecycle":
			checkBlockBody(b.Body, lifecycleSchema, path+".lifecycle", false, ev, p)
			continue
		case b.Type == "dynamic":
			name, content = b.Labels[0], nil
			for _, inner := range b.Body.Blocks {
				if inner.Type == "content" {
					content = inner.Body
				}
			}
			if content == nil {
				p.add(b.DefRange(), "dynamic %q has no content block", name)
				continue
			}
			dynamic[name] = true
		}
		nb, ok := s.BlockTypes[name]
		if !ok {
			if _, isAttr := s.Attributes[name]; isAttr {
				p.add(b.TypeRange, "%s.%s is an argument, not a block: write %s = ...", path, name, name)
			} else {
				p.add(b.TypeRange, "unknown block %s.%s", path, name)
			}
			continue
		}
		counts[name]++
		if (nb.NestingMode == "single" || nb.MaxItems == 1) && counts[name] == 2 && !dynamic[name] {
			p.add(b.TypeRange, "%s.%s may appear once (nesting %s, max %d)", path, name, nb.NestingMode, nb.MaxItems)
		}
		checkBlockBody(content, &nb.Block, path+"."+name, false, ev, p)
	}
	for name, nb := range s.BlockTypes {
		if nb.MinItems > 0 && counts[name] == 0 {
			p.add(body.SrcRange, "%s is missing the required block %q", path, name)
		}
	}
}

// checkType wants an argument's value to convert to its schema type. A
// literal string where a number or bool belongs is refused even when it
// would convert ("600" for 600): it is what a misplaced quote looks like,
// and a value that only converts by luck.
func checkType(a *hclsyntax.Attribute, ty cty.Type, path string, ev *evaluator, p *problems) {
	if ev == nil || ty == cty.DynamicPseudoType {
		return
	}
	if v, ok := literal(a.Expr); ok && v.Type() == cty.String && (ty == cty.Number || ty == cty.Bool) {
		p.add(a.SrcRange, "%s.%s is a %s, given the string %q", path, a.Name, ty.FriendlyName(), v.AsString())
		return
	}
	v := ev.value(a.Expr)
	if v.Type() == cty.String && !v.IsKnown() && (ty == cty.Number || ty == cty.Bool) {
		p.add(a.SrcRange, "%s.%s is a %s, given a string expression", path, a.Name, ty.FriendlyName())
		return
	}
	if _, err := convert.Convert(v, ty); err != nil {
		p.add(a.SrcRange, "%s.%s must be %s: %v", path, a.Name, ty.FriendlyName(), err)
	}
}

// checkRefs wants every reference to resolve: variables, locals, data
// sources and resources that are declared, attributes and blocks their
// schema has, and an index exactly on resources with count or for_each.
func checkRefs(m *module, sc *providerSchema, p *problems) {
	decl := declarations(m)
	for _, b := range m.blocks {
		body := b.Body
		switch b.Type {
		case "terraform":
			continue
		case "variable":
			// type is a type expression, not references.
			body = &hclsyntax.Body{Attributes: hclsyntax.Attributes{}, Blocks: b.Body.Blocks}
		}
		iterators := map[string]bool{}
		walkExprs(body, iterators, func(e hclsyntax.Expression, iters map[string]bool) {
			for _, tr := range e.Variables() {
				checkRef(tr, decl, sc, iters, p)
			}
		})
	}
}

// decls are the names a configuration declares.
type decls struct {
	vars, locals map[string]bool
	resources    map[string]*hclsyntax.Block // TYPE.NAME
	data         map[string]*hclsyntax.Block // TYPE.NAME
}

func declarations(m *module) decls {
	d := decls{vars: map[string]bool{}, locals: map[string]bool{}, resources: map[string]*hclsyntax.Block{}, data: map[string]*hclsyntax.Block{}}
	for _, b := range m.blocks {
		switch b.Type {
		case "variable":
			d.vars[b.Labels[0]] = true
		case "locals":
			for n := range b.Body.Attributes {
				d.locals[n] = true
			}
		case "resource":
			d.resources[b.Labels[0]+"."+b.Labels[1]] = b
		case "data":
			d.data[b.Labels[0]+"."+b.Labels[1]] = b
		}
	}
	return d
}

// walkExprs calls fn for every expression in body, with the names of the
// dynamic-block iterators in scope.
func walkExprs(body *hclsyntax.Body, iters map[string]bool, fn func(hclsyntax.Expression, map[string]bool)) {
	for _, name := range slices.Sorted(maps.Keys(body.Attributes)) {
		fn(body.Attributes[name].Expr, iters)
	}
	for _, b := range body.Blocks {
		inner := iters
		if b.Type == "dynamic" {
			inner = maps.Clone(iters)
			inner[b.Labels[0]] = true
			if it, ok := b.Body.Attributes["iterator"]; ok {
				if tr, diags := hcl.AbsTraversalForExpr(it.Expr); !diags.HasErrors() {
					inner[tr.RootName()] = true
				}
			}
		}
		walkExprs(b.Body, inner, fn)
	}
}

func checkRef(tr hcl.Traversal, d decls, sc *providerSchema, iters map[string]bool, p *problems) {
	root := tr.RootName()
	attr := func(i int) (string, bool) {
		if len(tr) <= i {
			return "", false
		}
		a, ok := tr[i].(hcl.TraverseAttr)
		return a.Name, ok
	}
	rng := tr.SourceRange()
	switch root {
	case "each", "count", "self", "path", "terraform":
		return
	case "var":
		if n, ok := attr(1); ok && !d.vars[n] {
			p.add(rng, "refers to var.%s, which is not declared", n)
		}
		return
	case "local":
		if n, ok := attr(1); ok && !d.locals[n] {
			p.add(rng, "refers to local.%s, which is not declared", n)
		}
		return
	case "data":
		typ, ok1 := attr(1)
		name, ok2 := attr(2)
		if !ok1 || !ok2 {
			p.add(rng, "incomplete reference to a data source")
			return
		}
		b, ok := d.data[typ+"."+name]
		if !ok {
			p.add(rng, "refers to data.%s.%s, which is not declared", typ, name)
			return
		}
		var s *schemaBlock
		if sc != nil {
			s = sc.dataSources[typ]
		}
		checkRefPath(tr[3:], b, s, "data."+typ+"."+name, rng, p)
		return
	}
	if iters[root] {
		return
	}
	name, ok := attr(1)
	if !ok {
		p.add(rng, "refers to %s, which is neither a resource nor a known name", root)
		return
	}
	b, ok := d.resources[root+"."+name]
	if !ok {
		if sc != nil && sc.resources[root] == nil {
			p.add(rng, "refers to %s.%s: no such resource type and no such name", root, name)
		} else {
			p.add(rng, "refers to %s.%s, which is not declared", root, name)
		}
		return
	}
	var s *schemaBlock
	if sc != nil {
		s = sc.resources[root]
	}
	checkRefPath(tr[2:], b, s, root+"."+name, rng, p)
}

// checkRefPath checks the steps after TYPE.NAME: an index exactly when the
// resource has count or for_each, then attributes the schema has.
func checkRefPath(rest hcl.Traversal, b *hclsyntax.Block, s *schemaBlock, what string, rng hcl.Range, p *problems) {
	_, counted := b.Body.Attributes["count"]
	_, each := b.Body.Attributes["for_each"]
	if len(rest) == 0 {
		return // the whole resource (depends_on, for expressions)
	}
	_, indexed := rest[0].(hcl.TraverseIndex)
	switch {
	case (counted || each) && !indexed:
		p.add(rng, "%s has count or for_each: refer to one instance, %s[...]", what, what)
		return
	case !counted && !each && indexed:
		p.add(rng, "%s has neither count nor for_each: it takes no index", what)
		return
	}
	if indexed {
		rest = rest[1:]
	}
	for s != nil && len(rest) > 0 {
		a, ok := rest[0].(hcl.TraverseAttr)
		if !ok {
			return
		}
		if _, ok := s.Attributes[a.Name]; ok {
			return
		}
		nb, ok := s.BlockTypes[a.Name]
		if !ok {
			if a.Name == "id" {
				return // every resource has an id
			}
			p.add(rng, "%s has no attribute %q", what, a.Name)
			return
		}
		what += "." + a.Name
		rest = rest[1:]
		if len(rest) > 0 {
			if _, ok := rest[0].(hcl.TraverseIndex); ok {
				rest = rest[1:]
			}
		}
		s = &nb.Block
	}
}
