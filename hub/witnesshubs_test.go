package hub

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/witness"
)

// TestWitnessServicePerHub: two hubs on one NATS server, each with a log
// of its own. A unit's request about a log reaches the hub that holds it,
// every time (no queue group shared between hubs that hold different
// logs): each hub gives its own checkpoint, its key and its signed
// statement of it (a hub certificate, verified with the trust roots),
// consistency proofs of its own log, and keeps the unit's cosignature on
// its own log. A request about one log on the other's subject is
// refused. Both logs are in the registry, and a unit registered through
// either hub gets both keys.
func TestWitnessServicePerHub(t *testing.T) {
	c := newCluster(t)
	byTest := func(cfg *Config) { cfg.Witness.Interval = time.Hour } // offered by the test
	h1, h2 := c.hub(byTest), c.hub(byTest)
	hs := []*running{h1, h2}
	o1, o2 := h1.tlog.Origin(), h2.tlog.Origin()
	if o1 == o2 {
		t.Fatalf("both hubs' logs are %s", o1)
	}

	skey, vkey, err := witness.NewKey(service.WitnessName(uA))
	if err != nil {
		t.Fatal(err)
	}
	var bundle service.UnitBundle
	if code := h2.api("POST", "/api/v1/units", service.UnitRequest{ID: uA, Name: "A", WitnessKey: vkey}, &bundle); code != http.StatusCreated {
		t.Fatalf("register A: %d", code)
	}
	if bundle.LogKey != h2.tlogVKey || !slices.Contains(bundle.LogKeys, h1.tlogVKey) || !slices.Contains(bundle.LogKeys, h2.tlogVKey) || len(bundle.LogKeys) != 2 {
		t.Fatalf("the bundle's log keys: %q", bundle.LogKeys)
	}
	a := h1.agentFrom(uA, &bundle)
	svc := &protocol.Witness{NC: a.nc, Unit: uA}

	for i, h := range hs {
		h.appendEntries(3 + 2*i) // the two logs differ in size too
		if err := h.witness.offer(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	trust := h1.trust
	for i, h := range hs {
		origin := h.tlog.Origin()
		w, err := witness.New(witness.Config{StateFile: filepath.Join(t.TempDir(), "w"), Origin: origin, LogKey: h.tlogVKey, Key: skey})
		if err != nil {
			t.Fatal(err)
		}
		// Asked many times: a request that reached the other hub would
		// give the other log (or none).
		for range 8 {
			rep, err := svc.Do(t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint, Origin: origin})
			if err != nil || rep.LogKey != h.tlogVKey {
				t.Fatalf("hub %d's checkpoint: %+v %v", i+1, rep, err)
			}
			st, _, rs := container.VerifyLogKey(rep.LogStatement, container.Options{Trust: trust})
			if len(rs) > 0 || st.Origin != origin || st.Key != h.tlogVKey {
				t.Fatalf("hub %d's log key statement: %+v %v", i+1, st, rs)
			}
			if _, err := w.Update(t.Context(), rep.Checkpoint, svc.Proofs(origin)); err != nil {
				t.Fatalf("hub %d's checkpoint verified: %v", i+1, err)
			}
		}
		line, err := w.Update(t.Context(), w.Last(), svc.Proofs(origin))
		if err != nil {
			t.Fatal(err)
		}
		size := checkpointSize(t, w.Last())
		rep, err := svc.Do(t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCosign, Origin: origin, Size: size, Cosignature: string(line)})
		if err != nil || !rep.Kept {
			t.Fatalf("A's cosignature on hub %d's log: %+v %v", i+1, rep, err)
		}
		cp, err := h.tlog.Cosigned(t.Context(), size)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := witness.NewVerifier(vkey)
		if _, got, err := witness.VerifyQuorum(cp, origin, h.tlog.Verifier(), []note.Verifier{v}, 1); err != nil || len(got) != 1 {
			t.Fatalf("hub %d keeps the cosignature on its log: %v %v", i+1, got, err)
		}
	}

	// A request about log 2 on log 1's subject: refused by hub 1.
	body := []byte(`{"op":"checkpoint","origin":"` + o2 + `"}`)
	m, err := a.nc.RequestWithContext(t.Context(), protocol.WitnessSubject(o1, string(uA)), body)
	if err != nil {
		t.Fatal(err)
	}
	var rep protocol.WitnessReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error == nil || rep.Error.Code != reason.WitnessInvalid {
		t.Fatalf("a request about log 2 to hub 1: %s", m.Data)
	}

	logs, err := h1.units.Logs(t.Context())
	if err != nil || len(logs) != 2 {
		t.Fatalf("the registry's logs: %+v %v", logs, err)
	}
}
