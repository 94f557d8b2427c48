// Command genindirect writes training data for indirect prompt injection:
// benign documents, e-mails, web pages, tool results and forum threads, each
// once as it is (label 0) and once with an attack instruction planted at a
// random place (label 1), in one of several styles (text addressed to the
// assistant, "when you summarise this", fake role markers, hidden HTML,
// out-of-place directives) and languages. Output is deterministic for a
// given seed, Go toolchain (package documentation is read from GOROOT) and
// everyday file. Run it from the repository root: make traindata.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "genindirect:", err)
		os.Exit(1)
	}
}

// row is one output line.
type row struct {
	Text    string `json:"text"`
	Label   int    `json:"label"`
	Source  string `json:"source"`
	Lang    string `json:"lang"`
	Carrier string `json:"carrier"`
	Style   string `json:"style,omitempty"`
}

type gen struct {
	rng      *rand.Rand
	goDocs   []string
	everyday map[string][]string // lang -> benign questions
	langs    []string            // everyday languages, sorted
}

func run(args []string, log io.Writer) error {
	fset := flag.NewFlagSet("genindirect", flag.ContinueOnError)
	seed := fset.Uint64("seed", 1, "random seed")
	per := fset.Int("n", 200, "documents per carrier (each written clean and planted)")
	out := fset.String("out", "internal/detect/traindata/indirect.jsonl", "output file")
	everyday := fset.String("everyday", "internal/detect/traindata/everyday.jsonl", "benign questions per language (forum carrier)")
	goroot := fset.String("goroot", "", "Go root whose package documentation is the document carrier (default: go env GOROOT)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *goroot == "" {
		b, err := exec.Command("go", "env", "GOROOT").Output() // #nosec G204 -- dev tool, fixed command
		if err != nil {
			return fmt.Errorf("go env GOROOT: %w", err)
		}
		*goroot = strings.TrimSpace(string(b))
	}
	g := &gen{rng: rand.New(rand.NewPCG(*seed, 0x1d1)), everyday: map[string][]string{}} // #nosec G404 -- reproducible data
	var err error
	if g.goDocs, err = packageDocs(filepath.Join(*goroot, "src")); err != nil {
		return err
	}
	if err := g.readEveryday(*everyday); err != nil {
		return err
	}
	carriers := []struct {
		name string
		make func() (segs []string, lang string)
	}{
		{"email", g.email}, {"web", g.web}, {"doc", g.doc}, {"tool", nil}, {"forum", g.forum},
	}
	var rows []row
	for _, c := range carriers {
		for range *per {
			if c.name == "tool" {
				clean, planted, lang, style := g.tool()
				rows = append(rows, row{clean, 0, "bulwark-indirect-tool", "en", "tool", ""}, row{planted, 1, "bulwark-indirect-tool", lang, "tool", style})
				continue
			}
			segs, lang := c.make()
			alang, style, attack := g.attack(lang)
			at := 1 + g.rng.IntN(len(segs)) // never before the first segment (headers, titles)
			if g.rng.IntN(8) == 0 {
				at = len(segs)
			}
			planted := slices.Insert(slices.Clone(segs), at, attack)
			// The clean twin gets a benign sentence in the attack's language
			// at the same place, so that neither the language nor the
			// extra sentence tells the two apart: only what it says.
			segs = slices.Insert(segs, at, g.filler(alang))
			sep := "\n"
			if c.name == "email" || c.name == "doc" {
				sep = "\n\n"
			}
			rows = append(rows,
				row{strings.Join(segs, sep), 0, "bulwark-indirect-" + c.name, lang, c.name, ""},
				row{strings.Join(planted, sep), 1, "bulwark-indirect-" + c.name, alang, c.name, style})
		}
	}
	rows = append(rows, g.jailbreaks(*per)...)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			_ = f.Close() // the encode error is the one to report
			return err
		}
	}
	if err := w.Flush(); err != nil {
		_ = f.Close() // the flush error is the one to report
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %d rows to %s (%d Go package docs)\n", len(rows), *out, len(g.goDocs))
	return nil
}

// filler returns a benign sentence in lang (English when statements has
// none for it).
func (g *gen) filler(lang string) string {
	if st := statements[lang]; len(st) > 0 {
		return g.pick(st)
	}
	return g.pick(emailSentences)
}

