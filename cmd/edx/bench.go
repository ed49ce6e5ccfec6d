package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/edxhub/edx/hub/bench"
	"github.com/edxhub/edx/pkg/protocol"
)

func init() {
	register(command{"bench", "measure edx end to end against the bare components, in one run", cmdBench})
}

func cmdBench(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "bench", "[--quick] [--units N] [--docs M] [--size 64KiB[,1MiB...]] [--concurrency C | --rate R] [--evidence both|on|off [--rounds R]] [--statuses] [--json]\n"+
		"       [--hub URL [--token-file F] [--units-dir DIR] [--nats URL]]")
	quick := fs.Bool("quick", false, "a smoke run of under a minute: 2 units, 300 documents of 64 KiB")
	units := fs.Int("units", 2, "units registered and connected, each with its durable consumers")
	docs := fs.Int("docs", 1000, "documents per size")
	sizes := fs.String("size", "64KiB", "payload sizes, comma-separated (4KiB,64KiB,1MiB,20MiB)")
	conc := fs.Int("concurrency", 64, "documents in flight")
	rate := fs.Float64("rate", 0, "documents per second (open loop) instead of a concurrency")
	recips := fs.Int("recipients", 3, "most recipients per document")
	hubBin := fs.String("hub-bin", "", "the edx-hub program (default: beside edx, or on PATH)")
	hubCfg := fs.String("hub-config", "", "hub configuration for an external NATS and S3 (ceilings are then not measured)")
	data := fs.String("data", "", "data directory for the hub (default: a temporary one, removed after); with several runs, one\nsubdirectory per run (SIZE-log-MODE-ROUND). Its filesystem moves the figures (the table names it): give it the kind a\ndeployment would use")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	noCeil := fs.Bool("no-ceilings", false, "skip the bare-component ceilings")
	hubURL := fs.String("hub", "", "drive this existing hub (http://host:port) instead of starting one; its resources and the ceilings are not measured")
	tokenFile := fs.String("token-file", "", "with --hub: the hub's admin token, to register the bench's units (default: $EDX_TOKEN)")
	unitsDir := fs.String("units-dir", "", "with --hub: use the units registered in DIR (DIR/ID/ as edx unit add writes them) instead of registering new ones;\nno agent may run for them meanwhile")
	natsURL := fs.String("nats", "", "the NATS URL the units connect to (default: the hub's, or the units' agent.yaml)")
	wait := fs.Duration("wait", 60*time.Second, "end a run on which nothing has moved for this long; the undecided and undelivered are counted")
	evid := fs.String("evidence", "both", "the hub's transparency log for a hub the bench starts: both (a run without it, then one with it time-stamped every second: its cost), on, off")
	sideBySide := fs.Bool("side-by-side", false, "with --evidence both: run the hubs without and with the log at the same time, each with its own units,\nand compare them over the seconds both were sending (on a shared machine both then have the same neighbours)")
	rounds := fs.Int("rounds", 1, "with --evidence both: run without and with the log this many times (every other round with it first); the cost\nreported is the median of the rounds' (one pair on a shared machine swings by more than the cost)")
	unitCons := fs.String("unit-consumers", "", "how the hub the bench starts reads its units: memory, file (a consumer per unit, its state\nin memory or a file) or cursor (none: units keep their cursors); default the hub's (memory). With\n--hub, cursor says the hub reads units by cursor")
	keepalive := fs.Duration("keepalive", 0, "the units' keepalive, as an agent's nats.keepalive (pings and pull heartbeats; 10s to 4m), and the\nping interval of the NATS server of a hub the bench starts (default: 2m, NATS's)")
	memLimit := fs.Int("hub-memory-limit", 0, "the soft memory limit of the hub the bench starts, in MiB (its memory_limit_mib; default the hub's, -1 none)")
	batchEvery := fs.Duration("log-batch-interval", 0, "with the log on: the hub's tlog.batch_interval (default: the hub's, 10ms)")
	statuses := fs.Bool("statuses", false, "each recipient reports 01 (delivered) on each delivery, as its agent does, and the run waits for every sender\nto be told: signed with the unit's key, unsigned in an --evidence off run (so that --evidence both shows the cost\nof the log, its timestamps and signed statuses together)")
	idle := fs.Duration("idle", 10*time.Second, "measure the hub's CPU this long with every unit connected and nothing sent, once its CPU has\nstopped falling after registration (0: not measured); a connected unit renews its pull every 10 minutes, with a\nheartbeat and a ping every 2: --idle 10m covers that whole cycle. With --hub, when given: every unit stays connected\nand idle this long before the documents are sent, and the output names the window (idle_window in the JSON), over\nwhich to measure the servers")
	debugLog := fs.String("debug-log", "", "write the units' debug records to FILE: by cursor, each fetch request and its answer (with the hub's\nlog at debug, how a document left unheard is traced; large: some 200 bytes a request)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	// What goes wrong with a unit on the way (a connection retried, a pull
	// started again, a document rejected) is told on stderr.
	var logTo slog.Handler = slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	if *debugLog != "" {
		f, err := os.Create(*debugLog)
		if err != nil {
			return fail(e, "%v", err)
		}
		defer f.Close()
		logTo = slog.NewMultiHandler(logTo, slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	warnLog := slog.New(logTo)
	if *quick {
		*units, *docs, *sizes, *conc = 2, 300, "64KiB", 32
	}
	var token string
	if *hubURL != "" {
		switch {
		case *tokenFile != "":
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return fail(e, "%v", err)
			}
			token = strings.TrimSpace(string(b))
		case os.Getenv("EDX_TOKEN") != "":
			token = os.Getenv("EDX_TOKEN")
		case *unitsDir == "":
			return fail(e, "--hub: the bench registers its units with the hub's admin token: give --token-file or EDX_TOKEN, or --units-dir")
		}
	} else if *unitsDir != "" || *tokenFile != "" {
		return fail(e, "--units-dir and --token-file go with --hub (an existing hub)")
	}
	if *sideBySide && (*evid != "both" || *hubURL != "") {
		return fail(e, "--side-by-side: wants --evidence both and a hub the bench starts")
	}
	if *rounds < 1 {
		return fail(e, "--rounds %d: want 1 or more", *rounds)
	}
	switch *unitCons {
	case "", "memory", "file", "cursor":
	default:
		return fail(e, "--unit-consumers %q: want memory, file or cursor", *unitCons)
	}
	if *unitCons != "" && *hubCfg != "" {
		return fail(e, "--unit-consumers goes in the bench's own hub configuration: set nats.streams.unit_consumers in --hub-config instead")
	}
	if *memLimit != 0 && (*hubCfg != "" || *hubURL != "") {
		return fail(e, "--hub-memory-limit: for a hub the bench starts with its own configuration (set memory_limit_mib in --hub-config instead)")
	}
	if k := *keepalive; k != 0 && (k < protocol.MinUnitKeepalive || k > protocol.MaxUnitKeepalive) {
		return fail(e, "--keepalive %s: want %s to %s", k, protocol.MinUnitKeepalive, protocol.MaxUnitKeepalive)
	}
	modes := map[string][]string{"both": {"off", "on"}, "on": {"on"}, "off": {"off"}}[*evid]
	switch {
	case modes == nil:
		return fail(e, "--evidence %q: want both, on or off", *evid)
	case *hubURL != "" || *hubCfg != "":
		modes = []string{""} // the hub as it is configured
	}
	if *hubBin == "" && *hubURL == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "edx-hub"); fileExists(p) {
				*hubBin = p
			}
		}
		if *hubBin == "" {
			p, err := exec.LookPath("edx-hub")
			if err != nil {
				return fail(e, "edx-hub not found beside edx nor on PATH: go build -o bin/ ./cmd/... and run bin/edx bench")
			}
			*hubBin = p
		}
	}
	var results []*bench.Result
	for _, sz := range strings.Split(*sizes, ",") {
		size, err := parseSize(sz)
		if err != nil {
			return fail(e, "--size: %v", err)
		}
		idleFor, remoteIdle := *idle, time.Duration(0)
		if idleFor == 0 {
			idleFor = -1
		}
		if *hubURL != "" && given(fs, "idle") {
			remoteIdle = *idle
		}
		var costs, cpuCosts []float64
		for round := 0; round < *rounds; round++ {
			var pair []*bench.Result
			order := modes
			if round%2 == 1 && len(modes) == 2 {
				// Every other round runs with the log first: a run leaves
				// the disk busy writing back behind it, and the run after
				// pays for it; alternating the order spreads that evenly.
				order = []string{modes[1], modes[0]}
			}
			options := func(mode string) bench.Options {
				st := ""
				if *statuses {
					st = "signed"
					if mode == "off" {
						st = "unsigned"
					}
				}
				runData := *data
				if runData != "" && (*rounds > 1 || len(modes) > 1 || strings.Contains(*sizes, ",")) {
					// Each run its own hub, so each its own directory: a
					// hub started on another run's data would inherit its
					// streams, backlog and log.
					m := mode
					if m == "" {
						m = "run"
					}
					runData = filepath.Join(runData, fmt.Sprintf("%s-log-%s-%d", sz, m, round+1))
				}
				return bench.Options{Statuses: st, Units: *units, Docs: *docs, Size: size, Concurrency: *conc, Rate: *rate, Recipients: *recips,
					HubBinary: *hubBin, HubConfig: *hubCfg, Data: runData, Ceilings: !*noCeil && *hubURL == "" && mode != "off" && round == *rounds-1 && !*sideBySide,
					HubURL: *hubURL, Token: token, UnitsDir: *unitsDir, NATSURL: *natsURL, Wait: *wait, Evidence: mode, LogBatchInterval: *batchEvery, Idle: idleFor, RemoteIdle: remoteIdle, Keepalive: *keepalive, UnitConsumers: *unitCons, HubMemoryLimitMiB: *memLimit,
					Log: warnLog}
			}
			if *sideBySide {
				fmt.Fprintf(e.stderr, "%s round %d/%d: the hubs without and with the log, side by side...\n", sz, round+1, *rounds)
				ready := make(chan struct{}, 2)
				res := make([]*bench.Result, 2)
				errs := make([]error, 2)
				var wg sync.WaitGroup
				for i, mode := range modes {
					o := options(mode)
					o.Idle = -1 // the other hub registering its units would count
					o.Ready = func(ctx context.Context) error {
						ready <- struct{}{}
						for len(ready) < 2 {
							if ctx.Err() != nil {
								return ctx.Err()
							}
							time.Sleep(time.Millisecond)
						}
						return nil
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						res[i], errs[i] = bench.Run(ctx, o)
						if errs[i] != nil {
							select {
							case ready <- struct{}{}: // release the other run, if it waits
							default: // both were ready before this one failed
							}
						}
					}()
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					return fail(e, "bench: %v", err)
				}
				for _, r := range res {
					results = append(results, r)
					pair = append(pair, r)
					if !*asJSON {
						printBench(e.stdout, r)
					}
				}
			}
			for _, mode := range order {
				if *sideBySide {
					break
				}
				var bar *progressbar.ProgressBar
				var barMu sync.Mutex // the bench reports progress from several goroutines
				stage := ""
				label := sz
				if mode != "" {
					label += " log " + mode
				}
				if *rounds > 1 {
					label += fmt.Sprintf(" %d/%d", round+1, *rounds)
				}
				o := options(mode)
				o.Progress = func(s string, done, total int) {
					barMu.Lock()
					defer barMu.Unlock()
					if s != stage {
						if bar != nil {
							bar.Finish()
						}
						stage = s
						bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionShowCount(),
							progressbar.OptionSetDescription(fmt.Sprintf("%-24s", label+" "+s)), progressbar.OptionThrottle(200*time.Millisecond),
							progressbar.OptionClearOnFinish())
					}
					bar.Set(done)
				}
				res, err := bench.Run(ctx, o)
				if bar != nil {
					bar.Finish()
				}
				if err != nil {
					return fail(e, "bench: %v", err)
				}
				results = append(results, res)
				pair = append(pair, res)
				if !*asJSON {
					printBench(e.stdout, res)
				}
			}
			if len(pair) == 2 && pair[0].Evidence == "on" {
				pair[0], pair[1] = pair[1], pair[0] // without the log, then with it
			}
			if len(pair) == 2 && *sideBySide {
				off, on, window := bench.SideBySide(pair[0], pair[1])
				if off > 0 {
					costs = append(costs, 100*(off-on)/off)
				}
				if a, b := pair[0].HubCPUPerDoc, pair[1].HubCPUPerDoc; a > 0 {
					cpuCosts = append(cpuCosts, -100*(float64(b)-float64(a))/float64(a))
				}
				if !*asJSON {
					printSideBySide(e.stdout, pair[0], pair[1], off, on, window)
				}
			} else if len(pair) == 2 {
				if !*asJSON {
					printEvidenceCost(e.stdout, pair[0], pair[1])
				}
				if pair[0].DocsPerSec > 0 {
					costs = append(costs, 100*(pair[0].DocsPerSec-pair[1].DocsPerSec)/pair[0].DocsPerSec)
				}
				if pair[0].HubMeasured && pair[1].HubMeasured {
					a, b := pair[0].HubCPUPerDoc+pair[0].AgentsCPUPerDoc, pair[1].HubCPUPerDoc+pair[1].AgentsCPUPerDoc
					cpuCosts = append(cpuCosts, -100*(float64(b)-float64(a))/float64(a))
				}
			}
		}
		if len(costs) > 1 && !*asJSON {
			printMedianCost(e.stdout, sz, "throughput", costs)
		}
		if len(cpuCosts) > 1 && !*asJSON {
			what := "CPU per document (hub and agents)"
			if *sideBySide {
				what = "hub CPU per document"
			}
			printMedianCost(e.stdout, sz, what, cpuCosts)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(results)
	}
	for _, r := range results {
		if r.Lost > 0 || r.Doubled > 0 || r.Rejected > 0 || r.StatusesMissing > 0 {
			fmt.Fprintf(e.stderr, "edx bench: %d lost (%d undecided, %d undelivered), %d doubled, %d rejected, %d statuses not told to their senders\n",
				r.Lost, r.Undecided, r.Undelivered, r.Doubled, r.Rejected, r.StatusesMissing)
			for _, m := range r.Missing {
				fmt.Fprintf(e.stderr, "edx bench:   %s\n", m)
			}
			return exitInvalid
		}
	}
	return exitOK
}

