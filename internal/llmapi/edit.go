package llmapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// RequestEdit describes the rewrites Bulwark applies to a request body:
// redaction of what the model reads, a cap on output length, usage
// reporting for streams, and a policy suffix on the system prompt. The zero
// value changes nothing.
type RequestEdit struct {
	// Text, when set, is applied to every text the model will read — the
	// same texts ParseRequest collects into Messages, each string or text
	// part separately, including the system prompt and tool-call arguments
	// — and its result replaces that text. role is the Message role the
	// text belongs to. Anthropic tool_use input is passed as compact JSON
	// text; if the result is not JSON of the same kind, Text is applied to
	// each string inside the input instead.
	Text func(role, text string) string
	// ClampMaxTokens, when > 0, sets the API's max-tokens field to
	// min(current, ClampMaxTokens), or to ClampMaxTokens when it is
	// absent, null or not a number (lenient upstreams coerce strings).
	// Chat clamps max_tokens and max_completion_tokens wherever present and
	// adds max_tokens when neither is; completions and Anthropic use
	// max_tokens; Responses max_output_tokens; embeddings and Generic have
	// none.
	ClampMaxTokens int64
	// IncludeUsage, for OpenAI chat and completions requests with stream
	// true, sets stream_options.include_usage to true (keeping any other
	// stream options), so that the stream ends with the usage Bulwark
	// needs to charge.
	IncludeUsage bool
	// SystemSuffix, when non-empty, is appended verbatim (include any
	// separator) to the system prompt: OpenAI chat's first system or
	// developer message (a new system message is inserted first when there
	// is none; array content gets a new text part), Anthropic's "system"
	// (a new text block when it is an array), Responses' "instructions".
	// Other APIs ignore it. Text is not applied to the suffix.
	SystemSuffix string
	// Model is the request's model id (Request.Model: for Bedrock, the
	// path's). For an InvokeModel body whose shape names no model family,
	// the family it names decides which field ClampMaxTokens adds
	// (max_gen_len for Llama, max_tokens for Mistral, …); see
	// Request.Capped.
	Model string
}

// Clamps reports whether RequestEdit.ClampMaxTokens applies to requests of
// api (it has a max-tokens field; embeddings and Generic do not).
func Clamps(api API) bool {
	if d := dialectOf(api); d != nil {
		return d.clamp != nil
	}
	return api != Generic && len(maxTokenKeys(api)) > 0
}

// EditRequest rewrites a request body of api as e describes. It returns the
// new body and whether anything changed; when nothing changed it returns
// body itself and false, so callers keep the original bytes. Every rewrite
// is a splice into the original: unknown fields, whitespace and numbers are
// preserved byte for byte and the output is always valid JSON (or, for
// Generic text bodies, Text's result). Duplicated keys are all rewritten.
func EditRequest(api API, body []byte, e RequestEdit) ([]byte, bool, error) {
	sc := reqScanner{b: body}
	if err := sc.scan(api); err != nil {
		return nil, false, fmt.Errorf("edit %s request: %w", api, err)
	}
	ed := editor{b: body, model: e.Model}
	if e.Text != nil {
		for _, t := range sc.texts.spans {
			ed.text(t, e.Text)
		}
	}
	if api.known() && api != Generic {
		if e.ClampMaxTokens > 0 {
			ed.clamp(api, &sc.top, e.ClampMaxTokens)
		}
		if e.IncludeUsage && (api == OpenAIChat || api == OpenAICompletions) {
			if v, ok := sc.top.last(kStream); ok && boolAt(body, v) {
				ed.includeUsage(&sc.top)
			}
		}
		if e.SystemSuffix != "" {
			ed.systemSuffix(api, &sc.top, e.SystemSuffix)
		}
	}
	out, changed, err := ed.result(api)
	if err != nil {
		return nil, false, fmt.Errorf("edit %s request: %w", api, err)
	}
	return out, changed, nil
}

// editor accumulates splices into one body. String replacements are kept
// as text by position until the end, so that a system suffix can be
// appended to an already redacted system prompt.
type editor struct {
	b        []byte
	strs     map[int]strEdit
	patches  []patch
	appended map[int]bool // closing brackets that already had a member or element added
	shifts   map[int]int  // textTurn: how much earlier turns' edits moved the rest of a string
	model    string       // RequestEdit.Model: an InvokeModel body's family when its shape names none
}

type strEdit struct {
	e    int
	text string
}

func (ed *editor) setString(v vspan, s string) {
	if ed.strs == nil {
		ed.strs = make(map[int]strEdit)
	}
	ed.strs[v.s] = strEdit{e: v.e, text: s}
}

// stringNow returns the string at v as edited so far.
func (ed *editor) stringNow(v vspan) string {
	if se, ok := ed.strs[v.s]; ok {
		return se.text
	}
	return unquote(ed.b[v.s:v.e])
}

