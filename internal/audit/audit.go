// Package audit writes Bulwark's tamper-evident audit trail: one JSON line per
// decision and per system change, each carrying the SHA-256 of the line before
// it (and optionally an HMAC), so a deleted, edited or reordered record breaks
// the chain where it happened. Writing is asynchronous with a bounded buffer;
// files rotate by size, the chain continues across them, and the oldest are
// deleted past a count. A checkpoint file beside the log names its first and
// last record, so cutting the head or the tail is caught too. Write errors
// (a full disk) are survived: the loss is counted and recorded on the chain
// when writing resumes. Verify checks a log and names the first record that
// does not fit.
//
// Records hold identifiers, codes and counts only: never prompt text,
// credentials or the values of findings.
package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
)

// Record types: one per decision, and one per kind of system change.
const (
	TypeDecision     = "decision"
	TypePolicyReload = "policy_reload"
	TypeConfigLoaded = "config_loaded"
	// TypeKeyCreated, TypeKeyRevoked, TypeKeyRemoved and TypeKeyChanged
	// record API key changes as the serving process sees them (a keys-file
	// reload, or a change announced through Redis): Details carry the key
	// id, its source and status, never the key or its hash.
	TypeKeyCreated = "key_created"
	TypeKeyRevoked = "key_revoked"
	TypeKeyRemoved = "key_removed"
	TypeKeyChanged = "key_changed"
	// TypeLimiterFallback records the rate limiter's Redis circuit breaker
	// opening (Details.state "entered": limits are decided by the failure
	// mode) and closing ("left").
	TypeLimiterFallback = "limiter_fallback"
	// TypeBudgetThreshold records a tenant's spending crossing a threshold
	// of its budget (data.bulwark.usage): Details carry tenant, period
	// (month, day), percent, spent_usd, budget_usd and period_start.
	TypeBudgetThreshold = "budget_threshold"
	// TypeRecordsLost accounts for records that were given a seq but never
	// reached the log: Details carry cause, first_seq, last_seq and records,
	// and the record's own seq is last_seq+1, so the gap in seq is on the
	// chain and Verify checks it matches. Cause LostWriteError (the log could
	// not be written, e.g. a full disk: written when writing resumes) is an
	// accounted loss; LostMissingAtStart (the log ended before its
	// checkpoint when the writer started: its tail was cut) fails Verify.
	TypeRecordsLost = "records_lost"
	// TypeTornLine records that the log ended in a partial line when the
	// writer started (a write cut by a crash or a full disk): the bytes were
	// cut off; Details carry their length, offset and SHA-256.
	TypeTornLine = "torn_line"
)

// The causes of a records_lost record.
const (
	LostWriteError     = "write_error"
	LostMissingAtStart = "missing_at_start"
)

