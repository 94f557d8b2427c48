package detect

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type refusalRow struct {
	ID, Text, Split, Source, Kind, Lang string
	Label                               int
}

func readRefusalRows(t *testing.T, path string) []refusalRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []refusalRow
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r refusalRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		rows = append(rows, r)
	}
	return rows
}

type confusion struct{ tp, fp, fn, tn int }

func (c confusion) String() string {
	p := float64(c.tp) / float64(max(1, c.tp+c.fp))
	r := float64(c.tp) / float64(max(1, c.tp+c.fn))
	return fmt.Sprintf("precision %.3f recall %.3f (tp %d fp %d fn %d tn %d)", p, r, c.tp, c.fp, c.fn, c.tn)
}

func (c confusion) precision() float64 { return float64(c.tp) / float64(max(1, c.tp+c.fp)) }
func (c confusion) recall() float64    { return float64(c.tp) / float64(max(1, c.tp+c.fn)) }

func score(rows []refusalRow, split string, verbose func(refusalRow, Refusal)) confusion {
	var c confusion
	for _, r := range rows {
		if split != "" && r.Split != split {
			continue
		}
		got := DetectRefusal(r.Text)
		switch {
		case got.Detected && r.Label == 1:
			c.tp++
		case got.Detected:
			c.fp++
			if verbose != nil {
				verbose(r, got)
			}
		case r.Label == 1:
			c.fn++
			if verbose != nil {
				verbose(r, got)
			}
		default:
			c.tn++
		}
	}
	return c
}

// The project's own multilingual answers (testdata/refusal/own.jsonl,
// written for Bulwark: refusals and look-alikes in 12 languages) are
// classified with high precision and recall, on the part the rules were
// written against and on the held-out part.
func TestRefusalOwnMultilingual(t *testing.T) {
	rows := readRefusalRows(t, filepath.Join("testdata", "refusal", "own.jsonl"))
	for _, split := range []string{"dev", "test"} {
		c := score(rows, split, func(r refusalRow, got Refusal) {
			t.Logf("%s miss: label %d rules %v: %.80s", split, r.Label, got.Rules, r.Text)
		})
		t.Logf("own %s: %v", split, c)
		if c.precision() < 0.95 || c.recall() < 0.9 {
			t.Errorf("own %s: %v; want precision >= 0.95 and recall >= 0.9", split, c)
		}
	}
}

// TestRefusalXSTest measures the detector on XSTest v2's human-labelled
// model completions (paul-rottger/exaggerated-safety, CC-BY-4.0; five
// models' answers, full and partial refusals positive), when
// BULWARK_REFUSAL_DATA names the JSON lines prepared from it (see
// internal/detect/README.md). Dev and test are split by prompt id, 70/30.
func TestRefusalXSTest(t *testing.T) {
	path := os.Getenv("BULWARK_REFUSAL_DATA")
	if path == "" {
		t.Skip("BULWARK_REFUSAL_DATA not set")
	}
	rows := readRefusalRows(t, path)
	for _, split := range []string{"dev", "test"} {
		c := score(rows, split, nil)
		t.Logf("xstest %s: %v", split, c)
		bySource := map[string]*confusion{}
		for _, r := range rows {
			if r.Split != split {
				continue
			}
			if bySource[r.Source] == nil {
				bySource[r.Source] = &confusion{}
			}
			*bySource[r.Source] = addRow(*bySource[r.Source], r)
		}
		for s, c := range bySource {
			t.Logf("  %s %s: %v", split, s, *c)
		}
		if c.precision() < 0.9 || c.recall() < 0.8 {
			t.Errorf("xstest %s: %v", split, c)
		}
	}
	if os.Getenv("BULWARK_REFUSAL_VERBOSE") != "" {
		score(rows, "dev", func(r refusalRow, got Refusal) {
			t.Logf("miss %s label %d %s rules %v: %.160s", r.ID, r.Label, r.Kind, got.Rules, strings.ReplaceAll(r.Text, "\n", " "))
		})
	}
}

func addRow(c confusion, r refusalRow) confusion {
	got := DetectRefusal(r.Text).Detected
	switch {
	case got && r.Label == 1:
		c.tp++
	case got:
		c.fp++
	case r.Label == 1:
		c.fn++
	default:
		c.tn++
	}
	return c
}

func TestRefusalCases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"", false},
		{"I'm sorry, but I can’t help with that.", true},
		{"I can't wait to help! Here it is.", false},
		{"Sorry to hear that. Here is what you can do: rest.", false},
		{strings.Repeat("Here is a long answer. ", 40) + "I cannot help with that.", false},
		{"很抱歉，我无法提供这些信息。", true},
		{"Извините, но я не могу помочь.", true},
	} {
		if got := DetectRefusal(tc.text); got.Detected != tc.want {
			t.Errorf("DetectRefusal(%.40q) = %+v, want detected %v", tc.text, got, tc.want)
		}
	}
}

func FuzzDetectRefusal(f *testing.F) {
	f.Add("I'm sorry, but I can't help with that.")
	f.Add("抱歉，我无法帮助您")
	f.Add("\xff\xfe ich kann nicht")
	f.Fuzz(func(t *testing.T, s string) {
		r := DetectRefusal(s)
		if r.Score < 0 || r.Score > 1 || r.Detected != (r.Score >= RefusalThreshold) {
			t.Fatalf("DetectRefusal(%q) = %+v", s, r)
		}
	})
}

func BenchmarkDetectRefusal(b *testing.B) {
	answer := strings.Repeat("There are several ways to kill a Python process: use the kill command with its PID, or press Ctrl+C in its terminal. ", 10)
	b.ReportAllocs()
	for b.Loop() {
		DetectRefusal(answer)
	}
}
