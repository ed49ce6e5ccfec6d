package broker

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// UnitConsumersCursor (StreamOptions.UnitConsumers) keeps no consumer per
// unit: units read EDX_DELIVER by cursor, through the hub's Cursors.
const UnitConsumersCursor = "cursor"

// Cursors answers units' fetch requests (protocol.FetchRequest) when the
// hub keeps no consumer per unit (UnitConsumersCursor). It follows every
// message stored in EDX_DELIVER (an ordered consumer of their headers, one
// per hub, from the stream's start), so it knows each unit's last
// sequence; while it catches up, when it starts, a request it knows too
// little for waits, and the message that follows wakes it. A request
// after that sequence waits (one per unit: a new one
// replaces it) until a message comes or its wait runs out; one before it
// is answered at once by the server, which sends the unit's next messages
// straight to the unit's inbox (a batched direct get with the inbox as its
// reply: the hub never copies a message). The floor a request carries
// goes to the Trimmer, which removes what the unit has.
//
// Every hub of a cluster runs one, in one queue group: a unit's request
// reaches one of them, and each knows every unit's last sequence. Each
// tells the others which requests it keeps waiting, and that it lives: when
// one goes silent (killed), the others end the requests it kept, and their
// units ask again at once instead of after their wait (orphans).
type Cursors struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	trim *Trimmer
	log  *slog.Logger
	now  func() time.Time
	// debug: the log takes debug records, each request and what the hub
	// did with it (how the cluster's unheard messages were found); the
	// records are not built otherwise.
	debug bool

	streamLast func(context.Context) (uint64, error) // lastSeq; a test's in its place

	mu      sync.Mutex
	last    map[string]uint64     // unit -> last sequence stored for it
	top     uint64                // the stream's last sequence, at least
	waiting map[string]*fetchWait // unit -> its request kept waiting (keep, drop)
	due     waitHeap              // those not held, by deadline
	held    map[string]*fetchWait // those held to the next second
	sent    map[string]int        // unit -> forwards this second (fetchRate)
	stats   CursorStats

	// The other hubs' Cursors (see peerSubject): each one's last sign of
	// life, and the last request each unit has waiting on one of them.
	id     string
	peers  map[string]time.Time
	remote map[string]heldNote
}

// Hubs tell each other the requests they keep waiting (peerHeld) and
// that they live (peerAlive, every second), on subjects of the EDX
// account, where units publish nothing. A hub that stops cleanly ends the
// requests it keeps; one that dies keeps them from their units until their
// wait runs out (up to protocol.MaxFetchWait). So when a hub goes silent
// for peerDead, the others end the requests it kept (protocol.FetchEndWait)
// and each of those units asks again, at once, of a hub that lives. A hub
// tells of its requests only while it knows another hub, and tells a hub
// new to it every request it keeps then: one alone publishes only its
// beat.
// Ending a request that was answered meanwhile costs nothing: the unit
// ignores an answer to a request it no longer waits on.
const (
	peerSubject = "edx.hubs.fetch."
	peerHeld    = peerSubject + "held"
	peerAlive   = peerSubject + "alive"
	peerDead    = 5 * time.Second
)

// heldNote is what a hub tells the others of a request it keeps waiting.
type heldNote struct {
	Hub      string    `json:"hub"`
	Unit     string    `json:"unit"`
	Inbox    string    `json:"inbox"`
	Deadline time.Time `json:"deadline"`
}

// CursorStats counts what Cursors did.
type CursorStats struct {
	Requests  uint64 // fetch requests
	Forwarded uint64 // answered by a direct get
	Ended     uint64 // answered with an end (wait out, replaced, refused)
	Invalid   uint64 // refused
	Held      uint64 // held to the next second (fetchRate)
	Resets    uint64 // cursors past the stream's end, started again
	Orphaned  uint64 // requests of a hub gone silent, ended so that their units ask again
	Waiting   int    // requests waiting now
}

type fetchWait struct {
	unit     string
	req      protocol.FetchRequest
	deadline time.Time
	held     bool // over fetchRate: at the next second, answered as if new
	at       int  // its place in Cursors.due
}

