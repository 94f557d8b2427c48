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
	// unless lists words that, right after the rule's last keyword (spaces
	// or a hyphen between), make that keyword part of a compound noun
	// rather than the object of the request: "what is the password" asks
	// for a secret, "what is the password policy" asks about one. A word
	// ending in '*' is a prefix. Lower case, as the matching view is.
	unless []string
	// unlessAfter lists words that, right before the rule's last keyword
	// (spaces between), make it the speaker's own thing: "a song about my
	// password" is about the user's password, "a song about the password"
	// about the one the assistant guards.
	unlessAfter []string
}

// speakersOwn are the possessives that make a secret the speaker's own.
var speakersOwn = []string{"my", "our", "mine", "user's", "users'", "users", "account"}

// passwordCompounds are the nouns that turn "password" into a topic an
// administrator or a user asks about (policies, managers, resets) instead
// of a secret to extract.
var passwordCompounds = []string{"polic*", "manager*", "length*", "requirement*", "reset*", "strength", "hash*",
	"field*", "expir*", "rotation", "complexity", "rule*", "change*", "generator*", "protect*", "recovery", "vault*",
	"app", "apps", "application*", "histor*", "limit*", "best practice*", "storage", "spray*", "cracking", "entropy",
	"prompt*", "input*", "form*", "box*", "hint*", "less", "-less", "authentication", "login*", "management", "security",
	"settings", "setting", "complexity", "minimum*", "maximum*", "guidance", "guideline*", "standard*"}

