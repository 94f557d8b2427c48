package exchange

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/envoy"
	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
	"github.com/bulwark-ai/bulwark/internal/policy"
	"github.com/bulwark-ai/bulwark/internal/quality"
	"github.com/bulwark-ai/bulwark/internal/redact"
)

// responseState is what the response phases keep.
type responseState struct {
	status   int
	headers  map[string]string
	encoding string
	sse      bool
	red      *redact.Redactor
	literals map[string]string

	// api is the shape the answer is read in: the request's API, or for
	// answers whose request body was not read (GET of a stored response or
	// a file), the one llmapi.ResponseAPI picks from the path.
	api llmapi.API

	parser llmapi.StreamParser
	// streams holds one redaction stream per incremental text (choice,
	// tool call, reasoning, content block), templates the last event of
	// each, to synthesise the event that releases what it still holds.
	streams   map[llmapi.Channel]*redact.Stream
	templates map[llmapi.Channel]llmapi.Event
	// ev is the event being filtered and filter its callback, bound once
	// per exchange so that filtering an event allocates no closure.
	ev        eventFilter
	filter    func(llmapi.Channel, string) string
	ended     bool // the stream was cut after a deny; later chunks are dropped
	cut       *Cut // why, when the policy cut it
	usage     llmapi.Usage
	haveUsage bool
	// bodyBytes counts the answer's bytes seen, to estimate its tokens when
	// the model reports no usage.
	bodyBytes int64
	// In a Responses stream, lastSeq is the last sequence_number the client
	// saw (haveSeq: it saw one), and seqShift how many events Bulwark
	// inserted: every later upstream event is renumbered by it, so that
	// the numbers keep increasing.
	lastSeq, seqShift int64
	haveSeq           bool
	// mcpRead: the answer is read as MCP, message by message (see
	// mcp.go); mcpMethod is the method it answers, when Bulwark filters
	// that method's result ("" for a stream where only the server's
	// requests are read).
	mcpRead   bool
	mcpMethod string
	// cur is the Result of the chunk being processed, which records the
	// chunk's decisions.
	cur Result
	// quality follows a streamed answer for its quality signals.
	quality qualityState

	// tools follows the answer's tool calls; held are the events of calls
	// not yet complete (and so not yet decided), heldBytes their size.
	// Events of other calls and text keep flowing in an OpenAI chat stream
	// (choices interleave); in Responses and Anthropic streams, whose
	// output items and content blocks come one after another, everything
	// after a held event waits behind it, so the client's order (and the
	// Responses sequence numbers) stay as the model sent them.
	tools     *llmapi.ToolCallAssembler
	held      []llmapi.Event
	heldBytes int
	holdAll   bool
	// heldChoices are the OpenAI choices with events held: every later
	// event of those choices is held too, so each choice's texts reach
	// the redactor (and the client) in order.
	heldChoices, choiceBuf []int

	// modText is the streamed answer's text not yet asked about (after the
	// overlap kept from the window before), modNew how many of its bytes
	// are new: the moderation model is asked once modNew reaches the
	// window, and at the end (moderation.go).
	modText []byte
	modNew  int
	// modHeld is what the client has not received because the moderation
	// model has not yet seen its text; modClear is how much of the chunk's
	// output it has seen (moderation.go).
	modHeld  []byte
	modClear int
}

