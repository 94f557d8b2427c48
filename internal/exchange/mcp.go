package exchange

import (
	"context"
	"errors"
	"net/http"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/internal/mcp"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
)

// The MCP dialect of the exchange: a request recognised as MCP (envoy.AddMCP)
// carries input.mcp to every decision; a denial is a JSON-RPC error with the
// request's id; the answers of tools/list, tools/call, resources/read and
// prompts/get, JSON or SSE, and every SSE stream of an MCP exchange, are
// read message by message:
//
//   - tools/list: each tool's definition is scanned (injection detector and
//     mcp.PoisonRules) and compared with what the session was first shown
//     (Options.MCPMemory); the policy sees input.mcp.tools and names the
//     tools to remove (decision.remove_tools), which the client never sees.
//   - tools/call, resources/read, prompts/get: the result's strings are
//     untrusted text for the model, scanned for injection, secrets and PII
//     as input.signals.tool_results (like an LLM request's tool results);
//     a deny replaces the result with a JSON-RPC error, redaction rules
//     rewrite it.
//   - a server request on an SSE stream whose content the client's model
//     reads (sampling/createMessage): its params are read the same way,
//     with input.mcp.server_request naming its method; a deny ends the
//     stream with a JSON-RPC error for the client's request.
//
// Other server messages (notifications, other server requests, answers to
// other requests) pass as they are; JSON answers to other methods go
// through the ordinary answer filters (PII, secrets).

// mcpAnswer reports whether the answer to this exchange's request is read
// as MCP, and the method whose answer it is ("" for an SSE stream answering
// another method, a notification, or a GET: only the server's requests on
// it are read). A JSON answer to another method is not MCP-read.
func (x *Session) mcpAnswer(sse bool) (string, bool) {
	if x.mcp == nil {
		return "", false
	}
	req := x.mcp.Request
	if req != nil && req.Kind == mcp.KindRequest && req.Error == "" {
		switch m := req.Method; m {
		case mcp.MethodToolsList, mcp.MethodToolsCall, mcp.MethodResourcesRead, mcp.MethodPromptsGet:
			return m, true
		}
	}
	if req != nil && (req.Kind == mcp.KindBatch || req.Error != "") {
		return "", false // refused at the request: nothing to read
	}
	return "", sse
}

// mcpResponseBody filters a JSON answer to an MCP request.
func (x *Session) mcpResponseBody(ctx context.Context, plain []byte, decoded bool) (Result, error) {
	var res Result
	body, changed, denial, err := x.mcpMessage(ctx, plain, &res)
	if err != nil {
		return Result{}, err
	}
	if denial != nil {
		return *denial, nil
	}
	if changed {
		res.Body, res.BodyChanged = body, true
		if decoded {
			res.RemoveHeaders = append(res.RemoveHeaders, "content-encoding")
		}
	}
	return res, nil
}

// mcpChunk filters one chunk of an SSE answer to an MCP request: complete
// events are read as JSON-RPC messages, the rest held until it completes.
func (x *Session) mcpChunk(ctx context.Context, data []byte, _ bool) (Result, error) {
	rs := x.resp
	rs.cur = Result{}
	var out []byte
	if !rs.ended {
		err := rs.parser.Feed(data, func(ev llmapi.Event) error { return x.mcpEvent(ctx, ev, &out) })
		switch {
		case err == nil, errors.Is(err, errCut):
		case errors.Is(err, llmapi.ErrEventTooLarge):
			x.c.metrics.localDeny("event_too_large")
			rs.cut = &Cut{Reason: "event_too_large", Message: "the MCP server's answer could not be inspected"}
			out = append(out, mcp.EncodeEvent("message", "", x.mcpError(http.StatusBadGateway, "event_too_large",
				"the MCP server's answer could not be inspected", "local"))...)
			rs.ended = true
			x.outcome = "denied"
		default:
			return Result{}, err
		}
	}
	res := rs.cur
	res.Body, res.BodyChanged, res.Cut = out, true, rs.cut
	return res, nil
}

