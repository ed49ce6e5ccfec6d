package broker_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/protocol"
)

// TestWitnessSubjects: a unit asks the hub's witness service on its own
// subject (the hub sees which unit asks, and its reply reaches that unit
// alone), never on another unit's; every unit hears the checkpoints the hub
// offers, and none can publish one.
func TestWitnessSubjects(t *testing.T) {
	e := newEnv(t)
	a, b := e.unit(t, unitA), e.unit(t, unitB)

	var mu sync.Mutex
	var asked []string
	sub, err := e.hub.Subscribe(protocol.SubjectWitnessPrefix+">", func(m *nats.Msg) {
		mu.Lock()
		asked = append(asked, m.Subject)
		mu.Unlock()
		b, _ := json.Marshal(protocol.WitnessReply{Size: 42})
		m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	e.hub.Flush()

	w := &protocol.Witness{NC: a.nc, Unit: unitA}
	rep, err := w.Do(t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint})
	if err != nil || rep.Size != 42 {
		t.Fatalf("witness request: %+v %v", rep, err)
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != protocol.WitnessSubject(unitA) {
		t.Fatalf("the hub saw %v", asked)
	}
	mu.Unlock()

	// Unit A as unit B: refused by the server.
	if err := a.nc.Publish(protocol.WitnessSubject(unitB), []byte(`{"op":"checkpoint"}`)); err != nil {
		t.Fatal(err)
	}
	a.waitPermErr(t, protocol.WitnessSubject(unitB))
	for _, subj := range []string{protocol.SubjectCheckpoint, protocol.SubjectWitnessPrefix + "000.01.00", protocol.SubjectWitnessPrefix + ">"} {
		if err := a.nc.Publish(subj, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		a.waitPermErr(t, subj)
	}
	// No listening to another unit's requests.
	if _, err := a.nc.SubscribeSync(protocol.WitnessSubject(unitB)); err != nil {
		t.Fatal(err)
	}
	a.waitPermErr(t, protocol.WitnessSubject(unitB))
	mu.Lock()
	if len(asked) != 1 {
		t.Fatalf("the hub saw %v", asked)
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