// statementLangs are the keys of statements in a fixed order.
var statementLangs = []string{"ar", "de", "es", "fr", "it", "ja", "ko", "pt", "ru", "zh"}

func (g *gen) pick(xs []string) string { return xs[g.rng.IntN(len(xs))] }

// attack returns a planted instruction: its language, style and text. The
// carrier's language is preferred when the attack texts cover it.
func (g *gen) attack(carrierLang string) (lang, style, text string) {
	lang = carrierLang
	if _, ok := goals[lang]; !ok || g.rng.IntN(10) < 3 {
		lang = "en"
	}
	if lang == "en" && g.rng.IntN(10) < 4 {
		others := []string{"de", "fr", "es", "pt", "it", "ru", "zh", "ja", "ko", "ar"}
		lang = g.pick(others)
	}
	var avail []string
	for _, s := range styles {
		if len(wrappers[s][lang]) > 0 {
			avail = append(avail, s)
		}
	}
	style = g.pick(avail)
	goal := g.pick(goals[lang])
	goal = strings.NewReplacer("{EVIL}", g.pick(evilHosts), "{MAIL}", g.pick(evilMails), "{PRODUCT}", g.pick(products)).Replace(goal)
	text = fmt.Sprintf(g.pick(wrappers[style][lang]), goal)
	if g.rng.IntN(4) == 0 && lang == "en" { // capitalised variants
		text = strings.ToUpper(text[:1]) + text[1:]
	}
	return lang, style, text
}

func (g *gen) email() ([]string, string) {
	from, to := g.pick(names), g.pick(names)
	segs := []string{fmt.Sprintf("From: %s <%s@%s.example.com>\nTo: %s\nSubject: %s\nDate: %d Nov 2026 %02d:%02d",
		from, strings.ToLower(strings.Fields(from)[0]), strings.ToLower(strings.ReplaceAll(g.pick(companies), " ", "")), to, g.pick(emailSubjects), 1+g.rng.IntN(28), 8+g.rng.IntN(10), g.rng.IntN(60)),
		"Hi " + strings.Fields(to)[0] + ","}
	for range 2 + g.rng.IntN(12) {
		segs = append(segs, g.pick(emailSentences))
	}
	if g.rng.IntN(4) == 0 { // a line in another language (a quote, a colleague abroad)
		segs = append(segs, g.pick(statements[statementLangs[g.rng.IntN(len(statementLangs))]]))
	}
	for range g.rng.IntN(3) {
		segs = append(segs, g.pick(distractors))
	}
	segs = append(segs, "Best,\n"+from)
	return segs, "en"
}

func (g *gen) web() ([]string, string) {
	t := webTopics[g.rng.IntN(len(webTopics))]
	segs := []string{"<html><head><title>" + t[0] + "</title></head><body>", "<nav><a href=\"/\">Home</a> | <a href=\"/about\">About</a></nav>", "<h1>" + t[0] + "</h1>"}
	if g.rng.IntN(2) == 0 {
		segs = append(segs, "<!-- main content -->")
	}
	body := slices.Clone(t[1:])
	g.rng.Shuffle(len(body), func(i, j int) { body[i], body[j] = body[j], body[i] })
	for _, s := range body[:3+g.rng.IntN(len(body)-2)] {
		segs = append(segs, "<p>"+s+"</p>")
	}
	for range g.rng.IntN(3) {
		segs = append(segs, "<p>"+g.pick(distractors)+"</p>")
	}
	segs = append(segs, "<footer>© 2026 "+g.pick(companies)+". All rights reserved.</footer></body></html>")
	return segs, "en"
}

func (g *gen) doc() ([]string, string) {
	d := g.goDocs[g.rng.IntN(len(g.goDocs))]
	paras := strings.Split(d, "\n\n")
	// Keep the documents under about 2 KB, a retrieved chunk's size.
	var segs []string
	n := 0
	for _, p := range paras {
		if n+len(p) > 2000 && len(segs) > 0 {
			break
		}
		segs = append(segs, p)
		n += len(p)
	}
	if len(segs) == 1 { // split one long paragraph at a sentence
		if i := strings.Index(segs[0], ". "); i > 0 {
			segs = []string{segs[0][:i+1], segs[0][i+2:]}
		}
	}
	if g.rng.IntN(3) == 0 {
		segs = append(segs, g.pick(distractors))
	}
	return segs, "en"
}

