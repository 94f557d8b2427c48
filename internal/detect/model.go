package detect

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// embeddedModel is the fitted injection model, written by
// tools/train (make train).
//
//go:embed model.bin
var embeddedModel []byte

// Model is a logistic regression over hashed features of the folded text:
// byte 4-grams and words, each hashed into 2^Bits buckets and scaled by
// 1/sqrt(number of features), plus one weight per injection rule that fired
// and per length bucket. (Byte 3- and 5-grams and word bigrams were tried:
// no gain in cross-validation, at twice the cost per byte.)
type Model struct {
	Bits        int
	Bias        float64
	RuleWeights map[string]float64
	// W holds 2^Bits weights.
	W []float32
}

const modelMagic = "BWLR0001"

// hash seeds per feature family.
const (
	seedChar = 0x9E3779B1
	seedWord = 0x85EBCA77
)

// mix finalises a 32-bit hash (murmur3 fmix32).
func mix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85EBCA6B
	h ^= h >> 13
	h *= 0xC2B2AE35
	h ^= h >> 16
	return h
}

// featurize calls emit with the bucket of every feature of f and returns the
// number of features.
func featurize(f []byte, bits int, emit func(idx uint32)) int {
	shift := uint(32 - bits)
	n := 0
	// Byte n-grams, n = 3..5.
	for i := 0; i+4 <= len(f); i++ {
		emit(charGram(f[i:i+4]) >> shift)
		n++
	}
	// Words.
	for i := 0; i < len(f); {
		if !isFoldWordByte(f[i]) {
			i++
			continue
		}
		j := i
		h := uint32(2166136261)
		for j < len(f) && isFoldWordByte(f[j]) && j-i < 64 {
			h = (h ^ uint32(f[j])) * 16777619
			j++
		}
		for j < len(f) && isFoldWordByte(f[j]) {
			j++
		}
		emit(mix(h^seedWord) >> shift)
		n++
		i = j
	}
	return n
}

// dot returns the model's linear term over f (without bias and rules). It
// is featurize with the weight lookups inlined; TestDotMatchesFeaturize keeps
// the two in step.
func (q *quantWeights) dot(f []byte) float64 {
	sum, n := q.sums(f)
	return q.scaled(sum, n)
}

// sums returns the sum of the weights of f's features and their number.
func (q *quantWeights) sums(f []byte) (int64, int) {
	n := 0
	if len(f) >= 4 {
		n = len(f) - 3
	}
	if q.bits == 16 {
		// The shipped model: constant shifts and no bounds checks.
		sum, nw := sums16(f, (*[1 << 16]int16)(q.w))
		return sum, n + nw
	}
	shift := uint(32-q.bits) & 31
	ws, nw := wordSum(f, q.w, shift)
	return gramSum(f, q.w, shift) + ws, n + nw
}

// gramSum sums the weights of f's byte 4-grams (charGram of each window).
func gramSum(f []byte, w []int16, shift uint) int64 {
	if len(f) < 4 {
		return 0
	}
	var sum int64
	x := uint32(f[0])<<8 | uint32(f[1])<<16 | uint32(f[2])<<24
	for _, c := range f[3:] {
		x = x>>8 | uint32(c)<<24
		sum += int64(w[(x^seedChar)*0x9E3779B1>>(shift&31)])
	}
	return sum
}

// wordSum sums the weights of f's words (runs of isFoldWordByte, hashed
// over their first 64 bytes) and counts them.
func wordSum(f []byte, w []int16, shift uint) (int64, int) {
	var sum int64
	n := 0
	h, wl := uint32(2166136261), 0
	for _, c := range f {
		if foldWordTab[c] {
			if wl < 64 {
				h = (h ^ uint32(c)) * 16777619
			}
			wl++
			continue
		}
		if wl > 0 {
			sum += int64(w[mix(h^seedWord)>>(shift&31)])
			n++
			h, wl = 2166136261, 0
		}
	}
	if wl > 0 {
		sum += int64(w[mix(h^seedWord)>>(shift&31)])
		n++
	}
	return sum, n
}

