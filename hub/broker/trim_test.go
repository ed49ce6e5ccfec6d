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
// was sent and has not acknowledged, not another unit's. A consumer that
// lost its state (kept in memory) starts again from what is left: what the
// unit had not acknowledged, never what it had.
func TestTrimmer(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.unit(t, unitA)
	for i := 1; i <= 5; i++ {
		if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), fmt.Appendf(nil, "d%d", i), jetstream.WithMsgID(fmt.Sprintf("d%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{protocol.NoticeSubject(unitA), protocol.DeliverSubject(unitB)} {
		if _, err := e.hubJS.Publish(ctx, s, []byte("n1"), jetstream.WithMsgID(s)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(4, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range b.Messages() {
		if i++; i <= 3 { // d1..d3 acknowledged, d4 in the agent's hands
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	tr := broker.NewTrimmer(e.hubJS, broker.TrimConfig{Every: 10 * time.Second}, nil)
	now := time.Now()
	broker.SetTrimClock(tr, func() time.Time { return now })
	res, err := tr.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Units != 2 || res.Checked != 2 || res.Trimmed != 1 {
		t.Errorf("sweep %+v", res)
	}
	st, err := e.hubJS.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 4 { // d4, d5 and A's notice; B's delivery
		t.Errorf("%d messages left, want 4", n)
	}
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
	b, err = cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range b.Messages() {
		got = append(got, string(m.Data()))
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, []string{"d4", "d5", "n1"}) {
		t.Errorf("after the consumer started again: %q", got)
	}
	// Now everything of A's is acknowledged: the next sweep that looks at
	// A removes it. B's delivery stays, unacknowledged: B, whose floor did
	// not move, is looked at again later, and less and less often.
	now = now.Add(10 * time.Second)
	res, err = tr.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Units != 2 || res.Checked != 2 || res.Trimmed != 1 {
		t.Errorf("sweep %+v", res)
	}
	now = now.Add(10 * time.Second)
	if res, err = tr.Sweep(ctx); err != nil || res.Units != 1 || res.Checked != 0 {
		t.Errorf("sweep %+v, %v: B looked at again at once", res, err)
	}
	now = now.Add(10 * time.Second)
	if res, err = tr.Sweep(ctx); err != nil || res.Units != 1 || res.Checked != 1 || res.Trimmed != 0 {
		t.Errorf("sweep %+v, %v", res, err)
	}
	if st, err = e.hubJS.Stream(ctx, protocol.StreamDeliver); err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%d messages left, want B's one", n)
	}
}

// TestUnitConsumersOption: nats.streams.unit_consumers takes memory (the
// default) or file, nothing else.
func TestUnitConsumersOption(t *testing.T) {
	for v, ok := range map[string]bool{"": true, broker.UnitConsumersMemory: true, broker.UnitConsumersFile: true, "disk": false, "Memory": false} {
		o := broker.StreamOptions{UnitConsumers: v}
		o.SetDefaults()
		if err := o.Validate(); (err == nil) != ok {
			t.Errorf("unit_consumers %q: %v", v, err)
		}
	}
}
