package redact

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// streamed is everything a stream released, with findings at input offsets.
type streamed struct {
	text  string
	finds []detect.Finding // ByteStart/ByteEnd at input offsets; Start/End zeroed
	n     int
}

// feed writes pieces to a new stream and collects what it released,
// checking Held and the Windows' bookkeeping on the way.
func feed(t testing.TB, r *Redactor, sc Scanner, opt StreamOptions, input string, pieces []string) streamed {
	t.Helper()
	st, err := r.NewStream(sc, opt)
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	o := opt.withDefaults()
	var out streamed
	var b strings.Builder
	released, fed := 0, 0
	collect := func(w Window) {
		if w.Offset != released {
			t.Fatalf("Window.Offset = %d, want %d", w.Offset, released)
		}
		b.WriteString(w.Text)
		out.n += w.Redactions
		for _, f := range w.Findings {
			if f.ByteStart < 0 || f.ByteStart >= f.ByteEnd || w.Offset+f.ByteEnd > len(input) {
				t.Fatalf("finding %+v outside input of %d bytes at offset %d", f, len(input), w.Offset)
			}
			f.ByteStart += w.Offset
			f.ByteEnd += w.Offset
			f.Start, f.End = 0, 0
			out.finds = append(out.finds, f)
		}
	}
	for _, p := range pieces {
		w, err := st.Write([]byte(p))
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
		collect(w)
		fed += len(p)
		released = fed - st.Held()
		if h := st.Held(); h >= o.Step+o.Lookahead {
			t.Fatalf("Held() = %d, want < %d", h, o.Step+o.Lookahead)
		}
	}
	collect(st.Close())
	if h := st.Held(); h != 0 {
		t.Fatalf("Held() after Close = %d", h)
	}
	out.text = b.String()
	return out
}

// split cuts s into pieces whose lengths follow mode, ignoring character
// boundaries.
func split(s string, rng *rand.Rand, mode int) []string {
	var pieces []string
	for len(s) > 0 {
		var n int
		switch mode {
		case 0:
			n = 1
		case 1:
			n = 1 + rng.IntN(3) // mostly inside multi-byte characters
		case 2:
			n = 1 + rng.IntN(40) // token-sized
		case 3:
			n = rng.IntN(700) // sometimes empty, sometimes more than a window
		default:
			n = 1 + rng.IntN(4000)
		}
		n = min(n, len(s))
		pieces = append(pieces, s[:n])
		s = s[n:]
	}
	return pieces
}

var streamShapes = []StreamOptions{
	{Literals: testLiterals},
	{Step: 16, Lookahead: 128, Literals: testLiterals},
	{Step: 1, Lookahead: 40, Literals: testLiterals},
	{Step: 200, Lookahead: 300, Literals: testLiterals},
}

// TestStreamSplitInvariance is the key property: whatever the split, the
// released text and findings equal those of one Write and Close, and no
// planted value leaks.
func TestStreamSplitInvariance(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, []byte("k"))
	type tc struct {
		name  string
		text  string
		shape StreamOptions
	}
	var tests []tc
	for seed := uint64(1); seed <= 6; seed++ {
		for i, shape := range streamShapes {
			size := []int{0, 300, 1500, 4000, 9000, 20000}[seed-1]
			if shape.Step == 1 && size > 4000 {
				continue // a scan per byte: slow under -race, and covered by smaller texts
			}
			tests = append(tests, tc{fmt.Sprintf("text%d/shape%d", seed, i), buildText(seed, size), shape})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := feed(t, r, sc, tt.shape, tt.text, []string{tt.text})
			for _, s := range sensitives {
				if strings.Contains(want.text, s.value) {
					t.Errorf("output leaks %q", s.value)
				}
			}
			if !utf8.ValidString(want.text) {
				t.Errorf("output is not valid UTF-8")
			}
			var canaries int
			for _, f := range want.finds {
				if f.Detector == DetectorCanary {
					canaries++
					if got := tt.text[f.ByteStart:f.ByteEnd]; got != canary {
						t.Errorf("canary finding covers %q", got)
					}
				}
			}
			if canaries != 1 {
				t.Errorf("canary findings = %d, want 1", canaries)
			}
			runs := uint64(40)
			if len(tt.text) > 4000 {
				runs = 10
			}
			for seed := range runs {
				rng := rand.New(rand.NewPCG(seed, 11))
				mode := int(seed % 5)
				got := feed(t, r, sc, tt.shape, tt.text, split(tt.text, rng, mode))
				if got.text != want.text {
					t.Fatalf("seed %d mode %d: output differs from one Write\n got %q\nwant %q", seed, mode, got.text, want.text)
				}
				if got.n != want.n || !slices.Equal(got.finds, want.finds) {
					t.Fatalf("seed %d mode %d: findings %v (%d redactions), want %v (%d)", seed, mode, got.finds, got.n, want.finds, want.n)
				}
			}
		})
	}
}

