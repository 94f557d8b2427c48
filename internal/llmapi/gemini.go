package llmapi

import (
	"bytes"
	"net/http"
	"strconv"
)

// Google Gemini (the Gemini API and Vertex AI): generateContent and
// streamGenerateContent.
//
// Request: {"systemInstruction":{"parts":[{"text"}]}, "contents":[{"role":
// "user"|"model", "parts":[{"text"} | {"functionCall":{"name","args"}} |
// {"functionResponse":{"name","response"}} | {"inlineData"} | …]}],
// "tools":[{"functionDeclarations":[{"name","description","parameters"}]}],
// "generationConfig":{"maxOutputTokens","candidateCount",…}}; the protobuf
// JSON mapping also accepts snake_case names, which are read too. The model
// is in the path. Answer (and every streamed chunk): {"candidates":[
// {"content":{"role","parts":[…]}, "finishReason", "index"}],
// "usageMetadata":{"promptTokenCount","candidatesTokenCount",
// "totalTokenCount"}, "modelVersion", "responseId"}. Errors: {"error":
// {"code","message","status"}}.

var geminiGenerate = dialect{
	scanRequest: (*reqScanner).gemini,
	clamp:       geminiClamp,
	systemSuffix: func(ed *editor, top *topFields, suffix string) {
		key := "systemInstruction"
		it := iterObject(ed.b, top.obj.s)
		for it.next() {
			if string(it.keyRaw()) == "system_instruction" {
				key = "system_instruction"
			}
		}
		ed.appendBlock(top, key, "parts", suffix)
	},
	scanResponse: (*respScanner).gemini,
	decodeEvent:  decodeGeminiEvent,
	filterEvent:  (*eventFilter).geminiEvent,
	ends:         geminiEnds,
	channelEvent: geminiChannelEvent,
	toolEvent:    geminiToolEvent,
	errorBody:    geminiErrorBody,
	errorEvent:   geminiErrorEvent,
}

// either reports whether k is the camelCase or snake_case name.
func either(k []byte, camel, snake string) bool {
	return string(k) == camel || string(k) == snake
}

// geminiRole maps "model" to "assistant", so that role filters and
// policies use one vocabulary across providers.
func geminiRole(b []byte, obj vspan) string {
	role := roleAt(b, obj)
	switch role {
	case "model":
		return "assistant"
	case "":
		return "user"
	}
	return role
}

// gemini reads the system instruction, the contents, the tools and the
// generation limits of a request.
func (r *reqScanner) gemini() {
	b := r.b
	it := iterObject(b, r.top.obj.s)
	for it.next() {
		k := it.keyRaw()
		switch {
		case either(k, "systemInstruction", "system_instruction"):
			r.texts.boundary()
			if p, ok := member(b, it.v, "parts"); ok {
				r.geminiParts("system", p)
			}
		case string(k) == "contents":
			ct := iterArray(b, it.v.s)
			for ct.next() {
				if kindOf(b, ct.v) != '{' {
					continue
				}
				r.texts.boundary()
				role := geminiRole(b, ct.v)
				if p, ok := member(b, ct.v, "parts"); ok {
					r.geminiParts(role, p)
				}
			}
		case either(k, "generationConfig", "generation_config"):
			if !r.meta {
				continue
			}
			gt := iterObject(b, it.v.s)
			for gt.next() {
				gk := gt.keyRaw()
				n, ok := intAt(b, gt.v)
				switch {
				case !ok:
				case either(gk, "maxOutputTokens", "max_output_tokens"):
					r.maxTokens = max(n, 0)
				case either(gk, "candidateCount", "candidate_count"):
					r.choices = max(r.choices, n)
				}
			}
		case string(k) == "tools" && r.meta:
			tt := iterArray(b, it.v.s)
			for tt.next() {
				ft := iterObject(b, tt.v.s)
				for ft.next() {
					if !either(ft.keyRaw(), "functionDeclarations", "function_declarations") {
						continue
					}
					dt := iterArray(b, ft.v.s)
					for dt.next() {
						if name := memberString(b, dt.v, "name"); name != "" {
							r.tools = append(r.tools, Tool{Name: name, Type: "function", Description: memberString(b, dt.v, "description")})
						}
					}
				}
			}
		}
	}
}

