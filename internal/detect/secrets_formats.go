package detect

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
	for e < len(b) && (inCharset(csToken, b[e]) || b[e] == '=') {
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

// jwkPrivate finds a private member ("d", "p", "q", "dp", "dq", "qi", "k")
// of a JSON Web Key within its object.
func jwkPrivate(b []byte, ps, pe int) (int, int, bool) {
	lim := min(len(b), pe+2048)
	for k := pe; k < lim && b[k] != '}'; k++ {
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
			return st, en, true
		}
		k = j
	}
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
