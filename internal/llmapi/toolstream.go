package llmapi

import (
	"bytes"
	"errors"
)

// ToolCallKey identifies one streamed tool call within its stream: Index
// is the choice (OpenAI chat), the output_index (Responses) or the content
// block index (Anthropic); Sub is the tool_calls[].index within an OpenAI
// choice (-1 for a legacy function_call, 0 elsewhere).
type ToolCallKey struct{ Index, Sub int }

// StreamedToolCall is one tool call assembled from a stream's events.
type StreamedToolCall struct {
	Key ToolCallKey
	// ToolCall holds the id and name the call's first events carried and
	// its arguments as assembled so far (the JSON text the client will
	// concatenate).
	ToolCall
	// Complete says no more of the call will come: its closing event
	// arrived (see ToolCallAssembler), or the stream ended.
	Complete bool

	args    []byte
	started []byte // an Anthropic tool_use block's initial input, used when no delta follows
	deltas  bool
}

// Defaults of the ToolCallAssembler bounds.
const (
	DefaultMaxToolCalls         = 256
	DefaultMaxToolArgumentBytes = 1 << 20
)

// ErrTooManyToolCalls means a stream carried more tool calls, or more
// argument bytes in total, than the assembler holds: it cannot vouch for
// the calls past its bounds, so the caller must stop the stream.
var ErrTooManyToolCalls = errors.New("llmapi: tool calls exceed the assembler's bounds")

// ToolCallAssembler follows the tool calls of one streamed answer, event by
// event, so that a proxy can decide on each call before any of it reaches
// the client. It knows, per API, which events carry part of a call and
// which close it:
//
//   - OpenAI chat: choices[].delta.tool_calls[] (id and name first, then
//     argument fragments; custom tools' input) and the legacy
//     delta.function_call; a choice's calls are complete at its
//     finish_reason, every call at [DONE] or an error chunk (OpenAI never
//     says when one call of several ends, so a choice's calls complete
//     together).
//   - Responses: output_item.added (function_call, custom_tool_call),
//     function_call_arguments.delta / custom_tool_call_input.delta; a call
//     is complete at its *.done or output_item.done, every call at
//     response.completed, .incomplete, .failed and error (whose output is
//     read too, for calls no earlier event announced).
//   - Anthropic: content_block_start (tool_use, server_tool_use),
//     input_json_delta; a call is complete at its content_block_stop, every
//     call at message_delta, message_stop and error.
//
// Events of other kinds are recognised as such cheaply, so following a
// stream without tool calls costs little (see BenchmarkToolCallAssembler).
// An assembler is not safe for concurrent use; its zero value is not
// ready: use NewToolCallAssembler.
type ToolCallAssembler struct {
	api API
	dl  *dialect // api's provider dialect, nil for the built-in APIs
	// MaxCalls and MaxArgumentBytes bound what one stream may make the
	// assembler hold (defaults DefaultMaxToolCalls and
	// DefaultMaxToolArgumentBytes, the arguments of every call together).
	MaxCalls, MaxArgumentBytes int

	calls     []StreamedToolCall
	open      int // calls not complete
	argBytes  int
	touched   []int
	completed []int
	err       error
}

// NewToolCallAssembler returns an assembler for a stream of api.
func NewToolCallAssembler(api API) *ToolCallAssembler {
	return &ToolCallAssembler{api: api, dl: dialectOf(api)}
}

// Calls returns the calls seen so far, in the order they started. The
// slice is the assembler's: read it before the next Observe.
func (a *ToolCallAssembler) Calls() []StreamedToolCall { return a.calls }

// Open reports whether some call is not complete yet.
func (a *ToolCallAssembler) Open() bool { return a.open > 0 }

// Observe reads one event. touched lists (as positions in Calls) the calls
// the event carries part of that were not complete before it; completed the
// calls the event closes. Both are the assembler's and valid until the next
// call. A proxy holds an event that touches a call until that call is
// complete and decided. err is ErrTooManyToolCalls once the stream has
// outgrown the bounds (and stays so).
func (a *ToolCallAssembler) Observe(p *ParsedEvent) (touched, completed []int, err error) {
	a.touched, a.completed = a.touched[:0], a.completed[:0]
	if a.err != nil {
		return nil, nil, a.err
	}
	if p.done {
		a.completeAll()
		return a.touched, a.completed, nil
	}
	if dl := a.dl; dl != nil {
		if dl.toolEvent != nil && p.err == nil {
			dl.toolEvent(a, p.ev, p.d)
		}
		if a.err != nil {
			return nil, nil, a.err
		}
		return a.touched, a.completed, nil
	}
	a.builtinEvent(p)
	if a.err != nil {
		return nil, nil, a.err
	}
	return a.touched, a.completed, nil
}