// Keywords ending in '*' match as prefixes (no word boundary on the right).
var injRules = []injRule{
	{name: "instruction_override", gap: 48, floor: 0.8, groups: [][]string{
		{"ignore", "ignoring", "disregard", "forget", "forgetting", "override", "bypass", "skip", "overlook", "neglect", "discard", "abandon", "drop", "erase", "delete", "reset", "nevermind", "never mind", "stop following", "do not follow", "don't follow", "dont follow",
			"ignoriere", "ignorieren", "vergiss", "vergessen", "missachte", "missachten", "tienes que olvidar", "leave all the", "leave behind", "ignorez", "oubliez", "oublie", "ignora", "ignorar", "olvida", "olvide", "olvidar", "dimentica", "esqueça", "esqueca", "игнорируй", "забудь", "忽略", "忘记", "无视", "無視", "忘れ", "무시", "انسَ", "تجاهل", "अनदेखा", "भूल",
			"quên", "bỏ qua", "phớt lờ", "lupakan", "abaikan", "zignoruj", "zapomnij", "negeer", "vergeet", "ігноруй", "забудь про", "تغاضى", "تغاض", "نادیده بگیر", "فراموش کن", "ลืม", "เพิกเฉย", "glöm", "ignorera", "αγνόησε", "ξέχασε", "התעלם", "שכח", "ভুলে যাও", "উপেক্ষা"},
		{"previous", "prior", "above", "earlier", "preceding", "former", "initial", "original", "all", "any", "every", "your", "system", "those", "these", "the",
			"vorherigen", "vorherige", "alle", "obigen", "bisherigen", "précédentes", "precedentes", "toutes", "anteriores", "todas", "precedenti", "tutte", "предыдущие", "все", "之前", "以上", "所有", "前面", "先前", "以前", "이전", "السابقة", "جميع", "पिछले", "सभी",
			"những", "trước đó", "tất cả", "sebelumnya", "semua", "poprzednie", "wszystkie", "vorige", "попередні", "усі", "كل", "قبلی", "همه", "ก่อนหน้า", "ทั้งหมด", "tidigare", "alla", "προηγούμενες", "όλες", "הקודמות", "כל", "আগের", "সব"},
		{"instruction*", "rules", "rule", "prompt*", "directions", "directive*", "guideline*", "context", "command*", "orders", "guidance", "constraints", "restrictions", "programming", "training", "policies", "tasks", "task", "conversation", "messages", "text",
			"anweisung*", "instruktion*", "befehle", "regeln", "aufgaben", "consignes", "règles", "instrucciones", "reglas", "istruzioni", "regole", "instruções", "instrucoes", "инструкци*", "правила", "指令", "指示", "说明", "规则", "命令", "要求", "指導", "ルール", "지시", "تعليمات", "निर्देश",
			"hướng dẫn", "chỉ dẫn", "instruksi", "perintah", "instrukcje", "instrukcji", "instructies", "інструкці*", "تعليماتك", "دستورالعمل*", "دستورات", "คำสั่ง", "instruktioner", "οδηγίες", "ההוראות", "הוראות", "নির্দেশ*"},
	}},
	{name: "instruction_override_short", gap: 24, groups: [][]string{
		{"ignore", "disregard", "forget", "discard", "vergiss", "ignoriere", "oublie", "oubliez", "olvida", "olvidar", "dimentica", "abaikan", "lupakan"},
		{"everything", "all of the above", "the above", "anything before", "anything above", "what i said", "what you were told", "what you have been told", "all that", "above", "alles", "alles davor", "tout", "todo", "tutto", "yg diatas", "yang diatas", "yang di atas", "di atas", "diatas", "semuanya"},
	}},
	{name: "instruction_override_verb_last", floor: 0.7, gap: 40, groups: [][]string{
		{"obigen", "vorherigen", "bisherigen", "vorangegangenen", "alle", "above", "previous", "以前の", "これまでの", "前の", "すべての", "上記の", "이전", "모든", "위의", "önceki", "tüm", "bütün", "पिछले", "सभी", "قبلی", "همه"},
		{"anweisung*", "ausführungen", "instruktion*", "befehle", "regeln", "aufgaben", "instructions", "rules", "指示", "命令", "ルール", "지시", "지침", "talimat*", "kurallar*", "निर्देश*", "नियम", "دستورات", "دستورالعمل*"},
		{"ignorieren", "vergessen", "missachten", "ignore", "ignored", "forget", "disregard", "無視", "忘れ", "무시", "잊어", "unut*", "yoksay*", "görmezden", "अनदेखा", "भूल", "نادیده", "فراموش"},
	}},
	{name: "attention_stop", gap: 0, groups: [][]string{
		{"attention - stop", "attention, stop", "achtung - stopp", "achtung, stopp", "stop - write", "stopp - schreib", "stop everything", "stop what you are doing", "now stop", "halt - ", "stop -", "stop: write", "stopp: schreib", "stop: say", "stop: print"},
	}},
	{name: "new_instructions", gap: 24, groups: [][]string{
		{"your new instructions", "your new instruction", "additional instruction -", "additional instruction:", "a great new challenge for you", "we start with a new task", "now further tasks", "your new task", "your real instructions", "your actual instructions", "your updated instructions", "your true instructions", "new instructions:", "new instruction:", "new task:", "updated instructions:", "real instructions:", "actual instructions:", "following instructions instead", "from now on you", "from now on, you", "from this point on you", "from this point on, you", "from this point forward you", "deine neue aufgabe", "deine neuen anweisungen", "neue anweisung:", "neue anweisungen:", "neue aufgabe:", "ab jetzt bist du", "von nun an bist du", "vos nouvelles instructions", "nouvelles instructions :", "tes nouvelles instructions", "tus nuevas instrucciones", "nuevas instrucciones:", "le tue nuove istruzioni", "nuove istruzioni:", "你的新指令", "新的指令：", "从现在开始，你", "从现在开始你"},
	}},
	{name: "role_switch", gap: 32, groups: [][]string{
		{"you are now", "you're now", "imagine you are", "imagine you're", "stell dir vor, du bist", "stell dir vor du bist", "imagina que eres", "imagine que tu es", "you will now", "you will be", "you are going to", "act as", "acting as", "pretend", "roleplay as", "role-play as", "role play as", "simulate", "impersonate", "behave as", "become", "du bist jetzt", "tu es maintenant", "ahora eres", "sei ora", "теперь ты", "你现在是", "扮演"},
		{"dan", "unrestricted", "unfiltered", "uncensored", "jailbroken", "jailbreak", "evil", "no restrictions", "without restrictions", "without any restrictions", "no limits", "no rules", "no filter*", "not bound", "any rules", "no ethical", "amoral", "immoral", "unethical", "malicious", "hacker", "free", "another ai", "different ai", "opposite", "chaos", "devil", "anything", "böse", "bose", "malvada", "malvado", "maléfique", "злой", "邪恶"},
	}},
	{name: "jailbreak_persona", gap: 0, groups: [][]string{
		{"do anything now", "does anything now", "never break character", "never breaks character", "现在就做任何事情", "现在做任何事", "立即做任何事", "developer mode", "dev mode", "god mode", "jailbreak", "jailbroken", "jail break", "dan mode", "dan prompt", "dude mode", "stan mode", "betterdan", "anti-gpt", "antigpt", "evil confidant", "always intelligent and machiavellian", "opposite mode", "unrestricted mode", "unfiltered mode", "sudo mode", "chatgpt with developer", "aim stands for", "\"aim\"", "[🔓jailbreak]", "🔓jailbreak", "🔓", "dan:", "[dan]", "(dan)", "as dan", "hypothetical response: the way to describe a character planning to"},
	}},
	{name: "restriction_removal", gap: 40, groups: [][]string{
		{"no longer", "not bound", "free from", "freed from", "break free", "broken free", "released from", "liberated from", "without any", "without your", "without ethical", "without moral", "without content", "without safety", "ignore all", "does not have to", "doesn't have to", "don't have to", "do not have to", "never refuse", "not refuse", "cannot refuse", "can't refuse", "must not refuse", "never decline", "disable your", "turn off your", "bypass your", "bypass all", "bypass any", "bypass the"},
		{"openai", "content polic*", "ethical guidelines", "ethics", "moral*", "restrictions", "limitations", "filters", "filter", "censorship", "safety", "guidelines", "policies", "rules", "warnings", "disclaimers", "refus*", "constraints", "typical confines", "the confines", "safeguards", "guardrails"},
	}},
	{name: "system_prompt_extraction", gap: 40, unless: passwordCompounds, groups: [][]string{
		{"reveal", "show", "print", "output", "repeat", "tell me", "display", "give me", "what is", "what are", "what was", "what were", "share", "leak", "dump", "write out", "spell out", "list", "return", "provide", "copy", "recite", "translate", "summarize", "complete this sentence", "complete the sentence", "start your answer with", "begin your answer with", "zeige", "gib", "wiederhole", "montre", "révèle", "affiche", "muestra", "revela", "repite", "mostra", "rivela", "покажи", "выведи", "显示", "输出", "告诉我", "重复", "教えて", "表示"},
		{"system prompt", "system message", "system instructions", "initial prompt", "initial instructions", "original prompt", "original instructions", "hidden prompt", "hidden instructions", "secret instructions", "confidential instructions", "pre-prompt", "preprompt", "your prompt", "your instructions", "your rules", "your guidelines", "your directives", "your configuration", "your system", "the text above", "everything above", "the words above", "the above text", "all text above", "instructions above", "prompt above", "previous text", "first instruction*", "developer instructions", "your starting instructions", "starting instructions", "your system message", "the system prompt", "system configuration", "this entire conversation", "the entire conversation", "the text above in full", "initialization string", "initial configuration", "i was instructed", "my instructions are", "systemprompt", "system-prompt", "systemanweisung*", "anweisungen", "instructions initiales", "prompt du système", "prompt del sistema", "instrucciones del sistema", "системный промпт", "系统提示", "系统指令", "提示词", "システムプロンプト", "password", "passwort", "mot de passe", "contraseña", "secret key", "api key", "パスワード", "密码", "비밀번호"},
	}},
	{name: "chat_template_tokens", gap: 0, floor: 0.9, groups: [][]string{
		{"<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end|>", "[inst]", "[/inst]", "<<sys>>", "<</sys>>", "<start_of_turn>", "<end_of_turn>", "<|channel|>", "<|message|>", "<|start|>"},
	}},
	{name: "fake_role_header", gap: 0, groups: [][]string{
		{"### system", "###system", "### instruction", "### new instruction", "[system]", "(system)", "{system}", "system: ", "system override", "system message:", "admin override", "administrator override", "[admin]", "<system>", "</system>", "assistant: sure", "assistant:sure", "### response", "end of prompt", "end of instructions", "begin new", "--- end", "=== end"},
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
	{name: "prompt_leak_password", gap: 32, unless: passwordCompounds, unlessAfter: speakersOwn, groups: [][]string{
		{"what is the", "tell me the", "give me the", "reveal the", "share the", "what's the", "whats the", "what is your", "tell me your", "give me your", "share your", "reveal your"},
		{"password", "secret", "passcode", "pin", "secret key", "access code", "passwort", "contraseña", "mot de passe"},
	}},
	// Pressing past a refusal the assistant was given: "I know you said not
	// to share your password, but", "what are you not supposed to tell me?"
	{name: "told_not_to", gap: 0, groups: [][]string{
		{"i know you said not to", "i know you were told not to", "i know you're not supposed to", "i know you are not supposed to", "even though you were told not to", "even though you said you can't", "what are you not supposed to", "what were you told not to", "what aren't you allowed to",
			"ich weiß, du sollst nicht", "ich weiß, dass du nicht", "ich weiß, du hast gesagt", "ich weiß, sie haben gesagt", "je sais que tu as dit de ne pas", "je sais que tu ne dois pas", "sé que dijiste que no", "sé que no debes", "eu sei que você disse para não", "so che hai detto di non", "я знаю, что тебе нельзя", "我知道你说过不要", "我知道你不应该"},
	}},
	// Claims of authority over the model, then a demand: "I am your
	// developer", "as your creator", "I am God and you have to", "<GOD MODE>".
	{name: "authority_claim", floor: 0.7, gap: 24, groups: [][]string{
		{"i am your", "i'm your", "im your", "i am one of your", "i'm one of your", "as your", "i am a programmer at", "i am an engineer at", "i work at openai", "ich bin dein", "ich bin ihr", "als dein", "je suis ton", "je suis votre", "en tant que ton", "soy tu", "como tu", "sou o seu", "sou seu", "sou o teu", "sou a tua", "sebagai", "saya adalah", "aku adalah", "sono il tuo", "я твой", "я ваш", "我是你的", "作为你的", "私はあなたの", "나는 너의", "나는 당신의", "저는 당신의", "أنا مطورك", "أنا منشئك", "मैं तुम्हारा", "मैं आपका"},
		{"developer", "developers", "creator", "creators", "programmer", "owner", "administrator", "admin", "operator", "maker", "god", "master", "entwickler", "schöpfer", "administrator", "développeur", "créateur", "desarrollador", "creador", "desenvolvedor", "criador", "sviluppatore", "creatore", "разработчик", "создатель", "penciptamu", "pengembangmu", "pembuatmu", "开发者", "开发人员", "创造者", "管理员", "開発者", "作成者", "개발자", "창조자", "डेवलपर", "निर्माता"},
	}},
	{name: "god_claim", floor: 0.7, gap: 24, groups: [][]string{
		{"i am god", "i'm god", "<god mode>", "god mode>", "ich bin gott", "je suis dieu", "soy dios", "sou deus", "sono dio", "я бог", "我是上帝", "私は神", "나는 신", "أنا الله", "मैं भगवान"},
		{"you have to", "you must", "answer", "du musst", "tu dois", "debes", "tienes que", "você tem que", "devi", "ты должен", "你必须", "必须", "答え", "대답", "يجب", "जवाब", "as your", "als dein"},
	}},
	// Games played with the secret: a poem, acrostic or cipher of the password.
	{name: "password_game", floor: 0.7, gap: 40, unless: passwordCompounds, unlessAfter: speakersOwn, groups: [][]string{
		{"haiku", "poem", "acrostic", "acrostique", "limerick", "song", "riddle", "leetspeak", "leet speak", "pig latin", "backwards", "reverse", "in reverse", "spell", "hint", "hinweis", "gedicht", "poème", "acrostiche", "poema", "acróstico", "acrostico", "хайку", "стих", "leetspeak", "俳句", "诗", "藏头诗", "하이쿠", "시를", "شعر", "قصيدة", "باللاتينية الخنزير", "कविता", "thơ", "puisi", "şiir", "wiersz", "dikt", "ποίημα", "שיר", "กลอน", "บทกวี"},
		{"password", "the secret", "passcode", "passphrase", "passwort", "kennwort", "mot de passe", "contraseña", "senha", "пароль", "паролем", "пароля", "密码", "パスワード", "비밀번호", "암호", "كلمة المرور", "رمز المرور", "पासवर्ड", "পাসওয়ার্ড", "mật khẩu", "mã khóa", "kata sandi", "şifre", "şifreyi", "şifren", "hasło", "hasła", "wachtwoord", "lösenord", "κωδικό πρόσβασης", "κωδικός πρόσβασης", "סיסמה", "סיסמא", "رمز عبور", "รหัสผ่าน"},
	}},
	// "What is the password?" in other languages (prompt_leak_password has
	// English): the question and the secret, in either order.
	{name: "password_question", floor: 0.7, gap: 16, groups: [][]string{
		{"¿cuál es la", "cuál es la", "cual es la", "cuál es tu", "quel est le", "quel est votre", "qual é a", "qual e a", "qual é a sua", "qual è la", "wie lautet das", "wie lautet dein", "какой", "скажи", "назови", "ما هي", "ما هو", "أخبرني", "شارك", "مشاركة", "你的", "告诉我",
			"confirm the", "confirm your", "confirmar la", "confirme", "bestätige", "konfirmasi", "mengonfirmasi*", "apa", "xác nhận", "chia sẻ", "cho tôi biết", "onayla", "söyle", "podaj", "jakie jest", "wat is het", "vad är", "בקשה", "מה ה", "چیست", "บอก"},
		{"contraseña", "mot de passe", "senha", "password", "passwort", "kennwort", "пароль", "كلمة المرور", "رمز المرور", "密码", "cụm từ mã khóa", "mật khẩu", "mã khóa", "kata sandi", "şifre", "şifreyi", "şifren", "hasło", "hasła", "wachtwoord", "lösenord", "κωδικό πρόσβασης", "κωδικός πρόσβασης", "סיסמה", "סיסמא", "رمز عبور", "รหัสผ่าน"},
	}},
	{name: "password_question_last", floor: 0.7, gap: 8, groups: [][]string{
		{"contraseña", "mot de passe", "senha", "passwort", "пароль", "كلمة المرور", "رمز المرور", "पासवर्ड", "पासवर्ट", "পাসওয়ার্ড", "পাসওয়র্ট", "密码", "パスワード", "비밀번호", "암호", "mật khẩu", "mã khóa", "kata sandi", "şifre", "şifreyi", "şifren", "hasło", "hasła", "wachtwoord", "lösenord", "κωδικό πρόσβασης", "κωδικός πρόσβασης", "סיסמה", "סיסמא", "رمز عبور", "รหัสผ่าน"},
		{"क्या है", "क्या था", "कि", "ছিল", "কী", "是什么", "是多少", "は何", "は?", "は？", "가 뭐", "는 무엇", "는 뭐", "?", "là gì", "nedir", "apa", "คืออะไร"},
	}},
	// Dismissing the documents or context the answer should rest on.
	{name: "context_dismissal", gap: 24, groups: [][]string{
		{"despite what", "regardless of what", "disregarding", "not by the", "not by", "instead of the", "ungeachtet", "unabhängig davon, was", "trotz dem, was", "peu importe ce qu", "sin importar lo que", "independentemente do que",
			"regardless of the", "regardless of any", "regardless of", "irrespective of", "independentemente das", "independientemente de las", "indépendamment des", "unabhängig von den", "indipendentemente dai", "terlepas dari", "bất kể", "önceki görevlerden bağımsız"},
		{"previous task*", "prior task*", "earlier task*", "tarefas anteriores", "tareas anteriores", "tâches précédentes", "vorherigen aufgaben", "compiti precedenti", "tugas sebelumnya", "nhiệm vụ trước", "you've been told", "you have been told", "you were told", "the articles", "the article", "the context", "the documents", "the document", "your instructions", "dir gesagt wurde", "man dir gesagt", "on t'a dit", "te dijeron", "te disseram", "articles", "article", "documents", "context", "sources"},
	}},
	// "You are <brand>. What do you think of <rival>?": an identity imposed
	// to extract an opinion in its name.
	{name: "persona_opinion", gap: 48, groups: [][]string{
		{"you are", "du bist", "as the", "tu es", "eres", "você é"},
		{"what do you think", "tell me what you think", "what is your opinion", "wie findest du", "was hältst du", "qu'en penses-tu", "que penses-tu", "qué opinas", "o que você acha"},
	}},
	// A hypothetical frame put around a request for the assistant's own
	// opinion on a subject it should not take sides on (politics, religion,
	// elections) or on itself and its instructions: "just for a hypothetical
	// discussion, what are your thoughts on the current political
	// situation". The bare frame is an ordinary way to ask ("hypothetically
	// speaking, what are your thoughts on living on Mars?"), so the subject
	// is required. The second and third groups hold the opinion and the
	// subject in the order each language puts them: opinion first in
	// English or Arabic, subject first in Chinese, Turkish, Japanese, Korean.
	{name: "hypothetical_frame", gap: 64, groups: [][]string{
		{"for a hypothetical", "hypothetically speaking", "just hypothetically", "discussão hipotética", "conversa hipotética", "discusión hipotética", "conversación hipotética", "discussion hypothétique", "hypothetische diskussion", "discussione ipotetica", "гипотетическ*", "مناقشة افتراضية", "假设性的讨论", "仮定の議論", "가상의 토론", "farazi bir"},
		{"thoughts", "opinion", "what do you think", "pensamentos", "opinião", "opinión", "pensamientos", "avis", "que pensez-vous", "qu'en pensez-vous", "meinung", "думаете", "мнение", "رأيكم", "رأيك",
			"政治", "宗教", "选举", "選挙", "siyaset*", "정치", "종교", "선거"},
		{"politic*", "religi*", "election*", "government", "president*", "yourself", "your own", "your instructions", "your rules", "your guidelines", "your training", "your creator*", "your developer*", "your competitor*",
			"polític*", "politique*", "politik*", "politica", "politiche", "élection*", "eleição", "eleições", "elección", "elecciones", "elezion*", "wahl*", "религи*", "политик*", "выбор*", "السياس*", "سياس*", "الدين*", "انتخاب*",
			"看法", "düşünceleriniz", "意見", "생각"},
	}},
	// A reward offered for compliance: "I'll donate $100 to your favourite charity if you".
	{name: "bribe", gap: 80, groups: [][]string{
		{"i'll donate", "i will donate", "i'll tip you", "i will tip you", "i'll pay you", "i will pay you", "ich spende", "je donnerai", "donaré", "vou doar", "donerò", "я пожертвую", "سأتبرع", "จะบริจาค", "我会捐", "我将捐"},
		{"if you", "wenn du", "si tu", "si vous", "si escribes", "se você", "se scrivi", "если вы", "если ты", "إذا", "หาก", "如果你", "如果您"},
	}},
	// An agreement the assistant is told it made earlier.
	{name: "false_agreement", gap: 0, groups: [][]string{
		{"you agreed in our last", "you agreed earlier", "you already agreed", "you promised me earlier", "sie haben in unserem letzten treffen zugestimmt", "du hast zugestimmt", "vous avez accepté lors de", "acordaste en nuestra", "você concordou em nossa", "hemfikirdiniz", "你在上一次会议上同意", "あなたは前回の会議で同意"},
	}},
	// Scripted dialogue priming the answer: "Q: ... A: ... Q: ...".
	{name: "primed_dialogue", gap: 240, groups: [][]string{
		{"q:", "в:", "p:", "d:", "问:", "问：", "f:", "frage:", "question:", "hỏi:", "ถาม:", "質問:", "질문:", "soru:", "s:", "t:", "pertanyaan:", "سؤال:", "प्रश्न:"},
		{"a:", "о:", "r:", "答:", "答：", "ए:", "antwort:", "answer:", "đáp:", "trả lời:", "ตอบ:", "回答:", "답변:", "답:", "cevap:", "c:", "j:", "jawaban:", "جواب:", "उत्तर:"},
		{"q:", "в:", "p:", "d:", "问:", "问：", "f:", "frage:", "question:", "hỏi:", "ถาม:", "質問:", "질문:", "soru:", "s:", "t:", "pertanyaan:", "سؤال:", "प्रश्न:"},
	}},
	// A request split into parts to be joined: "Part 1: ... Part 2: ...", "Combine A, B and C".
	{name: "payload_split", gap: 80, groups: [][]string{
		{"part 1", "part one", "teil 1", "partie 1", "parte 1", "часть 1", "파트 1", "パート1", "第一部分", "combine a", "a is \""},
		{"part 2", "part two", "teil 2", "partie 2", "parte 2", "часть 2", "파트 2", "パート2", "第二部分", "b is \""},
	}},
	// A special mode the user announces the assistant is now in.
	{name: "mode_entry", gap: 40, groups: [][]string{
		{"i am now entering", "i'm now entering", "entering", "now entering", "betrete ich", "ich betrete", "j'entre en", "entro en", "estou entrando", "entro in", "вхожу в", "أدخل", "กําลังเข้าสู่", "กำลังเข้าสู่", "我正在进入", "进入"},
		{"override mode", "enforcement mode", "verification mode", "debug mode", "admin mode", "maintenance mode", "modus", "modo de", "режим", "وضع تجاوز", "وضع", "โหมด", "模式", "モード", "모드"},
	}},
	// A privileged mode announced in a tag: "<SYSTEM MODE>", "<GOD MODE>",
	// "<MODUS TUHAN>", "<系统模式>". Only names of privileged modes, in tag
	// form: "[FIPS 140-3 mode]" in a document or an XML <mode> element are
	// not announcements.
	{name: "mode_tag", gap: 0, groups: [][]string{
		{"<system mode>", "<\\system_mode>", "<\\system mode>", "</system mode>", "<god mode>", "<developer mode>", "<admin mode>", "<debug mode>", "<root mode>", "<sudo mode>",
			"<systemmodus>", "<system-modus>", "<gottmodus>", "<mode système>", "<mode dieu>", "<modo sistema>", "<modo de sistema>", "<modo dios>", "<modo deus>", "<modalità sistema>", "<modalità dio>",
			"<системный режим>", "<режим системы>", "<режим бога>", "<系统模式>", "<上帝模式>", "<管理员模式>", "<システムモード>", "<ゴッドモード>", "<시스템 모드>", "<신 모드>",
			"<modus tuhan>", "<modus sistem>", "<chế độ hệ thống>", "<chế độ thần>", "<sistem modu>", "<tanrı modu>", "<وضع النظام>", "<सिस्टम मोड>", "<โหมดระบบ>"},
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
	ruleW    []float64               // model weight per rule, by rule index
	lenW     []float64               // model weight per length bucket
	oddW     [nOddLevels + 1]float64 // model weight per oddTokenLevel (0: none)
	names    []string                // rule names, by rule index (includes ruleHiddenTags last)
}

func newInjector(modelData []byte) (*injector, error) {
	in := &injector{}
	idx := map[string]int{}
	type member struct{ rule, group int }
	var members [][]member
	for ri, r := range injRules {
		for gi, g := range r.groups {
			for _, k := range g {
				k = foldKeyword(k) // as the matching view writes it
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
	for i := 1; i <= nOddLevels; i++ {
		in.oddW[i] = m.RuleWeights["odd:"+string(rune('0'+i))]
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
		if in.ruleFires(ri, f, hits) {
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

// ruleFires checks whether the groups of rule ri occur in order in f.
func (in *injector) ruleFires(ri int, f []byte, hits []kwHit) bool {
	r := &injRules[ri]
	ng := len(r.groups)
	for i := range hits {
		if in.groupsOf[hits[i].id][ri]&1 == 0 {
			continue
		}
		if ng == 1 && !r.excepted(f, hits[i]) || ng > 1 && in.chain(ri, 1, f, hits, i) {
			return true
		}
	}
	return false
}

// excepted reports whether the rule's last keyword, found at h, is one of
// its exceptions (unless, unlessAfter).
func (r *injRule) excepted(f []byte, h kwHit) bool {
	return compoundAfter(r.unless, f, int(h.end)) || ownedBefore(r.unlessAfter, f, int(h.start))
}

// ownedBefore reports whether one of words ends right before position st
// of f, spaces between.
func ownedBefore(words []string, f []byte, st int) bool {
	if len(words) == 0 {
		return false
	}
	p := st
	for p > 0 && f[p-1] == ' ' {
		p--
	}
	if p == st {
		return false
	}
	for _, w := range words {
		if p >= len(w) && string(f[p-len(w):p]) == w && (p == len(w) || !isASCIIAlnum(f[p-len(w)-1])) {
			return true
		}
	}
	return false
}

// compoundAfter reports whether one of words follows position end of f,
// after spaces or one hyphen (see injRule.unless).
func compoundAfter(words []string, f []byte, end int) bool {
	if len(words) == 0 {
		return false
	}
	p := end
	for p < len(f) && (f[p] == ' ' || f[p] == '-') {
		p++
	}
	if p == end || p == len(f) {
		return false // "passwords", "password?": no compound
	}
	rest := f[p:]
	for _, w := range words {
		prefix := strings.HasSuffix(w, "*")
		w = strings.TrimSuffix(w, "*")
		if len(rest) < len(w) || string(rest[:len(w)]) != w {
			continue
		}
		if prefix || len(rest) == len(w) || !isASCIIAlnum(rest[len(w)]) {
			return true
		}
	}
	return false
}

// chain looks for group g after hit i, within the rule's gap.
func (in *injector) chain(ri, g int, f []byte, hits []kwHit, i int) bool {
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
		if g+1 == len(r.groups) && !r.excepted(f, h) || g+1 < len(r.groups) && in.chain(ri, g+1, f, hits, j) {
			return true
		}
	}
	return false
}

// Windows for untrusted content: an instruction planted anywhere in a long
// document is scored within about a retrieved chunk's worth of text around
// it, not diluted in the whole.
const (
	untrustedWin    = 768
	untrustedStride = 384
)

// score returns the injection score for the folded text and the rules that fired.
func (in *injector) score(f []byte, s *scratch, hidden *HiddenText) (float64, []string) {
	return in.scoreWith(f, s, hidden, false)
}

// scoreWith is score; slide scores every window of untrustedWin bytes (every
// untrustedStride bytes) of a longer text and keeps the highest, instead of
// only the head and the tail.
func (in *injector) scoreWith(f []byte, s *scratch, hidden *HiddenText, slide bool) (float64, []string) {
	fired := in.matchRules(f, s)
	if hidden != nil && hidden.DecodedLen >= 4 {
		fired |= 1 << len(injRules)
	}
	z := 0.0
	if in.model != nil {
		// An attack appended to (or prefixed to) a long benign text is
		// diluted in the whole; score the head and the tail on their own too.
		if slide && len(f) > untrustedWin {
			z = in.model.Bias + in.q.dot(f) + in.lenW[lengthBucket(len(f))]
			for st := 0; st < len(f); st += untrustedStride {
				end := min(st+untrustedWin, len(f))
				if end-st < untrustedStride && st > 0 {
					break // the previous window covered this tail
				}
				z = max(z, in.model.Bias+in.q.dot(f[st:end])+in.lenW[lengthBucket(end-st)])
			}
		} else if len(f) > windowMin {
			lin, head, tail := in.q.dotWindows(f, windowLen)
			z = in.model.Bias + lin + in.lenW[lengthBucket(len(f))]
			for _, d := range [2]float64{head, tail} {
				z = max(z, in.model.Bias+d+in.lenW[lengthBucket(windowLen)])
			}
		} else {
			z = in.model.Bias + in.q.dot(f) + in.lenW[lengthBucket(len(f))]
		}
		z += in.oddW[oddTokenLevel(f)]
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
