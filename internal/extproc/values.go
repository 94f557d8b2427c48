package extproc

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
)

// Keys of Bulwark's additions to the policy input, built once.
var (
	keyLLM             = ast.StringTerm("llm")
	keyTruncatedBody   = ast.StringTerm("truncated_body")
	keyResponse        = ast.StringTerm("response")
	keyUsage           = ast.StringTerm("usage")
	keyStatus          = ast.StringTerm("status")
	keyContentType     = ast.StringTerm("content_type")
	keyAPI             = ast.StringTerm("api")
	keyModel           = ast.StringTerm("model")
	keyStream          = ast.StringTerm("stream")
	keyMaxTokens       = ast.StringTerm("max_tokens")
	keyMessages        = ast.StringTerm("messages")
	keyRole            = ast.StringTerm("role")
	keyContent         = ast.StringTerm("content")
	keyTools           = ast.StringTerm("tools")
	keyToolCalls       = ast.StringTerm("tool_calls")
	keyName            = ast.StringTerm("name")
	keyEstimatedTokens = ast.StringTerm("estimated_tokens")
	keyPromptTokens    = ast.StringTerm("prompt_tokens")
	keyCompletion      = ast.StringTerm("completion_tokens")
	keyTotalTokens     = ast.StringTerm("total_tokens")
)

// llmValue renders a parsed request as input.llm (DESIGN.md, policy
// contract). Tool-call arguments are left out: policies get names, and the
// detectors read the text.
func llmValue(r *llmapi.Request) ast.Value {
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
		tools[i] = ast.StringTerm(t)
	}
	calls := make([]*ast.Term, len(r.ToolCalls))
	for i, c := range r.ToolCalls {
		calls[i] = ast.ObjectTerm([2]*ast.Term{keyName, ast.StringTerm(c.Name)})
	}
	return ast.NewObject(
		[2]*ast.Term{keyAPI, ast.StringTerm(string(r.API))},
		[2]*ast.Term{keyModel, ast.StringTerm(r.Model)},
		[2]*ast.Term{keyStream, ast.BooleanTerm(r.Stream)},
		[2]*ast.Term{keyMaxTokens, ast.IntNumberTerm(int(r.MaxTokens))},
		[2]*ast.Term{keyMessages, ast.ArrayTerm(msgs...)},
		[2]*ast.Term{keyTools, ast.ArrayTerm(tools...)},
		[2]*ast.Term{keyToolCalls, ast.ArrayTerm(calls...)},
		// About four bytes a token for English text: the estimate the
		// detectors' length signal uses too.
		[2]*ast.Term{keyEstimatedTokens, ast.IntNumberTerm((chars + 3) / 4)},
	)
}

// usageValue renders input.usage.
func usageValue(u llmapi.Usage) ast.Value {
	return ast.NewObject(
		[2]*ast.Term{keyPromptTokens, ast.IntNumberTerm(int(u.PromptTokens))},
		[2]*ast.Term{keyCompletion, ast.IntNumberTerm(int(u.CompletionTokens))},
		[2]*ast.Term{keyTotalTokens, ast.IntNumberTerm(int(u.TotalTokens))},
	)
}
