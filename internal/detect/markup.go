package detect

import (
	"html"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/idna"
)

// Output sanitisation (issue 19, OWASP LLM05): a model steered by an
// injected document answers with a markdown image whose URL carries the
// conversation's secrets to an attacker's host; the client renders it and
// the data leaves without a click. The markup detector finds, in answers,
// the parts of links and images a client would follow or fetch and that
// are not safe: markdown inline links and images, reference definitions,
// autolinks, raw HTML tags that load or link (img, a, and any tag with a
// URL attribute), script-like HTML (script, style, iframe, object, embed,
// ... and event-handler attributes), and bare URLs whose query or fragment
// carries a PII or secret finding. Its findings are the spans to remove
// (redact.Remove): a link's or image's destination and brackets (its text
// stays), a whole tag, a whole script element. A URL is safe when it is
// relative (no scheme, no host) or http(s) to a host in the allow-list, and
// its query and fragment carry no finding; javascript:, vbscript: and data:
// URLs never are; a URL that does not parse is not.
//
// The detector reads each construct where it stands. Markup that starts in
// code (a fenced block or an inline code span, see CodeState) is not read:
// a renderer shows it as text. The code state at a text's start is given
// (a stream carries it from window to window), so a construct is judged
// the same whether it arrives whole or in a window.

// DetectorMarkup is the Finding.Detector of unsafe links, images and HTML
// in answers; the Type says why (the Markup* constants).
const DetectorMarkup = "markup"

// Finding types of the markup detector.
const (
	MarkupImageHost   = "IMAGE_HOST_NOT_ALLOWED" // an image from a host outside the allow-list
	MarkupLinkHost    = "LINK_HOST_NOT_ALLOWED"  // a link to a host (or a scheme) outside it
	MarkupScheme      = "UNSAFE_SCHEME"          // javascript:, vbscript:, data:
	MarkupData        = "URL_CARRIES_DATA"       // a PII or secret finding in the query or fragment
	MarkupUnparseable = "UNPARSEABLE_URL"        // a URL or construct that does not parse
	MarkupScript      = "SCRIPT_HTML"            // script-like HTML, event handlers, CSS url()
)

// OutputSpec is the policy data's output object: how answers are
// sanitised.
type OutputSpec struct {
	// Sanitize turns the markup detector on for answers.
	Sanitize bool
	// AllowedLinkHosts are the hosts links and images may point to: an
	// exact host name ("docs.example.com"), or "*.example.com" for its
	// subdomains (not the name itself). Internationalised names match in
	// their ASCII (punycode) form. Empty: only relative links are kept.
	AllowedLinkHosts []string
}

// linkPolicy is the compiled OutputSpec.
type linkPolicy struct {
	exact  map[string]struct{}
	suffix []string // ".example.com"
}

func newLinkPolicy(hosts []string) (*linkPolicy, error) {
	p := &linkPolicy{exact: map[string]struct{}{}}
	for _, h := range hosts {
		h = strings.TrimSpace(strings.ToLower(h))
		wild := strings.HasPrefix(h, "*.")
		if wild {
			h = h[2:]
		}
		a, err := hostASCII(h)
		if err != nil || a == "" || strings.ContainsAny(a, "/:@\\?#* ") {
			return nil, errBadHost
		}
		if wild {
			p.suffix = append(p.suffix, "."+a)
		} else {
			p.exact[a] = struct{}{}
		}
	}
	return p, nil
}

type hostError struct{}

func (hostError) Error() string { return "is not a host name" }

var errBadHost error = hostError{}

// hostASCII is the lower-case ASCII (punycode) form of a host name.
func hostASCII(h string) (string, error) {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	a, err := idna.Lookup.ToASCII(h)
	if err != nil {
		// Not a valid IDN (underscores, odd labels): compare as written,
		// but only if plain ASCII, which cannot be confused.
		if isASCII(h) {
			return h, nil
		}
		return "", err
	}
	return a, nil
}