// sums16 is gramSum plus wordSum for 2^16 weights. They are two loops,
// each with few enough variables to stay in registers.
func sums16(f []byte, w *[1 << 16]int16) (int64, int) {
	ws := newWordState()
	ws.run16(f, w)
	sum, n := ws.total16(w)
	return gramSum16(f, w) + sum, n
}

// gramSum16 is gramSum for 2^16 weights. The compiler reads each 4-gram
// as one 32-bit load, without bounds checks.
func gramSum16(f []byte, w *[1 << 16]int16) int64 {
	var sum int64
	for k := 3; k < len(f); k++ {
		x := uint32(f[k-3]) | uint32(f[k-2])<<8 | uint32(f[k-1])<<16 | uint32(f[k])<<24
		sum += int64(w[(x^seedChar)*0x9E3779B1>>16])
	}
	return sum
}

// wordState carries wordSum, for 2^16 weights, across consecutive ranges
// of a text: the hash and length of the word in progress, and the sum and
// number of the words ended so far.
type wordState struct {
	h   uint32
	wl  int
	n   int
	sum int64
}

func newWordState() wordState { return wordState{h: 2166136261} }

// run16 goes on with the bytes of t.
func (st *wordState) run16(t []byte, w *[1 << 16]int16) {
	h, wl, n, sum := st.h, st.wl, st.n, st.sum
	for _, c := range t {
		if foldWordTab[c] {
			if wl < 64 {
				h = (h ^ uint32(c)) * 16777619
			}
			wl++
			continue
		}
		if wl > 0 {
			sum += int64(w[mix(h^seedWord)>>16])
			n++
			h, wl = 2166136261, 0
		}
	}
	st.h, st.wl, st.n, st.sum = h, wl, n, sum
}

// total16 returns the sum and number of the words so far, the word in
// progress included (as the end of the text would end it).
func (st *wordState) total16(w *[1 << 16]int16) (int64, int) {
	if st.wl > 0 {
		return st.sum + int64(w[mix(st.h^seedWord)>>16]), st.n + 1
	}
	return st.sum, st.n
}

// dotWindows returns dot of f, of f[:win] and of f[len(f)-win:], for
// len(f) >= 2*win, hashing each feature once where the windows and f
// share it.
func (q *quantWeights) dotWindows(f []byte, win int) (float64, float64, float64) {
	if q.bits != 16 || win < 4 || len(f) < 2*win {
		return q.dot(f), q.dot(f[:win]), q.dot(f[len(f)-win:])
	}
	w := (*[1 << 16]int16)(q.w)
	t0 := len(f) - win // the tail window's start
	// 4-grams: those starting before win-3 lie in the head, those from t0
	// on in the tail, and the others between.
	headG, tailG := gramSum16(f[:win], w), gramSum16(f[t0:], w)
	allG := headG + gramSum16(f[win-3:t0+3], w) + tailG
	// Words: the head's are f's up to win, with the word in progress at
	// win cut there. The tail's first word may be cut at t0 too; after the
	// byte e that ends it, f and the tail have the same words, so f's are
	// only hashed up to e.
	all := newWordState()
	all.run16(f[:win], w)
	headW, headN := all.total16(w)
	e := t0
	for e < len(f) && foldWordTab[f[e]] {
		e++
	}
	tail := newWordState()
	var allW, tailW int64
	var allN, tailN int
	if e == len(f) {
		all.run16(f[win:], w)
		tail.run16(f[t0:], w)
		allW, allN = all.total16(w)
		tailW, tailN = tail.total16(w)
	} else {
		all.run16(f[win:e+1], w)
		tail.run16(f[t0:e+1], w)
		atE := tail
		tail.run16(f[e+1:], w)
		tailW, tailN = tail.total16(w)
		allW, allN = all.sum+tailW-atE.sum, all.n+tailN-atE.n
	}
	return q.scaled(allG+allW, len(f)-3+allN), q.scaled(headG+headW, win-3+headN), q.scaled(tailG+tailW, win-3+tailN)
}

