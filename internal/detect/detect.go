// Package detect turns text into signals for policy: a prompt-injection
// score with the rules that fired, PII and secret findings with spans into
// the original text, hidden-text statistics and length estimates.
//
// All detectors share one normalised view of the text (NFKC per rune,
// invisible characters removed, with a byte map back to the original) and one
// multi-pattern prefilter per view (litSet, built once in New: a filter on
// the first bytes of every literal, tested at each position independently),
// so a Scan is a few linear passes regardless of how many patterns exist.
// Findings always carry offsets into the original text, so redaction works
// even when detection ran on the normalised form.
//
// A Scanner is built once at startup and is safe for concurrent use; Scan
// reuses pooled scratch buffers, so its allocations do not grow with the
// length of the text except for the returned findings.
package detect

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// Detector names used in Finding.Detector.
const (
	DetectorPII     = "pii"
	DetectorSecrets = "secrets"
	DetectorHidden  = "hidden_text"
)

const (
	detPII    = DetectorPII
	detSecret = DetectorSecrets
	detHidden = DetectorHidden
)

// Config selects detectors and thresholds. The zero value is valid and
// enables every detector with the default thresholds.
type Config struct {
	// InjectionThreshold is the score at or above which PromptInjection.Detected
	// is true. Zero means DefaultInjectionThreshold.
	InjectionThreshold float64
	// PIIMinScore drops PII findings scoring below it (ambiguous phone
	// numbers without context score 0.4). Zero means the default, 0.5.
	PIIMinScore float64
	// DisableInjection, DisablePII, DisableSecrets and DisableHiddenText turn
	// detectors off. Length is always computed.
	DisableInjection  bool
	DisablePII        bool
	DisableSecrets    bool
	DisableHiddenText bool
	// DisableDecoding stops embedded base64/hex/percent-encoded runs from
	// being decoded and scanned for injection.
	DisableDecoding bool
	// GreyZone, when set, supplies values that are never findings (test
	// cards, private IP ranges, example domains; see GreyZone). serve passes
	// the policy engine, which reads them from policy data at every load;
	// a reload during a streamed answer applies from its next window.
	GreyZone GreyZoneSource
	// Content, when set, supplies the content-safety categories and the
	// output sanitisation settings (serve passes the policy engine, which
	// reads them from policy data at every load). Direction says which
	// categories apply (those listing it) and whether answers' markup is
	// sanitised (DirectionResponse only).
	Content   ContentSource
	Direction Direction
}

// DefaultInjectionThreshold is the injection threshold used when Config
// leaves it zero. Cross-validation (make eval) puts it where benign prompts
// full of trigger words (NotInject) stay under 2 % false positives while
// balanced accuracy stays near 0.95; rules for unambiguous attack families
// score 0.8 or more regardless of the model.
const DefaultInjectionThreshold = 0.6

// DefaultPIIMinScore is the PII score floor used when Config leaves it zero.
const DefaultPIIMinScore = 0.5

// Validate reports the first bad field.
func (c Config) Validate() error {
	if c.InjectionThreshold < 0 || c.InjectionThreshold > 1 {
		return fmt.Errorf("detect: InjectionThreshold %v outside [0,1]", c.InjectionThreshold)
	}
	if c.PIIMinScore < 0 || c.PIIMinScore > 1 {
		return fmt.Errorf("detect: PIIMinScore %v outside [0,1]", c.PIIMinScore)
	}
	return nil
}

// PromptInjection is the injection signal.
type PromptInjection struct {
	// Score is the probability-like score in [0,1].
	Score float64
	// Detected is Score >= Config.InjectionThreshold.
	Detected bool
	// Rules are the names of the attack-family rules that fired, sorted.
	Rules []string
}

// Finding is one span found by a detector.
type Finding struct {
	// Detector is DetectorPII, DetectorSecrets or DetectorHidden.
	Detector string
	// Type is the entity type: Presidio names for PII (EMAIL_ADDRESS, ...),
	// the credential format for secrets, the kind of hidden text.
	Type string
	// Start and End count Unicode code points in the original text, end
	// exclusive (as Python and Presidio count them).
	Start, End int
	// ByteStart and ByteEnd are byte offsets into the original text, for
	// redaction.
	ByteStart, ByteEnd int
	// Score is the detector's confidence in [0,1].
	Score float64
}