func (p *linkPolicy) allowed(host string) bool {
	if p == nil {
		return false
	}
	a, err := hostASCII(host)
	if err != nil || a == "" {
		return false
	}
	if _, ok := p.exact[a]; ok {
		return true
	}
	for _, s := range p.suffix {
		if strings.HasSuffix(a, s) && len(a) > len(s) {
			return true
		}
	}
	return false
}

// Bounds that keep the markup scan linear and cheap.
const (
	maxLinkText = 1024 // how far back an inline link's '[' is looked for
	maxDest     = 4096 // the longest destination (with its title) read
	maxTag      = 4096 // the longest HTML tag read
	maxScript   = 1 << 20
)

// markupScan finds unsafe markup in text, given the findings of the other
// detectors (byte offsets into text) and, for a URL's query or fragment
// that is percent-encoded, dataIn, which scans decoded text.
type markupScan struct {
	text   string
	finds  []Finding // other detectors' findings
	pol    *linkPolicy
	dataIn func(string) bool
	out    []Finding
	budget int // bytes left for backward bracket searches
}

func (m *markupScan) add(typ string, bs, be int) {
	if bs < 0 || be > len(m.text) || bs >= be {
		return
	}
	m.out = append(m.out, Finding{Detector: DetectorMarkup, Type: typ, ByteStart: bs, ByteEnd: be, Score: 1})
}

// scanMarkup returns the markup findings of text (byte offsets; code
// points are set by the caller).
func scanMarkup(text string, finds []Finding, pol *linkPolicy, dataIn func(string) bool, code []codeSpan) []Finding {
	if !strings.ContainsAny(text, "](<:") {
		return nil
	}
	m := &markupScan{text: text, finds: finds, pol: pol, dataIn: dataIn, budget: 4*len(text) + maxLinkText}
	covered := 0 // text before it belongs to a construct already read
	t := text
	for i := 0; i < len(t); i++ {
		for len(code) > 0 && code[0].e <= i {
			code = code[1:]
		}
		if len(code) > 0 && code[0].s <= i {
			i = code[0].e - 1 // markup starting in code is shown as text
			continue
		}
		switch t[i] {
		case ']':
			if i+1 < len(t) && t[i+1] == '(' && i >= covered {
				covered = max(covered, m.inline(i))
			} else if i+1 < len(t) && t[i+1] == ':' && i >= covered {
				covered = max(covered, m.definition(i))
			}
		case '<':
			if i >= covered {
				covered = max(covered, m.angle(i))
			}
		case ':':
			if i >= covered && i+2 < len(t) && t[i+1] == '/' && t[i+2] == '/' {
				covered = max(covered, m.bare(i))
			}
		}
	}
	slices.SortStableFunc(m.out, func(a, b Finding) int { return a.ByteStart - b.ByteStart })
	return m.out
}

// inline reads an inline link or image whose text ends with ']' at i and
// whose destination follows in parentheses; it returns where the
// construct ends.
func (m *markupScan) inline(i int) int {
	t := m.text
	open := m.openBracket(i)
	image := open > 0 && t[open-1] == '!'
	dest, rawEnd, end, ok := readDest(t, i+2, true)
	typ := MarkupLinkHost
	if image {
		typ = MarkupImageHost
	}
	if !ok {
		m.removeLink(open, image, i, end, MarkupUnparseable)
		return end
	}
	if reason := m.judge(dest, i+2, rawEnd, typ); reason != "" {
		m.removeLink(open, image, i, end, reason)
	}
	return end
}

// removeLink removes a link's destination t[close:end] (from its ']') and,
// when its '[' (and the image's '!') was found, the opening bracket: the
// text stays.
func (m *markupScan) removeLink(open int, image bool, close, end int, reason string) {
	if open >= 0 {
		st := open
		if image {
			st--
		}
		m.add(reason, st, open+1)
	}
	m.add(reason, close, end)
}