// geminiParts reads parts: text, functionCall args (JSON text, a tool
// call), functionResponse response (role "tool").
func (r *reqScanner) geminiParts(role string, v vspan) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		if kindOf(b, it.v) != '{' {
			continue
		}
		pt := iterObject(b, it.v.s)
		for pt.next() {
			k := pt.keyRaw()
			switch {
			case string(k) == "text":
				r.texts.addString(b, role, pt.v)
			case either(k, "functionCall", "function_call"):
				tc := ToolCall{ID: memberString(b, pt.v, "id"), Name: memberString(b, pt.v, "name")}
				if args, ok := member(b, pt.v, "args"); ok {
					r.texts.add(role, args, textJSON)
					if r.meta {
						tc.Arguments = compactJSON(b[args.s:args.e])
					}
				}
				r.addToolCall(tc)
			case either(k, "functionResponse", "function_response"):
				if resp, ok := member(b, pt.v, "response"); ok {
					r.texts.add("tool", resp, textJSON)
				}
			}
		}
	}
}

// geminiClamp caps generationConfig.maxOutputTokens (either spelling of
// either name), adding it when absent.
func geminiClamp(ed *editor, top *topFields, limit int64) {
	b := ed.b
	val := strconv.AppendInt(nil, limit, 10)
	found := false
	it := iterObject(b, top.obj.s)
	for it.next() {
		if !either(it.keyRaw(), "generationConfig", "generation_config") {
			continue
		}
		found = true
		if kindOf(b, it.v) != '{' {
			ed.replace(it.v, append(append([]byte(`{"maxOutputTokens":`), val...), '}'))
			continue
		}
		present := false
		gt := iterObject(b, it.v.s)
		for gt.next() {
			if either(gt.keyRaw(), "maxOutputTokens", "max_output_tokens") {
				present = true
				if !withinLimit(b, gt.v, limit) {
					ed.replace(gt.v, val)
				}
			}
		}
		if !present {
			ed.insertMember(it.v, gt.n > 0, "maxOutputTokens", val)
		}
	}
	if !found {
		ed.insertMember(top.obj, top.members > 0, "generationConfig", append(append([]byte(`{"maxOutputTokens":`), val...), '}'))
	}
}

// gemini reads an answer (or one streamed chunk, which has the same shape).
func (r *respScanner) gemini(top vspan) {
	b := r.b
	it := iterObject(b, top.s)
	for it.next() {
		k := it.keyRaw()
		switch {
		case string(k) == "candidates":
			ct := iterArray(b, it.v.s)
			for ct.next() {
				if kindOf(b, ct.v) != '{' {
					continue
				}
				r.texts.boundary()
				cand := iterObject(b, ct.v.s)
				for cand.next() {
					ck := cand.keyRaw()
					switch {
					case string(ck) == "content":
						if p, ok := member(b, cand.v, "parts"); ok {
							r.geminiParts(p)
						}
					case either(ck, "finishReason", "finish_reason"):
						if !r.finishSet {
							r.finish, _ = strAt(b, cand.v)
							r.finishSet = true
						}
					}
				}
			}
		case either(k, "usageMetadata", "usage_metadata"):
			if r.meta {
				r.usage = geminiUsage(b, it.v)
			}
		case either(k, "modelVersion", "model_version"):
			r.model, _ = strAt(b, it.v)
		}
	}
}

func (r *respScanner) geminiParts(v vspan) {
	b := r.b
	it := iterArray(b, v.s)
	for it.next() {
		pt := iterObject(b, it.v.s)
		for pt.next() {
			k := pt.keyRaw()
			switch {
			case string(k) == "text":
				r.texts.addString(b, "assistant", pt.v)
			case either(k, "functionCall", "function_call") && r.meta:
				tc := ToolCall{ID: memberString(b, pt.v, "id"), Name: memberString(b, pt.v, "name")}
				if args, ok := member(b, pt.v, "args"); ok {
					tc.Arguments = compactJSON(b[args.s:args.e])
				}
				r.toolCalls = append(r.toolCalls, tc)
			}
		}
	}
}

