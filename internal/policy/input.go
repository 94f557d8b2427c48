package policy

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ParsePath splits a request path the way OPA-Envoy does: parsed_path is the
// decoded path without its leading slashes, split on "/" (so "/" gives [""]),
// and parsed_query maps each query parameter to the list of its values.
//
// Unlike OPA-Envoy, which runs url.Parse, the path is never read as a URL
// with an authority: "//admin/x" gives ["admin", "x"], not ["x"] with host
// "admin", so a doubled slash cannot hide a segment from a policy. A path
// that does not decode yields an error and empty values, so the policy still
// runs (and can deny) instead of the Check failing.
func ParsePath(path string) (parsedPath *ast.Array, parsedQuery ast.Object, err error) {
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	rawPath, _, _ = strings.Cut(rawPath, "#")
	rawQuery, _, _ = strings.Cut(rawQuery, "#")
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return ast.NewArray(), ast.NewObject(), fmt.Errorf("parse path: %w", err)
	}
	segs := strings.Split(strings.TrimLeft(decoded, "/"), "/")
	terms := make([]*ast.Term, len(segs))
	for i, s := range segs {
		terms[i] = ast.StringTerm(s)
	}
	parsedPath = ast.NewArray(terms...)
	if rawQuery == "" {
		return parsedPath, emptyQuery, nil
	}
	q, qerr := url.ParseQuery(rawQuery)
	if qerr != nil {
		qerr = fmt.Errorf("parse query: %w", qerr)
	}
	return parsedPath, valuesObject(q), qerr
}

// emptyQuery is shared by every request without a query string; input values
// are never mutated once built.
var emptyQuery = ast.NewObject()

func valuesObject(q url.Values) ast.Object {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kvs := make([][2]*ast.Term, 0, len(q))
	for _, k := range keys {
		vs := q[k]
		elems := make([]*ast.Term, len(vs))
		for i, v := range vs {
			elems[i] = ast.StringTerm(v)
		}
		kvs = append(kvs, [2]*ast.Term{ast.StringTerm(k), ast.ArrayTerm(elems...)})
	}
	return ast.NewObject(kvs...)
}

// ErrBodyNotParsed reports a body whose content type Bulwark does not decode;
// it is not a failure, the body is simply not in parsed_body.
var ErrBodyNotParsed = errors.New("content type not parsed")

// ParseBody decodes a request body for parsed_body: JSON (application/json and
// any +json type) into its value, and HTML forms
// (application/x-www-form-urlencoded) into name → [values]. It returns
// ErrBodyNotParsed for other types and a descriptive error for malformed
// bodies; callers leave parsed_body out and record why.
func ParseBody(contentType string, body []byte) (ast.Value, error) {
	if len(body) == 0 {
		return nil, ErrBodyNotParsed
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(strings.Split(contentType, ";")[0]))
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return parseJSON(body)
	case mt == "application/x-www-form-urlencoded":
		q, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("invalid form body: %w", err)
		}
		return valuesObject(q), nil
	default:
		return nil, ErrBodyNotParsed
	}
}

// parseJSON decodes a JSON body straight into an ast.Value (see jsonast.go);
// the result and what is rejected are those of encoding/json with UseNumber
// followed by ast.InterfaceToValue, without building the value twice.
func parseJSON(body []byte) (ast.Value, error) {
	v, err := decodeJSONValue(body)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON body: %w", err)
	}
	return v, nil
}
