package llmapi

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var streamFixtures = []string{
	"openai_chat_stream.txt",
	"openai_chat_tools_stream.txt",
	"openai_completions_stream.txt",
	"anthropic_stream.txt",
	"openai_responses_stream.txt",
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

// feedAll parses chunks in order, flushes, and returns the events and the
// pending bytes.
func feedAll(t testing.TB, max int, chunks ...[]byte) ([]Event, []byte, error) {
	t.Helper()
	p := SSEParser{MaxEventBytes: max}
	var evs []Event
	emit := func(ev Event) error { evs = append(evs, ev); return nil }
	for _, c := range chunks {
		if err := p.Feed(c, emit); err != nil {
			return evs, p.Pending(), err
		}
	}
	if err := p.Flush(emit); err != nil {
		return evs, p.Pending(), err
	}
	return evs, p.Pending(), nil
}

func sameEvents(a, b []Event) error {
	if len(a) != len(b) {
		return fmt.Errorf("got %d events, want %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Name != y.Name || x.ID != y.ID || !bytes.Equal(x.Data, y.Data) || (x.Data == nil) != (y.Data == nil) || !bytes.Equal(x.Raw, y.Raw) {
			return fmt.Errorf("event %d: got %+q, want %+q", i, x, y)
		}
	}
	return nil
}

func lineEndingVariants(b []byte) map[string][]byte {
	return map[string][]byte{
		"lf":   b,
		"crlf": bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")),
		"cr":   bytes.ReplaceAll(b, []byte("\n"), []byte("\r")),
	}
}

func TestSSEParserFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file   string
		events int
		first  string // Name of the first event
	}{
		{"openai_chat_stream.txt", 8, ""},
		{"openai_chat_tools_stream.txt", 5, ""},
		{"openai_completions_stream.txt", 5, ""},
		{"anthropic_stream.txt", 12, "message_start"},
		{"openai_responses_stream.txt", 12, "response.created"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			in := readFixture(t, tt.file)
			for variant, b := range lineEndingVariants(in) {
				evs, pending, err := feedAll(t, 0, b)
				if err != nil {
					t.Fatalf("%s: Feed: %v", variant, err)
				}
				if len(evs) != tt.events {
					t.Fatalf("%s: got %d events, want %d", variant, len(evs), tt.events)
				}
				if evs[0].Name != tt.first {
					t.Errorf("%s: first event name = %q, want %q", variant, evs[0].Name, tt.first)
				}
				var all []byte
				for _, ev := range evs {
					all = append(all, ev.Raw...)
				}
				all = append(all, pending...)
				if !bytes.Equal(all, b) {
					t.Errorf("%s: Raw of events + Pending != input", variant)
				}
				if len(pending) != 0 {
					t.Errorf("%s: pending = %q, want none", variant, pending)
				}
			}
		})
	}
}

// TestSSEParserEverySplit is the chunking property: splitting a real stream
// at every single position, and at random multi-split points, yields the
// same events as feeding it whole.
func TestSSEParserEverySplit(t *testing.T) {
	t.Parallel()
	for _, name := range streamFixtures {
		in := readFixture(t, name)
		for variant, b := range lineEndingVariants(in) {
			t.Run(name+"/"+variant, func(t *testing.T) {
				t.Parallel()
				want, wantPending, err := feedAll(t, 0, b)
				if err != nil {
					t.Fatalf("whole: %v", err)
				}
				for i := 0; i <= len(b); i++ {
					got, pending, err := feedAll(t, 0, b[:i], b[i:])
					if err != nil {
						t.Fatalf("split at %d: %v", i, err)
					}
					if err := sameEvents(got, want); err != nil {
						t.Fatalf("split at %d: %v", i, err)
					}
					if !bytes.Equal(pending, wantPending) {
						t.Fatalf("split at %d: pending %q, want %q", i, pending, wantPending)
					}
				}
				rng := rand.New(rand.NewPCG(1, uint64(len(b))))
				for iter := 0; iter < 300; iter++ {
					chunks := randomSplit(rng, b, 1+rng.IntN(40))
					got, _, err := feedAll(t, 0, chunks...)
					if err != nil {
						t.Fatalf("random split %d: %v", iter, err)
					}
					if err := sameEvents(got, want); err != nil {
						t.Fatalf("random split %d: %v", iter, err)
					}
				}
				// One byte at a time.
				var chunks [][]byte
				for i := range b {
					chunks = append(chunks, b[i:i+1])
				}
				got, _, err := feedAll(t, 0, chunks...)
				if err != nil {
					t.Fatalf("byte at a time: %v", err)
				}
				if err := sameEvents(got, want); err != nil {
					t.Fatalf("byte at a time: %v", err)
				}
			})
		}
	}
}

