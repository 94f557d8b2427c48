package envoy

import (
	"errors"
	"mime"
	"strconv"
	"strings"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
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
	keyQuery         = ast.StringTerm("query")
	keyLLM           = ast.StringTerm("llm")
	keyBody          = ast.StringTerm("body")

	versionTerm = ast.NewTerm(ast.NewObject(
		[2]*ast.Term{ast.StringTerm("encoding"), ast.StringTerm("protojson")},
		[2]*ast.Term{ast.StringTerm("ext_authz"), ast.StringTerm("v3")},
	))
)

// BuildInput turns a CheckRequest into the OPA-Envoy-compatible part of the
// policy input; see BuildRequestInput, whose input it returns.
func BuildInput(req *authv3.CheckRequest) ast.Object {
	in, _ := BuildRequestInput(req)
	return in
}

// HeadersInput is the policy input of a request's headers alone, for the
// decisions an exchange makes without its body (request_headers before it,
// the response phases after): the body is not part of them, so
// truncated_body is false whatever content-length says. llm, when not nil,
// is input.llm from the request's body decision (SetLLM).
func HeadersInput(req *authv3.CheckRequest, llm *ast.Term) ast.Object {
	in := BuildInput(req)
	in.Insert(keyTruncatedBody, ast.BooleanTerm(false))
	if llm != nil {
		in.Insert(keyLLM, llm)
	}
	return in
}

// LLM is input.llm (nil when the body held no LLM request), kept by an
// exchange for the decisions it makes on the answer.
func LLM(in ast.Object) *ast.Term { return in.Get(keyLLM) }

// SetLLM replaces input.llm with r's value (after the exchange changed
// what the upstream will see, such as a capped max_tokens) and returns it.
func SetLLM(in ast.Object, r *llmapi.Request) *ast.Term {
	t := ast.NewTerm(policy.LLMValue(r))
	in.Insert(keyLLM, t)
	return t
}

// BuildRequestInput turns a CheckRequest into the policy input, built
// directly as AST, and returns the LLM request read from its body (nil when
// there is none):
//
//	attributes      the AttributeContext exactly as protojson encodes it
//	parsed_path     path segments; parsed_query: parameter → [values]
//	parsed_body     the decoded body, when there is one and it is complete
//	truncated_body  true when Envoy sent only the first bytes of the body
//	version         {"ext_authz": "v3", "encoding": "protojson"}
//	llm             Bulwark's addition: the parsed LLM request (policy.LLMValue)
//	parse_errors    Bulwark's addition: {"path"|"query"|"body"|"llm": why it was not parsed}
//
// On the routes of an LLM API (llmapi.DetectAPI) the body is read the way
// the API reads it, as JSON whatever its content-type label says: the
// policy and the detectors must see the body the upstream will see, and a
// JSON chat request labelled as a form must not become a form. Elsewhere
// the content type chooses (JSON, forms, multipart, as OPA-Envoy does);
// JSON, text and multipart/form-data bodies (uploads: text parts, Batch API
// JSON Lines files line by line) also yield a generic llm request, so that
// their strings are scanned. Both Envoy doors build their input here and scan
// the returned request's PromptText, so the same bytes get the same
// decision whichever door they came through.
//
// It never fails: what cannot be parsed is left out and explained; the
// policy engine then denies for policies that did not opt into deciding on
// such inputs (policy.SeesUnparsedInput), as OPA-Envoy would.
func BuildRequestInput(req *authv3.CheckRequest) (ast.Object, *llmapi.Request) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	// Room for every field, Bulwark's included, so inserts never regrow it.
	in := ast.NewObjectWithCapacity(16)
	in.Insert(keyAttributes, ast.NewTerm(attributesValue(req.GetAttributes())))
	in.Insert(keyVersion, versionTerm)
	var errs [][2]*ast.Term

	parsedPath, parsedQuery, err := policy.ParsePath(httpReq.GetPath())
	if err != nil {
		key := keyPath
		if errors.Is(err, policy.ErrQuery) {
			key = keyQuery
		}
		errs = append(errs, [2]*ast.Term{key, ast.StringTerm(err.Error())})
	}
	in.Insert(keyParsedPath, ast.NewTerm(parsedPath))
	in.Insert(keyParsedQuery, ast.NewTerm(parsedQuery))

	headers := httpReq.GetHeaders()
	body := httpReq.GetRawBody() // pack_as_bytes
	if len(body) == 0 && httpReq.GetBody() != "" {
		// A read-only view, not a copy (bodies run to megabytes): the
		// parsers only read it, and copy what they keep.
		s := httpReq.GetBody()
		body = unsafe.Slice(unsafe.StringData(s), len(s)) // #nosec G103 -- read-only view of an immutable string, never written or kept
	}
	truncated := Truncated(headers, len(body))
	in.Insert(keyTruncatedBody, ast.BooleanTerm(truncated))
	var llm *llmapi.Request
	if len(body) > 0 {
		switch {
		case truncated:
			errs = append(errs, [2]*ast.Term{keyBody, ast.StringTerm("body truncated by Envoy; not parsed")})
		default:
			path, _, _ := strings.Cut(httpReq.GetPath(), "?")
			api := llmapi.DetectAPI(path)
			ct := headers["content-type"]
			var v ast.Value
			var err error
			if api != llmapi.Generic {
				v, err = policy.ParseJSONBody(body)
			} else {
				v, err = policy.ParseBody(ct, body)
			}
			switch {
			case err == nil:
				in.Insert(keyParsedBody, ast.NewTerm(v))
			case errors.Is(err, policy.ErrBodyNotParsed):
			default:
				errs = append(errs, [2]*ast.Term{keyBody, ast.StringTerm(err.Error())})
			}
			if api != llmapi.Generic || ReadsAsText(ct) || llmapi.IsMultipart(ct) {
				r, err := llmapi.ParseRequestBody(api, ct, body)
				if err != nil {
					errs = append(errs, [2]*ast.Term{keyLLM, ast.StringTerm(err.Error())})
				} else {
					r.ApplyPath(path) // provider; model and streaming where the path names them
					llm = r
					in.Insert(keyLLM, ast.NewTerm(policy.LLMValue(r)))
				}
			}
		}
	}
	if len(errs) > 0 {
		in.Insert(keyParseErrors, ast.NewTerm(ast.NewObject(errs...)))
	}
	return in, llm
}

// ReadsAsText reports whether a body of content type ct on a route that is
// not a known LLM API is read as an LLM request (every string of JSON, or
// the whole text): JSON, +json and text/* types, and a missing label.
func ReadsAsText(ct string) bool {
	mt := MediaType(ct)
	return mt == "" || mt == "application/json" || strings.HasSuffix(mt, "+json") || strings.HasPrefix(mt, "text/")
}

// MediaType is ct's media type, lower-cased, without parameters.
func MediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return mt
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
