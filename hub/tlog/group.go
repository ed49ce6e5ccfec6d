package tlog

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/transparency-dev/tessera"
)

// group commits appends: the entries that arrive while a write is in
// progress are handed to tessera together, as one batch, once it is done.
// Each batch costs at least one sync (tessera's POSIX driver syncs about
// eight files per batch, the journal one): behind a slow disk,
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
// While the hub is busy, BatchInterval paces the writes: the next batch
// starts no sooner than that after the previous one started. A write costs
// about the same CPU (system calls, syncs) whatever its size, so the pace
// trades at most BatchInterval of wait per entry for fewer, larger writes:
// worth it only while CPU is what the hub lacks (cpuGauge), not on a hub
// with CPU to spare, where the wait would be latency for nothing.
type group struct {
	add    tessera.AddFn
	off    bool          // hand each entry over at once (BenchmarkAppendRate compares)
	linger time.Duration // how long a batch started on an idle log gathers
	max    int           // most entries handed over at once (BatchMaxSize)
	pace   time.Duration // least time from one batch's start to the next's, while busy
	hot    func() bool   // whether to pace now, the hub being busy (nil: always)

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
		if rest := g.pace - time.Since(started); rest > 0 && (g.hot == nil || g.hot()) {
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

// cpuGauge tells whether CPU is what the hub lacks: whether the machine's
// CPUs (from /proc/stat: the hub shares them with whatever runs beside it)
// or, where that cannot be read, this process's share of GOMAXPROCS, were
// at least limit busy over the last quarter of a second or so. The log
// paces its writes only then.
type cpuGauge struct {
	limit float64
	mu    sync.Mutex
	at    time.Time
	used  time.Duration // this process's CPU time at at
	busy  uint64        // the machine's busy and total ticks at at
	total uint64
	hot   bool
}

// Busy implements group.hot.
func (c *cpuGauge) Busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	d := now.Sub(c.at)
	if d < 250*time.Millisecond {
		return c.hot
	}
	first := c.at.IsZero()
	c.at = now
	if busy, total, ok := machineCPU(); ok {
		if !first && total > c.total {
			c.hot = float64(busy-c.busy) >= c.limit*float64(total-c.total)
		}
		c.busy, c.total = busy, total
		return c.hot
	}
	used := processCPU()
	if !first && used > 0 {
		c.hot = float64(used-c.used) >= c.limit*float64(d)*float64(runtime.GOMAXPROCS(0))
	}
	c.used = used
	return c.hot
}

// busyCPU is the share of the CPUs above which the hub counts as busy.
const busyCPU = 0.8

// machineCPU reads the machine's busy and total CPU ticks from /proc/stat
// (idle and iowait are not busy).
func machineCPU() (busy, total uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, v := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += n
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, total, true
}

// processCPU is the CPU time this process has used (0 if unknown).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
