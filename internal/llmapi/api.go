package llmapi

import (
	"errors"
	"strings"
)

// API identifies the request and response shape of an LLM endpoint. It is
// chosen from the request path once per exchange and then selects how every
// body and stream event of that exchange is read and rewritten.
type API string

// The APIs this package understands. Anything else is Generic, which still
// exposes every string of a JSON body (or the whole text body) so that
// unknown endpoints are never invisible to policy.
const (
	OpenAIChat        API = "openai.chat"        // POST /v1/chat/completions
	OpenAICompletions API = "openai.completions" // POST /v1/completions
	OpenAIResponses   API = "openai.responses"   // POST /v1/responses
	OpenAIEmbeddings  API = "openai.embeddings"  // POST /v1/embeddings
	AnthropicMessages API = "anthropic.messages" // POST /v1/messages
	Generic           API = "generic"            // any other JSON or text body
)

// Errors returned by this package. They are sentinels so that callers can
// map them to stable metric labels and deny reasons with errors.Is.
var (
	// ErrMalformed means a body of a known API is not the JSON object that
	// API requires. Generic bodies are never malformed.
	ErrMalformed = errors.New("llmapi: malformed body")
	// ErrEventTooLarge means one SSE event, complete or still pending,
	// is longer than SSEParser.MaxEventBytes.
	ErrEventTooLarge = errors.New("llmapi: SSE event too large")
	// ErrTooLarge means a decoded body would exceed the caller's bound.
	ErrTooLarge = errors.New("llmapi: decoded body too large")
	// ErrUnsupportedEncoding means a content-encoding this package cannot
	// undo (br, zstd, compress, unknown tokens).
	ErrUnsupportedEncoding = errors.New("llmapi: unsupported content-encoding")
	// ErrNoText means a stream event carries no output text to replace.
	ErrNoText = errors.New("llmapi: event carries no output text")
)

// apiSuffixes maps path suffixes to APIs, most specific first: the chat
// suffix must be tried before the completions suffix it contains.
var apiSuffixes = [...]struct {
	suffix string
	api    API
}{
	{"/chat/completions", OpenAIChat},
	{"/completions", OpenAICompletions},
	{"/responses", OpenAIResponses},
	{"/embeddings", OpenAIEmbeddings},
	// Only /v1/messages: /v1/threads/{id}/messages (OpenAI Assistants) has
	// a different body, and reading it as Anthropic would hide its text.
	{"/v1/messages", AnthropicMessages},
}

// DetectAPI picks the API from a request path whose query string has
// already been removed. It matches by suffix, so prefixed routes
// (/openai/v1/chat/completions) and Azure deployments
// (/openai/deployments/x/chat/completions) are recognised; a trailing slash
// is ignored. Provider paths (Bedrock, Gemini, Vertex AI; see
// DescribePath) are recognised first. Anything unrecognised is Generic. Callers should pass the
// normalised path Envoy routes on, so that the upstream and Bulwark agree.
func DetectAPI(path string) API { return DescribePath(path).API }

// detectBuiltin is DetectAPI for the built-in OpenAI and Anthropic paths.
func detectBuiltin(path string) API {
	path = strings.TrimRight(path, "/")
	for _, s := range apiSuffixes {
		if strings.HasSuffix(path, s.suffix) {
			return s.api
		}
	}
	if path == "/messages" {
		return AnthropicMessages
	}
	return Generic
}

// openAIStyle reports whether errors of api use OpenAI's error shape.
func openAIStyle(api API) bool { return api != AnthropicMessages }