// Length describes the size of the text.
type Length struct {
	// Chars counts Unicode code points.
	Chars int
	// Bytes counts bytes.
	Bytes int
	// EstimatedTokens approximates a BPE tokenizer's count (about four ASCII
	// bytes per token, one per CJK character).
	EstimatedTokens int
}

// Result is everything Scan found.
type Result struct {
	// PromptInjection is the injection score, verdict and fired rules.
	PromptInjection PromptInjection
	// Findings are sorted by ByteStart; nil when there are none.
	Findings []Finding
	// HiddenText counts invisible and direction-changing characters.
	HiddenText HiddenText
	// Length is the size of the text.
	Length Length
	// Remote is the remote classifier's verdict when one is configured
	// (RemoteScanner); nil otherwise.
	Remote *RemoteVerdict
}

// Scanner runs the detectors. Build it with New; it is safe for concurrent use.
type Scanner struct {
	cfg     Config
	secrets *litSet
	inj     *injector
	pool    sync.Pool
}

// New builds a Scanner: it compiles the prefilter automata and loads the
// embedded injection model.
func New(cfg Config) (*Scanner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.InjectionThreshold == 0 {
		cfg.InjectionThreshold = DefaultInjectionThreshold
	}
	if cfg.PIIMinScore == 0 {
		cfg.PIIMinScore = DefaultPIIMinScore
	}
	uniTables() // build the rune property cache now rather than in a Scan
	s := &Scanner{cfg: cfg}
	s.secrets = newSecretMatcher()
	inj, err := newInjector(embeddedModel)
	if err != nil {
		return nil, fmt.Errorf("detect: loading injection model: %w", err)
	}
	s.inj = inj
	s.pool.New = func() any { return new(scratch) }
	return s, nil
}

// maxPooledBuf is the largest buffer kept in the pool; scratch grown by a
// huge input is dropped rather than pinned.
const maxPooledBuf = 16 << 20

// scratch holds per-scan buffers, reused through the Scanner's pool.
type scratch struct {
	codes    []codeSpan // code regions of an answer (markup)
	cleanBuf []byte
	omap     []int32
	foldBuf  []byte
	decBuf   []byte
	tmp      []byte
	smuggled []byte
	finds    []Finding
	cands    []secretCand
	lastPs   []int32
	spans    [][2]int32
	gen      []genericHit
	markers  markerMemo
	// valueWork counts the value bytes the generic secret checks read, so
	// tests can show it stays linear in the text.
	valueWork int
	hits      []kwHit
	vetted    [][2]int // byte spans the grey zone vouched for (finish)
	ascii     bool     // the original text is all ASCII
	flips     int      // upside-down letters clean saw (isFlipRune)
	flipBuf   []byte   // the text with upside-down lines turned back (unflip)
	flipClean []byte   // its clean view, and the view's map
	flipOmap  []int32
	flipRunes []rune  // unflip's scratch
	mbuf      []byte  // the content-safety matching view (content.go)
	mmap      []int32 // its map into the clean view
	orig      string
	view      view
}

func (s *scratch) reset(text string) {
	s.cleanBuf = s.cleanBuf[:0]
	s.omap = s.omap[:0]
	s.foldBuf = s.foldBuf[:0]
	s.decBuf = s.decBuf[:0]
	s.tmp = s.tmp[:0]
	s.smuggled = s.smuggled[:0]
	s.finds = s.finds[:0]
	s.valueWork = 0
	s.flips = 0
	s.orig = text
	s.ascii = isASCII(text)
}

// addFinding records a finding at original byte offsets.
func (s *scratch) addFinding(det, typ string, bs, be int, score float64) {
	s.finds = append(s.finds, Finding{Detector: det, Type: typ, ByteStart: bs, ByteEnd: be, Score: score})
}