// mcpEvent filters one SSE event: a JSON-RPC response to the request is
// filtered like a JSON answer; a deny replaces it with a JSON-RPC error and
// ends the stream.
func (x *Session) mcpEvent(ctx context.Context, ev llmapi.Event, out *[]byte) error {
	rs := x.resp
	if rs.ended {
		return errCut
	}
	if len(ev.Data) == 0 {
		*out = append(*out, ev.Raw...) // keep-alives, priming events
		return nil
	}
	var res Result
	body, changed, denial, err := x.mcpMessage(ctx, ev.Data, &res)
	if err != nil {
		return err
	}
	if res.Decided {
		rs.cur.Decided, rs.cur.Outcome, rs.cur.Phase = true, res.Outcome, res.Phase
	}
	if denial != nil {
		d := denial.Deny
		rs.ended = true
		rs.cut = &Cut{DecisionID: d.DecisionID, Reason: d.Reason, Message: d.Message}
		*out = append(*out, mcp.EncodeEvent(ev.Name, ev.ID, d.Body)...)
		x.denied = false // the stream goes on to its end: later chunks are dropped, not refused
		return errCut
	}
	if changed {
		*out = append(*out, mcp.EncodeEvent(ev.Name, ev.ID, body)...)
		return nil
	}
	*out = append(*out, ev.Raw...)
	return nil
}

// mcpMessage filters one server message answering the MCP request: the
// message rewritten (changed), or a denial in its place.
func (x *Session) mcpMessage(ctx context.Context, msg []byte, res *Result) ([]byte, bool, *Result, error) {
	req := x.mcp.Request
	r, err := mcp.ParseResponse(msg)
	switch {
	case errors.Is(err, mcp.ErrNotResponse):
		return x.mcpServerRequest(ctx, msg, res) // a notification or server request on the stream
	case err != nil:
		// A server message that is not JSON-RPC cannot be inspected:
		// refuse it rather than pass tools or text unread.
		d := x.Refuse(http.StatusBadGateway, "mcp_answer_unreadable", "the MCP server's answer could not be inspected")
		return nil, false, &d, nil
	case req == nil || !mcp.SameID(r.ID, req.ID) || r.IsError:
		return nil, false, nil, nil // another request's answer, or an error: nothing to filter
	}
	switch x.resp.mcpMethod {
	case mcp.MethodToolsList:
		return x.mcpToolsList(ctx, r, res)
	case mcp.MethodToolsCall, mcp.MethodResourcesRead, mcp.MethodPromptsGet:
		c, err := mcp.ParseCallResult(r)
		if err != nil {
			d := x.Refuse(http.StatusBadGateway, "mcp_answer_unreadable", "the MCP server's "+x.resp.mcpMethod+" answer could not be inspected")
			return nil, false, &d, nil
		}
		return x.mcpUntrusted(ctx, c, "", res)
	}
	return nil, false, nil, nil
}

// mcpServerRequest reads a server's own message on the stream: a request
// whose content the client's model reads is untrusted text; anything else
// passes.
func (x *Session) mcpServerRequest(ctx context.Context, msg []byte, res *Result) ([]byte, bool, *Result, error) {
	method, c, err := mcp.ParseServerRequest(msg)
	if err != nil {
		d := x.Refuse(http.StatusBadGateway, "mcp_answer_unreadable", "the MCP server's message could not be inspected")
		return nil, false, &d, nil
	}
	if c == nil {
		return nil, false, nil, nil
	}
	return x.mcpUntrusted(ctx, c, method, res)
}

var (
	keyTools          = ast.StringTerm("tools")
	keyToolNames      = ast.StringTerm("tool_names")
	keyName           = ast.StringTerm("name")
	keyInjectionScore = ast.StringTerm("injection_score")
	keyPoisonRules    = ast.StringTerm("poisoning_rules")
	keyChanged        = ast.StringTerm("changed")
)