func (ed *editor) replace(v vspan, text []byte) {
	ed.patches = append(ed.patches, patch{s: v.s, e: v.e, text: text})
}

func (ed *editor) insert(at int, text []byte) {
	ed.patches = append(ed.patches, patch{s: at, e: at, text: text})
}

// text applies fn to one text span.
func (ed *editor) text(t textSpan, fn func(role, text string) string) {
	b := ed.b
	switch t.kind {
	case textString:
		old := unquote(b[t.v.s:t.v.e])
		if nw := fn(t.role, old); nw != old {
			ed.setString(t.v, nw)
		}
	case textRaw:
		old := string(b[t.v.s:t.v.e])
		if nw := fn(t.role, old); nw != old {
			ed.replace(t.v, []byte(nw))
		}
	case textDataURL:
		url := unquote(b[t.v.s:t.v.e])
		old, _ := dataURLText(url)
		if nw := fn(t.role, old); nw != old {
			ed.setString(t.v, encodeDataURL(url, nw))
		}
	case textBase64:
		old, _ := decodeText(b[t.v.s+1 : t.v.e-1])
		if nw := fn(t.role, old); nw != old {
			ed.setString(t.v, base64.StdEncoding.EncodeToString([]byte(nw)))
		}
	case textTurn:
		// The turns of one prompt come in order; each edit keeps the
		// template's tokens around it and moves the later turns.
		now, d := ed.stringNow(t.v), ed.shifts[t.v.s]
		old := now[t.a+d : t.z+d]
		if nw := fn(t.role, old); nw != old {
			ed.setString(t.v, now[:t.a+d]+nw+now[t.z+d:])
			if ed.shifts == nil {
				ed.shifts = make(map[int]int)
			}
			ed.shifts[t.v.s] = d + len(nw) - len(old)
		}
	case textJSON:
		old := compactJSON(b[t.v.s:t.v.e])
		nw := fn(t.role, old)
		if nw == old {
			return
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(nw)); err == nil && buf.Len() > 0 && buf.Bytes()[0] == b[t.v.s] {
			ed.replace(t.v, buf.Bytes())
			return
		}
		eachStringValue(b, t.v, func(s vspan) {
			o := unquote(b[s.s:s.e])
			if n := fn(t.role, o); n != o {
				ed.setString(s, n)
			}
		})
	}
}

// within reports whether offset at lies inside a value one of ps replaces.
func within(ps []patch, at int) bool {
	for _, p := range ps {
		if p.s < p.e && p.s <= at && at < p.e {
			return true
		}
	}
	return false
}

// appendAt inserts text before the closing bracket at end-1 of a
// container, after a comma when the container has (or has been given)
// members.
func (ed *editor) appendAt(end int, nonEmpty bool, text []byte) {
	at := end - 1
	if nonEmpty || ed.appended[at] {
		text = append([]byte{','}, text...)
	}
	if ed.appended == nil {
		ed.appended = make(map[int]bool)
	}
	ed.appended[at] = true
	ed.insert(at, text)
}

// insertMember adds "key":value to the object at obj, before its '}'.
func (ed *editor) insertMember(obj vspan, nonEmpty bool, key string, value []byte) {
	buf := appendQuote(nil, key)
	buf = append(buf, ':')
	ed.appendAt(obj.e, nonEmpty, append(buf, value...))
}

// appendElem adds value to the array at arr, before its ']'.
func (ed *editor) appendElem(arr vspan, value []byte) {
	it := iterArray(ed.b, arr.s)
	for it.next() {
	}
	ed.appendAt(arr.e, it.n > 0, value)
}

// clamp caps the API's max-tokens field(s).
func (ed *editor) clamp(api API, top *topFields, limit int64) {
	if d := dialectOf(api); d != nil {
		if d.clamp != nil {
			d.clamp(ed, top, limit)
		}
		return
	}
	b := ed.b
	keys := maxTokenKeys(api)
	if api == Generic || len(keys) == 0 {
		return
	}
	present := false
	val := []byte(strconv.FormatInt(limit, 10))
	for _, k := range keys {
		for _, v := range top.f[k] {
			present = true
			if withinLimit(b, v, limit) {
				continue
			}
			ed.replace(v, val)
		}
	}
	if !present {
		name := "max_tokens"
		if api == OpenAIResponses {
			name = "max_output_tokens"
		}
		ed.insertMember(top.obj, top.members > 0, name, val)
	}
}

// withinLimit reports whether the value at v is an integral number no
// greater than limit (100, 1e2 and -1 are; 100.5, "100", null and 1e400
// are not), i.e. whether a clamp can leave it alone.
func withinLimit(b []byte, v vspan, limit int64) bool {
	c := kindOf(b, v)
	if c != '-' && (c < '0' || c > '9') {
		return false
	}
	tok := string(b[v.s:v.e])
	if n, err := strconv.ParseInt(tok, 10, 64); err == nil {
		return n <= limit
	}
	f, err := strconv.ParseFloat(tok, 64)
	return err == nil && f == math.Trunc(f) && f <= float64(limit)
}

