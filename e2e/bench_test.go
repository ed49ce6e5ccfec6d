package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edxhub/edx/pkg/document"
)

// benchOut runs edx bench (the real binary) and returns its exit code and
// output.
func benchOut(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(bin, "edx"), append([]string{"bench"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// TestBenchHub: edx bench --hub drives a running embedded hub it did not
// start: it registers its units with the admin token and prints the table,
// with the hub's resources n/a; given --idle, it holds the units connected
// and idle that long first, and names the window.
func TestBenchHub(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	code, out := benchOut(t, work, "--hub", h.info.HTTP, "--token-file", h.info.AdminTokenFile, "--units", "3", "--docs", "40", "--size", "16KiB", "--idle", "3s")
	if code != 0 || !strings.Contains(out, "edx submit → delivered") || !strings.Contains(out, "lost 0, doubled 0, rejected 0") ||
		!strings.Contains(out, "n/a") || !strings.Contains(out, h.info.HTTP) || !strings.Contains(out, "units idle, every one connected: ") ||
		!strings.Contains(out, "(3s)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestClusterBench: edx bench --hub against the two-hub cluster: with the
// units registered before through hub 1 (--units-dir), and with units it
// registers itself through hub 1, every document is accepted and delivered
// once, whichever hub takes it (the hubs share the unit registry).
func TestClusterBench(t *testing.T) {
	c := newCluster(t)
	h1 := c.startHub("hub-1")
	c.startHub("hub-2")
	for _, u := range []string{"000.01.00.H29", "000.02.00.H29", "000.03.00.H29"} {
		c.register(h1, document.UnitID(u))
	}
	code, out := benchOut(t, c.work, "--hub", h1.info.HTTP, "--units-dir", "units", "--docs", "100", "--size", "16KiB")
	if code != 0 || !strings.Contains(out, "lost 0, doubled 0, rejected 0") || !strings.Contains(out, "3 units") {
		t.Fatalf("--units-dir: exit %d:\n%s", code, out)
	}
	code, out = benchOut(t, c.work, "--hub", h1.info.HTTP, "--token-file", h1.info.AdminTokenFile, "--units", "3", "--docs", "40", "--size", "16KiB", "--wait", "30s")
	if code != 0 || !strings.Contains(out, "lost 0, doubled 0, rejected 0") {
		t.Fatalf("units registered through hub 1: exit %d:\n%s", code, out)
	}
}

// TestBenchFigures measures, in one run on this machine, edx bench against
// the two-hub cluster (three NATS servers, the S3 gateway, two edx-hub
// processes; two units registered through hub 1, --units-dir) beside edx
// bench with its own single embedded hub (two units it registers), alternating them twice, EDX_BENCH_DOCS documents
// of 64 KiB each time. It is a measurement, run on request:
//
//	EDX_BENCH_DOCS=1000 go test ./e2e/ -run TestBenchFigures -v -timeout 1h
func TestBenchFigures(t *testing.T) {
	n := os.Getenv("EDX_BENCH_DOCS")
	if n == "" {
		t.Skip("a measurement: set EDX_BENCH_DOCS=1000 to run it")
	}
	c := newCluster(t)
	h1 := c.startHub("hub-1")
	h2 := c.startHub("hub-2")
	// The hubs' logs, kept (a slow document is explained there).
	t.Cleanup(func() {
		for i, h := range []*hubProc{h1, h2} {
			if b, err := os.ReadFile(filepath.Join(h.data, "hub.log")); err == nil {
				os.WriteFile(filepath.Join(artifactDir(t), fmt.Sprintf("bench-hub-%d.log", i+1)), b, 0o644)
			}
		}
	})
	// The cluster's units, registered once through hub 1: registering a
	// unit again revokes its credentials, which a bench run must not time.
	for _, u := range []document.UnitID{"000.01.00.H29", "000.02.00.H29"} {
		c.register(h1, u)
	}
	for round := 1; round <= 2; round++ {
		for _, where := range []string{"cluster", "embedded"} {
			args := []string{"--units", "2", "--docs", n, "--size", "64KiB"}
			if where == "cluster" {
				args = append(args, "--hub", h1.info.HTTP, "--units-dir", "units")
			} else {
				args = append(args, "--no-ceilings")
			}
			before, _ := os.ReadFile("/proc/loadavg")
			code, out := benchOut(t, c.work, args...)
			after, _ := os.ReadFile("/proc/loadavg")
			t.Logf("round %d, %s: edx bench %s (exit %d; load average before %s, after %s)\n%s", round, where, strings.Join(args, " "), code,
				strings.TrimSpace(string(before)), strings.TrimSpace(string(after)), out)
			if code != 0 {
				t.Errorf("round %d, %s: exit %d", round, where, code)
			}
		}
	}
}

// TestBenchSizes: edx bench with a hub of its own runs every size without
// error, 1 MiB included (its JetStream ceiling published every container
// at once and the server refused them, "429 too many requests"), and its
// JSON reports, beside the slowest ceiling, the parts a document cost, the
// summed-parts bound, the hub's idle CPU (measured once it has settled,
// at least two windows after the units registered), the bench's own CPU and the load
// average; its --data directory is made when missing, one subdirectory per
// run (a hub on another run's data would inherit its backlog); the hub it
// starts takes its soft memory limit (--hub-memory-limit).
func TestBenchSizes(t *testing.T) {
	work := t.TempDir()
	// --data names a directory that does not exist yet: the bench makes it.
	code, out := benchOut(t, work, "--units", "3", "--docs", "160", "--size", "4KiB,1MiB", "--concurrency", "16", "--idle", "1s", "--evidence", "on",
		"--hub-memory-limit", "300", "--data", filepath.Join(work, "new", "bench-data"), "--json")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var res []struct {
		Size        int       `json:"size"`
		Lost        int       `json:"lost"`
		Doubled     int       `json:"doubled"`
		Slowest     string    `json:"slowest_ceiling"`
		Ratio       float64   `json:"ratio_to_slowest"`
		Bound       float64   `json:"summed_parts_bound"`
		RatioBound  float64   `json:"ratio_to_bound"`
		IdleCPU     float64   `json:"hub_idle_cpu_cores"`
		IdleFor     int64     `json:"idle_for"`
		IdleSettled int64     `json:"idle_settled_after"`
		AgentsCPU   int64     `json:"agents_cpu_per_doc"`
		LoadAverage []float64 `json:"load_average_end"`
		Deliveries  int       `json:"deliveries"`
		DataFS      struct {
			Dir  string `json:"dir"`
			Type string `json:"type"`
		} `json:"data_fs"`
		Tail *struct {
			Over    int `json:"over_p99"`
			Seconds int `json:"seconds"`
			Worst   []struct {
				Over int   `json:"over_p99"`
				Max  int64 `json:"max"`
			} `json:"worst"`
		} `json:"delivered_tail"`
		Parts []struct {
			Name    string  `json:"name"`
			PerDoc  float64 `json:"per_doc"`
			Ceiling float64 `json:"ceiling_docs_per_sec"`
		} `json:"parts"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "[\n  {"):]), &res); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(res) != 2 {
		t.Fatalf("want 2 sizes:\n%s", out)
	}
	for _, run := range []string{"4KiB-log-on-1", "1MiB-log-on-1"} {
		// The hub ran with the soft memory limit the bench was given.
		if b, err := os.ReadFile(filepath.Join(work, "new", "bench-data", run, "hub.log")); err != nil {
			t.Errorf("run %s: %v", run, err)
		} else if !strings.Contains(string(b), `msg="soft memory limit" mib=300 from=memory_limit_mib`) {
			t.Errorf("run %s: the hub's log has no 300 MiB soft memory limit:\n%.2000s", run, b)
		}
	}
	for _, r := range res {
		per := map[string]float64{}
		for _, p := range r.Parts {
			per[p.Name] = p.PerDoc
			if p.Name != "s3_other" && p.Ceiling <= 0 {
				t.Errorf("size %d: part %s has no ceiling", r.Size, p.Name)
			}
		}
		if r.Lost != 0 || r.Doubled != 0 || r.Slowest == "" || r.Ratio <= 0 || r.Bound <= 0 || r.RatioBound <= 0 || r.IdleFor == 0 ||
			r.IdleSettled < 10e9 || r.IdleSettled > 90e9 || r.AgentsCPU <= 0 ||
			len(r.LoadAverage) != 3 || per["verify"] != 1 || per["s3_put"] < 1 || per["publish"] < 2 || per["consume"] < 2 {
			t.Errorf("size %d: %+v", r.Size, r)
		}
		// The hub's data directory's filesystem, as the hub told it.
		if r.DataFS.Type == "" || !strings.HasPrefix(r.DataFS.Dir, filepath.Join(work, "new", "bench-data")) {
			t.Errorf("size %d: data_fs %+v", r.Size, r.DataFS)
		}
		// At most 1% of the deliveries are slower than p99, each counted
		// in one second of the run.
		if tl := r.Tail; tl != nil {
			n := 0
			for _, w := range tl.Worst {
				n += w.Over
			}
			if tl.Over < 1 || tl.Over > r.Deliveries/100+1 || tl.Seconds < 1 || len(tl.Worst) < 1 || n > tl.Over {
				t.Errorf("size %d: delivered_tail %+v of %d deliveries", r.Size, *tl, r.Deliveries)
			}
		}
	}
}

// TestBenchSideBySide: edx bench --side-by-side runs the hubs without and
// with the log at the same time, each with its own units, and compares them
// over the seconds both were sending; every document of both is accepted
// and delivered once, and the statuses of both are told to their senders.
func TestBenchSideBySide(t *testing.T) {
	work := t.TempDir()
	code, out := benchOut(t, work, "--docs", "150", "--concurrency", "16", "--statuses", "--side-by-side", "--rounds", "2",
		"--data", filepath.Join(work, "bench-data"))
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"side by side over the", "hub CPU per document:", "over 2 rounds: median", "lost 0, doubled 0, rejected 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "lost 0, doubled 0, rejected 0"); n != 4 {
		t.Errorf("%d runs report nothing lost, want 4:\n%s", n, out)
	}
	for _, run := range []string{"64KiB-log-off-1", "64KiB-log-on-1", "64KiB-log-off-2", "64KiB-log-on-2"} {
		if _, err := os.Stat(filepath.Join(work, "bench-data", run, "hub.log")); err != nil {
			t.Errorf("run %s: %v", run, err)
		}
	}
}
