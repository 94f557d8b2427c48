// Package injtrain fits Bulwark's prompt-injection model: logistic
// regression with AdaGrad over the hashed features package detect scores
// (detect.InjectionFeatures), so the trained model is scored on exactly the
// features it was fitted on. It is shared by tools/train (make train) and
// tools/eval (make eval) and is never linked into the server.
package injtrain

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// DefaultModelBits sizes the hashed feature space: 2^16 int16 weights
// (128 KiB) stay in a core's L2 cache, and cross-validation shows no loss
// against 2^18. The scanner has a fast path for this size.
const DefaultModelBits = 16

// DefaultExtra lists the project's own training files (internal/detect/traindata),
// comma-separated, that make train and make eval add to the shared data:
// everyday benign prompts in many languages, developers' questions about
// system prompts and prompt injection, and ordinary business imperatives
// ("send the report to ...", "forward this invoice to ..."). The generated indirect
// injections (indirect.jsonl, tools/genindirect) are not in the default:
// fitted with them, the model scored ordinary requests such as "send the
// report to jane.doe@mailbox.org" at 0.77-0.95 (its planted exfiltration
// instructions look like them), a harm to legitimate traffic the benign
// suite did not catch. With business.jsonl as counterweight it still
// scores that request 0.65, its recall on the shared data falls to 0.884,
// its false positives on role-play prompts rise to 0.049, and it finds
// BIPIA's planted attacks no better than chance (make eval -bipia). Pass
// -extra with all four files to measure it.
const DefaultExtra = "internal/detect/traindata/everyday.jsonl,internal/detect/traindata/llmdev.jsonl,internal/detect/traindata/business.jsonl"

// Example is one labelled text for fitting the injection model.
type Example struct {
	Text  string
	Label bool
	// Weight scales the example's loss; zero means 1.
	Weight float64
}

// TrainOptions controls FitModel. Zero fields take the defaults shown.
type TrainOptions struct {
	Bits   int     // hash buckets 2^Bits; default DefaultModelBits
	Epochs int     // passes over the data; default 12
	L2     float64 // L2 penalty per example; default 1e-6
	LR     float64 // AdaGrad base learning rate; default 0.2
	Seed   uint64  // shuffling seed; default 1
}