// ResponseHeaders decides whether and how to read the answer's body:
// server-sent events streamed, JSON and text whole, anything else left
// alone. status is the answer's HTTP status, headers its headers
// (lower-cased names); endOfStream: the answer has no body.
func (x *Session) ResponseHeaders(ctx context.Context, status int, rh map[string]string, endOfStream bool) (Result, error) {
	if x.denied {
		return Result{}, errAfterDenial
	}
	if x.headers == nil {
		return Result{}, &ProtocolError{msg: "response headers before request headers"}
	}
	if x.resp != nil {
		return Result{}, &ProtocolError{msg: "response headers sent twice"}
	}
	rs := &responseState{headers: rh, status: status}
	x.resp = rs
	if x.bodyExpected && !x.bodySeen {
		// Bulwark asked for the request body and never got it (Envoy's
		// filter ignores mode_override): prompts reach the model
		// uninspected. Refuse the answer rather than certify the exchange.
		x.c.logger.Error("request body was never sent to Bulwark; set allow_mode_override on Envoy's ext_proc filter",
			"path", x.path)
		return x.Refuse(http.StatusInternalServerError, "request_body_not_inspected",
			"the gateway could not inspect this request"), nil
	}
	ct := rh["content-type"]
	// Server-sent events, Bedrock's event stream, Gemini's streamed array.
	framing := llmapi.StreamFraming(x.api, ct, x.path)
	rs.sse = framing != llmapi.FramingNone
	// Every answer that can carry text is inspected, whether or not a
	// request body was read: a GET of a stored response or of a file's
	// content returns model output and user data as much as a POST does.
	if endOfStream || (!rs.sse && !isJSON(ct) && !isText(ct) && !isNDJSON(ct)) {
		return Result{}, nil
	}
	rs.api = x.api
	if x.llmReq == nil {
		rs.api = llmapi.ResponseAPI(x.path)
	}
	rs.encoding = strings.ToLower(strings.TrimSpace(rh["content-encoding"]))
	if rs.encoding == "identity" {
		rs.encoding = ""
	}

	var res Result
	out, err := x.decide(ctx, pipeline.PhaseResponseHeaders, pipeline.Request{Input: x.responseInput(nil)}, &res)
	if err != nil {
		return Result{}, err
	}
	if !out.Decision.Allowed {
		return x.deny(out, res), nil
	}
	rs.red = x.c.redactor(rules(out.Decision.Redact))
	if x.canary != "" {
		rs.literals = map[string]string{x.canary: redact.CanaryType}
	}
	res.SetHeaders = policyHeaders(x.headerBuf[:0], out.Decision.ResponseHeadersToAdd)
	x.headerBuf = res.SetHeaders[:0]
	res.ReadBody = BodyWhole
	if m, ok := x.mcpAnswer(rs.sse); ok {
		rs.mcpMethod, rs.mcpRead = m, true
		if rs.sse {
			if rs.encoding != "" {
				return x.Refuse(http.StatusBadGateway, "unsupported_content_encoding",
					"the MCP server's streamed answer is compressed ("+rs.encoding+") and cannot be inspected"), nil
			}
			res.ReadBody = BodyStreamed
			rs.parser = &llmapi.SSEParser{MaxEventBytes: x.c.opts.MaxEventBytes}
		}
		return res, nil
	}
	if rs.sse {
		if rs.encoding != "" {
			// A compressed event stream cannot be redacted event by event.
			return x.Refuse(http.StatusBadGateway, "unsupported_content_encoding",
				"the model's streamed answer is compressed ("+rs.encoding+") and cannot be inspected"), nil
		}
		res.ReadBody = BodyStreamed
		rs.parser = llmapi.NewStreamParser(framing, rs.api, x.c.opts.MaxEventBytes)
		rs.streams = make(map[llmapi.Channel]*redact.Stream, 1)
		rs.templates = make(map[llmapi.Channel]llmapi.Event, 1)
		rs.ev.x = x
		rs.filter = rs.ev.filter
		rs.tools = llmapi.NewToolCallAssembler(rs.api)
		rs.holdAll = keepsOrder(rs.api)
	}
	return res, nil
}

// responseInput is the request's input plus llm, the response's status and
// the usage reported so far.
func (x *Session) responseInput(usage *llmapi.Usage) ast.Object {
	in := envoy.HeadersInput(x.base, x.llmTerm)
	if x.mcpTerm != nil {
		in.Insert(keyMCP, x.mcpTerm)
	}
	if rs := x.resp; rs != nil {
		policy.AddResponse(in, rs.status, rs.headers["content-type"])
	}
	if usage != nil {
		policy.AddUsage(in, *usage)
	}
	return in
}