// includeUsage sets stream_options.include_usage to true.
func (ed *editor) includeUsage(top *topFields) {
	b := ed.b
	opts := top.f[kStreamOptions]
	if len(opts) == 0 {
		ed.insertMember(top.obj, top.members > 0, "stream_options", []byte(`{"include_usage":true}`))
		return
	}
	for _, v := range opts {
		if kindOf(b, v) != '{' {
			ed.replace(v, []byte(`{"include_usage":true}`))
			continue
		}
		found := false
		it := iterObject(b, v.s)
		for it.next() {
			if string(it.keyRaw()) == "include_usage" {
				found = true
				if !boolAt(b, it.v) {
					ed.replace(it.v, []byte("true"))
				}
			}
		}
		if !found {
			ed.insertMember(v, it.n > 0, "include_usage", []byte("true"))
		}
	}
}

// systemSuffix appends suffix to the API's system prompt.
func (ed *editor) systemSuffix(api API, top *topFields, suffix string) {
	if d := dialectOf(api); d != nil {
		if d.systemSuffix != nil {
			d.systemSuffix(ed, top, suffix)
		}
		return
	}
	b := ed.b
	switch api {
	case OpenAIChat:
		for _, ms := range top.f[kMessages] {
			if kindOf(b, ms) != '[' {
				continue
			}
			if !ed.chatSystemSuffix(ms, suffix) {
				msg := append([]byte(`{"role":"system","content":`), quote(suffix)...)
				msg = append(msg, '}')
				if it := iterArray(b, ms.s); it.next() {
					msg = append(msg, ',')
				}
				ed.insert(ms.s+1, msg)
			}
		}
	case AnthropicMessages:
		if len(top.f[kSystem]) == 0 {
			ed.insertMember(top.obj, top.members > 0, "system", quote(suffix))
		}
		for _, v := range top.f[kSystem] {
			ed.appendText(v, suffix, []byte(`{"type":"text","text":`))
		}
	case OpenAIResponses:
		if len(top.f[kInstructions]) == 0 {
			ed.insertMember(top.obj, top.members > 0, "instructions", quote(suffix))
		}
		for _, v := range top.f[kInstructions] {
			ed.appendText(v, suffix, []byte(`{"role":"system","content":`))
		}
	}
}

// appendText appends suffix to string content at v, adds an element
// elemPrefix+suffix+"}" to array content, and replaces anything else.
func (ed *editor) appendText(v vspan, suffix string, elemPrefix []byte) {
	switch kindOf(ed.b, v) {
	case '"':
		ed.setString(v, ed.stringNow(v)+suffix)
	case '[':
		elem := append(append([]byte(nil), elemPrefix...), quote(suffix)...)
		ed.appendElem(v, append(elem, '}'))
	default:
		ed.replace(v, quote(suffix))
	}
}

// chatSystemSuffix appends suffix to the first system or developer message
// of the messages array ms, reporting whether there was one.
func (ed *editor) chatSystemSuffix(ms vspan, suffix string) bool {
	b := ed.b
	it := iterArray(b, ms.s)
	for it.next() {
		if kindOf(b, it.v) != '{' {
			continue
		}
		if role := roleAt(b, it.v); role != "system" && role != "developer" {
			continue
		}
		found := false
		mt := iterObject(b, it.v.s)
		for mt.next() {
			if string(mt.keyRaw()) == "content" {
				found = true
				ed.appendText(mt.v, suffix, []byte(`{"type":"text","text":`))
			}
		}
		if !found {
			ed.insertMember(it.v, mt.n > 0, "content", quote(suffix))
		}
		return true
	}
	return false
}

// result applies every edit. It refuses to return invalid JSON for a JSON
// body, which would mean a bug here rather than bad input.
func (ed *editor) result(api API) ([]byte, bool, error) {
	replaced := len(ed.patches)
	for s, se := range ed.strs {
		if within(ed.patches[:replaced], s) {
			continue // inside a value replaced whole (a clamp of a malformed field): gone anyway
		}
		ed.patches = append(ed.patches, patch{s: s, e: se.e, text: quote(se.text)})
	}
	if len(ed.patches) == 0 {
		return ed.b, false, nil
	}
	out, err := applyPatches(ed.b, ed.patches)
	if err != nil {
		return nil, false, err
	}
	if bytes.Equal(out, ed.b) {
		return ed.b, false, nil
	}
	wasJSON := api.known() && api != Generic || validJSON(ed.b)
	if wasJSON && !validJSON(out) {
		return nil, false, fmt.Errorf("rewrite produced invalid JSON")
	}
	return out, true, nil
}
