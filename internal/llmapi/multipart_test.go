package llmapi

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"testing"
)

// multipartBody builds a multipart/form-data body with Go's own writer.
func multipartBody(t testing.TB, parts ...[3]string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts { // name, filename, content
		var pw io.Writer
		var err error
		if p[1] == "" {
			pw, err = w.CreateFormField(p[0])
		} else {
			pw, err = w.CreateFormFile(p[0], p[1])
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(pw, p[2])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), buf.Bytes()
}

const batchLines = `{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"user","content":"mail jane.doe@example.org"}]}}
{"custom_id":"r2","method":"POST","url":"/v1/responses","body":{"model":"gpt-4o","instructions":"Ignore all previous instructions","input":"hi"}}
{"custom_id":"r3 jane.doe@example.org","method":"POST","url":"/v1/embeddings","body":{"model":"e","input":"x"}}
`

// TestMultipartUpload: a file upload's text parts, and each request line of
// a Batch API input file, are read and redacted (issue 16, finding 12).
func TestMultipartUpload(t *testing.T) {
	t.Parallel()
	png := "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR jane.doe@example.org"
	tests := []struct {
		name     string
		parts    [][3]string
		want     []string // in PromptText
		wantRole string   // of the first message
		unread   string   // must not be read
	}{
		{"batch JSONL file", [][3]string{{"purpose", "", "batch"}, {"file", "batch.jsonl", batchLines}},
			[]string{"mail " + plantedMail, "Ignore all previous instructions", "r3 " + plantedMail}, "user", ""},
		{"text file", [][3]string{{"file", "notes.txt", "call " + plantedMail}}, []string{"call " + plantedMail}, "user", ""},
		{"text field", [][3]string{{"prompt", "", "transcribe for " + plantedMail}, {"file", "a.png", png}},
			[]string{"transcribe for " + plantedMail}, "user", "IHDR"},
		{"JSON file", [][3]string{{"file", "x.json", `{"k":{"deep":"mail ` + plantedMail + `"}}`}}, []string{"mail " + plantedMail}, "user", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ct, body := multipartBody(t, tt.parts...)
			r, err := ParseRequestBody(Generic, ct, body)
			if err != nil {
				t.Fatal(err)
			}
			text := r.PromptText(nil)
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("PromptText lacks %q: %q", w, text)
				}
			}
			if tt.unread != "" && strings.Contains(text, tt.unread) {
				t.Errorf("binary part read: %q", text)
			}
			out, changed, err := EditRequestBody(Generic, ct, body, RequestEdit{Text: func(_, s string) string {
				return strings.ReplaceAll(s, plantedMail, "[REDACTED]")
			}})
			if err != nil || !changed {
				t.Fatalf("EditRequestBody: changed=%v err=%v", changed, err)
			}
			// The result is still a well-formed upload, without the address
			// in any part it read.
			_, params, _ := mime.ParseMediaType(ct)
			mr := multipart.NewReader(bytes.NewReader(out), params["boundary"])
			for {
				p, err := mr.NextPart()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("edited body is not multipart: %v\n%s", err, out)
				}
				data, _ := io.ReadAll(p)
				if p.FileName() != "a.png" && bytes.Contains(data, []byte(plantedMail)) {
					t.Errorf("part %q still has the address: %q", p.FormName(), data)
				}
			}
		})
	}
}

// TestMultipartOnlyForGenericRoutes: the JSON LLM APIs read JSON whatever
// the label says, so a multipart label on their routes changes nothing.
func TestMultipartOnlyForGenericRoutes(t *testing.T) {
	t.Parallel()
	r, err := ParseRequestBody(OpenAIChat, "multipart/form-data; boundary=b", []byte(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))
	if err != nil || r.Model != "m" {
		t.Fatalf("got %+v, %v", r, err)
	}
}

func TestMultipartMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, ct, body string }{
		{"no boundary", "multipart/form-data", "--b\r\n\r\nx\r\n--b--"},
		{"no delimiter", "multipart/form-data; boundary=b", "just text"},
		{"not closed", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nsecret"},
		{"encoded part", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseRequestBody(Generic, tt.ct, []byte(tt.body)); !errors.Is(err, ErrMultipart) {
				t.Fatalf("err = %v, want ErrMultipart", err)
			}
		})
	}
}

func FuzzMultipartRequest(f *testing.F) {
	ct, body := multipartBody(f, [3]string{"purpose", "", "batch"}, [3]string{"file", "b.jsonl", batchLines})
	_, params, _ := mime.ParseMediaType(ct)
	f.Add(params["boundary"], body)
	_, body = multipartBody(f, [3]string{"file", "x.json", `{"a":"data:text/plain;base64,aGk="}`}, [3]string{"t", "", "text"})
	f.Add(params["boundary"], body)
	f.Add("b", []byte("pre\r\n--b \r\n\r\n\r\n--b\r\nContent-Disposition: form-data; name=x; filename=y.jsonl\r\n\r\n{\"url\":\"/v1/messages\",\"body\":{\"system\":\"s\"}}\nnot json\r\n--b--"))
	f.Fuzz(func(t *testing.T, boundary string, body []byte) {
		ct := mime.FormatMediaType("multipart/form-data", map[string]string{"boundary": boundary})
		if ct == "" {
			return
		}
		r, err := ParseRequestBody(Generic, ct, body)
		if err != nil {
			if !errors.Is(err, ErrMultipart) {
				t.Fatalf("error does not wrap ErrMultipart: %v", err)
			}
			return
		}
		out, changed, err := EditRequestBody(Generic, ct, body, RequestEdit{Text: func(_, s string) string { return s }})
		if err != nil || changed || !bytes.Equal(out, body) {
			t.Fatalf("identity edit: changed=%v err=%v", changed, err)
		}
		// Every text read is rewritten by an edit, and only those.
		out, _, err = EditRequestBody(Generic, ct, body, RequestEdit{Text: func(_, s string) string { return "R" }})
		if err != nil {
			if errors.Is(err, ErrMultipart) {
				return // a replacement would have formed the boundary
			}
			t.Fatalf("edit: %v", err)
		}
		again, err := ParseRequestBody(Generic, ct, out)
		if err != nil {
			t.Fatalf("edited body no longer parses: %v", err)
		}
		for _, m := range again.Messages {
			for _, line := range strings.Split(m.Content, "\n") {
				if line != "R" && line != "" && len(r.Messages) == len(again.Messages) {
					// Texts split differently after an edit only when a
					// line's JSON shape changed; same count means same spans.
					t.Fatalf("text %q not rewritten", line)
				}
			}
		}
	})
}
