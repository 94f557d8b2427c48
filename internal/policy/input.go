package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
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
		qerr = fmt.Errorf("%w: %w", ErrQuery, qerr)
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

// ErrQuery marks a query string that did not decode entirely: parsed_query
// holds what did. OPA-Envoy ignores such errors too (only a path that does
// not decode fails its input), so it is no reason to fail closed.
var ErrQuery = errors.New("parse query")

// ErrBodyNotParsed reports a body whose content type Bulwark does not decode;
// it is not a failure, the body is simply not in parsed_body.
var ErrBodyNotParsed = errors.New("content type not parsed")

// ParseBody decodes a request body for parsed_body as OPA-Envoy does: JSON
// (application/json and any +json type) into its value, HTML forms
// (application/x-www-form-urlencoded) into name → [values], and
// multipart/form-data into name → [values], where a part labelled JSON is
// its decoded value and any other part its text. Media types compare
// case-insensitively. It returns ErrBodyNotParsed for other types and a
// descriptive error for malformed bodies; callers leave parsed_body out and
// record why.
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
	case mt == "multipart/form-data":
		return parseMultipart(contentType, body)
	default:
		return nil, ErrBodyNotParsed
	}
}

// ParseJSONBody decodes body as JSON whatever its label says: how LLM APIs
// read a request body, and so how Bulwark must read it on their routes.
func ParseJSONBody(body []byte) (ast.Value, error) { return parseJSON(body) }

// parseMultipart decodes a multipart/form-data body into name → [values].
func parseMultipart(contentType string, body []byte) (ast.Value, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("invalid multipart content type: %w", err)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errors.New("invalid multipart body: no boundary")
	}
	values := map[string][]*ast.Term{}
	var names []string
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("invalid multipart body: %w", err)
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("invalid multipart body: part %q: %w", name, err)
		}
		v := ast.Value(ast.String(data))
		if pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); pt == "application/json" || strings.HasSuffix(pt, "+json") {
			if v, err = parseJSON(data); err != nil {
				return nil, fmt.Errorf("invalid multipart body: part %q: %w", name, err)
			}
		}
		if _, seen := values[name]; !seen {
			names = append(names, name)
		}
		values[name] = append(values[name], ast.NewTerm(v))
	}
	sort.Strings(names)
	kvs := make([][2]*ast.Term, len(names))
	for i, n := range names {
		kvs[i] = [2]*ast.Term{ast.StringTerm(n), ast.ArrayTerm(values[n]...)}
	}
	return ast.NewObject(kvs...), nil
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

var (
	keyParseErrors = ast.StringTerm("parse_errors")
	keyPath        = ast.StringTerm("path")
	keyLLM         = ast.StringTerm("llm")
	keyTruncated   = ast.StringTerm("truncated_body")
)

// Unparsed reports whether input records a path, body or LLM request it
// could not parse (input.parse_errors.path, .body or .llm). A query string
// that did not fully decode does not count, nor does a body Envoy truncated
// (input.truncated_body): OPA-Envoy builds its input in both cases and
// lets the policy decide.
func Unparsed(input ast.Value) bool {
	obj, ok := input.(ast.Object)
	if !ok {
		return false
	}
	pe := obj.Get(keyParseErrors)
	if pe == nil {
		return false
	}
	errs, ok := pe.Value.(ast.Object)
	if !ok {
		return true
	}
	if errs.Get(keyPath) != nil {
		return true
	}
	if t := obj.Get(keyTruncated); t != nil && t.Value.Compare(ast.Boolean(true)) == 0 {
		return false
	}
	return errs.Get(keyBody) != nil || errs.Get(keyLLM) != nil
}
