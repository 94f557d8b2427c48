package envoy

import (
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/bulwark-ai/bulwark/internal/pipeline"
)

// DecisionIDHeader carries the decision id to the client and upstream, so a
// user's error report can be matched to logs and audit records.
const DecisionIDHeader = "x-bulwark-decision-id"

// RoleFilter returns the filter llmapi.Request.PromptText applies: the
// configured scan roles (empty: every role) less the trusted ones, compared
// case-insensitively; nil when it accepts every role.
func RoleFilter(scan, trusted []string) func(role string) bool {
	if len(scan) == 0 && len(trusted) == 0 {
		return nil
	}
	set := func(roles []string) map[string]bool {
		m := make(map[string]bool, len(roles))
		for _, r := range roles {
			m[strings.ToLower(r)] = true
		}
		return m
	}
	in, skip := set(scan), set(trusted)
	return func(role string) bool {
		r := strings.ToLower(role)
		return (len(in) == 0 || in[r]) && !skip[r]
	}
}

// DecisionMetadata is what Envoy is told about any decision as dynamic
// metadata, for later filters and access logs: the policy's own
// dynamic_metadata, plus decision_id, reason, and dry-run markers when a
// deny was overridden. ext_proc sends it per phase; ext_authz adds who
// asked (metadata).
func DecisionMetadata(out pipeline.Outcome) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(out.Decision.DynamicMetadata)+7)
	for k, v := range out.Decision.DynamicMetadata {
		fields[k] = structValue(v)
	}
	fields["decision_id"] = structpb.NewStringValue(out.DecisionID)
	if out.Reason != "" {
		fields["reason"] = structpb.NewStringValue(out.Reason)
	}
	if out.DryRunDenied {
		fields["dry_run_denied"] = structpb.NewBoolValue(true)
		fields["dry_run_reason"] = structpb.NewStringValue(out.Reason)
	}
	return &structpb.Struct{Fields: fields}
}

// structValue converts a decoded policy value (ast.JSON output, whose numbers
// are json.Number) into a protobuf Value.
func structValue(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case bool:
		return structpb.NewBoolValue(x)
	case string:
		return structpb.NewStringValue(x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return structpb.NewStringValue(x.String())
		}
		return structpb.NewNumberValue(f)
	case float64:
		return structpb.NewNumberValue(x)
	case int:
		return structpb.NewNumberValue(float64(x))
	case map[string]any:
		fields := make(map[string]*structpb.Value, len(x))
		for k, e := range x {
			fields[k] = structValue(e)
		}
		return structpb.NewStructValue(&structpb.Struct{Fields: fields})
	case []any:
		vals := make([]*structpb.Value, len(x))
		for i, e := range x {
			vals[i] = structValue(e)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: vals})
	default:
		if sv, err := structpb.NewValue(x); err == nil {
			return sv
		}
		return structpb.NewNullValue()
	}
}
