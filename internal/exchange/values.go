package exchange

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/llmapi"
)

// Keys of Bulwark's additions to the policy input, built once.
var (
	keyLLM           = ast.StringTerm("llm")
	keyTruncatedBody = ast.StringTerm("truncated_body")
	keyResponse      = ast.StringTerm("response")
	keyUsage         = ast.StringTerm("usage")
	keyStatus        = ast.StringTerm("status")
	keyContentType   = ast.StringTerm("content_type")
	keyPromptTokens  = ast.StringTerm("prompt_tokens")
	keyCompletion    = ast.StringTerm("completion_tokens")
	keyTotalTokens   = ast.StringTerm("total_tokens")
)

// usageValue renders input.usage.
func usageValue(u llmapi.Usage) ast.Value {
	return ast.NewObject(
		[2]*ast.Term{keyPromptTokens, ast.IntNumberTerm(int(u.PromptTokens))},
		[2]*ast.Term{keyCompletion, ast.IntNumberTerm(int(u.CompletionTokens))},
		[2]*ast.Term{keyTotalTokens, ast.IntNumberTerm(int(u.TotalTokens))},
	)
}
