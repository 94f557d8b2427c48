package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
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

// Gap is a range of seqs a records_lost record accounts for.
type Gap struct {
	FirstSeq, LastSeq uint64
	Cause             string
}

// Report is what Verify found.
type Report struct {
	Records uint64
	Dropped uint64
	// FirstSeq and LastSeq bound the verified chain.
	FirstSeq, LastSeq uint64
	// StartsMidChain is true when the first record links to a record not
	// given (an older, rotated-away file): fine, but that link is unchecked
	// unless a checkpoint names it.
	StartsMidChain bool
	// Lost lists the ranges of records lost to write errors, each accounted
	// for on the chain by a records_lost record.
	Lost []Gap
	// TornLines counts torn_line records: partial lines a writer cut off
	// when it started.
	TornLines int
	// TornTail is the length of a partial last line at the end of the last
	// file (a write in progress, or cut by a crash): not verified, and
	// marked on the chain by the writer's next start.
	TornTail int
	// Checkpoint is the checkpoint the log was checked against (nil: none);
	// AfterCheckpoint counts the records after its LastSeq, which a cut of
	// the tail could have removed unseen.
	Checkpoint      *Checkpoint
	AfterCheckpoint uint64
	// FirstTime and LastTime are the times of the first and last records:
	// with retention, the range of time the log still covers.
	FirstTime, LastTime time.Time
	// StartsAtSegment is true when the first record is a segment_start: the
	// files begin where a segment began (what retention leaves), and its
	// details say where the chain stood. SegmentStarts counts them all.
	StartsAtSegment bool
	SegmentStarts   int
	// Encrypted counts the records whose body is encrypted (checked by the
	// chain as ciphertext, never decrypted); KeyIDs counts them by the key
	// id their ciphertext names.
	Encrypted uint64
	KeyIDs    map[uint32]uint64
}

// LostRecords is how many records the log's records_lost records account for.
func (r Report) LostRecords() uint64 {
	var n uint64
	for _, g := range r.Lost {
		n += g.LastSeq + 1 - g.FirstSeq
	}
	return n
}

func parseLine(line string) (*Record, error) {
	var r Record
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return nil, fmt.Errorf("not a JSON record: %w", err)
	}
	return &r, nil
}

// lostDetails is the typed reading of a records_lost record's details.
type lostDetails struct {
	Details struct {
		Cause    string `json:"cause"`
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	} `json:"details"`
}

// segmentDetails is the typed reading of a segment_start record's details.
type segmentDetails struct {
	Details struct {
		PreviousLastSeq  uint64 `json:"previous_last_seq"`
		PreviousLastHash string `json:"previous_last_hash"`
	} `json:"details"`
}

// maxLine bounds one line Verify reads.
const maxLine = 16 << 20

// Verify checks the given files, oldest first (Path.N ... Path.1, Path): every
// line parses, seq increases by exactly one (or skips a range a records_lost
// record accounts for), each prev is the hash of the line before, and, with
// key, every mac is valid. With cp, the log must also hold the checkpoint's
// first record (with its prev) and run at least to its last record (with its
// hash): a head or tail cut fails. It returns the first Problem.
func Verify(files []string, key []byte, cp *Checkpoint) (Report, error) {
	rep := Report{Checkpoint: cp}
	var prevHash string
	var prevSeq uint64
	var last string
	lastLine := 0
	first := true
	for fi, name := range files {
		last = name
		f, err := os.Open(name) // #nosec G304 -- the operator names the files to verify
		if err != nil {
			return rep, fmt.Errorf("audit verify: %w", err)
		}
		rd := bufio.NewReaderSize(f, 64<<10)
		n := 0
		for {
			raw, err := readLine(rd)
			if len(raw) == 0 && errors.Is(err, io.EOF) {
				break
			}
			if err != nil && !errors.Is(err, io.EOF) {
				_ = f.Close() // read-only
				return rep, fmt.Errorf("audit verify %s: %w", name, err)
			}
			n++
			lastLine = n
			complete := err == nil
			line := string(bytes.TrimSuffix(raw, []byte("\n")))
			if line == "" {
				continue
			}
			r, perr := parseLine(line)
			if perr != nil {
				if !complete && fi == len(files)-1 {
					// A partial last line: a write in progress or cut short.
					rep.TornTail = len(raw)
					break
				}
				_ = f.Close() // read-only
				return rep, &Problem{File: name, Line: n, What: perr.Error()}
			}
			if p := rep.check(r, line, key, first, prevSeq, prevHash); p != "" {
				_ = f.Close() // read-only
				return rep, &Problem{File: name, Line: n, Seq: r.Seq, What: p}
			}
			if first {
				rep.FirstSeq = r.Seq
				rep.FirstTime = r.Time
				rep.StartsMidChain = r.Prev != ""
				rep.StartsAtSegment = r.Type == TypeSegmentStart
				first = false
			}
			rep.LastTime = r.Time
			if r.Type == TypeSegmentStart {
				rep.SegmentStarts++
			}
			if r.Enc != nil {
				id, _ := KeyID(r.Enc)
				if rep.KeyIDs == nil {
					rep.KeyIDs = map[uint32]uint64{}
				}
				rep.KeyIDs[id]++
				rep.Encrypted++
			}
			prevHash = lineHash([]byte(line))
			prevSeq = r.Seq
			rep.Records++
			rep.Dropped += r.Dropped
			rep.LastSeq = r.Seq
			if r.Type == TypeTornLine {
				rep.TornLines++
			}
			if cp != nil && r.Seq > cp.LastSeq {
				rep.AfterCheckpoint++
			}
			if errors.Is(err, io.EOF) {
				break
			}
		}
		_ = f.Close() // read-only
	}
	if cp.namesRecords() && (rep.Records == 0 || rep.LastSeq < cp.LastSeq) {
		return rep, &Problem{File: last, Line: lastLine, Seq: rep.LastSeq, What: fmt.Sprintf(
			"tail cut: the checkpoint says records up to seq %d were written, the log ends at seq %d", cp.LastSeq, rep.LastSeq)}
	}
	return rep, nil
}