// geminiUsage reads usageMetadata. Thinking tokens are billed as output.
func geminiUsage(b []byte, v vspan) *Usage {
	if kindOf(b, v) != '{' {
		return nil
	}
	var u Usage
	var thoughts int64
	it := iterObject(b, v.s)
	for it.next() {
		n, ok := intAt(b, it.v)
		if !ok {
			continue
		}
		k := it.keyRaw()
		switch {
		case either(k, "promptTokenCount", "prompt_token_count"):
			u.PromptTokens = n
		case either(k, "candidatesTokenCount", "candidates_token_count"):
			u.CompletionTokens = n
		case either(k, "thoughtsTokenCount", "thoughts_token_count"):
			thoughts = n
		case either(k, "totalTokenCount", "total_token_count"):
			u.TotalTokens = n
		}
	}
	u.CompletionTokens += thoughts
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return &u
}

func decodeGeminiEvent(_ Event, d []byte, meta bool) Delta {
	var out Delta
	it := iterObject(d, 0)
	for it.next() {
		k := it.keyRaw()
		switch {
		case string(k) == "error":
			out.Error, out.Done = true, true
		case string(k) == "candidates":
			ct := iterArray(d, it.v.s)
			if !ct.next() {
				break
			}
			cand := iterObject(d, ct.v.s)
			for cand.next() {
				ck := cand.keyRaw()
				switch {
				case string(ck) == "index":
					if n, ok := intAt(d, cand.v); ok {
						out.Index = int(n)
					}
				case either(ck, "finishReason", "finish_reason"):
					out.FinishReason, _ = strAt(d, cand.v)
				case string(ck) == "content":
					p, ok := member(d, cand.v, "parts")
					if !ok {
						continue
					}
					pt := iterArray(d, p.s)
					for pt.next() {
						if t, ok := member(d, pt.v, "text"); ok && kindOf(d, t) == '"' {
							s, _ := textAt(d, t, meta)
							out.Text += s
							out.HasText = true
						}
						if meta || out.ToolCall != nil {
							continue // Meta reads no tool call: no second walk of the part
						}
						if fc, ok := member(d, pt.v, "functionCall"); ok {
							tc := ToolCall{ID: memberString(d, fc, "id"), Name: memberString(d, fc, "name")}
							if args, ok := member(d, fc, "args"); ok {
								tc.Arguments = compactJSON(d[args.s:args.e])
							}
							out.ToolCall = &tc
						}
					}
				}
			}
		case either(k, "usageMetadata", "usage_metadata"):
			out.Usage = geminiUsage(d, it.v)
		}
	}
	return out
}

