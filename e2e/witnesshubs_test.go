package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/witness"
)

// TestAgentsWitnessEveryHub: two edx-hub processes on the NATS cluster,
// each with a transparency log of its own (its origin, its key), and two
// agents. Unit A is registered through hub 1 before hub 2 exists: its
// log.vkey holds hub 1's key only, and its agent learns hub 2's log from
// hub 2's statement of its key, signed with the hub's certificate. Unit B
// is registered through hub 2 afterwards: its log.vkey holds both keys.
// Both agents verify and cosign both logs, each cosignature reaching the
// hub that holds the log (requests name the log in their subject), so each
// hub serves its own checkpoint cosigned by both agents, and no agent
// alerts. Then hub 2 rewrites its log (its key, another history): both
// agents alert, with hub 2's origin and the evidence, while hub 1's log
// goes on being cosigned.
func TestAgentsWitnessEveryHub(t *testing.T) {
	const uD, uE = document.UnitID("000.04.00.H29"), document.UnitID("000.05.00.H29")
	c := newCluster(t)
	f, err := os.OpenFile(c.conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("witness:\n  interval: 200ms\n")
	f.Close()
	h1 := c.startHub("hub-1")
	c.register(h1, uA)
	h2 := c.startHub("hub-2")
	c.register(h2, uB)

	origin := func(h *hubProc) string {
		cp := h.servedCheckpoint()
		o, _, _ := strings.Cut(string(cp), "\n")
		return o
	}
	o1, o2 := origin(h1), origin(h2)
	if o1 == o2 {
		t.Fatalf("both hubs' logs are %s", o1)
	}
	keysOf := func(u document.UnitID) map[string]note.Verifier {
		b, err := os.ReadFile(filepath.Join(c.work, "units", string(u), "log.vkey"))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]note.Verifier{}
		for _, l := range strings.Fields(string(b)) {
			v, err := note.NewVerifier(l)
			if err != nil {
				t.Fatal(err)
			}
			out[v.Name()] = v
		}
		return out
	}
	ka, kb := keysOf(uA), keysOf(uB)
	if len(ka) != 1 || ka[o1] == nil || len(kb) != 2 || kb[o1] == nil || kb[o2] == nil {
		t.Fatalf("log.vkey: A's names %v, B's %v; the logs are %s and %s", ka, kb, o1, o2)
	}
	logKey := map[string]note.Verifier{o1: kb[o1], o2: kb[o2]}

	var agents []*agentProc
	var ws []note.Verifier
	for _, u := range []document.UnitID{uA, uB} {
		skey, _ := os.ReadFile(filepath.Join(c.work, "units", string(u), "witness.key"))
		vkey, err := witness.VerifierKeyOf(string(skey))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := witness.NewVerifier(vkey)
		ws = append(ws, v)
		agents = append(agents, newAgent(t, c.work, strings.Split(c.urls, ",")[0], u).start())
	}
	// Both logs grow (a unit registered through each hub is logged), and
	// each hub offers its new checkpoint to every agent.
	c.register(h1, uC)
	c.register(h2, uD)

	verifiedSize := func(a *agentProc, o string) int {
		m := regexp.MustCompile(regexp.QuoteMeta(o) + ` up to size (\d+)`).FindStringSubmatch(a.readyDetail()["witness"])
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	cosignedByBoth := func(h *hubProc, o string) bool {
		cp, got, err := witness.VerifyQuorum(h.servedCheckpoint(), o, logKey[o], ws, 2)
		return err == nil && cp.Size > 0 && len(got) == 2
	}
	for _, a := range agents {
		for _, o := range []string{o1, o2} {
			eventually(t, "agent "+string(a.unit)+" verified "+o, 90*time.Second, func() bool { return verifiedSize(a, o) > 0 }, a)
		}
	}
	eventually(t, "hub 1 serves its checkpoint cosigned by both agents", 60*time.Second, func() bool { return cosignedByBoth(h1, o1) }, agents...)
	eventually(t, "hub 2 serves its checkpoint cosigned by both agents", 60*time.Second, func() bool { return cosignedByBoth(h2, o2) }, agents...)
	for _, a := range agents {
		if d := a.readyDetail()["witness"]; strings.Contains(d, "ALERT") || len(a.evidenceFiles()) != 0 {
			t.Fatalf("agent %s alerts on honest logs: %s", a.unit, d)
		}
	}
	if !strings.Contains(agents[0].logText(), "learned from the hub's signed statement") {
		t.Fatalf("agent A does not say it learned hub 2's log:\n%s", agents[0].logText())
	}

	// Hub 2 rewrites its log: another history under its key, longer than
	// what the agents verified.
	n2 := 0
	for _, a := range agents {
		n2 = max(n2, verifiedSize(a, o2))
	}
	h2.stop()
	writeLog(t, h2.data, filepath.Join(c.work, "hub-2.tlog.honest"), history("rewritten", 0, n2+3))
	h2 = h2.restart()
	for _, a := range agents {
		eventually(t, "agent "+string(a.unit)+" alerts hub 2's fork", 90*time.Second, func() bool { return len(a.evidenceFiles()) > 0 }, a)
		for _, ev := range a.evidenceFiles() {
			if ev.Kind != "fork" || ev.Origin != o2 || ev.Unit != a.unit {
				t.Fatalf("agent %s evidence: %+v", a.unit, ev)
			}
			oldCP, err1 := evidence.OpenCheckpoint([]byte(ev.Old), o2, logKey[o2])
			newCP, err2 := evidence.OpenCheckpoint([]byte(ev.New), o2, logKey[o2])
			if err1 != nil || err2 != nil {
				t.Fatalf("agent %s evidence checkpoints: %v %v", a.unit, err1, err2)
			}
			if err := evidence.VerifyConsistency(oldCP, newCP, ev.Proof); err == nil {
				t.Fatalf("agent %s: the evidence's proof joins the two checkpoints", a.unit)
			}
		}
		if d := a.readyDetail()["witness"]; !strings.Contains(d, "ALERT") || !strings.Contains(d, "fork of "+o2) {
			t.Fatalf("agent %s /readyz: %s", a.unit, d)
		}
	}
	// Hub 1's log goes on: grown, verified and cosigned by both.
	before := verifiedSize(agents[0], o1)
	c.register(h1, uE)
	for _, a := range agents {
		eventually(t, fmt.Sprintf("agent %s verified hub 1's log past %d", a.unit, before), 90*time.Second, func() bool { return verifiedSize(a, o1) > before }, a)
	}
	eventually(t, "hub 1's grown checkpoint cosigned by both agents", 60*time.Second, func() bool {
		cp, got, err := witness.VerifyQuorum(h1.servedCheckpoint(), o1, logKey[o1], ws, 2)
		return err == nil && int(cp.Size) > before && len(got) == 2
	}, agents...)
	for _, a := range agents {
		for _, ev := range a.evidenceFiles() {
			if ev.Origin != o2 {
				t.Fatalf("agent %s alerted hub 1's honest log: %+v", a.unit, ev)
			}
		}
	}
}
