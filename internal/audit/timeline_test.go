package audit

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeIncident writes, through a real Writer, what an incident leaves in
// the trail: a key created, allowed and denied decisions of mallory and
// of alice, a policy reload, the key revoked.
func writeIncident(t *testing.T, cfg Config) []string {
	t.Helper()
	w, err := Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	yes, no := true, false
	mallory := &Principal{ID: "mallory", Kind: "api_key", Tenant: "acme"}
	w.Log(ctx, Record{Type: TypeKeyCreated, Principal: mallory, Details: map[string]any{"key_id": "mallory", "source": "keys_file"}})
	w.Log(ctx, Record{Type: TypeDecision, DecisionID: "d1", Principal: mallory, Allowed: &yes, Reason: "allowed", Phase: "request_body"})
	for _, id := range []string{"d2", "d3"} {
		w.Log(ctx, Record{Type: TypeDecision, DecisionID: id, Principal: mallory, Allowed: &no, HTTPStatus: 403, Reason: "prompt_injection", Phase: "request_body"})
	}
	w.Log(ctx, Record{Type: TypeDecision, DecisionID: "a1", Principal: &Principal{ID: "alice", Kind: "api_key"}, Allowed: &yes, Reason: "allowed"})
	w.Log(ctx, Record{Type: TypePolicyReload, PolicyRevision: "r2", Details: map[string]any{"old_revision": "r1", "new_revision": "r2"}})
	w.Log(ctx, Record{Type: TypeDecision, DecisionID: "d4", Principal: mallory, Allowed: &no, HTTPStatus: 429, Reason: "abuse_suspected",
		Details: map[string]any{"tags": map[string]any{"alert": "abuse_suspected"}}})
	w.Log(ctx, Record{Type: TypeKeyRevoked, Principal: mallory, Details: map[string]any{"key_id": "mallory", "status": "revoked"}})
	closeWriter(t, w)
	return rotatedFiles(cfg.Path)
}

func TestTimelineClearAndEncrypted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clear := writeIncident(t, Config{Path: filepath.Join(dir, "clear.log")})
	kek := testKEK(t)
	keys := newKeyset(t, dir, kek)
	enc := writeIncident(t, Config{Path: filepath.Join(dir, "enc.log"), Keyset: keys.Path, KEK: kek})
	o, err := NewOpener(keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files []string
		o     *Opener
	}{{"clear", clear, nil}, {"encrypted", enc, o}} {
		tl, err := BuildTimeline(tc.files, tc.o, TimelineQuery{Principal: "mallory"})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var types []string
		for _, r := range tl.Records {
			types = append(types, r.Type+":"+r.DecisionID)
		}
		want := "key_created: decision:d1 decision:d2 decision:d3 policy_reload: decision:d4 key_revoked:"
		if got := strings.Join(types, " "); got != want {
			t.Errorf("%s: timeline %s, want %s", tc.name, got, want)
		}
		if tl.Decisions != 4 || tl.Denials["prompt_injection"] != 2 || tl.Denials["abuse_suspected"] != 1 {
			t.Errorf("%s: counts %d %v", tc.name, tl.Decisions, tl.Denials)
		}
		var out bytes.Buffer
		if err := tl.WriteText(&out); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"DENY abuse_suspected", "alert=abuse_suspected", "policy r1 -> r2", "status=revoked",
			"4 decisions, 3 denied (abuse_suspected 1, prompt_injection 2)"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("%s: text lacks %q:\n%s", tc.name, s, out.String())
			}
		}
		if strings.Contains(out.String(), "a1") {
			t.Errorf("%s: alice's decision is in mallory's timeline", tc.name)
		}
	}
	// Without the keyset, an encrypted log names nobody: no decision is
	// attributed to mallory.
	tl, err := BuildTimeline(enc, nil, TimelineQuery{Principal: "mallory"})
	if err != nil {
		t.Fatal(err)
	}
	if tl.Decisions != 0 {
		t.Errorf("encrypted log read without keys attributes %d decisions", tl.Decisions)
	}
	// The range bounds it.
	tl, _ = BuildTimeline(clear, nil, TimelineQuery{Principal: "mallory", From: time.Now().Add(time.Hour)})
	if len(tl.Records) != 0 {
		t.Errorf("records after From: %d", len(tl.Records))
	}
	if _, err := BuildTimeline(clear, nil, TimelineQuery{}); err == nil {
		t.Error("no principal accepted")
	}
}