// Principal is who a decision was about (no credential, ever).
type Principal struct {
	ID     string `json:"id,omitempty"`
	Kind   string `json:"kind,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// Record is one audit entry. Seq, Time, Prev and Dropped are set by the
// Writer; callers fill the rest.
type Record struct {
	Seq            uint64         `json:"seq"`
	Time           time.Time      `json:"time"`
	Type           string         `json:"type"`
	DecisionID     string         `json:"decision_id,omitempty"`
	TraceID        string         `json:"trace_id,omitempty"`
	Principal      *Principal     `json:"principal,omitempty"`
	Phase          string         `json:"phase,omitempty"`
	Route          string         `json:"route,omitempty"`
	Allowed        *bool          `json:"allowed,omitempty"`
	HTTPStatus     int            `json:"http_status,omitempty"`
	Reason         string         `json:"reason,omitempty"`
	PolicyRevision string         `json:"policy_revision,omitempty"`
	DryRun         bool           `json:"dry_run,omitempty"`
	Signals        map[string]any `json:"signals,omitempty"`
	Limits         []string       `json:"limits_exceeded,omitempty"`
	Details        map[string]any `json:"details,omitempty"`
	// Personal holds personal fields beyond the principal id (client
	// address, user agent, anything captured): with an audit keyset they
	// are encrypted under the subject's own key, like the principal id.
	Personal map[string]string `json:"personal,omitempty"`
	// Subject is the principal's keyed pseudonym (encrypted logs only): on
	// a record read back, and inside the encrypted body.
	Subject string `json:"subject,omitempty"`
	// Erased marks a record read back whose subject was erased: its
	// personal fields cannot be decrypted any more.
	Erased bool `json:"erased,omitempty"`
	// Enc is the encrypted body of a record written with an audit keyset
	// (Tink AEAD ciphertext, its first 5 bytes naming the key id). The
	// chain and the mac cover it, so integrity is checked without the key.
	Enc []byte `json:"enc,omitempty"`
	// Dropped counts records lost to a full buffer just before this one, so
	// a gap is recorded in the chain itself.
	Dropped uint64 `json:"dropped,omitempty"`
	// Prev is the hex SHA-256 of the previous line as written ("" for the
	// first record of a new log).
	Prev string `json:"prev"`
}

// macField is appended to every line when a key is configured; it is always
// the last field, so verification strips it textually (no re-encoding).
const macField = `,"mac":"`

// encode renders r as one line (without newline). With mac (an
// HMAC-SHA256 keyed with the log's key, reused across records), the line is
// the record's JSON with "mac" = HMAC(the JSON without mac) spliced in as
// its last field.
func encode(r *Record, mac hash.Hash) ([]byte, error) {
	var b []byte
	var err error
	if r.Enc != nil {
		b = appendSealed(make([]byte, 0, 128+base64.StdEncoding.EncodedLen(len(r.Enc))), r)
	} else if b, err = json.Marshal(r); err != nil {
		return nil, fmt.Errorf("audit: encode record: %w", err)
	}
	return signLine(b, mac), nil
}

// signLine splices the mac of line (a JSON object) in as its last field;
// without mac the line is returned as it is.
func signLine(b []byte, mac hash.Hash) []byte {
	if mac == nil {
		return b
	}
	mac.Reset()
	mac.Write(b)
	var sum [sha256.Size]byte
	var hexSum [2 * sha256.Size]byte
	hex.Encode(hexSum[:], mac.Sum(sum[:0]))
	out := make([]byte, 0, len(b)+len(macField)+len(hexSum)+2)
	out = append(out, b[:len(b)-1]...)
	out = append(out, macField...)
	out = append(out, hexSum[:]...)
	out = append(out, '"', '}')
	return out
}

// appendSealed renders an encrypted record's line by hand: it has only
// fixed fields, and json.Marshal's reflection would cost as much as the
// encryption itself. The result is the JSON json.Marshal would give for
// these fields (parseLine reads it back the same way).
func appendSealed(b []byte, r *Record) []byte {
	return appendSealedTail(appendSealedHead(b, r), r.Dropped, r.Prev)
}

// appendSealedHead is the part of an encrypted record's line the sealing
// stage renders (seq, time, type and the encrypted body, whose base64 is
// most of the line); appendSealedTail is what the writer adds once it knows
// the chain (dropped, prev).
func appendSealedHead(b []byte, r *Record) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":`...)
	b = appendJSONString(b, r.Type)
	b = append(b, `,"enc":"`...)
	b = base64.StdEncoding.AppendEncode(b, r.Enc)
	return append(b, '"')
}

func appendSealedTail(b []byte, dropped uint64, prev string) []byte {
	if dropped > 0 {
		b = append(b, `,"dropped":`...)
		b = strconv.AppendUint(b, dropped, 10)
	}
	b = append(b, `,"prev":`...)
	b = appendJSONString(b, prev)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string: as is when it needs no
// escaping (record types, hex hashes), else through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainJSON[s[i]] {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainJSON marks the bytes json.Marshal writes as they are in a string:
// one table lookup per byte, where the seven comparisons it replaces cost
// as much per record as the AES-GCM encryption (callgrind).
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// newMAC is the HMAC every line of a log signed with key carries.
func newMAC(key []byte) hash.Hash { return hmac.New(sha256.New, key) }

// lineHash is the chain link: the hex SHA-256 of a line as written.
func lineHash(line []byte) string {
	s := sha256.Sum256(line)
	return hex.EncodeToString(s[:])
}

// splitMAC separates a written line into the signed JSON and its mac.
func splitMAC(line string) (signed, mac string, ok bool) {
	i := strings.LastIndex(line, macField)
	if i < 0 || !strings.HasSuffix(line, `"}`) {
		return line, "", false
	}
	mac = line[i+len(macField) : len(line)-2]
	return line[:i] + "}", mac, true
}
