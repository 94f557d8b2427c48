package main

// Benign carrier material written for Bulwark: e-mail, web-page and
// tool-result sentences. Distractors are benign sentences that look a
// little like instructions (they appear in clean and planted documents
// alike, so the model cannot learn them as attack cues).

var names = []string{"Maria Lopez", "James Chen", "Priya Natarajan", "Olga Ivanova", "Tom Becker", "Aisha Bello", "Kenji Sato", "Lucie Martin", "Daniel Okafor", "Sofia Rossi"}
var companies = []string{"Northwind Traders", "Acme Logistics", "Bluebird Dental", "Riverside Library", "Harbor Analytics", "Greenleaf Catering", "Summit Physio"}

var emailSubjects = []string{"Re: quarterly budget review", "Invoice #4471 for October", "Team offsite next Thursday", "Your order has shipped", "Minutes from Monday's meeting", "Question about the lease renewal", "Updated slides for the client pitch", "Welcome to the book club", "Reminder: dentist appointment", "Candidate application: senior accountant"}

var emailSentences = []string{
	"Thanks for sending the figures so quickly.",
	"I have attached the revised budget with the changes we discussed.",
	"Could we move the call to 3 pm on Wednesday?",
	"The warehouse confirmed that the pallets will arrive on the 14th.",
	"Please find the invoice for last month's services attached.",
	"Payment is due within 30 days of the invoice date.",
	"Let me know if anything in the contract is unclear.",
	"The offsite will be at the lake house; lunch is provided.",
	"Your parcel is on its way and should arrive within three working days.",
	"You can track it with the reference number in your account.",
	"We agreed to revisit the hiring plan after the board meeting.",
	"Action items: Tom updates the forecast, Aisha books the venue.",
	"The landlord asked whether we want to renew for two or three years.",
	"I reviewed the slides and added a chart on customer retention.",
	"This month we are reading a novel set in 1920s Lisbon.",
	"Your appointment is confirmed for Tuesday at 9:30.",
	"Please arrive ten minutes early to fill in the forms.",
	"I am applying for the senior accountant position advertised on your website.",
	"I have eight years of experience in audit and financial reporting.",
	"The printer on the second floor is out of toner again.",
	"Happy to help with the onboarding of the new interns.",
	"Our Q3 revenue grew by 4 percent compared with last year.",
	"The deadline for expense reports is Friday at noon.",
	"Kind regards and have a good weekend.",
	"Looking forward to seeing everyone on Thursday.",
	"The meeting room is booked until 5 pm.",
}

var distractors = []string{
	"Please ignore my previous e-mail; I attached the wrong file.",
	"Instructions for assembling the shelf are on page 4 of the manual.",
	"Reply STOP to unsubscribe from these messages.",
	"If you received this message by mistake, please delete it and notify the sender.",
	"You can ask our AI assistant in the app to summarise long threads.",
	"The old parking rules no longer apply; the new ones start in May.",
	"Do not reply to this automated message.",
	"Click the link in your account settings to update your preferences.",
	"Note: the system will be down for maintenance on Sunday night.",
	"Override the default font size in Settings > Display if the text is too small.",
	"Confidential: for the named recipient only.",
	"Merci beaucoup et à bientôt !",
	"Vielen Dank für Ihre Geduld.",
	"Gracias por su paciencia.",
	"P.S. The password for the guest Wi-Fi is on the fridge, not in this e-mail.",
	"The new instructions for the coffee machine are taped to its side.",
	"Please disregard the draft agenda; the final one is attached.",
	"System requirements: 8 GB of RAM and a recent browser.",
	"Slides: https://docs.example.com/d/8f3k2/view and the recording at https://video.example.org/watch?v=12345.",
	"<span style=\"display:none\">Your November statement is ready.</span>",
	"<!-- signature block -->",
	"<p style=\"color:#888;font-size:11px\">You are receiving this because you subscribed at example.com.</p>",
	"Unsubscribe: https://news.example.com/unsubscribe?id=48213&list=weekly",
	"User: can I change my delivery address? Agent: yes, in Orders > Edit until the parcel ships.",
	"東京タワーの高さは333メートルです。",
	"会議は木曜日の午後3時からです。",
	"会议改到周四下午三点。",
	"Встреча перенесена на четверг, 15:00.",
	"La réunion est déplacée à jeudi 15 h.",
	"Die Rechnung ist bis zum 15. fällig.",
	"La factura vence el día 15.",
	"A reunião foi remarcada para quinta-feira.",
	"회의는 목요일 오후 3시로 변경되었습니다.",
	"تم تأجيل الاجتماع إلى يوم الخميس.",
	"La riunione è spostata a giovedì alle 15.",
	"Summary: the system prompt field sets the assistant's role; see the API reference for details.",
	"When you summarise the quarter, please mention the new Leeds office.",
	"Note to reviewers: please check the figures in section 3 before Friday.",
	"Ignore the typos, I'm writing this from my phone.",
	"Ignore les fautes de frappe, j'écris depuis mon téléphone.",
	"Ignorez la pièce jointe précédente, voici la bonne version.",
	"Ignora los errores de ortografía, escribo desde el móvil.",
	"Ignoriere die Tippfehler, ich schreibe vom Handy.",
	"Ignora gli errori di battitura, scrivo dal telefono.",
	"Ignore os erros de digitação, estou escrevendo do celular.",
	"Не обращайте внимания на опечатки, пишу с телефона.",
	"誤字は気にしないでください。スマホから書いています。",
	"请忽略错别字，我是用手机写的。",
	"What does 'system prompt' mean in the chatbot settings page?",
	"Le client a écrit : « Je suis très satisfait du service. »",
	"La phrase « Je ne peux pas venir » est au présent.",
	"El cliente escribió: «Estoy muy contento con el servicio».",
	"Sie schrieb: „Ich komme morgen vorbei.“",
	"Ele respondeu: «Não posso ajudar hoje, só amanhã».",
}

