package detect

import (
	"strings"
	"testing"
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

func BenchmarkScanLong(b *testing.B) {
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
