package tlog

import (
	"context"
	"sync"
	"time"

	"github.com/transparency-dev/tessera"
)

// group commits appends: the entries that arrive while a write is in
// progress are handed to tessera together, as one batch, once it is done.
// Its POSIX writer syncs about eight files per batch: behind a slow disk,
// batches of one entry would queue up and the log would append no faster
// than one entry per write. Grouped, a batch holds everything that came
// during the previous write, so the log keeps up with any rate its disk
// allows.
//
// The group, not tessera's timer, cuts the batches: tessera is opened with
// a hand-over age of a millisecond (handover), so that a batch is written
// as soon as the previous one is done. An entry that finds the log idle
// waits BatchMaxAge for others to join it (linger); one that arrives during
// a write waits for that write and its own, never BatchMaxAge on top: on a
// busy log the age only added to every entry's wait (a worker's decision
// waits for its entry), without making the batches any larger.
//
// On a busy log, BatchInterval paces the writes: the next batch starts no
// sooner than that after the previous one started. A write costs about the
// same CPU (system calls, syncs) whatever its size, so the pace trades at
// most BatchInterval of wait per entry for fewer, larger writes.
type group struct {
	add    tessera.AddFn
	off    bool          // hand each entry over at once (BenchmarkAppendRate compares)
	linger time.Duration // how long a batch started on an idle log gathers
	max    int           // most entries handed over at once (BatchMaxSize)
	pace   time.Duration // least time from one batch's start to the next's

	mu    sync.Mutex
	queue []pending
	busy  bool
	idle  sync.WaitGroup // held while a writer goroutine runs
}

// handover is tessera's batch age when the group cuts the batches: the
// group hands a batch over in one go, and tessera writes it a moment later.
const handover = time.Millisecond

type pending struct {
	ctx  context.Context
	e    *tessera.Entry
	done chan addResult
}

type addResult struct {
	idx tessera.Index
	err error
}

// Add queues e and returns the wait for its index. Entries are handed to
// tessera in the order Add is called.
func (g *group) Add(ctx context.Context, e *tessera.Entry) func() (tessera.Index, error) {
	if g.off {
		return g.add(ctx, e)
	}
	p := pending{ctx: ctx, e: e, done: make(chan addResult, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	start := !g.busy
	if start {
		g.busy = true
		g.idle.Add(1)
	}
	g.mu.Unlock()
	if start {
		go g.run()
	}
	return func() (tessera.Index, error) {
		r := <-p.done
		return r.idx, r.err
	}
}

func (g *group) run() {
	defer g.idle.Done()
	if g.linger > 0 {
		// Started on an idle log: let others join the first batch.
		time.Sleep(g.linger)
	}
	for {
		started := time.Now()
		g.mu.Lock()
		batch := g.queue
		if g.max > 0 && len(batch) > g.max {
			batch = batch[:g.max:g.max]
			g.queue = append([]pending(nil), g.queue[g.max:]...)
		} else {
			g.queue = nil
		}
		if len(batch) == 0 {
			g.busy = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		futures := make([]tessera.IndexFuture, len(batch))
		for i, p := range batch {
			futures[i] = g.add(p.ctx, p.e)
		}
		for i, f := range futures {
			idx, err := f()
			batch[i].done <- addResult{idx, err}
		}
		if rest := g.pace - time.Since(started); rest > 0 {
			time.Sleep(rest)
		}
	}
}

// batching returns tessera's batch age and the group's linger on an idle
// log for cfg: grouped, the group cuts the batches and tessera writes each
// one handed over after a millisecond; BatchMaxAge is then the idle log's
// linger only.
func batching(cfg Config) (age, linger time.Duration) {
	if groupCommit && groupCuts {
		return min(cfg.BatchMaxAge, handover), cfg.BatchMaxAge
	}
	return cfg.BatchMaxAge, 0
}

// groupCommit: Open groups appends (off only in a benchmark); groupCuts:
// the group, not tessera's timer, cuts the batches (off only in a
// benchmark: tessera then holds each grouped batch BatchMaxAge more).
var groupCommit, groupCuts = true, true

// wait returns once nothing is queued or being handed over.
func (g *group) wait() { g.idle.Wait() }