// geminiEvent filters a streamed chunk: each candidate's text parts are
// one channel (clients concatenate them); everything else is filtered
// whole.
func (f *eventFilter) geminiEvent(Event) {
	d := f.b
	it := iterObject(d, 0)
	for it.next() {
		k := it.keyRaw()
		if geminiSafeKey(k) && kindOf(d, it.v) == '"' || geminiUsageKey(k) && kindOf(d, it.v) == '{' {
			continue
		}
		if string(k) != "candidates" || kindOf(d, it.v) != '[' {
			f.whole(it.v, k)
			continue
		}
		ct := iterArray(d, it.v.s)
		for pos := 0; ct.next(); pos++ {
			if kindOf(d, ct.v) != '{' {
				f.whole(ct.v, k)
				continue
			}
			// One pass over the candidate: its texts are filtered once its
			// index (which Gemini writes after the content) is known.
			idx := pos
			var texts [4]vspan
			found := texts[:0]
			cand := iterObject(d, ct.v.s)
			for cand.next() {
				ck := cand.keyRaw()
				if geminiSafeKey(ck) && kindOf(d, cand.v) == '"' {
					continue
				}
				if string(ck) == "index" {
					if n, ok := intAt(d, cand.v); ok {
						idx = int(n)
					}
					continue
				}
				if string(ck) != "content" || kindOf(d, cand.v) != '{' {
					f.whole(cand.v, ck)
					continue
				}
				cont := iterObject(d, cand.v.s)
				for cont.next() {
					pk := cont.keyRaw()
					if string(pk) != "parts" || kindOf(d, cont.v) != '[' {
						f.whole(cont.v, pk)
						continue
					}
					pt := iterArray(d, cont.v.s)
					for pt.next() {
						if kindOf(d, pt.v) != '{' {
							f.whole(pt.v, pk)
							continue
						}
						part := iterObject(d, pt.v.s)
						for part.next() {
							tk := part.keyRaw()
							if string(tk) == "text" {
								found = append(found, part.v)
								continue
							}
							f.whole(part.v, tk)
						}
					}
				}
			}
			for _, v := range found {
				f.delta(v, []byte("text"), Channel{Field: FieldText, Index: idx})
			}
		}
	}
}

// geminiSafeKey: like SafeKey, the identifiers and enums Google's servers
// (not the model) write in a chunk, which every chunk repeats and the
// output filter need not read: the model version, the response id, the
// finish reason.
func geminiSafeKey(k []byte) bool {
	switch string(k) {
	case "modelVersion", "model_version", "responseId", "response_id", "finishReason", "finish_reason":
		return true
	}
	return false
}

// geminiUsageKey: usageMetadata holds only token counts and enums
// (promptTokensDetails' modality, trafficType) that Google's servers
// write; most chunks repeat it, and the output filter need not walk it.
func geminiUsageKey(k []byte) bool {
	return string(k) == "usageMetadata" || string(k) == "usage_metadata"
}

// geminiEnds: the closing bracket of a streamed array and an error end
// every channel; a candidate with a finishReason ends its own.
func geminiEnds(ev Event, d []byte) (bool, []int) {
	if isArrayClose(ev) {
		return true, nil
	}
	if len(d) == 0 {
		return false, nil
	}
	// Most chunks end nothing: only a finishReason or an error does, and
	// their names are found without walking the chunk (a \u escape could
	// spell either: then the walk decides).
	if !bytes.Contains(d, []byte("inishReason")) && !bytes.Contains(d, []byte("inish_reason")) &&
		!bytes.Contains(d, []byte(`"error"`)) && !hasUnicodeEscape(d) {
		return false, nil
	}
	var idx []int
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "error":
			return true, nil
		case "candidates":
			ct := iterArray(d, it.v.s)
			for pos := 0; ct.next(); pos++ {
				// One pass over the candidate: finishReason and index.
				finished, i := false, pos
				cand := iterObject(d, ct.v.s)
				for cand.next() {
					ck := cand.keyRaw()
					switch {
					case either(ck, "finishReason", "finish_reason"):
						finished = kindOf(d, cand.v) == '"' && cand.v.e-cand.v.s > 2
					case string(ck) == "index":
						if n, ok := intAt(d, cand.v); ok {
							i = int(n)
						}
					}
				}
				if finished {
					idx = append(idx, i)
				}
			}
		}
	}
	return false, idx
}

// geminiChannelEvent synthesises a chunk carrying text for one candidate,
// in the template's framing (an array element gets a "," before it).
func geminiChannelEvent(template Event, ch Channel, text string) (Event, error) {
	out := append([]byte(`{"candidates":[{"content":{"role":"model","parts":[{"text":`), appendQuote(nil, text)...)
	out = append(out, `}]},"index":`...)
	out = strconv.AppendInt(out, int64(ch.Index), 10)
	out = append(out, `}]}`...)
	ev := Event{Data: out}
	if inArray(template) {
		ev.wire = &arrayWire{prefix: []byte(",\r\n")}
	}
	ev.Raw = ev.Encode()
	return ev, nil
}

