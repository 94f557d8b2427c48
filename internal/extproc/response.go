package extproc

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/internal/llmapi"
	"github.com/bulwark-ai/bulwark/internal/pipeline"
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

	parser *llmapi.SSEParser
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
}

// responseHeaders decides whether and how to read the response body: SSE
// streamed, JSON and text buffered, anything else left alone.
func (x *exchange) responseHeaders(ctx context.Context, h *extprocv3.HttpHeaders) (*extprocv3.ProcessingResponse, error) {
	if x.headers == nil {
		return nil, &protocolError{msg: "response headers before request headers"}
	}
	if x.resp != nil {
		return nil, &protocolError{msg: "response headers sent twice"}
	}
	rh := headerMap(h.GetHeaders())
	rs := &responseState{headers: rh}
	rs.status, _ = strconv.Atoi(rh[":status"])
	x.resp = rs
	if x.bodyExpected && !x.bodySeen {
		// Bulwark asked for the request body and never got it: the filter
		// ignores mode_override, so prompts reach the model uninspected.
		// Refuse the answer rather than certify the exchange.
		x.s.logger.Error("request body was never sent to Bulwark; set allow_mode_override on Envoy's ext_proc filter",
			"path", x.path)
		return x.denyLocal(http.StatusInternalServerError, "request_body_not_inspected",
			"the gateway could not inspect this request"), nil
	}
	cont := func(mode *filterv3.ProcessingMode, m *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
		return &extprocv3.ProcessingResponse{
			Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{
				Response: &extprocv3.CommonResponse{HeaderMutation: nonEmpty(m)}}},
			ModeOverride: mode,
		}
	}
	ct := rh["content-type"]
	rs.sse = mediaType(ct) == "text/event-stream"
	// Every answer that can carry text is inspected, whether or not a
	// request body was read: a GET of a stored response or of a file's
	// content returns model output and user data as much as a POST does.
	if h.GetEndOfStream() || (!rs.sse && !isJSON(ct) && !isText(ct) && !isNDJSON(ct)) {
		return cont(nil, nil), nil
	}
	rs.api = x.api
	if x.llmReq == nil {
		rs.api = llmapi.ResponseAPI(x.path)
	}
	rs.encoding = strings.ToLower(strings.TrimSpace(rh["content-encoding"]))
	if rs.encoding == "identity" {
		rs.encoding = ""
	}

	out, err := x.decide(ctx, pipeline.PhaseResponseHeaders, pipeline.Request{Input: x.responseInput(nil)})
	if err != nil {
		return nil, err
	}
	if !out.Decision.Allowed {
		return x.deny(out), nil
	}
	rs.red = x.s.redactor(rules(out.Decision.Redact))
	if x.canary != "" {
		rs.literals = map[string]string{x.canary: redact.CanaryType}
	}
	m := &extprocv3.HeaderMutation{}
	for _, h := range out.Decision.ResponseHeadersToAdd {
		m.SetHeaders = append(m.SetHeaders, setHeader(h.Key, h.Value))
	}
	mode := &filterv3.ProcessingMode{
		RequestHeaderMode:   filterv3.ProcessingMode_SEND,
		ResponseHeaderMode:  filterv3.ProcessingMode_SEND,
		RequestBodyMode:     filterv3.ProcessingMode_NONE,
		ResponseBodyMode:    filterv3.ProcessingMode_BUFFERED,
		RequestTrailerMode:  filterv3.ProcessingMode_SKIP,
		ResponseTrailerMode: filterv3.ProcessingMode_SKIP,
	}
	if rs.sse {
		if rs.encoding != "" {
			// A compressed event stream cannot be redacted event by event.
			return x.denyLocal(http.StatusBadGateway, "unsupported_content_encoding",
				"the model's streamed answer is compressed ("+rs.encoding+") and cannot be inspected"), nil
		}
		mode.ResponseBodyMode = filterv3.ProcessingMode_STREAMED
		rs.parser = &llmapi.SSEParser{MaxEventBytes: x.s.opts.MaxEventBytes}
		rs.streams = make(map[llmapi.Channel]*redact.Stream, 1)
		rs.templates = make(map[llmapi.Channel]llmapi.Event, 1)
		rs.ev.x = x
		rs.filter = rs.ev.filter
	}
	return cont(mode, m), nil
}

// responseInput is the request's input plus llm, the response's status and
// the usage reported so far.
func (x *exchange) responseInput(usage *llmapi.Usage) ast.Object {
	in := x.headersInput()
	if x.llmTerm != nil {
		in.Insert(keyLLM, x.llmTerm)
	}
	if rs := x.resp; rs != nil {
		in.Insert(keyResponse, ast.NewTerm(ast.NewObject(
			[2]*ast.Term{keyStatus, ast.IntNumberTerm(rs.status)},
			[2]*ast.Term{keyContentType, ast.StringTerm(rs.headers["content-type"])},
		)))
	}
	if usage != nil {
		in.Insert(keyUsage, ast.NewTerm(usageValue(*usage)))
	}
	return in
}

