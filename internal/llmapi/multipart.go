package llmapi

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"path"
	"strings"
)

// ErrMultipart means a multipart/form-data body does not follow RFC 7578
// closely enough to be inspected (no closing delimiter, a part without a
// blank line after its headers, an encoded part). It is refused rather
// than passed on uninspected.
var ErrMultipart = errors.New("llmapi: malformed multipart body")

// IsMultipart reports whether contentType is multipart/form-data, the
// encoding of file uploads (/v1/files, Batch API input files, audio).
func IsMultipart(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "multipart/form-data"
}

// ParseRequestBody is ParseRequest for a body of any content type: a
// multipart/form-data upload to a route that is not one of the JSON LLM
// APIs is read part by part (see multipart); any other body as
// ParseRequest reads it (the LLM APIs read JSON whatever the label).
func ParseRequestBody(api API, contentType string, body []byte) (*Request, error) {
	if api != Generic || !IsMultipart(contentType) {
		return ParseRequest(api, body)
	}
	sc := reqScanner{b: body, meta: true}
	if err := sc.multipart(contentType); err != nil {
		return nil, fmt.Errorf("parse multipart request: %w", err)
	}
	return &Request{API: api, Choices: 1, Messages: sc.texts.messages(body)}, nil
}

// EditRequestBody is EditRequest for a body of any content type; in a
// multipart upload only Text applies, to the texts ParseRequestBody reads.
func EditRequestBody(api API, contentType string, body []byte, e RequestEdit) ([]byte, bool, error) {
	if api != Generic || !IsMultipart(contentType) {
		return EditRequest(api, body, e)
	}
	sc := reqScanner{b: body}
	if err := sc.multipart(contentType); err != nil {
		return nil, false, fmt.Errorf("edit multipart request: %w", err)
	}
	ed := editor{b: body}
	if e.Text != nil {
		for _, t := range sc.texts.spans {
			ed.text(t, e.Text)
		}
	}
	out, changed, err := ed.result(Generic)
	if err != nil {
		return nil, false, fmt.Errorf("edit multipart request: %w", err)
	}
	_, params, _ := mime.ParseMediaType(contentType)
	delim := []byte("--" + params["boundary"])
	if changed && bytes.Count(out, delim) != bytes.Count(body, delim) {
		return nil, false, fmt.Errorf("edit multipart request: %w: a replacement contains the boundary", ErrMultipart)
	}
	return out, changed, nil
}

// multipart reads a multipart/form-data body: each part's content is
// located by offset in the body, so that edits splice into it. A part
// holding JSON Lines (a Batch API input file: one request per line, its
// "body" read as the API its "url" names) has each line read like a
// request; a JSON part is read as a Generic JSON body; any other text part
// is one text; binary parts (images, audio, PDFs) are not read.
func (r *reqScanner) multipart(contentType string) error {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("%w: content type: %w", ErrMultipart, err)
	}
	boundary := params["boundary"]
	if boundary == "" || len(boundary) > 200 {
		return fmt.Errorf("%w: no usable boundary", ErrMultipart)
	}
	b := r.b
	delim := []byte("--" + boundary)
	// The first delimiter may follow a preamble; later ones follow CRLF.
	i := bytes.Index(b, delim)
	if i < 0 {
		return fmt.Errorf("%w: no delimiter", ErrMultipart)
	}
	next := append([]byte("\r\n"), delim...)
	for {
		i += len(delim)
		if bytes.HasPrefix(b[i:], []byte("--")) {
			return nil // close delimiter
		}
		// Transport padding, then CRLF.
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if !bytes.HasPrefix(b[i:], []byte("\r\n")) {
			return fmt.Errorf("%w: delimiter not followed by CRLF", ErrMultipart)
		}
		i += 2
		he := bytes.Index(b[i:], []byte("\r\n\r\n"))
		var header []byte
		switch {
		case bytes.HasPrefix(b[i:], []byte("\r\n")):
			he = i // no headers
			i += 2
		case he < 0:
			return fmt.Errorf("%w: part headers do not end", ErrMultipart)
		default:
			header = b[i : i+he]
			he += i
			i = he + 4
		}
		end := bytes.Index(b[i:], next)
		if end < 0 {
			return fmt.Errorf("%w: no closing delimiter", ErrMultipart)
		}
		end += i
		if err := r.part(header, vspan{i, end}); err != nil {
			return err
		}
		i = end + 2
	}
}

