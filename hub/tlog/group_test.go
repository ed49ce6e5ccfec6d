package tlog

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/tessera"
)

// TestGroupCutsTheBatches: what arrives while a batch is written is handed
// over together, in order, as soon as that write is done, at most
// BatchMaxSize at a time; and tessera then writes each hand-over at once
// (its age is the hand-over's millisecond), BatchMaxAge being only the
// linger of a batch started on an idle log.
func TestGroupCutsTheBatches(t *testing.T) {
	var mu sync.Mutex
	var next uint64
	var resolved int
	var seen []int // per entry handed over: how many entries were resolved then
	handed := make(chan struct{}, 16)
	release := make(chan struct{})
	add := func(_ context.Context, e *tessera.Entry) tessera.IndexFuture {
		mu.Lock()
		idx := next
		next++
		seen = append(seen, resolved)
		mu.Unlock()
		handed <- struct{}{}
		return func() (tessera.Index, error) {
			if idx == 0 {
				<-release // the first write takes a while
			}
			mu.Lock()
			resolved++
			mu.Unlock()
			return tessera.Index{Index: idx}, nil
		}
	}
	g := &group{add: add, max: 3}
	ctx := context.Background()
	waits := []func() (tessera.Index, error){g.Add(ctx, tessera.NewEntry([]byte("0")))}
	<-handed // the first batch, alone, is being written
	for i := 1; i <= 5; i++ {
		waits = append(waits, g.Add(ctx, tessera.NewEntry([]byte{byte('0' + i)})))
	}
	close(release)
	for i, w := range waits {
		idx, err := w()
		if err != nil || idx.Index != uint64(i) {
			t.Fatalf("entry %d: index %d, %v: want %d in the order added", i, idx.Index, err, i)
		}
	}
	g.wait()
	// {0} alone; {1,2,3} handed over once 0 was written; {4,5} once those were.
	if want := []int{0, 1, 1, 1, 4, 4}; !slices.Equal(seen, want) {
		t.Fatalf("hand-overs saw %v entries resolved, want %v: batches {0} {1,2,3} {4,5}", seen, want)
	}

	cfg := Config{BatchMaxAge: 50 * time.Millisecond}
	if age, linger := batching(cfg); age != handover || linger != 50*time.Millisecond {
		t.Fatalf("grouped: tessera's age %s, linger %s: want %s and batch_max_age", age, linger, handover)
	}
	groupCuts = false
	defer func() { groupCuts = true }()
	if age, linger := batching(cfg); age != 50*time.Millisecond || linger != 0 {
		t.Fatalf("tessera cutting: age %s, linger %s", age, linger)
	}
}

// TestGroupPacesABusyLog: with BatchInterval, a busy log starts a batch no
// sooner than the interval after the previous one started, and everything
// that arrived meanwhile goes into it; nothing is lost or reordered.
func TestGroupPacesABusyLog(t *testing.T) {
	const pace = 30 * time.Millisecond
	var mu sync.Mutex
	var next uint64
	var starts []time.Time // when each batch's first entry was handed over
	fresh := true          // the next hand-over starts a batch: the last one's were resolved
	add := func(_ context.Context, e *tessera.Entry) tessera.IndexFuture {
		mu.Lock()
		idx := next
		next++
		if fresh {
			starts = append(starts, time.Now())
			fresh = false
		}
		mu.Unlock()
		return func() (tessera.Index, error) {
			mu.Lock()
			fresh = true
			mu.Unlock()
			return tessera.Index{Index: idx}, nil
		}
	}
	g := &group{add: add, max: 256, pace: pace}
	ctx := context.Background()
	var waits []func() (tessera.Index, error)
	for end := time.Now().Add(10 * pace); time.Now().Before(end); {
		waits = append(waits, g.Add(ctx, tessera.NewEntry([]byte("e"))))
		time.Sleep(time.Millisecond)
	}
	for i, w := range waits {
		if idx, err := w(); err != nil || idx.Index != uint64(i) {
			t.Fatalf("entry %d: index %d, %v: want %d in the order added", i, idx.Index, err, i)
		}
	}
	g.wait()
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < pace {
			t.Fatalf("batch %d started %s after the previous one, want at least %s", i, gap, pace)
		}
	}
	if len(starts) > 12 || len(waits) < 2*len(starts) {
		t.Fatalf("%d entries in %d batches over %s: want at most 12, larger than one or two entries", len(waits), len(starts), 10*pace)
	}
}