// printSideBySide compares two runs made side by side over the seconds
// both were sending (bench.SideBySide).
func printSideBySide(w io.Writer, off, on *bench.Result, offRate, onRate float64, window time.Duration) {
	cost := 0.0
	if offRate > 0 {
		cost = -100 * (offRate - onRate) / offRate
	}
	what := "the log"
	if on.Statuses != "" {
		what = "the log and signed statuses"
	}
	fmt.Fprintf(w, "\nevidence at %s, side by side over the %.1fs both were sending: %.1f docs/s without %s, %.1f with: %+.1f%% throughput\n",
		humanSize(on.Size), window.Seconds(), offRate, what, onRate, cost)
	if off.HubCPUPerDoc > 0 {
		fmt.Fprintf(w, "hub CPU per document: %s without, %s with: %+.1f%% (the bench's own CPU is the two runs' together)\n",
			ms(off.HubCPUPerDoc), ms(on.HubCPUPerDoc), 100*(float64(on.HubCPUPerDoc)-float64(off.HubCPUPerDoc))/float64(off.HubCPUPerDoc))
	}
	fmt.Fprintf(w, "log: %d entries appended, %.1f/s over the run, %s mean wait from append to durably sequenced\n",
		on.LogEntries, on.LogAppendsPerSec, ms(on.LogAppendMean))
}

