package detect

import (
	"bytes"
	"encoding/base64"
)

// Verifiers for credential formats that need more than a prefix and a body.

// randomBody requires a digit and a letter and few dashes, so that words
// joined by dashes ("sk-learn-...") are not keys.
func randomBody(v []byte) bool {
	var dig, let, dash int
	for _, c := range v {
		switch {
		case isDigit(c):
			dig++
		case isLetter(c):
			let++
		case c == '-':
			dash++
		}
	}
	return dig > 0 && let > 0 && dash <= 3
}

func newRelicLicense(b []byte, ps, pe int) (int, int, bool) {
	st := ps - 36
	if st < 0 || (st > 0 && isASCIIAlnum(b[st-1])) || !tokenEnds(b, pe, csAlnum) {
		return 0, 0, false
	}
	for _, c := range b[st:ps] {
		if !isASCIIAlnum(c) {
			return 0, 0, false
		}
	}
	return st, pe, !lowEntropy(b[st:ps])
}

// dropboxLongLived: [a-z0-9]{11}AAAAAAAAAA[a-zA-Z0-9_=-]{43}.
func dropboxLongLived(b []byte, ps, pe int) (int, int, bool) {
	st := ps - 11
	if st < 0 || (st > 0 && isASCIIAlnum(b[st-1])) {
		return 0, 0, false
	}
	for _, c := range b[st:ps] {
		if !isASCIIAlnum(c) {
			return 0, 0, false
		}
	}
	e := pe
	for e < len(b) && e-pe <= 43 && (inCharset(csToken, b[e]) || b[e] == '=') { // longer is refused below
		e++
	}
	return st, e, e-pe == 43
}

func googleClientID(b []byte, ps, pe int) (int, int, bool) {
	st := ps
	for st > 0 && (isASCIIAlnum(b[st-1]) || b[st-1] == '-') && ps-st < 80 {
		st--
	}
	return st, pe, ps-st >= 40
}

// salesforceToken: 00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{80,}.
func salesforceToken(b []byte, ps, pe int) (int, int, bool) {
	e := pe
	for e < len(b) && isASCIIAlnum(b[e]) && e-pe <= 15 {
		e++
	}
	if e-pe < 12 || e >= len(b) || b[e] != '!' {
		return 0, 0, false
	}
	k := e + 1
	for k < len(b) && (isASCIIAlnum(b[k]) || b[k] == '.' || b[k] == '_') {
		k++
	}
	return ps, k, k-e-1 >= 80
}

func hexValue32(b []byte, ps, pe int) (int, int, bool) {
	e := pe
	for e < len(b) && isHexByte(b[e]) {
		e++
	}
	return pe, e, e-pe == 32 && tokenEnds(b, e, csHex)
}

// discordBot: [MNO][A-Za-z0-9]{23,25}.[A-Za-z0-9_-]{6}.[A-Za-z0-9_-]{27,38}.
func discordBot(b []byte, ps, pe int) (int, int, bool) {
	e := pe
	for e < len(b) && isASCIIAlnum(b[e]) && e-ps <= 26 {
		e++
	}
	if n := e - ps; n < 24 || n > 26 || e >= len(b) || b[e] != '.' {
		return 0, 0, false
	}
	k := e + 1
	for k < len(b) && inCharset(csToken, b[k]) {
		k++
	}
	if k-e-1 != 6 || k >= len(b) || b[k] != '.' {
		return 0, 0, false
	}
	m := k + 1
	for m < len(b) && inCharset(csToken, b[m]) {
		m++
	}
	n := m - k - 1
	return ps, m, n >= 27 && n <= 38
}

// jwkPrivateMemo is jwkPrivate continuing, for a "kty" inside the stretch
// an earlier one searched in vain (m), where that search stopped: a text of
// "kty" repeated was searched 2 KiB per hit. (A fresh search could pair the
// quotes of malformed JSON differently; on JSON the answers are the same.)
func jwkPrivateMemo(b []byte, ps, pe int, m *markerMemo) (int, int, bool) {
	lim := min(len(b), pe+2048)
	k, from := pe, pe
	if m.jwkValid && pe >= m.jwkFrom && pe <= m.jwkNext {
		if m.jwkClosed {
			return 0, 0, false // the same object, already searched to its end
		}
		k, from = m.jwkNext, m.jwkFrom
	}
	for ; k < lim && b[k] != '}'; k++ {
		if b[k] != '"' {
			continue
		}
		j := k + 1
		for j < lim && isLetter(b[j]) {
			j++
		}
		if j >= lim || b[j] != '"' {
			continue
		}
		switch string(b[k+1 : j]) {
		case "d", "p", "q", "dp", "dq", "qi", "k":
		default:
			k = j
			continue
		}
		st, en, ok := assignedValue(b, j+1)
		if ok && en-st >= 16 {
			m.jwkValid = false
			return st, en, true
		}
		k = j
	}
	m.jwkValid, m.jwkFrom, m.jwkNext, m.jwkClosed = true, from, k, k < len(b) && k < lim && b[k] == '}'
	return 0, 0, false
}

// facebookAppToken: app id (15-16 digits) | app secret (27 token bytes).
func facebookAppToken(b []byte, ps, pe int) (int, int, bool) {
	st := ps
	for st > 0 && isDigit(b[st-1]) && ps-st <= 16 {
		st--
	}
	if n := ps - st; n < 15 || n > 16 || (st > 0 && isASCIIAlnum(b[st-1])) {
		return 0, 0, false
	}
	e := pe
	for e < len(b) && inCharset(csToken, b[e]) {
		e++
	}
	return st, e, e-pe == 27 && !lowEntropy(b[pe:e])
}

