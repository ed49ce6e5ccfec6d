package pipeline

import (
	"errors"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// sentLog records what the pipeline tells Deps.Sent, and passes it on.
type sentLog struct {
	next Sent
	mu   sync.Mutex
	seqs map[string][]uint64
}

func (s *sentLog) Sent(unit string, seq uint64) {
	s.mu.Lock()
	s.seqs[unit] = append(s.seqs[unit], seq)
	s.mu.Unlock()
	s.next.Sent(unit, seq)
}

// TestSentTellsTheTrimmer: the pipeline tells Deps.Sent where it stored
// every delivery and notice; the hub's Trimmer, told so, removes what B and
// C acknowledged at its next sweep without looking through the stream, and
// leaves A's notice, which A has not fetched.
func TestSentTellsTheTrimmer(t *testing.T) {
	e := newEnv(t, uA, uB, uC)
	ctx := t.Context()
	tr := broker.NewTrimmer(e.js, broker.TrimConfig{FullEvery: 1 << 40}, nil)
	if res, err := tr.Sweep(ctx); err != nil || !res.Full { // the first sweep looks through the stream, empty now
		t.Fatalf("%+v %v", res, err)
	}
	log := &sentLog{next: tr, seqs: map[string][]uint64{}}
	deps := e.deps
	deps.Sent = log
	e.run(deps)
	a := e.units[uA]
	id, meta := doc(uA, uB, uC)
	a.submit(t, id, a.build(t, meta, 4<<10))
	e.units[uB].delivery(t)
	e.units[uC].delivery(t)
	st, err := e.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	var notice *jetstream.RawStreamMsg
	for notice == nil { // stored after the deliveries
		notice, _ = st.GetLastMsgForSubject(ctx, protocol.DeliverSubject(string(uA))) // A receives nothing else
	}
	res, err := tr.Sweep(ctx)
	if err != nil || res.Full || res.Removed != 2 {
		t.Errorf("sweep %+v, %v: want B's and C's deliveries removed", res, err)
	}
	for _, u := range []string{string(uB), string(uC)} {
		if _, err := st.GetLastMsgForSubject(ctx, protocol.DeliverSubject(u)); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("%s's delivery still there: %v", u, err)
		}
	}
	if _, err := st.GetMsg(ctx, notice.Sequence); err != nil {
		t.Errorf("A's notice removed: %v", err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if got := log.seqs[string(uA)]; len(got) != 1 || got[0] != notice.Sequence {
		t.Errorf("told of %v for A's notice, stored at %d", got, notice.Sequence)
	}
	for _, u := range []string{string(uB), string(uC)} {
		if got := log.seqs[u]; len(got) != 1 {
			t.Errorf("told of %v for %s's delivery", got, u)
		}
	}
}

// TestGatewayDeliveryToldToTheTrimmer: a document to a unit outside the
// city (carried by the gateway) and to one inside is stored as one delivery
// per unit that reads it: the city unit's and the gateway's. The Trimmer
// must be told each under its own unit. Told under the recipients of the
// document in their order instead, B was told of the gateway's delivery;
// once B acknowledged a later document, the Trimmer removed the gateway's
// delivery, which the gateway (offline, as when the national axis is down)
// had not read: lost.
func TestGatewayDeliveryToldToTheTrimmer(t *testing.T) {
	e := newEnv(t, uA, uB, uGW)
	e.cfg.Gateway = Gateway{Unit: uGW, Outside: []string{"G", "H", "!H29"}}
	ctx := t.Context()
	tr := broker.NewTrimmer(e.js, broker.TrimConfig{FullEvery: 1 << 40}, nil)
	if _, err := tr.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	log := &sentLog{next: tr, seqs: map[string][]uint64{}}
	deps := e.deps
	deps.Sent = log
	e.run(deps)
	a, b := e.units[uA], e.units[uB]

	id, meta := doc(uA, uG22, uB) // the outside recipient first: B's delivery is the first stored
	a.submit(t, id, a.build(t, meta, 4<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	b.delivery(t) // read and acknowledged; the gateway reads nothing
	id2, meta2 := doc(uA, uB)
	a.submit(t, id2, a.build(t, meta2, 4<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	b.delivery(t) // B's acknowledgement floor is now past the gateway's delivery

	st, err := e.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	for unit, seqs := range log.seqs {
		for _, seq := range seqs {
			m, err := st.GetMsg(ctx, seq)
			if err == nil && m.Subject != protocol.DeliverSubject(unit) {
				t.Errorf("told of %d for %s: it is %s's", seq, unit, m.Subject)
			}
		}
	}
	if n := len(log.seqs[string(uGW)]); n != 1 {
		t.Errorf("told of %d deliveries for the gateway, want 1", n)
	}
	if n := len(log.seqs[string(uG22)]); n != 0 {
		t.Errorf("told of %d deliveries for the outside unit, which has none", n)
	}
	log.mu.Unlock()
	if _, err := tr.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.deliveries(uGW); n != 1 {
		t.Fatalf("%d deliveries to the gateway in the stream after the sweep, want its unread one", n)
	}
	m := e.units[uGW].delivery(t)
	d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil || d.DocumentID != id {
		t.Fatalf("the gateway's delivery: %+v, %v", d, err)
	}
}
