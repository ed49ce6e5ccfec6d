package broker_test

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/document"
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
	p, err := protocol.PullUnit(u.nc, cons, maxBytes, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// ackInto reads p until it is stopped, acknowledging each message and
// sending it on the channel returned (buffered for one).
func ackInto(p *protocol.UnitPull) <-chan jetstream.Msg {
	got := make(chan jetstream.Msg, 1)
	go func() {
		for {
			m, err := p.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if err == nil {
				m.Ack()
				got <- m
			}
		}
	}()
	return got
}

// TestUnitPullWaitsForTheConnection: a unit's pull sends no request while
// its connection is down, and once it is back exactly one request waits on
// the consumer and a message sent then arrives at once. Before, a request
// sent while the connection was down (here: the pull started then; in use:
// a request that ended during a hub outage of over 4 minutes, its
// heartbeats missed) waited in nats.go's reconnect buffer, went out on the
// new connection, and was ended by the reconnect right after: the server
// kept it deaf for its 10 minutes, and every other message to the unit was
// lost until the ack wait brought it again.
func TestUnitPullWaitsForTheConnection(t *testing.T) {
	e := newEnv(t)
	px := newCutProxy(t, e.srv.ClientURL())
	creds, err := e.srv.Keys().IssueUnitCreds(unitA, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := connectUnit(t, px.url, creds, unitA)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cons, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
	if err != nil {
		t.Fatal(err)
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	px.cut(true)
	until("the unit's connection did not go down", func() bool { return !a.nc.IsConnected() })

	p, err := protocol.PullUnit(a.nc, cons, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	got := ackInto(p)
	time.Sleep(time.Second) // the pull would have asked by now
	if n := p.Pulls(); n != 0 {
		t.Fatalf("%d pull requests sent while the connection was down", n)
	}

	px.cut(false)
	until("the unit did not reconnect", a.nc.IsConnected)
	until("the pull did not ask once connected", func() bool { return p.Pulls() >= 1 })
	waiting := func() int {
		c, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
		if err != nil {
			t.Fatal(err)
		}
		return c.CachedInfo().NumWaiting
	}
	until("the request did not reach the consumer", func() bool { return waiting() >= 1 })
	time.Sleep(500 * time.Millisecond)
	// Two would mean the reconnect's event ended the request Next had
	// already sent on the new connection (the event comes after
	// IsConnected turns true), and Next asked again.
	if n := p.Pulls(); n != 1 {
		t.Fatalf("%d pull requests sent once connected, want 1", n)
	}
	if n := waiting(); n != 1 {
		t.Fatalf("%d pull requests waiting on the consumer, want 1", n)
	}
	m := nats.NewMsg(protocol.DeliverSubject(unitA))
	m.Data = []byte("after the outage")
	if _, err := e.hubJS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if md, err := m.Metadata(); err != nil || md.NumDelivered != 1 {
			t.Fatalf("delivered %+v (%v), want once", md, err)
		}
	case <-time.After(10 * time.Second): // well under the ack wait, 30 s
		t.Fatal("the message sent after the outage did not come")
	}
}

// cutProxy forwards TCP connections to a server; cut(true) closes those
// open and refuses new ones until cut(false); mute(true) drops what clients
// send, the connections left open (a client that hangs, or a network that
// lost the way back).
type cutProxy struct {
	url   string
	down  atomic.Bool
	muted atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := strings.TrimPrefix(target, "nats://")
	px := &cutProxy{url: "nats://" + l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if px.down.Load() {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			px.mu.Lock()
			px.conns = append(px.conns, c, s)
			px.mu.Unlock()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && !px.muted.Load() {
						if _, err := s.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				s.Close()
			}()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(func() { px.cut(true) })
	return px
}

func (px *cutProxy) cut(down bool) {
	px.down.Store(down)
	if !down {
		return
	}
	px.mu.Lock()
	defer px.mu.Unlock()
	for _, c := range px.conns {
		c.Close()
	}
	px.conns = nil
}

// TestPingIntervalDropsASilentClient: the server's side of the units'
// keepalive (Config.PingInterval, hub nats.embedded.ping_interval). A unit
// whose connection goes silent, left open (here: a proxy that drops what
// the unit sends; the unit itself never pings), is disconnected by the
// server after it missed two pings, and only then: a dead unit's pull
// requests are dropped with its connection. At the default interval (the
// NATS server's, 2 minutes) the same unit is still connected after the
// seconds the short interval needed.
func TestPingIntervalDropsASilentClient(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		dropped  bool
	}{
		{"1s", time.Second, true},
		{"default", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			srv, err := broker.Start(t.Context(), broker.Config{Listen: "127.0.0.1:-1", StoreDir: dir + "/js", KeysDir: dir + "/keys",
				MaxStore: broker.TestMaxStore, PingInterval: tc.interval}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Shutdown)
			creds, err := srv.Keys().IssueUnitCreds(unitA, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			px := newCutProxy(t, srv.ClientURL())
			gone := make(chan error, 1)
			nc, _, _, err := protocol.ConnectUnit(t.Context(), px.url, creds, document.UnitID(unitA),
				nats.PingInterval(time.Hour), nats.NoReconnect(),
				nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { gone <- err }))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			px.muted.Store(true)
			// Two missed pings and the third tick: about 3 s at 1 s.
			select {
			case err := <-gone:
				if !tc.dropped {
					t.Fatalf("disconnected at the default ping interval: %v", err)
				}
			case <-time.After(8 * time.Second):
				if tc.dropped {
					t.Fatal("the server kept a unit that answered no ping for 8 s, at a 1 s ping interval")
				}
			}
		})
	}
}

// TestUnitPullQuietLongerThanThreshold: a unit's pull request reaches its
// consumer through the UNITS account's import, which maps the reply back
// to the unit for as long as a response passed within the export's
// threshold. A request quiet for longer (no message, its heartbeat not yet
// due) lost its mapping at the server's default threshold, 2 minutes,
// while the consumer kept it waiting: a message sent then went to it and
// never arrived (delivered, unacknowledged, until the ack wait). Here the
// threshold is shortened to 3 s and the request kept quiet for 7 s, with a
// 10 s heartbeat: the message is lost to the request. With edx's threshold,
// longer than a request lives, the same message arrives at once.
func TestUnitPullQuietLongerThanThreshold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold time.Duration
		arrives   bool
	}{
		{"threshold 3s", 3 * time.Second, false},
		{"edx's threshold", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *env
			if tc.threshold > 0 {
				old := broker.SetPullResponseThreshold(tc.threshold)
				e = newEnv(t) // the accounts are signed as the server starts
				broker.SetPullResponseThreshold(old)
				if old <= protocol.UnitPullExpiry {
					t.Fatalf("edx's threshold %s: not longer than a request lives, %s", old, protocol.UnitPullExpiry)
				}
			} else {
				e = newEnv(t)
			}
			ctx := t.Context()
			a := e.unit(t, unitA)
			cons, err := a.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
			if err != nil {
				t.Fatal(err)
			}
			p, err := protocol.PullUnit(a.nc, cons, 1<<20, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Stop)
			got := ackInto(p)
			time.Sleep(7 * time.Second) // quiet: past a 3 s threshold (checked every 3 s), before the heartbeat
			if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("after a quiet while")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-got:
				if !tc.arrives {
					t.Fatal("arrived: the mapping was not dropped, so this test shows nothing")
				}
			case <-time.After(5 * time.Second): // well under the ack wait, 30 s
				if tc.arrives {
					t.Fatal("the message sent to a request quiet for 7 s did not come")
				}
				c, err := e.hubJS.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unitA))
				if err != nil {
					t.Fatal(err)
				}
				if ci := c.CachedInfo(); ci.NumAckPending != 1 || ci.NumWaiting != 1 {
					t.Fatalf("consumer: %d ack pending, %d waiting; want the message delivered to the deaf request, still waiting", ci.NumAckPending, ci.NumWaiting)
				}
			}
		})
	}
}
