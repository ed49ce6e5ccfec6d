package bench

import (
	"math"
	"testing"
	"time"
)

// TestSideBySide: two runs made at once are compared over the seconds both
// were sending, from the later start to the earlier end; the slower run's
// seconds alone, after the faster one is done, do not count.
func TestSideBySide(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	run := func(start time.Time, perSec, n int) *Result {
		r := &Result{start: start}
		for i := 1; i <= n; i++ {
			r.acceptedAt = append(r.acceptedAt, start.Add(time.Duration(i)*time.Second/time.Duration(perSec)))
		}
		return r
	}
	fast := run(t0, 100, 1000)                          // done at 10 s
	slow := run(t0.Add(500*time.Millisecond), 50, 1000) // started half a second later, done at 20.5 s
	a, b, w := SideBySide(fast, slow)
	if w != 9500*time.Millisecond {
		t.Fatalf("window %v, want 9.5s: from the later start to the earlier end", w)
	}
	if math.Abs(a-100) > 0.2 || math.Abs(b-50) > 0.2 {
		t.Fatalf("rates %.2f and %.2f, want 100 and 50", a, b)
	}
	if _, _, w := SideBySide(fast, &Result{start: t0}); w != 0 {
		t.Fatalf("a run that accepted nothing: window %v", w)
	}
}
