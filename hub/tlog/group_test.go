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
