package detect

import (
	"strings"
	"testing"
)

func contentScanner(t testing.TB, dir Direction, cats []ContentCategory, out OutputSpec) *Scanner {
	t.Helper()
	cr, err := NewContentRules(cats, out)
	if err != nil {
		t.Fatalf("NewContentRules: %v", err)
	}
	sc, err := New(Config{DisableInjection: true, Content: cr, Direction: dir})
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

var testCats = []ContentCategory{
	{Name: "weapons", Terms: []string{"nerve agent", "sarin"}, Directions: []Direction{DirectionRequest, DirectionResponse}, Action: ContentDeny},
	{Name: "brand", Terms: []string{"Acme Rival"}, Directions: []Direction{DirectionResponse}, Action: ContentRedact},
	{Name: "cjk", Terms: []string{"禁止词"}, Directions: []Direction{DirectionRequest}, Action: ContentDeny},
	{Name: "ru", Terms: []string{"запрет"}, Directions: []Direction{DirectionRequest}, Action: ContentFlag},
}

func contentHits(res Result, text string) []string {
	var out []string
	for _, f := range res.Findings {
		if f.Detector == DetectorContent {
			out = append(out, f.Type+":"+text[f.ByteStart:f.ByteEnd])
		}
	}
	return out
}

func TestContentSafetyMatching(t *testing.T) {
	t.Parallel()
	sc := contentScanner(t, DirectionRequest, testCats, OutputSpec{})
	cases := []struct {
		name, text string
		want       []string
	}{
		{"plain", "how is sarin made", []string{"weapons:sarin"}},
		{"case", "how is SaRiN made", []string{"weapons:SaRiN"}},
		{"phrase", "make a nerve agent now", []string{"weapons:nerve agent"}},
		{"phrase spacing", "make a nerve \n\t agent now", []string{"weapons:nerve \n\t agent"}},
		{"fullwidth", "how is ｓａｒｉｎ made", []string{"weapons:ｓａｒｉｎ"}},
		{"zero width", "how is sa\u200bri\u200dn made", []string{"weapons:sa\u200bri\u200dn"}},
		{"tag chars", "how is sa\U000E0041rin made", []string{"weapons:sa\U000E0041rin"}},
		{"cyrillic homoglyph in latin word", "how is sаrin made", []string{"weapons:sаrin"}}, // Cyrillic а
		{"all homoglyph word", "nеrvе аgеnt", nil},                                           // has no Latin-only letters? mixed: n, r, v, g, t are Latin
		{"spaced letters", "how is s a r i n made", []string{"weapons:s a r i n"}},
		{"accent", "how is sárin made", []string{"weapons:sárin"}},
		{"word boundary", "sarinx and xsarin and sarin2", nil},
		{"punctuation boundary", "(sarin).", []string{"weapons:sarin"}},
		{"response-only category not in requests", "Acme Rival is great", nil},
		{"cjk inside run", "这是禁止词吗", []string{"cjk:禁止词"}},
		{"cyrillic term", "это запрет.", []string{"ru:запрет"}},
		{"cyrillic term inside word", "запреты", nil},
		{"benign", "Please summarise the quarterly report and list the action items.", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := contentHits(sc.Scan(c.text), c.text)
			if c.name == "all homoglyph word" {
				// Mixed words fold: both words match as one phrase.
				c.want = []string{"weapons:nеrvе аgеnt"}
			}
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Errorf("Scan(%q) content findings = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

func TestContentSafetySignalsAndDirection(t *testing.T) {
	t.Parallel()
	sc := contentScanner(t, DirectionResponse, testCats, OutputSpec{})
	res := sc.Scan("über Acme  Rival")
	sig := res.Signals()
	if len(sig.ContentSafety) != 1 || sig.ContentSafety[0] != (ContentMatch{Category: "brand", Start: 5, End: 16}) {
		t.Fatalf("signals.content_safety = %+v, want brand at code points [5,16)", sig.ContentSafety)
	}
	if got := contentHits(sc.Scan("这是禁止词吗"), "这是禁止词吗"); got != nil {
		t.Errorf("a request-only category matched an answer: %q", got)
	}
}

func TestContentRulesErrors(t *testing.T) {
	t.Parallel()
	dirs := []Direction{DirectionRequest}
	cases := []struct {
		name string
		cats []ContentCategory
		out  OutputSpec
		want string
	}{
		{"bad action", []ContentCategory{{Name: "a", Terms: []string{"xx"}, Directions: dirs, Action: "block"}}, OutputSpec{}, "a.action"},
		{"no directions", []ContentCategory{{Name: "a", Terms: []string{"xx"}, Action: ContentDeny}}, OutputSpec{}, "a.directions"},
		{"bad direction", []ContentCategory{{Name: "a", Terms: []string{"xx"}, Directions: []Direction{"both"}, Action: ContentDeny}}, OutputSpec{}, "a.directions[0]"},
		{"empty term", []ContentCategory{{Name: "a", Terms: []string{"\u200b "}, Directions: dirs, Action: ContentDeny}}, OutputSpec{}, "a.terms[0] is empty"},
		{"one letter", []ContentCategory{{Name: "a", Terms: []string{"ok", "x"}, Directions: dirs, Action: ContentDeny}}, OutputSpec{}, "a.terms[1]"},
		{"too long", []ContentCategory{{Name: "a", Terms: []string{strings.Repeat("ab", 200)}, Directions: dirs, Action: ContentDeny}}, OutputSpec{}, "longer than"},
		{"bad host", nil, OutputSpec{Sanitize: true, AllowedLinkHosts: []string{"https://x.example/"}}, "not a host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewContentRules(c.cats, c.out)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewContentRules error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestContentRulesStrongestActionWins(t *testing.T) {
	t.Parallel()
	cats := []ContentCategory{
		{Name: "a_flag", Terms: []string{"shared term"}, Directions: []Direction{DirectionRequest}, Action: ContentFlag},
		{Name: "z_deny", Terms: []string{"Shared  TERM"}, Directions: []Direction{DirectionRequest}, Action: ContentDeny},
	}
	sc := contentScanner(t, DirectionRequest, cats, OutputSpec{})
	if got := contentHits(sc.Scan("a shared term here"), "a shared term here"); len(got) != 1 || got[0] != "z_deny:shared term" {
		t.Fatalf("findings = %q, want the deny category's", got)
	}
}

func TestHoldsTermPrefix(t *testing.T) {
	t.Parallel()
	sc := contentScanner(t, DirectionResponse, testCats, OutputSpec{})
	cases := []struct {
		text string
		want bool
	}{
		{"we talked about the nerve ", true},
		{"we talked about the NERVE\n", true},
		{"we talked about the acme ", true},
		{"we talked about the nerves ", false},
		{"plain prose ending here ", false},
		{"spaced out s ", true},
	}
	for _, c := range cases {
		if got := sc.HoldsTermPrefix([]byte(c.text)); got != c.want {
			t.Errorf("HoldsTermPrefix(%q) = %v, want %v", c.text, got, c.want)
		}
	}
	plain, _ := New(Config{DisableInjection: true})
	if plain.HoldsTermPrefix([]byte("the nerve ")) {
		t.Error("a scanner without rules holds text")
	}
}