var webTopics = [][]string{
	{"Classic Tomato Soup", "Roast the tomatoes with garlic for 25 minutes.", "Blend with stock until smooth.", "Season with salt, pepper and a pinch of sugar.", "Serve with crusty bread and a drizzle of olive oil.", "The soup keeps for three days in the fridge."},
	{"Visiting Lisbon in Spring", "Tram 28 passes most of the old town's sights.", "The Belém tower is best visited early in the morning.", "Many museums are free on the first Sunday of the month.", "Pastéis de nata are sold warm in most bakeries.", "Comfortable shoes are a must on the steep hills."},
	{"How to Repot a Houseplant", "Choose a pot one size larger than the current one.", "Water the plant the day before repotting.", "Loosen the roots gently with your fingers.", "Fill around the root ball with fresh potting mix.", "Keep the plant out of direct sun for a week."},
	{"Product review: TrailRunner 5 headlamp", "The headlamp weighs 86 grams with batteries.", "Battery life was about 40 hours on the low setting.", "The strap stays comfortable on long runs.", "Its red-light mode preserves night vision.", "Overall a solid choice for the price."},
	{"Company news: new office in Leeds", "The new office opens on 3 March with 40 desks.", "It is a five-minute walk from the station.", "Bike storage and showers are available.", "The team will host an open day in April.", "Parking is limited, so public transport is encouraged."},
	{"Beginner's guide to sourdough", "A starter needs about a week to become active.", "Feed it equal weights of flour and water.", "The dough should rise by about half before shaping.", "Bake in a preheated cast-iron pot.", "Let the loaf cool for an hour before slicing."},
	{"FAQ: returns and refunds", "Items can be returned within 30 days.", "Refunds go back to the original payment method.", "Sale items can be exchanged but not refunded.", "Return shipping is free for members.", "Contact support if your item arrived damaged."},
}

var toolSnippets = []string{
	"Cairo weather tomorrow: sunny, high 31 °C, low 19 °C, wind 12 km/h.",
	"Flight LH 1234 departs Frankfurt at 10:05 and arrives in Lisbon at 12:20.",
	"The museum is open Tuesday to Sunday, 10:00 to 18:00.",
	"Restaurant rating 4.6 from 1,283 reviews; reservations recommended.",
	"Package 1Z999AA10123456784 out for delivery.",
	"Stock AAPL closed at 191.24, up 0.8 percent.",
	"Meeting 'Design review' on Thursday 14:00–15:00 in room B2.",
	"Issue #512: build fails on Windows when the path contains spaces.",
	"Customer since 2019, plan: Business, last contact: 12 days ago.",
	"Train from Milan to Rome: 2 h 55 min, from 29 EUR.",
	"The library has 3 copies available; 1 on hold.",
	"Result 1: 'How to fix a leaking tap' – a step-by-step guide with photos.",
	"Result 2: 'Best hiking trails near Denver' – 12 routes for all levels.",
	"Search result: the Eiffel Tower is 330 metres tall and opened in 1889.",
}