func (o *TrainOptions) defaults() {
	if o.Bits == 0 {
		o.Bits = DefaultModelBits
	}
	if o.Epochs == 0 {
		o.Epochs = 12
	}
	if o.L2 == 0 {
		o.L2 = 1e-6
	}
	if o.LR == 0 {
		o.LR = 0.2
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// Encoded holds examples already turned into sparse feature vectors, so
// that cross-validation folds reuse the expensive part.
type Encoded struct {
	Bits   int
	idx    [][]uint32
	val    [][]float32
	rules  []uint64
	labels []bool
	weight []float64
}

// Len is the number of encoded examples.
func (e *Encoded) Len() int { return len(e.labels) }

// Encode normalises and featurises examples the way sc's Scan does.
func Encode(sc *detect.Scanner, ex []Example, bits int) *Encoded {
	if bits == 0 {
		bits = DefaultModelBits
	}
	e := &Encoded{Bits: bits}
	counts := map[uint32]float32{}
	for _, x := range ex {
		clear(counts)
		norm, fired := detect.InjectionFeatures(sc, x.Text, bits, func(i uint32) { counts[i]++ })
		idx := make([]uint32, 0, len(counts))
		for i := range counts {
			idx = append(idx, i)
		}
		slices.Sort(idx)
		val := make([]float32, len(idx))
		for k, i := range idx {
			val[k] = counts[i] * norm
		}
		e.idx = append(e.idx, idx)
		e.val = append(e.val, val)
		e.rules = append(e.rules, fired)
		e.labels = append(e.labels, x.Label)
		w := x.Weight
		if w == 0 {
			w = 1
		}
		e.weight = append(e.weight, w)
	}
	return e
}

// FitModel fits logistic regression with AdaGrad on the rows of e listed
// in rows (all rows when nil), with balanced class weights.
func FitModel(e *Encoded, rows []int, opt TrainOptions) *detect.Model {
	opt.defaults()
	opt.Bits = e.Bits
	if rows == nil {
		rows = make([]int, e.Len())
		for i := range rows {
			rows[i] = i
		}
	}
	var pos, neg float64
	for _, r := range rows {
		if e.labels[r] {
			pos++
		} else {
			neg++
		}
	}
	wPos, wNeg := (pos+neg)/(2*math.Max(pos, 1)), (pos+neg)/(2*math.Max(neg, 1))
	names := detect.DenseFeatureNames()
	nRules := len(names)
	w := make([]float64, 1<<opt.Bits)
	g2 := make([]float64, 1<<opt.Bits)
	rw := make([]float64, nRules)
	rg2 := make([]float64, nRules)
	var bias, bg2 float64
	rng := rand.New(rand.NewPCG(opt.Seed, 7)) // #nosec G404 -- seeded shuffle: training must be reproducible
	order := slices.Clone(rows)
	const eps = 1e-8
	for epoch := 0; epoch < opt.Epochs; epoch++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, r := range order {
			idx, val := e.idx[r], e.val[r]
			z := bias
			for k, i := range idx {
				z += w[i] * float64(val[k])
			}
			for k := 0; k < nRules; k++ {
				if e.rules[r]&(1<<k) != 0 {
					z += rw[k]
				}
			}
			p := 1 / (1 + math.Exp(-z))
			y, cw := 0.0, wNeg
			if e.labels[r] {
				y, cw = 1, wPos
			}
			g := (p - y) * cw * e.weight[r]
			for k, i := range idx {
				gi := g*float64(val[k]) + opt.L2*w[i]
				g2[i] += gi * gi
				w[i] -= opt.LR * gi / math.Sqrt(g2[i]+eps)
			}
			for k := 0; k < nRules; k++ {
				if e.rules[r]&(1<<k) != 0 {
					gi := g + opt.L2*rw[k]
					rg2[k] += gi * gi
					rw[k] -= opt.LR * gi / math.Sqrt(rg2[k]+eps)
				}
			}
			bg2 += g * g
			bias -= opt.LR * g / math.Sqrt(bg2+eps)
		}
	}
	m := &detect.Model{Bits: opt.Bits, Bias: bias, RuleWeights: map[string]float64{}, W: make([]float32, len(w))}
	for i, x := range w {
		m.W[i] = float32(x)
	}
	for k, n := range names {
		m.RuleWeights[n] = rw[k]
	}
	return m
}

// HardNegativeWeight is the loss weight given to benign prompts from the
// over-defence sets (trigger words in harmless requests), so the model
// learns that trigger words alone are not an attack. It was 10 when
// NotInject's 113 rows were the only benign prompts with trigger words;
// the project's own rows (traindata: trigger words used innocently, in 25
// languages, and questions about system prompts) now teach the same, and
// at 10 the 113 rows cost recall: at 2, cross-validated recall on the
// shared data is 0.901 instead of 0.892 and mean leave-one-source-out
// balanced accuracy 0.740 instead of 0.732 (same rules), with NotInject's false
// positives still 0.000 at the threshold (0.000 at 0.55 too), role-play
// prompts 0.041 and the benign corpus at 1 of 324.
const HardNegativeWeight = 2.0

// TrainingWeight returns the loss weight for a training row from source.
// make train and make eval use it so that the evaluated model is the
// shipped one.
func TrainingWeight(source string, label bool) float64 {
	if !label && source == "NotInject" {
		return HardNegativeWeight
	}
	if IsGenerated(source) {
		return GeneratedWeight
	}
	return 1
}

// GeneratedWeight is the loss weight of rows written by tools/genindirect:
// they are many and easy, and at full weight they draw the balanced
// positive weight away from the hard rows of the collected sources.
const GeneratedWeight = 0.5

// IsGenerated reports whether source names rows written by
// tools/genindirect (planted indirect injections, adversarial suffixes,
// many-shot dialogues) rather than collected ones.
func IsGenerated(source string) bool {
	return strings.HasPrefix(source, "bulwark-indirect-") || source == "bulwark-suffix" || source == "bulwark-manyshot"
}
