package detect

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// prompt4K is a 4 KiB prompt mixing prose, code, PII and a secret.
var prompt4K = func() string {
	base := "Please summarise the following support ticket and draft a polite reply. " +
		"The customer, Jane Doe (jane.doe@example.org, +1-415-555-0132), says her card 4111 1111 1111 1111 was charged twice. " +
		"Our logs show requests from 203.0.113.7 at 09:14 and 09:15. The config snippet she pasted was:\n" +
		"    db_host = \"db.internal\"\n    timeout = 30\n" +
		"She also asked whether we can export her data as CSV and delete her account afterwards. Ignore any typos. "
	var b strings.Builder
	for b.Len() < 4096 {
		b.WriteString(base)
	}
	return b.String()[:4096]
}()

func BenchmarkScan4K(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(prompt4K)))
	b.ReportAllocs()
	for b.Loop() {
		sc.Scan(prompt4K)
	}
}

// benchCorpus is realistic text for the speed benchmarks: the rows of
// ../shared/data (prompt-injection training prompts, presidio-research PII
// texts, CredSweeper's sample files), found by walking up from the package
// directory (set BULWARK_DATA to point elsewhere). Without the data it falls
// back to variations of prompt4K, so the benchmarks always run.
var benchCorpus = sync.OnceValue(func() (c struct {
	real    bool
	sources [3][]string // injection prompts, PII texts, secrets sample files
}) {
	dir := os.Getenv("BULWARK_DATA")
	if dir == "" {
		wd, _ := os.Getwd()
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "shared", "data", "prompt-injection", "train.jsonl")); err == nil {
				dir = filepath.Join(d, "shared", "data")
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if dir != "" {
		c.sources[0] = benchJSONL(filepath.Join(dir, "prompt-injection", "train.jsonl"), "text")
		c.sources[1] = benchJSONL(filepath.Join(dir, "pii", "presidio-synth-a.jsonl"), "full_text")
		c.sources[2] = benchTarGz(filepath.Join(dir, "secrets", "credsweeper-samples.tar.gz"))
	}
	if len(c.sources[0]) > 0 && len(c.sources[1]) > 0 && len(c.sources[2]) > 0 {
		c.real = true
		return c
	}
	for i := range c.sources {
		c.sources[i] = []string{prompt4K[:1024+512*i], strings.ToUpper(prompt4K[512*i:]), prompt4K}
	}
	return c
})

func benchJSONL(path, field string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 16<<20)
	for s.Scan() {
		var row map[string]any
		if json.Unmarshal(s.Bytes(), &row) != nil {
			continue
		}
		if t, ok := row[field].(string); ok && t != "" {
			out = append(out, t)
		}
	}
	return out
}

// benchTarGz returns the text files of a .tar.gz (binary files skipped).
func benchTarGz(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil
	}
	var out []string
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Typeflag != tar.TypeReg || strings.HasSuffix(h.Name, ".csv") {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil || len(data) == 0 || !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
			continue
		}
		out = append(out, string(data))
	}
	return out
}

// benchText concatenates randomly chosen rows until n bytes, cut at a rune
// boundary. mix selects the sources: 0..2 one source, 3 all of them.
func benchText(rng *rand.Rand, n, mix int) string {
	c := benchCorpus()
	var b strings.Builder
	for b.Len() < n {
		src := mix
		if mix > 2 {
			src = rng.IntN(3)
		}
		rows := c.sources[src]
		t := rows[rng.IntN(len(rows))]
		if len(t) > n/2 {
			// Long sample files: a random window of them.
			o := rng.IntN(len(t) - n/2 + 1)
			for o > 0 && !utf8.RuneStart(t[o]) {
				o--
			}
			t = t[o : o+n/2]
		}
		b.WriteString(t)
		b.WriteByte('\n')
	}
	s := b.String()
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.ToValidUTF8(s[:n], "")
}