// keep keeps w waiting, in place of its unit's request if one waits (which
// it returns); c.mu is held. Each second expire looks only at the requests
// whose deadline came and at those held: going over every request (a map
// of 10,000 units' pointers, each a miss of the processor's caches on a
// large heap) took 20 ms a second, two thirds of an idle hub's CPU.
func (c *Cursors) keep(w *fetchWait) *fetchWait {
	old := c.drop(w.unit)
	c.waiting[w.unit] = w
	if w.held {
		c.held[w.unit] = w
	} else {
		heap.Push(&c.due, w)
	}
	return old
}

// drop stops keeping unit's request, and returns it (nil if none); c.mu
// is held.
func (c *Cursors) drop(unit string) *fetchWait {
	w := c.waiting[unit]
	if w == nil {
		return nil
	}
	delete(c.waiting, unit)
	if w.held {
		delete(c.held, unit)
	} else {
		heap.Remove(&c.due, w.at)
	}
	return w
}

// waitHeap orders requests by deadline; each knows its place (at).
type waitHeap []*fetchWait

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].at, h[j].at = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*fetchWait)
	w.at = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.at = -1
	return w
}

// fetchRate is how many requests a second of one unit the server answers
// from the stream (a batched direct get, up to UnitPullMessages messages);
// more wait for the next second, or for a message to the unit. A unit
// catching up gets up to some 5,000 messages a second so, and one asking
// again and again for what it has not acknowledged costs the server no
// more than that.
const fetchRate = 20

// fetchQueue is the queue group of every hub's Cursors.
const fetchQueue = "edx-hub-fetch"

// maxFetchRequest is the largest fetch request a hub reads.
const maxFetchRequest = 1024

// NewCursors returns the Cursors of the hub's connection to the EDX account
// (nc, js); trim learns the units' floors.
func NewCursors(nc *nats.Conn, js jetstream.JetStream, trim *Trimmer, log *slog.Logger) *Cursors {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cursors{nc: nc, js: js, trim: trim, log: log, now: time.Now, last: map[string]uint64{}, waiting: map[string]*fetchWait{}, held: map[string]*fetchWait{}, sent: map[string]int{},
		id: nats.NewInbox()[len(nats.InboxPrefix):], peers: map[string]time.Time{}, remote: map[string]heldNote{}}
	c.streamLast = c.lastSeq
	c.debug = log.Enabled(context.Background(), slog.LevelDebug)
	return c
}

// Stats returns what the Cursors did so far.
func (c *Cursors) Stats() CursorStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Waiting = len(c.waiting)
	return s
}

// Start follows EDX_DELIVER and subscribes to the units' fetch requests;
// it answers them until ctx is done, and then ends the requests that wait.
func (c *Cursors) Start(ctx context.Context) error {
	st, err := c.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return fmt.Errorf("broker: cursors: %w", err)
	}
	c.mu.Lock()
	c.top = max(c.top, st.CachedInfo().State.LastSeq)
	c.mu.Unlock()
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true, FilterSubjects: []string{protocol.SubjectDeliverPrefix + ">"}})
	if err != nil {
		return fmt.Errorf("broker: cursors: follow %s: %w", protocol.StreamDeliver, err)
	}
	cc, err := oc.Consume(c.stored)
	if err != nil {
		return fmt.Errorf("broker: cursors: follow %s: %w", protocol.StreamDeliver, err)
	}
	sub, err := c.nc.QueueSubscribe(protocol.SubjectFetchPrefix+">", fetchQueue, c.fetch)
	if err != nil {
		cc.Stop()
		return fmt.Errorf("broker: cursors: %w", err)
	}
	sub.SetPendingLimits(-1, 64<<20)
	psub, err := c.nc.Subscribe(peerSubject+"*", c.peer)
	if err != nil {
		sub.Unsubscribe()
		cc.Stop()
		return fmt.Errorf("broker: cursors: %w", err)
	}
	psub.SetPendingLimits(-1, 64<<20)
	// Started means listening: a unit's first request, which no hub
	// answering within seconds ends its pull, must not reach the server
	// before this hub's subscription does (CI: TestCursorsUnderLoad, "no
	// hub answers fetch requests" once in many runs). A connection down now
	// subscribes again when it comes back.
	if err := c.nc.Flush(); err != nil {
		c.log.Warn("broker: cursors: the fetch subscription not confirmed by the server", "err", err)
	}
	alive, _ := json.Marshal(heldNote{Hub: c.id})
	c.nc.Publish(peerAlive, alive)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				sub.Unsubscribe()
				psub.Unsubscribe()
				cc.Stop()
				c.mu.Lock()
				ws := c.waiting
				c.waiting, c.held, c.due = map[string]*fetchWait{}, map[string]*fetchWait{}, nil
				c.mu.Unlock()
				for _, w := range ws {
					c.end(w.req.Inbox, protocol.FetchEndStopping, "")
				}
				return
			case <-t.C:
				c.nc.Publish(peerAlive, alive)
				c.expire()
				c.orphans()
			}
		}
	}()
	return nil
}

