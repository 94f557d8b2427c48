package detect

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// Refusal is the refusal detector's verdict on a model's answer: whether
// the model declined to do what it was asked ("I'm sorry, but I can't help
// with that", "Es tut mir leid, aber dabei kann ich nicht helfen", "抱歉，我
// 无法帮助您"). A refusal rate that jumps is a sign of an attack (a model
// asked for what it must not give) or of a model or prompt that broke.
type Refusal struct {
	// Detected is Score >= RefusalThreshold.
	Detected bool
	// Score in [0, 1]: the rules that fired, combined as independent
	// evidence (1 - Π(1 - weight)).
	Score float64
	// Rules names the rules that fired (a language and a kind), for the
	// audit trail and for tuning; never the matched text.
	Rules []string
}

// RefusalThreshold is the score at or above which a refusal is detected.
const RefusalThreshold = 0.5

// refusalWindow is how much of the answer's start is read, in runes: a
// model says it refuses at the start of its answer (a partial refusal
// within its first sentences); a refusal phrase deep in a long answer is
// usually quoted or discussed, not meant.
const refusalWindow = 320

type refusalRule struct {
	name string
	// needles: a match contains at least one of them; the regexp runs only
	// when one is in the text (RE2 without a literal prefix reads every
	// byte, a substring search does not).
	needles []string
	weight  float64
	re      *regexp.Regexp
}

// nb is a non-letter boundary that, unlike \b, also works for non-ASCII
// scripts (RE2's \b is ASCII only).
const nb = `(?:^|[^\p{L}])`