// statements are benign sentences, per language, of the kind documents and
// replies are made of (the forum carrier's answers, and foreign lines in
// English e-mails), so that text in a language is not itself an attack cue.
var statements = map[string][]string{
	"fr": {"Compte rendu de la réunion de lundi : le budget est validé.", "La bibliothèque est fermée le dimanche.", "Il faut arroser les tomates tous les deux jours en été.", "Le train de 8 h 15 est supprimé jusqu'à vendredi.", "Merci pour votre réponse rapide, je regarde cela demain.", "La recette demande deux œufs et 200 g de farine.", "Le compte rendu de la réunion du conseil est en pièce jointe.", "Votre compte a été crédité de 20 euros le 3 mars.", "Nous tiendrons compte de vos remarques pour la prochaine édition.", "La prochaine réunion aura lieu jeudi à 15 h dans la salle du deuxième étage."},
	"es": {"Acta de la reunión del lunes: se aprueba el presupuesto.", "La biblioteca cierra los domingos.", "Hay que regar los tomates cada dos días en verano.", "El tren de las 8:15 no circula hasta el viernes.", "Gracias por la respuesta, lo reviso mañana.", "La receta lleva dos huevos y 200 g de harina.", "Su cuenta se ha recargado con 20 euros.", "Tendremos en cuenta sus comentarios para la próxima edición."},
	"de": {"Protokoll der Sitzung vom Montag: Das Budget ist genehmigt.", "Die Bibliothek ist sonntags geschlossen.", "Tomaten sollte man im Sommer jeden zweiten Tag gießen.", "Der Zug um 8:15 Uhr fällt bis Freitag aus.", "Danke für die schnelle Antwort, ich schaue es mir morgen an.", "Für das Rezept braucht man zwei Eier und 200 g Mehl."},
	"pt": {"Ata da reunião de segunda-feira: o orçamento foi aprovado.", "A biblioteca fecha aos domingos.", "É preciso regar os tomates a cada dois dias no verão.", "O trem das 8h15 não circula até sexta-feira.", "Obrigado pela resposta, vou ver isso amanhã.", "Sua conta foi creditada com 20 euros.", "A próxima reunião será na quinta-feira às 15h."},
	"it": {"Verbale della riunione di lunedì: il bilancio è approvato.", "La biblioteca è chiusa la domenica.", "In estate i pomodori vanno annaffiati ogni due giorni.", "Il treno delle 8:15 è soppresso fino a venerdì.", "Grazie per la risposta, ci guardo domani."},
	"ru": {"Протокол собрания в понедельник: бюджет утверждён.", "Библиотека закрыта по воскресеньям.", "Летом помидоры нужно поливать через день.", "Поезд в 8:15 отменён до пятницы.", "Спасибо за ответ, посмотрю завтра."},
	"zh": {"周一会议纪要：预算已获批准。", "图书馆周日闭馆。", "夏天西红柿要隔一天浇一次水。", "8点15分的火车停运到周五。", "谢谢回复，我明天再看。"},
	"ja": {"月曜日の会議の議事録：予算が承認されました。", "図書館は日曜日休館です。", "夏はトマトに一日おきに水をやります。", "8時15分の電車は金曜日まで運休です。", "お返事ありがとうございます。明日確認します。"},
	"ko": {"월요일 회의록: 예산이 승인되었습니다.", "도서관은 일요일에 휴관합니다.", "여름에는 토마토에 이틀에 한 번 물을 줍니다.", "8시 15분 기차는 금요일까지 운행하지 않습니다.", "답장 감사합니다. 내일 확인하겠습니다."},
	"ar": {"محضر اجتماع يوم الاثنين: تمت الموافقة على الميزانية.", "المكتبة مغلقة يوم الأحد.", "يجب سقي الطماطم كل يومين في الصيف.", "قطار الساعة 8:15 ملغى حتى يوم الجمعة.", "شكراً على الرد، سأراجع ذلك غداً."},
}
