package detect

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestPrefixlessFormats covers formats found by shape or context rather than
// by a prefix of their own, and their near misses.
func TestPrefixlessFormats(t *testing.T) {
	sc := scanner(t)
	raw := make([]byte, 20)
	copy(raw, tok(71, 20, alnum))
	pat := base64.StdEncoding.EncodeToString(append([]byte("123456789012:"), raw...))
	shortID := base64.StdEncoding.EncodeToString(append([]byte("0001:"), raw...))
	mailgun := tok(72, 32, hexLow) + "-" + tok(73, 8, hexLow) + "-" + tok(74, 8, hexLow)
	azure := tok(75, 52, alnum) + "JQQJ99" + tok(76, 26, alnum)
	gid := tok(77, 12, "0123456789") + "-" + tok(78, 32, "abcdefghijklmnopqrstuvwxyz0123456789") + ".apps.googleusercontent.com"
	gsec := "Ab1" + tok(79, 21, tokChar)
	uuid := tok(80, 8, hexLow) + "-" + tok(81, 4, hexLow) + "-" + tok(82, 4, hexLow) + "-" + tok(83, 4, hexLow) + "-" + tok(84, 12, hexLow)
	cases := []struct {
		text, typ string
		want      bool
	}{
		{"token: " + pat + "\n", "ATLASSIAN_PAT", true},
		{"https://example.com/token/" + pat, "ATLASSIAN_PAT", true},
		{"blob " + shortID, "ATLASSIAN_PAT", false},
		{"MAILGUN=" + mailgun + "\n", "MAILGUN_API_KEY", true},
		{"id " + uuid + " and sha " + tok(85, 64, hexLow), "MAILGUN_API_KEY", false},
		{"key " + azure + "\n", "AZURE_KEY", true},
		{"client " + gid + "\nsecret\n" + gsec + "\n", "GOOGLE_OAUTH_CLIENT_SECRET", true},
		{"no client id here\n" + gsec + "\n", "GOOGLE_OAUTH_CLIENT_SECRET", false},
		{"client " + gid + "\n" + uuid + " " + tok(86, 24, hexLow) + "\n", "GOOGLE_OAUTH_CLIENT_SECRET", false},
	}
	for i, c := range cases {
		got := false
		for _, f := range sc.Scan(c.text).Findings {
			if f.Type == c.typ {
				got = true
			}
		}
		if got != c.want {
			t.Errorf("case %d (%s): found=%v, want %v in %q", i, c.typ, got, c.want, strings.TrimSpace(c.text))
		}
	}
}