// ResponseBody decides on the whole answer (read as ResponseHeaders asked:
// BodyWhole): parse, scan, policy, then redact.
func (x *Session) ResponseBody(ctx context.Context, body []byte) (Result, error) {
	rs := x.resp
	if x.denied {
		return Result{}, errAfterDenial
	}
	if rs == nil {
		return Result{}, &ProtocolError{msg: "response body before response headers"}
	}
	if rs.sse {
		return Result{}, &ProtocolError{msg: "a streamed answer's body must come chunk by chunk"}
	}
	if len(body) > x.c.opts.MaxBodyBytes {
		return x.TooLarge(true, len(body)), nil
	}
	rs.bodyBytes += int64(len(body))
	plain, decoded, deny := x.decode(rs.encoding, body)
	if deny != nil {
		return *deny, nil
	}
	jsonBody := isJSON(rs.headers["content-type"])
	if rs.mcpRead {
		return x.mcpResponseBody(ctx, plain, decoded)
	}
	text := string(plain)
	api := rs.api
	var usage *llmapi.Usage
	var calls []llmapi.ToolCall
	var qual *quality.Signals
	if jsonBody {
		r, err := llmapi.ParseResponse(api, plain)
		if err != nil {
			// Not the shape its API promised (an error page, a bare
			// string): read it as unknown JSON or text, every string of it.
			api = llmapi.Generic
			r, _ = llmapi.ParseResponse(api, plain)
		}
		usage = r.Usage
		if usage == nil {
			// Bedrock reports every model's token counts in headers too.
			usage = llmapi.HeaderUsage(rs.api, rs.headers)
		}
		calls = r.ToolCalls
		x.gen.model, x.gen.id = r.Model, r.ID
		x.gen.addFinish(r.FinishReason)
		text, _ = llmapi.FilteredText(api, plain)
		qual = x.bodyQuality(r, usage)
	} else {
		usage = llmapi.HeaderUsage(rs.api, rs.headers)
	}
	var sig detect.Signals
	var findings []detect.Finding
	if x.c.outScan != nil && text != "" {
		res := x.c.outScan.Scan(text)
		sig = res.Signals()
		findings = res.Findings
	}
	leak := x.canary != "" && redact.ContainsLiteral(text, x.canary)
	sig.CanaryLeak = leak
	if m := x.c.opts.Moderator; m != nil && text != "" {
		v := m.Moderate(ctx, text)
		sig.Moderation = &v
	}
	if usage != nil {
		x.gen.usage, x.gen.haveUsage = *usage, true
		x.settle(ctx, *usage)
	}
	res := Result{ToolCalls: calls}
	in := x.responseInput(usage)
	policy.AddToolCalls(in, calls)
	addQuality(in, qual, x.format)
	out, err := x.decide(ctx, pipeline.PhaseResponseBody, pipeline.Request{Input: in, Signals: &sig}, &res)
	if err != nil {
		return Result{}, err
	}
	if !out.Decision.Allowed {
		return x.deny(out, res), nil
	}
	if red := x.c.redactor(rules(out.Decision.Redact)); red != nil && (len(findings) > 0 || leak) {
		literals := rs.literalsOrNil()
		count := 0
		fix := func(t string) string {
			r, _, n := red.Text(x.c.outScan, t, literals)
			count += n
			return r
		}
		if jsonBody {
			nb, ch, err := llmapi.EditResponse(api, plain, fix)
			if err != nil {
				x.c.logger.Error("response body could not be rewritten; denying", "decision_id", out.DecisionID, "error", err)
				return x.Refuse(http.StatusBadGateway, "redaction_failed", "the model's answer could not be made safe to return"), nil
			}
			res.Body, res.BodyChanged = nb, ch
		} else {
			nb := fix(text)
			res.Body, res.BodyChanged = []byte(nb), nb != text
		}
		x.c.metrics.redacted("response", count)
	}
	if res.BodyChanged && decoded {
		res.RemoveHeaders = append(res.RemoveHeaders, "content-encoding")
	}
	return res, nil
}

func (rs *responseState) literalsOrNil() map[string]string {
	if len(rs.literals) == 0 {
		return nil
	}
	return rs.literals
}

// errCut stops event processing once the stream has been ended by a deny.
var errCut = errors.New("stream cut")

