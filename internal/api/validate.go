package api

import (
	"bytes"
	"encoding/json"
	"mime"
	"strings"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
)

// DefaultPath is the LLM API path of a request that names none.
const DefaultPath = "/v1/chat/completions"

// Bounds on what a caller may send besides bodies.
const (
	maxPathBytes    = 4096
	maxHeaders      = 64
	maxHeaderBytes  = 64 << 10
	maxSubjectBytes = 256
)

// reservedHeaders are set by the service, never by the caller: credentials
// travel as gRPC metadata (where the identity stage reads them), and the
// body's framing is the service's own.
var reservedHeaders = map[string]string{
	"authorization":           "send credentials as gRPC metadata",
	"x-api-key":               "send credentials as gRPC metadata",
	"x-forwarded-client-cert": "peer identity comes from the connection",
	"content-length":          "set by the service",
	"content-encoding":        "bodies are sent uncompressed",
	"content-type":            "set by the service",
	"transfer-encoding":       "set by the service",
	"host":                    "set by the service",
	"connection":              "set by the service",
	"te":                      "set by the service",
}

// httpRequest is the HTTP request an exchange replays.
type httpRequest struct {
	path    string
	api     llmapi.API
	headers map[string]string
	body    []byte
}

// requestOf validates a request's path, headers and body (an LLM request:
// required, a JSON object of the path's API, within the inspected bound).
func requestOf(maxBody int, path, bodyField, body string, headers map[string]string) (httpRequest, error) {
	if path == "" {
		path = DefaultPath
	}
	if err := validPath(path); err != nil {
		return httpRequest{}, err
	}
	if err := validHeaders(headers); err != nil {
		return httpRequest{}, err
	}
	p, _, _ := strings.Cut(path, "?")
	api := llmapi.DetectAPI(p)
	if err := validRequestBody(maxBody, bodyField, api, body); err != nil {
		return httpRequest{}, err
	}
	return httpRequest{path: path, api: api, headers: headers, body: []byte(body)}, nil
}

func validPath(p string) error {
	switch {
	case len(p) > maxPathBytes:
		return invalid("path", "is %d bytes; at most %d", len(p), maxPathBytes)
	case p[0] != '/':
		return invalid("path", "%q must start with /", p)
	case strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return invalid("path", "contains spaces or control characters")
	}
	return nil
}

func validHeaders(h map[string]string) error {
	if len(h) > maxHeaders {
		return invalid("headers", "%d headers; at most %d", len(h), maxHeaders)
	}
	size := 0
	for k, v := range h {
		size += len(k) + len(v)
		switch {
		case k == "" || !isToken(k):
			return invalid("headers", "%q is not a lower-case header name", k)
		case reservedHeaders[k] != "":
			return invalid("headers", "%s: %s", k, reservedHeaders[k])
		case strings.ContainsAny(v, "\r\n\x00"):
			return invalid("headers", "%s: value contains CR, LF or NUL", k)
		}
	}
	if size > maxHeaderBytes {
		return invalid("headers", "%d bytes; at most %d", size, maxHeaderBytes)
	}
	return nil
}

// isToken reports whether s is an HTTP token in lower case (RFC 9110).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// requiredText is the field each known API's request must carry, and the
// JSON kinds it may have.
var requiredText = map[llmapi.API]struct {
	field string
	kinds string // '[' array, '"' string
}{
	llmapi.OpenAIChat:        {"messages", "["},
	llmapi.AnthropicMessages: {"messages", "["},
	llmapi.OpenAICompletions: {"prompt", `["`},
	llmapi.OpenAIResponses:   {"input", `["`},
	llmapi.OpenAIEmbeddings:  {"input", `["`},
}

// validRequestBody checks that body is what api's endpoint would accept in
// shape: a JSON object whose prompt field has the right type, and whose
// model, stream and max-tokens fields, when present, too. The policy
// decides the rest.
func validRequestBody(maxBody int, field string, api llmapi.API, body string) error {
	b := bytes.TrimSpace([]byte(body))
	switch {
	case len(b) == 0:
		return invalid(field, "is empty")
	case len(body) > maxBody:
		return invalid(field, "is %d bytes; at most %d are inspected", len(body), maxBody)
	case b[0] != '{' || !json.Valid(b):
		return invalid(field, "is not a JSON object")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return invalid(field, "is not a JSON object")
	}
	kind := func(k string) byte {
		v := bytes.TrimSpace(top[k])
		if len(v) == 0 {
			return 0
		}
		switch v[0] {
		case 't', 'f':
			return 'b'
		case 'n':
			return 'n'
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			return '0'
		}
		return v[0]
	}
	if req, ok := requiredText[api]; ok {
		k := kind(req.field)
		if k == 0 {
			return invalid(field, "%s request without %q", api, req.field)
		}
		if strings.IndexByte(req.kinds, k) < 0 {
			return invalid(field, "%q of a %s request must be %s", req.field, api, kindNames(req.kinds))
		}
	}
	for k, want := range map[string]byte{"model": '"', "stream": 'b', "max_tokens": '0', "max_completion_tokens": '0', "max_output_tokens": '0'} {
		if got := kind(k); got != 0 && got != 'n' && got != want {
			return invalid(field, "%q must be %s", k, kindNames(string(want)))
		}
	}
	return nil
}

func kindNames(kinds string) string {
	var names []string
	for i := 0; i < len(kinds); i++ {
		names = append(names, map[byte]string{'[': "an array", '"': "a string", 'b': "a boolean", '0': "a number"}[kinds[i]])
	}
	return strings.Join(names, " or ")
}

// validContentType parses a media type (def when empty) and returns it.
func validContentType(field, ct, def string) (string, error) {
	if ct == "" {
		ct = def
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return "", invalid(field, "%q is not a media type", ct)
	}
	return ct, nil
}

// validAnswer checks a model's answer: present, within the bound, and
// valid JSON when its media type says JSON. It returns the media type.
func validAnswer(maxBody int, body, contentType, def string) (string, error) {
	ct, err := validContentType("content_type", contentType, def)
	if err != nil {
		return "", err
	}
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case body == "":
		return "", invalid("body", "is empty")
	case len(body) > maxBody:
		return "", invalid("body", "is %d bytes; at most %d are inspected", len(body), maxBody)
	case (mt == "application/json" || strings.HasSuffix(mt, "+json")) && !json.Valid([]byte(body)):
		return "", invalid("body", "is not valid JSON (content_type %s)", mt)
	}
	return ct, nil
}