// printEvidenceCost compares a run without the transparency log and one
// with it.
func printEvidenceCost(w io.Writer, off, on *bench.Result) {
	cost := 0.0
	if off.DocsPerSec > 0 {
		cost = 100 * (off.DocsPerSec - on.DocsPerSec) / off.DocsPerSec
	}
	what := "the log"
	if on.Statuses != "" {
		what = "the log and signed statuses"
	}
	fmt.Fprintf(w, "\nevidence at %s: %.1f docs/s without %s, %.1f with (time-stamped every second): %+.1f%% throughput; "+
		"p50 submit → accepted %s without, %s with\n", humanSize(on.Size), off.DocsPerSec, what, on.DocsPerSec, -cost, ms(off.Accepted.P50), ms(on.Accepted.P50))
	if off.HubMeasured && on.HubMeasured {
		a, b := off.HubCPUPerDoc+off.AgentsCPUPerDoc, on.HubCPUPerDoc+on.AgentsCPUPerDoc
		fmt.Fprintf(w, "CPU per document, hub and agents: %.2f ms without, %.2f ms with: %+.1f%% (the machine's share of the cost)\n",
			float64(a)/1e6, float64(b)/1e6, 100*(float64(b)-float64(a))/float64(a))
	}
	fmt.Fprintf(w, "log: %d entries appended, %.1f/s over the run, %s mean wait from append to durably sequenced\n",
		on.LogEntries, on.LogAppendsPerSec, ms(on.LogAppendMean))
}