func (x *exchange) responseBody(ctx context.Context, b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	rs := x.resp
	if rs == nil {
		return nil, &protocolError{msg: "response body before response headers"}
	}
	rs.bodyBytes += int64(len(b.GetBody()))
	if rs.sse {
		start := time.Now()
		resp, err := x.streamChunk(ctx, b)
		x.s.metrics.chunk(time.Since(start))
		return resp, err
	}
	body, over, complete, held := x.accumulate(b, false)
	if !complete {
		return held, nil
	}
	streamed := held != nil
	if over {
		return x.denyLocal(http.StatusBadGateway, "response_too_large_to_inspect",
			"the model's answer is larger than the gateway inspects"), nil
	}
	plain, decoded, deny := x.decode(rs.encoding, body)
	if deny != nil {
		return deny, nil
	}
	jsonBody := isJSON(rs.headers["content-type"])
	text := string(plain)
	api := rs.api
	var usage *llmapi.Usage
	if jsonBody {
		r, err := llmapi.ParseResponse(api, plain)
		if err != nil {
			// Not the shape its API promised (an error page, a bare
			// string): read it as unknown JSON or text, every string of it.
			api = llmapi.Generic
			r, _ = llmapi.ParseResponse(api, plain)
		}
		usage = r.Usage
		text, _ = llmapi.FilteredText(api, plain)
	}
	var sig detect.Signals
	var findings []detect.Finding
	if x.s.outScan != nil && text != "" {
		res := x.s.outScan.Scan(text)
		sig = res.Signals()
		findings = res.Findings
	}
	leak := x.canary != "" && redact.ContainsLiteral(text, x.canary)
	sig.CanaryLeak = leak
	if usage != nil {
		x.settle(ctx, *usage)
	}
	out, err := x.decide(ctx, pipeline.PhaseResponseBody, pipeline.Request{Input: x.responseInput(usage), Signals: &sig})
	if err != nil {
		return nil, err
	}
	if !out.Decision.Allowed {
		return x.deny(out), nil
	}
	common := &extprocv3.CommonResponse{}
	newBody := body
	changed := false
	if red := x.s.redactor(rules(out.Decision.Redact)); red != nil && (len(findings) > 0 || leak) {
		literals := rs.literalsOrNil()
		count := 0
		fix := func(t string) string {
			r, _, n := red.Text(x.s.outScan, t, literals)
			count += n
			return r
		}
		if jsonBody {
			nb, ch, err := llmapi.EditResponse(api, plain, fix)
			if err != nil {
				x.s.logger.Error("response body could not be rewritten; denying", "decision_id", out.DecisionID, "error", err)
				return x.denyLocal(http.StatusBadGateway, "redaction_failed", "the model's answer could not be made safe to return"), nil
			}
			newBody, changed = nb, ch
		} else {
			nb := fix(text)
			newBody, changed = []byte(nb), nb != text
		}
		x.s.metrics.redacted("response", count)
	}
	m := &extprocv3.HeaderMutation{}
	if changed {
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: newBody}}
		if decoded {
			m.RemoveHeaders = append(m.RemoveHeaders, "content-encoding")
		}
		if !streamed {
			m.SetHeaders = append(m.SetHeaders, setHeader("content-length", strconv.Itoa(len(newBody))))
		}
	} else if streamed {
		common.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}
	}
	if !streamed {
		common.HeaderMutation = nonEmpty(m)
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: common}}}, nil
}

func (rs *responseState) literalsOrNil() map[string]string {
	if len(rs.literals) == 0 {
		return nil
	}
	return rs.literals
}

// errCut stops event processing once the stream has been ended by a deny.
var errCut = errors.New("stream cut")

// streamChunk redacts one chunk of an SSE response. Chunks are not event
// boundaries: the parser holds an incomplete event until its end arrives,
// and each redaction stream holds the bounded tail of text that could still
// complete a finding. The answer replaces the chunk with the rewritten
// complete events.
func (x *exchange) streamChunk(ctx context.Context, b *extprocv3.HttpBody) (*extprocv3.ProcessingResponse, error) {
	rs := x.resp
	var out []byte
	if !rs.ended {
		err := rs.parser.Feed(b.GetBody(), func(ev llmapi.Event) error { return x.streamEvent(ctx, ev, &out) })
		switch {
		case err == nil, errors.Is(err, errCut):
		case errors.Is(err, llmapi.ErrEventTooLarge):
			x.s.metrics.localDeny("event_too_large")
			rs.cut = &Cut{Reason: "event_too_large", Message: "the model's answer could not be inspected"}
			out = append(out, llmapi.ErrorEvent(rs.api, "event_too_large", "the model's answer could not be inspected")...)
			rs.ended = true
			x.outcome = "denied"
		default:
			return nil, err
		}
		if b.GetEndOfStream() && !rs.ended {
			// Whatever is still held goes out now; an incomplete last event
			// is dropped, as an SSE client would drop it.
			if err := x.flushStreams(ctx, func(int) bool { return true }, &out); err != nil && !errors.Is(err, errCut) {
				return nil, err
			}
			if rs.haveUsage {
				x.settle(ctx, rs.usage)
			}
		}
	}
	body := &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: out}}
	if len(out) == 0 {
		body.Mutation = &extprocv3.BodyMutation_ClearBody{ClearBody: true}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{BodyMutation: body}}}}, nil
}