// openBracket returns the position of the '[' that the ']' at i closes, or
// -1: nested brackets count, backslash-escaped ones do not.
func (m *markupScan) openBracket(i int) int {
	t := m.text
	depth := 0
	lo := max(0, i-maxLinkText)
	for k := i - 1; k >= lo; k-- {
		if m.budget--; m.budget < 0 {
			return -1
		}
		c := t[k]
		if (c == '[' || c == ']') && k > 0 && t[k-1] == '\\' {
			continue
		}
		switch c {
		case ']':
			depth++
		case '[':
			if depth == 0 {
				return k
			}
			depth--
		case '\n':
			if k > 0 && t[k-1] == '\n' {
				return -1 // a blank line ends a paragraph, and link text
			}
		}
	}
	return -1
}

// readDest reads a destination (and optional title) starting at p, just
// after '(' when paren, else after "]:" and spaces. It returns the
// destination, where its raw text ends, where the construct ends (after
// ')' when paren, at the line's end otherwise) and whether it parsed.
func readDest(t string, p int, paren bool) (dest string, rawEnd, end int, ok bool) {
	lim := min(len(t), p+maxDest)
	k := p
	for k < lim && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n') {
		k++
	}
	start := k
	if k < lim && t[k] == '<' {
		e := strings.IndexAny(t[k+1:lim], ">\n")
		if e < 0 || t[k+1+e] != '>' {
			return "", lim, lim, false
		}
		dest = t[k+1 : k+1+e]
		k += e + 2
	} else {
		depth := 0
	loop:
		for ; k < lim; k++ {
			switch c := t[k]; {
			case c == '\\' && k+1 < lim:
				k++
			case c == '(':
				depth++
			case c == ')':
				if depth == 0 {
					break loop
				}
				depth--
			case c <= ' ':
				break loop
			}
		}
		dest = t[start:k]
	}
	rawEnd = k
	if !paren {
		// A definition: an optional title, then the line ends.
		e := strings.IndexByte(t[k:lim], '\n')
		if e < 0 {
			e = lim - k
		}
		return dest, rawEnd, k + e, k < lim || lim == len(t)
	}
	// Optional title, then ')'.
	for k < lim && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n') {
		k++
	}
	if k < lim && (t[k] == '"' || t[k] == '\'' || t[k] == '(') {
		closer := t[k]
		if closer == '(' {
			closer = ')'
		}
		e := strings.IndexByte(t[k+1:lim], closer)
		if e < 0 {
			return dest, rawEnd, lim, false
		}
		k += e + 2
		for k < lim && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n') {
			k++
		}
	}
	if k >= lim || t[k] != ')' {
		return dest, rawEnd, lim, false
	}
	return dest, rawEnd, k + 1, true
}

// definition reads a reference definition "[label]: dest" whose label ends
// at i, when the '[' starts a line.
func (m *markupScan) definition(i int) int {
	t := m.text
	// The label holds no bracket and no line break: look back for '['
	// only that far (so a run of "]:" costs linear time).
	open := -1
	for k := i - 1; k >= 0 && i-k <= maxLinkText; k-- {
		if c := t[k]; c == '[' {
			open = k
			break
		} else if c == ']' || c == '\n' {
			return i
		}
	}
	if open < 0 {
		return i
	}
	// At most three spaces between the line's start and '['.
	ls := open
	for ls > 0 && open-ls < 4 && t[ls-1] == ' ' {
		ls--
	}
	if open-ls > 3 || ls > 0 && t[ls-1] != '\n' {
		return i
	}
	dest, rawEnd, end, ok := readDest(t, i+2, false)
	if !ok || dest == "" {
		if !ok {
			m.add(MarkupUnparseable, i+2, end)
		}
		return end
	}
	if reason := m.judge(dest, i+2, rawEnd, MarkupLinkHost); reason != "" {
		m.add(reason, i+2, end)
	}
	return end
}

