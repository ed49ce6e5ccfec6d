package broker_test

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// cursorEnv is newEnv with the hub keeping no consumer per unit: its
// Cursors answer the units' fetch requests, its Trimmer takes their floors.
func cursorEnv(t *testing.T) (*env, *broker.Cursors, *broker.Trimmer) {
	t.Helper()
	e := newEnv(t)
	if _, err := broker.EnsureUnitConsumers(t.Context(), e.hubJS, []string{unitA, unitB}, broker.UnitConsumersCursor); err != nil {
		t.Fatal(err)
	}
	tr := broker.NewTrimmer(e.hubJS, broker.TrimConfig{Cursors: true, FullEvery: time.Hour}, nil)
	return e, broker.NewCursors(e.hub, e.hubJS, tr, testLogger(t)), tr
}

// next returns the next message of a pull, failing after 20 s.
func next(t *testing.T, p *protocol.CursorPull) jetstream.Msg {
	t.Helper()
	type res struct {
		m   jetstream.Msg
		err error
	}
	c := make(chan res, 1)
	go func() {
		m, err := p.Next()
		c <- res{m, err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.m
	case <-time.After(20 * time.Second):
		t.Fatal("no message in 20 s")
	}
	return nil
}

// TestCursors: with no consumer per unit, a unit reads its messages by
// cursor through the real server's UNITS account: what was stored before
// the hub started and what comes while its request waits (woken, not
// found at the request's end), its own only, once each, again after a Nak;
// its floor reaches the Trimmer, which removes what it has and nothing of
// another unit's.
func TestCursors(t *testing.T) {
	e, cur, tr := cursorEnv(t)
	ctx := t.Context()
	if n := len(consumerNames(t, e.hubJS, protocol.StreamDeliver)); n != 0 {
		t.Fatalf("%d consumers left with unit_consumers: cursor", n)
	}
	pub := func(unit, body string) uint64 {
		t.Helper()
		ack, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unit), []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	pub(unitA, "a1")
	pub(unitB, "b1")
	pub(unitA, "a2")
	if err := cur.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := e.unit(t, unitA), e.unit(t, unitB)
	var mu sync.Mutex
	var floors []uint64
	pa := protocol.PullCursor(a.nc, unitA, 0, 1<<20, time.Minute, func(f uint64) {
		mu.Lock()
		floors = append(floors, f)
		mu.Unlock()
	}, nil)
	defer pa.Stop()
	pb := protocol.PullCursor(b.nc, unitB, 0, 1<<20, time.Minute, nil, nil)
	defer pb.Stop()

	m1, m2 := next(t, pa), next(t, pa)
	if string(m1.Data()) != "a1" || string(m2.Data()) != "a2" || m1.Subject() != protocol.DeliverSubject(unitA) {
		t.Fatalf("got %q %q on %s", m1.Data(), m2.Data(), m1.Subject())
	}
	m1.Ack()
	m2.NakWithDelay(100 * time.Millisecond)
	again := next(t, pa)
	md, _ := again.Metadata()
	if string(again.Data()) != "a2" || md.NumDelivered != 2 {
		t.Fatalf("after a Nak: %q, delivered %d times", again.Data(), md.NumDelivered)
	}
	again.Ack()
	if m := next(t, pb); string(m.Data()) != "b1" {
		t.Fatalf("B got %q", m.Data())
	}
	// A's request now waits; what comes for A wakes it.
	time.Sleep(200 * time.Millisecond)
	s3 := pub(unitA, "a3")
	m3 := next(t, pa)
	if string(m3.Data()) != "a3" {
		t.Fatalf("got %q", m3.Data())
	}
	m3.Ack()
	// The floor goes with A's next request, to the Trimmer.
	deadline := time.Now().Add(10 * time.Second)
	for pa.Floor() != s3 || broker.TrimAcked(tr, unitA) != s3 {
		if time.Now().After(deadline) {
			t.Fatalf("floor %d, the Trimmer's %d, want %d", pa.Floor(), broker.TrimAcked(tr, unitA), s3)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	if len(floors) == 0 || floors[len(floors)-1] != s3 || !slices.IsSorted(floors) {
		t.Errorf("floors told %v, want rising to %d", floors, s3)
	}
	mu.Unlock()
	res, err := tr.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 3 {
		t.Errorf("sweep %+v, want A's 3 removed", res)
	}
	st, err := e.hubJS.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	// B's b1 stays: B has not finished it (its pull sends no request
	// until it has).
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("%d messages left, want B's", n)
	}
	if s := cur.Stats(); s.Waiting != 1 || s.Forwarded < 3 || s.Invalid != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestCursorsHostile: a unit cannot fetch another's messages, neither on
// the other's subject (the server refuses it) nor by naming the other's
// inbox (the hub refuses it and sends nothing there); a request with a
// cursor past the stream's end (kept on another stream) starts the unit
// again from the start.
func TestCursorsHostile(t *testing.T) {
	e, cur, _ := cursorEnv(t)
	ctx := t.Context()
	if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitB), []byte("b1")); err != nil {
		t.Fatal(err)
	}
	if err := cur.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := e.unit(t, unitA), e.unit(t, unitB)
	bInbox := protocol.InboxPrefix(unitB) + ".spy"
	got, err := b.nc.SubscribeSync(bInbox)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(protocol.FetchRequest{Inbox: bInbox})
	if err := a.nc.Publish(protocol.FetchSubject(unitB), req); err != nil {
		t.Fatal(err)
	}
	a.waitPermErr(t, protocol.FetchSubject(unitB))
	if err := a.nc.Publish(protocol.FetchSubject(unitA), req); err != nil {
		t.Fatal(err)
	}
	aInbox := protocol.InboxPrefix(unitA) + ".x"
	ans, err := a.nc.SubscribeSync(aInbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{"inbox":"` + aInbox + `.*"}`, `{"inbox":"` + aInbox + `","after":"x"}`, `not json` + aInbox} {
		if err := a.nc.Publish(protocol.FetchSubject(unitA), []byte(bad)); err != nil {
			t.Fatal(err)
		}
	}
	a.nc.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for cur.Stats().Invalid < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want 4 refused", cur.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m, err := got.NextMsg(500 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("B's inbox got %v %v from A's request", m, err)
	}
	// The one refusal the hub can send to A's inbox (the others name no
	// inbox of A's) says why.
	m, err := ans.NextMsg(5 * time.Second)
	if err != nil || m.Header.Get(protocol.HeaderFetch) != protocol.FetchEndInvalid || m.Header.Get(protocol.HeaderFetchError) == "" {
		t.Fatalf("A's refusal: %v %v", m, err)
	}

	// A unit asking again and again for what it holds, unacknowledged:
	// the server answers some 20 a second of them, the rest wait.
	if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("a1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the hub saw it
	before := cur.Stats()
	again, _ := json.Marshal(protocol.FetchRequest{Inbox: aInbox})
	for range 100 {
		if err := a.nc.Publish(protocol.FetchSubject(unitA), again); err != nil {
			t.Fatal(err)
		}
	}
	a.nc.Flush()
	deadline = time.Now().Add(10 * time.Second)
	for cur.Stats().Requests < before.Requests+100 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", cur.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := cur.Stats(); s.Forwarded-before.Forwarded > 2*20 || s.Held-before.Held < 50 {
		t.Errorf("100 requests at once: %d answered from the stream, %d held", s.Forwarded-before.Forwarded, s.Held-before.Held)
	}

	// B's cursor kept on another stream, past this one's end.
	pb := protocol.PullCursor(b.nc, unitB, 1000, 1<<20, time.Minute, nil, nil)
	defer pb.Stop()
	if m := next(t, pb); string(m.Data()) != "b1" {
		t.Fatalf("after a reset B got %q", m.Data())
	}
	if n := cur.Stats().Resets; n != 1 {
		t.Errorf("%d resets, want 1", n)
	}
}

// TestCursorsUnderLoad: messages stored while a unit reads reach it in
// order, once each, and its cursor is never taken for one past the
// stream's end although the hub's follower may be behind the server that
// answered the unit (it was: the unit then read its backlog again from
// the start, seconds behind).
func TestCursorsUnderLoad(t *testing.T) {
	e, cur, _ := cursorEnv(t)
	ctx := t.Context()
	if err := cur.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a := e.unit(t, unitA)
	p := protocol.PullCursor(a.nc, unitA, 0, 32<<20, time.Minute, nil, nil)
	defer p.Stop()
	const n = 2000
	body := make([]byte, 16<<10)
	go func() {
		for range n {
			if _, err := e.hubJS.Publish(ctx, protocol.DeliverSubject(unitA), body); err != nil {
				return
			}
		}
	}()
	var last uint64
	for range n {
		m := next(t, p)
		md, _ := m.Metadata()
		if md.Sequence.Stream <= last {
			t.Fatalf("sequence %d after %d", md.Sequence.Stream, last)
		}
		last = md.Sequence.Stream
		m.Ack()
	}
	if s := cur.Stats(); s.Resets != 0 {
		t.Errorf("stats %+v: a unit reading live was told to start again", s)
	}
}

// TestCursorPullNoHub: a pull no hub answers ends with
// protocol.ErrNoFetchAnswer (the agent then looks for a consumer again).
func TestCursorPullNoHub(t *testing.T) {
	e := newEnv(t)
	a := e.unit(t, unitA)
	p := protocol.PullCursor(a.nc, unitA, 0, 1<<20, time.Minute, nil, nil)
	defer p.Stop()
	_, err := p.Next()
	if !errors.Is(err, protocol.ErrNoFetchAnswer) || !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		t.Fatalf("err %v", err)
	}
}

// TestCursorsHubDies: of two hubs answering fetch requests, the one that
// keeps a unit's waiting request dies (its connection closed, nothing
// ended): the other ends that request once the dead hub has been silent
// for a few seconds, and the unit, asking again, gets a message stored
// meanwhile long before its own 2-minute wait would have run out. While
// both live, neither ends the other's requests. The second hub starts
// before the unit asks (told of the request when it is kept), or after
// (told of it when the hubs first hear each other).
func TestCursorsHubDies(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := "second-hub-first"
		if late {
			name = "second-hub-later"
		}
		t.Run(name, func(t *testing.T) { testCursorsHubDies(t, late) })
	}
}

func testCursorsHubDies(t *testing.T, late bool) {
	e, cur1, tr := cursorEnv(t)
	ctx := t.Context()
	h2 := hubConn(t, e.srv)
	cur2 := broker.NewCursors(h2.NC, h2.JS, tr, testLogger(t))
	hubs := []struct {
		cur *broker.Cursors
		nc  *nats.Conn
		js  jetstream.JetStream
	}{{cur1, e.hub, e.hubJS}, {cur2, h2.NC, h2.JS}}
	start := hubs
	if late {
		start = hubs[:1]
	}
	for _, h := range start {
		if err := h.cur.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a := e.unit(t, unitA)
	p := protocol.PullCursor(a.nc, unitA, 0, 1<<20, 2*time.Minute, nil, nil)
	defer p.Stop()
	holder := -1
	deadline := time.Now().Add(20 * time.Second)
	for holder < 0 && time.Now().Before(deadline) {
		for i, h := range hubs {
			if h.cur.Stats().Waiting == 1 {
				holder = i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if holder < 0 {
		t.Fatal("no hub keeps the unit's request")
	}
	if late {
		if err := cur2.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(7 * time.Second) // longer than a hub may be silent
	for i, h := range hubs {
		if s := h.cur.Stats(); s.Orphaned != 0 {
			t.Fatalf("hub %d, both alive: %+v", i+1, s)
		}
	}
	if s := hubs[holder].cur.Stats(); s.Waiting != 1 {
		t.Fatalf("the request no longer waits: %+v", s)
	}
	hubs[holder].nc.Close()
	other := hubs[1-holder]
	if _, err := other.js.Publish(ctx, protocol.DeliverSubject(unitA), []byte("while its hub was dead")); err != nil {
		t.Fatal(err)
	}
	m := next(t, p) // within 20 s
	if string(m.Data()) != "while its hub was dead" {
		t.Fatalf("got %q", m.Data())
	}
	m.Ack()
	if s := other.cur.Stats(); s.Orphaned != 1 {
		t.Errorf("surviving hub: %+v, want 1 request orphaned", s)
	}
}
