package detect

import (
	"bytes"
	"encoding/binary"
	mbits "math/bits"
	"net/netip"
)

// PII entity types, with Presidio's names.
const (
	TypeCreditCard = "CREDIT_CARD"
	TypeEmail      = "EMAIL_ADDRESS"
	TypePhone      = "PHONE_NUMBER"
	TypeIBAN       = "IBAN_CODE"
	TypeUSSSN      = "US_SSN"
	TypeIPAddress  = "IP_ADDRESS"
)

// scanPII finds the six Presidio pattern types in one pass over b. Candidates
// start only at token boundaries and are confirmed by validators (Luhn,
// mod-97, SSN ranges, IP parsing).
func (s *scratch) scanPII(b []byte, minScore float64) {
	add := func(typ string, i, j int, score float64) {
		if score >= minScore {
			s.addClean(detPII, typ, i, j, score)
		}
	}
	// Every candidate needs a trigger byte (a digit, '@', '+', '(' or
	// ':') at most four bytes after the position it is tried at: numbers,
	// e-mail addresses and "::" start with one, an IBAN has digits at +2
	// and +3, and an IPv6 address starting with a hex letter has a ':'
	// within five bytes. Positions further from the next trigger act on
	// nothing, so the loop jumps over them (landing inside a word skips to
	// its end, as arriving from its start would).
	t := -1 // the next trigger byte at or after i
	for i := 0; i < len(b); i++ {
		if t < i {
			if t = nextTrigger(b, i); t == len(b) {
				break
			}
		}
		if i < t-4 {
			i = t - 4
		}
		c := b[i]
		k := piiClass[c]
		if k == 0 {
			continue // nothing below acts on it
		}
		if k == pcAt {
			if st, en, ok := matchEmail(b, i); ok {
				add(TypeEmail, st, en, 1.0)
				i = en - 1
			}
			continue
		}
		if i > 0 && identTab[b[i-1]] {
			// Inside a word: jump to its end ('@' and separators stop the jump).
			if isASCIIAlnum(c) {
				for i+1 < len(b) && identTab[b[i+1]] {
					i++
				}
			}
			continue
		}
		if i >= 2 && (b[i-1] == '.' || b[i-1] == '-') && isDigit(b[i-2]) {
			continue // inside a dotted or dashed number
		}
		switch {
		case isDigit(c) || c == '+' || c == '(':
			if en, typ, score := matchNumeric(b, i); en > i {
				add(typ, i, en, score)
				i = en - 1
				continue
			}
			if isDigit(c) {
				// Do not restart inside a rejected chain of digit groups.
				j := i
				for j < len(b) && (isDigit(b[j]) || (b[j] == ' ' || b[j] == '-' || b[j] == '.') && j+1 < len(b) && isDigit(b[j+1])) {
					j++
				}
				if j > i+1 && !(j < len(b) && b[j] == ':') {
					i = j - 1
					continue
				}
			}
			if (isHexByte(c) || c == ':') && colonSoon(b, i) {
				if en, ok := matchIPv6(b, i); ok {
					add(TypeIPAddress, i, en, 0.95)
					i = en - 1
				}
			}
		case isLetter(c):
			if i+3 < len(b) && isDigit(b[i+2]) && isDigit(b[i+3]) {
				if en, ok := matchIBAN(b, i); ok {
					add(TypeIBAN, i, en, 1.0)
					i = en - 1
					continue
				}
			}
			if isHexByte(c) && colonSoon(b, i) {
				if en, ok := matchIPv6(b, i); ok {
					add(TypeIPAddress, i, en, 0.95)
					i = en - 1
				}
			}
		case c == ':':
			if i+1 < len(b) && b[i+1] == ':' {
				if en, ok := matchIPv6(b, i); ok {
					add(TypeIPAddress, i, en, 0.95)
					i = en - 1
				}
			}
		}
	}
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isEmailLocal(c byte) bool {
	return isASCIIAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-' || c == '\''
}

// matchEmail extends around the '@' at at.
func matchEmail(b []byte, at int) (int, int, bool) {
	st := at
	for st > 0 && isEmailLocal(b[st-1]) && at-st < 64 {
		st--
	}
	for st < at && (b[st] == '.' || b[st] == '\'') {
		st++
	}
	if st == at {
		return 0, 0, false
	}
	// Domain: labels of [A-Za-z0-9-] separated by dots, TLD of 2+ letters.
	en, lastDot, labels := at+1, -1, 0
	labelStart := en
	for en < len(b) {
		c := b[en]
		if isASCIIAlnum(c) || c == '-' {
			en++
			continue
		}
		if c == '.' && en > labelStart && en+1 < len(b) && isASCIIAlnum(b[en+1]) {
			lastDot = en
			labels++
			en++
			labelStart = en
			continue
		}
		break
	}
	if lastDot < 0 || en-at > 255 {
		return 0, 0, false
	}
	tld := b[lastDot+1 : en]
	if len(tld) < 2 {
		return 0, 0, false
	}
	for _, c := range tld {
		if !isLetter(c) {
			return 0, 0, false
		}
	}
	return st, en, true
}

// matchNumeric tries the digit-led types at i: IPv4, SSN, credit card, phone.
// It returns the end of the match (or i) and its type and score.
func matchNumeric(b []byte, i int) (int, string, float64) {
	if isDigit(b[i]) {
		if en, ok := matchIPv4(b, i); ok && !afterVersionWord(b, i) {
			return en, TypeIPAddress, 0.95
		}
		if en, score, ok := matchSSN(b, i); ok {
			return en, TypeUSSSN, score
		}
		if en, ok := matchCard(b, i); ok {
			return en, TypeCreditCard, 1.0
		}
	}
	if en, score, ok := matchPhone(b, i); ok {
		return en, TypePhone, score
	}
	return i, "", 0
}

// endsToken reports whether position j ends a token (not followed by a
// letter, digit or a joiner leading to one).
func endsToken(b []byte, j int) bool {
	if j >= len(b) {
		return true
	}
	c := b[j]
	if isASCIIAlnum(c) || c == '_' {
		return false
	}
	if (c == '.' || c == '-') && j+1 < len(b) && isDigit(b[j+1]) {
		return false
	}
	return true
}

func matchIPv4(b []byte, i int) (int, bool) {
	j := i
	for part := 0; part < 4; part++ {
		if part > 0 {
			if j >= len(b) || b[j] != '.' {
				return 0, false
			}
			j++
		}
		st := j
		v := 0
		for j < len(b) && isDigit(b[j]) && j-st < 4 {
			v = v*10 + int(b[j]-'0')
			j++
		}
		n := j - st
		if n == 0 || n > 3 || v > 255 || (n > 1 && b[st] == '0') {
			return 0, false
		}
	}
	if !endsToken(b, j) {
		return 0, false
	}
	return j, true
}

func matchIPv6(b []byte, i int) (int, bool) {
	// A colon must come within the first five bytes.
	k := i
	for k < len(b) && k-i < 5 && b[k] != ':' {
		k++
	}
	if k >= len(b) || b[k] != ':' {
		return 0, false
	}
	j := i
	colons, hexd := 0, 0
	for j < len(b) && j-i < 45 {
		c := b[j]
		if isHexByte(c) {
			hexd++
		} else if c == ':' {
			colons++
		} else if c != '.' {
			break
		}
		j++
	}
	for j > i && (b[j-1] == '.' || (b[j-1] == ':' && (j-2 < i || b[j-2] != ':'))) {
		if b[j-1] == ':' {
			colons--
		}
		j--
	}
	// A valid address has at most eight colons (seven groups and a "::"
	// at one end): longer runs ("1:1:1:...") are refused before netip.
	if colons < 2 || colons > 8 || hexd < 2 || j < len(b) && (isASCIIAlnum(b[j]) || b[j] == '_') {
		return 0, false
	}
	// Without "::" or an embedded IPv4 address, an IPv6 address has eight
	// groups; netip would reject fewer (and allocate its error to say so).
	if colons < 7 && !hasDoubleColon(b[i:j]) && bytes.IndexByte(b[i:j], '.') < 0 {
		return 0, false
	}
	a, err := netip.ParseAddr(unsafeString(b[i:j]))
	if err != nil || !a.Is6() {
		return 0, false
	}
	return j, true
}

// matchSSN accepts AAA-GG-SSSS (or with spaces/dots) with valid ranges.
func matchSSN(b []byte, i int) (int, float64, bool) {
	if i+11 > len(b) {
		return 0, 0, false
	}
	sep := b[i+3]
	if sep != '-' && sep != ' ' && sep != '.' {
		return 0, 0, false
	}
	if b[i+6] != sep {
		return 0, 0, false
	}
	for _, k := range [...]int{0, 1, 2, 4, 5, 7, 8, 9, 10} {
		if !isDigit(b[i+k]) {
			return 0, 0, false
		}
	}
	if !endsToken(b, i+11) {
		return 0, 0, false
	}
	area := int(b[i]-'0')*100 + int(b[i+1]-'0')*10 + int(b[i+2]-'0')
	group := int(b[i+4]-'0')*10 + int(b[i+5]-'0')
	serial := int(b[i+7]-'0')*1000 + int(b[i+8]-'0')*100 + int(b[i+9]-'0')*10 + int(b[i+10]-'0')
	if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
		return 0, 0, false
	}
	// Well-known invalid examples.
	if area == 123 && group == 45 && serial == 6789 || area == 78 && group == 5 && serial == 1120 {
		return 0, 0, false
	}
	score := 0.85
	if sep != '-' {
		score = 0.6
	}
	return i + 11, score, true
}