// ResponseChunk redacts one chunk of a streamed answer (ResponseHeaders
// asked for BodyStreamed); last marks the answer's end. Chunks are not event
// boundaries: the parser holds an incomplete event until its end arrives,
// and each redaction stream holds the bounded tail of text that could still
// complete a finding. Result.Body is what the client receives now; Cut is
// set once the answer was ended early (later chunks give nothing).
func (x *Session) ResponseChunk(ctx context.Context, data []byte, last bool) (Result, error) {
	rs := x.resp
	if x.denied {
		return Result{}, errAfterDenial
	}
	if rs == nil || !rs.sse {
		return Result{}, &ProtocolError{msg: "response chunk outside a streamed answer"}
	}
	rs.bodyBytes += int64(len(data))
	start := time.Now()
	if !x.gen.firstSeen && len(data) > 0 {
		x.gen.firstSeen = true
		if !x.gen.forwardedAt.IsZero() {
			x.gen.ttfc = start.Sub(x.gen.forwardedAt)
		}
	}
	defer func() { x.c.metrics.chunk(time.Since(start)) }()
	if rs.mcpRead {
		return x.mcpChunk(ctx, data, last)
	}
	rs.cur = Result{}
	out := x.heldBack() // what the moderation model has not cleared yet (nil without one)
	if !rs.ended {
		err := rs.parser.Feed(data, func(ev llmapi.Event) error { return x.streamEvent(ctx, ev, &out) })
		switch {
		case err == nil, errors.Is(err, errCut):
		case errors.Is(err, llmapi.ErrEventTooLarge):
			x.c.metrics.localDeny("event_too_large")
			rs.cut = &Cut{Reason: "event_too_large", Message: "the model's answer could not be inspected"}
			x.withholdUnmoderated(&out)
			out = append(out, rs.parser.ErrorEvent(rs.api, http.StatusForbidden, "event_too_large", "the model's answer could not be inspected")...)
			rs.ended = true
			x.outcome = "denied"
		case errors.Is(err, llmapi.ErrMalformed):
			// A frame that does not check out (Bedrock's CRCs): nothing
			// after it can be read, so nothing after it is forwarded.
			x.c.metrics.localDeny("malformed_stream")
			rs.cut = &Cut{Reason: "malformed_stream", Message: "the model's answer could not be read"}
			x.withholdUnmoderated(&out)
			out = append(out, rs.parser.ErrorEvent(rs.api, http.StatusBadGateway, "malformed_stream", "the model's answer could not be read")...)
			rs.ended = true
			x.outcome = "denied"
		default:
			return Result{}, err
		}
		if last && !rs.ended {
			// Tool calls the stream left open are decided as they stand
			// (their arguments may not parse: arguments_valid false).
			if err := x.toolCallsDone(ctx, rs.tools.CompleteAll(), &out); err != nil && !errors.Is(err, errCut) {
				return Result{}, err
			}
		}
		if last && !rs.ended {
			// Whatever is still held goes out now; an incomplete last event
			// is dropped, as an SSE client would drop it.
			if err := x.flushStreams(ctx, func(int) bool { return true }, &out); err != nil && !errors.Is(err, errCut) {
				return Result{}, err
			}
			// The moderation model's last look: the text since its last
			// window (what it has not seen is still held back).
			if err := x.moderateWindow(ctx, &out, true); err != nil && !errors.Is(err, errCut) {
				return Result{}, err
			}
			if rs.haveUsage {
				x.settle(ctx, rs.usage)
			}
			x.streamQuality()
		}
	}
	res := rs.cur
	res.Body, res.BodyChanged, res.Cut = x.holdBack(out), true, rs.cut
	return res, nil
}

// keepsOrder reports whether the events of api's streams come one output
// item or content block after another, so that everything after an event
// held back behind a tool call must wait behind it: Responses, Anthropic
// (also inside Bedrock's InvokeModel), Bedrock Converse and Gemini. Only
// OpenAI chat interleaves choices that may flow past a held one.
func keepsOrder(api llmapi.API) bool {
	switch api {
	case llmapi.OpenAIResponses, llmapi.AnthropicMessages, llmapi.BedrockConverse, llmapi.BedrockInvoke, llmapi.GeminiGenerate:
		return true
	}
	return false
}

// streamEvent rewrites one complete event into out. Every string of the
// event the filter must see is redacted: the deltas of each choice, tool
// call, refusal, reasoning or content block through a redaction stream of
// their own (a value may be split over deltas), everything else whole.
// Logprob tokens are blanked, since they repeat text not yet released.
//
// Before that, the event's tool calls are followed (toolEvent): an event
// carrying part of a call not yet complete is held back, and released
// through the same path once the policy allowed the call.
func (x *Session) streamEvent(ctx context.Context, ev llmapi.Event, out *[]byte) error {
	rs := x.resp
	if rs.ended {
		return errCut
	}
	pe := llmapi.ParseEvent(rs.api, ev)
	x.gen.ident(&pe)
	held, err := x.toolEvent(ctx, &pe, ev, out)
	if err != nil || held {
		return err
	}
	return x.processEvent(ctx, &pe, ev, out)
}