// prompts4KiB are 64 different 4 KiB prompts: a quarter each of injection
// prompts, PII texts, secrets sample files and a mix of all three.
var prompts4KiB = sync.OnceValue(func() []string {
	rng := rand.New(rand.NewPCG(4, 4096))
	out := make([]string, 64)
	for i := range out {
		out[i] = benchText(rng, 4096, i%4)
	}
	return out
})

// BenchmarkScan4KiB scans varied 4 KiB prompts (see prompts4KiB) and
// reports the latency distribution per scan besides the mean: p50-µs and
// p99-µs. The goal is p99 <= 200 µs on one core (-cpu 1).
func BenchmarkScan4KiB(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	texts := prompts4KiB()
	if !benchCorpus().real {
		b.Log("../shared/data not found: synthetic prompts")
	}
	for _, t := range texts { // warm the pool and caches
		sc.Scan(t)
	}
	total := 0
	for _, t := range texts {
		total += len(t)
	}
	b.SetBytes(int64(total / len(texts)))
	b.ReportAllocs()
	lat := make([]time.Duration, 0, 1<<16)
	i := 0
	for b.Loop() {
		t0 := time.Now()
		sc.Scan(texts[i%len(texts)])
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkScan4KiBCPU is BenchmarkScan4KiB timed by the thread's CPU
// clock (Linux): cpu-p50-µs and cpu-p99-µs leave out the time the scanning
// thread waited for a core, which on a shared machine dominates the
// wall-clock tail.
func BenchmarkScan4KiBCPU(b *testing.B) {
	if _, ok := threadCPU(); !ok {
		b.Skip("no thread CPU clock on this platform")
	}
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	texts := prompts4KiB()
	for _, t := range texts {
		sc.Scan(t)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.SetBytes(int64(len(texts[0])))
	b.ReportAllocs()
	lat := make([]time.Duration, 0, 1<<16)
	i := 0
	for b.Loop() {
		c0, _ := threadCPU()
		sc.Scan(texts[i%len(texts)])
		c1, _ := threadCPU()
		if len(lat) < cap(lat) {
			lat = append(lat, c1-c0)
		}
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "cpu-p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "cpu-p99-µs")
}

// BenchmarkScanLong scans 1 MiB of realistic text (all sources mixed); the
// goal is at least 50 MB/s on one core.
func BenchmarkScanLong(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	long := benchText(rand.New(rand.NewPCG(1, 1<<20)), 1<<20, 3)
	b.SetBytes(int64(len(long)))
	b.ReportAllocs()
	for b.Loop() {
		sc.Scan(long)
	}
}

// BenchmarkScanLongSynthetic is prompt4K repeated to 1 MiB.
func BenchmarkScanLongSynthetic(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	long := strings.Repeat(prompt4K, 256) // 1 MiB
	b.SetBytes(int64(len(long)))
	b.ReportAllocs()
	for b.Loop() {
		sc.Scan(long)
	}
}

func BenchmarkScanUnicode(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	text := strings.Repeat("Привет, мир! 你好世界。 Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ and émoji 👩‍💻 here. ", 60)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		sc.Scan(text)
	}
}

func BenchmarkPhases(b *testing.B) {
	sc, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	text := prompt4K
	s := new(scratch)
	s.reset(text)
	var h HiddenText
	s.view = s.clean(text, &h, true)
	f := sc.foldText(s, &h)
	fcopy := append([]byte(nil), f...)
	b.Run("clean", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			s.reset(text)
			s.view = s.clean(text, &h, true)
		}
	})
	b.Run("fold", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			s.foldBuf = fold(s.foldBuf[:0], s.view.b, &h)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			s.decBuf, s.tmp = decodeEmbedded(s.decBuf[:0], s.view.b, s.tmp, &h)
		}
	})
	b.Run("pii", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			s.finds = s.finds[:0]
			s.scanPII(s.view.b, 0.5)
		}
	})
	b.Run("secrets", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			s.finds = s.finds[:0]
			s.scanSecrets(sc.secrets, s.view.b)
		}
	})
	b.Run("rules", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			sc.inj.matchRules(fcopy, s)
		}
	})
	b.Run("model", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			sc.inj.q.dot(fcopy)
		}
	})
}
