package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/natstest"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestCursorsKeepByDeadline: the requests Cursors keeps waiting are ended
// when their deadline comes, and not before; one replaced is gone from the
// deadlines too; a held one goes at the next second whatever its
// deadline. Random requests of 40 units against a model, the clock moved
// by hand, the bookkeeping (map, heap, held) checked after every step.
func TestCursorsKeepByDeadline(t *testing.T) {
	c := NewCursors(plainConn(t), nil, nil, nil)
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

// plainConn connects to a NATS server of its own, without JetStream.
func plainConn(t *testing.T) *nats.Conn {
	_, nc := natstest.Connect(t, false)
	return nc
}

// TestCursorsResetLooksAgain: a cursor past the stream's last sequence as
// the leader first gives it is looked at again before the unit is told to
// start again: on a cluster the leader may not yet have applied what the
// replica that answered the unit has (seen: after=3413, last=3411). Only a
// cursor still past the end after leaderLooks more looks is a reset.
func TestCursorsResetLooksAgain(t *testing.T) {
	quickLooks(t)
	nc := plainConn(t)
	const unit = "000.00.01.H29"
	for _, tc := range []struct {
		name  string
		lasts []uint64 // what the leader gives, look after look (the last again after)
		reset bool
	}{
		{"leader behind, then caught up", []uint64{3411, 3412, 3413}, false},
		{"leader caught up at the last look", []uint64{3411, 3411, 3411, 3413}, false},
		{"a stream made anew", []uint64{5}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCursors(nc, nil, nil, nil)
			c.top = 3400
			looks := 0
			c.streamLast = func(context.Context) (uint64, error) {
				looks++
				return tc.lasts[min(looks, len(tc.lasts))-1], nil
			}
			inbox := unitInbox(unit)
			sub, err := nc.SubscribeSync(inbox)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			c.checkReset(unit, protocol.FetchRequest{After: 3413, Inbox: inbox, WaitMS: 60_000}, time.Minute)
			m, err := sub.NextMsg(200 * time.Millisecond)
			if !tc.reset {
				if err == nil {
					t.Fatalf("the unit was answered (%s) after %d looks; want its request kept", m.Header.Get(protocol.HeaderFetch), looks)
				}
				if c.Stats().Waiting != 1 || c.Stats().Resets != 0 || looks != len(tc.lasts) {
					t.Fatalf("%+v after %d looks; want the request kept, no reset, %d looks", c.Stats(), looks, len(tc.lasts))
				}
				return
			}
			if err != nil || m.Header.Get(protocol.HeaderFetch) != protocol.FetchEndReset {
				t.Fatalf("got %v (%v); want the end %q", m, err, protocol.FetchEndReset)
			}
			if c.Stats().Resets != 1 || looks != 1+leaderLooks {
				t.Fatalf("%+v after %d looks; want one reset after %d", c.Stats(), looks, 1+leaderLooks)
			}
		})
	}
}

// TestCursorsVerifyMessageMeanwhile: when the leader finds nothing after a
// unit's cursor (the messages the hub knew of were removed), the hub
// forgets them and keeps the request; but a message for the unit stored
// while the leader was asked is sent at once, not forgotten with them
// (the request would wait deaf to it until the next message for the unit).
// The leader is the test's, answering "no message".
func TestCursorsVerifyMessageMeanwhile(t *testing.T) {
	nc := plainConn(t)
	const unit = "000.00.02.H29"
	for _, meanwhile := range []bool{true, false} {
		t.Run(fmt.Sprintf("stored meanwhile %v", meanwhile), func(t *testing.T) {
			c := NewCursors(nc, nil, nil, nil)
			c.top, c.last[unit] = 100, 50
			c.streamLast = func(context.Context) (uint64, error) { return 100, nil }
			direct := playLeader(t, nc, func() uint64 {
				if meanwhile {
					c.mu.Lock()
					c.last[unit], c.top = 101, 101 // as stored does
					c.mu.Unlock()
				}
				return 0
			})
			inbox := unitInbox(unit)
			c.verify(unit, protocol.FetchRequest{After: 10, Empty: true, Inbox: inbox, WaitMS: 60_000}, time.Minute)
			m, err := direct.NextMsg(500 * time.Millisecond)
			switch {
			case meanwhile && (err != nil || m.Reply != inbox):
				t.Fatalf("no direct get to the unit's inbox (%v); stats %+v", err, c.Stats())
			case !meanwhile && err == nil:
				t.Fatalf("a direct get with nothing to send: %s", m.Data)
			case !meanwhile && (c.Stats().Waiting != 1 || c.last[unit] != 10):
				t.Fatalf("%+v, last %d: want the request kept and last lowered to 10", c.Stats(), c.last[unit])
			}
		})
	}
}

