package redact

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// safetyTerms are n synthetic terms (lower-case words of 5-12 letters, one
// in five a two-word phrase) that ordinary text does not contain.
func safetyTerms(n int) []string {
	rng := rand.New(rand.NewPCG(10, 10))
	word := func() string {
		b := make([]byte, 5+rng.IntN(8))
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return string(b)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = word()
		if i%5 == 0 {
			out[i] += " " + word()
		}
	}
	return out
}

// safetyAnswer is a 4 KiB answer: prose, CJK, emoji, planted values, and
// markdown with links and an image.
func safetyAnswer(english bool) string {
	md := "\n\nSee [the guide](https://docs.example.com/guide) and ![chart](https://evil.example/c.png?x=1).\n\n"
	var t string
	if english {
		// An English answer with code: ASCII, with capitals and markdown.
		para := "The Quarterly Report covers Revenue, churn and hiring plans; call `fetch(url)` with a timeout. "
		t = strings.Repeat(para, (4096-len(md))/len(para)+1)[:4096-len(md)]
	} else {
		t = buildText(7, 4096-len(md)) // prose, CJK, emoji, accents, planted values
	}
	return t[:len(t)/2] + md + t[len(t)/2:]
}

func benchScanners(b *testing.B) (base, rules *detect.Scanner) {
	b.Helper()
	var err error
	if base, err = detect.New(detect.Config{DisableInjection: true, Direction: detect.DirectionResponse}); err != nil {
		b.Fatal(err)
	}
	cr, err := detect.NewContentRules([]detect.ContentCategory{
		{Name: "blocked", Terms: safetyTerms(10_000), Directions: []detect.Direction{detect.DirectionResponse}, Action: detect.ContentDeny},
	}, detect.OutputSpec{Sanitize: true, AllowedLinkHosts: []string{"docs.example.com"}})
	if err != nil {
		b.Fatal(err)
	}
	if rules, err = detect.New(detect.Config{DisableInjection: true, Content: cr, Direction: detect.DirectionResponse}); err != nil {
		b.Fatal(err)
	}
	return base, rules
}

// abReport runs a then b alternately (A/B pairs, so machine load hits both
// alike) and reports each one's p50 and the p50 of the pairs' difference.
func abReport(b *testing.B, a, c func()) {
	b.Helper()
	da := make([]time.Duration, 0, b.N)
	dc := make([]time.Duration, 0, b.N)
	diff := make([]time.Duration, 0, b.N)
	for b.Loop() {
		t0 := time.Now()
		a()
		t1 := time.Now()
		c()
		t2 := time.Now()
		da, dc, diff = append(da, t1.Sub(t0)), append(dc, t2.Sub(t1)), append(diff, t2.Sub(t1)-t1.Sub(t0))
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds()) / 1000
	}
	pa, pc, pd := p50(da), p50(dc), p50(diff)
	b.ReportMetric(pa, "base-p50-µs")
	b.ReportMetric(pc, "safety-p50-µs")
	b.ReportMetric(pd, "added-p50-µs")
	b.ReportMetric(100*(pc-pa)/pa, "growth-%")
}

// BenchmarkSafety4KiB: content-safety rules with 10,000 terms and the
// markup sanitiser on a 4 KiB buffered answer (scan and rewrite, as the
// exchange does), against the same answer without them (issue 19: added
// cost <= 50 µs p50). Allocations are of the pair.
func BenchmarkSafety4KiB(b *testing.B) {
	base, rules := benchScanners(b)
	r := New(Rules{{Detector: detect.DetectorMarkup, Action: Remove}, {Action: Replace}}, nil)
	for _, english := range []bool{false, true} {
		name := "mixed"
		if english {
			name = "english"
		}
		b.Run(name, func(b *testing.B) {
			text := safetyAnswer(english)
			if out, _, _ := r.Text(rules, text, nil); strings.Contains(out, "evil.example") || !strings.Contains(out, "docs.example.com") {
				b.Fatalf("sanitiser did not run: %q", out)
			}
			b.ReportAllocs()
			abReport(b, func() { r.Text(base, text, nil) }, func() { r.Text(rules, text, nil) })
		})
	}
}

// BenchmarkSafetyStreamWrite: one 20-byte write of a streamed answer (as
// BenchmarkStreamWrite), without and with the rules (issue 19: per-chunk
// cost grows by <= 20 %).
func BenchmarkSafetyStreamWrite(b *testing.B) { streamWriteAB(b, benchText) }

// BenchmarkSafetyStreamWriteCode is BenchmarkSafetyStreamWrite on a coding
// answer: fenced HTML and code spans, whose code state the stream carries
// (issue 27).
func BenchmarkSafetyStreamWriteCode(b *testing.B) {
	const answer = "To embed an image in a page, use an img tag:\n\n```html\n<img src=\"https://example.com/cat.png\" alt=\"cat\">\n<a href=\"https://example.com/docs\">docs</a>\n```\n\n" +
		"In markdown, write `![cat](https://example.com/cat.png)` or a link such as `[docs](https://example.com/docs)`. The browser fetches the picture when it renders the page, and the link opens the documentation. "
	streamWriteAB(b, strings.Repeat(answer, 8))
}

func streamWriteAB(b *testing.B, text string) {
	base, rules := benchScanners(b)
	r := New(Rules{{Detector: detect.DetectorMarkup, Action: Remove}, {Action: Replace}}, nil)
	const piece = 20
	type run struct {
		st  *Stream
		off int
		sc  Scanner
	}
	step := func(x *run) {
		if x.off+piece > len(text) {
			if x.st != nil {
				x.st.Close()
			}
			var err error
			if x.st, err = r.NewStream(x.sc, StreamOptions{}); err != nil {
				b.Fatal(err)
			}
			x.off = 0
		}
		if _, err := x.st.WriteString(text[x.off : x.off+piece]); err != nil {
			b.Fatal(err)
		}
		x.off += piece
	}
	a, c := &run{sc: base, off: len(text)}, &run{sc: rules, off: len(text)}
	b.ReportAllocs()
	abReport(b, func() { step(a) }, func() { step(c) })
}
