package broker_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestUnitPullSurvivesReconnect sends a busy unit 2,000 deliveries of
// 64 KiB while its agent reads them slowly, and makes the unit's
// connection reconnect four times meanwhile. Every delivery must reach it,
// and none may be dropped by the client's buffer ("slow consumer"): with
// jetstream's Messages alone, each reconnect dropped some (24 in this
// test), which came back only after the consumer's ack wait, and a busy
// unit's pulls could stop for minutes.
//
// Messages and acks on the wire when a connection breaks are lost with it,
// and come again after the ack wait; that is at least once, and the agent
// takes each delivery once. The test shortens the ack wait to 2 s so that
// they do not make it last 30 s, and counts them.
func TestUnitPullSurvivesReconnect(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()
	cfg := broker.UnitConsumerConfig(unitA, broker.UnitConsumersMemory)
	cfg.AckWait = 2 * time.Second
	if _, err := e.hubJS.UpdateConsumer(ctx, protocol.StreamDeliver, cfg); err != nil {
		t.Fatal(err)
	}
	p := a.pull(t, unitA, 32<<20)

	const n = 2000
	done := make(chan int, 1)
	go func() {
		seen := map[int]bool{}
		again := 0
		for len(seen) < n {
			m, err := p.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err != nil {
				continue
			}
			i, _ := strconv.Atoi(m.Headers().Get("I"))
			if seen[i] {
				again++
			}
			seen[i] = true
			time.Sleep(time.Millisecond) // an agent storing it
			m.Ack()
		}
		done <- again
	}()
	data := make([]byte, 64<<10)
	for i := range n {
		m := nats.NewMsg(protocol.DeliverSubject(unitA))
		m.Header.Set("I", strconv.Itoa(i))
		m.Data = data
		if _, err := e.hubJS.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		if i%500 == 250 {
			if err := a.nc.ForceReconnect(); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case again := <-done:
		t.Logf("%d deliveries came again (lost on the wire at a reconnect)", again)
	case err := <-a.errc:
		t.Fatalf("the unit's connection: %v", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if errs := a.asyncErrs(); len(errs) != 0 {
		t.Fatalf("async errors: %v", errs)
	}
	if p.Pulls() < 2 {
		t.Fatalf("%d pull requests for 2,000 messages and 4 reconnects", p.Pulls())
	}
	t.Logf("%d pull requests", p.Pulls())
}

// TestUnitPullConsumerGone: a unit's consumer deleted while its agent waits
// on it ends the pull with jetstream.ErrMsgIteratorClosed, naming why, so
// that the agent looks the consumer up again instead of asking on.
func TestUnitPullConsumerGone(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	ctx := t.Context()
	p := a.pull(t, unitA, 1<<20)
	got := make(chan error, 1)
	go func() {
		for {
			if _, err := p.Next(); err != nil && errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				got <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the request waiting on the server
	if err := e.hubJS.DeleteConsumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("pull ended with %v, want the consumer deleted", err)
		}
		t.Log(err)
	case <-ctx.Done():
		t.Fatal("the pull went on after its consumer was deleted")
	}
}

// pull starts the unit's pull of its consumer as its agent does
// (protocol.PullUnit), stopped when the test ends.
func (u *unitClient) pull(t *testing.T, unit string, maxBytes int) *protocol.UnitPull {
	t.Helper()
	cons, err := u.js.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(unit))
	if err != nil {
		t.Fatal(err)
	}
	p, err := protocol.PullUnit(u.nc, cons, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
