package geminitest

import (
	"encoding/json"
	"slices"
	"strings"
)

// answerJSON is the text of a structured answer: a value built from the
// schema (every property, the first enum value, arrays of one item), or,
// when bad, a value that breaks it (the wrong type).
func answerJSON(schema json.RawMessage, bad bool) string {
	var s any
	if len(schema) > 0 {
		json.Unmarshal(schema, &s)
	}
	if bad {
		node, _ := s.(map[string]any)
		if strings.EqualFold(str(node["type"]), "OBJECT") || node["properties"] != nil {
			return `["not", "the", "object", "the", "schema", "asks", "for"]`
		}
		return `{"unexpected": true}`
	}
	b, _ := json.Marshal(exampleOf("value", s))
	return string(b)
}

func exampleOf(name string, s any) any {
	node, _ := s.(map[string]any)
	if enum, ok := node["enum"].([]any); ok && len(enum) > 0 {
		return enum[0]
	}
	switch strings.ToUpper(str(node["type"])) {
	case "OBJECT":
		props, _ := node["properties"].(map[string]any)
		out := make(map[string]any, len(props))
		keys := make([]string, 0, len(props))
		for k := range props {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			out[k] = exampleOf(k, props[k])
		}
		return out
	case "ARRAY":
		return []any{exampleOf(name, node["items"])}
	case "INTEGER":
		return 1
	case "NUMBER":
		return 1.5
	case "BOOLEAN":
		return true
	case "NULL":
		return nil
	default:
		return "example " + name
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
