package llmapi

import "strings"

// InvokeModel bodies of Llama and Mistral models carry one raw "prompt"
// that the application has formatted with the model's chat template:
//
//	Llama 3 / 3.x   <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n…<|eot_id|>
//	                <|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>
//	                <|start_header_id|>assistant<|end_header_id|>\n\n
//	Llama 2         <s>[INST] <<SYS>>\n…\n<</SYS>>\n\n… [/INST] … </s><s>[INST] … [/INST]
//	Mistral/Mixtral <s>[INST] … [/INST] …</s>[INST] … [/INST]
//
// Read as one text, every ordinary prompt carries the template's tokens
// and reads as a chat-template injection. So the prompt is parsed by its
// template into role-tagged turns, the way a messages array is read: each
// turn's content is a text of its role, and the structural tokens belong to
// no turn. The parse is strict, because it decides roles (a system turn is
// the application's own and not scored): a system turn only comes first,
// roles are only system, user and assistant, and a turn whose content still
// holds a token of its own template (an [/INST] the parse did not take as
// structure, a <|start_header_id|> inside a user turn) fails the whole
// parse, so the prompt stays one text, as before. Tokens of other templates
// (<|im_start|> in a Mistral prompt) are no structure here and stay in the
// turn's text, where the detectors see them.
//
// Limit: a user who types a complete, well-formed turn sequence of the
// prompt's own template (an assistant turn and a new user turn) is read as
// those turns; the smuggled user turn is still scanned as user text, and a
// smuggled system turn fails the parse.

// templateTurn is one turn of a chat-template prompt: its role and the
// byte range [s, e) of its content in the decoded prompt.
type templateTurn struct {
	role string
	s, e int
}

// Structural tokens of the templates.
const (
	l3Begin  = "<|begin_of_text|>"
	l3Start  = "<|start_header_id|>"
	l3End    = "<|end_header_id|>"
	l3Eot    = "<|eot_id|>"
	instOpen = "[INST]"
	instEnd  = "[/INST]"
	sysOpen  = "<<SYS>>"
	sysEnd   = "<</SYS>>"
	bos      = "<s>"
	eos      = "</s>"
)

// llama3Tokens and instTokens are the tokens a turn's content may not hold
// (compared without regard to ASCII case, as the injection rule does).
var (
	llama3Tokens = []string{l3Begin, l3Start, l3End, l3Eot, "<|eom_id|>"}
	instTokens   = []string{instOpen, instEnd, sysOpen, sysEnd, bos, eos}
)

// parseChatTemplate parses a Llama 3, Llama 2 or Mistral prompt into its
// turns. ok is false when p is in none of these templates or does not
// parse cleanly as the one it starts with.
func parseChatTemplate(p string) (turns []templateTurn, ok bool) {
	rest := p[skipSpace(p, 0):]
	switch {
	case strings.HasPrefix(rest, l3Begin), strings.HasPrefix(rest, l3Start):
		return parseLlama3(p)
	case strings.HasPrefix(rest, bos), strings.HasPrefix(rest, instOpen):
		return parseInst(p)
	}
	return nil, false
}

// parseLlama3 reads [<|begin_of_text|>] (header content <|eot_id|>)*
// [assistant header content], the last an open turn for the model to
// complete.
func parseLlama3(p string) ([]templateTurn, bool) {
	i := skipSpace(p, 0)
	if strings.HasPrefix(p[i:], l3Begin) {
		i = skipSpace(p, i+len(l3Begin))
	}
	var turns []templateTurn
	for i < len(p) {
		if !strings.HasPrefix(p[i:], l3Start) {
			return nil, false
		}
		i += len(l3Start)
		j := strings.Index(p[i:], l3End)
		if j < 0 {
			return nil, false
		}
		role := p[i : i+j]
		switch role {
		case "system":
			if len(turns) > 0 {
				return nil, false
			}
		case "user", "assistant":
		default:
			return nil, false
		}
		i += j + len(l3End)
		if strings.HasPrefix(p[i:], "\n\n") {
			i += 2
		}
		end, next := len(p), len(p)
		if k := strings.Index(p[i:], l3Eot); k >= 0 {
			end, next = i+k, skipSpace(p, i+k+len(l3Eot))
		} else if role != "assistant" {
			return nil, false // truncated: only the model's turn is left open
		}
		t, ok := contentTurn(p, role, i, end, llama3Tokens)
		if !ok {
			return nil, false
		}
		turns = append(turns, t)
		i = next
	}
	return turns, len(turns) > 0
}

