package llmapi

import (
	"net/url"
	"strings"
)

// Dialects beyond OpenAI and Anthropic: one file per provider
// (bedrock.go, gemini.go; Azure OpenAI and Vertex AI's Anthropic models
// speak the built-in shapes and need only a path rule here). A provider is
// added by writing its file and registering it in dialects and pathRules
// below; nothing else in the package or its callers changes: parsing,
// redaction, token caps, usage, stream filtering and error shapes all go
// through the dialect's functions.

// The APIs of the provider dialects.
const (
	// BedrockConverse is AWS Bedrock Runtime's Converse and ConverseStream
	// (POST /model/{modelId}/converse, /converse-stream).
	BedrockConverse API = "bedrock.converse"
	// BedrockInvoke is InvokeModel and InvokeModelWithResponseStream
	// (POST /model/{modelId}/invoke, /invoke-with-response-stream) with an
	// Anthropic messages body, the Anthropic-on-Bedrock shape.
	BedrockInvoke API = "bedrock.invoke"
	// GeminiGenerate is Google's generateContent and streamGenerateContent,
	// on the Gemini API (/v1beta/models/{m}:…) and on Vertex AI
	// (/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:…).
	GeminiGenerate API = "gemini.generate_content"
)

// Providers, as input.llm.provider names them.
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderBedrock   = "aws-bedrock"
	ProviderGemini    = "google-gemini"
	ProviderVertex    = "google-vertex"
	ProviderAzure     = "azure-openai"
)

// dialect is everything the package needs to know about one provider API
// that is not one of the built-in OpenAI and Anthropic shapes. Every
// function works on bytes validated by the caller, as the built-in ones do.
type dialect struct {
	// scanRequest reads the conversation's texts (and, when r.meta, the
	// model, limits, tools and tool calls); the generic sweep then reads
	// every other string of the body.
	scanRequest func(r *reqScanner)
	// clamp caps the output-token limit (nil: the API has none).
	clamp func(ed *editor, top *topFields, limit int64)
	// systemSuffix appends to the system prompt, adding one when absent
	// (nil: the API has none).
	systemSuffix func(ed *editor, top *topFields, suffix string)
	// scanResponse reads a whole answer object at top.
	scanResponse func(r *respScanner, top vspan)
	// decodeEvent, filterEvent, ends and channelEvent are DecodeEvent,
	// FilterEvent, EventEnds and ChannelEvent for one event whose data d
	// is a JSON object (d may be empty for ends: a frame without data).
	decodeEvent  func(ev Event, d []byte, meta bool) Delta
	filterEvent  func(f *eventFilter, ev Event)
	ends         func(ev Event, d []byte) (all bool, idx []int)
	channelEvent func(template Event, ch Channel, text string) (Event, error)
	// toolEvent is ToolCallAssembler.Observe for one event (d is its
	// trimmed data, possibly empty): it starts, extends and completes the
	// calls the event carries, and must cost little when a.open is 0 and
	// the event cannot start a call (nil: the API streams no tool calls).
	toolEvent func(a *ToolCallAssembler, ev Event, d []byte)
	// errorBody is a denial in the API's own shape; errorEvent one that
	// ends a stream of the given framing.
	errorBody  func(status int, reason, message string) []byte
	errorEvent func(fr Framing, status int, reason, message string) []byte
}

// dialects is the table of provider dialects, keyed by API. It is filled
// in init because the dialects' functions reach back into the table.
var dialects map[API]*dialect

func init() {
	dialects = map[API]*dialect{
		BedrockConverse: &bedrockConverse,
		BedrockInvoke:   &bedrockInvoke,
		GeminiGenerate:  &geminiGenerate,
	}
}

func dialectOf(api API) *dialect { return dialects[api] }

// pathRule recognises one provider's request paths: match returns the API,
// whether the path streams, and the model the path names ("" when the
// body names it).
type pathRule struct {
	provider string
	match    func(path string) (api API, stream bool, model string, ok bool)
}

// pathRules are tried in order before the built-in suffixes.
var pathRules = [...]pathRule{
	{ProviderBedrock, bedrockPath},
	{ProviderVertex, vertexAnthropicPath},
	{ProviderVertex, vertexGeminiPath},
	{ProviderGemini, geminiPath},
	{ProviderAzure, azurePath},
}

// PathInfo is what a request path says about an LLM call besides its API:
// which provider serves it, the model when the path names it (Bedrock,
// Gemini, Vertex AI, Azure deployments), and whether the call streams
// (ConverseStream, streamGenerateContent, streamRawPredict).
type PathInfo struct {
	API      API
	Provider string
	Model    string
	Stream   bool
}

// DescribePath reads a request path whose query string has been removed.
// Unrecognised paths get the API DetectAPI picks and the provider that API
// implies ("" for Generic).
func DescribePath(path string) PathInfo {
	path = strings.TrimRight(path, "/")
	for _, r := range pathRules {
		if api, stream, model, ok := r.match(path); ok {
			return PathInfo{API: api, Provider: r.provider, Model: model, Stream: stream}
		}
	}
	api := detectBuiltin(path)
	info := PathInfo{API: api}
	switch {
	case api == AnthropicMessages:
		info.Provider = ProviderAnthropic
	case api != Generic:
		info.Provider = ProviderOpenAI
	}
	return info
}