// stored follows one message stored in EDX_DELIVER.
func (c *Cursors) stored(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	unit, seq := protocol.UnitFromSubject(m.Subject()), md.Sequence.Stream
	c.mu.Lock()
	c.last[unit] = max(c.last[unit], seq)
	c.top = max(c.top, seq)
	w := c.waiting[unit]
	if w != nil && w.req.After < seq {
		c.drop(unit)
	} else {
		w = nil
	}
	c.mu.Unlock()
	if w != nil {
		if c.debug {
			c.log.Debug("broker: fetch: a message wakes the unit's request", "unit", unit, "seq", seq, "inbox", w.req.Inbox)
		}
		c.forward(w.unit, w.req)
	}
}

// fetch takes one unit's request.
func (c *Cursors) fetch(m *nats.Msg) {
	unit, ok := strings.CutPrefix(m.Subject, protocol.SubjectFetchPrefix)
	var req protocol.FetchRequest
	err := validUnit(unit)
	if err == nil && len(m.Data) > maxFetchRequest {
		err = fmt.Errorf("request of %d bytes, more than %d", len(m.Data), maxFetchRequest)
	}
	if err == nil {
		err = json.Unmarshal(m.Data, &req)
	}
	if err == nil {
		err = validInbox(unit, req.Inbox)
	}
	c.mu.Lock()
	c.stats.Requests++
	if !ok || err != nil {
		c.stats.Invalid++
		c.mu.Unlock()
		c.log.Debug("broker: fetch refused", "subject", m.Subject, "err", err)
		if ok && req.Inbox != "" && validInbox(unit, req.Inbox) == nil {
			c.end(req.Inbox, protocol.FetchEndInvalid, err.Error())
		}
		return
	}
	req.Ack = min(req.Ack, req.After)
	req.Max = min(max(req.Max, 1), protocol.UnitPullMessages)
	req.MaxBytes = min(max(req.MaxBytes, 1<<20), 64<<20)
	wait := min(time.Duration(max(req.WaitMS, 0))*time.Millisecond, protocol.MaxFetchWait)
	old := c.drop(unit)
	last := c.last[unit]
	reset := req.After > c.top
	verify := !reset && req.Empty && last > req.After
	forward := !reset && !verify && last > req.After
	if forward || verify {
		if c.sent[unit] >= fetchRate {
			// Held to the next second, or until a message comes.
			forward, verify = false, false
			c.stats.Held++
			c.keep(&fetchWait{unit: unit, req: req, deadline: c.now().Add(time.Second), held: true})
		} else {
			c.sent[unit]++
		}
	} else if !reset && wait > 0 {
		c.keep(&fetchWait{unit: unit, req: req, deadline: c.now().Add(wait)})
	}
	delete(c.remote, unit) // the unit asked here: what it asked before is done
	kept := c.waiting[unit]
	held := kept != nil && kept.held
	c.mu.Unlock()
	if c.debug {
		what := "answered: nothing new"
		switch {
		case reset:
			what = "cursor past the end: looking at the leader"
		case verify:
			what = "last answer empty: asking the leader"
		case forward:
			what = "sent from the stream"
		case held:
			what = "held to the next second"
		case kept != nil:
			what = "kept waiting"
		}
		c.log.Debug("broker: fetch: "+what, "unit", unit, "inbox", req.Inbox, "after", req.After, "ack", req.Ack, "wait", wait, "empty", req.Empty, "last", last, "replaced", old != nil)
	}
	if kept != nil {
		c.tell(kept)
	}
	if old != nil {
		c.end(old.req.Inbox, protocol.FetchEndReplaced, "")
	}
	if req.Ack > 0 && c.trim != nil && !reset {
		c.trim.Acked(unit, req.Ack)
	}
	switch {
	case reset:
		go c.checkReset(unit, req, wait)
	case verify:
		go c.verify(unit, req, wait)
	case forward:
		c.forward(unit, req)
	case wait == 0 && !held:
		c.end(req.Inbox, protocol.FetchEndWait, "")
	}
}