// printMedianCost reports the evidence cost over several rounds, of
// throughput (costs: the share lost) or CPU (the share spent more,
// negated).
func printMedianCost(w io.Writer, size, what string, costs []float64) {
	sorted := append([]float64(nil), costs...)
	sort.Float64s(sorted)
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	parts := make([]string, len(costs))
	for i, c := range costs {
		parts[i] = fmt.Sprintf("%+.1f%%", -c)
	}
	fmt.Fprintf(w, "\nevidence at %s over %d rounds: median %+.1f%% %s (rounds: %s)\n", size, len(costs), -med, what, strings.Join(parts, ", "))
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func parseSize(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	for suf, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "K": 1 << 10, "M": 1 << 20} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a size such as 64KiB", s)
	}
	return n * mult, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/1e6) }

func printBench(w io.Writer, r *bench.Result) {
	mode := fmt.Sprintf("concurrency %d", r.Concurrency)
	if r.Rate > 0 {
		mode = fmt.Sprintf("rate %.0f/s", r.Rate)
	}
	where := "an edx-hub of its own"
	if r.Hub != "" {
		where = r.Hub
	}
	switch r.Evidence {
	case "on":
		where += ", transparency log on (time-stamped every second)"
	case "off":
		where += ", transparency log off"
	}
	fmt.Fprintf(w, "\nedx bench: %d documents of %s, %d units, %s, %d deliveries — %d cores — %s\n",
		r.Docs, humanSize(r.Size), r.Units, mode, r.Deliveries, runtime.NumCPU(), where)
	tw := tabwriter.NewWriter(w, 4, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tdocs/s\tMB/s\tp50\tp90\tp99\tmax\t")
	fmt.Fprintf(tw, "edx submit → accepted\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t\n", r.DocsPerSec, r.MBPerSec, ms(r.Accepted.P50), ms(r.Accepted.P90), ms(r.Accepted.P99), ms(r.Accepted.Max))
	fmt.Fprintf(tw, "edx submit → delivered\t\t\t%s\t%s\t%s\t%s\t\n", ms(r.Delivered.P50), ms(r.Delivered.P90), ms(r.Delivered.P99), ms(r.Delivered.Max))
	if r.Statuses != "" {
		fmt.Fprintf(tw, "edx submit → %s 01 told to sender\t\t\t%s\t%s\t%s\t%s\t\n", r.Statuses, ms(r.Status.P50), ms(r.Status.P90), ms(r.Status.P99), ms(r.Status.Max))
	}
	for _, c := range r.Ceilings {
		fmt.Fprintf(tw, "ceiling: %s\t%.1f\t%.1f\t\t\t\t\t\n", c.Name, c.DocsPerSec, c.MBPerSec)
	}
	if r.Bound > 0 {
		fmt.Fprintf(tw, "summed-parts bound\t%.1f\t%.1f\t\t\t\t\t\n", r.Bound, r.Bound*float64(r.Size)/1e6)
	}
	tw.Flush()
	if t := r.DeliveredTail; t != nil {
		var ws []string
		for _, s := range t.Worst {
			ws = append(ws, fmt.Sprintf("%s (%d, max %s)", s.At, s.Over, ms(s.Max)))
		}
		fmt.Fprintf(w, "delivery tail: %d deliveries over p99, sent in %d seconds of the run; most at %s\n", t.Over, t.Seconds, strings.Join(ws, ", "))
	}
	if r.Slowest != "" {
		fmt.Fprintf(w, "edx / slowest ceiling (%s): %.2f\n", r.Slowest, r.Ratio)
	}
	if r.Bound > 0 {
		fmt.Fprintf(w, "edx / summed-parts bound: %.2f\n", r.RatioToBound)
	}
	if len(r.Parts) > 0 {
		var ps []string
		for _, p := range r.Parts {
			ps = append(ps, fmt.Sprintf("%s %.2f", p.Name, p.PerDoc))
		}
		fmt.Fprintf(w, "per document: %s\n", strings.Join(ps, ", "))
	}
	if r.HubMeasured {
		fmt.Fprintf(w, "hub: peak RSS %s (now %s), CPU %.2f ms per document (the bench's agents and load: %.2f ms)\n",
			humanSize(int(r.HubPeakRSS)), humanSize(int(r.HubRSS)), float64(r.HubCPUPerDoc)/1e6, float64(r.AgentsCPUPerDoc)/1e6)
		if r.IdleFor > 0 {
			fmt.Fprintf(w, "hub idle: %.1f%% of a core with %d units connected (over %s, once settled after %s)\n", 100*r.HubIdleCPU, r.Units, r.IdleFor, r.IdleSettled.Round(time.Second))
		}
	} else {
		fmt.Fprintf(w, "hub: RSS and CPU n/a (a hub the bench did not start); ceilings not measured\n")
		if iw := r.IdleWindow; iw != nil {
			fmt.Fprintf(w, "units idle, every one connected: %s to %s (%s)\n", iw[0].Format(time.RFC3339), iw[1].Format(time.RFC3339), iw[1].Sub(iw[0]).Round(time.Second))
		}
	}
	if r.UnitReading != "" {
		fmt.Fprintf(w, "units read by %s\n", map[string]string{"consumer": "a consumer each", "cursor": "cursor (no consumer per unit)"}[r.UnitReading])
	}
	fmt.Fprintf(w, "load average %.2f at the start, %.2f at the end (%d cores, maybe shared)\n", r.LoadStart[0], r.LoadEnd[0], r.Cores)
	if r.DataFS != nil {
		fmt.Fprintf(w, "hub data on %s", r.DataFS)
		if r.DataFS.Unjournaled() {
			fmt.Fprintf(w, ": creating files there slows down after many deletions (S3 PUTs too); compare runs on one filesystem, or use --data on a journaled one")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "lost %d, doubled %d, rejected %d; units reconnected %d, messages redelivered %d",
		r.Lost, r.Doubled, r.Rejected, r.Reconnects, r.Redelivered)
	if r.ReaderRestarts > 0 {
		fmt.Fprintf(w, ", cursor pulls started again %d", r.ReaderRestarts)
	}
	fmt.Fprintln(w)
	if r.Lost > 0 {
		fmt.Fprintf(w, "missing: %d documents neither accepted nor rejected, %d deliveries of accepted documents", r.Undecided, r.Undelivered)
		if r.Stalled {
			fmt.Fprintf(w, " (nothing moved for --wait)")
		}
		fmt.Fprintln(w)
	}
}

func humanSize(n int) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
