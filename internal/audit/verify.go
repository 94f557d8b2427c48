package audit

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Problem describes the first record that breaks the chain.
type Problem struct {
	File string
	Line int
	Seq  uint64
	What string
}

func (p *Problem) Error() string {
	return fmt.Sprintf("%s:%d (seq %d): %s", p.File, p.Line, p.Seq, p.What)
}

// Report is what Verify found.
type Report struct {
	Records uint64
	Dropped uint64
	// FirstSeq and LastSeq bound the verified chain.
	FirstSeq, LastSeq uint64
	// StartsMidChain is true when the first record links to a record not
	// given (an older, rotated-away file): fine, but that link is unchecked.
	StartsMidChain bool
}

func parseLine(line string) (*Record, error) {
	var r Record
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return nil, fmt.Errorf("not a JSON record: %w", err)
	}
	return &r, nil
}

// Verify checks the given files, oldest first (Path.N ... Path.1, Path): every
// line parses, seq increases by exactly one, each prev is the hash of the line
// before, and, with key, every mac is valid. It returns the first Problem.
func Verify(files []string, key []byte) (Report, error) {
	var rep Report
	var prevHash string
	var prevSeq uint64
	first := true
	for _, name := range files {
		f, err := os.Open(name) // #nosec G304 -- the operator names the files to verify
		if err != nil {
			return rep, fmt.Errorf("audit verify: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		n := 0
		for sc.Scan() {
			n++
			line := sc.Text()
			if line == "" {
				continue
			}
			r, err := parseLine(line)
			if err != nil {
				_ = f.Close() // read-only
				return rep, &Problem{File: name, Line: n, What: err.Error()}
			}
			bad := func(what string) error {
				_ = f.Close() // read-only
				return &Problem{File: name, Line: n, Seq: r.Seq, What: what}
			}
			if len(key) > 0 {
				signed, mac, ok := splitMAC(line)
				if !ok {
					return rep, bad("record is not signed")
				}
				m := hmac.New(sha256.New, key)
				m.Write([]byte(signed))
				want := hex.EncodeToString(m.Sum(nil))
				if !hmac.Equal([]byte(want), []byte(mac)) {
					return rep, bad("bad signature: the record was altered or signed with another key")
				}
			}
			if first {
				rep.FirstSeq = r.Seq
				rep.StartsMidChain = r.Prev != ""
				first = false
			} else {
				switch {
				case r.Seq <= prevSeq:
					return rep, bad(fmt.Sprintf("out of order or duplicated: seq %d after %d", r.Seq, prevSeq))
				case r.Seq != prevSeq+1:
					return rep, bad(fmt.Sprintf("missing or reordered records: seq %d after %d", r.Seq, prevSeq))
				case r.Prev != prevHash:
					return rep, bad("broken chain: prev does not match the hash of the previous record (edited or replaced)")
				}
			}
			prevHash = lineHash([]byte(line))
			prevSeq = r.Seq
			rep.Records++
			rep.Dropped += r.Dropped
			rep.LastSeq = r.Seq
		}
		err = sc.Err()
		_ = f.Close() // read-only
		if err != nil && err != io.EOF {
			return rep, fmt.Errorf("audit verify %s: %w", name, err)
		}
	}
	return rep, nil
}