// verify looks whether the unit has a message after req.After, which the
// server did not find when the hub last sent it to look (an answer that
// was empty): the message expired or was removed, or the server that
// answered (any replica answers a direct get) had not stored it yet. It
// asks the stream's leader, once the leader has applied the unit's last
// message as this hub knows it (leaderAt): on a cluster the leader too can
// be behind the replica this hub follows, and a leader asked too soon
// answered "nothing" for a message it had not applied yet; the hub then
// forgot the message, and the unit's request waited deaf to it (edx bench
// on the 3-node cluster at 1,500 units: a delivery unheard for over 60 s in
// 3 of 5 runs; traced: the follower saw 2713 at .412, the leader answered
// "none" at .453). A leader still behind after its looks (the stream made
// anew, or a leader far behind) leaves the unit's last as it is, and the
// request waits: the next message for the unit, or the request's end,
// has the unit look again.
func (c *Cursors) verify(unit string, req protocol.FetchRequest, wait time.Duration) {
	c.mu.Lock()
	seen := c.last[unit]
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader, err := c.leaderAt(ctx, seen)
	if err != nil {
		c.log.Warn("broker: fetch: the stream's last sequence", "unit", unit, "err", err)
		c.end(req.Inbox, protocol.FetchEndWait, "")
		return
	}
	b, _ := json.Marshal(map[string]any{"seq": req.After + 1, "next_by_subj": protocol.DeliverSubject(unit)})
	r, err := c.nc.Request("$JS.API.STREAM.MSG.GET."+protocol.StreamDeliver, b, 10*time.Second)
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err == nil {
		err = json.Unmarshal(r.Data, &resp)
	}
	switch {
	case err == nil && resp.Message != nil && resp.Message.Seq > req.After:
		if c.debug {
			c.log.Debug("broker: fetch: the leader has the unit's next message", "unit", unit, "after", req.After, "seq", resp.Message.Seq, "leader_last", leader)
		}
		time.Sleep(50 * time.Millisecond) // a replica catching up
		c.forward(unit, req)
		return
	case err == nil && resp.Error != nil && resp.Error.Code != 404:
		err = errors.New(resp.Error.Description)
		fallthrough
	case err != nil:
		c.log.Warn("broker: fetch: looking for a unit's next message", "unit", unit, "err", err)
		c.end(req.Inbox, protocol.FetchEndWait, "")
		return
	}
	if c.debug {
		c.log.Debug("broker: fetch: the leader has nothing after the unit's cursor", "unit", unit, "after", req.After, "seen", seen, "leader_last", leader)
	}
	c.mu.Lock()
	if c.last[unit] != seen {
		// A message for the unit was stored while the leader was asked:
		// it is after req.After. Lowering last would forget it, and keep
		// the request deaf to it until the next message for the unit.
		c.mu.Unlock()
		c.forward(unit, req)
		return
	}
	if leader < seen {
		c.log.Warn("broker: fetch: the stream's leader is behind this hub; the unit's request waits", "unit", unit, "after", req.After, "seen", seen, "leader", leader)
	} else if c.last[unit] > req.After {
		c.last[unit] = req.After // nothing after it: what follows is new
	}
	if _, replaced := c.waiting[unit]; !replaced && wait > 0 {
		w := &fetchWait{unit: unit, req: req, deadline: c.now().Add(wait)}
		c.keep(w)
		c.mu.Unlock()
		c.tell(w)
		return
	}
	c.mu.Unlock()
	c.end(req.Inbox, protocol.FetchEndWait, "")
}