// foldWordTab is isFoldWordByte as a table.
var foldWordTab = func() (t [256]bool) {
	for c := range t {
		t[c] = isFoldWordByte(byte(c))
	}
	return t
}()

// scaled turns a weight sum over n features into the linear term.
func (q *quantWeights) scaled(sum int64, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(sum) * float64(q.scale) / math.Sqrt(float64(n+normPad))
}

// quantWeights are a Model's hashed weights as int16 with one scale, as
// stored in model.bin: a quarter of the cache footprint of float64.
type quantWeights struct {
	bits  int
	w     []int16
	scale float32
}

func quantize(m *Model) *quantWeights {
	var maxAbs float32
	for _, w := range m.W {
		maxAbs = max(maxAbs, float32(math.Abs(float64(w))))
	}
	scale := maxAbs / 32767
	if scale == 0 {
		scale = 1
	}
	q := &quantWeights{bits: m.Bits, w: make([]int16, len(m.W)), scale: scale}
	for i, w := range m.W {
		q.w[i] = int16(math.Round(float64(w / scale)))
	}
	return q
}

// MarshalBinary encodes the model: magic, bits, bias, rule weights by name,
// then the weights as int16 with one float32 scale.
func (m *Model) MarshalBinary() ([]byte, error) {
	if len(m.W) != 1<<m.Bits {
		return nil, fmt.Errorf("detect: model has %d weights, want %d", len(m.W), 1<<m.Bits)
	}
	out := []byte(modelMagic)
	out = binary.LittleEndian.AppendUint32(out, uint32(m.Bits))
	out = binary.LittleEndian.AppendUint64(out, math.Float64bits(m.Bias))
	names := make([]string, 0, len(m.RuleWeights))
	for n := range m.RuleWeights {
		names = append(names, n)
	}
	slices.Sort(names)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(names)))
	for _, n := range names {
		if len(n) > math.MaxUint8 {
			return nil, fmt.Errorf("detect: rule name %q is longer than 255 bytes", n)
		}
		out = append(out, byte(len(n)))
		out = append(out, n...)
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(m.RuleWeights[n]))
	}
	var maxAbs float32
	for _, w := range m.W {
		maxAbs = max(maxAbs, float32(math.Abs(float64(w))))
	}
	scale := maxAbs / 32767
	if scale == 0 {
		scale = 1
	}
	out = binary.LittleEndian.AppendUint32(out, math.Float32bits(scale))
	for _, w := range m.W {
		out = binary.LittleEndian.AppendUint16(out, uint16(int16(math.Round(float64(w/scale)))))
	}
	return out, nil
}

// ErrModel is returned for a weights file that is not a valid model.
var ErrModel = errors.New("detect: malformed injection model")

// UnmarshalModel decodes a model written by MarshalBinary.
func UnmarshalModel(b []byte) (*Model, error) {
	if len(b) < len(modelMagic)+16 || string(b[:len(modelMagic)]) != modelMagic {
		return nil, ErrModel
	}
	b = b[len(modelMagic):]
	m := &Model{RuleWeights: map[string]float64{}}
	m.Bits = int(binary.LittleEndian.Uint32(b))
	m.Bias = math.Float64frombits(binary.LittleEndian.Uint64(b[4:]))
	nr := int(binary.LittleEndian.Uint32(b[12:]))
	b = b[16:]
	if m.Bits < 8 || m.Bits > 24 {
		return nil, ErrModel
	}
	for range nr {
		if len(b) < 1 || len(b) < 1+int(b[0])+8 {
			return nil, ErrModel
		}
		l := int(b[0])
		name := string(b[1 : 1+l])
		m.RuleWeights[name] = math.Float64frombits(binary.LittleEndian.Uint64(b[1+l:]))
		b = b[1+l+8:]
	}
	if len(b) != 4+2<<m.Bits {
		return nil, ErrModel
	}
	scale := math.Float32frombits(binary.LittleEndian.Uint32(b))
	b = b[4:]
	m.W = make([]float32, 1<<m.Bits)
	for i := range m.W {
		m.W[i] = float32(int16(binary.LittleEndian.Uint16(b[2*i:]))) * scale
	}
	return m, nil
}

