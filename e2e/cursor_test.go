package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/document"
)

// TestAgentsByCursor: a hub that keeps no consumer per unit
// (nats.streams.unit_consumers: cursor), real agents reading by cursor.
// Documents arrive, statuses come back; the recipient's agent killed
// (SIGKILL: its cursor file may be behind) and started again while
// documents wait, and the hub restarted under running agents: every
// document is handed over once, and the agent keeps its cursor.
func TestAgentsByCursor(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	conf := filepath.Join(work, "hub.yaml")
	if err := os.WriteFile(conf, []byte("nats:\n  streams:\n    unit_consumers: cursor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	start := func() *hubProc {
		return startHubNATS(t, data, fmt.Sprintf("127.0.0.1:%d", port), "--config", conf)
	}
	h := start()
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB).start()
	var ids []document.ID
	post := func(n int) {
		t.Helper()
		for range n {
			code, id, body := a.post(uB)
			if code != 202 {
				t.Fatalf("post: %d %s", code, body)
			}
			ids = append(ids, id)
		}
		for _, id := range ids {
			eventually(t, "acceptance of "+string(id), 60*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
		}
	}
	arrived := func() {
		t.Helper()
		eventually(t, "B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == len(ids) }, a, b)
	}
	post(3)
	arrived()
	// Killed while nothing waits, then documents come while it is away.
	b.kill()
	post(2)
	b.start()
	arrived()
	h.stop()
	h = start()
	post(2)
	arrived()
	handedOverOnce(t, a, b, ids)
	for _, p := range []*agentProc{a, b} {
		if l := p.logText(); strings.Contains(l, "consumer unavailable") {
			t.Errorf("%s looked for a consumer again:\n%s", p.unit, l)
		}
	}
	// B's cursor, kept in its data directory, has moved (A's too: its
	// notices come by cursor).
	for _, p := range []*agentProc{a, b} {
		eventually(t, string(p.unit)+"'s cursor", 30*time.Second, func() bool {
			c, err := os.ReadFile(filepath.Join(p.dir, "data", "deliver.cursor"))
			n, _ := strconv.ParseUint(strings.TrimSpace(string(c)), 10, 64)
			return err == nil && n > 0
		}, p)
	}
}