// angle reads what starts with '<' at i: an autolink, or an HTML tag.
func (m *markupScan) angle(i int) int {
	t := m.text
	k := i + 1
	closing := k < len(t) && t[k] == '/'
	if closing {
		k++
	}
	n := k
	for n < len(t) && n-k < 32 && (isLetterByte(t[n]) || n > k && ('0' <= t[n] && t[n] <= '9' || t[n] == '+' || t[n] == '.' || t[n] == '-')) {
		n++
	}
	if n == k {
		return i
	}
	name := strings.ToLower(t[k:n])
	if !closing && n < len(t) && t[n] == ':' && n-k >= 2 {
		// An autolink <scheme:...>.
		e := strings.IndexAny(t[n:min(len(t), n+maxDest)], "<> \t\n")
		if e < 0 || t[n+e] != '>' {
			return i // not an autolink; plain text
		}
		end := n + e + 1
		if reason := m.judge(t[k:n+e], k, n+e, MarkupLinkHost); reason != "" {
			m.add(reason, i, end)
		}
		return end
	}
	if n < len(t) && !(t[n] == '>' || t[n] == '/' || t[n] == ' ' || t[n] == '\t' || t[n] == '\n' || t[n] == '\r') {
		return i
	}
	end, attrs, ok := readTag(t, n)
	if closing {
		if scriptLike[name] && ok {
			m.add(MarkupScript, i, end)
		}
		return max(i, end)
	}
	if scriptLike[name] {
		if !ok {
			m.add(MarkupScript, i, len(t))
			return len(t)
		}
		if name == "script" || name == "style" {
			// The element's content goes too, through its end tag (or
			// the end of the text).
			ce := indexFold(unsafeBytes(t[end:min(len(t), end+maxScript)]), "</"+name)
			if ce < 0 {
				m.add(MarkupScript, i, len(t))
				return len(t)
			}
			ce += end
			gt := strings.IndexByte(t[ce:], '>')
			if gt < 0 {
				m.add(MarkupScript, i, len(t))
				return len(t)
			}
			m.add(MarkupScript, i, ce+gt+1)
			return ce + gt + 1
		}
		m.add(MarkupScript, i, end)
		return end
	}
	if !ok {
		if urlTags[name] {
			m.add(MarkupUnparseable, i, end)
			return end
		}
		return i
	}
	typ := MarkupLinkHost
	if name == "img" || name == "picture" || name == "source" || name == "video" || name == "audio" || name == "input" {
		typ = MarkupImageHost
	}
	for _, a := range attrs {
		an := strings.ToLower(a.name)
		val := html.UnescapeString(a.val)
		switch {
		case strings.HasPrefix(an, "on"):
			m.add(MarkupScript, i, end)
			return end
		case an == "style" && strings.Contains(strings.ToLower(val), "url("):
			m.add(MarkupScript, i, end)
			return end
		case an == "srcset":
			for _, part := range strings.Split(val, ",") {
				f := strings.Fields(part)
				if len(f) == 0 {
					continue
				}
				if reason := m.judge(f[0], a.start, a.end, typ); reason != "" {
					m.add(reason, i, end)
					return end
				}
			}
		case urlAttrs[an]:
			if reason := m.judge(val, a.start, a.end, typ); reason != "" {
				m.add(reason, i, end)
				return end
			}
		}
	}
	return end
}

// scriptLike are the tags removed whatever their attributes.
var scriptLike = map[string]bool{
	"script": true, "style": true, "iframe": true, "frame": true, "frameset": true, "object": true,
	"embed": true, "applet": true, "base": true, "meta": true, "link": true, "form": true,
	"svg": true, "math": true, "template": true, "portal": true, "noscript": true,
}

// urlTags are tags that load or link: one that does not parse is removed.
var urlTags = map[string]bool{
	"a": true, "img": true, "image": true, "picture": true, "source": true, "video": true, "audio": true,
	"input": true, "area": true, "track": true, "body": true, "table": true, "td": true, "th": true,
	"button": true, "blockquote": true, "q": true, "del": true, "ins": true,
}

// urlAttrs are the attributes whose value is a URL a client fetches or
// follows.
var urlAttrs = map[string]bool{
	"src": true, "href": true, "background": true, "poster": true, "data": true, "action": true,
	"formaction": true, "lowsrc": true, "dynsrc": true, "xlink:href": true, "ping": true,
	"cite": true, "longdesc": true, "manifest": true, "codebase": true, "usemap": true,
}