func randomSplit(rng *rand.Rand, b []byte, n int) [][]byte {
	cuts := make([]int, n)
	for i := range cuts {
		cuts[i] = rng.IntN(len(b) + 1)
	}
	slices.Sort(cuts)
	var out [][]byte
	prev := 0
	for _, c := range cuts {
		out = append(out, b[prev:c])
		prev = c
	}
	return append(out, b[prev:])
}

func TestSSEParserFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []Event // Raw is checked separately via the concatenation invariant
		pending string
	}{
		{
			name: "no space after colon",
			in:   "data:hello\n\n",
			want: []Event{{Data: []byte("hello")}},
		},
		{
			name: "only one space stripped",
			in:   "data:  two\n\n",
			want: []Event{{Data: []byte(" two")}},
		},
		{
			name: "multiple data lines",
			in:   "event: x\ndata: a\ndata:\ndata: c\n\n",
			want: []Event{{Name: "x", Data: []byte("a\n\nc")}},
		},
		{
			name: "field without colon is an empty data line",
			in:   "data\n\n",
			want: []Event{{Data: []byte("")}},
		},
		{
			name: "comment only block is emitted with no fields",
			in:   ": ping\n\ndata: 1\n\n",
			want: []Event{{}, {Data: []byte("1")}},
		},
		{
			name: "comments between fields",
			in:   "event: e\n: note\ndata: d\n\n",
			want: []Event{{Name: "e", Data: []byte("d")}},
		},
		{
			name: "id, retry and unknown fields",
			in:   "id: 42\nretry: 1000\nfoo: bar\ndata: d\n\n",
			want: []Event{{ID: "42", Data: []byte("d")}},
		},
		{
			name: "id with NUL ignored",
			in:   "id: a\x00b\ndata: d\n\n",
			want: []Event{{Data: []byte("d")}},
		},
		{
			name: "last event name wins",
			in:   "event: a\nevent: b\ndata: d\n\n",
			want: []Event{{Name: "b", Data: []byte("d")}},
		},
		{
			name: "stray blank lines",
			in:   "\n\ndata: d\n\n",
			want: []Event{{}, {}, {Data: []byte("d")}},
		},
		{
			name: "mixed line endings",
			in:   "event: m\r\ndata: a\rdata: b\n\r\n",
			want: []Event{{Name: "m", Data: []byte("a\nb")}},
		},
		{
			name: "BOM at stream start",
			in:   "\xef\xbb\xbfdata: d\n\n",
			want: []Event{{Data: []byte("d")}},
		},
		{
			name:    "incomplete event stays pending",
			in:      "data: 1\n\ndata: 2\n",
			want:    []Event{{Data: []byte("1")}},
			pending: "data: 2\n",
		},
		{
			name: "lone CR terminator flushed at end",
			in:   "data: 1\r\r",
			want: []Event{{Data: []byte("1")}},
		},
		{
			name: "utf-8 kept intact",
			in:   "data: {\"t\":\"héllo 世界 🌍\"}\n\n",
			want: []Event{{Data: []byte("{\"t\":\"héllo 世界 🌍\"}")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tt.in)
			for i := 0; i <= len(in); i++ {
				got, pending, err := feedAll(t, 0, in[:i], in[i:])
				if err != nil {
					t.Fatalf("split %d: %v", i, err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("split %d: got %d events %+q, want %d", i, len(got), got, len(tt.want))
				}
				var all []byte
				for j, ev := range got {
					w := tt.want[j]
					if ev.Name != w.Name || ev.ID != w.ID || !bytes.Equal(ev.Data, w.Data) || (ev.Data == nil) != (w.Data == nil) {
						t.Fatalf("split %d: event %d = %+q, want %+q", i, j, ev, w)
					}
					all = append(all, ev.Raw...)
				}
				if string(pending) != tt.pending {
					t.Fatalf("split %d: pending = %q, want %q", i, pending, tt.pending)
				}
				if string(append(all, pending...)) != tt.in {
					t.Fatalf("split %d: Raw + Pending = %q, want %q", i, append(all, pending...), tt.in)
				}
			}
		})
	}
}

