package mcp

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrNotResponse is a server message that is not a JSON-RPC response (a
// notification or a request of the server's own, sent on an SSE stream).
var ErrNotResponse = errors.New("not a JSON-RPC response")

// Response is a server's JSON-RPC response, with its result kept raw until
// a method's reader needs it.
type Response struct {
	ID json.RawMessage
	// Result is the raw result (nil when the server answered an error).
	Result json.RawMessage
	// IsError: the server answered a JSON-RPC error; nothing to filter.
	IsError bool
}

// ParseResponse reads one server message. A message that is valid JSON-RPC
// but no response (a notification, a server request) gives ErrNotResponse.
func ParseResponse(body []byte) (*Response, error) {
	var m message
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("mcp response: %s", jsonError(err))
	}
	if m.JSONRPC == nil || *m.JSONRPC != JSONRPCVersion {
		return nil, errors.New(`mcp response: "jsonrpc" must be "2.0"`)
	}
	if m.Method != nil {
		return nil, ErrNotResponse
	}
	if m.Result == nil && m.Error == nil {
		return nil, errors.New("mcp response: neither result nor error")
	}
	return &Response{ID: bytes.TrimSpace(m.ID), Result: m.Result, IsError: m.Error != nil}, nil
}

// SameID reports whether a response's id is the request's: the same JSON
// value (1 and 1.0 are not; neither are 1 and "1").
func SameID(a, b json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b))
}

// Tool is one tool of a tools/list answer.
type Tool struct {
	Name string
	// Text is every string of the definition the model reads (description,
	// title, annotations, the schemas' descriptions), what the detectors
	// scan for hidden instructions.
	Text string
	// Hash fingerprints the whole definition (its compacted JSON), for
	// noticing that it changed within a session ("rug pull"). Whitespace
	// does not change it; key order does (servers write theirs in a fixed
	// order).
	Hash [sha256.Size]byte
	// Duplicate: an earlier tool of the same answer has this name with
	// another definition (a server naming two tools alike to confuse the
	// agent is flagged like a changed one).
	Duplicate bool

	raw json.RawMessage
}

// ToolsList is a tools/list answer, ready to be written back without some
// of its tools.
type ToolsList struct {
	Tools []Tool

	id     json.RawMessage
	result map[string]json.RawMessage
}

