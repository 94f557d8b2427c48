package redact

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// pemKey builds a private key block of n base64 lines joined by sep.
func pemBlock(seed uint64, n int, sep string) (block string, lines []string) {
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := range n {
		lines = append(lines, tok(seed+uint64(i), 64, b64))
	}
	return "-----BEGIN RSA PRIVATE KEY-----" + sep + strings.Join(lines, sep) + sep + "-----END RSA PRIVATE KEY-----", lines
}

// TestStreamPrivateKeyInSmallWrites: a 2048-bit RSA key (25 base64 lines,
// longer than the look-ahead) streamed a few bytes at a time is redacted
// whole — no base64 line and no END line reaches the output — and the text
// after it flows again, whatever the split. The old stream redacted only the
// first window and released the rest of the key.
func TestStreamPrivateKeyInSmallWrites(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	for _, sep := range []string{"\n", `\n`} { // plain text, and JSON text (tool arguments)
		block, lines := pemBlock(7, 25, sep)
		text := "Here is the key you asked for:" + sep + block + sep + "Keep it safe, and rotate it after use."
		var first string
		rng := rand.New(rand.NewPCG(5, uint64(len(sep))))
		for round := range 8 {
			st, err := New(testRules, nil).NewStream(sc, StreamOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			for rest := text; rest != ""; {
				n := 1 + rng.IntN(12)
				if round == 0 {
					n = 7
				}
				n = min(n, len(rest))
				w, err := st.WriteString(rest[:n])
				if err != nil {
					t.Fatal(err)
				}
				out.WriteString(w.Text)
				rest = rest[n:]
				if held := st.Held(); held >= DefaultStep+DefaultLookahead {
					t.Fatalf("holds %d bytes", held)
				}
			}
			out.WriteString(st.Close().Text)
			got := out.String()
			for i, l := range lines {
				if strings.Contains(got, l[:16]) {
					t.Fatalf("sep %q round %d: key line %d reached the output:\n%s", sep, round, i, got)
				}
			}
			if strings.Contains(got, "END RSA PRIVATE KEY") || strings.Contains(got, "BEGIN RSA") {
				t.Fatalf("sep %q round %d: key armour reached the output:\n%s", sep, round, got)
			}
			if !strings.HasPrefix(got, "Here is the key you asked for:") || !strings.HasSuffix(got, "Keep it safe, and rotate it after use.") {
				t.Fatalf("sep %q round %d: surrounding text lost:\n%s", sep, round, got)
			}
			if first == "" {
				first = got
			} else if got != first {
				t.Fatalf("sep %q round %d: output depends on the split:\n%s\n---\n%s", sep, round, first, got)
			}
		}
	}
}

// TestCanaryNormalised: a canary upper-cased, spaced out, split by
// zero-width or fullwidth characters is still found and removed, in a
// whole text and across stream writes. The old matcher was exact.
func TestCanaryNormalised(t *testing.T) {
	t.Parallel()
	const c = "bwc-0123456789abcdef"
	spaced := strings.Join(strings.Split(c, ""), " ")
	zw := strings.Join(strings.Split(c, ""), "\u200b")
	full := strings.Map(func(r rune) rune {
		if r >= '!' && r <= '~' {
			return r + 0xFF01 - 0x21
		}
		return r
	}, c)
	lits := map[string]string{c: ""}
	sc := scanner(t)
	for name, variant := range map[string]string{
		"exact": c, "upper": strings.ToUpper(c), "spaced": spaced, "zero-width": zw,
		"fullwidth": full, "dotted upper": strings.ToUpper(strings.Join(strings.Split(c, ""), ".")),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			text := "the marker is " + variant + ", as I was told."
			out, finds, _ := New(testRules, nil).Text(nil, text, lits)
			if len(finds) != 1 || finds[0].Detector != DetectorCanary {
				t.Fatalf("findings %+v", finds)
			}
			if want := "the marker is [REDACTED:CANARY], as I was told."; out != want {
				t.Fatalf("got %q, want %q", out, want)
			}
			if !ContainsLiteral(text, c) {
				t.Fatal("ContainsLiteral missed it")
			}
			st, err := New(testRules, nil).NewStream(sc, StreamOptions{Literals: lits})
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			sawCanary := false
			for i := 0; i < len(text); i += 3 {
				w, _ := st.WriteString(text[i:min(i+3, len(text))])
				got.WriteString(w.Text)
				for _, f := range w.Findings {
					sawCanary = sawCanary || f.Detector == DetectorCanary
				}
			}
			w := st.Close()
			got.WriteString(w.Text)
			for _, f := range w.Findings {
				sawCanary = sawCanary || f.Detector == DetectorCanary
			}
			if !sawCanary || strings.Contains(strings.ToLower(got.String()), "0123") {
				t.Fatalf("stream: canary %v, output %q", sawCanary, got.String())
			}
		})
	}
	if ContainsLiteral("bwc is a nice 0123456789 abc def word list", c) {
		t.Error("prose without the canary's hex matched")
	}
}