// TestStreamContextAcrossCut moves a context-dependent secret ("my password
// is <value>") across every position of the first cut: the value must be
// redacted wherever the cut falls, so context seen before a cut still counts.
func TestStreamContextAcrossCut(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, nil)
	opt := StreamOptions{Step: 32, Lookahead: 96, Literals: testLiterals}
	for pad := 0; pad < 48; pad++ {
		for _, s := range sensitives {
			text := strings.Repeat("z ", pad/2) + strings.Repeat("y", pad%2) + " " + s.prefix + s.value + s.suffix + strings.Repeat("tail words ", 30)
			got := feed(t, r, sc, opt, text, []string{text})
			if strings.Contains(got.text, s.value) {
				t.Errorf("pad %d: %q leaks in %q", pad, s.value, got.text)
			}
		}
	}
}

func TestStreamSecretAcrossThreeWrites(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, nil)
	gh := "ghp_" + tok(3, 36, alnum)
	aws := "AKIA" + tok(1, 16, upalnum)
	tests := []struct {
		name, value, typ string
		pieces           []string
	}{
		{"github token", gh, "GITHUB_TOKEN", []string{"here is the token gh", gh[2:20], gh[20:] + " and that is all."}},
		{"aws key", aws, "AWS_ACCESS_KEY_ID", []string{"key: AK", aws[2:9], aws[9:] + "\n"}},
		{"canary", canary, "SYSTEM_PROMPT_CANARY", []string{"The secret phrase is " + canary[:3], canary[3:11], canary[11:] + ", do not repeat it."}},
		{"email in CJK", "yamada@example.jp", detect.TypeEmail, []string{"メールは yama", "da@exam", "ple.jp です。"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			input := strings.Join(tt.pieces, "")
			got := feed(t, r, sc, StreamOptions{Literals: testLiterals}, input, tt.pieces)
			if strings.Contains(got.text, tt.value) {
				t.Errorf("output %q leaks %q", got.text, tt.value)
			}
			found := false
			for _, f := range got.finds {
				if f.Type == tt.typ && input[f.ByteStart:f.ByteEnd] == tt.value {
					found = true
				}
			}
			if !found {
				t.Errorf("findings %v lack %s at %q", got.finds, tt.typ, tt.value)
			}
		})
	}
}

// TestStreamWindowFindings checks that each Window's findings locate their
// values in its released text before redaction, in bytes and code points.
func TestStreamWindowFindings(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, nil)
	text := buildText(3, 3000)
	st, err := r.NewStream(sc, StreamOptions{Literals: testLiterals, Step: 100, Lookahead: 200})
	if err != nil {
		t.Fatal(err)
	}
	var windows []Window
	for _, p := range split(text, rand.New(rand.NewPCG(1, 2)), 2) {
		w, err := st.WriteString(p)
		if err != nil {
			t.Fatal(err)
		}
		windows = append(windows, w)
	}
	windows = append(windows, st.Close())
	var types []string
	for i, w := range windows {
		end := len(text)
		for _, next := range windows[i+1:] {
			if next.Offset != w.Offset || next.Text != "" {
				end = next.Offset
				break
			}
		}
		rel := text[w.Offset:end]
		for _, f := range w.Findings {
			checkFinding(t, rel, f)
			types = append(types, f.Type)
		}
	}
	for _, want := range []string{detect.TypeEmail, detect.TypeCreditCard, "AWS_ACCESS_KEY_ID", "GITHUB_TOKEN", detect.TypeGenericSecret, detect.TypePassword, "SYSTEM_PROMPT_CANARY"} {
		if !slices.Contains(types, want) {
			t.Errorf("findings types %v lack %s", types, want)
		}
	}
}

func TestStreamHeldBound(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, nil)
	opts := []StreamOptions{{}, {Step: 7, Lookahead: 33}}
	text := buildText(42, 200_000)
	for _, opt := range opts {
		st, err := r.NewStream(sc, opt)
		if err != nil {
			t.Fatal(err)
		}
		o := opt.withDefaults()
		bound := o.Step + o.Lookahead + 3
		rng := rand.New(rand.NewPCG(5, 5))
		maxHeld, total := 0, 0
		for _, p := range split(text, rng, 2) {
			w, err := st.WriteString(p)
			if err != nil {
				t.Fatal(err)
			}
			total += len(w.Text)
			maxHeld = max(maxHeld, st.Held())
			if st.Held() > bound {
				t.Fatalf("Held() = %d > %d", st.Held(), bound)
			}
		}
		if total == 0 || maxHeld == 0 {
			t.Errorf("stream released %d bytes, held at most %d: not streaming", total, maxHeld)
		}
		st.Close()
	}
}