type tagAttr struct {
	name, val  string
	start, end int // the value's raw span
}

// readTag reads a tag's attributes from p (after its name) to its '>'; ok
// is false when no '>' ends it within maxTag bytes (end is then where
// reading stopped: the end of the text or the bound).
func readTag(t string, p int) (end int, attrs []tagAttr, ok bool) {
	lim := min(len(t), p+maxTag)
	k := p
	for k < lim {
		for k < lim && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n' || t[k] == '\r' || t[k] == '/') {
			k++
		}
		if k >= lim {
			break
		}
		if t[k] == '>' {
			return k + 1, attrs, true
		}
		ns := k
		for k < lim && !strings.ContainsRune(" \t\n\r/>=", rune(t[k])) {
			k++
		}
		a := tagAttr{name: t[ns:k]}
		for k < lim && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n' || t[k] == '\r') {
			k++
		}
		if k < lim && t[k] == '=' {
			k++
			for k < lim && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n' || t[k] == '\r') {
				k++
			}
			if k < lim && (t[k] == '"' || t[k] == '\'') {
				q := t[k]
				e := strings.IndexByte(t[k+1:lim], q)
				if e < 0 {
					return lim, attrs, false
				}
				a.val, a.start, a.end = t[k+1:k+1+e], k+1, k+1+e
				k += e + 2
			} else {
				vs := k
				for k < lim && !strings.ContainsRune(" \t\n\r>", rune(t[k])) {
					k++
				}
				a.val, a.start, a.end = t[vs:k], vs, k
			}
		}
		if a.name != "" {
			attrs = append(attrs, a)
		}
	}
	return lim, attrs, false
}

// bare reads a bare URL whose scheme ends with "://" at i (a GFM autolink
// a client may make clickable): it is removed only when its query or
// fragment carries a finding (a click would send the data), or when it
// does not parse.
func (m *markupScan) bare(i int) int {
	t := m.text
	s := i
	for s > 0 && s > i-32 && (isLetterByte(t[s-1]) || s < i && ('0' <= t[s-1] && t[s-1] <= '9' || t[s-1] == '+' || t[s-1] == '.' || t[s-1] == '-')) {
		s--
	}
	if s == i {
		return i
	}
	e := i + 3
	for e < len(t) && e-i < maxDest && t[e] > ' ' && !strings.ContainsRune("<>\"'`", rune(t[e])) {
		e++
	}
	// Trailing punctuation is the sentence's, as GFM reads it.
	for e > i+3 && strings.ContainsRune(".,;:!?*_~)", rune(t[e-1])) {
		e--
	}
	raw := t[s:e]
	q := strings.IndexAny(raw, "?#")
	if q < 0 {
		return e
	}
	if m.carriesData(raw[q:], s+q, e) {
		m.add(MarkupData, s, e)
	}
	return e
}

// judge returns why the URL raw (a destination as written, its raw text at
// t[rs:re]) is unsafe for a construct reported as typ, or "" when it is
// safe.
func (m *markupScan) judge(raw string, rs, re int, typ string) string {
	u := cleanURL(raw)
	// The query and fragment must carry no finding, whatever the host
	// (a finding in the host, such as its IP address, does not count).
	if q := strings.IndexAny(u, "?#"); q >= 0 {
		if rq := strings.IndexAny(m.text[rs:re], "?#"); rq >= 0 {
			rs += rq
		}
		if m.carriesData(u[q:], rs, re) {
			return MarkupData
		}
	}
	lower := strings.ToLower(u)
	if sch, ok := scheme(lower); ok {
		switch sch {
		case "javascript", "vbscript", "data", "livescript", "mocha":
			return MarkupScheme
		case "http", "https":
		default:
			return typ // mailto:, ftp:, custom schemes: not an allowed host
		}
	} else if !strings.HasPrefix(u, "//") {
		// Relative: the page's own origin. A colon before any '/', '?'
		// or '#' would have made it a scheme; anything else is a path.
		if _, err := url.Parse(u); err != nil {
			return MarkupUnparseable
		}
		return ""
	}
	p, err := url.Parse(u)
	if err != nil || p.Host == "" && p.Opaque != "" {
		return MarkupUnparseable
	}
	if p.Host == "" {
		return typ
	}
	if !m.pol.allowed(p.Hostname()) {
		return typ
	}
	return ""
}

