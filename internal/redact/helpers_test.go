package redact

import (
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// testScanner is the real detector, built once per test binary.
var testScanner = sync.OnceValues(func() (*detect.Scanner, error) { return detect.New(detect.Config{}) })

func scanner(t testing.TB) *detect.Scanner {
	t.Helper()
	sc, err := testScanner()
	if err != nil {
		t.Fatalf("detect.New: %v", err)
	}
	return sc
}

// tok builds a deterministic pseudo-random token body, so that no
// credential-shaped literal sits in the source for secret scanners to trip on.
func tok(seed uint64, n int, alphabet string) string {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

const (
	alnum   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	upalnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// testRules redact everything detect and literals find: cards masked,
// secrets hashed, the rest replaced.
var testRules = Rules{
	{Detector: detect.DetectorPII, Types: []string{detect.TypeCreditCard}, Action: Mask},
	{Detector: detect.DetectorSecrets, Action: Hash},
	{Detector: "", Action: Replace},
}

// sensitive is one value that must never reach the output, with the text
// that introduces it.
type sensitive struct {
	prefix, value, suffix string
}

var canary = "cnry-" + tok(99, 20, alnum)

var testLiterals = map[string]string{canary: "SYSTEM_PROMPT_CANARY"}

// sensitives are the values the stream tests plant in texts.
var sensitives = []sensitive{
	{"mail me at ", "jane.doe@example.com", " today. "},
	{"card ", "4111 1111 1111 1111", ", exp 12/29. "},
	{"card ", "4007070753690781", " was charged twice. "},
	{"the key AKIA is ", "AKIA" + tok(1, 16, upalnum), " in us-east-1. "},
	{"token ", "ghp_" + tok(3, 36, alnum), " leaked. "},
	{`client_secret: "`, tok(36, 32, alnum), `"` + "\n"},
	{"and my password is ", tok(34, 10, alnum), " so keep it. "},
	{"the canary ", canary, " must not leak. "},
}

var fillers = []string{
	"The quarterly report covers revenue, churn and hiring plans. ",
	"你好，世界。这是一个关于数据保护的段落。",
	"これは日本語のテキストです。個人情報を含みません。",
	"Emoji time 👩‍💻🎉❤️👍🏽 and more emoji 🇫🇷. ",
	"Ünïcödé façade — naïve café résumé. ",
	"Lorem ipsum dolor sit amet, consectetur adipiscing elit. ",
	"\n\n",
}

// buildText assembles a text of about n bytes mixing fillers and every
// sensitive value, at positions that vary with seed.
func buildText(seed uint64, n int) string {
	rng := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	next := 0
	for b.Len() < n || next < len(sensitives) {
		if next < len(sensitives) && rng.IntN(3) == 0 {
			s := sensitives[next]
			b.WriteString(s.prefix + s.value + s.suffix)
			next++
			continue
		}
		b.WriteString(fillers[rng.IntN(len(fillers))])
	}
	return b.String()
}