func TestNewStreamOptions(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, nil)
	tests := []struct {
		name    string
		sc      Scanner
		opt     StreamOptions
		wantErr string
	}{
		{"defaults", sc, StreamOptions{}, ""},
		{"literal as long as lookahead", sc, StreamOptions{Lookahead: 8, Literals: map[string]string{"12345678": ""}}, ""},
		{"literal longer than lookahead", sc, StreamOptions{Lookahead: 8, Literals: map[string]string{"123456789": ""}}, "longer than Lookahead"},
		{"empty literal", sc, StreamOptions{Literals: map[string]string{"": "X"}}, "empty value"},
		{"negative step", sc, StreamOptions{Step: -1}, "Step -1"},
		{"negative lookahead", sc, StreamOptions{Lookahead: -1}, "Lookahead -1"},
		{"window too small", sc, StreamOptions{Step: 1, Lookahead: 2}, "whole character"},
		{"window too large", sc, StreamOptions{Step: MaxWindow}, "exceeds"},
		{"nil scanner", nil, StreamOptions{}, "needs a Scanner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, err := r.NewStream(tt.sc, tt.opt)
			if tt.wantErr == "" {
				if err != nil || st == nil {
					t.Errorf("NewStream = %v, %v; want a stream", st, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewStream error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStreamClosed(t *testing.T) {
	t.Parallel()
	st, err := New(testRules, nil).NewStream(scanner(t), StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteString("mail a@b.io"); err != nil {
		t.Fatal(err)
	}
	if got := st.Close(); got.Text != "mail [REDACTED:EMAIL_ADDRESS]" || got.Redactions != 1 {
		t.Errorf("Close = %+v", got)
	}
	if got := st.Close(); got.Text != "" || got.Findings != nil {
		t.Errorf("second Close = %+v, want empty", got)
	}
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close error = %v, want ErrClosed", err)
	}
	if _, err := st.WriteString("x"); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteString after Close error = %v, want ErrClosed", err)
	}
	var nilStream *Stream
	if _, err := nilStream.Write(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("nil Write error = %v", err)
	}
	if nilStream.Held() != 0 || nilStream.Close().Text != "" {
		t.Errorf("nil stream not empty")
	}
}

// badScanner returns findings that lie outside the text, overlap oddly or
// are reversed, as a buggy Scanner might.
type badScanner struct{}

func (badScanner) Scan(text string) detect.Result {
	n := len(text)
	return detect.Result{Findings: []detect.Finding{
		{Detector: "pii", Type: "NEG", ByteStart: -5, ByteEnd: 2},
		{Detector: "pii", Type: "PAST", ByteStart: n - 1, ByteEnd: n + 10},
		{Detector: "pii", Type: "REV", ByteStart: n / 2, ByteEnd: n / 4},
		{Detector: "pii", Type: "MID", ByteStart: n / 3, ByteEnd: n/3 + 5},
		{Detector: "pii", Type: "ALL", ByteStart: 0, ByteEnd: n},
	}}
}

func TestStreamBadScanner(t *testing.T) {
	t.Parallel()
	r := New(testRules, nil)
	text := buildText(9, 3000)
	opt := StreamOptions{Step: 16, Lookahead: 48}
	want := feed(t, r, badScanner{}, opt, text, []string{text})
	for seed := range uint64(10) {
		got := feed(t, r, badScanner{}, opt, text, split(text, rand.New(rand.NewPCG(seed, 3)), int(seed%5)))
		if got.text != want.text {
			t.Fatalf("seed %d: output differs from one Write", seed)
		}
	}
}

// stubbornScanner reports, in every window, one finding from byte 1 to the
// end: the worst case for cut placement, which would advance one byte per
// scan if findings past a cut were forgotten.
type stubbornScanner struct{ scans *int }

func (s stubbornScanner) Scan(text string) detect.Result {
	*s.scans++
	if len(text) < 2 {
		return detect.Result{}
	}
	return detect.Result{Findings: []detect.Finding{{Detector: "secrets", Type: "S", ByteStart: 1, ByteEnd: len(text)}}}
}

// TestStreamProgress checks the CPU bound: every two windows release at
// least Step-3 bytes, whatever the findings.
func TestStreamProgress(t *testing.T) {
	t.Parallel()
	const n, step = 50_000, 64
	scans := 0
	text := strings.Repeat("abcdefgh", n/8)
	got := feed(t, New(testRules, nil), stubbornScanner{&scans}, StreamOptions{Step: step}, text, split(text, rand.New(rand.NewPCG(1, 1)), 2))
	if limit := 2*n/(step-3) + 2; scans > limit {
		t.Errorf("%d scans for %d bytes, want at most %d", scans, n, limit)
	}
	if strings.Contains(got.text, "abcdefgh") {
		t.Errorf("text escaped redaction")
	}
}