// readLine reads one line with its newline (none at the end of the file),
// refusing lines longer than maxLine.
func readLine(rd *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		chunk, err := rd.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > maxLine {
			return nil, fmt.Errorf("line longer than %d bytes", maxLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return out, err
	}
}

// check returns what is wrong with record r (line as written) coming after
// prevSeq/prevHash, or "".
func (rep *Report) check(r *Record, line string, key []byte, first bool, prevSeq uint64, prevHash string) string {
	if len(key) > 0 {
		signed, mac, ok := splitMAC(line)
		if !ok {
			return "record is not signed"
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte(signed))
		want := hex.EncodeToString(m.Sum(nil))
		if !hmac.Equal([]byte(want), []byte(mac)) {
			return "bad signature: the record was altered or signed with another key"
		}
	}
	if cp := rep.Checkpoint; cp.namesRecords() {
		if first && r.Seq > cp.FirstSeq {
			return fmt.Sprintf("head cut: the checkpoint says the log starts at seq %d, the first record given is seq %d", cp.FirstSeq, r.Seq)
		}
		if r.Seq == cp.FirstSeq && r.Prev != cp.FirstPrev {
			return "head replaced: the first record the checkpoint names links elsewhere"
		}
		if r.Seq == cp.LastSeq && lineHash([]byte(line)) != cp.LastHash {
			return "does not match the checkpoint's last record (replaced)"
		}
	}
	if r.Type == TypeSegmentStart {
		var d segmentDetails
		if err := json.Unmarshal([]byte(line), &d); err != nil || d.Details.PreviousLastSeq+1 != r.Seq || d.Details.PreviousLastHash != r.Prev {
			return "segment_start does not describe the chain it continues"
		}
	}
	if r.Type == TypeRecordsLost {
		var d lostDetails
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			return "records_lost record without a valid range"
		}
		if d.Details.Cause == LostMissingAtStart {
			return fmt.Sprintf("records %d..%d were missing when the writer started: cut from the tail while no writer ran",
				d.Details.FirstSeq, d.Details.LastSeq)
		}
		if !first && r.Seq != prevSeq+1 {
			if d.Details.FirstSeq != prevSeq+1 || d.Details.LastSeq+1 != r.Seq || d.Details.LastSeq < d.Details.FirstSeq {
				return fmt.Sprintf("records_lost range %d..%d does not match the gap after seq %d", d.Details.FirstSeq, d.Details.LastSeq, prevSeq)
			}
			if r.Prev != prevHash {
				return "broken chain: prev does not match the hash of the previous record (edited or replaced)"
			}
			rep.Lost = append(rep.Lost, Gap{FirstSeq: d.Details.FirstSeq, LastSeq: d.Details.LastSeq, Cause: d.Details.Cause})
			return ""
		}
		if first && r.Seq > d.Details.LastSeq && d.Details.LastSeq >= d.Details.FirstSeq {
			rep.Lost = append(rep.Lost, Gap{FirstSeq: d.Details.FirstSeq, LastSeq: d.Details.LastSeq, Cause: d.Details.Cause})
		}
	}
	if first {
		return ""
	}
	switch {
	case r.Seq <= prevSeq:
		return fmt.Sprintf("out of order or duplicated: seq %d after %d", r.Seq, prevSeq)
	case r.Seq != prevSeq+1:
		return fmt.Sprintf("missing or reordered records: seq %d after %d", r.Seq, prevSeq)
	case r.Prev != prevHash:
		return "broken chain: prev does not match the hash of the previous record (edited or replaced)"
	}
	return ""
}