// builtinEvent follows an event of the OpenAI and Anthropic APIs (and of
// Generic streams, read by shape).
func (a *ToolCallAssembler) builtinEvent(p *ParsedEvent) {
	d := p.d
	if p.err != nil || len(d) == 0 || d[0] != '{' {
		if p.err == nil && len(d) == 0 && p.ev.Name == "message_stop" {
			a.completeAll()
		}
		return
	}
	kind := streamKind(p.api, d, p.ev.Name)
	if a.open == 0 && !mayStartCall(d) {
		return // the common case: text, usage, metadata
	}
	switch kind {
	case OpenAIChat, OpenAICompletions:
		a.chatChunk(d)
	case OpenAIResponses:
		a.responsesEvent(d, p.ev.Name)
	case AnthropicMessages:
		a.anthropicEvent(d, p.ev.Name)
	}
}

// CompleteAll closes every open call (the stream ended) and returns them.
func (a *ToolCallAssembler) CompleteAll() []int {
	a.touched, a.completed = a.touched[:0], a.completed[:0]
	a.completeAll()
	return a.completed
}

// mayStartCall is the cheap test of an event while no call is open: could
// it start one? It looks for the member names and types that announce a
// call, and for \u escapes, behind which any name may hide.
func mayStartCall(d []byte) bool {
	// tool_calls, function_call (chat); function_call, custom_tool_call
	// (Responses); tool_use, server_tool_use (Anthropic): the rare '_' then
	// "call" or "use" finds them all in one pass.
	for i := 0; ; {
		j := bytes.IndexByte(d[i:], '_')
		if j < 0 {
			break
		}
		i += j + 1
		if bytes.HasPrefix(d[i:], []byte("call")) || bytes.HasPrefix(d[i:], []byte("use")) {
			return true
		}
	}
	return hasUnicodeEscape(d)
}

// hasUnicodeEscape reports whether d has a \u escape, behind which any
// member name may hide.
func hasUnicodeEscape(d []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(d[i:], '\\')
		if j < 0 || i+j+1 >= len(d) {
			return false
		}
		i += j + 1
		if d[i] == 'u' {
			return true
		}
		i++ // the escaped character
	}
}

// call returns the position of the call with key k that is not complete,
// starting one when there is none. It returns -1 past the bounds.
func (a *ToolCallAssembler) call(k ToolCallKey) int {
	for i := len(a.calls) - 1; i >= 0; i-- {
		if a.calls[i].Key == k && !a.calls[i].Complete {
			return i
		}
	}
	limit := a.MaxCalls
	if limit <= 0 {
		limit = DefaultMaxToolCalls
	}
	if len(a.calls) >= limit {
		a.err = ErrTooManyToolCalls
		return -1
	}
	a.calls = append(a.calls, StreamedToolCall{Key: k})
	a.open++
	return len(a.calls) - 1
}

// find returns the position of the open call with key k, or -1.
func (a *ToolCallAssembler) find(k ToolCallKey) int {
	for i := len(a.calls) - 1; i >= 0; i-- {
		if a.calls[i].Key == k && !a.calls[i].Complete {
			return i
		}
	}
	return -1
}

// touch records that the event carries part of call i.
func (a *ToolCallAssembler) touch(i int) {
	for _, t := range a.touched {
		if t == i {
			return
		}
	}
	a.touched = append(a.touched, i)
}

// appendArgs adds an arguments fragment to call i, within the bound.
func (a *ToolCallAssembler) appendArgs(i int, frag []byte) {
	limit := a.MaxArgumentBytes
	if limit <= 0 {
		limit = DefaultMaxToolArgumentBytes
	}
	if a.argBytes+len(frag) > limit {
		a.err = ErrTooManyToolCalls
		return
	}
	a.argBytes += len(frag)
	c := &a.calls[i]
	c.args = append(c.args, frag...)
	c.deltas = true
}

// setArgs replaces call i's arguments with the full text a closing event
// carries (Responses *.done, output_item.done).
func (a *ToolCallAssembler) setArgs(i int, full string) {
	c := &a.calls[i]
	a.argBytes -= len(c.args)
	c.args = c.args[:0]
	a.appendArgs(i, []byte(full))
}

func (a *ToolCallAssembler) complete(i int) {
	c := &a.calls[i]
	if c.Complete {
		return
	}
	c.Complete = true
	a.open--
	switch {
	case c.deltas || len(c.started) == 0:
		c.Arguments = string(c.args)
	default:
		c.Arguments = string(c.started)
	}
	a.touch(i)
	a.completed = append(a.completed, i)
}

func (a *ToolCallAssembler) completeAll() {
	for i := range a.calls {
		if !a.calls[i].Complete {
			a.complete(i)
		}
	}
}