// HasSystemPrompt reports whether RequestEdit.SystemSuffix applies to
// requests of api: OpenAI chat and Responses, Anthropic (also behind
// Bedrock's InvokeModel and Vertex AI), Bedrock Converse and Gemini.
func HasSystemPrompt(api API) bool {
	if d := dialectOf(api); d != nil {
		return d.systemSuffix != nil
	}
	return api == OpenAIChat || api == AnthropicMessages || api == OpenAIResponses
}

// ApplyPath completes r with what its path says: the provider, the model
// when the path names it (the body's own model, where there is one, is kept
// only when the path names none: the upstream serves the path's), and
// streaming when the path alone asks for it.
func (r *Request) ApplyPath(path string) {
	path, _, _ = strings.Cut(path, "?")
	info := DescribePath(path)
	r.Provider = info.Provider
	if info.Model != "" {
		r.Model = info.Model
		if r.uncapped && r.API == BedrockInvoke && invokeFamilyOfModel(info.Model) != familyUnknown {
			// The body's shape names no family but the model id does:
			// EditRequest (given RequestEdit.Model) adds the cap in
			// that family's field.
			r.uncapped = false
		}
	}
	if info.Stream {
		r.Stream = true
	}
}

// modelSegment unescapes a model named in a path (Bedrock ARNs arrive
// percent-encoded).
func modelSegment(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// bedrockPath matches /model/{modelId}/{converse,converse-stream,invoke,
// invoke-with-response-stream}, with any prefix.
func bedrockPath(path string) (API, bool, string, bool) {
	i := strings.LastIndex(path, "/model/")
	if i < 0 {
		return "", false, "", false
	}
	rest := path[i+len("/model/"):]
	j := strings.LastIndexByte(rest, '/')
	if j <= 0 {
		return "", false, "", false
	}
	model := modelSegment(rest[:j])
	switch rest[j+1:] {
	case "converse":
		return BedrockConverse, false, model, true
	case "converse-stream":
		return BedrockConverse, true, model, true
	case "invoke":
		return BedrockInvoke, false, model, true
	case "invoke-with-response-stream":
		return BedrockInvoke, true, model, true
	}
	return "", false, "", false
}

// googleModelAction splits ".../models/{m}:{action}" after prefix.
func googleModelAction(path, publisher string) (model, action string, ok bool) {
	i := strings.LastIndex(path, publisher+"models/")
	if i < 0 {
		return "", "", false
	}
	rest := path[i+len(publisher)+len("models/"):]
	model, action, ok = strings.Cut(rest, ":")
	if !ok || model == "" || strings.ContainsRune(model, '/') {
		return "", "", false
	}
	return modelSegment(model), action, true
}

// vertexAnthropicPath matches Vertex AI's Claude models
// (/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict
// and :streamRawPredict), whose bodies are Anthropic messages.
func vertexAnthropicPath(path string) (API, bool, string, bool) {
	model, action, ok := googleModelAction(path, "/publishers/anthropic/")
	if !ok {
		return "", false, "", false
	}
	switch action {
	case "rawPredict":
		return AnthropicMessages, false, model, true
	case "streamRawPredict":
		return AnthropicMessages, true, model, true
	}
	return "", false, "", false
}

func geminiAction(action string) (API, bool, bool) {
	switch action {
	case "generateContent":
		return GeminiGenerate, false, true
	case "streamGenerateContent":
		return GeminiGenerate, true, true
	case "countTokens":
		// Costs no tokens: read as generic JSON, every string scanned.
		return Generic, false, true
	}
	return "", false, false
}

// vertexGeminiPath matches Vertex AI's Gemini models
// (…/publishers/google/models/{m}:generateContent and friends).
func vertexGeminiPath(path string) (API, bool, string, bool) {
	model, action, ok := googleModelAction(path, "/publishers/google/")
	if !ok {
		return "", false, "", false
	}
	api, stream, ok := geminiAction(action)
	return api, stream, model, ok
}

// geminiPath matches the Gemini API (/v1beta/models/{m}:generateContent).
func geminiPath(path string) (API, bool, string, bool) {
	model, action, ok := googleModelAction(path, "/")
	if !ok {
		return "", false, "", false
	}
	api, stream, ok := geminiAction(action)
	return api, stream, model, ok
}

// azurePath matches Azure OpenAI: deployments
// (/openai/deployments/{d}/chat/completions, …), whose deployment is the
// model, and the v1 API (/openai/v1/chat/completions), whose body names
// it. The bodies are OpenAI's.
func azurePath(path string) (API, bool, string, bool) {
	if i := strings.Index(path, "/openai/deployments/"); i >= 0 {
		rest := path[i+len("/openai/deployments/"):]
		d, op, ok := strings.Cut(rest, "/")
		if !ok || d == "" {
			return "", false, "", false
		}
		return detectBuiltin("/" + op), false, modelSegment(d), true
	}
	if strings.Contains(path, "/openai/v1/") {
		return detectBuiltin(path), false, "", true
	}
	return "", false, "", false
}
