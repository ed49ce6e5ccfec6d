package bench

import (
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/natstest"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestCursorReaderStartsAgain: a unit's cursor pull that ends because no
// hub answered its first request (a loaded machine) is started again, as
// an agent does, and goes on reading once a hub answers; Stop ends it.
// Before, the bench left such a unit deaf, and counted its documents lost.
func TestCursorReaderStartsAgain(t *testing.T) {
	_, nc := natstest.Connect(t, false)
	const id = "000.00.03.H29"
	r := &run{o: Options{Log: slog.New(slog.DiscardHandler), Keepalive: time.Minute}}
	c := r.cursorReader(&unit{id: document.UnitID(id), nc: nc})

	got := make(chan error, 1) // Next, blocked from the start until Stop
	go func() {
		_, err := c.Next()
		got <- err
	}()
	// No hub: the first pull's first request goes unanswered (5 s).
	for deadline := time.Now().Add(15 * time.Second); r.restarts.Load() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pull was not started again")
		}
	}
	// A hub now: it ends each request at once (nothing for the unit), so
	// a pull that lives asks again and again.
	hub, err := nc.Subscribe(protocol.SubjectFetchPrefix+id, func(m *nats.Msg) {
		var req protocol.FetchRequest
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		end := nats.NewMsg(req.Inbox)
		end.Header.Set(protocol.HeaderFetch, protocol.FetchEndWait)
		nc.PublishMsg(end)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Unsubscribe()
	before := c.Pulls()
	for deadline := time.Now().Add(15 * time.Second); c.Pulls() < before+3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pull started again does not ask the hub (%d requests, %d before)", c.Pulls(), before)
		}
	}
	c.Stop()
	select {
	case err := <-got:
		if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			t.Fatalf("after Stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Next did not end after Stop")
	}
}