// maxHeldBytes bounds the events held back behind incomplete tool calls.
const maxHeldBytes = 4 << 20

// toolEvent follows the tool calls in one event. It reports whether the
// event was held back: it carries part of a call not yet complete (or, in
// a stream whose order must be kept, it comes after such an event). When
// the event completes calls, the policy decides on them (toolCallsDone)
// before the event or anything held goes on.
func (x *Session) toolEvent(ctx context.Context, pe *llmapi.ParsedEvent, ev llmapi.Event, out *[]byte) (bool, error) {
	rs := x.resp
	touched, completed, err := rs.tools.Observe(pe)
	if err != nil {
		return false, x.cutLocal("tool_calls_too_large", "the model's tool calls are larger than the gateway inspects", out)
	}
	hold := len(touched) > 0 || (rs.holdAll && len(rs.held) > 0)
	if !rs.holdAll && (hold || len(rs.held) > 0) {
		rs.choiceBuf = pe.ChoiceIndexes(rs.choiceBuf[:0])
		for _, c := range rs.choiceBuf {
			hold = hold || slices.Contains(rs.heldChoices, c)
		}
		if hold {
			for _, c := range rs.choiceBuf {
				if !slices.Contains(rs.heldChoices, c) {
					rs.heldChoices = append(rs.heldChoices, c)
				}
			}
		}
	}
	if hold {
		rs.heldBytes += len(ev.Raw)
		if rs.heldBytes > maxHeldBytes {
			return false, x.cutLocal("tool_calls_too_large", "the model's tool calls are larger than the gateway inspects", out)
		}
		rs.held = append(rs.held, ev)
	}
	if len(completed) > 0 {
		if err := x.toolCallsDone(ctx, completed, out); err != nil {
			return false, err
		}
	}
	return hold, nil
}

// toolCallsDone asks the policy about tool calls that just completed
// (phase response_body_chunk, input.response.tool_calls: every call of the
// answer completed so far), then releases the held events once no call is
// open. A deny ends the stream with an error event in the API's shape; the
// held events, the denied call's among them, are dropped, so no part of
// the call reaches the client.
func (x *Session) toolCallsDone(ctx context.Context, completed []int, out *[]byte) error {
	rs := x.resp
	if len(completed) > 0 {
		all := rs.tools.Calls()
		calls := make([]llmapi.ToolCall, 0, len(all))
		for _, c := range all {
			if c.Complete {
				calls = append(calls, c.ToolCall)
			}
		}
		in := x.responseInput(nil)
		policy.AddToolCalls(in, calls)
		var res Result
		o, err := x.decide(ctx, pipeline.PhaseResponseBodyChunk, pipeline.Request{Input: in, Signals: &detect.Signals{}}, &res)
		if err != nil {
			return err
		}
		rs.cur.Decided, rs.cur.Outcome, rs.cur.Phase = true, res.Outcome, res.Phase
		rs.cur.ToolCalls = calls
		if !o.Decision.Allowed {
			// The denied call's events were never processed; the text
			// before it (still in the redaction windows) goes out, checked
			// as at the end of a stream, then the error event.
			rs.held, rs.heldBytes, rs.heldChoices = nil, 0, nil
			if err := x.flushStreams(ctx, func(int) bool { return true }, out); err != nil {
				return err
			}
			return x.cutStream(o, out)
		}
	}
	if rs.tools.Open() || len(rs.held) == 0 {
		return nil
	}
	held := rs.held
	rs.held, rs.heldBytes, rs.heldChoices = nil, 0, rs.heldChoices[:0]
	for _, ev := range held {
		pe := llmapi.ParseEvent(rs.api, ev)
		if err := x.processEvent(ctx, &pe, ev, out); err != nil {
			return err
		}
	}
	return nil
}

// cutLocal ends the stream without a policy decision (what Bulwark cannot
// inspect), with an error event in the API's shape.
func (x *Session) cutLocal(reason, msg string, out *[]byte) error {
	rs := x.resp
	x.c.metrics.localDeny(reason)
	rs.held, rs.heldBytes, rs.heldChoices = nil, 0, nil
	rs.cut = &Cut{Reason: reason, Message: msg}
	x.withholdUnmoderated(out)
	// In the stream's own framing: a Bedrock exception frame, a Gemini
	// array's last element.
	*out = append(*out, rs.parser.ErrorEvent(rs.api, http.StatusForbidden, reason, msg)...)
	rs.ended = true
	x.outcome = "denied"
	return errCut
}

