package bench

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSettleCPU: the idle measurement waits while the hub's CPU is still
// falling after registration, stops at the first window that is not
// clearly lower than the one before, and never waits past its bound.
func TestSettleCPU(t *testing.T) {
	const w = 5 * time.Second
	samples := func(cs ...float64) func(context.Context, time.Duration) (float64, error) {
		i := 0
		return func(_ context.Context, d time.Duration) (float64, error) {
			if d != w {
				t.Fatalf("window %v, want %v", d, w)
			}
			c := cs[min(i, len(cs)-1)]
			i++
			return c, nil
		}
	}
	for _, tc := range []struct {
		name string
		cpu  []float64
		want time.Duration
	}{
		{"falling, then flat", []float64{0.30, 0.20, 0.10, 0.095}, 4 * w},
		{"flat at once", []float64{0.02, 0.02}, 2 * w},
		{"a rise ends the fall", []float64{0.10, 0.05, 0.09}, 3 * w},
		{"never settles", []float64{1, 0.8, 0.64, 0.51, 0.41, 0.33, 0.26, 0.21, 0.17, 0.13}, 6 * w},
	} {
		got, err := settleCPU(context.Background(), w, 6*w, samples(tc.cpu...))
		if err != nil || got != tc.want {
			t.Errorf("%s: waited %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	boom := errors.New("no /proc")
	if _, err := settleCPU(context.Background(), w, 6*w, func(context.Context, time.Duration) (float64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("a failed sample: %v, want it returned", err)
	}
}

// TestTailOf: the deliveries over p99 are counted by the second their
// documents were sent in; a stall shows as one second holding most.
func TestTailOf(t *testing.T) {
	ms := time.Millisecond
	var sent, took []time.Duration
	for i := range 100 { // one delivery every 100 ms over 10 s, 20 ms each
		sent = append(sent, time.Duration(i)*100*ms)
		took = append(took, 20*ms)
	}
	if got := tailOf(sent, took, 20*ms); got != nil {
		t.Fatalf("nothing over p99: %+v", got)
	}
	// A stall in second 4: five deliveries sent then took 300-700 ms; one
	// slow delivery in second 8.
	for i := 40; i < 45; i++ {
		took[i] = time.Duration(300+100*(i-40)) * ms
	}
	took[81] = 150 * ms
	got := tailOf(sent, took, 20*ms)
	if got == nil || got.Over != 6 || got.Seconds != 2 || len(got.Worst) != 2 {
		t.Fatalf("got %+v, want 6 over p99 in 2 seconds", got)
	}
	if w := got.Worst[0]; w.At != 4*time.Second || w.Over != 5 || w.Max != 700*ms {
		t.Fatalf("worst second %+v, want 4s with 5, max 700ms", w)
	}
	if w := got.Worst[1]; w.At != 8*time.Second || w.Over != 1 || w.Max != 150*ms {
		t.Fatalf("second worst %+v, want 8s with 1, max 150ms", w)
	}
	// Spread: one slow delivery in each of 5 seconds; at most 3 listed,
	// the earliest first among equals.
	for i := range took {
		took[i] = 20 * ms
	}
	for _, i := range []int{5, 15, 25, 35, 45} {
		took[i] = 90 * ms
	}
	got = tailOf(sent, took, 20*ms)
	if got.Over != 5 || got.Seconds != 5 || len(got.Worst) != 3 || got.Worst[0].At != 0 || got.Worst[2].At != 2*time.Second {
		t.Fatalf("spread: %+v", got)
	}
}
