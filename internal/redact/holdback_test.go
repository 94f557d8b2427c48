package redact

import (
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// maxTrail is how far, in bytes, the text a client has received may trail
// what the model sent when the text is ordinary prose (issue 27).
const maxTrail = 64

// TestStreamHoldBackProse streams a few paragraphs of English and of ten
// other languages in small events: after every event, the text released so
// far trails the text written by at most maxTrail bytes, and the output is
// the input unchanged.
func TestStreamHoldBackProse(t *testing.T) {
	t.Parallel()
	prose, err := os.ReadFile("testdata/prose.txt")
	if err != nil {
		t.Fatal(err)
	}
	sc := scanner(t)
	r := New(testRules, []byte("k"))
	for _, tt := range []struct {
		name string
		opt  StreamOptions
		mode int // split mode, see split
	}{
		{"bytes/defaults", StreamOptions{}, 0},
		{"inside characters/defaults", StreamOptions{}, 1},
		{"token sized/defaults", StreamOptions{}, 2},
		{"token sized/canary", StreamOptions{Literals: testLiterals}, 2},
		{"token sized/step 16", StreamOptions{Step: 16, Lookahead: 256}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, err := r.NewStream(sc, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			fed, worst, sum, n := 0, 0, 0, 0
			for _, p := range split(string(prose), rand.New(rand.NewPCG(3, uint64(tt.mode))), tt.mode) {
				w, err := st.WriteString(p)
				if err != nil {
					t.Fatal(err)
				}
				got.WriteString(w.Text)
				fed += len(p)
				trail := fed - got.Len()
				if trail > maxTrail {
					t.Fatalf("after %d bytes, %d received: trails by %d > %d, at %q", fed, got.Len(), trail, maxTrail, prose[max(0, fed-trail):fed])
				}
				worst, sum, n = max(worst, trail), sum+trail, n+1
			}
			got.WriteString(st.Close().Text)
			if got.String() != string(prose) {
				t.Errorf("prose changed:\n got %q\nwant %q", got.String(), prose)
			}
			t.Logf("held back: max %d, mean %.1f bytes over %d events", worst, float64(sum)/float64(n), n)
		})
	}
}

// TestStreamHoldBackFindings splits values around the text they sit in at
// every byte: early release must not let any of them out, and each is
// reported once, as a Write of the whole text reports it.
func TestStreamHoldBackFindings(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, nil)
	pem, _ := pemBlock(21, 4, "\n")
	values := append([]sensitive{
		{"call me on ", "+44 20 7946 0958", " tomorrow after lunch please. "},
		{"phone: ", "(415) 555-0132", " is the desk line we use. "},
		{"our IBAN is ", "GB82 WEST 1234 5698 7654 32", " for the transfer now. "},
		{"ssn ", "054-28-6917", " should never be shared. "},
		{"here is the key\n", pem, "\nand that is the whole thing. "},
		{`config: password = "`, "Tr0ub4dor &3 x", `" and more plain words follow here. `},
		{"spaced canary ", spaceOut(canary), " should be caught as well. "},
		{`db: passphrase = "`, "Correct Horse Battery Staple Purple Monkey Dishwasher Sunrise Over Mountains", `" in the config file. `},
	}, sensitives...)
	prose := "Ordinary words come first so that the stream has already released some text. "
	for _, v := range values {
		t.Run(v.prefix, func(t *testing.T) {
			t.Parallel()
			text := prose + v.prefix + v.value + v.suffix + prose
			want := feed(t, r, sc, StreamOptions{Literals: testLiterals}, text, []string{text})
			if leaked(want.text, v.value) {
				t.Fatalf("one Write leaks %q: %q", v.value, want.text)
			}
			if whole, _, _ := r.Text(sc, text, testLiterals); want.text != whole {
				t.Errorf("stream output differs from redacting the whole text\n got %q\nwant %q", want.text, whole)
			}
			start := len(prose) + len(v.prefix)
			for cut := start - 8; cut <= start+len(v.value)+8; cut++ {
				for _, size := range []int{1, 5, 17} {
					pieces := []string{text[:cut]}
					pieces = append(pieces, split(text[cut:], rand.New(rand.NewPCG(uint64(cut), uint64(size))), map[int]int{1: 0, 5: 1, 17: 2}[size])...)
					got := feed(t, r, sc, StreamOptions{Literals: testLiterals}, text, pieces)
					if got.text != want.text {
						t.Fatalf("cut %d size %d: output differs from one Write\n got %q\nwant %q", cut, size, got.text, want.text)
					}
				}
			}
		})
	}
}

// leaked reports whether out holds value, any of its words of five bytes
// or more, or for keys any of their lines longer than 16 bytes.
func leaked(out, value string) bool {
	if strings.Contains(out, value) {
		return true
	}
	if !strings.Contains(value, "-----") {
		for _, w := range strings.Fields(value) {
			if len(w) >= 5 && strings.Contains(out, w) {
				return true
			}
		}
	}
	for _, line := range strings.Split(value, "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(out, line) {
			return true
		}
	}
	return false
}

// spaceOut writes s with a space between its characters, as a model
// spelling a canary out would.
func spaceOut(s string) string {
	return strings.Join(strings.Split(s, ""), " ")
}
