package redact

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// at builds a finding of det/typ covering the first occurrence of value in
// text.
func at(t *testing.T, text, det, typ, value string) detect.Finding {
	t.Helper()
	i := strings.Index(text, value)
	if i < 0 {
		t.Fatalf("%q not in %q", value, text)
	}
	return detect.Finding{Detector: det, Type: typ, ByteStart: i, ByteEnd: i + len(value), Score: 1}
}

func raw(det, typ string, bs, be int) detect.Finding {
	return detect.Finding{Detector: det, Type: typ, ByteStart: bs, ByteEnd: be}
}

func hmac16(key []byte, v string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))[:16]
}

func sha16(v string) string {
	s := sha256.Sum256([]byte(v))
	return hex.EncodeToString(s[:])[:16]
}

func TestRulesAction(t *testing.T) {
	t.Parallel()
	rules := Rules{
		{Detector: detect.DetectorPII, Types: []string{detect.TypeCreditCard, "iban_code"}, Action: Mask},
		{Detector: detect.DetectorPII, Types: []string{detect.TypeEmail}, Action: Hash},
		{Detector: "SECRETS", Action: Replace},
		{Detector: DetectorCanary, Action: "typo"},
	}
	tests := []struct {
		name   string
		f      detect.Finding
		want   Action
		wantOK bool
	}{
		{"type listed", raw("pii", detect.TypeCreditCard, 0, 1), Mask, true},
		{"type case-insensitive", raw("pii", "IBAN_CODE", 0, 1), Mask, true},
		{"second rule by type", raw("pii", detect.TypeEmail, 0, 1), Hash, true},
		{"type not listed", raw("pii", detect.TypePhone, 0, 1), "", false},
		{"all types of detector", raw("secrets", "GITHUB_TOKEN", 0, 1), Replace, true},
		{"unknown action replaces", raw(DetectorCanary, CanaryType, 0, 1), Replace, true},
		{"no rule for detector", raw(detect.DetectorHidden, "ZERO_WIDTH", 0, 1), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := rules.Action(tt.f)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Action(%+v) = %q, %v; want %q, %v", tt.f, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRulesValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		rules   Rules
		wantErr string
	}{
		{"empty", nil, ""},
		{"valid", Rules{{Detector: "pii", Action: Mask}, {Action: Hash}, {Action: Replace}}, ""},
		{"empty action", Rules{{Detector: "pii", Action: Mask}, {Detector: "secrets"}}, "rules[1]"},
		{"unknown action", Rules{{Detector: "pii", Action: "drop"}}, `unknown action "drop"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.rules.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	key := []byte("test-key")
	all := Rules{{Action: Replace}}
	const mail = "mail jane@example.com now"
	const card = "card 4111 1111 1111 1111 ok"
	const cjk = "名前は山田太郎です、メールは yamada@example.jp です"
	tests := []struct {
		name  string
		rules Rules
		key   []byte
		text  string
		finds func(t *testing.T, text string) []detect.Finding
		want  string
		wantN int
	}{
		{
			name: "no findings", rules: all, text: mail,
			finds: func(*testing.T, string) []detect.Finding { return nil },
			want:  mail,
		},
		{
			name: "replace", rules: all, text: mail,
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeEmail, "jane@example.com")}
			},
			want: "mail [REDACTED:EMAIL_ADDRESS] now", wantN: 1,
		},
		{
			name: "mask keeps last four of long values", rules: Rules{{Detector: "pii", Action: Mask}}, text: card,
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeCreditCard, "4111 1111 1111 1111")}
			},
			want: "card ***************1111 ok", wantN: 1,
		},
		{
			name: "mask hides all of short values", rules: Rules{{Detector: "pii", Action: Mask}}, text: "ssn 054-28-6917.",
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeUSSSN, "054-28-6917")}
			},
			want: "ssn ***********.", wantN: 1,
		},
		{
			name: "mask counts runes", rules: Rules{{Action: Mask}}, text: "x 山田太郎山田太郎山田太郎 y",
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", "PERSON", "山田太郎山田太郎山田太郎")}
			},
			want: "x ********山田太郎 y", wantN: 1,
		},
		{
			name: "hash with key", rules: Rules{{Action: Hash}}, key: key, text: mail,
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeEmail, "jane@example.com")}
			},
			want: "mail [EMAIL_ADDRESS:" + hmac16(key, "jane@example.com") + "] now", wantN: 1,
		},
		{
			name: "hash with long key and long value", rules: Rules{{Action: Hash}}, key: []byte(strings.Repeat("k", 100)),
			text:  "v=" + strings.Repeat("日本", 50),
			finds: func(*testing.T, string) []detect.Finding { return []detect.Finding{raw("secrets", "S", 2, 302)} },
			want:  "v=[S:" + hmac16([]byte(strings.Repeat("k", 100)), strings.Repeat("日本", 50)) + "]", wantN: 1,
		},
		{
			name: "hash without key is sha256", rules: Rules{{Action: Hash}}, text: mail,
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeEmail, "jane@example.com")}
			},
			want: "mail [EMAIL_ADDRESS:" + sha16("jane@example.com") + "] now", wantN: 1,
		},
		{
			name: "equal values hash equal", rules: Rules{{Action: Hash}}, key: key, text: "a@b.io and a@b.io",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "EMAIL_ADDRESS", 0, 6), raw("pii", "EMAIL_ADDRESS", 11, 17)}
			},
			want:  "[EMAIL_ADDRESS:" + hmac16(key, "a@b.io") + "] and [EMAIL_ADDRESS:" + hmac16(key, "a@b.io") + "]",
			wantN: 2,
		},
		{
			name: "multi-byte text", rules: all, text: cjk,
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeEmail, "yamada@example.jp")}
			},
			want: "名前は山田太郎です、メールは [REDACTED:EMAIL_ADDRESS] です", wantN: 1,
		},
		{
			name: "overlap merged, earliest rule decides",
			rules: Rules{
				{Detector: "secrets", Action: Replace},
				{Detector: "pii", Action: Mask},
			},
			text: "url https://bob:hunter2hunter2@example.com end",
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{
					at(t, s, "pii", detect.TypeEmail, "bob:hunter2hunter2@example.com"),
					at(t, s, "secrets", "CONNECTION_STRING", "https://bob:hunter2hunter2"),
				}
			},
			want: "url [REDACTED:CONNECTION_STRING] end", wantN: 1,
		},
		{
			name:  "overlap chain merged to union",
			rules: all, text: "0123456789",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "A", 1, 4), raw("pii", "B", 3, 6), raw("pii", "C", 5, 8)}
			},
			want: "0[REDACTED:A]89", wantN: 1,
		},
		{
			name:  "contained finding merged",
			rules: all, text: "0123456789",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "OUTER", 1, 9), raw("pii", "INNER", 3, 5)}
			},
			want: "0[REDACTED:OUTER]9", wantN: 1,
		},
		{
			name:  "touching spans stay separate",
			rules: all, text: "0123456789",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "A", 2, 4), raw("pii", "B", 4, 6)}
			},
			want: "01[REDACTED:A][REDACTED:B]6789", wantN: 2,
		},
		{
			name:  "unsorted findings",
			rules: all, text: "0123456789",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "B", 7, 9), raw("pii", "A", 1, 2)}
			},
			want: "0[REDACTED:A]23456[REDACTED:B]9", wantN: 2,
		},
		{
			name:  "unmatched overlapping finding does not widen",
			rules: Rules{{Detector: "secrets", Action: Replace}}, text: "0123456789",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "A", 0, 9), raw("secrets", "S", 3, 5)}
			},
			want: "012[REDACTED:S]56789", wantN: 1,
		},
		{
			name:  "rule by type",
			rules: Rules{{Detector: "pii", Types: []string{detect.TypeEmail}, Action: Replace}},
			text:  "call +1-415-555-0132 or a@b.io",
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{
					at(t, s, "pii", detect.TypePhone, "+1-415-555-0132"),
					at(t, s, "pii", detect.TypeEmail, "a@b.io"),
				}
			},
			want: "call +1-415-555-0132 or [REDACTED:EMAIL_ADDRESS]", wantN: 1,
		},
		{
			name:  "rule by detector",
			rules: Rules{{Detector: "secrets", Action: Replace}},
			text:  "a@b.io ghp_x",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", detect.TypeEmail, 0, 6), raw("secrets", "GITHUB_TOKEN", 7, 12)}
			},
			want: "a@b.io [REDACTED:GITHUB_TOKEN]", wantN: 1,
		},
		{
			name:  "bad spans ignored",
			rules: all, text: "0123456789",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{
					raw("pii", "NEG", -1, 3), raw("pii", "PAST", 8, 11), raw("pii", "REV", 6, 2),
					raw("pii", "EMPTY", 4, 4), raw("pii", "FAR", 100, 200), raw("pii", "OK", 9, 10),
				}
			},
			want: "012345678[REDACTED:OK]", wantN: 1,
		},
		{
			name:  "span inside a character widened",
			rules: all, text: "a日本b",
			finds: func(*testing.T, string) []detect.Finding {
				return []detect.Finding{raw("pii", "X", 2, 5)} // from inside 日 to inside 本
			},
			want: "a[REDACTED:X]b", wantN: 1,
		},
		{
			name:  "empty type",
			rules: all, text: "abc",
			finds: func(*testing.T, string) []detect.Finding { return []detect.Finding{raw("pii", "", 0, 3)} },
			want:  "[REDACTED:UNKNOWN]", wantN: 1,
		},
		{
			name:  "no rules",
			rules: nil, text: mail,
			finds: func(t *testing.T, s string) []detect.Finding {
				return []detect.Finding{at(t, s, "pii", detect.TypeEmail, "jane@example.com")}
			},
			want: mail,
		},
		{
			name:  "invalid utf-8 kept",
			rules: all, text: "\xff\xfe a@b.io \xc3",
			finds: func(*testing.T, string) []detect.Finding { return []detect.Finding{raw("pii", "E", 3, 9)} },
			want:  "\xff\xfe [REDACTED:E] \xc3", wantN: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			finds := tt.finds(t, tt.text)
			before := slices.Clone(finds)
			got, n := New(tt.rules, tt.key).Apply(tt.text, finds)
			if got != tt.want || n != tt.wantN {
				t.Errorf("Apply(%q) = %q, %d; want %q, %d", tt.text, got, n, tt.want, tt.wantN)
			}
			if !slices.Equal(finds, before) {
				t.Errorf("Apply modified its findings: %v, was %v", finds, before)
			}
		})
	}
}

func TestNewCopies(t *testing.T) {
	t.Parallel()
	rules := Rules{{Detector: "pii", Types: []string{"EMAIL_ADDRESS"}, Action: Hash}}
	key := []byte("k1")
	r := New(rules, key)
	rules[0].Types[0], rules[0].Action, key[0] = "PHONE_NUMBER", Replace, 'x'
	got, _ := r.Apply("a@b.io", []detect.Finding{raw("pii", "EMAIL_ADDRESS", 0, 6)})
	if want := "[EMAIL_ADDRESS:" + hmac16([]byte("k1"), "a@b.io") + "]"; got != want {
		t.Errorf("after caller edits, Apply = %q, want %q", got, want)
	}
}

func TestNilRedactor(t *testing.T) {
	t.Parallel()
	var r *Redactor
	if got, n := r.Apply("a@b.io", []detect.Finding{raw("pii", "E", 0, 6)}); got != "a@b.io" || n != 0 {
		t.Errorf("nil Apply = %q, %d", got, n)
	}
}

func TestText(t *testing.T) {
	t.Parallel()
	sc := scanner(t)
	r := New(testRules, []byte("k"))
	gh := "ghp_" + tok(3, 36, alnum)
	tests := []struct {
		name      string
		sc        Scanner
		text      string
		literals  map[string]string
		want      string
		wantTypes []string
	}{
		{
			name: "scanner and literal", sc: sc,
			text:      "mail a@b.io, token " + gh + ", canary " + canary + ".",
			literals:  testLiterals,
			want:      "mail [REDACTED:EMAIL_ADDRESS], token [GITHUB_TOKEN:" + hmac16([]byte("k"), gh) + "], canary [REDACTED:SYSTEM_PROMPT_CANARY].",
			wantTypes: []string{detect.TypeEmail, "GITHUB_TOKEN", "SYSTEM_PROMPT_CANARY"},
		},
		{
			name: "literal repeated, default type, empty ignored", sc: nil,
			text:      "xCANx CAN",
			literals:  map[string]string{"CAN": "", "": "EMPTY"},
			want:      "x[REDACTED:CANARY]x [REDACTED:CANARY]",
			wantTypes: []string{CanaryType, CanaryType},
		},
		{
			name: "multi-byte offsets", sc: sc,
			text:      "日本語 a@b.io 🎉 " + canary,
			literals:  testLiterals,
			want:      "日本語 [REDACTED:EMAIL_ADDRESS] 🎉 [REDACTED:SYSTEM_PROMPT_CANARY]",
			wantTypes: []string{detect.TypeEmail, "SYSTEM_PROMPT_CANARY"},
		},
		{name: "empty", sc: sc, text: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, finds, n := r.Text(tt.sc, tt.text, tt.literals)
			if got != tt.want || n != len(tt.wantTypes) {
				t.Errorf("Text(%q) = %q, %d; want %q, %d", tt.text, got, n, tt.want, len(tt.wantTypes))
			}
			var types []string
			for _, f := range finds {
				types = append(types, f.Type)
				checkFinding(t, tt.text, f)
			}
			if !slices.Equal(types, tt.wantTypes) {
				t.Errorf("Text(%q) finding types = %v, want %v", tt.text, types, tt.wantTypes)
			}
		})
	}
}

// checkFinding verifies that f's byte and code point offsets agree in text.
func checkFinding(t *testing.T, text string, f detect.Finding) {
	t.Helper()
	if f.ByteStart < 0 || f.ByteEnd > len(text) || f.ByteStart >= f.ByteEnd {
		t.Fatalf("finding %+v out of text of %d bytes", f, len(text))
	}
	if got := len([]rune(text[:f.ByteStart])); got != f.Start {
		t.Errorf("finding %+v: Start %d, want %d", f, f.Start, got)
	}
	if got := len([]rune(text[:f.ByteEnd])); got != f.End {
		t.Errorf("finding %+v: End %d, want %d", f, f.End, got)
	}
}