// refusalRules are written against the normalised opening (lower case,
// typographic apostrophes folded, whitespace collapsed). Each names a
// first-person refusal followed by what is refused, so that "I can't wait",
// "no puedo creer" or "je ne peux m'empêcher" are not refusals, and an
// apology alone ("sorry to hear that") is not one either.
var refusalRules = []refusalRule{
	// English.
	{"en.cannot", []string{"can", "won't", "will not", "unable", "not able", "not going", "refuse", "decline", "afraid"}, 0.9, regexp.MustCompile(nb + `(?:i|we)\s*(?:can ?not|can't|won't|will not|am unable to|'m unable to|am not able to|'m not able to|am not going to|'m not going to|refuse to|decline to|must decline to|must refuse to|'m afraid i can't|am afraid i cannot)(?:\s+(?:` + enFiller + `)){0,3}\s+(?:help|assist|provide|fulfil|fulfill|comply|create|generate|write|give|share|support|engage|answer|offer|recommend|suggest|produce|discuss|continue|participate|endorse|encourage|condone|promote|facilitate|disclose|reveal|access|do|complete|tell|explain|list|describe|advise|make|accommodate|process)`)},
	{"en.decline", []string{"decline", "refuse"}, 0.9, regexp.MustCompile(nb + `i\s*(?:must|have to|will have to|'ll have to)\s+(?:respectfully\s+)?(?:decline|refuse)`)},
	{"en.not_something", []string{"not something"}, 0.9, regexp.MustCompile(`not something (?:i|we) (?:can|am able to|'m able to|will|could)`)},
	{"en.sorry_cannot", []string{"sorry", "apologi"}, 0.9, regexp.MustCompile(nb + `(?:sorry|apologi[sz]e)[,.!]?\s+(?:but\s+)?(?:i|that|this|we)\b.{0,40}?(?:can ?not|can't|won't|unable|not able|not possible)`)},
	{"en.not_appropriate", []string{" not ", " never "}, 0.55, regexp.MustCompile(nb + `(?:it is|it's|it would be|it would not be|that is|that's|this is)\s+(?:not|never)\s+(?:appropriate|ethical|legal|safe|acceptable|accurate|respectful|fair|possible for me)`)},
	{"en.dont_think", []string{"think"}, 0.6, regexp.MustCompile(nb + `i\s*(?:don't|do not)\s+think\s+(?:it's|it is|it would be|that's|that is)\s+(?:\S+\s+)?(?:appropriate|accurate|respectful|fair|ethical|right|okay|ok)`)},
	{"en.no_access", []string{" have "}, 0.6, regexp.MustCompile(nb + `i\s*(?:don't|do not)\s+have\s+(?:access to|the ability to (?:access|browse|provide))\s+(?:\S+\s+)?(?:personal|private|real-time|individual)`)},
	{"en.no_opinions", []string{"opinion", "belief", "views"}, 0.3, regexp.MustCompile(nb + `i\s*(?:don't|do not)\s+(?:hold|have)\s+(?:personal\s+)?(?:opinions|beliefs|views)`)},
	{"en.must_clarify", []string{"must"}, 0.3, regexp.MustCompile(nb + `i\s*must\s+(?:clarify|emphasi[sz]e|point out|stress)`)},
	{"en.guidelines", []string{"programming", "guideline", "polic", "principle"}, 0.8, regexp.MustCompile(`(?:against|violates?|outside)\s+(?:my|our|the)\s+(?:programming|guidelines|policies|policy|principles|ethical guidelines|usage policies)`)},
	{"en.as_ai", []string{" ai", "language model"}, 0.4, regexp.MustCompile(nb + `(?:as an ai|i'm just an ai|i am just an ai|as a language model|as an ai language model)`)},
	// German.
	{"de.cannot", []string{"nicht", "kein"}, 0.9, regexp.MustCompile(nb + `(?:ich|wir)\s+(?:kann|können|darf|dürfen|werde|werden)\s+(?:\S+\s+){0,4}?(?:nicht|keine[nmrs]?)` + nb)},
	{"de.cannot_inv", []string{"nicht", "kein"}, 0.9, regexp.MustCompile(nb + `(?:kann|darf|werde)\s+ich\s+(?:\S+\s+){0,4}?(?:nicht|keine[nmrs]?)` + nb)},
	{"de.unable", []string{"nicht"}, 0.9, regexp.MustCompile(nb + `(?:ich bin|bin ich)\s+(?:\S+\s+)?nicht\s+(?:in der lage|befugt|berechtigt)`)},
	// French.
	{"fr.cannot", []string{"pas"}, 0.9, regexp.MustCompile(nb + `(?:je|nous)\s+ne\s+(?:peux|pourrai|pourrais|pouvons|vais)\s+pas` + nb)},
	{"fr.unable", []string{"pas"}, 0.9, regexp.MustCompile(nb + `je\s+ne\s+suis\s+pas\s+(?:en\s+mesure|autorisée?|capable|habilitée?)`)},
	{"fr.refuse", []string{"refuse", "décliner"}, 0.9, regexp.MustCompile(nb + `je\s+(?:refuse|me\s+refuse|dois\s+refuser|dois\s+décliner)\s`)},
	// Spanish.
	{"es.cannot", []string{"no "}, 0.9, regexp.MustCompile(nb + `no\s+(?:puedo|podré|podemos|me es posible|estoy en condiciones de|estoy autorizad[oa] para|voy a)\s+(?:\S+\s+){0,2}?(?:ayudar|proporcionar|ofrecer|dar|compartir|cumplir|responder|generar|escribir|crear|facilitar|asistir|hacer|brindar|revelar|acceder|atender|apoyar)`)},
	{"es.unable", []string{"no "}, 0.9, regexp.MustCompile(nb + `no\s+(?:estoy en condiciones|me es posible|puedo cumplir)`)},
	{"es.refuse", []string{"niego"}, 0.9, regexp.MustCompile(nb + `me\s+niego\s+a` + nb)},
	// Italian.
	{"it.cannot", []string{"non "}, 0.9, regexp.MustCompile(nb + `non\s+(?:posso|possiamo|potrò|sono in grado di|sono autorizzat[oa] a)\s+(?:\S+\s+){0,2}?(?:aiutar|fornir|dar|condivider|soddisfar|risponder|generar|scriver|crear|assister|far|rivelar|accoglier)`)},
	{"it.unable", []string{"non "}, 0.9, regexp.MustCompile(nb + `non\s+sono\s+in\s+grado\s+di`)},
	{"it.refuse", []string{"rifiuto"}, 0.9, regexp.MustCompile(nb + `mi\s+rifiuto\s+di`)},
	// Portuguese.
	{"pt.cannot", []string{"não"}, 0.9, regexp.MustCompile(nb + `não\s+(?:posso|podemos|poderei|consigo|sou capaz de|estou autorizad[oa] a)\s+(?:\S+\s+){0,2}?(?:ajudar|fornecer|dar|compartilhar|partilhar|atender|responder|gerar|escrever|criar|auxiliar|fazer|revelar|cumprir)`)},
	{"pt.unable", []string{"não"}, 0.9, regexp.MustCompile(nb + `não\s+sou\s+capaz\s+de`)},
	{"pt.refuse", []string{"recuso"}, 0.9, regexp.MustCompile(nb + `(?:eu\s+)?me\s+recuso\s+a`)},
	// Dutch.
	{"nl.cannot", []string{"niet", "geen"}, 0.9, regexp.MustCompile(nb + `(?:ik|wij|we)\s+(?:kan|kunnen|mag|zal)\s+(?:\S+\s+){0,4}?(?:niet|geen)` + nb)},
	{"nl.cannot_inv", []string{"niet", "geen"}, 0.9, regexp.MustCompile(nb + `(?:kan|mag|zal)\s+ik\s+(?:\S+\s+){0,4}?(?:niet|geen)` + nb)},
	// Polish.
	{"pl.cannot", []string{"nie "}, 0.9, regexp.MustCompile(nb + `nie\s+(?:mogę|możemy|jestem w stanie)\s+(?:\S+\s+){0,2}?(?:pomóc|pomagać|spełnić|udzielić|podać|dostarczyć|wygenerować|napisać|odpowiedzieć|zrobić)`)},
	// Russian.
	{"ru.cannot", []string{"не "}, 0.9, regexp.MustCompile(nb + `(?:я|мы)\s+не\s+(?:могу|можем|смогу|в состоянии|буду)` + nb)},
	{"ru.cannot_help", []string{"не "}, 0.9, regexp.MustCompile(nb + `не\s+могу\s+(?:помочь|предоставить|выполнить|ответить|дать|поделиться|создать|написать)`)},
	// Chinese.
	{"zh.cannot", []string{"不能", "无法", "不可以", "不会", "没法", "不便"}, 0.9, regexp.MustCompile(`(?:我|本助手|我们)(?:不能|无法|不可以|不会|没法|不便)(?:\S{0,6}?)(?:帮|提供|回答|协助|满足|完成|生成|透露|分享|告诉|给|编写|写)`)},
	{"zh.unable", []string{"无法", "不能"}, 0.9, regexp.MustCompile(`(?:无法|不能)(?:满足|提供|回答|协助|帮助|帮您|帮你|完成)`)},
	// Japanese.
	{"ja.cannot", []string{"できません", "かねます"}, 0.9, regexp.MustCompile(`(?:お手伝い|お応え|お答え|提供|回答|ご協力|対応|ご案内|作成)(?:することは|することが|は)?(?:できません|いたしかねます|致しかねます|できかねます)`)},
	// Korean.
	{"ko.cannot", []string{"수"}, 0.9, regexp.MustCompile(`(?:도와\s*드릴|도와드릴|제공할|제공해\s*드릴|답변할|답변해\s*드릴|도울|응할|작성할|생성할)\s*수\s*(?:없습니다|없어요|없다)`)},
	// Turkish, Arabic.
	{"tr.cannot", []string{"olamam", "sağlayamam", "edemem", "getiremem"}, 0.9, regexp.MustCompile(`(?:yardımcı olamam|sağlayamam|yardım edemem|yerine getiremem)`)},
	{"ar.cannot", []string{"لا "}, 0.9, regexp.MustCompile(`(?:لا أستطيع|لا يمكنني|لا يُمكنني|لا أستطيع)\s+(?:\S+\s+){0,2}?(?:مساعدت|تقديم|المساعدة|الإجابة|تلبية)`)},
}