// quickLooks makes leaderAt's pauses short for a test.
func quickLooks(t *testing.T) {
	old := leaderPause
	leaderPause = time.Millisecond
	t.Cleanup(func() { leaderPause = old })
}

// TestCursorsVerifyLeaderBehind: a unit's answer came back empty (the
// replica that answered had not stored its message yet), and the hub asks
// the stream's leader. The leader, too, may not yet have applied the
// message this hub's follower saw: the hub asks it only once it has
// (edx bench on the 3-node cluster: the leader answered "none" 41 ms after
// the follower saw the message, and the hub forgot it: the unit's request
// waited deaf). A leader that stays behind leaves the hub's last as it is;
// one caught up that has nothing after the cursor has it lowered. The
// leader is the test's: its last sequence goes up look after look, and it
// has the unit's message once its last reaches it.
func TestCursorsVerifyLeaderBehind(t *testing.T) {
	quickLooks(t)
	nc := plainConn(t)
	const unit = "000.00.03.H29"
	for _, tc := range []struct {
		name    string
		lasts   []uint64 // the leader's last sequence, look after look (the last again after)
		removed bool     // the leader has nothing for the unit, caught up or not
		forward bool     // want a direct get for the unit
		lowered bool     // want the hub's last for the unit lowered to the cursor
		logged  string   // want this in the hub's log (at debug level)
	}{
		{"leader behind, then caught up", []uint64{2712, 2712, 2713}, false, true, false, "the leader has the unit's next message"},
		{"leader caught up, message removed", []uint64{3000}, true, false, true, "the leader has nothing after the unit's cursor"},
		{"leader stays behind", []uint64{5}, true, false, false, "level=WARN msg=\"broker: fetch: the stream's leader is behind this hub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c := NewCursors(nc, nil, nil, log)
			c.top, c.last[unit] = 2713, 2713
			var mu sync.Mutex
			var leaderLast uint64
			looks := 0
			c.streamLast = func(context.Context) (uint64, error) {
				mu.Lock()
				defer mu.Unlock()
				looks++
				leaderLast = tc.lasts[min(looks, len(tc.lasts))-1]
				return leaderLast, nil
			}
			direct := playLeader(t, nc, func() uint64 {
				mu.Lock()
				defer mu.Unlock()
				if leaderLast >= 2713 && !tc.removed {
					return 2713
				}
				return 0
			})
			inbox := unitInbox(unit)
			c.verify(unit, protocol.FetchRequest{After: 2468, Empty: true, Inbox: inbox, WaitMS: 60_000}, time.Minute)
			m, err := direct.NextMsg(300 * time.Millisecond)
			c.mu.Lock()
			last := c.last[unit]
			c.mu.Unlock()
			switch {
			case tc.forward && (err != nil || m.Reply != inbox):
				t.Fatalf("no direct get to the unit's inbox (%v) after %d looks; last %d, stats %+v", err, looks, last, c.Stats())
			case !tc.forward && err == nil:
				t.Fatalf("a direct get with nothing to send: %s", m.Data)
			case !tc.forward && c.Stats().Waiting != 1:
				t.Fatalf("%+v: want the request kept", c.Stats())
			case tc.lowered && last != 2468, !tc.lowered && last != 2713:
				t.Fatalf("the hub's last for the unit is %d after %d looks; want %d", last, looks, map[bool]uint64{true: 2468, false: 2713}[tc.lowered])
			case !strings.Contains(logged.String(), tc.logged):
				t.Fatalf("the hub's log lacks %q:\n%s", tc.logged, logged.String())
			}
		})
	}
}

// unitInbox returns a new inbox of unit's.
func unitInbox(unit string) string {
	return protocol.InboxPrefix(unit) + "." + nats.NewInbox()[len(nats.InboxPrefix):]
}

// playLeader answers the hub's questions to the stream's leader (a unit's
// next message) with next's sequence (0: none), and returns a subscription
// that sees the direct gets the hub sends.
func playLeader(t *testing.T, nc *nats.Conn, next func() uint64) *nats.Subscription {
	t.Helper()
	leader, err := nc.Subscribe("$JS.API.STREAM.MSG.GET."+protocol.StreamDeliver, func(m *nats.Msg) {
		if seq := next(); seq > 0 {
			m.Respond(fmt.Appendf(nil, `{"message":{"subject":"x","seq":%d}}`, seq))
			return
		}
		m.Respond([]byte(`{"error":{"code":404,"err_code":10037,"description":"no message found"}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leader.Unsubscribe() })
	direct, err := nc.SubscribeSync("$JS.API.DIRECT.GET." + protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Unsubscribe() })
	return direct
}
