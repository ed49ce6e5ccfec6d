package tlog

import (
	"context"
	"sync"

	"github.com/transparency-dev/tessera"
)

// group commits appends: the entries that arrive while a write is in
// progress are handed to tessera together, as one batch, once it is done.
// Tessera cuts a batch every BatchMaxAge whatever its writer's pace, and
// its POSIX writer syncs about eight files per batch: behind a slow disk,
// batches of one entry would queue up and the log would append no faster
// than one entry per write. Grouped, a batch holds everything that came
// during the previous write, so the log keeps up with any rate its disk
// allows, and an entry on an idle log waits BatchMaxAge and one write.
type group struct {
	add tessera.AddFn
	off bool // hand each entry over at once (BenchmarkAppendRate compares)

	mu    sync.Mutex
	queue []pending
	busy  bool
	idle  sync.WaitGroup // held while a writer goroutine runs
}

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
	for {
		g.mu.Lock()
		batch := g.queue
		g.queue = nil
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
	}
}

// groupCommit: Open groups appends (off only in a benchmark).
var groupCommit = true

// wait returns once nothing is queued or being handed over.
func (g *group) wait() { g.idle.Wait() }
