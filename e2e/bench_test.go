package e2e

import (
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
// with the hub's resources n/a.
func TestBenchHub(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	code, out := benchOut(t, work, "--hub", h.info.HTTP, "--token-file", h.info.AdminTokenFile, "--units", "3", "--docs", "40", "--size", "16KiB")
	if code != 0 || !strings.Contains(out, "edx submit → delivered") || !strings.Contains(out, "lost 0, doubled 0, rejected 0") ||
		!strings.Contains(out, "n/a") || !strings.Contains(out, h.info.HTTP) {
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