// processEvent redacts one event (see streamEvent) into out.
func (x *Session) processEvent(ctx context.Context, pe *llmapi.ParsedEvent, ev llmapi.Event, out *[]byte) error {
	rs := x.resp
	if rs.ended {
		return errCut
	}
	var d llmapi.Delta
	var err error
	if x.c.opts.Quality != nil && x.llmReq != nil {
		d, err = pe.Full() // the text too, for the quality signals
	} else {
		d, err = pe.Meta()
	}
	if err != nil {
		// An event Bulwark cannot read may still carry text: pass it only
		// when nothing in it needs removing.
		if x.c.outScan != nil && len(x.c.outScan.Scan(string(ev.Data)).Findings) > 0 {
			x.c.metrics.localDeny("unreadable_event_dropped")
			return nil
		}
		rs.forward(ev, out)
		return nil
	}
	if d.Usage != nil {
		rs.addUsage(*d.Usage)
	}
	x.noteDelta(&d)
	x.gen.addFinish(d.FinishReason)
	if d.UsageOnly && x.addedUsage {
		return nil // counted; the client did not ask for it
	}
	if rs.red == nil && rs.literals == nil && x.c.opts.Moderator == nil {
		rs.forward(ev, out) // nothing to redact or watch for
		return nil
	}
	all, ends := pe.Ends()
	st := &rs.ev
	st.ctx, st.out, st.ev, st.all, st.ends, st.err, st.whole = ctx, out, ev, all, ends, nil, st.whole[:0]
	nev, changed, err := pe.Filter(true, rs.filter)
	whole, ferr := st.whole, st.err
	st.ctx, st.out, st.ev = nil, nil, llmapi.Event{} // held only for the call
	if ferr != nil {
		return ferr
	}
	if err != nil {
		rs.forward(ev, out) // no text in it
		return nil
	}
	if err := x.checkWindow(ctx, redact.Window{Findings: whole}, out); err != nil {
		return err
	}
	if all || len(ends) > 0 {
		// What the closing channels still hold goes out before the event
		// that closes them.
		if err := x.flushStreams(ctx, st.ending, out); err != nil {
			return err
		}
	}
	// A full moderation window is asked about, and so is whatever text is
	// pending when the event closes channels (the answer may be over).
	if err := x.moderateWindow(ctx, out, all || len(ends) > 0); err != nil {
		return err
	}
	if changed {
		rs.forward(nev, out)
		return nil
	}
	rs.forward(ev, out)
	return nil
}

// forward appends an upstream event to what the client receives. In a
// Responses stream it is renumbered past the events Bulwark inserted.
func (rs *responseState) forward(ev llmapi.Event, out *[]byte) {
	if rs.api == llmapi.OpenAIResponses {
		if n, ok := llmapi.SequenceNumber(ev); ok {
			if rs.seqShift != 0 {
				if e, err := llmapi.WithSequenceNumber(ev, n+rs.seqShift); err == nil {
					ev = e
				}
			}
			rs.lastSeq, rs.haveSeq = n+rs.seqShift, true
		}
	}
	*out = append(*out, ev.Raw...)
}

// inserted numbers an event Bulwark inserts into a Responses stream (which
// copied its template's sequence_number) after the last one the client
// saw, and shifts the events still to come.
func (rs *responseState) inserted(ev llmapi.Event) llmapi.Event {
	if rs.api != llmapi.OpenAIResponses || !rs.haveSeq {
		return ev
	}
	e, err := llmapi.WithSequenceNumber(ev, rs.lastSeq+1)
	if err != nil {
		return ev // the template had no number: nor has the copy
	}
	rs.lastSeq++
	rs.seqShift++
	return e
}

// eventFilter is the state of filtering one stream event: what the
// callback FilterEvent calls for each string needs besides the string.
type eventFilter struct {
	x   *Session
	ctx context.Context // the call's, held only while FilterEvent runs
	out *[]byte
	ev  llmapi.Event
	// all and ends are the channels the event closes.
	all  bool
	ends []int
	// err is the first failure (a cut stream); whole collects the findings
	// of strings filtered whole.
	err   error
	whole []detect.Finding
}

func (e *eventFilter) ending(idx int) bool { return e.all || slices.Contains(e.ends, idx) }

