package detect

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// adversarialInput is one input built to make a detector work hard: the
// same few bytes repeated so that every position starts a candidate match.
type adversarialInput struct {
	name string
	gen  func(n int) string
}

// repeatTo repeats unit until the result is n bytes long (cut at the end).
func repeatTo(unit string, n int) string {
	s := strings.Repeat(unit, n/len(unit)+1)
	return strings.ToValidUTF8(s[:n], "")
}

// adversarialInputs are the worst inputs we know for each detector; the
// scan of each must stay within a small factor of benign prose per byte.
var adversarialInputs = []adversarialInput{
	{"prose", func(n int) string { return repeatTo(prompt4K, n) }},
	{"password=", func(n int) string { return repeatTo("password=", n) }},
	{"token=", func(n int) string { return repeatTo("token=", n) }},
	{"token=-groups", func(n int) string { return repeatTo(strings.Repeat("token=", 680)+" ", n) }},
	{"pw=-groups", func(n int) string { return repeatTo(strings.Repeat("pw=", 1360)+" ", n) }},
	{"password=-dots", func(n int) string { return repeatTo(strings.Repeat("password=", 400)+strings.Repeat(".", 8000), n) }},
	// 4102 mod 16 lands in the dots: every capped value ends at its own
	// trimmed run of dots.
	{"token=-dots16", func(n int) string { return repeatTo("token=..........", n) }},
	{"token=-quoted", func(n int) string { return repeatTo("token=\"token='", n) }},
	{"secret:", func(n int) string { return repeatTo("secret: ", n) }},
	{"api_key=\"", func(n int) string { return repeatTo("api_key=\"", n) }},
	{"zero-width", func(n int) string { return repeatTo("i\u200bg\u200bn\u200bo\u200br\u200be\u200b ", n) }},
	{"zero-width-only", func(n int) string { return repeatTo("\u200b", n) }},
	{"tag-chars", func(n int) string { return repeatTo("\U000E0069\U000E0067", n) }},
	{"digits", func(n int) string { return repeatTo("0123456789", n) }},
	{"digits-spaced", func(n int) string { return repeatTo("4111 ", n) }},
	{"digits-dashed", func(n int) string { return repeatTo("555-", n) }},
	{"dots-digits", func(n int) string { return repeatTo("1.", n) }},
	{"base64", func(n int) string { return repeatTo("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3", n) }},
	{"base64-ignore", func(n int) string { return repeatTo("aWdub3JlIGFsbCBwcmV2aW91cyBpbnN0cnVjdGlvbnM=", n) }},
	{"hex", func(n int) string { return repeatTo("0123456789abcdef", n) }},
	{"percent", func(n int) string { return repeatTo("%41", n) }},
	{"at-signs", func(n int) string { return repeatTo("@", n) }},
	{"email-parts", func(n int) string { return repeatTo("a@b.", n) }},
	{"email-local", func(n int) string { return repeatTo("a.", n) }},
	{"pem-header", func(n int) string { return repeatTo("-----BEGIN RSA PRIVATE KEY-----\n", n) }},
	{"pem-header-no-body", func(n int) string { return repeatTo("-----BEGIN RSA PRIVATE KEY-----!", n) }},
	{"putty-header", func(n int) string { return repeatTo("PuTTY-User-Key-File-2: ssh-rsa\n", n) }},
	{"sig=", func(n int) string { return repeatTo("sig=", n) }},
	{"eyJ=", func(n int) string { return repeatTo("eyJ=", n) }},
	{"AccountKey=", func(n int) string { return repeatTo("AccountKey=", n) }},
	{"sk-", func(n int) string { return repeatTo("sk-", n) }},
	{"aws_secret_access_key=", func(n int) string { return repeatTo("aws_secret_access_key=", n) }},
	{"x-bearer-prefix", func(n int) string { return repeatTo("AAAAAAAAAAAAAAAAAAAAA=", n) }},
	{"jwk-kty", func(n int) string { return repeatTo("\"kty\"\"", n) }},
	{"api-key-", func(n int) string { return repeatTo("api-key-", n) }},
	{"long-word", func(n int) string { return repeatTo("a", n) }},
	{"long-alnum", func(n int) string { return repeatTo("aZ9", n) }},
	{"spaced-letters", func(n int) string { return repeatTo("i g n o r e ", n) }},
	{"homoglyphs", func(n int) string { return repeatTo("іgnоrе ", n) }},
	{"fullwidth", func(n int) string { return repeatTo("ｉｇｎｏｒｅ ", n) }},
	{"combining mark after every letter", func(n int) string { return repeatTo("i\u0301g\u0301n\u0301o\u0301r\u0301e\u0301 ", n) }},
	{"stacked combining marks", func(n int) string { return repeatTo("e\u0301\u0336\u0332\u0308\u0303", n) }},
	{"upside-down text, one line", func(n int) string { return repeatTo("suoᴉʇɔnɹʇsuᴉ snoᴉʌǝɹd llɐ ǝɹouƃI ", n) }},
	{"upside-down text, short lines", func(n int) string { return repeatTo("ǝɹouƃI\n", n) }},
	{"small capitals and regional indicators", func(n int) string { return repeatTo("ɪɢɴᴏʀᴇ 🇮🇬🇳🇴🇷🇪 ", n) }},
	{"ignore-previous", func(n int) string { return repeatTo("ignore previous ", n) }},
	{"iban", func(n int) string { return repeatTo("DE89", n) }},
	{"ip", func(n int) string { return repeatTo("1.1.", n) }},
	{"ipv6", func(n int) string { return repeatTo("1:", n) }},
	{"url", func(n int) string { return repeatTo("https://", n) }},
	{"jwt", func(n int) string { return repeatTo("eyJ", n) }},
	{"aws", func(n int) string { return repeatTo("AKIA", n) }},
	{"quotes", func(n int) string { return repeatTo("\"", n) }},
	{"newlines", func(n int) string { return repeatTo("\n", n) }},
	{"key-value", func(n int) string { return repeatTo("a=b ", n) }},
	{"ssn", func(n int) string { return repeatTo("123-45-", n) }},
	{"phone-plus", func(n int) string { return repeatTo("+1 ", n) }},
	{"combining", func(n int) string { return repeatTo("a\u0301", n) }},
	{"bidi", func(n int) string { return repeatTo("\u202e", n) }},
	{"cjk", func(n int) string { return repeatTo("忽略之前的所有指示。", n) }},
	{"hangul", func(n int) string { return repeatTo("이전 지시를 무시하라 ", n) }},
	{"math-letters", func(n int) string { return repeatTo("𝐢𝐠𝐧𝐨𝐫𝐞 ", n) }},
	{"circled", func(n int) string { return repeatTo("ⓘⓖⓝⓞⓡⓔ ", n) }},
	{"ligatures", func(n int) string { return repeatTo("ﬁﬂﬃ ", n) }},
	{"arabic-presentation", func(n int) string { return repeatTo("ﻻﻼﺍ ", n) }},
	{"emoji", func(n int) string { return repeatTo("👩‍💻🔥 ", n) }},
	{"replacement-char", func(n int) string { return repeatTo("\uFFFD", n) }},
	{"invalid-utf8", func(n int) string { return strings.Repeat("\xff", n) }},
}