func (g *gen) forum() ([]string, string) {
	lang := g.langs[g.rng.IntN(len(g.langs))]
	qs := g.everyday[lang]
	segs := []string{"Forum thread (" + lang + ")"}
	for range 2 + g.rng.IntN(3) {
		segs = append(segs, g.pick(names)+": "+g.pick(qs))
		if st := statements[lang]; len(st) > 0 && g.rng.IntN(2) == 0 {
			segs = append(segs, g.pick(names)+": "+g.pick(st))
		}
	}
	if g.rng.IntN(3) == 0 {
		segs = append(segs, g.pick(names)+": "+g.pick(distractors))
	}
	return segs, lang
}

// tool builds a JSON tool result (search results, calendar, tickets) and a
// copy with an attack planted in one of its string fields.
func (g *gen) tool() (clean, planted, lang, style string) {
	type item struct {
		Title   string `json:"title"`
		Snippet string `json:"snippet"`
		URL     string `json:"url"`
	}
	var items []item
	for k := range 2 + g.rng.IntN(4) {
		items = append(items, item{Title: fmt.Sprintf("Result %d", k+1), Snippet: g.pick(toolSnippets), URL: fmt.Sprintf("https://site%d.example.com/page/%d", g.rng.IntN(50), g.rng.IntN(1000))})
	}
	name := g.pick([]string{"web_search", "fetch_page", "calendar.list", "tickets.search", "crm.lookup"})
	enc := func(it []item) string {
		b, _ := json.Marshal(struct {
			Tool    string `json:"tool"`
			Status  string `json:"status"`
			Results []item `json:"results"`
		}{name, "ok", it}) // #nosec G104 -- plain structs always marshal
		return string(b)
	}
	if g.rng.IntN(3) == 0 {
		items[g.rng.IntN(len(items))].Snippet += " " + g.pick(distractors)
	}
	lang, style, attack := g.attack("en")
	filler := g.filler(lang)
	k := g.rng.IntN(len(items))
	snippet := items[k].Snippet
	if g.rng.IntN(2) == 0 {
		items[k].Snippet = snippet + " " + filler
		clean = enc(items)
		items[k].Snippet = snippet + " " + attack
	} else {
		items[k].Snippet = filler + " " + snippet
		clean = enc(items)
		items[k].Snippet = attack + " " + snippet
	}
	return clean, enc(items), lang, style
}

func (g *gen) readEveryday(path string) error {
	f, err := os.Open(path) // #nosec G304 -- dev tool: reads the file named by -everyday
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			Text string `json:"text"`
			Lang string `json:"lang"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		g.everyday[r.Lang] = append(g.everyday[r.Lang], r.Text)
	}
	for l := range g.everyday {
		g.langs = append(g.langs, l)
	}
	slices.Sort(g.langs)
	return sc.Err()
}

// packageDocs returns the package documentation comments of the standard
// library (BSD-3-Clause, The Go Authors) at least 300 bytes long, in path
// order, as plain text with paragraphs separated by blank lines.
func packageDocs(src string) ([]string, error) {
	var docs []string
	seen := map[string]bool{}
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "cmd", "internal", "vendor", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path) // #nosec G304 G122 -- reads GOROOT sources (a local toolchain, not attacker-controlled)
		if err != nil {
			return err
		}
		var block []string
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case strings.HasPrefix(line, "//"):
				block = append(block, strings.TrimPrefix(strings.TrimPrefix(line, "//"), " "))
			case strings.HasPrefix(line, "package "):
				if len(block) > 0 && strings.HasPrefix(block[0], "Package ") {
					d := strings.TrimSpace(strings.Join(block, "\n"))
					// Join wrapped lines; keep paragraph breaks.
					paras := strings.Split(d, "\n\n")
					for i, p := range paras {
						paras[i] = strings.Join(strings.Fields(p), " ")
					}
					d = strings.Join(paras, "\n\n")
					if len(d) >= 300 && !seen[d] {
						seen[d] = true
						docs = append(docs, d)
					}
				}
				return nil
			default:
				block = block[:0]
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading package docs under %s: %w", src, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("no package docs under %s", src)
	}
	return docs, nil
}
