package broker

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/protocol"
)

// TestCursorsKeepByDeadline: the requests Cursors keeps waiting are ended
// when their deadline comes, and not before; one replaced is gone from the
// deadlines too; a held one goes at the next second whatever its
// deadline. Random requests of 40 units against a model, the clock moved
// by hand, the bookkeeping (map, heap, held) checked after every step.
func TestCursorsKeepByDeadline(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	c := NewCursors(nc, nil, nil, nil)
	now := time.Unix(1_800_000_000, 0)
	c.now = func() time.Time { return now }
	c.top = 100

	type kept struct {
		deadline time.Time
		held     bool
	}
	model := map[string]kept{}
	sent := map[string]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	units := make([]string, 40)
	for i := range units {
		units[i] = fmt.Sprintf("000.00.%02d.H29", i)
		if i%4 == 0 {
			c.last[units[i]] = 50 // behind: its requests are answered, up to fetchRate a second, then held
		}
	}
	check := func(step int) {
		t.Helper()
		if len(c.waiting) != len(model) || len(c.due)+len(c.held) != len(c.waiting) {
			t.Fatalf("step %d: %d waiting (%d by deadline, %d held), want %d", step, len(c.waiting), len(c.due), len(c.held), len(model))
		}
		for u, k := range model {
			w := c.waiting[u]
			if w == nil || w.held != k.held || (!k.held && !w.deadline.Equal(k.deadline)) {
				t.Fatalf("step %d: unit %s: kept %+v, want %+v", step, u, w, k)
			}
		}
		for i, w := range c.due {
			if w.at != i || (i > 0 && w.deadline.Before(c.due[(i-1)/2].deadline)) {
				t.Fatalf("step %d: deadline heap broken at %d", step, i)
			}
		}
	}
	for step := range 3000 {
		switch r := rng.IntN(10); {
		case r < 7: // a request
			u := units[rng.IntN(len(units))]
			wait := time.Duration(1+rng.IntN(60)) * time.Second
			after := uint64(100)
			if c.last[u] == 50 {
				after = 10
			}
			n := 1
			if after == 10 {
				n = 1 + rng.IntN(2*fetchRate) // a burst: some held
			}
			for range n {
				b, _ := json.Marshal(protocol.FetchRequest{After: after, Inbox: protocol.InboxPrefix(u) + ".r", WaitMS: wait.Milliseconds()})
				c.fetch(&nats.Msg{Subject: protocol.SubjectFetchPrefix + u, Data: b})
				delete(model, u)
				switch {
				case after == 100:
					model[u] = kept{deadline: now.Add(wait)}
				case sent[u] >= fetchRate:
					model[u] = kept{held: true}
				default:
					sent[u]++
				}
			}
		default: // a second, or some, go by
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			c.expire()
			clear(sent)
			for u, k := range model {
				if k.held {
					delete(model, u)
					sent[u]++ // answered in the new second
				} else if !now.Before(k.deadline) {
					delete(model, u)
				}
			}
		}
		check(step)
	}
	if c.Stats().Held == 0 || c.Stats().Ended == 0 {
		t.Fatalf("the steps held or ended nothing: %+v", c.Stats())
	}
}