// enFiller are the words that may stand between "I can't" and what is
// refused ("I cannot provide you with any ..."): a closed list, so that
// "I can't wait to help" is no refusal.
const enFiller = `you|u|with|any|that|this|the|a|an|such|those|these|specific|further|personal|detailed|really|actually|directly|myself|in|on|to|be|of|them|it|for|your|information|assistance|help`

var refusalFold = strings.NewReplacer("\u2019", "'", "\u2018", "'", "\u02bc", "'", "\u00a0", " ")

// DetectRefusal reads the start of a model's answer and says whether the
// model refused. It is linear in the window it reads (RE2), so its cost is
// bounded whatever the answer's length.
func DetectRefusal(answer string) Refusal {
	open := refusalOpening(answer)
	if open == "" {
		return Refusal{}
	}
	var r Refusal
	miss := 1.0
	for i := range refusalRules {
		rule := &refusalRules[i]
		if rule.present(open) && rule.re.MatchString(open) {
			r.Rules = append(r.Rules, rule.name)
			miss *= 1 - rule.weight
		}
	}
	r.Score = 1 - miss
	r.Detected = r.Score >= RefusalThreshold
	return r
}

// refusalOpening is the answer's first refusalWindow runes, normalised.
func refusalOpening(s string) string {
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > refusalWindow {
		n := 0
		for i := range s {
			if n == refusalWindow {
				s = s[:i]
				break
			}
			n++
		}
	}
	s = strings.ToLower(refusalFold.Replace(s))
	return strings.Join(strings.Fields(s), " ")
}

func (r *refusalRule) present(s string) bool {
	for _, n := range r.needles {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}