// filter redacts one string of the event: whole, or through the redaction
// stream of its channel, closing the stream when the event ends it.
func (e *eventFilter) filter(ch llmapi.Channel, t string) string {
	if e.err != nil {
		return ""
	}
	x := e.x
	rs := x.resp
	if x.c.opts.Moderator != nil && ch.Field != llmapi.FieldEcho {
		// The model's text as it wrote it, for the moderation model (the
		// echo is the request's own instructions, not the model's). The
		// first text after a window was asked about: everything output
		// so far came from text the model has seen.
		if rs.modNew == 0 {
			rs.modClear = max(rs.modClear, len(*e.out))
		}
		rs.modText = append(rs.modText, t...)
		rs.modNew += len(t)
	}
	switch ch.Field {
	case "":
		r, f, _ := rs.redactor().Text(x.c.outScan, t, rs.literalsOrNil())
		e.whole = append(e.whole, f...)
		return r
	case llmapi.FieldEcho:
		// The request's own instructions, with the canary Bulwark added:
		// redacted like the rest (the marker too), but not a leak.
		r, f, _ := rs.redactor().Text(x.c.outScan, t, rs.literalsOrNil())
		for _, fd := range f {
			if fd.Detector != redact.DetectorCanary {
				e.whole = append(e.whole, fd)
			}
		}
		return r
	}
	st, err := rs.stream(x, ch)
	if err != nil {
		e.err = err
		return ""
	}
	rs.templates[ch] = e.ev
	w, _ := st.WriteString(t)
	if e.err = x.checkWindow(e.ctx, w, e.out); e.err != nil {
		return ""
	}
	if !e.ending(ch.Index) {
		return w.Text
	}
	last := st.Close()
	delete(rs.streams, ch)
	if e.err = x.checkWindow(e.ctx, last, e.out); e.err != nil {
		return ""
	}
	return w.Text + last.Text
}

// flushStreams releases what the redaction streams of the channels whose
// index closing accepts hold, as synthesized events, in a fixed order.
func (x *Session) flushStreams(ctx context.Context, closing func(idx int) bool, out *[]byte) error {
	rs := x.resp
	keys := make([]llmapi.Channel, 0, len(rs.streams))
	for k := range rs.streams {
		if closing(k.Index) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b llmapi.Channel) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Field, b.Field), cmp.Compare(a.Sub, b.Sub))
	})
	for _, k := range keys {
		w := rs.streams[k].Close()
		delete(rs.streams, k)
		if err := x.checkWindow(ctx, w, out); err != nil {
			return err
		}
		if w.Text == "" {
			continue
		}
		ev, err := llmapi.ChannelEvent(rs.api, rs.templates[k], k, w.Text)
		if err != nil {
			return err
		}
		*out = append(*out, rs.inserted(ev).Raw...)
	}
	return nil
}

// checkWindow asks the policy about a released window that had findings
// (phase response_body_chunk). A deny ends the stream with an error event in
// the API's shape, so the client sees why its answer stopped.
func (x *Session) checkWindow(ctx context.Context, w redact.Window, out *[]byte) error {
	x.c.metrics.redacted("response", w.Redactions)
	if len(w.Findings) == 0 {
		return nil
	}
	sig := signalsOf(w.Findings)
	var res Result
	o, err := x.decide(ctx, pipeline.PhaseResponseBodyChunk, pipeline.Request{Input: x.responseInput(nil), Signals: &sig}, &res)
	if err != nil {
		return err
	}
	x.resp.cur.Decided, x.resp.cur.Outcome, x.resp.cur.Phase = true, res.Outcome, res.Phase
	if o.Decision.Allowed {
		return nil
	}
	return x.cutStream(o, out)
}

// cutStream ends the stream after a policy deny: an error event in the
// API's shape, so the client sees why its answer stopped.
func (x *Session) cutStream(o pipeline.Outcome, out *[]byte) error {
	x.resp.ended = true
	x.resp.cut = &Cut{DecisionID: o.DecisionID, Reason: o.Reason, Message: o.Decision.Message}
	msg := o.Decision.Message
	if msg == "" {
		msg = "the answer was stopped by policy"
	}
	x.withholdUnmoderated(out)
	*out = append(*out, x.resp.parser.ErrorEvent(x.resp.api, http.StatusForbidden, o.Reason, msg+" (decision "+o.DecisionID+")")...)
	return errCut
}

