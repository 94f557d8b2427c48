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
// internal/detect/cmd/train (make train).
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

// sums16 is gramSum plus wordSum for 2^16 weights, in one loop: the
// word hash is a chain of dependent multiplications, which the 4-gram
// lookups fill the gaps of.
func sums16(f []byte, w *[1 << 16]int16) (int64, int) {
	var st sumState
	st.init()
	st.run16(f, 0, len(f), w)
	st.end16(w)
	return st.grams + st.words, st.n
}

// sumState carries sums16 across ranges of f.
type sumState struct {
	x, h         uint32
	wl, n        int
	grams, words int64
}

func (st *sumState) init() { st.h = 2166136261 }

// run16 adds the features of f[k0:k1] (4-grams starting at k-3 for each
// byte k, words ending before k1) to st.
func (st *sumState) run16(f []byte, k0, k1 int, w *[1 << 16]int16) {
	x, h, wl, n, grams, words := st.x, st.h, st.wl, st.n, st.grams, st.words
	for k := k0; k < k1; k++ {
		c := f[k]
		x = x>>8 | uint32(c)<<24
		if k >= 3 {
			grams += int64(w[(x^seedChar)*0x9E3779B1>>16])
		}
		if foldWordTab[c] {
			if wl < 64 {
				h = (h ^ uint32(c)) * 16777619
			}
			wl++
			continue
		}
		if wl > 0 {
			words += int64(w[mix(h^seedWord)>>16])
			n++
			h, wl = 2166136261, 0
		}
	}
	st.x, st.h, st.wl, st.n, st.grams, st.words = x, h, wl, n, grams, words
}

// end16 adds the last word.
func (st *sumState) end16(w *[1 << 16]int16) {
	if st.wl > 0 {
		st.words += int64(w[mix(st.h^seedWord)>>16])
		st.n++
	}
}

// dotWindows returns dot of f, of f[:win] and of f[len(f)-win:], for
// len(f) >= 2*win: the 4-gram sums of the windows come out of the pass
// over f, only their words are hashed again.
func (q *quantWeights) dotWindows(f []byte, win int) (float64, float64, float64) {
	if q.bits != 16 || win < 4 || len(f) < 2*win {
		return q.dot(f), q.dot(f[:win]), q.dot(f[len(f)-win:])
	}
	w := (*[1 << 16]int16)(q.w)
	var st sumState
	st.init()
	// 4-grams starting before win-3 lie in the head, those from
	// len(f)-win on in the tail.
	st.run16(f, 0, win, w)
	head := st.grams
	st.run16(f, win, len(f)-win+3, w)
	mid := st.grams
	st.run16(f, len(f)-win+3, len(f), w)
	st.end16(w)
	tail := st.grams - mid
	full := q.scaled(st.grams+st.words, len(f)-3+st.n)
	hw, hn := wordSum(f[:win], q.w, 16)
	tw, tn := wordSum(f[len(f)-win:], q.w, 16)
	return full, q.scaled(head+hw, win-3+hn), q.scaled(tail+tw, win-3+tn)
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

// denseNames names the dense features after the rules: length buckets.
func denseNames() []string {
	out := RuleNames()
	for i := range nLenBuckets {
		out = append(out, "len:"+string(rune('0'+i)))
	}
	return out
}