// mcpToolsList asks the policy which tools of a tools/list answer to remove.
// One decision for the whole answer, with a compact input: every tool's
// name (input.mcp.tool_names), and in full (input.mcp.tools: its injection
// score, the poisoning markers in it, whether it changed within the
// session) only each tool that needs a policy answer: one the policy's
// allow-lists (policy.ToolLists, data.bulwark.tools) do not admit for the
// caller's roles, or that a scan flagged (a marker, a change, a duplicate
// name, a score at or above data.bulwark.mcp.tool_review_score). The policy
// decides about all of them (decision.remove_tools); Rego's cost grows with
// the tools it is shown, not with the size of the answer.
func (x *Session) mcpToolsList(ctx context.Context, r *mcp.Response, res *Result) ([]byte, bool, *Result, error) {
	list, err := mcp.ParseToolsList(r)
	if err != nil {
		d := x.Refuse(http.StatusBadGateway, "mcp_answer_unreadable", "the MCP server's tools/list answer could not be inspected")
		return nil, false, &d, nil
	}
	changed := make([]bool, len(list.Tools))
	if mem := x.c.opts.MCPMemory; mem != nil {
		changed = mem.Remember(ctx, x.mcpSessionKey(), list.Tools)
	}
	var lists *policy.ToolLists
	if x.c.opts.ToolLists != nil {
		lists = x.c.opts.ToolLists.ToolLists()
	}
	var roles []string
	if x.principal != nil {
		roles = x.principal.Roles
	}
	floor := lists.ReviewScore()
	names := make([]*ast.Term, 0, len(list.Tools))
	var tools []*ast.Term
	seen := make(map[string]int, len(list.Tools)) // name → index in tools, -1: by name only
	for i, t := range list.Tools {
		v := x.c.verdicts.Get(t, x.c.scanTool)
		score, rules := v.InjectionScore, v.Rules
		flag := changed[i] || t.Duplicate
		j, dup := seen[t.Name]
		if !dup {
			names = append(names, ast.StringTerm(t.Name))
		}
		if dup && j >= 0 {
			// One entry per name for the policy (names key remove_tools):
			// the worst of the definitions that share it.
			o := tools[j].Value.(ast.Object)
			if prev, _ := o.Get(keyInjectionScore).Value.(ast.Number).Float64(); prev > score {
				score = prev
			}
			o.Insert(keyInjectionScore, ast.FloatNumberTerm(score))
			o.Insert(keyPoisonRules, ast.NewTerm(mergeRules(o.Get(keyPoisonRules), rules)))
			o.Insert(keyChanged, ast.BooleanTerm(true))
			continue
		}
		if !flag && len(rules) == 0 && score < floor && lists.Admits(roles, t.Name) {
			if !dup {
				seen[t.Name] = -1
			}
			continue // admitted and unflagged: by name only
		}
		// (A duplicate whose first definition went by name only is flagged:
		// t.Duplicate is set on every later definition that differs.)
		seen[t.Name] = len(tools)
		tools = append(tools, ast.ObjectTerm(
			[2]*ast.Term{keyName, ast.StringTerm(t.Name)},
			[2]*ast.Term{keyInjectionScore, ast.FloatNumberTerm(score)},
			[2]*ast.Term{keyPoisonRules, ast.NewTerm(mergeRules(nil, rules))},
			[2]*ast.Term{keyChanged, ast.BooleanTerm(flag)},
		))
	}
	in := x.responseInput(nil)
	if m, ok := in.Get(keyMCP).Value.(ast.Object); ok {
		m = m.Copy()
		m.Insert(keyTools, ast.ArrayTerm(tools...))
		m.Insert(keyToolNames, ast.ArrayTerm(names...))
		in.Insert(keyMCP, ast.NewTerm(m))
	}
	out, err := x.decide(ctx, pipeline.PhaseResponseBody, pipeline.Request{Input: in, Signals: &detect.Signals{}}, res)
	if err != nil {
		return nil, false, nil, err
	}
	if !out.Decision.Allowed {
		d := x.deny(out, *res)
		return nil, false, &d, nil
	}
	remove := out.Decision.RemoveTools
	body, n, err := list.Encode(func(name string) bool { _, ok := remove[name]; return ok })
	if err != nil {
		return nil, false, nil, err
	}
	x.c.metrics.mcpToolsRemoved(remove, n)
	return body, n > 0, nil, nil
}