// streamEvent rewrites one complete event into out. Every string of the
// event the filter must see is redacted: the deltas of each choice, tool
// call, refusal, reasoning or content block through a redaction stream of
// their own (a value may be split over deltas), everything else whole.
// Logprob tokens are blanked, since they repeat text not yet released.
func (x *exchange) streamEvent(ctx context.Context, ev llmapi.Event, out *[]byte) error {
	rs := x.resp
	if rs.ended {
		return errCut
	}
	pe := llmapi.ParseEvent(rs.api, ev)
	d, err := pe.Meta()
	if err != nil {
		// An event Bulwark cannot read may still carry text: pass it only
		// when nothing in it needs removing.
		if x.s.outScan != nil && len(x.s.outScan.Scan(string(ev.Data)).Findings) > 0 {
			x.s.metrics.localDeny("unreadable_event_dropped")
			return nil
		}
		rs.forward(ev, out)
		return nil
	}
	if d.Usage != nil {
		rs.addUsage(*d.Usage)
	}
	if d.UsageOnly && x.addedUsage {
		return nil // counted; the client did not ask for it
	}
	if rs.red == nil && rs.literals == nil {
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
	x   *exchange
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
	switch ch.Field {
	case "":
		r, f, _ := rs.redactor().Text(x.s.outScan, t, rs.literalsOrNil())
		e.whole = append(e.whole, f...)
		return r
	case llmapi.FieldEcho:
		// The request's own instructions, with the canary Bulwark added:
		// redacted like the rest (the marker too), but not a leak.
		r, f, _ := rs.redactor().Text(x.s.outScan, t, rs.literalsOrNil())
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
func (x *exchange) flushStreams(ctx context.Context, closing func(idx int) bool, out *[]byte) error {
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
func (x *exchange) checkWindow(ctx context.Context, w redact.Window, out *[]byte) error {
	x.s.metrics.redacted("response", w.Redactions)
	if len(w.Findings) == 0 {
		return nil
	}
	sig := signalsOf(w.Findings)
	o, err := x.decide(ctx, pipeline.PhaseResponseBodyChunk, pipeline.Request{Input: x.responseInput(nil), Signals: &sig})
	if err != nil {
		return err
	}
	if o.Decision.Allowed {
		return nil
	}
	x.resp.ended = true
	x.resp.cut = &Cut{DecisionID: o.DecisionID, Reason: o.Reason, Message: o.Decision.Message}
	msg := o.Decision.Message
	if msg == "" {
		msg = "the answer was stopped by policy"
	}
	*out = append(*out, llmapi.ErrorEvent(x.resp.api, o.Reason, msg+" (decision "+o.DecisionID+")")...)
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
func (rs *responseState) stream(x *exchange, ch llmapi.Channel) (*redact.Stream, error) {
	if st, ok := rs.streams[ch]; ok {
		return st, nil
	}
	st, err := rs.redactor().NewStream(x.s.outScan, redact.StreamOptions{
		Step: x.s.opts.StreamStep, Lookahead: x.s.opts.StreamLookahead, Literals: rs.literals})
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
func (x *exchange) settle(ctx context.Context, u llmapi.Usage) {
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
func (x *exchange) finish(ctx context.Context) {
	if x.reconciled || !x.reservedHere || x.s.reconcile == nil {
		return
	}
	x.settleTokens(ctx, x.estimatedUsage(), "estimated")
}

// estimatedUsage is what an exchange without reported usage is charged:
// nothing when the request never went upstream or the model refused it
// (an error status), else the prompt's estimated tokens plus about a token
// per four bytes of answer seen, the answer part capped at the reservation
// (the model cannot produce more than it was allowed).
func (x *exchange) estimatedUsage() int64 {
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
func (x *exchange) settleTokens(ctx context.Context, total int64, result string) {
	if x.reconciled || x.reserveID == "" || x.s.reconcile == nil {
		return
	}
	x.reconciled = true
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reconcileTimeout)
	defer cancel()
	if err := x.s.reconcile.Reconcile(rctx, x.reserveID, total); err != nil {
		x.s.metrics.reconciled("error")
		x.s.logger.Warn("token usage not reconciled", "decision_id", x.reserveID, "tokens", total, "error", err)
		return
	}
	x.s.metrics.reconciled(result)
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
	return s != nil && (len(s.PII) > 0 || len(s.Secrets) > 0)
}

func (x *exchange) responseTrailers(context.Context) (*extprocv3.ProcessingResponse, error) {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
}