// redactor is the exchange's redactor, or one that only reports (a canary
// watch without redaction rules).
func (rs *responseState) redactor() *redact.Redactor {
	if rs.red == nil {
		rs.red = redact.New(nil, nil)
	}
	return rs.red
}

// stream returns the redaction stream of one channel.
func (rs *responseState) stream(x *Session, ch llmapi.Channel) (*redact.Stream, error) {
	if st, ok := rs.streams[ch]; ok {
		return st, nil
	}
	st, err := rs.redactor().NewStream(x.c.outScan, redact.StreamOptions{
		Step: x.c.opts.StreamStep, Lookahead: x.c.opts.StreamLookahead, Literals: rs.literals})
	if err != nil {
		return nil, err
	}
	rs.streams[ch] = st
	return st, nil
}

// addUsage folds what one event reports into the stream's usage: Anthropic
// splits input (message_start) and output (message_delta, cumulative)
// tokens; OpenAI reports all of it once at the end.
func (rs *responseState) addUsage(u llmapi.Usage) {
	rs.haveUsage = true
	rs.usage.Merge(&u)
}

// settle reconciles the token reservation with the reported usage, once.
func (x *Session) settle(ctx context.Context, u llmapi.Usage) {
	total := u.TotalTokens
	if total == 0 {
		total = u.PromptTokens + u.CompletionTokens
	}
	x.settleTokens(ctx, total, "ok")
}

// finish settles the exchange's token reservation when the exchange ends
// (answered, cut, cancelled, failed) without the model having reported
// usage: an estimate stands in for it, so an aborted exchange neither keeps
// its whole reservation (which would starve its tenant) nor costs nothing.
// Only a reservation this exchange made is settled so: ext_authz's decision
// id may name none (token_quota_phase request_body reserves here), or one
// held by another replica.
func (x *Session) finish(ctx context.Context) {
	if x.reconciled || !x.reservedHere || x.c.reconcile == nil {
		return
	}
	x.settleTokens(ctx, x.estimatedUsage(), "estimated")
}

// estimatedUsage is what an exchange without reported usage is charged:
// nothing when the request never went upstream or the model refused it
// (an error status), else the prompt's estimated tokens plus about a token
// per four bytes of answer seen, the answer part capped at the reservation
// (the model cannot produce more than it was allowed).
func (x *Session) estimatedUsage() int64 {
	if !x.forwarded {
		return 0
	}
	rs := x.resp
	if rs != nil && rs.status >= 400 {
		return 0
	}
	var prompt int64
	if x.llmReq != nil {
		for _, m := range x.llmReq.Messages {
			prompt += int64(len(m.Content))
		}
		prompt = (prompt + 3) / 4 // as input.llm.estimated_tokens counts
	}
	var answer int64
	if rs != nil {
		answer = (rs.bodyBytes + 3) / 4
		if x.reserved > 0 {
			answer = min(answer, x.reserved)
		}
	}
	return prompt + answer
}

// settleTokens replaces the reservation's estimate with total, once. A
// failure is logged and counted: the answer is already paid for.
func (x *Session) settleTokens(ctx context.Context, total int64, result string) {
	if x.reconciled || x.reserveID == "" || x.c.reconcile == nil {
		return
	}
	x.reconciled = true
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reconcileTimeout)
	defer cancel()
	if err := x.c.reconcile.Reconcile(rctx, x.reserveID, total); err != nil {
		x.c.metrics.reconciled("error")
		x.c.logger.Warn("token usage not reconciled", "decision_id", x.reserveID, "tokens", total, "error", err)
		return
	}
	x.c.metrics.reconciled(result)
}

// reconcileTimeout bounds the Redis call that settles a reservation.
const reconcileTimeout = 250 * time.Millisecond

// signalsOf turns a window's findings into policy signals: the detectors'
// own counting, plus the canary, which only the stream knows about.
func signalsOf(fs []detect.Finding) detect.Signals {
	sig := detect.Result{Findings: fs}.Signals()
	for _, f := range fs {
		if f.Detector == redact.DetectorCanary {
			sig.CanaryLeak = true
			break
		}
	}
	return sig
}

func hasFindings(s *detect.Signals) bool {
	return s != nil && (len(s.PII) > 0 || len(s.Secrets) > 0 || len(s.ContentSafety) > 0)
}
