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
