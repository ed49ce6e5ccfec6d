package broker_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/protocol"
)

// TestWitnessSubjects: a unit asks the witness service of one hub's log on
// that log's subject, as itself (the hub sees which unit asks, and its
// reply reaches that unit alone); a request about one hub's log reaches
// that hub only, never another hub of the cluster; no unit asks as another
// or listens to another's requests; every unit hears the checkpoints the
// hubs offer, and none can publish one.
func TestWitnessSubjects(t *testing.T) {
	e := newEnv(t)
	a, b := e.unit(t, unitA), e.unit(t, unitB)

	var mu sync.Mutex
	asked := map[string][]string{} // by the log a hub holds
	const log1, log2 = "edx.local/hub/one", "edx.local/hub/two"
	for _, origin := range []string{log1, log2} {
		sub, err := e.hub.Subscribe(protocol.WitnessServiceSubject(origin), func(m *nats.Msg) {
			mu.Lock()
			asked[origin] = append(asked[origin], m.Subject)
			mu.Unlock()
			b, _ := json.Marshal(protocol.WitnessReply{LogKey: origin})
			m.Respond(b)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	e.hub.Flush()

	w := &protocol.Witness{NC: a.nc, Unit: unitA}
	for _, origin := range []string{log1, log2} {
		rep, err := w.Do(t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint, Origin: origin})
		if err != nil || rep.LogKey != origin {
			t.Fatalf("witness request about %s: %+v %v", origin, rep, err)
		}
	}
	if _, err := w.Do(t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint}); err == nil {
		t.Fatal("a request naming no log was sent")
	}
	mu.Lock()
	for _, origin := range []string{log1, log2} {
		if got := asked[origin]; len(got) != 1 || got[0] != protocol.WitnessSubject(origin, unitA) {
			t.Fatalf("the hub of %s saw %v", origin, got)
		}
	}
	mu.Unlock()

	// Unit A as unit B: refused by the server.
	if err := a.nc.Publish(protocol.WitnessSubject(log1, unitB), []byte(`{"op":"checkpoint"}`)); err != nil {
		t.Fatal(err)
	}
	a.waitPermErr(t, protocol.WitnessSubject(log1, unitB))
	// Its id after the prefix is a request to a log "000" (no log's token
	// has that shape) as unit 00.00.H29: its permission edx.*.UNIT admits
	// it, no hub hears it (the count of requests each hub saw, below).
	if err := a.nc.Publish(protocol.SubjectWitnessPrefix+unitA, []byte(`{"op":"checkpoint"}`)); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{protocol.SubjectCheckpoint, protocol.SubjectWitnessPrefix + "000.01.00",
		protocol.SubjectWitnessPrefix + ">", protocol.WitnessServiceSubject(log1)} {
		if err := a.nc.Publish(subj, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, subj)
	}
	// No listening to another unit's requests, nor to a log's.
	for _, subj := range []string{protocol.WitnessSubject(log1, unitB), protocol.WitnessServiceSubject(log1)} {
		if _, err := a.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, subj)
	}
	mu.Lock()
	if len(asked[log1]) != 1 || len(asked[log2]) != 1 {
		t.Fatalf("the hubs saw %v", asked)
	}
	mu.Unlock()

	// Both hear what the hub offers.
	var subs []*nats.Subscription
	for _, u := range []*unitClient{a, b} {
		s, err := u.nc.SubscribeSync(protocol.SubjectCheckpoint)
		if err != nil {
			t.Fatal(err)
		}
		u.nc.Flush()
		subs = append(subs, s)
	}
	// The import's interest reaches the EDX account shortly after the
	// subscription: the hub offers again until each unit heard it.
	cp := []byte("edx.local/hub-log\n1\nroot\n")
	for i, s := range subs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := e.hub.PublishMsg(protocol.CheckpointMsg(cp)); err != nil {
				t.Fatal(err)
			}
			m, err := s.NextMsg(100 * time.Millisecond)
			if err == nil {
				if string(m.Data) != string(cp) || m.Header.Get(protocol.HeaderVersion) != protocol.ProtocolVersion {
					t.Fatalf("unit %d heard %q", i, m.Data)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("unit %d heard no checkpoint: %v", i, err)
			}
		}
	}
}