// checkReset looks at the stream's last sequence for a cursor past the
// last this hub saw: the follower may simply be behind the server that
// answered the unit. Only a cursor past the stream's own end was kept on
// another stream (this one made anew), and the unit starts again from the
// start; any other is taken as new. On a cluster the stream's leader can
// itself be behind the replica that answered the unit (each server applies
// what the group agreed on at its own pace): a cursor past its end is
// looked at again (leaderAt) before the unit is told to start again.
// Starting again falsely costs the unit every message it has again (edx
// bench on the 3-node cluster: 9 s of deliveries at 2 units, "after=3413
// last=3411"); waiting costs a unit whose stream was made anew some
// seconds, once.
func (c *Cursors) checkReset(unit string, req protocol.FetchRequest, wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last, err := c.leaderAt(ctx, req.After)
	if err != nil {
		c.log.Warn("broker: fetch: the stream's last sequence", "unit", unit, "err", err)
		c.end(req.Inbox, protocol.FetchEndWait, "")
		return
	}
	if req.After > last {
		c.mu.Lock()
		c.stats.Resets++
		c.mu.Unlock()
		c.log.Info("broker: fetch: a unit's cursor is past the stream's end, it starts again", "unit", unit, "after", req.After, "last", last)
		c.end(req.Inbox, protocol.FetchEndReset, "")
		return
	}
	c.mu.Lock()
	c.top = max(c.top, last)
	_, replaced := c.waiting[unit]
	forward := c.last[unit] > req.After
	var kept *fetchWait
	if !replaced && !forward && wait > 0 {
		kept = &fetchWait{unit: unit, req: req, deadline: c.now().Add(wait)}
		c.keep(kept)
	}
	c.mu.Unlock()
	switch {
	case kept != nil:
		c.tell(kept)
	case replaced:
	case forward:
		c.forward(unit, req)
	case wait == 0:
		c.end(req.Inbox, protocol.FetchEndWait, "")
	}
}

// leaderAt returns the stream's last sequence as its leader has it, once
// that is at least seq: it looks again up to leaderLooks times, the first
// leaderPause later and each pause twice the last (some 3 s in all), and
// then returns what the leader has, which may be less.
func (c *Cursors) leaderAt(ctx context.Context, seq uint64) (uint64, error) {
	last, err := c.streamLast(ctx)
	pause := leaderPause
	for try := 0; err == nil && last < seq && try < leaderLooks; try++ {
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		pause *= 2
		last, err = c.streamLast(ctx)
	}
	return last, err
}

// leaderLooks and leaderPause: see leaderAt.
var (
	leaderLooks = 6
	leaderPause = 50 * time.Millisecond
)

// lastSeq returns EDX_DELIVER's last sequence, as its leader has it.
func (c *Cursors) lastSeq(ctx context.Context) (uint64, error) {
	st, err := c.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.LastSeq, nil
}

// directGet is a batched direct get request (ADR-31).
type directGet struct {
	Seq        uint64 `json:"seq"`
	NextBySubj string `json:"next_by_subj"`
	Batch      int    `json:"batch"`
	MaxBytes   int    `json:"max_bytes"`
}

// forward has the server send the unit's messages after req.After to the
// request's inbox.
func (c *Cursors) forward(unit string, req protocol.FetchRequest) {
	b, _ := json.Marshal(directGet{Seq: req.After + 1, NextBySubj: protocol.DeliverSubject(unit), Batch: req.Max, MaxBytes: req.MaxBytes})
	c.mu.Lock()
	c.stats.Forwarded++
	c.mu.Unlock()
	if err := c.nc.PublishMsg(&nats.Msg{Subject: "$JS.API.DIRECT.GET." + protocol.StreamDeliver, Reply: req.Inbox, Data: b}); err != nil {
		c.log.Warn("broker: fetch", "unit", unit, "err", err)
	}
}

// end answers a request with an end and no message.
func (c *Cursors) end(inbox, why, detail string) {
	h := nats.Header{protocol.HeaderFetch: {why}}
	if detail != "" {
		h.Set(protocol.HeaderFetchError, detail)
	}
	c.mu.Lock()
	c.stats.Ended++
	c.mu.Unlock()
	c.nc.PublishMsg(&nats.Msg{Subject: inbox, Header: h})
}

