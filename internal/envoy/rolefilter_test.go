package envoy

import "testing"

func TestRoleFilter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		scan, trusted []string
		role          string
		want, wantNil bool
	}{
		{name: "nothing configured reads every role", role: "system", want: true, wantNil: true},
		{name: "trusted system prompt not read", trusted: []string{"system", "developer"}, role: "system", want: false},
		{name: "trusted compared without case", trusted: []string{"system"}, role: "System", want: false},
		{name: "developer trusted", trusted: []string{"system", "developer"}, role: "developer", want: false},
		{name: "user read", trusted: []string{"system", "developer"}, role: "user", want: true},
		{name: "tool results read", trusted: []string{"system", "developer"}, role: "tool", want: true},
		{name: "scan list limits", scan: []string{"user"}, role: "assistant", want: false},
		{name: "scan list less trusted", scan: []string{"user", "system"}, trusted: []string{"system"}, role: "system", want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := RoleFilter(tc.scan, tc.trusted)
			if (f == nil) != tc.wantNil {
				t.Fatalf("RoleFilter(%v, %v) nil = %v, want %v", tc.scan, tc.trusted, f == nil, tc.wantNil)
			}
			if got := f == nil || f(tc.role); got != tc.want {
				t.Errorf("RoleFilter(%v, %v)(%q) = %v, want %v", tc.scan, tc.trusted, tc.role, got, tc.want)
			}
		})
	}
}