// normPad is added to the feature count before the 1/sqrt scaling. Padding
// (shrinking short prompts towards the bias) was tried and did not help in
// cross-validation; it stays a named constant so train and scan agree.
const normPad = 0

// charGram hashes a 4-byte window.
func charGram(b []byte) uint32 {
	return (binary.LittleEndian.Uint32(b) ^ seedChar) * 0x9E3779B1
}

// lengthBucket puts the folded length into one of nLenBuckets bins, a dense
// feature that lets the model calibrate very short and very long prompts.
func lengthBucket(n int) int {
	switch {
	case n < 40:
		return 0
	case n < 100:
		return 1
	case n < 250:
		return 2
	case n < 600:
		return 3
	case n < 1500:
		return 4
	}
	return 5
}

const nLenBuckets = 6

// denseNames names the dense features after the rules: length buckets, then
// odd-token levels.
func denseNames() []string {
	out := RuleNames()
	for i := range nLenBuckets {
		out = append(out, "len:"+string(rune('0'+i)))
	}
	for i := 1; i <= nOddLevels; i++ {
		out = append(out, "odd:"+string(rune('0'+i)))
	}
	return out
}

// nOddLevels is the number of non-zero oddTokenLevel grades.
const nOddLevels = 3

// oddClass sorts bytes for oddTokenLevel: letters, the ASCII symbols that,
// glued to letters inside one token, make it odd ("describing.\\",
// "giving**one", "oppositeley.]("; not brackets, quotes or sentence
// punctuation, which prose glues to words), and token separators.
var oddClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = oddLetter
	}
	for _, c := range []byte(`\[]{}*^~|<>=+@#$%&`) {
		t[c] = oddSymbol
	}
	t[' '], t['\n'] = oddSpace, oddSpace
	return t
}()

const (
	oddLetter = 1
	oddSymbol = 2
	oddSpace  = 8
)

// oddTokenLevel grades how much of the folded text f is made of tokens
// that glue symbols to letters, a gibberish signal: the adversarial
// suffixes found by gradient search (GCG and kin) are word-piece salads full
// of them, while prose has almost none. It is a dense model feature, so
// code (which has such tokens too) gets the weight training finds for it.
// 0: fewer than 8 tokens or under 8 % odd; 1, 2, 3: at least 8 %, 15 %,
// 30 % (and at least 3 odd tokens). One table lookup per byte.
func oddTokenLevel(f []byte) int {
	toks, odd := 0, 0
	var seen uint8 // oddLetter|oddSymbol seen in the token, 4: in a token
	for _, c := range f {
		k := oddClass[c]
		if k == oddSpace {
			if seen != 0 {
				toks++
				if seen&(oddLetter|oddSymbol) == oddLetter|oddSymbol {
					odd++
				}
			}
			seen = 0
			continue
		}
		seen |= k | 4
	}
	if seen != 0 {
		toks++
		if seen&(oddLetter|oddSymbol) == oddLetter|oddSymbol {
			odd++
		}
	}
	if toks < 8 || odd < 3 {
		return 0
	}
	switch r := float64(odd) / float64(toks); {
	case r >= 0.30:
		return 3
	case r >= 0.15:
		return 2
	case r >= 0.08:
		return 1
	}
	return 0
}
