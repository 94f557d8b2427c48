package llmapi

import "net/http"

// errorType names the error for an HTTP status in each provider's
// vocabulary, so that SDKs and clients classify Bulwark's denials as they
// would the provider's own errors.
func errorType(api API, status int) string {
	anthropic := api == AnthropicMessages
	switch {
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status == http.StatusNotFound:
		return "not_found_error"
	case status == http.StatusRequestEntityTooLarge && anthropic:
		return "request_too_large"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == 529 && anthropic:
		return "overloaded_error"
	case status >= 500 && anthropic:
		return "api_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

// appendOpenAIError appends {"message":…,"type":…,"code":…,"param":null};
// an empty reason becomes a null code.
func appendOpenAIError(dst []byte, typ, reason, message string) []byte {
	dst = append(dst, `{"message":`...)
	dst = appendQuote(dst, message)
	dst = append(dst, `,"type":`...)
	dst = appendQuote(dst, typ)
	dst = append(dst, `,"code":`...)
	if reason == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendQuote(dst, reason)
	}
	return append(dst, `,"param":null}`...)
}

// ErrorBody returns a denial body in the API's own error shape, so that
// clients surface Bulwark's reason through their usual error handling.
// OpenAI-style (every openai.* API and Generic):
// {"error":{"message":…,"type":…,"code":reason,"param":null}}. Anthropic:
// {"type":"error","error":{"type":…,"message":…}}. The type follows each
// provider's vocabulary for status (400 invalid_request_error, 401
// authentication_error, 403 permission_error, 404 not_found_error, 413
// request_too_large (Anthropic) or invalid_request_error (OpenAI), 429
// rate_limit_error, 5xx api_error (Anthropic; 529 overloaded_error) or
// server_error (OpenAI)).
func ErrorBody(api API, status int, reason, message string) []byte {
	if d := dialectOf(api); d != nil {
		return d.errorBody(status, reason, message)
	}
	typ := errorType(api, status)
	if !openAIStyle(api) {
		b := append([]byte(nil), `{"type":"error","error":{"type":`...)
		b = appendQuote(b, typ)
		b = append(b, `,"message":`...)
		b = appendQuote(b, message)
		return append(b, `}}`...)
	}
	b := append([]byte(nil), `{"error":`...)
	b = appendOpenAIError(b, typ, reason, message)
	return append(b, '}')
}

// ErrorEvent returns the error as one SSE event that ends a stream already
// under way (the status line has gone, so the error must travel in-band).
// It uses the vocabulary of a 403 denial; see ErrorEventStatus for others.
func ErrorEvent(api API, reason, message string) []byte {
	return ErrorEventStatus(api, http.StatusForbidden, reason, message)
}

// ErrorEventStatus is ErrorEvent with the error type chosen for status.
// OpenAI chat, completions, embeddings and Generic: "data: {"error":…}\n\n"
// (OpenAI SDKs raise on any data carrying "error"). Responses: an "error"
// event whose data is the Responses error event ({"type":"error","code",
// "message","param"}) that also carries "error", so typed consumers and
// the SDKs both stop. Anthropic: "event: error\ndata: {…}\n\n".
func ErrorEventStatus(api API, status int, reason, message string) []byte {
	if d := dialectOf(api); d != nil {
		return d.errorEvent(defaultFraming(api), status, reason, message)
	}
	switch api {
	case AnthropicMessages:
		b := append([]byte(nil), "event: error\ndata: "...)
		b = append(b, ErrorBody(api, status, reason, message)...)
		return append(b, "\n\n"...)
	case OpenAIResponses:
		b := append([]byte(nil), `event: error`+"\n"+`data: {"type":"error","code":`...)
		if reason == "" {
			b = append(b, "null"...)
		} else {
			b = appendQuote(b, reason)
		}
		b = append(b, `,"message":`...)
		b = appendQuote(b, message)
		b = append(b, `,"param":null,"error":`...)
		b = appendOpenAIError(b, errorType(api, status), reason, message)
		return append(b, "}\n\n"...)
	}
	b := append([]byte(nil), "data: "...)
	b = append(b, ErrorBody(api, status, reason, message)...)
	return append(b, "\n\n"...)
}
