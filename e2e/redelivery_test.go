package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestDeliveryOnceAcrossCrashes: B's agent reads its deliveries with the
// unit's one consumer, whose state the embedded NATS server keeps in memory.
// B's agent is killed (SIGKILL) while it takes 60 waiting documents, then the
// hub is killed while the restarted agent goes on: the hub's server forgets
// which messages B acknowledged, and B is sent again every message the hub
// had not removed yet, documents B already handed over among them. B's
// integrating system (its inbox) gets every document exactly once: none
// lost, none twice; and A learns of B's status 01 on each.
func TestDeliveryOnceAcrossCrashes(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	port := freePort(t)
	h := startHubOn(t, data, port)
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB)
	const n = 60
	ids := postN(t, a, uB, n)
	for _, id := range ids {
		eventually(t, "acceptance of "+string(id), 60*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
	}
	count := func() int {
		code, body := b.do("GET", "/v1/inbox?limit=500", "", nil)
		if code != 200 {
			t.Fatalf("GET /v1/inbox: %d %s", code, body)
		}
		return strings.Count(string(body), `"cursor"`)
	}

	// B's agent crashes while it takes the documents.
	b.start()
	got := 0
	eventually(t, "B's first documents", 60*time.Second, func() bool { got = count(); return got >= 5 }, b)
	b.kill()
	t.Logf("B killed with %d documents or more in its inbox", got)
	b.start()
	// The hub crashes while B takes the rest: its acknowledgements are
	// forgotten with the consumer's state.
	eventually(t, "more of B's documents", 60*time.Second, func() bool { got = count(); return got >= 25 }, b)
	h.kill()
	t.Logf("hub killed with %d documents or more in B's inbox", got)
	h = startHubOn(t, data, port)

	eventually(t, "01 from B on every document", 120*time.Second, func() bool {
		for _, id := range ids {
			if !hasStatus(a.document(id), uB, "01") {
				return false
			}
		}
		return true
	}, a, b)
	// Nothing more for B: every message of its consumer acknowledged.
	bc := connectAs(t, work, h.info.NATSURL, uB)
	eventually(t, "B's consumer drained", 60*time.Second, func() bool {
		cons, err := bc.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(uB)))
		if err != nil {
			return false
		}
		info, err := cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	}, b)
	seen := map[document.ID]bool{}
	for _, it := range b.inbox() {
		if seen[it.ID] {
			t.Fatalf("%s handed over twice", it.ID)
		}
		seen[it.ID] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("%s never arrived", id)
		}
	}
	if len(seen) != n {
		t.Fatalf("B has %d documents, want %d", len(seen), n)
	}
	// The hub's restart did send B documents it had handed over already:
	// the agent took each as seen before.
	again := strings.Count(b.logText(), "delivery seen before, not handed over again")
	t.Logf("B was sent %d documents again", again)
	if again == 0 {
		t.Fatalf("B was sent nothing again: the test did not exercise a redelivery\n%s", b.logText())
	}
}
