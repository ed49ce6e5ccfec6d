package tlog

import (
	"context"
	"runtime"
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

// TestGroupPacesABusyLog: with BatchInterval, a busy hub's log starts a
// batch no sooner than the interval after the previous one started, and
// everything that arrived meanwhile goes into it; nothing is lost or
// reordered. A hub that is not busy is not paced.
func TestGroupPacesABusyLog(t *testing.T) {
	if n := paced(t, true); n > 12 {
		t.Fatalf("busy: %d batches over %s, want at most 12", n, 10*30*time.Millisecond)
	}
	if n := paced(t, false); n <= 12 {
		t.Fatalf("not busy: %d batches over %s, want more than 12: paced for nothing", n, 10*30*time.Millisecond)
	}
}

// paced feeds a group with BatchInterval 30ms an entry a millisecond for
// ten intervals, busy or not, and returns how many batches it wrote.
func paced(t *testing.T, busy bool) int {
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
	g := &group{add: add, max: 256, pace: pace, hot: func() bool { return busy }}
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
	for i := 1; busy && i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < pace {
			t.Fatalf("batch %d started %s after the previous one, want at least %s", i, gap, pace)
		}
	}
	return len(starts)
}

// TestCPUGauge: spinning on every CPU makes the hub busy; asleep, with the
// machine quiet, it is not. (The bar is a fifth of the CPUs here, not
// busyCPU: a test machine running other tests at once may give the spinning
// goroutines no more; and asleep is only checked on a quiet machine.)
func TestCPUGauge(t *testing.T) {
	g := &cpuGauge{limit: 0.2}
	g.Busy()
	b0, t0, ok := machineCPU()
	time.Sleep(300 * time.Millisecond)
	asleep := g.Busy()
	if b1, t1, _ := machineCPU(); ok && t1 > t0 && float64(b1-b0) < 0.1*float64(t1-t0) && asleep {
		t.Fatal("busy while asleep on a quiet machine")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	busy := g.Busy()
	close(stop)
	wg.Wait()
	if !busy {
		t.Fatal("not busy while spinning on every CPU")
	}
}