// braintree: access_token$production$<16 alnum>$<32 hex>.
func braintree(b []byte, ps, pe int) (int, int, bool) {
	e := pe
	for e < len(b) && isASCIIAlnum(b[e]) && e-pe <= 16 {
		e++
	}
	if e-pe < 12 || e >= len(b) || b[e] != '$' {
		return 0, 0, false
	}
	k := e + 1
	for k < len(b) && isHexByte(b[k]) {
		k++
	}
	return ps, k, k-e-1 == 32
}

// jiraPAT: an Atlassian (Jira / Confluence Data Center) personal access
// token is base64 of "<12-digit id>:<20 random bytes>", 44 characters with no
// distinctive prefix of its own. The prefilter fires on the base64 of the
// first two digits ("MD".."OT"); the decoded id and colon confirm it, so
// hashes, UUIDs and ordinary base64 do not match.
func jiraPAT(b []byte, ps, pe int) (int, int, bool) {
	const n = 44
	if ps+n > len(b) || (ps > 0 && (isASCIIAlnum(b[ps-1]) || b[ps-1] == '+')) {
		return 0, 0, false
	}
	e := ps + n
	if e < len(b) && (isASCIIAlnum(b[e]) || b[e] == '+' || b[e] == '_' || b[e] == '-') {
		return 0, 0, false
	}
	v := b[ps:e]
	for _, c := range v {
		if !isASCIIAlnum(c) && c != '+' && c != '/' {
			return 0, 0, false
		}
	}
	var dec [15]byte
	if _, err := base64.StdEncoding.Decode(dec[:], v[:20]); err != nil {
		return 0, 0, false
	}
	for _, c := range dec[:12] {
		if !isDigit(c) {
			return 0, 0, false
		}
	}
	if dec[12] != ':' || lowEntropy(v[16:]) {
		return 0, 0, false
	}
	return ps, e, true
}

// azureIdentifiableKey: Azure keys in the identifiable format carry the
// signature "JQQJ9" after 52 random base64 characters (84 characters in all,
// 86-88 with padding or a longer tail).
func azureIdentifiableKey(b []byte, ps, pe int) (int, int, bool) {
	st := ps - 52
	if st < 0 || (st > 0 && (isASCIIAlnum(b[st-1]) || b[st-1] == '+' || b[st-1] == '/')) {
		return 0, 0, false
	}
	for _, c := range b[st:ps] {
		if !isASCIIAlnum(c) {
			return 0, 0, false
		}
	}
	e := pe
	for e < len(b) && isASCIIAlnum(b[e]) && e-st <= 88 {
		e++
	}
	n := e - st
	if n < 84 || n > 88 || (e < len(b) && (b[e] == '_' || b[e] == '-')) || lowEntropy(b[st:ps]) {
		return 0, 0, false
	}
	for e < len(b) && b[e] == '=' && e-st < 88 {
		e++
	}
	return st, e, true
}

// googleClientSecret looks, after a verified Google OAuth client id, for the
// legacy client secret (24 characters of [A-Za-z0-9_-], no prefix) that
// configuration files put next to it: the client id is the context keyword.
// The value must mix upper case, lower case and digits and look random, so
// hex hashes and UUIDs never match.
func googleClientSecret(b []byte, from int) (int, int, bool) {
	lim := min(len(b), from+320)
	for i := from; i < lim; {
		if !inCharset(csToken, b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && (inCharset(csToken, b[j]) || b[j] == '.') {
			j++
		}
		if j-i == 24 && (i == 0 || b[i-1] != '.' && b[i-1] != '/') {
			v := b[i:j]
			if allClasses(v) && entropy(v) >= 3.8 && !isPlaceholder(v) {
				return i, j, true
			}
		}
		i = j
	}
	return 0, 0, false
}

// mailgunKeys finds Mailgun private API keys in the current format,
// [0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8}. There is no prefix; the shape (a
// 32-digit hex run followed by two 8-digit groups) is unlike hashes (no
// dashes) and UUIDs (8-4-4-4-12). Candidates are found with IndexByte on
// '-', which is cheap on any text.
func (s *scratch) mailgunKeys(b []byte, spans [][2]int32) [][2]int32 {
	for off := 0; ; {
		k := bytes.IndexByte(b[off:], '-')
		if k < 0 {
			return spans
		}
		i := off + k
		off = i + 1
		if i < 32 || i+18 > len(b) || b[i+9] != '-' {
			continue
		}
		st, e := i-32, i+18
		if (st > 0 && (isASCIIAlnum(b[st-1]) || b[st-1] == '-' || b[st-1] == '_')) ||
			(e < len(b) && (isASCIIAlnum(b[e]) || b[e] == '-' || b[e] == '_')) {
			continue
		}
		ok := true
		for p := st; p < e && ok; p++ {
			if p != i && p != i+9 {
				ok = isLowerHex(b[p])
			}
		}
		if !ok || lowEntropy(b[st:i]) || overlapsAny(spans, st, e) {
			continue
		}
		s.addClean(detSecret, "MAILGUN_API_KEY", st, e, 1)
		spans = append(spans, [2]int32{int32(st), int32(e)})
		off = e
	}
}

func isLowerHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' }
