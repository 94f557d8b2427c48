// Command train fits Bulwark's prompt-injection model (logistic regression
// over hashed n-grams of the normalised text) from a JSON-lines file of
// {"text", "label"} rows and writes the weights file that package detect
// embeds. Run it from the repository root: make train.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
	"github.com/bulwark-ai/bulwark/tools/internal/injtrain"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "train:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	data := fs.String("data", "../shared/data/prompt-injection/train.jsonl", "training file (JSON lines: text, label)")
	extra := fs.String("extra", injtrain.DefaultExtra, "the project's own training files, comma-separated (see internal/detect/traindata/README.md)")
	out := fs.String("out", "internal/detect/model.bin", "weights file to write (embedded by package detect)")
	bits := fs.Int("bits", injtrain.DefaultModelBits, "hash buckets = 2^bits")
	epochs := fs.Int("epochs", 12, "training epochs")
	l2 := fs.Float64("l2", 1e-6, "L2 penalty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ex, err := ReadExamples(*data)
	if err != nil {
		return err
	}
	for _, path := range strings.Split(*extra, ",") {
		if path == "" {
			continue
		}
		more, err := ReadExamples(path)
		if err != nil {
			return err
		}
		ex = append(ex, more...)
	}
	start := time.Now()
	sc, err := detect.NewWithModel(detect.Config{}, nil)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	enc := injtrain.Encode(sc, ex, *bits)
	m := injtrain.FitModel(enc, nil, injtrain.TrainOptions{Bits: *bits, Epochs: *epochs, L2: *l2})
	b, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil { // #nosec G306 -- model.bin is committed and public
		return fmt.Errorf("writing model: %w", err)
	}
	fmt.Fprintf(log, "trained on %d examples in %v; wrote %s (%d bytes); bias %.3f\n", len(ex), time.Since(start).Round(time.Millisecond), *out, len(b), m.Bias)
	for _, n := range slices.Sorted(maps.Keys(m.RuleWeights)) {
		fmt.Fprintf(log, "  %-34s weight %+.3f\n", n, m.RuleWeights[n])
	}
	return nil
}

// ReadExamples reads {"text", "label"} JSON lines.
func ReadExamples(path string) ([]injtrain.Example, error) {
	f, err := os.Open(path) // #nosec G304 -- dev tool: reads the file named by -data
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ex []injtrain.Example
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var row struct {
			Text   string `json:"text"`
			Label  int    `json:"label"`
			Source string `json:"source"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		ex = append(ex, injtrain.Example{Text: row.Text, Label: row.Label == 1, Weight: injtrain.TrainingWeight(row.Source, row.Label == 1)})
	}
	return ex, sc.Err()
}