func mergeRules(t *ast.Term, rules []string) ast.Value {
	set := ast.NewSet()
	if t != nil {
		if s, ok := t.Value.(ast.Set); ok {
			set = s.Copy()
		}
	}
	for _, r := range rules {
		set.Add(ast.StringTerm(r))
	}
	return set
}

var (
	keyServerRequest = ast.StringTerm("server_request")
	keyMethod        = ast.StringTerm("method")
)

// mcpUntrusted scans content the model will read (a tools/call,
// resources/read or prompts/get result, or a server request's params:
// serverMethod names it) as untrusted input, input.signals.tool_results
// (injection, secrets, PII), and applies the policy: a deny replaces the
// message with a JSON-RPC error, redaction rules rewrite its strings.
func (x *Session) mcpUntrusted(ctx context.Context, c *mcp.CallResult, serverMethod string, res *Result) ([]byte, bool, *Result, error) {
	var sig detect.Signals
	var findings bool
	if x.c.scanner != nil {
		scan := x.c.scanner.Scan(c.Text())
		sig, findings = scan.Signals(), len(scan.Findings) > 0
	}
	in := x.responseInput(nil)
	if serverMethod != "" {
		if m, ok := in.Get(keyMCP).Value.(ast.Object); ok {
			m = m.Copy()
			m.Insert(keyServerRequest, ast.ObjectTerm([2]*ast.Term{keyMethod, ast.StringTerm(serverMethod)}))
			in.Insert(keyMCP, ast.NewTerm(m))
		}
	}
	out, err := x.decide(ctx, pipeline.PhaseResponseBody, pipeline.Request{Input: in, Signals: &detect.Signals{}, ToolSignals: &sig}, res)
	if err != nil {
		return nil, false, nil, err
	}
	if !out.Decision.Allowed {
		d := x.deny(out, *res)
		return nil, false, &d, nil
	}
	red := x.c.redactor(rules(out.Decision.Redact))
	if red == nil || !findings {
		return nil, false, nil, nil
	}
	count := 0
	body, changed, err := c.Edit(func(t string) string {
		s, _, n := red.Text(x.c.scanner, t, nil)
		count += n
		return s
	})
	if err != nil {
		x.c.logger.Error("MCP content could not be rewritten; denying", "decision_id", out.DecisionID, "error", err)
		d := x.Refuse(http.StatusBadGateway, "redaction_failed", "the MCP server's content could not be made safe to return")
		return nil, false, &d, nil
	}
	x.c.metrics.redacted("response", count)
	return body, changed, nil, nil
}

// mcpSessionKey names the session for the rug-pull memory: who holds it
// and the server's session id, so one caller cannot set another's
// reference definitions. Empty without a session id.
func (x *Session) mcpSessionKey() string {
	sid := x.mcp.Request.SessionID
	if sid == "" {
		return ""
	}
	who := ""
	if x.principal != nil {
		who = string(x.principal.Kind) + ":" + x.principal.ID
	}
	return who + "\x00" + sid
}

// mcpError is a JSON-RPC error answering the request, for a refusal made
// inside a stream.
func (x *Session) mcpError(status int, reason, msg, decisionID string) []byte {
	body, _ := envoy.MCPDenial(x.mcp, x.c.opts.MCP, status, reason, msg+" (decision "+decisionID+")", decisionID, nil)
	return body
}

var keyMCP = ast.StringTerm("mcp")

// scanTool scans one tool definition for hidden instructions.
func (c *Core) scanTool(text string) mcp.Verdict {
	v := mcp.Verdict{Rules: mcp.PoisonRules(text)}
	if c.scanner != nil {
		v.InjectionScore = c.scanner.Scan(text).Signals().PromptInjection.Score
	}
	return v
}
