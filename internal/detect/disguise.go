package detect

import "strings"

// Disguises rewrite text the way an attacker hides it from pattern
// matching while a model still reads it (issue 24): a combining mark after
// every character, small capitals, upside-down letters, regional
// indicators, mathematical bold, fullwidth and circled letters. make eval
// (tools/eval) and the tests score each disguise of an injection against the
// plain text. The alphabets below are written out by hand, independently of
// the tables the matching view folds with (matchfold.go), so that a test
// does not just invert the code it checks. Like train.go, this is only for
// the tools and tests: nothing in the server calls it.

// DisguiseNames lists the disguises Disguise knows, in a stable order.
func DisguiseNames() []string {
	return []string{"combining_low_line", "combining_acute", "combining_long_stroke", "small_capitals",
		"upside_down", "regional_indicators", "math_bold", "fullwidth", "circled"}
}

const (
	plainLower    = "abcdefghijklmnopqrstuvwxyz"
	smallCapitals = "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘǫʀꜱᴛᴜᴠᴡxʏᴢ"
	upsideLower   = "ɐqɔpǝɟƃɥᴉɾʞlɯuodbɹsʇnʌʍxʎz"
	upsideUpper   = "∀ᗺƆᗡƎℲ⅁HIſʞ˥WNOԀΌᴚS⊥∩ΛMX⅄Z"
)

// Disguise returns text disguised by the named method; ok is false for a
// name DisguiseNames does not list.
func Disguise(name, text string) (string, bool) {
	var b strings.Builder
	switch name {
	case "combining_low_line", "combining_acute", "combining_long_stroke":
		mark := map[string]rune{"combining_low_line": 0x332, "combining_acute": 0x301, "combining_long_stroke": 0x336}[name]
		for _, r := range text {
			b.WriteRune(r)
			if r != ' ' {
				b.WriteRune(mark)
			}
		}
	case "small_capitals":
		writeMapped(&b, text, []rune(smallCapitals), []rune(smallCapitals))
	case "upside_down":
		rs := []rune(text)
		lo, up := []rune(upsideLower), []rune(upsideUpper)
		for i := len(rs) - 1; i >= 0; i-- {
			r := rs[i]
			switch {
			case 'a' <= r && r <= 'z':
				r = lo[r-'a']
			case 'A' <= r && r <= 'Z':
				r = up[r-'A']
			case r == '?':
				r = '¿'
			case r == '!':
				r = '¡'
			case r == '.':
				r = '˙'
			}
			b.WriteRune(r)
		}
	case "regional_indicators":
		writeOffset(&b, text, 0x1F1E6, 0x1F1E6)
	case "math_bold":
		writeOffset(&b, text, 0x1D41A, 0x1D400)
	case "fullwidth":
		writeOffset(&b, text, 0xFF41, 0xFF21)
	case "circled":
		writeOffset(&b, text, 0x24D0, 0x24B6)
	default:
		return "", false
	}
	return b.String(), true
}

// writeMapped writes text with a-z and A-Z replaced from the alphabets.
func writeMapped(b *strings.Builder, text string, lower, upper []rune) {
	for _, r := range text {
		switch {
		case 'a' <= r && r <= 'z':
			r = lower[r-'a']
		case 'A' <= r && r <= 'Z':
			r = upper[r-'A']
		}
		b.WriteRune(r)
	}
}

// writeOffset writes text with a-z and A-Z moved to the blocks starting at
// lower and upper.
func writeOffset(b *strings.Builder, text string, lower, upper rune) {
	for _, r := range text {
		switch {
		case 'a' <= r && r <= 'z':
			r = lower + r - 'a'
		case 'A' <= r && r <= 'Z':
			r = upper + r - 'A'
		}
		b.WriteRune(r)
	}
}