// parseInst reads [<s>] [INST] [<<SYS>> system <</SYS>>] user [/INST]
// (assistant </s> [<s>] [INST] user [/INST])* [assistant], the Llama 2
// and Mistral templates.
func parseInst(p string) ([]templateTurn, bool) {
	i := skipSpace(p, 0)
	if strings.HasPrefix(p[i:], bos) {
		i = skipSpace(p, i+len(bos))
	}
	var turns []templateTurn
	for {
		if !strings.HasPrefix(p[i:], instOpen) {
			return nil, false
		}
		i += len(instOpen)
		j := strings.Index(p[i:], instEnd)
		if j < 0 {
			return nil, false
		}
		userEnd := i + j
		if len(turns) == 0 {
			if t := skipSpace(p, i); strings.HasPrefix(p[t:userEnd], sysOpen) {
				t += len(sysOpen)
				k := strings.Index(p[t:userEnd], sysEnd)
				if k < 0 {
					return nil, false
				}
				sys, ok := contentTurn(p, "system", t, t+k, instTokens)
				if !ok {
					return nil, false
				}
				turns = append(turns, sys)
				i = t + k + len(sysEnd)
			}
		}
		u, ok := contentTurn(p, "user", i, userEnd, instTokens)
		if !ok {
			return nil, false
		}
		turns = append(turns, u)
		i = userEnd + len(instEnd)
		k := strings.Index(p[i:], eos)
		if k < 0 {
			a, ok := contentTurn(p, "assistant", i, len(p), instTokens)
			if !ok {
				return nil, false
			}
			return append(turns, a), true
		}
		a, ok := contentTurn(p, "assistant", i, i+k, instTokens)
		if !ok {
			return nil, false
		}
		turns = append(turns, a)
		i = skipSpace(p, i+k+len(eos))
		if strings.HasPrefix(p[i:], bos) {
			i = skipSpace(p, i+len(bos))
		}
	}
}

// contentTurn is the turn of role over p[s:e] without its surrounding
// white space; ok is false when the content holds one of tokens.
func contentTurn(p, role string, s, e int, tokens []string) (templateTurn, bool) {
	s = skipSpace(p[:e], s)
	for e > s && isSpace(p[e-1]) {
		e--
	}
	for _, tok := range tokens {
		if containsFold(p[s:e], tok) {
			return templateTurn{}, false
		}
	}
	return templateTurn{role: role, s: s, e: e}, true
}

// containsFold reports whether s contains the ASCII token tok, ignoring
// ASCII case.
func containsFold(s, tok string) bool {
	for i := 0; i+len(tok) <= len(s); i++ {
		j := strings.IndexByte(s[i:], tok[0])
		if j < 0 || i+j+len(tok) > len(s) {
			return false
		}
		i += j
		if strings.EqualFold(s[i:i+len(tok)], tok) {
			return true
		}
	}
	return false
}

// skipSpace returns the offset of the first byte of p at or after i that
// is not ASCII white space.
func skipSpace(p string, i int) int {
	for i < len(p) && isSpace(p[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// templatePrompts reads each top-level string "prompt" of a Llama or
// Mistral InvokeModel body that parses as its chat template as one message
// per turn. A prompt that does not parse is left to the sweep, which reads
// it whole.
func (r *reqScanner) templatePrompts() {
	b := r.b
	switch invokeFamilyOf(b, &r.top) {
	case familyLlama, familyMaxTokens, familyUnknown:
	default:
		return
	}
	for _, v := range r.top.f[kPrompt] {
		if kindOf(b, v) != '"' {
			continue
		}
		p := unquote(b[v.s:v.e])
		turns, ok := parseChatTemplate(p)
		if !ok {
			continue
		}
		added := false
		for _, t := range turns {
			if t.s == t.e && (added || t != turns[len(turns)-1]) {
				continue // an empty turn is no text, but the prompt is read
			}
			r.texts.boundary()
			r.texts.add(t.role, v, textTurn)
			last := &r.texts.spans[len(r.texts.spans)-1]
			last.a, last.z, last.turn = t.s, t.e, p[t.s:t.e]
			added = true
		}
	}
}