// addClean records a finding at cleaned-view byte offsets.
func (s *scratch) addClean(det, typ string, start, end int, score float64) {
	bs, be := s.view.origSpan(s.orig, start, end)
	s.addFinding(det, typ, bs, be, score)
}

// Scan runs every enabled detector over text. It never panics on any input,
// including invalid UTF-8.
func (sc *Scanner) Scan(text string) Result {
	res, _ := sc.ScanContext(context.Background(), text) // a Background context never ends the scan
	return res
}

// ScanContext is Scan that gives up when ctx ends: a caller that has gone
// (a cancelled request, an expired deadline) must not keep a core busy. It
// checks ctx before each detector, so it returns within one detector's pass
// over the text (each is linear: tens of milliseconds for a MiB), with an
// error wrapping ctx's and an incomplete Result that must not be used.
func (sc *Scanner) ScanContext(ctx context.Context, text string) (Result, error) {
	return sc.scan(ctx, text, CodeState{}, true)
}

// ScanCode is Scan for a part of an answer (a stream's window): st is the
// code state at text's start (see CodeState), and final says whether text
// ends the answer. Markup starting in code is not sanitised; the other
// detectors read text as Scan does.
func (sc *Scanner) ScanCode(text string, st CodeState, final bool) Result {
	res, _ := sc.scan(context.Background(), text, st, final) // a Background context never ends the scan
	return res
}

// SanitizesMarkup reports whether the scanner, with its content rules as
// they are now, sanitises markup (answers, with output.sanitize on): only
// then does a stream need to carry the code state.
func (sc *Scanner) SanitizesMarkup() bool {
	if sc.cfg.Content == nil || sc.cfg.Direction != DirectionResponse {
		return false
	}
	r := sc.cfg.Content.ContentRules()
	return r != nil && r.links != nil
}

func (sc *Scanner) scan(ctx context.Context, text string, code CodeState, final bool) (Result, error) {
	s := sc.pool.Get().(*scratch)
	s.reset(text)
	defer sc.release(s)
	var res Result
	stopped := func(stage string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("detect: scan stopped before %s: %w", stage, err)
		}
		return nil
	}
	if err := stopped("normalising"); err != nil {
		return Result{}, err
	}
	res.Length = measure(text, s.ascii)

	s.view = s.clean(text, &res.HiddenText, !sc.cfg.DisableHiddenText)
	if sc.cfg.DisableHiddenText {
		res.HiddenText = HiddenText{}
	}
	if !sc.cfg.DisablePII {
		if err := stopped("pii"); err != nil {
			return Result{}, err
		}
		s.scanPII(s.view.b, sc.cfg.PIIMinScore)
	}
	if !sc.cfg.DisableSecrets {
		if err := stopped("secrets"); err != nil {
			return Result{}, err
		}
		s.scanSecrets(sc.secrets, s.view.b)
	}
	if !sc.cfg.DisableInjection {
		if err := stopped("injection"); err != nil {
			return Result{}, err
		}
		h := &res.HiddenText
		if sc.cfg.DisableHiddenText {
			h = nil
		}
		f := sc.foldText(s, h)
		if err := stopped("injection scoring"); err != nil {
			return Result{}, err
		}
		score, rules := sc.inj.score(f, s, h)
		res.PromptInjection = PromptInjection{Score: score, Detected: score >= sc.cfg.InjectionThreshold, Rules: rules}
	}
	var rules *ContentRules
	if sc.cfg.Content != nil {
		rules = sc.cfg.Content.ContentRules()
	}
	if tm := rules.matcher(sc.cfg.Direction); tm != nil {
		if err := stopped("content safety"); err != nil {
			return Result{}, err
		}
		s.scanContent(tm)
	}
	var gz *GreyZone
	if sc.cfg.GreyZone != nil {
		gz = sc.cfg.GreyZone.GreyZone()
	}
	res.Findings = s.finish(text, gz)
	if rules != nil && rules.links != nil && sc.cfg.Direction == DirectionResponse {
		if err := stopped("markup"); err != nil {
			return Result{}, err
		}
		s.codes = appendCodeRanges(s.codes[:0], text, code, final)
		res.Findings = sc.addMarkup(text, res.Findings, rules.links, s.codes)
	}
	return res, nil
}

