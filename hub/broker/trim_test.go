package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestTrimmer: the hub removes from EDX_DELIVER what a unit acknowledged,
// up to its consumer's acknowledgement floor, and nothing else: not what it
// was sent and has not acknowledged, not another unit's. It removes at once
// what it was told it stored (Sent), and what it was not told of on its
// full sweeps (when it starts, then every FullEvery). A consumer that lost
// its state (kept in memory) starts again from what is left: what the unit
// had not acknowledged, never what it had.
func TestTrimmer(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.unit(t, unitA)
	pub := func(subj, body string) uint64 {
		t.Helper()
		ack, err := e.hubJS.Publish(ctx, subj, []byte(body), jetstream.WithMsgID(body))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	for i := 1; i <= 5; i++ {
		pub(protocol.DeliverSubject(unitA), fmt.Sprintf("d%d", i))
	}
	pub(protocol.DeliverSubject(unitA), "n1")
	pub(protocol.DeliverSubject(unitB), "b1")
	left := func() int {
		t.Helper()
		st, err := e.hubJS.Stream(ctx, protocol.StreamDeliver)
		if err != nil {
			t.Fatal(err)
		}
		return int(st.CachedInfo().State.Msgs)
	}
	cons, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	take := func(n, acks int) []string {
		t.Helper()
		b, err := cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for m := range b.Messages() {
			if got = append(got, string(m.Data())); len(got) <= acks {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		return got
	}
	take(4, 3) // d1..d3 acknowledged, d4 in the agent's hands
	tr := broker.NewTrimmer(e.hubJS, broker.TrimConfig{Every: 10 * time.Second, FullEvery: time.Hour}, nil)
	now := time.Now()
	broker.SetTrimClock(tr, func() time.Time { return now })
	res, err := tr.Sweep(ctx) // the first sweep is a full one
	if err != nil {
		t.Fatal(err)
	}
	if !res.Full || res.Units != 2 || res.Checked != 2 || res.Trimmed != 1 || res.Removed != 3 {
		t.Errorf("first sweep %+v", res)
	}
	if n := left(); n != 4 { // d4, d5 and A's notice; B's delivery
		t.Errorf("%d messages left, want 4", n)
	}
	// A message the hub stores and tells the Trimmer of.
	tr.Sent(unitA, pub(protocol.DeliverSubject(unitA), "d6"))
	// The consumer forgets (a server restart, memory storage): the hub
	// gives it back, and it brings what A had not acknowledged.
	if err := e.hubJS.DeleteConsumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA)); err != nil {
		t.Fatal(err)
	}
	if _, err := broker.EnsureUnitConsumers(ctx, e.hubJS, []string{unitA, unitB}, ""); err != nil {
		t.Fatal(err)
	}
	if cons, err = a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA)); err != nil {
		t.Fatal(err)
	}
	if got := take(10, 10); !slices.Equal(got, []string{"d4", "d5", "n1", "d6"}) {
		t.Errorf("after the consumer started again: %q", got)
	}
	// The next sweep removes what it was told of; the rest of A's waits
	// for the next full sweep. B, whose floor does not move, is not asked.
	now = now.Add(10 * time.Second)
	if res, err = tr.Sweep(ctx); err != nil || res.Full || res.Checked != 1 || res.Removed != 1 {
		t.Errorf("sweep %+v, %v", res, err)
	}
	if n := left(); n != 4 {
		t.Errorf("%d messages left, want 4", n)
	}
	if p := broker.TrimPending(tr, unitA); len(p) != 0 {
		t.Errorf("still to remove: %v", p)
	}
	now = now.Add(time.Hour)
	if res, err = tr.Sweep(ctx); err != nil || !res.Full || res.Removed != 3 {
		t.Errorf("full sweep %+v, %v", res, err)
	}
	if n := left(); n != 1 {
		t.Errorf("%d messages left, want B's one", n)
	}
	// B's delivery stays, unacknowledged; between full sweeps B, of whom
	// the Trimmer was told nothing, is not asked.
	for range 2 {
		now = now.Add(10 * time.Second)
		if res, err = tr.Sweep(ctx); err != nil || res.Checked != 0 {
			t.Errorf("sweep %+v, %v", res, err)
		}
	}
}

// TestUnitConsumersOption: nats.streams.unit_consumers takes memory (the
// default), file or cursor, nothing else.
func TestUnitConsumersOption(t *testing.T) {
	for v, ok := range map[string]bool{"": true, broker.UnitConsumersMemory: true, broker.UnitConsumersFile: true, broker.UnitConsumersCursor: true, "disk": false, "Memory": false, "cursors": false} {
		o := broker.StreamOptions{UnitConsumers: v}
		o.SetDefaults()
		if err := o.Validate(); (err == nil) != ok {
			t.Errorf("unit_consumers %q: %v", v, err)
		}
	}
}