func TestSSEParserTooLarge(t *testing.T) {
	t.Parallel()
	big := "data: " + strings.Repeat("x", 200) + "\n\n"
	tests := []struct {
		name   string
		chunks []string
		max    int
		events int // events emitted before the error
	}{
		{"complete event in one chunk", []string{"data: ok\n\n" + big}, 100, 1},
		{"unterminated growth", []string{"data: ", strings.Repeat("y", 60), strings.Repeat("y", 60)}, 100, 0},
		{"byte at a time", strings.Split(big, ""), 100, 0},
		{"default limit", []string{"data: " + strings.Repeat("z", DefaultMaxEventBytes+10)}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := SSEParser{MaxEventBytes: tt.max}
			n := 0
			var err error
			for _, c := range tt.chunks {
				if err = p.Feed([]byte(c), func(Event) error { n++; return nil }); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrEventTooLarge) {
				t.Fatalf("err = %v, want ErrEventTooLarge", err)
			}
			if n != tt.events {
				t.Errorf("emitted %d events, want %d", n, tt.events)
			}
			limit := tt.max
			if limit == 0 {
				limit = DefaultMaxEventBytes
			}
			if len(p.buf) > limit+feedPiece {
				t.Errorf("parser holds %d bytes, bound is %d", len(p.buf), limit+feedPiece)
			}
			if err2 := p.Feed([]byte("data: x\n\n"), func(Event) error { return nil }); !errors.Is(err2, ErrEventTooLarge) {
				t.Errorf("later Feed err = %v, want the sticky error", err2)
			}
		})
	}
}

func TestSSEParserEmitError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	var p SSEParser
	n := 0
	err := p.Feed([]byte("data: 1\n\ndata: 2\n\n"), func(Event) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Feed = %v after %d events, want stop after 1", err, n)
	}
	if err := p.Feed([]byte("data: 3\n\n"), func(Event) error { n++; return nil }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("later Feed = %v, n = %d; want sticky stop", err, n)
	}
}

func TestEventEncode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"data only", Event{Data: []byte(`{"a":1}`)}, "data: {\"a\":1}\n\n"},
		{"name id data", Event{Name: "message_stop", ID: "7", Data: []byte(`{}`)}, "event: message_stop\nid: 7\ndata: {}\n\n"},
		{"multi-line data", Event{Data: []byte("a\nb\r\nc\rd")}, "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"empty data", Event{Data: []byte{}}, "data: \n\n"},
		{"no fields", Event{}, "\n"},
		{"line breaks in name dropped", Event{Name: "a\nb", Data: []byte("x")}, "event: ab\ndata: x\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.ev.Encode()
			if string(got) != tt.want {
				t.Fatalf("Encode = %q, want %q", got, tt.want)
			}
			evs, _, err := feedAll(t, 0, got)
			if err != nil || len(evs) != 1 {
				t.Fatalf("re-parse: %v, %d events", err, len(evs))
			}
			if evs[0].Name != strings.NewReplacer("\n", "", "\r", "").Replace(tt.ev.Name) || evs[0].ID != tt.ev.ID {
				t.Errorf("re-parsed %+q", evs[0])
			}
			if want := bytes.NewBuffer(nil); tt.ev.Data != nil {
				want.WriteString(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(tt.ev.Data)))
				if !bytes.Equal(evs[0].Data, want.Bytes()) {
					t.Errorf("re-parsed data %q, want %q", evs[0].Data, want.Bytes())
				}
			}
		})
	}
}
