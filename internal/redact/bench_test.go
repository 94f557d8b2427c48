package redact

import (
	"testing"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// benchText is a 64 KiB model output mixing prose, CJK, emoji and every
// planted value.
var benchText = buildText(7, 64<<10)

// BenchmarkStreamWrite measures one 20-byte write (a typical SSE token
// delta), amortising the window scans, stream setup and Close over the
// writes of a 64 KiB response.
func BenchmarkStreamWrite(b *testing.B) {
	full, err := detect.New(detect.Config{})
	if err != nil {
		b.Fatal(err)
	}
	redactOnly, err := detect.New(detect.Config{DisableInjection: true})
	if err != nil {
		b.Fatal(err)
	}
	r := New(testRules, []byte("k"))
	const piece = 20
	for _, bc := range []struct {
		name string
		sc   Scanner
		opt  StreamOptions
	}{
		{"default/all-detectors", full, StreamOptions{Literals: testLiterals}},
		{"default/no-injection", redactOnly, StreamOptions{Literals: testLiterals}},
		{"step256/no-injection", redactOnly, StreamOptions{Step: 256, Literals: testLiterals}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(piece)
			b.ReportAllocs()
			var st *Stream
			off := len(benchText)
			for b.Loop() {
				if off+piece > len(benchText) {
					if st != nil {
						st.Close()
					}
					if st, err = r.NewStream(bc.sc, bc.opt); err != nil {
						b.Fatal(err)
					}
					off = 0
				}
				if _, err := st.WriteString(benchText[off : off+piece]); err != nil {
					b.Fatal(err)
				}
				off += piece
			}
		})
	}
}

// BenchmarkApply measures rewriting a 4 KiB text with its findings (scan
// excluded).
func BenchmarkApply(b *testing.B) {
	sc, err := detect.New(detect.Config{DisableInjection: true})
	if err != nil {
		b.Fatal(err)
	}
	text := benchText[:4096]
	finds := sc.Scan(text).Findings
	if len(finds) == 0 {
		b.Fatal("no findings in benchmark text")
	}
	r := New(testRules, []byte("k"))
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		r.Apply(text, finds)
	}
}

// BenchmarkText measures one-shot redaction of a buffered 4 KiB body,
// scan included, for comparison with the stream's amortised cost.
func BenchmarkText(b *testing.B) {
	sc, err := detect.New(detect.Config{DisableInjection: true})
	if err != nil {
		b.Fatal(err)
	}
	text := benchText[:4096]
	r := New(testRules, []byte("k"))
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		r.Text(sc, text, testLiterals)
	}
}
