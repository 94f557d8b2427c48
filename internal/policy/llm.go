package policy

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
)

// Keys of input.llm, built once.
var (
	keyAPI             = ast.StringTerm("api")
	keyModel           = ast.StringTerm("model")
	keyStream          = ast.StringTerm("stream")
	keyMaxTokens       = ast.StringTerm("max_tokens")
	keyChoices         = ast.StringTerm("n")
	keyMessages        = ast.StringTerm("messages")
	keyRole            = ast.StringTerm("role")
	keyContent         = ast.StringTerm("content")
	keyTools           = ast.StringTerm("tools")
	keyToolCalls       = ast.StringTerm("tool_calls")
	keyName            = ast.StringTerm("name")
	keyEstimatedTokens = ast.StringTerm("estimated_tokens")
	keyID              = ast.StringTerm("id")
	keyType            = ast.StringTerm("type")
	keyDescription     = ast.StringTerm("description")
	keyArguments       = ast.StringTerm("arguments")
	keyArgumentsValid  = ast.StringTerm("arguments_valid")
	keyProvider        = ast.StringTerm("provider")
)

// Keys of the response phases' additions to the input.
var (
	keyResponse     = ast.StringTerm("response")
	keyUsage        = ast.StringTerm("usage")
	keyStatus       = ast.StringTerm("status")
	keyContentType  = ast.StringTerm("content_type")
	keyPromptTokens = ast.StringTerm("prompt_tokens")
	keyCompletion   = ast.StringTerm("completion_tokens")
	keyTotalTokens  = ast.StringTerm("total_tokens")
)

// AddResponse sets input.response: the answer's status and content type
// (DESIGN.md, policy contract).
func AddResponse(in ast.Object, status int, contentType string) {
	in.Insert(keyResponse, ast.NewTerm(ast.NewObject(
		[2]*ast.Term{keyStatus, ast.IntNumberTerm(status)},
		[2]*ast.Term{keyContentType, ast.StringTerm(contentType)},
	)))
}

// AddUsage sets input.usage: the tokens the model reported.
func AddUsage(in ast.Object, u llmapi.Usage) {
	in.Insert(keyUsage, ast.NewTerm(ast.NewObject(
		[2]*ast.Term{keyPromptTokens, ast.IntNumberTerm(int(u.PromptTokens))},
		[2]*ast.Term{keyCompletion, ast.IntNumberTerm(int(u.CompletionTokens))},
		[2]*ast.Term{keyTotalTokens, ast.IntNumberTerm(int(u.TotalTokens))},
	)))
}

// LLMValue renders a parsed LLM request as input.llm (DESIGN.md, policy
// contract). Both Envoy doors build it from the same llmapi.Request, so a
// policy reads the model, the limits and the messages the upstream will
// read, whatever the body's content-type label said. n is the number of
// answers requested (n or best_of, at least 1): the output a request may
// cost is n × max_tokens. tools are the declared tools ({name, type,
// description}); tool_calls the calls in the history ({id, name}): their
// arguments are left out (those calls were made already; the detectors
// read the text).
func LLMValue(r *llmapi.Request) ast.Value {
	msgs := make([]*ast.Term, len(r.Messages))
	chars := 0
	for i, m := range r.Messages {
		chars += len(m.Content)
		msgs[i] = ast.ObjectTerm(
			[2]*ast.Term{keyRole, ast.StringTerm(m.Role)},
			[2]*ast.Term{keyContent, ast.StringTerm(m.Content)})
	}
	tools := make([]*ast.Term, len(r.Tools))
	for i, t := range r.Tools {
		tools[i] = ast.ObjectTerm(
			[2]*ast.Term{keyName, ast.StringTerm(t.Name)},
			[2]*ast.Term{keyType, ast.StringTerm(t.Type)},
			[2]*ast.Term{keyDescription, ast.StringTerm(t.Description)})
	}
	calls := make([]*ast.Term, len(r.ToolCalls))
	for i, c := range r.ToolCalls {
		calls[i] = ast.ObjectTerm(
			[2]*ast.Term{keyID, ast.StringTerm(c.ID)},
			[2]*ast.Term{keyName, ast.StringTerm(c.Name)})
	}
	return ast.NewObject(
		[2]*ast.Term{keyAPI, ast.StringTerm(string(r.API))},
		[2]*ast.Term{keyModel, ast.StringTerm(r.Model)},
		[2]*ast.Term{keyStream, ast.BooleanTerm(r.Stream)},
		[2]*ast.Term{keyMaxTokens, ast.IntNumberTerm(int(r.MaxTokens))},
		[2]*ast.Term{keyChoices, ast.IntNumberTerm(int(max(r.Choices, 1)))},
		[2]*ast.Term{keyMessages, ast.ArrayTerm(msgs...)},
		[2]*ast.Term{keyTools, ast.ArrayTerm(tools...)},
		[2]*ast.Term{keyToolCalls, ast.ArrayTerm(calls...)},
		// About four bytes a token for English text: the estimate the
		// detectors' length signal uses too.
		[2]*ast.Term{keyEstimatedTokens, ast.IntNumberTerm((chars + 3) / 4)},
		// Who serves the API (openai, anthropic, aws-bedrock, google-gemini,
		// google-vertex, azure-openai; "" when unknown).
		[2]*ast.Term{keyProvider, ast.StringTerm(r.Provider)},
	)
}

// AddToolCalls sets input.response.tool_calls (AddResponse must have set
// input.response): the tool calls the model made, each {id, name,
// arguments, arguments_valid}. arguments is the arguments' JSON parsed
// (an empty text reads as {}, a call without arguments); when the text is
// not JSON (a model's malformed output, or a stream cut mid-call),
// arguments is that text as a string and arguments_valid false, so a policy
// with argument rules can refuse what it cannot check.
func AddToolCalls(in ast.Object, calls []llmapi.ToolCall) {
	t := in.Get(keyResponse)
	if t == nil {
		return
	}
	resp, ok := t.Value.(ast.Object)
	if !ok {
		return
	}
	terms := make([]*ast.Term, len(calls))
	for i, c := range calls {
		args, valid := ToolArguments(c.Arguments)
		terms[i] = ast.ObjectTerm(
			[2]*ast.Term{keyID, ast.StringTerm(c.ID)},
			[2]*ast.Term{keyName, ast.StringTerm(c.Name)},
			[2]*ast.Term{keyArguments, ast.NewTerm(args)},
			[2]*ast.Term{keyArgumentsValid, ast.BooleanTerm(valid)})
	}
	resp.Insert(keyToolCalls, ast.ArrayTerm(terms...))
}

// ToolArguments parses a tool call's arguments text for policy: the JSON
// value and true, {} and true for an empty text, or the text itself as a
// string and false when it is not JSON.
func ToolArguments(text string) (ast.Value, bool) {
	if strings.TrimSpace(text) == "" {
		return ast.NewObject(), true
	}
	v, err := parseJSON([]byte(text))
	if err != nil {
		return ast.String(text), false
	}
	return v, true
}
