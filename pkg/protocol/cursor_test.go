package protocol

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestCursorPullProbesAfterReconnect: after its connection comes back, a
// unit's cursor pull asks with no wait first, and asks again when that
// request is lost (here the hub drops it; in use, the server the unit moved
// to did not yet know where the hubs listen). Before, it sent a request
// with its whole wait (here a minute), and when that was lost it heard
// nothing until the wait and fetchGrace ran out.
func TestCursorPullProbesAfterReconnect(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	port := s.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { s.Shutdown() })
	connect := func() *nats.Conn {
		nc, err := nats.Connect(s.ClientURL(), nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	hub, unitNC := connect(), connect()
	const unit = "000.00.04.H29"

	// The hub: a request with no wait is ended at once; one with a wait
	// is kept (never answered). Once told to, it drops the next request.
	var mu sync.Mutex
	var waits []int64 // WaitMS of each request, in order
	drop := false
	if _, err := hub.Subscribe(FetchSubject(unit), func(m *nats.Msg) {
		var req FetchRequest
		if json.Unmarshal(m.Data, &req) != nil {
			return
		}
		mu.Lock()
		waits = append(waits, req.WaitMS)
		dropped := drop
		drop = false
		mu.Unlock()
		if dropped || req.WaitMS > 0 {
			return
		}
		end := nats.NewMsg(req.Inbox)
		end.Header.Set(HeaderFetch, FetchEndWait)
		hub.PublishMsg(end)
	}); err != nil {
		t.Fatal(err)
	}
	hub.Flush()
	requests := func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]int64(nil), waits...)
	}
	until := func(what string, d time.Duration, ok func([]int64) bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !ok(requests()); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: requests' waits %v", what, requests())
			}
		}
	}

	var logged lockedBuffer
	p := PullCursor(unitNC, unit, 0, 1<<20, time.Minute, nil, slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(p.Stop)
	until("the first request, then one that waits", 10*time.Second, func(w []int64) bool { return len(w) >= 2 && w[0] == 0 && w[1] > 0 })

	// The server goes and comes back on its port; the hub drops the first
	// request that reaches it after.
	mu.Lock()
	drop = true
	mu.Unlock()
	before := len(requests())
	s.Shutdown()
	s.WaitForShutdown()
	opts.Port = port
	if s, err = server.NewServer(opts); err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready again")
	}
	// The probe (no wait), dropped; another probe, answered; then a request
	// that waits: within seconds, not after a minute.
	until("no new request after the reconnect", 15*time.Second, func(w []int64) bool {
		w = w[before:]
		return len(w) >= 3 && w[0] == 0 && w[1] == 0 && w[2] > 0
	})
	// Its debug records tell each request and what came of it: the
	// dropped probe too.
	for _, want := range []string{`msg="protocol: fetch: asking" unit=` + unit, `msg="protocol: fetch: answered"`, `msg="protocol: fetch: no answer"`} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the pull's debug log lacks %s:\n%s", want, logged.String())
		}
	}
}

// lockedBuffer is a bytes.Buffer for a log written by another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
