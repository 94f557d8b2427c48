package audit

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// TimelineQuery selects one principal's records for a post-incident
// timeline: its decisions (allowed and denied) and the changes to its keys,
// within [From, To), together with the changes that apply to everyone in
// that range (policy loads, configuration, the limiter's fallback), which
// explain why its decisions changed.
type TimelineQuery struct {
	// Principal is the principal's id (for an API key, the key's id).
	Principal string
	// From and To bound the records' time; zero: unbounded.
	From, To time.Time
}

// inRange reports whether t is within the query's range.
func (q TimelineQuery) inRange(t time.Time) bool {
	return (q.From.IsZero() || !t.Before(q.From)) && (q.To.IsZero() || t.Before(q.To))
}

// global record types: changes that apply to every principal.
var globalTypes = map[string]bool{TypePolicyReload: true, TypeConfigLoaded: true, TypeLimiterFallback: true,
	TypeRecordsLost: true}

// Matches reports whether r belongs to q's timeline.
func (q TimelineQuery) Matches(r *Record) bool {
	if !q.inRange(r.Time) {
		return false
	}
	if globalTypes[r.Type] {
		return true
	}
	if r.Principal != nil && r.Principal.ID == q.Principal {
		return true
	}
	id, _ := r.Details["key_id"].(string)
	return id != "" && id == q.Principal && strings.HasPrefix(r.Type, "key_")
}

// Timeline is one principal's records in time order, with the counts a
// post-incident review starts from.
type Timeline struct {
	Query   TimelineQuery
	Records []*Record
	// Decisions counts the principal's decisions; Denials its denials
	// by reason (dry-run denials included: the principal did it).
	Decisions int
	Denials   map[string]int
	// Erased is set when some of the principal's records could not be
	// read because its subject key was erased.
	Erased int
}

// BuildTimeline reads files (oldest first, decrypting with o when the log
// is encrypted; o may be nil) and returns q's timeline. Records are not
// chain-checked here: run Verify on the same files for that.
func BuildTimeline(files []string, o *Opener, q TimelineQuery) (*Timeline, error) {
	if q.Principal == "" {
		return nil, fmt.Errorf("audit timeline: no principal")
	}
	tl := &Timeline{Query: q, Denials: map[string]int{}}
	_, err := ReadLog(files, o, func(r *Record) error {
		if r.Erased && q.inRange(r.Time) && r.Type == TypeDecision {
			tl.Erased++
		}
		if !q.Matches(r) {
			return nil
		}
		tl.Records = append(tl.Records, r)
		if r.Type == TypeDecision && r.Principal != nil && r.Principal.ID == q.Principal {
			tl.Decisions++
			if r.DryRun || (r.Allowed != nil && !*r.Allowed) {
				tl.Denials[r.Reason]++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(tl.Records, func(i, j int) bool { return tl.Records[i].Time.Before(tl.Records[j].Time) })
	return tl, nil
}

// WriteText writes the timeline for a reader: one line per record, then
// the counts.
func (tl *Timeline) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, r := range tl.Records {
		fmt.Fprintf(&b, "%s  %-16s %s\n", r.Time.UTC().Format(time.RFC3339Nano), r.Type, summary(r))
	}
	fmt.Fprintf(&b, "-- principal %s: %d decisions, %d denied", tl.Query.Principal, tl.Decisions, sum(tl.Denials))
	if len(tl.Denials) > 0 {
		reasons := make([]string, 0, len(tl.Denials))
		for k := range tl.Denials {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		b.WriteString(" (")
		for i, k := range reasons {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %d", k, tl.Denials[k])
		}
		b.WriteString(")")
	}
	if tl.Erased > 0 {
		fmt.Fprintf(&b, "; %d decisions in range belong to erased subjects and could not be attributed", tl.Erased)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// summary is one record in a line: identifiers, verdicts and codes only,
// as the audit trail holds them.
func summary(r *Record) string {
	switch r.Type {
	case TypeDecision:
		verdict := "allow"
		if r.DryRun {
			verdict = "dry-run deny"
		} else if r.Allowed != nil && !*r.Allowed {
			verdict = "DENY"
		}
		s := fmt.Sprintf("%s %s phase=%s route=%s decision=%s", verdict, r.Reason, r.Phase, r.Route, r.DecisionID)
		if r.HTTPStatus != 0 {
			s += fmt.Sprintf(" status=%d", r.HTTPStatus)
		}
		if len(r.Limits) > 0 {
			s += " limits=" + strings.Join(r.Limits, ",")
		}
		if tags, ok := r.Details["tags"].(map[string]any); ok {
			if a, ok := tags["alert"].(string); ok {
				s += " alert=" + a
			}
		}
		if r.TraceID != "" {
			s += " trace=" + r.TraceID
		}
		return s
	case TypePolicyReload:
		return fmt.Sprintf("policy %v -> %v %v", r.Details["old_revision"], r.Details["new_revision"], errText(r.Details["error"]))
	default:
		var parts []string
		for _, k := range []string{"key_id", "status", "source", "roles", "state", "failure_mode"} {
			if v, ok := r.Details[k]; ok {
				parts = append(parts, fmt.Sprintf("%s=%v", k, v))
			}
		}
		return strings.Join(parts, " ")
	}
}

func errText(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("(failed: %v)", v)
}