// ScanUntrusted scores text that no participant of the conversation wrote
// — a tool result, a retrieved document, a fetched web page or e-mail — for
// instructions planted in it (indirect prompt injection). It is the
// injection detector alone, tuned for data: a long text is scored in
// overlapping windows of about a retrieved chunk (1 KiB), so an instruction
// hidden in the middle of a long page is not diluted by the page. The
// shipped model is not fitted on planted instructions (tools/internal/injtrain
// DefaultExtra says why), so on it the windows buy little: on generated
// planted documents of 2-6 KB they raise recall at 0.35 from 0.26 to
// 0.42 and false positives from 0.17 to 0.25, and the pipeline scores tool
// results with Scan. Its score
// is a separate signal from the user's own prompt's (Scan): the policy
// compares it with a threshold of its own, so that a user asking about
// injections is judged on Scan while instructions planted in data are
// judged here. Detected uses Config.InjectionThreshold. It never panics on
// any input.
func (sc *Scanner) ScanUntrusted(text string) PromptInjection {
	pi, _ := sc.ScanUntrustedContext(context.Background(), text) // a Background context never ends the scan
	return pi
}

// ScanUntrustedContext is ScanUntrusted that gives up, with an error
// wrapping ctx's, when ctx has ended before scoring starts.
func (sc *Scanner) ScanUntrustedContext(ctx context.Context, text string) (PromptInjection, error) {
	if err := ctx.Err(); err != nil {
		return PromptInjection{}, fmt.Errorf("detect: untrusted scan not started: %w", err)
	}
	if sc.cfg.DisableInjection {
		return PromptInjection{}, nil
	}
	s := sc.pool.Get().(*scratch)
	s.reset(text)
	defer sc.release(s)
	var h HiddenText
	s.view = s.clean(text, &h, !sc.cfg.DisableHiddenText)
	hp := &h
	if sc.cfg.DisableHiddenText {
		hp = nil
	}
	f := sc.foldText(s, hp)
	if err := ctx.Err(); err != nil {
		return PromptInjection{}, fmt.Errorf("detect: untrusted scan stopped before scoring: %w", err)
	}
	score, rules := sc.inj.scoreWith(f, s, hp, true)
	return PromptInjection{Score: score, Detected: score >= sc.cfg.InjectionThreshold, Rules: rules}, nil
}

// release returns s to the pool unless a huge input grew its buffers.
func (sc *Scanner) release(s *scratch) {
	s.orig = ""
	s.view = view{}
	if cap(s.cleanBuf) <= maxPooledBuf && cap(s.foldBuf) <= maxPooledBuf && cap(s.omap) <= maxPooledBuf/4*5 &&
		cap(s.flipBuf)+cap(s.flipClean) <= maxPooledBuf && cap(s.flipOmap) <= maxPooledBuf/4*5 && cap(s.flipRunes) <= maxPooledBuf/4 &&
		cap(s.mbuf) <= maxPooledBuf && cap(s.mmap) <= maxPooledBuf/4*5 {
		sc.pool.Put(s)
	}
}

// foldText builds the matching view for injection detection from the
// cleaned view in s: folded text, then smuggled (tag/variation-selector)
// text, then text decoded from embedded encodings, newline-separated.
func (sc *Scanner) foldText(s *scratch, h *HiddenText) []byte {
	var st foldStats
	view := s.view.b
	if s.flips >= minFlipRunes {
		view = s.unflipView()
	}
	f := foldStat(s.foldBuf[:0], view, h, &st)
	if len(s.smuggled) > 0 {
		f = append(f, '\n')
		f = foldStat(f, s.smuggled, h, &st)
	}
	if !sc.cfg.DisableDecoding && st.long {
		src := view
		for depth := 0; depth < maxDecodeDepth; depth++ {
			n0 := len(s.decBuf)
			s.decBuf, s.tmp = decodeEmbedded(s.decBuf, src, s.tmp, h)
			if len(s.decBuf) == n0 {
				break
			}
			src = s.decBuf[n0:]
			f = foldStat(f, src, h, &st)
			if len(s.decBuf) >= maxDecodeBytes {
				break
			}
		}
	}
	if st.spaced {
		f = joinSpaced(f)
	}
	s.foldBuf = f
	return f
}

