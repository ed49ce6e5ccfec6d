package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestFirstMissed: a run names the lost documents sent first, earliest
// first, at most maxMissing of them, whatever order it found them in.
func TestFirstMissed(t *testing.T) {
	if got := firstMissed(nil); len(got) != 0 {
		t.Fatalf("nothing lost, named %q", got)
	}
	t0 := time.Now()
	var lost, want []missed
	for i := range maxMissing + 5 {
		lost = append(lost, missed{t0.Add(time.Duration(i) * time.Millisecond), fmt.Sprintf("doc %02d", i)})
	}
	want = slices.Clone(lost[:maxMissing])
	rand.Shuffle(len(lost), func(i, j int) { lost[i], lost[j] = lost[j], lost[i] })
	got := firstMissed(lost)
	if len(got) != maxMissing {
		t.Fatalf("named %d, want %d", len(got), maxMissing)
	}
	for i, m := range want {
		if got[i] != m.what {
			t.Fatalf("named %q; want the first %d sent, in order", got, maxMissing)
		}
	}
}