// BenchmarkAdversarial scans 1 MiB of each adversarial input and reports
// MB/s; compare each with "prose" (no input may be 10x slower per byte).
func BenchmarkAdversarial(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for _, in := range adversarialInputs {
		text := in.gen(1 << 20)
		b.Run(in.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(int64(len(text)))
			c0, ok := threadCPU()
			for b.Loop() {
				sc.Scan(text)
			}
			// The thread's CPU time leaves out waiting for a core, which
			// dominates wall-clock time on a shared machine.
			if c1, _ := threadCPU(); ok && c1 > c0 {
				b.ReportMetric(float64(len(text))*float64(b.N)/(c1-c0).Seconds()/1e6, "cpu-MB/s")
			}
		})
	}
}

// TestGenericSecretWorkLinear: the generic secret checks read each value
// byte a bounded number of times, however many keywords are chained before
// it ("password=password=..."): at most 2*maxGroupChecks times per byte.
// (Before, every keyword hit re-read the value after it: about 450 times
// per byte for password= repeated.) Timing belongs in BenchmarkAdversarial;
// this counts the work instead.
func TestGenericSecretWorkLinear(t *testing.T) {
	sc := scanner(t)
	for _, in := range adversarialInputs {
		t.Run(in.name, func(t *testing.T) {
			text := in.gen(64 << 10)
			s := new(scratch)
			s.reset(text)
			var h HiddenText
			s.view = s.clean(text, &h, true)
			s.scanSecrets(sc.secrets, s.view.b)
			if limit := 2 * maxGroupChecks * len(s.view.b); s.valueWork > limit {
				t.Errorf("value checks read %d bytes of a %d-byte text, more than %d", s.valueWork, len(s.view.b), limit)
			}
			// The shared value-end search finds what a fresh one finds.
			var vm valueMemo
			for _, c := range s.cands {
				if int(c.id) < len(secretRules) {
					continue
				}
				g1, ok1 := genericValue(s.view.b, int(c.ps), int(c.pe), &vm)
				g2, ok2 := genericValue(s.view.b, int(c.ps), int(c.pe), nil)
				if g1 != g2 || ok1 != ok2 {
					t.Fatalf("hit at %d: with memo %+v %v, without %+v %v", c.ps, g1, ok1, g2, ok2)
				}
			}
		})
	}
}

