package terraform

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// evaluator computes what can be known of an expression without a plan:
// variables take their defaults (or the given overrides), locals are
// evaluated from them, and everything that depends on a resource, data
// source, each or count is unknown. It is enough to expand the for_each of
// IAM grants, the prefix tables and the API list, and to type-check
// arguments.
type evaluator struct {
	m       *module
	vars    map[string]cty.Value
	locals  map[string]cty.Value
	pending map[string]bool
	funcs   map[string]function.Function
}

func newEvaluator(m *module, overrides map[string]cty.Value) *evaluator {
	ev := &evaluator{m: m, vars: map[string]cty.Value{}, locals: map[string]cty.Value{}, pending: map[string]bool{}, funcs: functions()}
	for _, b := range m.blocks {
		if b.Type != "variable" {
			continue
		}
		ty, def := cty.DynamicPseudoType, cty.NilVal
		if a, ok := b.Body.Attributes["type"]; ok {
			if t, _, diags := typeexpr.TypeConstraintWithDefaults(a.Expr); !diags.HasErrors() {
				ty = t
			}
		}
		v := cty.UnknownVal(ty)
		if a, ok := b.Body.Attributes["default"]; ok {
			if d, ok := literal(a.Expr); ok {
				def = d
			} else if d, diags := a.Expr.Value(nil); !diags.HasErrors() {
				def = d // null
			}
		}
		if o, ok := overrides[b.Labels[0]]; ok {
			def = o
		}
		if def != cty.NilVal {
			if c, err := convert.Convert(def, ty); err == nil {
				v = c
			}
		}
		ev.vars[b.Labels[0]] = v
	}
	return ev
}

// value evaluates e; whatever cannot be known is cty.DynamicVal.
func (ev *evaluator) value(e hclsyntax.Expression) cty.Value {
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}, Functions: ev.funcs}
	locals := map[string]cty.Value{}
	for _, tr := range e.Variables() {
		switch root := tr.RootName(); root {
		case "var":
			ctx.Variables["var"] = cty.ObjectVal(ev.vars)
		case "local":
			if a, ok := tr[1].(hcl.TraverseAttr); ok {
				locals[a.Name] = ev.local(a.Name)
			}
		case "path":
			ctx.Variables["path"] = cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal("."), "root": cty.StringVal(".")})
		default:
			ctx.Variables[root] = cty.DynamicVal
		}
	}
	if len(locals) > 0 {
		ctx.Variables["local"] = cty.ObjectVal(locals)
	}
	v, diags := e.Value(ctx)
	if diags.HasErrors() {
		return cty.DynamicVal
	}
	return v
}

// local evaluates local.name once.
func (ev *evaluator) local(name string) cty.Value {
	if v, ok := ev.locals[name]; ok {
		return v
	}
	e, ok := ev.m.locals[name]
	if !ok || ev.pending[name] {
		return cty.DynamicVal
	}
	ev.pending[name] = true
	v := ev.value(e)
	delete(ev.pending, name)
	ev.locals[name] = v
	return v
}

// strings returns a known list, set or map of strings (its values, or its
// keys for a map) or ok = false.
func knownStrings(v cty.Value, keys bool) ([]string, bool) {
	if !v.IsWhollyKnown() || v.IsNull() {
		return nil, false
	}
	ty := v.Type()
	if !(ty.IsListType() || ty.IsSetType() || ty.IsTupleType() || ty.IsMapType() || ty.IsObjectType()) {
		return nil, false
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if keys || ty.IsMapType() || ty.IsObjectType() {
			e = k
		}
		if e.Type() != cty.String {
			return nil, false
		}
		out = append(out, e.AsString())
	}
	return out, true
}

// functions are the Terraform functions genimg's configuration uses, from
// go-cty's standard library; any other is unknown, and so is its result.
func functions() map[string]function.Function {
	conv := func(ty cty.Type) function.Function {
		return function.New(&function.Spec{
			Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType, AllowNull: true, AllowUnknown: true}},
			Type:   function.StaticReturnType(ty),
			Impl: func(args []cty.Value, retType cty.Type) (cty.Value, error) {
				return convert.Convert(args[0], retType)
			},
		})
	}
	return map[string]function.Function{
		"concat": stdlib.ConcatFunc, "distinct": stdlib.DistinctFunc, "merge": stdlib.MergeFunc,
		"join": stdlib.JoinFunc, "flatten": stdlib.FlattenFunc, "keys": stdlib.KeysFunc,
		"length": stdlib.LengthFunc, "contains": stdlib.ContainsFunc, "setproduct": stdlib.SetProductFunc,
		"jsonencode": stdlib.JSONEncodeFunc, "min": stdlib.MinFunc, "max": stdlib.MaxFunc,
		"replace": stdlib.ReplaceFunc, "split": stdlib.SplitFunc, "element": stdlib.ElementFunc,
		"floor": stdlib.FloorFunc, "ceil": stdlib.CeilFunc, "regex": stdlib.RegexFunc, "format": stdlib.FormatFunc,
		"lower": stdlib.LowerFunc, "upper": stdlib.UpperFunc,
		"tostring": conv(cty.String), "tonumber": conv(cty.Number), "tobool": conv(cty.Bool),
		"toset": conv(cty.Set(cty.String)), "tolist": conv(cty.List(cty.String)),
	}
}