// matchCard accepts 12-19 digits, optionally in groups separated by single
// spaces, dashes or dots (dots only in card layouts), with a known issuer
// prefix and a valid Luhn check digit.
func matchCard(b []byte, i int) (int, bool) {
	var digits [19]byte
	n := 0
	j := i
	var sep byte
	for j < len(b) {
		c := b[j]
		if isDigit(c) {
			if n == 19 {
				return 0, false
			}
			digits[n] = c - '0'
			n++
			j++
			continue
		}
		if (c == ' ' || c == '-' || c == '.') && j+1 < len(b) && isDigit(b[j+1]) && n > 0 && (sep == 0 || sep == c) {
			sep = c
			j++
			continue
		}
		break
	}
	if n < 12 || !endsToken(b, j) {
		return 0, false
	}
	// Dots, which also separate versions and decimals, only in the
	// printed card layouts: 4-4-4-4(-3) and 4-6-4 or 4-6-5.
	if sep == '.' && !dottedCardGroups(b[i:j]) {
		return 0, false
	}
	// A separator must delimit groups of 4-6 digits (4-4-4-4, 4-6-5).
	if sep != 0 {
		run := 0
		for k := i; k < j; k++ {
			if b[k] == sep {
				if run < 3 || run > 6 {
					return 0, false
				}
				run = 0
			} else {
				run++
			}
		}
	}
	d := digits[:n]
	if !cardPrefix(d) || !luhn(d) {
		return 0, false
	}
	same := true
	for _, x := range d[1:] {
		if x != d[0] {
			same = false
			break
		}
	}
	return j, !same
}

