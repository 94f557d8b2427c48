package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/bulwark-ai/bulwark/internal/detect"
)

// maxScanLine bounds one input line of `bulwark scan`.
const maxScanLine = 64 << 20

// scanInput is one input line of `bulwark scan`.
type scanInput struct {
	ID   json.RawMessage `json:"id"`
	Text *string         `json:"text"`
}

// scanOutput is one output line, in the format DESIGN.md fixes.
type scanOutput struct {
	ID              json.RawMessage `json:"id"`
	PromptInjection scanInjection   `json:"prompt_injection"`
	Findings        []scanFinding   `json:"findings"`
	ElapsedUS       int64           `json:"elapsed_us"`
}

type scanInjection struct {
	Score    float64  `json:"score"`
	Detected bool     `json:"detected"`
	Rules    []string `json:"rules"`
}

type scanFinding struct {
	Detector string `json:"detector"`
	Type     string `json:"type"`
	Start    int    `json:"start"`
	End      int    `json:"end"`
}

// runScan implements `bulwark scan [--threshold T] [FILE...]`: it reads JSON
// lines {"id", "text"} from the files (or stdin) and writes one JSON line of
// findings for each, offsets in Unicode code points. A line that cannot be
// parsed is reported on stderr and skipped; runScan then returns an error
// after the remaining lines have been processed.
func runScan(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	threshold := fs.Float64("threshold", detect.DefaultInjectionThreshold, "prompt-injection score at which detected is true")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: bulwark scan [--threshold T] [FILE...]
Reads JSON lines {"id": ..., "text": "..."} (stdin when no FILE) and writes one
JSON line of detector findings for each.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	sc, err := detect.New(detect.Config{InjectionThreshold: *threshold})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	var bad int
	scanReader := func(name string, r io.Reader) error {
		n, err := scanStream(ctx, sc, name, r, w, stderr)
		bad += n
		return err
	}
	if fs.NArg() == 0 {
		if err := scanReader("stdin", stdin); err != nil {
			return err
		}
	}
	for _, name := range fs.Args() {
		if name == "-" {
			if err := scanReader("stdin", stdin); err != nil {
				return err
			}
			continue
		}
		f, err := os.Open(name) // #nosec G304 -- the operator names the files to scan on the command line
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		err = scanReader(name, f)
		_ = f.Close() // read-only: a close error loses nothing
		if err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("scan: writing output: %w", err)
	}
	if bad > 0 {
		return fmt.Errorf("scan: %d input line(s) could not be scanned", bad)
	}
	return nil
}

// scanStream scans every line of r and returns how many were malformed.
func scanStream(ctx context.Context, sc *detect.Scanner, name string, r io.Reader, w *bufio.Writer, stderr io.Writer) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	bad := 0
	var line []byte
	for lineNo := 1; ; lineNo++ {
		if err := ctx.Err(); err != nil {
			return bad, err
		}
		var err error
		var tooLong bool
		line, tooLong, err = readLine(br, line[:0])
		if tooLong || len(bytes.TrimSpace(line)) > 0 {
			perr := errLineTooLong
			if !tooLong {
				perr = scanLine(ctx, sc, line, enc)
			}
			if err := ctx.Err(); err != nil {
				return bad, err // interrupted: the line was not scanned to its end
			}
			if perr != nil {
				bad++
				fmt.Fprintf(stderr, "scan: %s:%d: %v\n", name, lineNo, perr)
			}
			if br.Buffered() == 0 {
				if ferr := w.Flush(); ferr != nil {
					return bad, fmt.Errorf("scan: writing output: %w", ferr)
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return bad, nil
		}
		if err != nil {
			return bad, fmt.Errorf("scan: reading %s: %w", name, err)
		}
	}
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxScanLine)

// readLine appends one line (without the newline) to buf. An over-long line
// is consumed to its end and reported with tooLong.
func readLine(br *bufio.Reader, buf []byte) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong && len(buf)+len(chunk) <= maxScanLine {
			buf = append(buf, chunk...)
		} else {
			tooLong = true
			buf = buf[:0]
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimRight(buf, "\r\n"), tooLong, err
	}
}

func scanLine(ctx context.Context, sc *detect.Scanner, line []byte, enc *json.Encoder) error {
	var in scanInput
	if err := json.Unmarshal(line, &in); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if in.Text == nil {
		return errors.New(`missing "text"`)
	}
	id := in.ID
	if len(id) == 0 {
		id = json.RawMessage(`""`)
	}
	start := time.Now()
	res, err := sc.ScanContext(ctx, *in.Text)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	out := scanOutput{
		ID: id,
		PromptInjection: scanInjection{
			Score:    math.Round(res.PromptInjection.Score*10000) / 10000,
			Detected: res.PromptInjection.Detected,
			Rules:    res.PromptInjection.Rules,
		},
		Findings:  make([]scanFinding, 0, len(res.Findings)),
		ElapsedUS: elapsed.Microseconds(),
	}
	if out.PromptInjection.Rules == nil {
		out.PromptInjection.Rules = []string{}
	}
	for _, f := range res.Findings {
		out.Findings = append(out.Findings, scanFinding{Detector: f.Detector, Type: f.Type, Start: f.Start, End: f.End})
	}
	return enc.Encode(out)
}