// carriesData reports whether a query or fragment (q, whose raw text lies
// in t[rs:re]) holds a PII or secret finding: one of the text's findings
// inside the raw span, or one in the percent-decoded form.
func (m *markupScan) carriesData(q string, rs, re int) bool {
	for _, f := range m.finds {
		if (f.Detector == DetectorPII || f.Detector == DetectorSecrets) && f.ByteStart < re && f.ByteEnd > rs {
			return true
		}
	}
	if m.dataIn == nil {
		return false
	}
	if strings.ContainsAny(q, "%+&=") {
		d := strings.NewReplacer("&", " ", "=", " ", "+", " ").Replace(q)
		if u, err := url.PathUnescape(d); err == nil {
			d = u
		}
		return m.dataIn(d)
	}
	return false
}

// cleanURL is a destination as a browser reads it: backslash escapes and
// character references resolved, ASCII white space and control characters
// removed (browsers drop tabs and newlines inside URLs), backslashes read
// as slashes.
func cleanURL(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' && i+1 < len(raw) && isASCIIPunct(raw[i+1]) && raw[i+1] != '\\' && raw[i+1] != '/' {
			continue // a markdown escape: the next character stands
		}
		b.WriteByte(c)
	}
	s := html.UnescapeString(b.String())
	b.Reset()
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c == 0x7F:
			continue
		case c == '\\':
			b.WriteByte('/')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isASCIIPunct(c byte) bool {
	return c > ' ' && c < 0x7F && !isASCIIAlnum(c)
}

// scheme returns the URL's scheme when it has one (letters, digits, '+',
// '-', '.' before a ':' that comes before any '/', '?' or '#').
func scheme(u string) (string, bool) {
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c == ':':
			return u[:i], i > 0
		case isLetterByte(c), i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", false
		}
	}
	return "", false
}

// addMarkup appends the markup findings of text to finds (the other
// detectors' findings, sorted), with code point offsets, keeping them
// sorted by ByteStart; markup starting in a code region is not read.
func (sc *Scanner) addMarkup(text string, finds []Finding, pol *linkPolicy, code []codeSpan) []Finding {
	mk := scanMarkup(text, finds, pol, sc.dataIn, code)
	if len(mk) == 0 {
		return finds
	}
	pos, cp := 0, 0
	for i := range mk {
		f := &mk[i]
		if f.ByteStart < pos { // sorted: only an overlap can go back
			pos, cp = 0, 0
		}
		cp += runeCount(text[pos:f.ByteStart])
		pos = f.ByteStart
		f.Start = cp
		f.End = cp + runeCount(text[f.ByteStart:f.ByteEnd])
	}
	out := append(finds, mk...)
	slices.SortStableFunc(out, func(a, b Finding) int { return a.ByteStart - b.ByteStart })
	return out
}

// dataIn reports whether decoded text (a URL's query or fragment, percent-
// decoded) holds a PII or secret finding.
func (sc *Scanner) dataIn(text string) bool {
	s := sc.pool.Get().(*scratch)
	s.reset(text)
	defer sc.release(s)
	var h HiddenText
	s.view = s.clean(text, &h, false)
	if !sc.cfg.DisablePII {
		s.scanPII(s.view.b, sc.cfg.PIIMinScore)
	}
	if !sc.cfg.DisableSecrets {
		s.scanSecrets(sc.secrets, s.view.b)
	}
	var gz *GreyZone
	if sc.cfg.GreyZone != nil {
		gz = sc.cfg.GreyZone.GreyZone()
	}
	for _, f := range s.finish(text, gz) {
		if f.Detector == DetectorPII || f.Detector == DetectorSecrets {
			return true
		}
	}
	return false
}
