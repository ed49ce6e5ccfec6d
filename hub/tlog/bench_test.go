package tlog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures Append throughput on each storage (tessera's
// POSIX driver, the journal) in a temp dir with many concurrent appenders,
// as the hub's pipeline workers would be. Each Append returns once its
// entry is durably sequenced (fsynced). Reports entries/s and the
// process's CPU per entry.
//
//	go test ./hub/tlog -run '^$' -bench 'Append$' -benchtime 5000x
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name   string
		maxAge time.Duration
		par    int
	}{
		{"batch256-10ms-par8", 10 * time.Millisecond, 8}, // the pipeline's 4 workers per core, here
		{"batch256-100ms-par64", 100 * time.Millisecond, 64},
		{"batch256-100ms-par512", 100 * time.Millisecond, 512},
		{"batch256-10ms-par512", 10 * time.Millisecond, 512},
	} {
		for _, store := range []struct {
			name string
			open func(context.Context, string) (Backend, error)
		}{{"posix", POSIX}, {"journal", Journal}} {
			b.Run(store.name+"/"+bc.name, func(b *testing.B) {
				s, v, _, err := ParseKey(newKey(b))
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				be, err := store.open(ctx, b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				l, err := Open(ctx, Config{BatchMaxAge: bc.maxAge}, be, Deps{Signer: s, Verifier: v})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close(ctx)
				var next atomic.Int64
				b.SetParallelism((bc.par + 1) / 2) // 2 cores here: par goroutines in all
				b.ResetTimer()
				start, cpu := time.Now(), processCPU()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := l.Append(ctx, entry(int(next.Add(1)), "bench")); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
				b.ReportMetric(float64(processCPU()-cpu)/1e3/float64(b.N), "cpu-µs/entry")
			})
		}
	}
}

// BenchmarkAppendRate appends at a steady rate, as a hub's decisions come,
// each decision waiting for its own entry, and reports the rate the log
// kept and the mean wait of an entry, with the hub's batch_max_age (50ms):
//
//   - ungrouped: tessera cuts a batch every BatchMaxAge however slow its
//     writes are, and a slow disk holds the log to one entry per write;
//
//   - grouped, tessera's age: what arrives during a write is handed over
//     together, and tessera holds it BatchMaxAge more (before i11-cost);
//
//   - grouped: the group cuts the batches, written as soon as the previous
//     one is done; only an entry finding the log idle waits BatchMaxAge.
//
//     go test ./hub/tlog -run '^$' -bench AppendRate -benchtime 1x
func BenchmarkAppendRate(b *testing.B) {
	for _, mode := range []struct {
		name          string
		grouped, cuts bool
	}{{"ungrouped", false, false}, {"grouped-tessera-age", true, false}, {"grouped", true, true}} {
		for _, rate := range []int{50, 200} {
			b.Run(fmt.Sprintf("%s/rate=%d", mode.name, rate), func(b *testing.B) {
				groupCommit, groupCuts = mode.grouped, mode.cuts
				defer func() { groupCommit, groupCuts = true, true }()
				s, v, _, err := ParseKey(newKey(b))
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				be, err := POSIX(ctx, b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				l, err := Open(ctx, Config{BatchMaxAge: 50 * time.Millisecond}, be, Deps{Signer: s, Verifier: v})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close(ctx)
				n := 2 * rate // two seconds of decisions
				var wg sync.WaitGroup
				var waited atomic.Int64
				tick := time.NewTicker(time.Second / time.Duration(rate))
				defer tick.Stop()
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < n*b.N; i++ {
					<-tick.C
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						t0 := time.Now()
						if _, err := l.Append(ctx, entry(i, "rate")); err != nil {
							b.Error(err)
						}
						waited.Add(int64(time.Since(t0)))
					}(i)
				}
				wg.Wait()
				el := time.Since(start)
				b.ReportMetric(float64(n*b.N)/el.Seconds(), "entries/s")
				b.ReportMetric(float64(waited.Load())/float64(n*b.N)/1e6, "ms/wait")
			})
		}
	}
}