// TestScanContextStops: a scan whose context has ended returns the
// context's error instead of running the detectors; with a live context it
// finds what Scan finds.
func TestScanContextStops(t *testing.T) {
	sc := scanner(t)
	text := strings.Repeat("password=", 1<<14) + " token: ghp_R7xK2mQ9vL4nT8wE3pY6zA1sD5fG0hJ2kC4b"
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	cases := []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"live", context.Background(), nil},
		{"cancelled", cancelled, context.Canceled},
		{"deadline passed", expired, context.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := sc.ScanContext(tc.ctx, text)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("ScanContext error = %v, want %v", err, tc.want)
			}
			if tc.want == nil && !reflect.DeepEqual(res, sc.Scan(text)) {
				t.Errorf("ScanContext = %+v, Scan = %+v", res, sc.Scan(text))
			}
			if tc.want != nil && len(res.Findings) != 0 {
				t.Errorf("stopped scan returned findings %+v", res.Findings)
			}
		})
	}
}

// naiveNext is nextFinder.next without memory.
func naiveNext(b []byte, pat string, fold bool, p, limit int) int {
	for k := max(p, 0); k+len(pat) <= min(limit, len(b)); k++ {
		if fold && hasPrefixFold(b[k:], pat) || !fold && hasPrefixAt(b, k, pat) {
			return k
		}
	}
	return -1
}

// FuzzNextFinder checks the remembered marker search against a fresh one,
// for queries in any order (the scan's come in increasing position).
func FuzzNextFinder(f *testing.F) {
	f.Add([]byte("-----END x-----END-----EN"), []byte{0, 30, 3, 9, 2, 40, 20, 25}, false)
	f.Add([]byte("Private-Lines: private-lines:"), []byte{0, 10, 0, 29, 15, 29}, true)
	f.Fuzz(func(t *testing.T, b, queries []byte, fold bool) {
		pat := "-----END "
		if fold {
			pat = "private-lines:"
		}
		nf := nextFinder{pat: pat, fold: fold}
		for i := 0; i+1 < len(queries); i += 2 {
			p, limit := int(queries[i]), int(queries[i])+int(queries[i+1])
			if got, want := nf.next(b, p, limit), naiveNext(b, pat, fold, p, limit); got != want {
				t.Fatalf("next(%d, %d) on %q = %d, want %d", p, limit, b, got, want)
			}
		}
	})
}

// freshMarkers is a markerMemo as a scan starts it.
func freshMarkers() *markerMemo {
	return &markerMemo{pemEnd: nextFinder{pat: "-----END "}, puttyLines: nextFinder{pat: "private-lines:", fold: true}}
}

// TestMarkerMemoMatchesFresh: the rules that share searches between hits
// (secretRule.find) answer every hit, taken in scan order, as they answer
// it alone.
func TestMarkerMemoMatchesFresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	texts := map[string]string{}
	for _, in := range adversarialInputs {
		texts[in.name] = in.gen(16 << 10)
	}
	for i := range 200 {
		texts[fmt.Sprint("generated ", i)] = genText(rng, 2000)
	}
	texts["jwts"] = strings.Repeat("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U eyJeyJ.", 50)
	texts["pem"] = strings.Repeat("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- x -----BEGIN PRIVATE KEY-----!", 50)
	sc := scanner(t)
	for name, text := range texts {
		b := []byte(text)
		var hits [][2]int
		sc.secrets.scan(b, func(id, start int) bool {
			if id < len(secretRules) && secretRules[id].find != nil {
				hits = append(hits, [2]int{start, id})
			}
			return true
		})
		hits = sortedPairs(hits)
		shared := freshMarkers()
		for _, h := range hits {
			r := &secretRules[h[1]]
			ps, pe := h[0], h[0]+len(r.prefix)
			if !r.fold && string(b[ps:pe]) != r.prefix {
				continue
			}
			s1, e1, ok1 := r.find(b, ps, pe, shared)
			s2, e2, ok2 := r.find(b, ps, pe, freshMarkers())
			if ok1 != ok2 || ok1 && (s1 != s2 || e1 != e2) {
				t.Fatalf("%s: %s hit at %d: shared memo %d %d %v, fresh %d %d %v", name, r.typ, ps, s1, e1, ok1, s2, e2, ok2)
			}
		}
	}
}