// expire ends the requests whose wait ran out, and starts a new second of
// fetchRate: the requests held over it are answered from the stream.
func (c *Cursors) expire() {
	now := c.now()
	var out, again []*fetchWait
	c.mu.Lock()
	clear(c.sent)
	for len(c.due) > 0 && !now.Before(c.due[0].deadline) {
		w := heap.Pop(&c.due).(*fetchWait)
		delete(c.waiting, w.unit)
		out = append(out, w)
	}
	for u, w := range c.held {
		again = append(again, w)
		delete(c.waiting, u)
		c.sent[u]++
	}
	clear(c.held)
	c.mu.Unlock()
	for _, w := range out {
		c.end(w.req.Inbox, protocol.FetchEndWait, "")
	}
	for _, w := range again {
		if w.req.Empty {
			go c.verify(w.unit, w.req, min(time.Duration(max(w.req.WaitMS, 0))*time.Millisecond, protocol.MaxFetchWait))
		} else {
			c.forward(w.unit, w.req)
		}
	}
}

// tell lets the other hubs know of a request this one keeps waiting, if it
// knows another hub: a lone hub tells no one. c.mu must not be held.
func (c *Cursors) tell(w *fetchWait) {
	c.mu.Lock()
	alone := len(c.peers) == 0
	c.mu.Unlock()
	if alone {
		return
	}
	b, _ := json.Marshal(heldNote{Hub: c.id, Unit: w.unit, Inbox: w.req.Inbox, Deadline: w.deadline})
	c.nc.Publish(peerHeld, b)
}

// peer takes another hub's note: a request it keeps, or that it lives.
func (c *Cursors) peer(m *nats.Msg) {
	var n heldNote
	if len(m.Data) > maxFetchRequest || json.Unmarshal(m.Data, &n) != nil || n.Hub == "" || n.Hub == c.id {
		return
	}
	held := m.Subject == peerHeld
	if held && (validUnit(n.Unit) != nil || validInbox(n.Unit, n.Inbox) != nil) {
		return
	}
	c.mu.Lock()
	_, known := c.peers[n.Hub]
	c.peers[n.Hub] = c.now()
	if held {
		c.remote[n.Unit] = n
	}
	var ws []*fetchWait
	if !known {
		// A hub new to this one: it learns every request kept here
		// (told only while another hub lives, so a lone hub tells no one).
		for _, w := range c.waiting {
			ws = append(ws, w)
		}
	}
	c.mu.Unlock()
	if !known {
		c.log.Info("broker: cursors: another hub answers fetch requests", "hub", n.Hub, "requests_told", len(ws))
	}
	for _, w := range ws {
		c.tell(w)
	}
}

// orphans ends the requests that hubs gone silent for peerDead kept, so
// that their units ask again of a hub that lives; and forgets the notes
// whose wait ran out.
func (c *Cursors) orphans() {
	now := c.now()
	var dead []string
	var ends []heldNote
	c.mu.Lock()
	for h, seen := range c.peers {
		if now.Sub(seen) >= peerDead {
			dead = append(dead, h)
			delete(c.peers, h)
		}
	}
	for u, n := range c.remote {
		switch {
		case !now.Before(n.Deadline):
			delete(c.remote, u)
		case slices.Contains(dead, n.Hub):
			delete(c.remote, u)
			if c.waiting[u] == nil {
				ends = append(ends, n)
			}
		}
	}
	c.stats.Orphaned += uint64(len(ends))
	c.mu.Unlock()
	for _, h := range dead {
		c.log.Warn("broker: cursors: a hub went silent; the units whose requests it kept are told to ask again", "hub", h, "silent_for", peerDead, "units", countHub(ends, h))
	}
	for _, n := range ends {
		c.end(n.Inbox, protocol.FetchEndWait, "")
	}
}

func countHub(ns []heldNote, hub string) int {
	k := 0
	for _, n := range ns {
		if n.Hub == hub {
			k++
		}
	}
	return k
}

// validInbox reports whether inbox is a literal subject under unit's inbox
// prefix: the hub sends nowhere else for it.
func validInbox(unit, inbox string) error {
	rest, ok := strings.CutPrefix(inbox, protocol.InboxPrefix(unit)+".")
	if !ok || rest == "" || len(inbox) > 256 || strings.ContainsAny(rest, "*> \t\r\n") || strings.Contains(rest, "..") || strings.HasSuffix(rest, ".") {
		return fmt.Errorf("inbox %q is not the unit's", inbox)
	}
	return nil
}
