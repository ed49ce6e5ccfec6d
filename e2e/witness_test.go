package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/witness"
)

// logEntries is the test's history of decisions: entry i of a history
// named name (the same name, the same entries).
func logEntry(name string, i int) *evidence.Entry {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", name, i)))
	return &evidence.Entry{V: evidence.Version, Kind: evidence.Trust, Action: "replaced", Digest: hex.EncodeToString(sum[:]),
		Time: time.Date(2027, 1, 1, 0, 0, i, 0, time.UTC)}
}

// writeLog makes the hub's log directory hold exactly the given entries,
// signed with the hub's log key (DATA/tlog.key), as a hub that rewrites
// its log would: the old directory is moved to keep (when keep is not
// empty) or removed. The hub must be stopped.
func writeLog(t *testing.T, data, keep string, entries []*evidence.Entry) {
	t.Helper()
	dir := filepath.Join(data, "tlog")
	if keep != "" {
		if err := os.Rename(dir, keep); err != nil {
			t.Fatal(err)
		}
	} else if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	appendLog(t, data, entries)
}

// appendLog appends entries to the hub's log, with the hub stopped.
func appendLog(t *testing.T, data string, entries []*evidence.Entry) {
	t.Helper()
	ctx := t.Context()
	s, v, _, err := tlog.EnsureKey(filepath.Join(data, "tlog.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tlog.DirBackend(ctx, filepath.Join(data, "tlog"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tlog.Open(ctx, tlog.Config{CheckpointInterval: 100 * time.Millisecond, BatchMaxAge: 10 * time.Millisecond}, b, tlog.Deps{Signer: s, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for _, e := range entries {
		if last, err = l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if len(entries) > 0 {
		if _, err := l.Await(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := l.Close(cctx); err != nil {
		t.Fatal(err)
	}
}

func history(name string, from, to int) []*evidence.Entry {
	var out []*evidence.Entry
	for i := from; i < to; i++ {
		out = append(out, logEntry(name, i))
	}
	return out
}

// witnessEvidence is an agent's evidence file.
type witnessEvidence struct {
	Unit   document.UnitID `json:"unit"`
	Kind   string          `json:"kind"`
	Origin string          `json:"origin"`
	LogKey string          `json:"log_key"`
	Old    string          `json:"old_checkpoint"`
	New    string          `json:"new_checkpoint"`
	Proof  [][]byte        `json:"proof"`
	Error  string          `json:"error"`
}

func (a *agentProc) evidenceFiles() []witnessEvidence {
	a.t.Helper()
	dir := filepath.Join(a.dir, "data", "witness-evidence")
	ents, _ := os.ReadDir(dir)
	var out []witnessEvidence
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), durable.TempPrefix) {
			continue // being written: the agent renames it into place once whole
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			a.t.Fatal(err)
		}
		var ev witnessEvidence
		if err := json.Unmarshal(b, &ev); err != nil {
			a.t.Fatalf("%s: %v", e.Name(), err)
		}
		out = append(out, ev)
	}
	return out
}

// served returns the hub's checkpoint with the cosignatures collected.
func (h *hubProc) servedCheckpoint() []byte {
	h.t.Helper()
	resp, err := http.Get(h.info.HTTP + "/log/checkpoint")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		h.t.Fatalf("GET /log/checkpoint: %s %s", resp.Status, b)
	}
	return b
}

