package labelcap

import (
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestSetCapsDistinctValues(t *testing.T) {
	t.Parallel()
	var s Set
	var wg sync.WaitGroup
	got := make([]map[string]int, 4)
	for g := range got {
		got[g] = map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 * MaxValues {
				got[g][s.Value("reason_"+strconv.Itoa(i%(2*MaxValues)))]++
			}
		}()
	}
	wg.Wait()
	distinct := map[string]bool{}
	for _, m := range got {
		for v := range m {
			distinct[v] = true
		}
	}
	if len(distinct) != MaxValues+1 || !distinct[Other] {
		t.Fatalf("%d distinct label values (other present: %v), want %d and other", len(distinct), distinct[Other], MaxValues+1)
	}
	// An admitted value stays admitted; a new one after the cap is Other.
	for v := range distinct {
		if v != Other && s.Value(v) != v {
			t.Errorf("admitted %q later mapped to %q", v, s.Value(v))
		}
	}
	if got := s.Value("brand_new"); got != Other {
		t.Errorf("Value(new past the cap) = %q, want %q", got, Other)
	}
}

func TestSetRejectsLongValues(t *testing.T) {
	t.Parallel()
	var s Set
	if got := s.Value(strings.Repeat("a", MaxLen+1)); got != Other {
		t.Errorf("Value(too long) = %q, want %q", got, Other)
	}
	if got := s.Value(strings.Repeat("a", MaxLen)); got == Other {
		t.Errorf("Value(MaxLen bytes) = %q, want it kept", got)
	}
}