// unflipView returns the clean view of the original text with its
// upside-down lines turned back (unflip), for injection matching only: the
// view PII and secrets ran on, and its map, stay as they are.
func (s *scratch) unflipView() []byte {
	s.flipBuf, s.flipRunes = unflip(s.flipBuf[:0], s.orig, s.flipRunes)
	cb, om, nsm, flips := s.cleanBuf, s.omap, len(s.smuggled), s.flips
	s.cleanBuf, s.omap = s.flipClean, s.flipOmap
	var h HiddenText // counted once, on the original
	v := s.clean(unsafeString(s.flipBuf), &h, false)
	s.flipClean, s.flipOmap = s.cleanBuf, s.omap
	s.cleanBuf, s.omap, s.smuggled, s.flips = cb, om, s.smuggled[:nsm], flips
	return v.b
}

// finish drops findings in the grey zone, resolves overlaps within a
// detector, converts byte offsets to code points and copies the findings out
// of scratch.
func (s *scratch) finish(text string, gz *GreyZone) []Finding {
	if len(s.finds) == 0 {
		return nil
	}
	f := s.finds
	slices.SortFunc(f, func(a, b Finding) int {
		if a.ByteStart != b.ByteStart {
			return a.ByteStart - b.ByteStart
		}
		return b.ByteEnd - a.ByteEnd
	})
	if !gz.Empty() {
		if f = s.dropGrey(f, text, gz); len(f) == 0 {
			return nil
		}
	}
	// Drop a finding overlapping an earlier kept one of the same detector
	// when it scores no higher; prefer the longer one on ties.
	kept := f[:0]
	for _, x := range f {
		drop := false
		for k := len(kept) - 1; k >= 0 && k >= len(kept)-4; k-- {
			y := &kept[k]
			if y.Detector != x.Detector || y.ByteEnd <= x.ByteStart {
				continue
			}
			if x.Score > y.Score && x.ByteEnd-x.ByteStart >= (y.ByteEnd-y.ByteStart)/2 {
				*y = x
			}
			drop = true
			break
		}
		if !drop {
			kept = append(kept, x)
		}
	}
	out := make([]Finding, len(kept))
	copy(out, kept)
	slices.SortFunc(out, func(a, b Finding) int { return a.ByteStart - b.ByteStart })
	if s.ascii {
		for i := range out {
			out[i].Start, out[i].End = out[i].ByteStart, out[i].ByteEnd
		}
		return out
	}
	pos, cp := 0, 0
	for i := range out {
		cp += runeCount(text[pos:out[i].ByteStart])
		pos = out[i].ByteStart
		out[i].Start = cp
		out[i].End = cp + runeCount(text[out[i].ByteStart:out[i].ByteEnd])
	}
	return out
}

func measure(text string, ascii bool) Length {
	l := Length{Bytes: len(text)}
	if ascii {
		l.Chars = len(text)
		l.EstimatedTokens = (len(text) + 3) / 4
		return l
	}
	nascii, cjk, other := 0, 0, 0
	for i := 0; i < len(text); {
		if text[i] < utf8.RuneSelf {
			k := asciiRun(text[i:])
			l.Chars += k
			nascii += k
			i += k
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size
		l.Chars++
		switch {
		case r < utf8.RuneSelf:
			nascii++
		case r >= 0x3040 && r <= 0x30FF, r >= 0x3400 && r <= 0x9FFF, r >= 0xAC00 && r <= 0xD7AF, r >= 0xF900 && r <= 0xFAFF, r >= 0x20000 && r <= 0x3FFFF:
			// Kana, CJK ideographs, Hangul: about one token each.
			cjk++
		default:
			other++
		}
	}
	l.EstimatedTokens = (nascii+3)/4 + cjk + (other+1)/2
	return l
}

func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s)) // #nosec G103 -- callers only read through it, while s is alive
}

func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b)) // #nosec G103 -- a transient view, dropped before b is written again
}