// TestAgentsCatchForkedLog: the real hub, edx and two agents. edx unit add
// gives each unit a witness key (its public half in the hub's registry) and
// the log's key; the agents verify and cosign every checkpoint the hub
// offers, and the hub serves the checkpoint with both cosignatures (a
// quorum of two). Then the hub rewrites its log (the same key, the history
// cut one entry short and continued differently): both agents refuse to
// cosign, alert (log, metric, /readyz, webhook witness.alert), and keep
// evidence that anyone with the log's key can check: two checkpoints the
// log signed that no consistency proof joins. Given its honest log back,
// grown, they cosign again. Then the hub rolls its log back to fewer
// entries than it signed: caught too.
func TestAgentsCatchForkedLog(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	natsPort := freePort(t)
	conf := filepath.Join(work, "hub.yaml")
	os.WriteFile(conf, []byte("witness:\n  interval: 200ms\n"), 0o644)
	start := func() *hubProc {
		return startHubNATS(t, data, fmt.Sprintf("127.0.0.1:%d", natsPort), "--config", conf)
	}
	h := start()
	var (
		mu     sync.Mutex
		alerts = map[string][]json.RawMessage{}
	)
	dms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &ev)
		if ev.Type == "witness.alert" {
			mu.Lock()
			alerts[r.URL.Path] = append(alerts[r.URL.Path], ev.Data)
			mu.Unlock()
		}
	}))
	defer dms.Close()
	var agents []*agentProc
	var ws []note.Verifier
	for _, u := range []document.UnitID{uA, uB} {
		out := edx(t, work, 0, "unit", "add", "--data", data, "--unit", string(u), "--name", "Đơn vị "+string(u))
		if !strings.Contains(out, "witness.key") || !strings.Contains(out, "log.vkey") {
			t.Fatalf("edx unit add:\n%s", out)
		}
		ud := filepath.Join(work, "units", string(u))
		skey, _ := os.ReadFile(filepath.Join(ud, "witness.key"))
		vkey, err := witness.VerifierKeyOf(string(skey))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := witness.NewVerifier(vkey)
		ws = append(ws, v)
		a := newAgent(t, work, h.info.NATSURL, u, fmt.Sprintf("webhook:\n  url: %s/%s\n", dms.URL, u)).start()
		agents = append(agents, a)
	}
	lk, _ := os.ReadFile(filepath.Join(work, "units", string(uA), "log.vkey"))
	logKey, err := note.NewVerifier(strings.TrimSpace(string(lk)))
	if err != nil {
		t.Fatal(err)
	}
	origin := logKey.Name()
	verified := func(a *agentProc, size uint64) bool {
		return strings.HasPrefix(a.readyDetail()["witness"], fmt.Sprintf("verified %s up to size %d", origin, size))
	}
	cosignedBoth := func(size uint64) bool {
		cp, got, err := witness.VerifyQuorum(h.servedCheckpoint(), origin, logKey, ws, 2)
		return err == nil && cp.Size == size && len(got) == 2
	}

	// The honest history: 10 decisions (written with the hub stopped; the
	// pipeline's own entries are not what this test is about).
	h.stop()
	base := logSize(t, data) // the hub's own decisions (its start, the units added)
	appendLog(t, data, history("honest", 0, 10))
	h = start()
	for _, a := range agents {
		eventually(t, "agent "+string(a.unit)+" verified the log", 60*time.Second, func() bool { return verified(a, base+10) }, a)
	}
	eventually(t, "the hub serves the checkpoint cosigned by both agents", 30*time.Second, func() bool { return cosignedBoth(base + 10) }, agents...)

	// The hub rewrites its log: another history, two entries longer (and
	// the entries the hub logs once at its start, logged again in the new
	// history); same
	// key, so every checkpoint is validly signed.
	h.stop()
	honest := filepath.Join(work, "tlog.honest")
	writeLog(t, data, honest, history("rewritten", 0, int(base)+12))
	h = start()
	for _, a := range agents {
		eventually(t, "agent "+string(a.unit)+" alerts", 60*time.Second, func() bool {
			return strings.Contains(a.readyDetail()["witness"], "ALERT") && len(a.evidenceFiles()) == 1
		}, a)
		ev := a.evidenceFiles()[0]
		if ev.Kind != "fork" || ev.Unit != a.unit || ev.Origin != origin {
			t.Fatalf("%s evidence: %+v", a.unit, ev)
		}
		// Anyone with the log's key can check it: both checkpoints are the
		// log's, and the proof the hub gave does not join them.
		oldCP, err1 := evidence.OpenCheckpoint([]byte(ev.Old), origin, logKey)
		newCP, err2 := evidence.OpenCheckpoint([]byte(ev.New), origin, logKey)
		if err1 != nil || err2 != nil || oldCP.Size != base+10 || newCP.Size < base+12 {
			t.Fatalf("%s evidence checkpoints: %v %v %+v %+v", a.unit, err1, err2, oldCP, newCP)
		}
		if err := evidence.VerifyConsistency(oldCP, newCP, ev.Proof); err == nil {
			t.Fatalf("%s: the evidence's proof joins the two checkpoints", a.unit)
		}
		// The evidence is kept first, then the alert said.
		eventually(t, "agent "+string(a.unit)+" logs and counts the alert", 10*time.Second, func() bool {
			return strings.Contains(a.logText(), "a hub's log is inconsistent") && strings.Contains(metricsOf(t, a.url), "edx_agent_witness_alerts_total 1")
		}, a)
	}
	eventually(t, "the document systems heard both alerts", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(alerts["/"+string(uA)]) == 1 && len(alerts["/"+string(uB)]) == 1
	})
	if cp, got, _ := witness.VerifyQuorum(h.servedCheckpoint(), origin, logKey, ws, 1); cp == nil || cp.Size < base+12 || len(got) != 0 {
		t.Fatalf("the rewritten checkpoint carries cosignatures: %v", got)
	}

	// The honest log back, grown by two: consistent with what the agents
	// verified, so cosigned again.
	h.stop()
	os.RemoveAll(filepath.Join(data, "tlog"))
	if err := os.Rename(honest, filepath.Join(data, "tlog")); err != nil {
		t.Fatal(err)
	}
	appendLog(t, data, history("honest", 10, 12))
	h = start()
	for _, a := range agents {
		eventually(t, "agent "+string(a.unit)+" verified the honest log", 60*time.Second, func() bool { return verified(a, base+12) && a.sizeMetric() == int(base)+12 }, a)
	}
	eventually(t, "the honest checkpoint cosigned again", 30*time.Second, func() bool { return cosignedBoth(base + 12) }, agents...)

	// Rolled back: the log now holds 7 entries, fewer than it signed.
	h.stop()
	writeLog(t, data, "", history("honest", 0, 7))
	h = start()
	for _, a := range agents {
		eventually(t, "agent "+string(a.unit)+" alerts the rollback", 60*time.Second, func() bool {
			for _, ev := range a.evidenceFiles() {
				if ev.Kind == "rollback" {
					return true
				}
			}
			return false
		}, a)
	}
	eventually(t, "the document systems heard the rollbacks", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(alerts["/"+string(uA)]) == 2 && len(alerts["/"+string(uB)]) == 2
	})
}

// logSize is the size of the stopped hub's log, from its checkpoint.
func logSize(t *testing.T, data string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "tlog", "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 3)
	var n uint64
	if len(lines) < 3 {
		t.Fatalf("checkpoint %q", b)
	}
	if _, err := fmt.Sscan(lines[1], &n); err != nil {
		t.Fatalf("checkpoint %q: %v", b, err)
	}
	return n
}

// sizeMetric reads edx_agent_witness_size of the (one) log.
func (a *agentProc) sizeMetric() int {
	for _, l := range strings.Split(metricsOf(a.t, a.url), "\n") {
		if !strings.HasPrefix(l, "edx_agent_witness_size{") {
			continue
		}
		if _, v, ok := strings.Cut(l, "} "); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return -1
}

func metricsOf(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
