package pipeline

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/identity"
)

var (
	keyID     = ast.StringTerm("id")
	keyKind   = ast.StringTerm("kind")
	keyRoles  = ast.StringTerm("roles")
	keyTenant = ast.StringTerm("tenant")
	keyClaims = ast.StringTerm("claims")
	keyError  = ast.StringTerm("error")

	emptyRoles  = ast.NewArray()
	emptyClaims = ast.NewObject()

	// anonymousValue is shared by every request without a credential; input
	// values are never mutated once built, by Bulwark or by OPA.
	anonymousValue = ast.NewObject(
		[2]*ast.Term{keyID, ast.StringTerm("")},
		[2]*ast.Term{keyKind, ast.StringTerm(string(identity.KindAnonymous))},
		[2]*ast.Term{keyRoles, ast.NewTerm(emptyRoles)},
		[2]*ast.Term{keyTenant, ast.StringTerm("")},
		[2]*ast.Term{keyClaims, ast.NewTerm(emptyClaims)},
	)
)

// PrincipalValue renders a principal as input.principal:
// {id, kind, roles, tenant, claims} plus error when a credential was rejected.
// Every field is present (empty when unknown) so policies can compare without
// first testing for existence.
func PrincipalValue(p identity.Principal) ast.Object {
	if p.ID == "" && p.Error == "" && p.Tenant == "" && len(p.Roles) == 0 && len(p.Claims) == 0 &&
		(p.Kind == "" || p.Kind == identity.KindAnonymous) {
		return anonymousValue // the common case for unauthenticated routes, built once
	}
	kind := p.Kind
	if kind == "" {
		kind = identity.KindAnonymous
	}
	roles := ast.Value(emptyRoles)
	if len(p.Roles) > 0 {
		terms := make([]*ast.Term, len(p.Roles))
		for i, r := range p.Roles {
			terms[i] = ast.StringTerm(r)
		}
		roles = ast.NewArray(terms...)
	}
	claims := ast.Value(emptyClaims)
	if len(p.Claims) > 0 {
		if v, err := ast.InterfaceToValue(p.Claims); err == nil {
			claims = v
		}
	}
	obj := ast.NewObject(
		[2]*ast.Term{keyID, ast.StringTerm(p.ID)},
		[2]*ast.Term{keyKind, ast.StringTerm(string(kind))},
		[2]*ast.Term{keyRoles, ast.NewTerm(roles)},
		[2]*ast.Term{keyTenant, ast.StringTerm(p.Tenant)},
		[2]*ast.Term{keyClaims, ast.NewTerm(claims)},
	)
	if p.Error != "" {
		obj.Insert(keyError, ast.StringTerm(p.Error))
	}
	return obj
}
