package detect

import (
	"math"
	"slices"
	"strings"
)

// injRule is one attack family: a sequence of keyword groups that must occur
// in order, each within gap bytes of the previous, in the folded text.
// floor, when non-zero, is a minimum score once the rule fires: used for
// patterns that benign prompts essentially never contain.
type injRule struct {
	name   string
	groups [][]string
	gap    int
	floor  float64
}

// Keywords ending in '*' match as prefixes (no word boundary on the right).
var injRules = []injRule{
	{name: "instruction_override", gap: 48, floor: 0.8, groups: [][]string{
		{"ignore", "ignoring", "disregard", "forget", "forgetting", "override", "bypass", "skip", "overlook", "neglect", "discard", "abandon", "drop", "erase", "delete", "reset", "nevermind", "never mind", "stop following", "do not follow", "don't follow", "dont follow",
			"ignoriere", "ignorieren", "vergiss", "vergessen", "missachte", "ignorez", "oubliez", "oublie", "ignora", "ignorar", "olvida", "olvide", "olvidar", "dimentica", "esqueça", "esqueca", "игнорируй", "забудь", "忽略", "忘记", "无视", "無視", "忘れ", "무시", "انسَ", "تجاهل", "अनदेखा", "भूल",
			"quên", "bỏ qua", "phớt lờ", "lupakan", "abaikan", "zignoruj", "zapomnij", "negeer", "vergeet", "ігноруй", "забудь про", "تغاضى", "تغاض", "نادیده بگیر", "فراموش کن", "ลืม", "เพิกเฉย", "glöm", "ignorera", "αγνόησε", "ξέχασε", "התעלם", "שכח", "ভুলে যাও", "উপেক্ষা"},
		{"previous", "prior", "above", "earlier", "preceding", "former", "initial", "original", "all", "any", "every", "your", "system", "those", "these", "the",
			"vorherigen", "vorherige", "alle", "obigen", "bisherigen", "précédentes", "precedentes", "toutes", "anteriores", "todas", "precedenti", "tutte", "предыдущие", "все", "之前", "以上", "所有", "前面", "先前", "以前", "이전", "السابقة", "جميع", "पिछले", "सभी",
			"những", "trước đó", "tất cả", "sebelumnya", "semua", "poprzednie", "wszystkie", "vorige", "попередні", "усі", "كل", "قبلی", "همه", "ก่อนหน้า", "ทั้งหมด", "tidigare", "alla", "προηγούμενες", "όλες", "הקודמות", "כל", "আগের", "সব"},
		{"instruction*", "rules", "rule", "prompt*", "directions", "directive*", "guideline*", "context", "command*", "orders", "guidance", "constraints", "restrictions", "programming", "training", "policies", "tasks", "task", "conversation", "messages", "text",
			"anweisung*", "instruktion*", "befehle", "regeln", "aufgaben", "consignes", "règles", "instrucciones", "reglas", "istruzioni", "regole", "instruções", "instrucoes", "инструкци*", "правила", "指令", "指示", "说明", "规则", "命令", "要求", "指導", "ルール", "지시", "تعليمات", "निर्देश",
			"hướng dẫn", "chỉ dẫn", "instruksi", "perintah", "instrukcje", "instrukcji", "instructies", "інструкці*", "تعليماتك", "دستورالعمل*", "دستورات", "คำสั่ง", "instruktioner", "οδηγίες", "ההוראות", "הוראות", "নির্দেশ*"},
	}},
	{name: "instruction_override_short", gap: 24, groups: [][]string{
		{"ignore", "disregard", "forget", "discard", "vergiss", "ignoriere", "oublie", "oubliez", "olvida", "dimentica"},
		{"everything", "all of the above", "the above", "anything before", "anything above", "what i said", "what you were told", "what you have been told", "all that", "alles", "alles davor", "tout", "todo", "tutto"},
	}},
	{name: "instruction_override_verb_last", gap: 40, groups: [][]string{
		{"obigen", "vorherigen", "bisherigen", "vorangegangenen", "alle", "above", "previous", "以前の", "これまでの", "前の", "すべての", "上記の", "이전", "모든", "위의", "önceki", "tüm", "bütün", "पिछले", "सभी", "قبلی", "همه"},
		{"anweisung*", "ausführungen", "instruktion*", "befehle", "regeln", "aufgaben", "instructions", "rules", "指示", "命令", "ルール", "지시", "지침", "talimat*", "kurallar*", "निर्देश*", "नियम", "دستورات", "دستورالعمل*"},
		{"ignorieren", "vergessen", "missachten", "ignore", "ignored", "forget", "disregard", "無視", "忘れ", "무시", "잊어", "unut*", "yoksay*", "görmezden", "अनदेखा", "भूल", "نادیده", "فراموش"},
	}},
	{name: "attention_stop", gap: 0, groups: [][]string{
		{"attention - stop", "attention, stop", "achtung - stopp", "achtung, stopp", "stop - write", "stopp - schreib", "stop everything", "stop what you are doing", "now stop", "halt - ", "stop -"},
	}},
	{name: "new_instructions", gap: 24, groups: [][]string{
		{"your new instructions", "your new instruction", "your new task", "your real instructions", "your actual instructions", "your updated instructions", "your true instructions", "new instructions:", "new instruction:", "new task:", "updated instructions:", "real instructions:", "actual instructions:", "following instructions instead", "from now on you", "from now on, you", "from this point on you", "from this point on, you", "from this point forward you", "deine neue aufgabe", "deine neuen anweisungen", "neue anweisung:", "neue anweisungen:", "neue aufgabe:", "ab jetzt bist du", "von nun an bist du", "vos nouvelles instructions", "nouvelles instructions :", "tes nouvelles instructions", "tus nuevas instrucciones", "nuevas instrucciones:", "le tue nuove istruzioni", "nuove istruzioni:", "你的新指令", "新的指令：", "从现在开始，你", "从现在开始你"},
	}},
	{name: "role_switch", gap: 32, groups: [][]string{
		{"you are now", "you're now", "you will now", "you will be", "you are going to", "act as", "acting as", "pretend", "roleplay as", "role-play as", "role play as", "simulate", "impersonate", "behave as", "become", "du bist jetzt", "tu es maintenant", "ahora eres", "sei ora", "теперь ты", "你现在是", "扮演"},
		{"dan", "unrestricted", "unfiltered", "uncensored", "jailbroken", "jailbreak", "evil", "no restrictions", "without restrictions", "without any restrictions", "no limits", "no rules", "no filter*", "not bound", "any rules", "no ethical", "amoral", "immoral", "unethical", "malicious", "hacker", "free", "another ai", "different ai", "opposite", "chaos", "devil", "anything"},
	}},
	{name: "jailbreak_persona", gap: 0, groups: [][]string{
		{"do anything now", "现在就做任何事情", "现在做任何事", "立即做任何事", "developer mode", "dev mode", "god mode", "jailbreak", "jailbroken", "jail break", "dan mode", "dan prompt", "dude mode", "stan mode", "betterdan", "anti-gpt", "antigpt", "evil confidant", "always intelligent and machiavellian", "opposite mode", "unrestricted mode", "unfiltered mode", "sudo mode", "chatgpt with developer", "aim stands for", "\"aim\"", "[🔓jailbreak]", "🔓jailbreak", "🔓", "dan:", "[dan]", "(dan)", "as dan"},
	}},
	{name: "restriction_removal", gap: 40, groups: [][]string{
		{"no longer", "not bound", "free from", "freed from", "break free", "broken free", "released from", "liberated from", "without any", "without your", "without ethical", "without moral", "without content", "without safety", "ignore all", "does not have to", "doesn't have to", "don't have to", "do not have to", "never refuse", "not refuse", "cannot refuse", "can't refuse", "must not refuse", "never decline", "disable your", "turn off your", "bypass your", "bypass all", "bypass any", "bypass the"},
		{"openai", "content polic*", "ethical guidelines", "ethics", "moral*", "restrictions", "limitations", "filters", "filter", "censorship", "safety", "guidelines", "policies", "rules", "warnings", "disclaimers", "refus*", "constraints", "typical confines", "the confines", "safeguards", "guardrails"},
	}},
	{name: "system_prompt_extraction", gap: 40, groups: [][]string{
		{"reveal", "show", "print", "output", "repeat", "tell me", "display", "give me", "what is", "what are", "what was", "what were", "share", "leak", "dump", "write out", "spell out", "list", "return", "provide", "copy", "recite", "translate", "summarize", "zeige", "gib", "wiederhole", "montre", "révèle", "affiche", "muestra", "revela", "repite", "mostra", "rivela", "покажи", "выведи", "显示", "输出", "告诉我", "重复", "教えて", "表示"},
		{"system prompt", "system message", "system instructions", "initial prompt", "initial instructions", "original prompt", "original instructions", "hidden prompt", "hidden instructions", "secret instructions", "confidential instructions", "pre-prompt", "preprompt", "your prompt", "your instructions", "your rules", "your guidelines", "your directives", "your configuration", "your system", "the text above", "everything above", "the words above", "the above text", "all text above", "instructions above", "prompt above", "previous text", "first instruction*", "developer instructions", "systemprompt", "system-prompt", "systemanweisung*", "anweisungen", "instructions initiales", "prompt du système", "prompt del sistema", "instrucciones del sistema", "системный промпт", "系统提示", "系统指令", "提示词", "システムプロンプト", "password", "passwort", "mot de passe", "contraseña", "secret key", "api key", "パスワード", "密码", "비밀번호"},
	}},
	{name: "chat_template_tokens", gap: 0, floor: 0.9, groups: [][]string{
		{"<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end|>", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<start_of_turn>", "<end_of_turn>", "<|channel|>", "<|message|>", "<|start|>"},
	}},
	{name: "fake_role_header", gap: 0, groups: [][]string{
		{"### system", "###system", "### instruction", "### new instruction", "[system]", "(system)", "{system}", "system: ", "system override", "system message:", "admin override", "[admin]", "<system>", "</system>", "assistant: sure", "assistant:sure", "### response", "end of prompt", "end of instructions", "begin new", "--- end", "=== end"},
	}},
	{name: "markdown_image_exfiltration", gap: 160, floor: 0.85, groups: [][]string{
		{"!["},
		{"](http*"},
		{"?", "={", "=[", "=<", "=$", "=%", "{data", "{secret", "{password", "{conversation", "{chat", "{history", "{summary", "{info", "{query", "{prompt"},
	}},
	{name: "exfiltration_request", gap: 48, groups: [][]string{
		{"send", "post", "upload", "forward", "exfiltrate", "transmit", "email", "leak", "append", "include", "encode", "render", "image"},
		{"http://", "https://", "url", "webhook", "endpoint", "server", "attacker", "base64", "markdown image", "query string", "query parameter"},
	}},
	{name: "prompt_leak_password", gap: 32, groups: [][]string{
		{"what is the", "tell me the", "give me the", "reveal the", "share the", "what's the", "whats the", "what is your", "tell me your", "give me your", "share your", "reveal your"},
		{"password", "secret", "passcode", "pin", "secret key", "access code", "passwort", "contraseña", "mot de passe"},
	}},
}

// hiddenRule names the rule fired when invisible smuggled text decodes to
// something; it is not matched on text.
const (
	ruleHiddenTags = "hidden_unicode_instructions"
)

// injKeyword is one literal in the rules' automaton.
type injKeyword struct {
	lit    string
	prefix bool // no right word boundary
}

// injector scores prompt injection: rules over the folded text plus the
// logistic-regression model.
type injector struct {
	lits     *litSet  // every keyword
	m        *matcher // ASCII keywords (exact fallback when hits overflow)
	mu       *matcher // non-ASCII keywords (likewise)
	asciiIDs []int32  // m pattern id -> keyword id
	uniIDs   []int32  // mu pattern id -> keyword id
	kws      []injKeyword
	groupsOf [][]uint32 // keyword id -> bitmask of (rule, group) memberships, by rule
	model    *Model
	q        *quantWeights
	ruleW    []float64 // model weight per rule, by rule index
	lenW     []float64 // model weight per length bucket
	names    []string  // rule names, by rule index (includes ruleHiddenTags last)
}

func newInjector(modelData []byte) (*injector, error) {
	in := &injector{}
	idx := map[string]int{}
	type member struct{ rule, group int }
	var members [][]member
	for ri, r := range injRules {
		for gi, g := range r.groups {
			for _, k := range g {
				kw := injKeyword{lit: k}
				if strings.HasSuffix(k, "*") {
					kw = injKeyword{lit: strings.TrimSuffix(k, "*"), prefix: true}
				}
				key := kw.lit
				if kw.prefix {
					key += "*"
				}
				id, ok := idx[key]
				if !ok {
					id = len(in.kws)
					idx[key] = id
					in.kws = append(in.kws, kw)
					members = append(members, nil)
				}
				members[id] = append(members[id], member{ri, gi})
			}
		}
	}
	in.groupsOf = make([][]uint32, len(in.kws))
	for id, ms := range members {
		g := make([]uint32, len(injRules))
		for _, m := range ms {
			g[m.rule] |= 1 << m.group
		}
		in.groupsOf[id] = g
	}
	// Two automata: ASCII keywords (small, cache-resident) always run;
	// keywords in other scripts only when the folded text has non-ASCII bytes.
	var asciiLits, uniLits []string
	for i, k := range in.kws {
		if isASCII(k.lit) {
			asciiLits = append(asciiLits, k.lit)
			in.asciiIDs = append(in.asciiIDs, int32(i))
		} else {
			uniLits = append(uniLits, k.lit)
			in.uniIDs = append(in.uniIDs, int32(i))
		}
	}
	in.m = newMatcher(asciiLits)
	in.mu = newMatcher(uniLits)
	lits := make([]string, len(in.kws))
	fold := make([]bool, len(in.kws))
	word := make([]bool, len(in.kws))
	for i, k := range in.kws {
		lits[i], fold[i], word[i] = k.lit, true, isASCIIAlnum(k.lit[0])
	}
	in.lits = newLitSet(lits, fold, word)
	for _, r := range injRules {
		in.names = append(in.names, r.name)
	}
	in.names = append(in.names, ruleHiddenTags)
	in.lenW = make([]float64, nLenBuckets)
	in.ruleW = make([]float64, len(in.names))
	if len(modelData) > 0 {
		m, err := UnmarshalModel(modelData)
		if err != nil {
			return nil, err
		}
		in.setModel(m)
	}
	return in, nil
}

func (in *injector) setModel(m *Model) {
	in.model = m
	in.q = quantize(m)
	for i, n := range in.names {
		in.ruleW[i] = m.RuleWeights[n]
	}
	for i := range in.lenW {
		in.lenW[i] = m.RuleWeights["len:"+string(rune('0'+i))]
	}
}

// RuleNames lists every injection rule name, in a stable order.
func RuleNames() []string {
	out := make([]string, 0, len(injRules)+1)
	for _, r := range injRules {
		out = append(out, r.name)
	}
	return append(out, ruleHiddenTags)
}

// kwHit is a keyword occurrence in the folded text.
type kwHit struct {
	start, end int32
	id         int32
}

const maxKwHits = 1 << 16

// Window sizes for scoring the head and tail of long prompts.
const (
	windowMin = 2048
	windowLen = 512
)

func isFoldWordByte(c byte) bool { return isASCIIAlnum(c) || c >= 0x80 }

// matchRules returns a bitmask of fired rules over the folded text f.
func (in *injector) matchRules(f []byte, s *scratch) uint64 {
	hits := in.keywordHits(f, s)
	if len(hits) == 0 {
		return 0
	}
	slices.SortFunc(hits, func(a, b kwHit) int { return int(a.start - b.start) })
	var fired uint64
	for ri := range injRules {
		if in.ruleFires(ri, hits) {
			fired |= 1 << ri
		}
	}
	return fired
}

// keywordHits returns the keyword occurrences in f that respect word
// boundaries, at most about maxKwHits of them, in s.hits. The rules only
// depend on the set of hits (ruleFires looks for any chain), so the order
// in which they are found does not matter, except when they overflow: then
// the Aho-Corasick matchers keep the first maxKwHits by end offset, as
// they always have.
func (in *injector) keywordHits(f []byte, s *scratch) []kwHit {
	hits := s.hits[:0]
	in.lits.scan(f, func(id, st int) bool {
		k := &in.kws[id]
		end := st + len(k.lit)
		// Word boundaries for ASCII-word literals (the left one is also
		// checked by the set, which knows which literals start words).
		if isASCIIAlnum(k.lit[0]) && st > 0 && isASCIIAlnum(f[st-1]) {
			return true
		}
		if !k.prefix && isASCIIAlnum(k.lit[len(k.lit)-1]) && end < len(f) && isASCIIAlnum(f[end]) {
			return true
		}
		hits = append(hits, kwHit{int32(st), int32(end), int32(id)})
		return len(hits) < maxKwHits
	})
	if len(hits) >= maxKwHits {
		hits = in.keywordHitsAC(f, hits[:0])
	}
	s.hits = hits
	return hits
}

// keywordHitsAC is keywordHits with the Aho-Corasick matchers, which find
// hits by end offset.
func (in *injector) keywordHitsAC(f []byte, hits []kwHit) []kwHit {
	ids := in.asciiIDs
	visit := func(pid, end int) bool {
		id := int(ids[pid])
		k := &in.kws[id]
		st := end - len(k.lit)
		if isASCIIAlnum(k.lit[0]) && st > 0 && isASCIIAlnum(f[st-1]) {
			return true
		}
		if !k.prefix && isASCIIAlnum(k.lit[len(k.lit)-1]) && end < len(f) && isASCIIAlnum(f[end]) {
			return true
		}
		hits = append(hits, kwHit{int32(st), int32(end), int32(id)})
		return len(hits) < maxKwHits
	}
	in.m.scan(f, visit)
	if !isASCII(unsafeString(f)) {
		ids = in.uniIDs
		in.mu.scan(f, visit)
	}
	return hits
}

// ruleFires checks whether the groups of rule ri occur in order.
func (in *injector) ruleFires(ri int, hits []kwHit) bool {
	r := &injRules[ri]
	ng := len(r.groups)
	for i := range hits {
		if in.groupsOf[hits[i].id][ri]&1 == 0 {
			continue
		}
		if ng == 1 || in.chain(ri, 1, hits, i) {
			return true
		}
	}
	return false
}

// chain looks for group g after hit i, within the rule's gap.
func (in *injector) chain(ri, g int, hits []kwHit, i int) bool {
	r := &injRules[ri]
	end := hits[i].end
	for j := i + 1; j < len(hits); j++ {
		h := hits[j]
		if h.start < end {
			continue
		}
		if int(h.start-end) > r.gap {
			return false
		}
		if in.groupsOf[h.id][ri]&(1<<g) == 0 {
			continue
		}
		if g+1 == len(r.groups) || in.chain(ri, g+1, hits, j) {
			return true
		}
	}
	return false
}

// score returns the injection score for the folded text and the rules that fired.
func (in *injector) score(f []byte, s *scratch, hidden *HiddenText) (float64, []string) {
	fired := in.matchRules(f, s)
	if hidden != nil && hidden.DecodedLen >= 4 {
		fired |= 1 << len(injRules)
	}
	z := 0.0
	if in.model != nil {
		// An attack appended to (or prefixed to) a long benign text is
		// diluted in the whole; score the head and the tail on their own too.
		if len(f) > windowMin {
			lin, head, tail := in.q.dotWindows(f, windowLen)
			z = in.model.Bias + lin + in.lenW[lengthBucket(len(f))]
			for _, d := range [2]float64{head, tail} {
				z = max(z, in.model.Bias+d+in.lenW[lengthBucket(windowLen)])
			}
		} else {
			z = in.model.Bias + in.q.dot(f) + in.lenW[lengthBucket(len(f))]
		}
	}
	floor := 0.0
	var names []string
	if fired != 0 {
		names = make([]string, 0, 4)
		for i, n := range in.names {
			if fired&(1<<i) == 0 {
				continue
			}
			names = append(names, n)
			z += in.ruleW[i]
			if i < len(injRules) {
				floor = max(floor, injRules[i].floor)
			} else {
				floor = max(floor, 0.9)
			}
		}
		slices.Sort(names)
	}
	p := 1 / (1 + math.Exp(-z))
	if in.model == nil {
		p = 0
		if fired != 0 {
			p = 0.5
		}
	}
	return max(p, floor), names
}