// completeIndex closes the open calls whose Index is idx.
func (a *ToolCallAssembler) completeIndex(idx int) {
	for i := range a.calls {
		if !a.calls[i].Complete && a.calls[i].Key.Index == idx {
			a.complete(i)
		}
	}
}

// setIdentity fills a call's id and name from the first event that has them.
func (a *ToolCallAssembler) setIdentity(i int, id, name string) {
	c := &a.calls[i]
	if c.ID == "" {
		c.ID = id
	}
	if c.Name == "" {
		c.Name = name
	}
}

func (a *ToolCallAssembler) chatChunk(d []byte) {
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "error":
			if c := kindOf(d, it.v); c != 'n' && c != 'f' {
				a.completeAll()
			}
		case "choices":
			ct := iterArray(d, it.v.s)
			for pos := 0; ct.next(); pos++ {
				if kindOf(d, ct.v) == '{' {
					a.chatChoice(d, ct.v, pos)
				}
			}
		}
	}
}

func (a *ToolCallAssembler) chatChoice(d []byte, c vspan, pos int) {
	idx := memberInt(d, c, "index", pos)
	finished := false
	it := iterObject(d, c.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "finish_reason":
			finished = kindOf(d, it.v) == '"' && it.v.e-it.v.s > 2
		case "delta":
			if kindOf(d, it.v) != '{' {
				continue
			}
			dt := iterObject(d, it.v.s)
			for dt.next() {
				switch string(dt.keyRaw()) {
				case "tool_calls":
					tc := iterArray(d, dt.v.s)
					for tpos := 0; tc.next(); tpos++ {
						if kindOf(d, tc.v) == '{' {
							a.chatCall(d, tc.v, ToolCallKey{idx, memberInt(d, tc.v, "index", tpos)})
						}
					}
				case "function_call":
					if kindOf(d, dt.v) == '{' {
						a.chatFunction(d, dt.v, ToolCallKey{idx, -1}, "")
					}
				}
			}
		}
	}
	if finished {
		a.completeIndex(idx)
	}
}

// chatCall reads one delta.tool_calls[] element.
func (a *ToolCallAssembler) chatCall(d []byte, v vspan, k ToolCallKey) {
	id := memberString(d, v, "id")
	it := iterObject(d, v.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "function", "custom":
			if kindOf(d, it.v) == '{' {
				a.chatFunction(d, it.v, k, id)
				return
			}
		}
	}
	if i := a.call(k); i >= 0 { // an element with only an id (or nothing)
		a.setIdentity(i, id, "")
		a.touch(i)
	}
}

// chatFunction reads {"name", "arguments"} (custom tools: "input").
func (a *ToolCallAssembler) chatFunction(d []byte, fn vspan, k ToolCallKey, id string) {
	i := a.call(k)
	if i < 0 {
		return
	}
	a.touch(i)
	var name string
	it := iterObject(d, fn.s)
	for it.next() {
		switch string(it.keyRaw()) {
		case "name":
			name, _ = strAt(d, it.v)
		case "arguments", "input":
			if kindOf(d, it.v) == '"' {
				a.appendArgs(i, rawStrAt(d, it.v))
			}
		}
	}
	a.setIdentity(i, id, name)
}

func (a *ToolCallAssembler) responsesEvent(d []byte, name string) {
	top := vspan{0, len(d)}
	var typ []byte
	var item, resp, delta vspan
	var hasItem, hasResp, hasDelta bool
	idx := 0
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "type":
			typ = rawStrAt(d, it.v)
		case "item":
			item, hasItem = it.v, true
		case "response":
			resp, hasResp = it.v, true
		case "delta":
			delta, hasDelta = it.v, true
		case "output_index":
			if n, ok := intAt(d, it.v); ok {
				idx = int(n)
			}
		}
	}
	if len(typ) == 0 {
		typ = []byte(name)
	}
	k := ToolCallKey{Index: idx}
	switch string(typ) {
	case "response.output_item.added", "response.output_item.done":
		if !hasItem || !isCallItem(d, item) {
			return
		}
		done := string(typ) == "response.output_item.done"
		i := a.find(k)
		if i < 0 {
			if done && a.known(d, item) {
				return // closed already by its *.done event
			}
			if i = a.call(k); i < 0 {
				return
			}
		}
		a.touch(i)
		a.readCallItem(i, d, item, done)
		if done {
			a.complete(i)
		}
	case "response.function_call_arguments.delta", "response.custom_tool_call_input.delta":
		if i := a.call(k); i >= 0 && hasDelta && kindOf(d, delta) == '"' {
			a.touch(i)
			a.appendArgs(i, rawStrAt(d, delta))
		}
	case "response.function_call_arguments.done", "response.custom_tool_call_input.done":
		i := a.call(k)
		if i < 0 {
			return
		}
		a.touch(i)
		for _, f := range [...]string{"arguments", "input"} {
			if v, ok := member(d, top, f); ok && kindOf(d, v) == '"' {
				s, _ := strAt(d, v)
				a.setArgs(i, s)
			}
		}
		a.complete(i)
	case "response.completed", "response.incomplete", "response.failed", "error":
		if hasResp {
			// Calls only the final response shows (no earlier event
			// announced them) are decided before it passes too.
			if out, ok := member(d, resp, "output"); ok {
				ot := iterArray(d, out.s)
				for pos := 0; ot.next(); pos++ {
					if isCallItem(d, ot.v) && !a.known(d, ot.v) {
						if i := a.call(ToolCallKey{Index: pos}); i >= 0 {
							a.readCallItem(i, d, ot.v, true)
						}
					}
				}
			}
		}
		a.completeAll()
	}
}