// ParseToolsList reads a tools/list response. The tools come back in the
// answer's order; the rest of the result (nextCursor, _meta) is kept.
func ParseToolsList(r *Response) (*ToolsList, error) {
	if r.IsError {
		return nil, errors.New("tools/list answered an error")
	}
	// r.Result was validated by ParseResponse's decode: split it without
	// validating again (scan.go).
	result := map[string]json.RawMessage{}
	var tools json.RawMessage
	if b := bytes.TrimSpace(r.Result); !bytes.Equal(b, []byte("null")) {
		err := eachMember(b, func(key string, val []byte) error {
			if key == "tools" {
				tools = val
			}
			result[key] = val
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("tools/list result: %w", err)
		}
	}
	l := &ToolsList{id: r.ID, result: result}
	if tools == nil || bytes.Equal(tools, []byte("null")) {
		return l, nil
	}
	seen := make(map[string][sha256.Size]byte, 64)
	var buf []byte
	err := eachElement(tools, func(raw []byte) error {
		var t Tool
		var err error
		t, buf, err = readTool(raw, buf[:0])
		if err != nil {
			return fmt.Errorf("tools/list tool %d: %w", len(l.Tools), err)
		}
		if h, ok := seen[t.Name]; ok && h != t.Hash {
			t.Duplicate = true
		}
		seen[t.Name] = t.Hash
		l.Tools = append(l.Tools, t)
		return nil
	})
	if err != nil {
		if strings.HasPrefix(err.Error(), "tools/list tool ") {
			return nil, err
		}
		return nil, fmt.Errorf("tools/list tools: %w", err)
	}
	return l, nil
}

// readTool reads one tool definition (raw is valid JSON: the list it came
// from was decoded) without decoding it into maps: its name, every string
// of it (keys too: a schema's property names are read by the model), and
// the hash of its compacted bytes. A listing holds hundreds of tools and
// is filtered on the answer's path, so this is one pass over the bytes.
func readTool(raw json.RawMessage, buf []byte) (Tool, []byte, error) {
	t := Tool{raw: raw}
	if b := bytes.TrimSpace(raw); len(b) == 0 || b[0] != '{' {
		return t, buf, errors.New("not an object")
	}
	var sb strings.Builder
	sb.Grow(len(raw) / 2)
	c := compactValid(buf, raw)
	buf = c
	depth, nameNext := 0, false
	for i := 0; i < len(c); i++ {
		switch c[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			end, s, err := jsonString(c, i)
			if err != nil {
				return t, buf, err
			}
			isKey := end+1 < len(c) && c[end+1] == ':'
			switch {
			case isKey && depth == 1 && s == "name":
				nameNext = true
			case nameNext && depth == 1 && !isKey:
				t.Name, nameNext = s, false
			default:
				nameNext = false
				sb.WriteString(s)
				sb.WriteByte('\n')
			}
			i = end
		}
	}
	if t.Name == "" {
		return t, buf, errors.New("no name")
	}
	t.Text = sb.String()
	t.Hash = sha256.Sum256(c)
	return t, buf, nil
}

// jsonString reads the string literal starting at b[i] (a '"'): the index
// of its closing quote and its value.
func jsonString(b []byte, i int) (int, string, error) {
	esc := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			esc = true
			j++
		case '"':
			if !esc {
				return j, string(b[i+1 : j]), nil
			}
			var s string
			if err := json.Unmarshal(b[i:j+1], &s); err != nil {
				return 0, "", fmt.Errorf("invalid string: %w", err)
			}
			return j, s, nil
		}
	}
	return 0, "", errors.New("unterminated string")
}

// Encode writes the answer back without the tools remove names. changed is
// false (and the body nil) when nothing was removed: the door forwards the
// server's bytes as they were.
func (l *ToolsList) Encode(remove func(name string) bool) (body []byte, removed int, err error) {
	keep := make([]json.RawMessage, 0, len(l.Tools))
	for _, t := range l.Tools {
		if remove(t.Name) {
			removed++
			continue
		}
		keep = append(keep, t.raw)
	}
	if removed == 0 {
		return nil, 0, nil
	}
	var buf bytes.Buffer
	buf.Grow(64 + sumLen(keep))
	buf.WriteString(`[`)
	for i, raw := range keep {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(raw)
	}
	buf.WriteString(`]`)
	// The envelope is written by hand around the server's own bytes (each
	// already validated by decoding): re-marshalling would re-check
	// every byte of every kept tool.
	keys := make([]string, 0, len(l.result))
	for k := range l.result {
		if k != "tools" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	id := l.id
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	var out bytes.Buffer
	out.Grow(buf.Len() + 64)
	out.WriteString(`{"jsonrpc":"2.0","id":`)
	out.Write(id)
	out.WriteString(`,"result":{`)
	for _, k := range keys {
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, 0, fmt.Errorf("mcp response: %w", err)
		}
		out.Write(kb)
		out.WriteByte(':')
		out.Write(l.result[k])
		out.WriteByte(',')
	}
	out.WriteString(`"tools":`)
	out.Write(buf.Bytes())
	out.WriteString(`}}`)
	return out.Bytes(), removed, nil
}

func sumLen(rs []json.RawMessage) int {
	n := 0
	for _, r := range rs {
		n += len(r) + 1
	}
	return n
}

func encodeResponse(id json.RawMessage, result any) ([]byte, error) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  any             `json:"result"`
	}{JSONRPCVersion, id, result})
	if err != nil {
		return nil, fmt.Errorf("mcp response: %w", err)
	}
	return b, nil
}

