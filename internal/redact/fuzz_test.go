package redact

import (
	"slices"
	"testing"
)

// fuzzLiterals are short enough for every fuzz shape's Lookahead.
var fuzzLiterals = map[string]string{"CANARY42": "", "日本🎉": "EMOJI_CANARY"}

// fuzzShapes are the stream options a fuzz input picks from: the defaults,
// and small windows so that short inputs cross many cuts.
var fuzzShapes = []StreamOptions{
	{Literals: fuzzLiterals},
	{Step: 8, Lookahead: 24, Literals: fuzzLiterals},
	{Step: 1, Lookahead: 12, Literals: fuzzLiterals},
	{Step: 3, Lookahead: 10, Literals: fuzzLiterals},
}

// FuzzStream checks the stream's key property on arbitrary text and splits:
// the released text and findings equal those of one Write and Close, Held
// stays bounded, and nothing panics.
func FuzzStream(f *testing.F) {
	seeds := []string{
		"",
		"mail jane.doe@example.com or +1-415-555-0132",
		"4111 1111 1111 1111 and 054-28-6917 and GB82 WEST 1234 5698 7654 32",
		"AKIA" + tok(5, 16, upalnum) + " ghp_" + tok(6, 36, alnum),
		"-----BEGIN RSA PRIVATE KEY-----\n" + tok(7, 64, alnum) + "\n-----END RSA PRIVATE KEY-----",
		"postgres://app:" + tok(8, 16, alnum) + "@db:5432/x password = \"" + tok(9, 14, alnum) + "\"",
		"my password is " + tok(34, 10, alnum) + " CANARY42 日本🎉",
		"zero\u200bwidth \u202Ebidi\u202C \U000E0041\U000E0042 emoji 👩‍💻 ❤️",
		"\xff\xfe\xc3\x28 invalid \xf0\x9f\x98 truncated",
		"שלום مرحبا 你好 e\u0301 CANARY4CANARY42",
		"key:\n" + func() string { b, _ := pemBlock(11, 6, "\n"); return b }() + "\nafter the key",
		`{"k":"` + func() string { b, _ := pemBlock(12, 4, `\n`); return b }() + `"} -----END  -----EN`,
		buildText(1, 200),
		buildText(2, 600),
	}
	for i, s := range seeds {
		f.Add(s, []byte{byte(i), 1, 2, 3, 17}, uint8(i))
	}
	sc := scanner(f)
	r := New(testRules, []byte("fuzz"))
	f.Fuzz(func(t *testing.T, text string, splits []byte, shape uint8) {
		opt := fuzzShapes[int(shape)%len(fuzzShapes)]
		want := feed(t, r, sc, opt, text, []string{text})
		var pieces []string
		for i, rest := 0, text; len(rest) > 0; i++ {
			n := 1
			if len(splits) > 0 {
				n = int(splits[i%len(splits)]) % 48 // 0 makes an empty Write
			}
			n = min(n, len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
			if i > 4*len(text)+16 { // all-zero splits: finish in one piece
				pieces = append(pieces, rest)
				break
			}
		}
		got := feed(t, r, sc, opt, text, pieces)
		if got.text != want.text {
			t.Fatalf("split output differs from one Write\n got %q\nwant %q", got.text, want.text)
		}
		if got.n != want.n || !slices.Equal(got.finds, want.finds) {
			t.Fatalf("split findings %v (%d redactions), want %v (%d)", got.finds, got.n, want.finds, want.n)
		}
	})
}
