package extauthz

import (
	"errors"
	"strconv"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/policy"
)

var (
	keyAttributes    = ast.StringTerm("attributes")
	keyParsedPath    = ast.StringTerm("parsed_path")
	keyParsedQuery   = ast.StringTerm("parsed_query")
	keyParsedBody    = ast.StringTerm("parsed_body")
	keyTruncatedBody = ast.StringTerm("truncated_body")
	keyVersion       = ast.StringTerm("version")
	keyParseErrors   = ast.StringTerm("parse_errors")
	keyPath          = ast.StringTerm("path")
	keyBody          = ast.StringTerm("body")

	versionTerm = ast.NewTerm(ast.NewObject(
		[2]*ast.Term{ast.StringTerm("encoding"), ast.StringTerm("protojson")},
		[2]*ast.Term{ast.StringTerm("ext_authz"), ast.StringTerm("v3")},
	))
)

// BuildInput turns a CheckRequest into the OPA-Envoy-compatible part of the
// policy input, built directly as AST:
//
//	attributes      the AttributeContext exactly as protojson encodes it
//	parsed_path     path segments; parsed_query: parameter → [values]
//	parsed_body     decoded JSON or form body, when there is one and it is complete
//	truncated_body  true when Envoy sent only the first bytes of the body
//	version         {"ext_authz": "v3", "encoding": "protojson"}
//	parse_errors    Bulwark's addition: {"path"|"body": why it was not parsed}
//
// It never fails: what cannot be parsed is left out and explained.
func BuildInput(req *authv3.CheckRequest) ast.Object {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	// Room for every field, Bulwark's included, so inserts never regrow it.
	in := ast.NewObjectWithCapacity(16)
	in.Insert(keyAttributes, ast.NewTerm(attributesValue(req.GetAttributes())))
	in.Insert(keyVersion, versionTerm)
	var errs [][2]*ast.Term

	parsedPath, parsedQuery, err := policy.ParsePath(httpReq.GetPath())
	if err != nil {
		errs = append(errs, [2]*ast.Term{keyPath, ast.StringTerm(err.Error())})
	}
	in.Insert(keyParsedPath, ast.NewTerm(parsedPath))
	in.Insert(keyParsedQuery, ast.NewTerm(parsedQuery))

	headers := httpReq.GetHeaders()
	body := httpReq.GetRawBody() // pack_as_bytes
	if len(body) == 0 && httpReq.GetBody() != "" {
		// A read-only view, not a copy (bodies run to megabytes): ParseBody
		// only reads it, and copies what it keeps.
		s := httpReq.GetBody()
		body = unsafe.Slice(unsafe.StringData(s), len(s)) // #nosec G103 -- read-only view of an immutable string, never written or kept
	}
	truncated := Truncated(headers, len(body))
	in.Insert(keyTruncatedBody, ast.BooleanTerm(truncated))
	if len(body) > 0 {
		switch {
		case truncated:
			errs = append(errs, [2]*ast.Term{keyBody, ast.StringTerm("body truncated by Envoy; not parsed")})
		default:
			v, err := policy.ParseBody(headers["content-type"], body)
			switch {
			case err == nil:
				in.Insert(keyParsedBody, ast.NewTerm(v))
			case errors.Is(err, policy.ErrBodyNotParsed):
			default:
				errs = append(errs, [2]*ast.Term{keyBody, ast.StringTerm(err.Error())})
			}
		}
	}
	if len(errs) > 0 {
		in.Insert(keyParseErrors, ast.NewTerm(ast.NewObject(errs...)))
	}
	return in
}

// Truncated reports whether Envoy sent only part of the body: it says so with
// x-envoy-auth-partial-body when allow_partial_message is on, and a declared
// content-length longer than what arrived means the same.
func Truncated(headers map[string]string, got int) bool {
	if headers["x-envoy-auth-partial-body"] == "true" {
		return true
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && n > int64(got) {
			return true
		}
	}
	return false
}