// CallResult is a server message's content the model will read: a
// tools/call, resources/read or prompts/get result (the content blocks'
// text, structured content, resource contents, prompt messages), or the
// params of a server request such as sampling/createMessage. Its strings
// are untrusted text.
type CallResult struct {
	id     json.RawMessage
	result any
	// method is set for a server request: Edit writes a request back.
	method string
}

// ParseCallResult reads a response's result, whichever method it answers.
func ParseCallResult(r *Response) (*CallResult, error) {
	if r.IsError {
		return nil, errors.New("the server answered an error")
	}
	v, err := decodeAny(r.Result)
	if err != nil {
		return nil, fmt.Errorf("result: %s", jsonError(err))
	}
	return &CallResult{id: r.ID, result: v}, nil
}

// ModelReads reports whether a server request's content goes to the
// client's model (sampling/createMessage): untrusted text to inspect like
// a tool's result.
func ModelReads(method string) bool { return method == MethodSamplingCreate }

// ParseServerRequest reads a message a server sends on an SSE stream that
// is not a response: its method and, for a request whose content the model
// reads (ModelReads), that content (nil for any other request or
// notification).
func ParseServerRequest(msg []byte) (method string, c *CallResult, err error) {
	var m message
	if err := json.Unmarshal(msg, &m); err != nil {
		return "", nil, fmt.Errorf("mcp server message: %s", jsonError(err))
	}
	if m.Method == nil {
		return "", nil, errors.New("mcp server message: no method")
	}
	if !ModelReads(*m.Method) {
		return *m.Method, nil, nil
	}
	var v any = map[string]any{}
	if len(m.Params) > 0 {
		if v, err = decodeAny(m.Params); err != nil {
			return "", nil, fmt.Errorf("mcp server message params: %s", jsonError(err))
		}
	}
	return *m.Method, &CallResult{id: bytes.TrimSpace(m.ID), result: v, method: *m.Method}, nil
}

func decodeAny(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// Text is every string of the result, one per line (keys excluded: the
// protocol's own field names), for the detectors.
func (c *CallResult) Text() string {
	var sb strings.Builder
	walkStrings(c.result, func(s string) string { sb.WriteString(s); sb.WriteByte('\n'); return s })
	return sb.String()
}

// Edit rewrites every string of the result with fn and encodes the
// response; changed is false when fn changed nothing.
func (c *CallResult) Edit(fn func(string) string) (body []byte, changed bool, err error) {
	c.result = walkStrings(c.result, func(s string) string {
		r := fn(s)
		changed = changed || r != s
		return r
	})
	if !changed {
		return nil, false, nil
	}
	if c.method != "" {
		b, err := encodeRequest(c.id, c.method, c.result)
		return b, err == nil, err
	}
	b, err := encodeResponse(c.id, c.result)
	return b, err == nil, err
}

func encodeRequest(id json.RawMessage, method string, params any) ([]byte, error) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  any             `json:"params"`
	}{JSONRPCVersion, id, method, params})
	if err != nil {
		return nil, fmt.Errorf("mcp request: %w", err)
	}
	return b, nil
}

func walkStrings(v any, fn func(string) string) any {
	switch x := v.(type) {
	case string:
		return fn(x)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys) // a stable order: detectors see the same text every time
		for _, k := range keys {
			x[k] = walkStrings(x[k], fn)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = walkStrings(e, fn)
		}
		return x
	}
	return v
}

// EncodeEvent writes a server-sent event carrying one JSON-RPC message
// (JSON holds no raw newline, so data is one line), keeping the event's
// name and id so a client resuming with Last-Event-ID still can.
func EncodeEvent(name, id string, data []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(data) + len(name) + len(id) + 24)
	if name != "" {
		b.WriteString("event: ")
		b.WriteString(oneLine(name))
		b.WriteByte('\n')
	}
	if id != "" {
		b.WriteString("id: ")
		b.WriteString(oneLine(id))
		b.WriteByte('\n')
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(bytes.TrimSuffix(line, []byte("\r")))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(s)
}