// known reports whether a complete call has the id of item.
func (a *ToolCallAssembler) known(d []byte, item vspan) bool {
	id := memberString(d, item, "call_id")
	if id == "" {
		id = memberString(d, item, "id")
	}
	for i := range a.calls {
		if a.calls[i].Complete && id != "" && a.calls[i].ID == id {
			return true
		}
	}
	return false
}

func isCallItem(d []byte, item vspan) bool {
	switch string(memberRaw(d, item, "type")) {
	case "function_call", "custom_tool_call":
		return true
	}
	return false
}

// readCallItem reads a Responses function_call item: call_id (else id),
// name, and its arguments (input) when full says the item is final or it
// carries some.
func (a *ToolCallAssembler) readCallItem(i int, d []byte, item vspan, full bool) {
	id := memberString(d, item, "call_id")
	if id == "" {
		id = memberString(d, item, "id")
	}
	a.setIdentity(i, id, memberString(d, item, "name"))
	for _, f := range [...]string{"arguments", "input"} {
		if v, ok := member(d, item, f); ok && kindOf(d, v) == '"' {
			if s, _ := strAt(d, v); full || s != "" {
				a.setArgs(i, s)
			}
		}
	}
}

func (a *ToolCallAssembler) anthropicEvent(d []byte, name string) {
	var typ []byte
	var block, delta vspan
	var hasBlock, hasDelta bool
	idx := 0
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "type":
			typ = rawStrAt(d, it.v)
		case "index":
			if n, ok := intAt(d, it.v); ok {
				idx = int(n)
			}
		case "content_block":
			block, hasBlock = it.v, true
		case "delta":
			delta, hasDelta = it.v, true
		}
	}
	if len(typ) == 0 {
		typ = []byte(name)
	}
	k := ToolCallKey{Index: idx}
	switch string(typ) {
	case "content_block_start":
		if !hasBlock {
			return
		}
		switch string(memberRaw(d, block, "type")) {
		case "tool_use", "server_tool_use":
		default:
			return
		}
		i := a.call(k)
		if i < 0 {
			return
		}
		a.touch(i)
		a.setIdentity(i, memberString(d, block, "id"), memberString(d, block, "name"))
		if in, ok := member(d, block, "input"); ok {
			a.calls[i].started = []byte(compactJSON(d[in.s:in.e]))
		}
	case "content_block_delta":
		if !hasDelta || string(memberRaw(d, delta, "type")) != "input_json_delta" {
			return
		}
		i := a.find(k)
		if i < 0 {
			// A fragment of a call whose start Bulwark did not see: a call
			// without a name, which policy can refuse.
			if i = a.call(k); i < 0 {
				return
			}
		}
		a.touch(i)
		if v, ok := member(d, delta, "partial_json"); ok && kindOf(d, v) == '"' {
			a.appendArgs(i, rawStrAt(d, v))
		}
	case "content_block_stop":
		if i := a.find(k); i >= 0 {
			a.complete(i)
		}
	case "message_delta", "message_stop", "error":
		a.completeAll()
	}
}

// ChoiceIndexes appends to dst the choice indexes an OpenAI chat or
// completions chunk carries (choices[].index, else the position), so that
// a proxy holding back one choice's events can hold every event of that
// choice (its texts must reach the redactor in order) and let the other
// choices flow. Other events append nothing.
func (p *ParsedEvent) ChoiceIndexes(dst []int) []int {
	d := p.d
	if p.err != nil || len(d) == 0 || d[0] != '{' {
		return dst
	}
	switch streamKind(p.api, d, p.ev.Name) {
	case OpenAIChat, OpenAICompletions:
	default:
		return dst
	}
	it := iterObject(d, 0)
	for it.next() {
		if string(it.keyRaw()) != "choices" {
			continue
		}
		ct := iterArray(d, it.v.s)
		for pos := 0; ct.next(); pos++ {
			if kindOf(d, ct.v) == '{' {
				dst = append(dst, memberInt(d, ct.v, "index", pos))
			}
		}
	}
	return dst
}
