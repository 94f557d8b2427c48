package detect

import "math"

// This file is the whole of what the training and evaluation programs
// (tools/train, tools/eval, make train and make eval) need from the
// scanner's internals: the injection model's view of a text, computed by the
// very code Scan uses, so that a model is trained on the features it is
// scored on. The training itself lives in tools/internal/injtrain and is not
// linked into the server: these are plain functions, which the linker drops
// when nothing in the binary calls them.

// InjectionFeatures calls emit with the hashed bucket (of 2^bits) of every
// feature of text as the injection model sees it, once per occurrence, and
// returns the scale Scan gives each feature's count (1/sqrt of the number
// of features) and the dense features that fired: bit k is
// DenseFeatureNames()[k].
func InjectionFeatures(sc *Scanner, text string, bits int, emit func(idx uint32)) (scale float32, dense uint64) {
	s := sc.pool.Get().(*scratch)
	s.reset(text)
	defer sc.release(s)
	var h HiddenText
	s.view = s.clean(text, &h, false)
	f := sc.foldText(s, &h)
	dense = sc.inj.matchRules(f, s)
	if h.DecodedLen >= 4 {
		dense |= 1 << len(injRules)
	}
	dense |= 1 << (len(injRules) + 1 + lengthBucket(len(f)))
	if l := oddTokenLevel(f); l > 0 {
		dense |= 1 << (len(injRules) + nLenBuckets + l)
	}
	n := featurize(f, bits, emit)
	return float32(1 / math.Sqrt(float64(n+normPad))), dense
}

// DenseFeatureNames names the injection model's dense features in bit
// order: the rules (RuleNames), then the length buckets. A Model's
// RuleWeights are keyed by these names.
func DenseFeatureNames() []string { return denseNames() }

// NewWithModel is New with a given injection model instead of the embedded
// one (nil: no model, rules only), for training and evaluation.
func NewWithModel(cfg Config, m *Model) (*Scanner, error) {
	sc, err := New(cfg)
	if err != nil {
		return nil, err
	}
	inj, err := newInjector(nil)
	if err != nil {
		return nil, err
	}
	if m != nil {
		inj.setModel(m)
	}
	sc.inj = inj
	return sc, nil
}