// geminiStatus is the google.rpc.Code name Google's APIs pair with status.
func geminiStatus(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case status == http.StatusForbidden:
		return "PERMISSION_DENIED"
	case status == http.StatusNotFound:
		return "NOT_FOUND"
	case status == http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case status == http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case status >= 500:
		return "INTERNAL"
	}
	return "INVALID_ARGUMENT"
}

// geminiErrorBody is Google's error shape, the reason in an ErrorInfo
// detail: {"error":{"code","message","status","details":[…]}}.
func geminiErrorBody(status int, reason, message string) []byte {
	b := append([]byte(nil), `{"error":{"code":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"message":`...)
	b = appendQuote(b, message)
	b = append(b, `,"status":"`...)
	b = append(b, geminiStatus(status)...)
	b = append(b, '"')
	if reason != "" {
		b = append(b, `,"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":`...)
		b = appendQuote(b, reason)
		b = append(b, `,"domain":"bulwark"}]`...)
	}
	return append(b, "}}"...)
}

// geminiErrorEvent ends a stream with the error: an SSE event, or the last
// element of a streamed array, closing it.
func geminiErrorEvent(fr Framing, status int, reason, message string) []byte {
	body := geminiErrorBody(status, reason, message)
	if fr == FramingJSONArray {
		b := append([]byte(",\r\n"), body...)
		return append(b, "\n]"...)
	}
	b := append([]byte("data: "), body...)
	return append(b, "\n\n"...)
}

// geminiToolEvent follows the tool calls of a streamed answer. Gemini sends
// each functionCall part whole (name and args) in one chunk, so a call is
// complete in the event that carries it: the event is decided before it
// goes on. The closing bracket of a streamed array and an error complete
// whatever is open.
func geminiToolEvent(a *ToolCallAssembler, ev Event, d []byte) {
	if isArrayClose(ev) {
		a.completeAll()
		return
	}
	if len(d) == 0 || d[0] != '{' {
		return
	}
	if a.open == 0 && !bytes.Contains(d, []byte("unctionCall")) && !bytes.Contains(d, []byte("unction_call")) && !hasUnicodeEscape(d) {
		return // the common case: text, usage
	}
	it := iterObject(d, 0)
	for it.next() {
		switch string(it.keyRaw()) {
		case "error":
			a.completeAll()
		case "candidates":
			ct := iterArray(d, it.v.s)
			for pos := 0; ct.next(); pos++ {
				if kindOf(d, ct.v) == '{' {
					a.geminiCandidate(d, ct.v, pos)
				}
			}
		}
	}
}

// geminiCandidate reads the functionCall parts of one candidate (its
// index, which Gemini writes after the content, found in the same pass).
func (a *ToolCallAssembler) geminiCandidate(d []byte, cand vspan, pos int) {
	idx := pos
	var buf [4]vspan
	calls := buf[:0]
	ct := iterObject(d, cand.s)
	for ct.next() {
		switch string(ct.keyRaw()) {
		case "index":
			if n, ok := intAt(d, ct.v); ok {
				idx = int(n)
			}
		case "content":
			p, ok := member(d, ct.v, "parts")
			if !ok {
				continue
			}
			pt := iterArray(d, p.s)
			for pt.next() {
				if kindOf(d, pt.v) != '{' {
					continue
				}
				part := iterObject(d, pt.v.s)
				for part.next() {
					if either(part.keyRaw(), "functionCall", "function_call") && kindOf(d, part.v) == '{' {
						calls = append(calls, part.v)
					}
				}
			}
		}
	}
	for sub, fc := range calls {
		i := a.call(ToolCallKey{Index: idx, Sub: sub})
		if i < 0 {
			return
		}
		a.touch(i)
		a.setIdentity(i, memberString(d, fc, "id"), memberString(d, fc, "name"))
		if args, ok := member(d, fc, "args"); ok {
			a.appendArgs(i, []byte(compactJSON(d[args.s:args.e])))
		}
		a.complete(i)
	}
}