func cardPrefix(d []byte) bool {
	switch d[0] {
	case 3, 4, 5, 6:
		return true
	case 2:
		// Mastercard 2221-2720, JCB 2131.
		p := int(d[1])*100 + int(d[2])*10 + int(d[3])
		return p == 131 || (d[1] >= 2 && d[1] <= 7)
	case 1:
		return d[1] == 8 && d[2] == 0 && d[3] == 0
	}
	return false
}

func luhn(d []byte) bool {
	sum := 0
	double := false
	for k := len(d) - 1; k >= 0; k-- {
		x := int(d[k])
		if double {
			x *= 2
			if x > 9 {
				x -= 9
			}
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}

// matchPhone accepts international (+CC ...) and national formats: digit
// groups separated by single spaces, dashes, dots or a parenthesised area
// code, 7 to 15 digits, with an optional extension.
func matchPhone(b []byte, i int) (int, float64, bool) {
	j := i
	plus := false
	if b[j] == '+' {
		plus = true
		j++
	}
	digits, groups, run := 0, 0, 0
	paren, seps := false, 0
	var sepKinds [4]bool
	groupLens := [8]int{}
	for j < len(b) {
		c := b[j]
		switch {
		case isDigit(c):
			digits++
			run++
			j++
			continue
		case c == '(' && run == 0 && !paren && j+1 < len(b) && isDigit(b[j+1]):
			// "(0)" trunk prefix or area code.
			k := j + 1
			for k < len(b) && isDigit(b[k]) {
				k++
			}
			if k >= len(b) || b[k] != ')' || k-j-1 > 4 {
				goto done
			}
			digits += k - j - 1
			if groups < len(groupLens) {
				groupLens[groups] = k - j - 1
			}
			groups++
			paren = true
			j = k + 1
			if j < len(b) && (b[j] == ' ' || b[j] == '-') && j+1 < len(b) && isDigit(b[j+1]) {
				j++
			}
			continue
		case (c == ' ' || c == '-' || c == '.') && run > 0 && j+1 < len(b) && (isDigit(b[j+1]) || b[j+1] == '('):
			if groups < len(groupLens) {
				groupLens[groups] = run
			}
			groups++
			run = 0
			seps++
			switch c {
			case ' ':
				sepKinds[0] = true
			case '-':
				sepKinds[1] = true
			case '.':
				sepKinds[2] = true
			}
			j++
			continue
		}
		break
	}
done:
	if run > 0 {
		if groups < len(groupLens) {
			groupLens[groups] = run
		}
		groups++
	}
	if digits < 7 || digits > 15 {
		return 0, 0, false
	}
	// Extension: x123, ext. 123.
	if j+1 < len(b) && (b[j] == 'x' || b[j] == 'X') && isDigit(b[j+1]) {
		k := j + 1
		for k < len(b) && isDigit(b[k]) && k-j <= 6 {
			k++
		}
		j = k
	}
	if !endsToken(b, j) {
		return 0, 0, false
	}
	if groups > 6 {
		return 0, 0, false
	}
	// Dates such as 2023-01-15 or 15.01.2023 (maybe followed by a time) are not phones.
	year := (b[i] == '1' && b[i+1] == '9') || (b[i] == '2' && b[i+1] == '0')
	if groups >= 3 && !plus && !paren && (groupLens[0] == 4 && year && groupLens[1] <= 2 && groupLens[2] <= 2 ||
		groupLens[0] <= 2 && groupLens[1] <= 2 && groupLens[2] == 4 && groups == 3) {
		return 0, 0, false
	}
	thousandsLike := false
	if !plus && !paren && groups >= 2 && groups <= len(groupLens) {
		// Thousands separators: 1 380 004 385, 4 500 000.
		thousands := groupLens[0] <= 3
		for g := 1; g < groups; g++ {
			thousands = thousands && groupLens[g] == 3
		}
		// ISBN-like and check-digit suffixes: 978-3-16-148410-0.
		if groupLens[groups-1] == 1 {
			return 0, 0, false
		}
		thousandsLike = thousands && !sepKinds[1]
	}
	// The SSN shape (3-2-4 with dashes) belongs to US_SSN, valid or not.
	if !plus && !paren && groups == 3 && groupLens[0] == 3 && groupLens[1] == 2 && groupLens[2] == 4 {
		return 0, 0, false
	}
	mixed := sepKinds[0] && sepKinds[2] || sepKinds[1] && sepKinds[2]
	if mixed {
		return 0, 0, false
	}
	if !plus && !paren && sepKinds[2] && !sepKinds[0] && !sepKinds[1] {
		// Dotted numbers: two groups are a decimal (pi, coordinates,
		// 1234567.89), and a one-digit group is a version (120.0.6099.109).
		// Dotted phones (555.123.4567, 01.84.17.61.18) have neither.
		if groups == 2 {
			return 0, 0, false
		}
		for g := 1; g < groups && g < len(groupLens); g++ {
			if groupLens[g] == 1 {
				return 0, 0, false
			}
		}
	}
	score := 0.4
	switch {
	case plus:
		score = 0.75
	case paren:
		score = 0.7
	case groups >= 2 && digits >= 9:
		score = 0.7
	case groups >= 2:
		score = 0.55
	case digits >= 10 && digits <= 11:
		// A bare run of digits is as often an epoch, an id, a prime or an
		// order number as a phone: it needs a context word ("Desk:",
		// "call me on", "-Fax").
		score = 0.35
	}
	// Two bare groups (house number and street number, amounts, versions)
	// need a context word.
	if !plus && !paren && groups == 2 && digits <= 9 {
		score = 0.35
		if groupLens[0] < 2 || groupLens[1] < 3 {
			score = 0.2
		}
	}
	if thousandsLike {
		score = 0.3 // needs a context word
	}
	if score >= 0.3 && score < DefaultPIIMinScore && hasPhoneContext(b, i, j) {
		score += 0.2
	}
	if score > 1 {
		score = 1
	}
	return j, score, true
}

var phoneContext = []string{"phone", "call", "tel", "mobile", "cell", "fax", "contact", "reach", "whatsapp", "sms", "text me", "dial", "ring me", "handy", "téléphone", "telefon", "teléfono", "answering", "office", "desk", "registered"}

// hasPhoneContext looks for a context word in the 40 bytes before the
// number at [i, j) or the 12 bytes after it ("... office", "... fax").
func hasPhoneContext(b []byte, i, j int) bool {
	before := b[max(0, i-40):i]
	after := b[j:min(len(b), j+12)]
	for _, kw := range phoneContext {
		if containsFold(before, kw) || containsFold(after, kw) {
			return true
		}
	}
	return false
}

// containsFold reports whether ASCII-lower kw occurs in b, ignoring ASCII case.
func containsFold(b []byte, kw string) bool {
	for i := 0; i+len(kw) <= len(b); i++ {
		k := 0
		for k < len(kw) && lowerASCII(b[i+k]) == kw[k] {
			k++
		}
		if k == len(kw) {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ibanLen holds the IBAN length per country (ISO 13616 registry).
var ibanLen = map[[2]byte]int{
	{'A', 'D'}: 24, {'A', 'E'}: 23, {'A', 'L'}: 28, {'A', 'T'}: 20, {'A', 'Z'}: 28, {'B', 'A'}: 20, {'B', 'E'}: 16,
	{'B', 'G'}: 22, {'B', 'H'}: 22, {'B', 'R'}: 29, {'B', 'Y'}: 28, {'C', 'H'}: 21, {'C', 'R'}: 22, {'C', 'Y'}: 28,
	{'C', 'Z'}: 24, {'D', 'E'}: 22, {'D', 'K'}: 18, {'D', 'O'}: 28, {'E', 'E'}: 20, {'E', 'G'}: 29, {'E', 'S'}: 24,
	{'F', 'I'}: 18, {'F', 'O'}: 18, {'F', 'R'}: 27, {'G', 'B'}: 22, {'G', 'E'}: 22, {'G', 'I'}: 23, {'G', 'L'}: 18,
	{'G', 'R'}: 27, {'G', 'T'}: 28, {'H', 'R'}: 21, {'H', 'U'}: 28, {'I', 'E'}: 22, {'I', 'L'}: 23, {'I', 'Q'}: 23,
	{'I', 'S'}: 26, {'I', 'T'}: 27, {'J', 'O'}: 30, {'K', 'W'}: 30, {'K', 'Z'}: 20, {'L', 'B'}: 28, {'L', 'C'}: 32,
	{'L', 'I'}: 21, {'L', 'T'}: 20, {'L', 'U'}: 20, {'L', 'V'}: 21, {'M', 'C'}: 27, {'M', 'D'}: 24, {'M', 'E'}: 22,
	{'M', 'K'}: 19, {'M', 'R'}: 27, {'M', 'T'}: 31, {'M', 'U'}: 30, {'N', 'L'}: 18, {'N', 'O'}: 15, {'P', 'K'}: 24,
	{'P', 'L'}: 28, {'P', 'S'}: 29, {'P', 'T'}: 25, {'Q', 'A'}: 29, {'R', 'O'}: 24, {'R', 'S'}: 22, {'S', 'A'}: 24,
	{'S', 'C'}: 31, {'S', 'E'}: 24, {'S', 'I'}: 19, {'S', 'K'}: 24, {'S', 'M'}: 27, {'S', 'T'}: 25, {'S', 'V'}: 28,
	{'T', 'L'}: 23, {'T', 'N'}: 24, {'T', 'R'}: 26, {'U', 'A'}: 29, {'V', 'A'}: 22, {'V', 'G'}: 24, {'X', 'K'}: 20,
}

// matchIBAN accepts a country code, two check digits and the BBAN, compact
// or in groups of four separated by single spaces, any case, mod-97 valid.
func matchIBAN(b []byte, i int) (int, bool) {
	if i+15 > len(b) || !isLetter(b[i+1]) || !isDigit(b[i+2]) || !isDigit(b[i+3]) {
		return 0, false
	}
	cc := [2]byte{b[i] &^ 0x20, b[i+1] &^ 0x20}
	want, ok := ibanLen[cc]
	if !ok {
		return 0, false
	}
	var buf [34]byte
	n := 0
	j := i
	spaced := false
	for j < len(b) && n < want {
		c := b[j]
		if isASCIIAlnum(c) {
			buf[n] = lowerASCII(c)
			n++
			j++
			continue
		}
		if c == ' ' && n%4 == 0 && j+1 < len(b) && isASCIIAlnum(b[j+1]) && (spaced || n == 4) {
			spaced = true
			j++
			continue
		}
		break
	}
	if n != want || !endsToken(b, j) {
		return 0, false
	}
	// Mod-97 over BBAN + country + check digits, letters as 10..35.
	rem := 0
	step := func(c byte) {
		if isDigit(c) {
			rem = (rem*10 + int(c-'0')) % 97
		} else {
			rem = (rem*100 + int(c-'a'+10)) % 97
		}
	}
	for _, c := range buf[4:n] {
		step(c)
	}
	for _, c := range buf[:4] {
		step(c)
	}
	return j, rem == 1
}

// afterVersionWord reports "version 1.2.3.4", "v1.2.3.4" and "ver. 1.2.3.4".
func afterVersionWord(b []byte, i int) bool {
	st := max(0, i-12)
	w := b[st:i]
	return containsFold(w, "version") || containsFold(w, "ver.") || containsFold(w, "release") ||
		i > 0 && (b[i-1] == 'v' || b[i-1] == 'V')
}

func hasDoubleColon(b []byte) bool {
	for k := 0; k+1 < len(b); k++ {
		if b[k] == ':' && b[k+1] == ':' {
			return true
		}
	}
	return false
}

// colonSoon reports a ':' within the first five bytes from i, which every
// IPv6 address has.
func colonSoon(b []byte, i int) bool {
	for k := i; k < len(b) && k < i+5; k++ {
		if b[k] == ':' {
			return true
		}
	}
	return false
}

// piiClass sorts bytes for scanPII: only '@', digits, '+', '(', letters
// and ':' start a candidate or a word to skip.
const (
	pcAt = 1 + iota
	pcOther
)

var piiClass = func() (t [256]uint8) {
	for c := range 256 {
		b := byte(c)
		switch {
		case b == '@':
			t[c] = pcAt
		case isDigit(b) || b == '+' || b == '(' || isLetter(b) || b == ':':
			t[c] = pcOther
		}
	}
	return t
}()

// nextTrigger returns the first position from i of a piiTrigger byte, or
// len(b); eight bytes at a time.
func nextTrigger(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		if m := (swarIn(x, '0', ':') | swarEq(x, '@') | swarEq(x, '+') | swarEq(x, '(')) &^ x; m != 0 {
			return i + mbits.TrailingZeros64(m)/8
		}
	}
	for i < len(b) && !piiTrigger[b[i]] {
		i++
	}
	return i
}

// piiTrigger marks the bytes one of which every PII candidate has within
// its first five bytes (see scanPII).
var piiTrigger = func() (t [256]bool) {
	for c := range 256 {
		b := byte(c)
		t[c] = isDigit(b) || b == '@' || b == '+' || b == '(' || b == ':'
	}
	return t
}()

// identTab marks ASCII letters, digits and '_': one lookup for the word
// skip in scanPII.
var identTab = func() (t [256]bool) {
	for c := range 256 {
		t[c] = isASCIIAlnum(byte(c)) || c == '_'
	}
	return t
}()

// dottedCardGroups reports whether the dot-separated digit groups of g are
// a printed card layout: 4-4-4-4, 4-4-4-4-3 or 4-6-4, 4-6-5.
func dottedCardGroups(g []byte) bool {
	var lens [6]int
	n, run := 0, 0
	for _, c := range g {
		if c != '.' {
			run++
			continue
		}
		if n == len(lens)-1 {
			return false
		}
		lens[n], n, run = run, n+1, 0
	}
	lens[n] = run
	n++
	switch {
	case n == 4 && lens[0] == 4 && lens[1] == 4 && lens[2] == 4 && lens[3] == 4,
		n == 5 && lens[0] == 4 && lens[1] == 4 && lens[2] == 4 && lens[3] == 4 && lens[4] == 3,
		n == 3 && lens[0] == 4 && lens[1] == 6 && (lens[2] == 4 || lens[2] == 5):
		return true
	}
	return false
}