// part reads one part's content at v, given its raw header block.
func (r *reqScanner) part(header []byte, v vspan) error {
	var ctype, filename, encoding string
	for _, line := range strings.Split(string(header), "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-type":
			ctype, _, _ = mime.ParseMediaType(value)
		case "content-transfer-encoding":
			encoding = strings.ToLower(value)
		case "content-disposition":
			if _, p, err := mime.ParseMediaType(value); err == nil {
				filename = p["filename"]
			}
		}
	}
	switch encoding {
	case "", "7bit", "8bit", "binary":
	default:
		// RFC 7578 deprecates it and no LLM API sends it; an encoded part
		// would hide its text from the detectors.
		return fmt.Errorf("%w: content-transfer-encoding %q", ErrMultipart, encoding)
	}
	content := r.b[v.s:v.e]
	if v.s == v.e || !isText(content) {
		return nil // binary: not read (README: what is inspected)
	}
	ext := strings.ToLower(path.Ext(filename))
	switch {
	case ext == ".jsonl" || ctype == "application/jsonl" || ctype == "application/x-ndjson" || ctype == "application/jsonlines":
		r.jsonLines(v)
	case ext == ".json" || ctype == "application/json" || strings.HasSuffix(ctype, "+json"):
		if validJSON(content) {
			r.sub(Generic, v)
		} else {
			r.texts.boundary()
			r.texts.add("user", v, textRaw)
		}
	default:
		r.texts.boundary()
		r.texts.add("user", v, textRaw)
	}
	return nil
}

// jsonLines reads each line of a JSON Lines file like a request: a Batch
// API line {"custom_id", "method", "url", "body"} has its body read as the
// API url names, any other JSON line as Generic, and a line that is not
// JSON as text.
func (r *reqScanner) jsonLines(v vspan) {
	b := r.b
	for s := v.s; s < v.e; {
		e := bytes.IndexByte(b[s:v.e], '\n')
		if e < 0 {
			e = v.e
		} else {
			e += s
		}
		line := trimSpan(b[s:e])
		ls := vspan{s + line.s, s + line.e}
		s = e + 1
		if ls.s == ls.e {
			continue
		}
		if !validJSON(b[ls.s:ls.e]) {
			r.texts.boundary()
			r.texts.add("user", ls, textRaw)
			continue
		}
		api, body := Generic, ls
		if b[ls.s] == '{' {
			if bv, ok := member(b, ls, "body"); ok && kindOf(b, bv) == '{' {
				if uv, ok := member(b, ls, "url"); ok {
					u, _ := strAt(b, uv)
					p, _, _ := strings.Cut(u, "?")
					api, body = DetectAPI(p), bv
				}
			}
		}
		r.sub(api, body)
		if body != ls {
			// The rest of the line (custom_id, url, metadata) too.
			r.subExcept(ls, body)
		}
	}
}

// sub reads the JSON value at v as a request body of api, adding its texts
// at their offsets in the whole body.
func (r *reqScanner) sub(api API, v vspan) {
	inner := reqScanner{b: r.b[v.s:v.e]}
	if err := inner.scan(api); err != nil {
		inner = reqScanner{b: r.b[v.s:v.e]}
		_ = inner.scan(Generic) // never fails
	}
	r.adopt(&inner, v.s)
}

// subExcept adds the strings of the line at ls outside the span skip, as
// the sweep of a request would.
func (r *reqScanner) subExcept(ls, skip vspan) {
	b := r.b
	r.texts.boundary()
	eachMemberString(b, ls, func(key []byte, s vspan) {
		if s.s >= skip.s && s.e <= skip.e {
			return
		}
		if skipValue(b, key, s) {
			return
		}
		r.addValue(RoleOther, key, s)
	})
}

// adopt appends inner's spans, shifted by off, keeping their grouping.
func (r *reqScanner) adopt(inner *reqScanner, off int) {
	last := -1
	for _, t := range inner.texts.spans {
		if t.group != last {
			r.texts.boundary()
			last = t.group
		}
		r.texts.add(t.role, vspan{t.v.s + off, t.v.e + off}, t.kind)
		added := &r.texts.spans[len(r.texts.spans)-1]
		added.a, added.z, added.turn = t.a, t.z, t.turn // a template turn's place in its prompt
	}
}
