package policy

import (
	"maps"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestDecodeRemoveTools(t *testing.T) {
	cases := []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{in: `{"allowed": true}`},
		{in: `{"allowed": true, "remove_tools": {}}`, want: map[string]string{}},
		{in: `{"allowed": true, "remove_tools": {"add": "tool_poisoning", "rm": "tool_not_allowed"}}`,
			want: map[string]string{"add": "tool_poisoning", "rm": "tool_not_allowed"}},
		{in: `{"allowed": true, "remove_tools": ["rm"]}`, want: map[string]string{"rm": "tool_not_allowed"}},
		{in: `{"allowed": true, "remove_tools": {"rm"}}`, want: map[string]string{"rm": "tool_not_allowed"}},
		{in: `{"allowed": true, "remove_tools": {"rm": 1}}`, wantErr: "remove_tools"},
		{in: `{"allowed": true, "remove_tools": "rm"}`, wantErr: "remove_tools"},
		{in: `{"allowed": true, "remove_tools": [1]}`, wantErr: "remove_tools"},
	}
	for _, tc := range cases {
		d, err := DecodeDecision(ast.MustParseTerm(tc.in).Value)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !maps.Equal(d.RemoveTools, tc.want) || (tc.want == nil) != (d.RemoveTools == nil) {
			t.Errorf("%s: got %v, %v", tc.in, d.RemoveTools, err)
		}
	}
}
