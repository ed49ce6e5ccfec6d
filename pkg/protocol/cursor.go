package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reading a unit's messages by cursor, without a consumer per unit (the
// hub's nats.streams.unit_consumers: cursor). The unit keeps its own
// cursor, the sequence in StreamDeliver up to which it has everything, and
// asks the hub for what follows on FetchSubject (a FetchRequest). The hub
// answers on the inbox the request names, under the unit's InboxPrefix:
// when it knows the unit has messages after the cursor, it has the server
// send them there at once (a batched direct get of the unit's subject,
// which ends with a status 204 or 404 message); otherwise it keeps the
// request until a message comes or the request's wait runs out, and then
// sends an end (HeaderFetch). The next request carries the unit's
// acknowledgement floor (Ack): everything up to it is handed over, and the
// hub removes it (Trimmer). Delivery stays at least once: the unit's agent
// hands each document and notice over once (agent/inbox), and a cursor it
// lost starts again from the oldest message the hub has not removed.
//
// What a unit costs the hub is then a waiting request (a few hundred bytes,
// answered at the latest after FetchWait) instead of a consumer on the
// server (some 40 KB and its timers: issue #13's per-unit cost).

// SubjectFetchPrefix is where units ask for their messages (FetchSubject).
const SubjectFetchPrefix = "edx.fetch."

// FetchSubject is the subject a unit asks for its messages on.
func FetchSubject(unit string) string { return SubjectFetchPrefix + unit }

// HeaderFetch, on a message of the hub to a fetch's inbox, ends the answer
// without messages, and says why: FetchEndWait (the request's wait ran
// out), FetchEndReplaced (the unit asked again), FetchEndStopping (the hub
// stops), FetchEndReset (the cursor is past the stream's last message: the
// stream is not the one the cursor was kept on, and the unit starts again
// from its start) or FetchEndInvalid (the request was refused;
// HeaderFetchError says why).
const (
	HeaderFetch      = "Edx-Fetch"
	HeaderFetchError = "Edx-Fetch-Error"

	FetchEndWait     = "wait"
	FetchEndReplaced = "replaced"
	FetchEndStopping = "stopping"
	FetchEndReset    = "reset"
	FetchEndInvalid  = "invalid"
)

// Waits of a fetch: FetchWait by default (the agent's nats.keepalive, as
// long as a consumer's pull heartbeat), at most MaxFetchWait (the hub
// shortens a longer one). A hub that dies with a unit's request waiting is
// noticed by the other hubs of its cluster, which end the request within
// seconds (hub/broker's Cursors); a lone hub, when the unit's request
// times out, FetchWait plus fetchGrace later. A connection lost is noticed
// at once.
const (
	FetchWait    = 2 * time.Minute
	MaxFetchWait = 10 * time.Minute
	fetchGrace   = 15 * time.Second
	// firstFetchTimeout bounds the first request of a pull, which asks
	// the hub to answer at once: it tells whether a hub reads units by
	// cursor.
	firstFetchTimeout = 5 * time.Second
)

// FetchRequest is a unit's request for its messages.
type FetchRequest struct {
	// Inbox is where the hub answers: under the unit's InboxPrefix.
	Inbox string `json:"inbox"`
	// After: the messages wanted come after this sequence.
	After uint64 `json:"after"`
	// Ack: every message of the unit up to this sequence is handed over;
	// the hub may remove them. At most After.
	Ack uint64 `json:"ack,omitempty"`
	// Max and MaxBytes bound one answer (the hub lowers them to its own
	// limits). MaxBytes must not be less than the largest message.
	Max      int `json:"max,omitempty"`
	MaxBytes int `json:"max_bytes,omitempty"`
	// WaitMS is how long the hub keeps the request while it has nothing to
	// send (0: answer at once).
	WaitMS int64 `json:"wait_ms,omitempty"`
	// Empty says the answer to the same After brought nothing although the
	// hub sent one at once: the hub then looks again before it sends
	// another.
	Empty bool `json:"empty,omitempty"`
}

// Headers of the server's direct get answers.
const (
	hdrSequence  = "Nats-Sequence"
	hdrSubject   = "Nats-Subject"
	hdrTimeStamp = "Nats-Time-Stamp"
	hdrStatus    = "Status"
)

// ErrNoFetchAnswer ends a CursorPull whose first request no hub answered:
// the hub reads units with consumers (or is not there).
var ErrNoFetchAnswer = errors.New("protocol: no hub answers fetch requests")

// CursorPull reads a unit's messages by cursor (see FetchRequest): the
// agent's, and edx bench's simulated units', when their hub keeps no
// consumer per unit. Its messages are jetstream.Msg, so that what reads a
// UnitPull reads it too: Ack (or Term) finishes a message, Nak and
// NakWithDelay have it fetched again (after the delay), InProgress does
// nothing (no ack wait). One request is out at a time, the next once every
// message of the last answer is finished, carrying the new floor.
type CursorPull struct {
	nc       *nats.Conn
	unit     string
	maxBytes int
	wait     time.Duration
	onFloor  func(uint64)
	log      *slog.Logger
	debug    bool // log takes debug records: each request and its answer

	out  chan *cursorMsg
	stop chan struct{}
	done chan struct{}
	err  error // why the loop ended (set before done is closed)

	mu       sync.Mutex
	after    uint64                // everything up to here was received
	open     map[uint64]*cursorMsg // received, not finished
	left     int                   // messages of the current answer not finished
	finished chan struct{}         // a message was finished
	floor    uint64                // last floor told (onFloor)
	pulls    int
	stopped  bool
	// cancelAsk ends the wait for the current answer: the connection
	// was lost, and the request with it.
	cancelAsk context.CancelFunc
	// rejoined: the connection was lost since the last request was sent.
	// The next request is then answered at once (no wait), and one lost
	// on the way is sent again after firstFetchTimeout: right after a
	// reconnect, the server the unit now uses may not yet know where the
	// hubs listen (nor the hubs where the unit does), and a waiting request
	// lost so went unnoticed for its wait and fetchGrace (e2e
	// TestClusterByCursor: a unit heard nothing for over 60 s after its
	// server was killed).
	rejoined bool
}

// PullCursor starts reading unit's messages over nc (a unit's connection,
// protocol.ConnectUnit) after the sequence from, at most maxBytes at once,
// each request waiting at most wait (0: FetchWait) for a message. onFloor,
// if not nil, is called with the unit's new acknowledgement floor when it
// rises: what the unit keeps to start from next time. log, if not nil and
// at debug level, is told of each request and of its answer (with the
// hub's debug log, how a message left unheard is traced).
func PullCursor(nc *nats.Conn, unit string, from uint64, maxBytes int, wait time.Duration, onFloor func(uint64), log *slog.Logger) *CursorPull {
	if wait <= 0 {
		wait = FetchWait
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &CursorPull{nc: nc, unit: unit, maxBytes: maxBytes, wait: min(wait, MaxFetchWait), onFloor: onFloor,
		log: log, debug: log.Enabled(context.Background(), slog.LevelDebug),
		out: make(chan *cursorMsg), stop: make(chan struct{}), done: make(chan struct{}),
		after: from, floor: from, open: map[uint64]*cursorMsg{}, finished: make(chan struct{}, 1)}
	go p.run()
	return p
}

// Next returns the next message, blocking until there is one. It returns
// jetstream.ErrMsgIteratorClosed once Stop was called or the connection is
// closed, wrapped with the reason when the pull ended by itself
// (ErrNoFetchAnswer, or requests that kept going unanswered): the caller
// then looks again at how its hub is read.
func (p *CursorPull) Next() (jetstream.Msg, error) {
	select {
	case m := <-p.out:
		return m, nil
	case <-p.done:
		if p.err != nil {
			return nil, fmt.Errorf("%w: %w", jetstream.ErrMsgIteratorClosed, p.err)
		}
		return nil, jetstream.ErrMsgIteratorClosed
	}
}

// Stop ends the pull. Messages not finished come again to the next pull
// from the floor.
func (p *CursorPull) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.stopped = true
		close(p.stop)
	}
}

// Pulls is how many requests were sent.
func (p *CursorPull) Pulls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pulls
}

// Floor is the unit's acknowledgement floor: every message up to it is
// finished.
func (p *CursorPull) Floor() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.floorLocked()
}

func (p *CursorPull) floorLocked() uint64 {
	f := p.after
	for s := range p.open {
		f = min(f, s-1)
	}
	return f
}

// cursorFailures is how many requests in a row may go unanswered before
// the pull ends (the hub may have changed how it is read).
const cursorFailures = 3

func (p *CursorPull) run() {
	defer close(p.done)
	sub, err := p.nc.SubscribeSync(p.nc.NewInbox() + ".*")
	if err != nil {
		p.err = err
		return
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1) // bounded by the request's Max and MaxBytes
	base := strings.TrimSuffix(sub.Subject, "*")
	// The wait for an answer is woken by the answer, by Stop, or by the
	// connection's loss, never by a timer of its own: a hub with 10,000
	// units waiting costs their agents nothing while nothing comes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	status := p.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer p.nc.RemoveStatusListener(status)
	go func() {
		for {
			select {
			case <-p.stop:
				cancel()
				return
			case <-ctx.Done():
				return
			case _, ok := <-status:
				if !ok {
					return
				}
				p.lost()
			}
		}
	}()
	answered, failed, empty := false, 0, false
	for n := 1; ; n++ {
		select {
		case <-p.stop:
			return
		default:
		}
		if p.nc.IsClosed() {
			return
		}
		if !p.nc.IsConnected() {
			// Sent now, the request would go out on the new connection
			// and wait there; it is simpler to send it then.
			if !p.pause(unitPullConnectedPoll) {
				return
			}
			continue
		}
		now := time.Now()
		p.mu.Lock()
		req := FetchRequest{Inbox: base + strconv.Itoa(n), After: p.after, Ack: p.floorLocked(), Max: UnitPullMessages, MaxBytes: p.maxBytes, Empty: empty}
		wait := p.wait
		retry := uint64(0)
		for s, m := range p.open {
			if m.retryAt.IsZero() {
				continue
			}
			if !m.retryAt.After(now) {
				if retry == 0 || s < retry {
					retry = s // the lowest due
				}
			} else {
				wait = min(wait, m.retryAt.Sub(now))
			}
		}
		p.pulls++
		probe := !answered || p.rejoined
		p.rejoined = false
		p.mu.Unlock()
		if retry != 0 {
			req.After, req.Max, req.Empty = retry-1, 1, false
		}
		if !probe {
			req.WaitMS = max(wait.Milliseconds(), 1)
		}
		timeout := firstFetchTimeout // a hub answers the first at once
		if !probe {
			timeout = time.Duration(req.WaitMS)*time.Millisecond + fetchGrace
		}
		if p.debug {
			p.log.Debug("protocol: fetch: asking", "unit", p.unit, "inbox", req.Inbox, "after", req.After, "ack", req.Ack, "wait_ms", req.WaitMS, "empty", req.Empty, "retry", retry)
		}
		msgs, end, err := p.ask(ctx, sub, req, timeout)
		if p.debug {
			p.logAnswer(req, msgs, end, err)
		}
		if err != nil {
			failed++
			if !answered {
				p.err = fmt.Errorf("%w: %w", ErrNoFetchAnswer, err)
				return
			}
			if failed >= cursorFailures {
				p.err = fmt.Errorf("protocol: %d fetch requests in a row unanswered: %w", failed, err)
				return
			}
			if probe {
				p.mu.Lock()
				p.rejoined = true // until one is answered
				p.mu.Unlock()
			}
			if !p.pause(min(time.Duration(failed)*time.Second, UnitPullRetryMax)) {
				return
			}
			continue
		}
		answered, failed = true, 0
		if end == FetchEndInvalid {
			p.err = fmt.Errorf("protocol: the hub refused a fetch request: %s", msgs[0].Header.Get(HeaderFetchError))
			return
		}
		if end == FetchEndReset {
			p.reset()
			continue
		}
		empty = end == "" && len(msgs) == 0 && retry == 0
		if !p.hand(msgs, retry) {
			return
		}
	}
}

// ask sends req and reads its answer until it ends: messages, then the
// server's end of the batch (end "") or the hub's end (HeaderFetch).
func (p *CursorPull) ask(ctx context.Context, sub *nats.Subscription, req FetchRequest, timeout time.Duration) ([]*nats.Msg, string, error) {
	b, _ := json.Marshal(req)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p.mu.Lock()
	p.cancelAsk = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cancelAsk = nil
		p.mu.Unlock()
	}()
	if err := p.nc.Publish(FetchSubject(p.unit), b); err != nil {
		return nil, "", err
	}
	if !p.nc.IsConnected() {
		cancel() // lost before the wait began: the request with it
	}
	var msgs []*nats.Msg
	for {
		m, err := sub.NextMsgWithContext(rctx)
		if err != nil {
			select {
			case <-p.stop:
				return nil, "", errors.New("stopped")
			default:
			}
			if len(msgs) > 0 {
				return msgs, "", nil // the batch's end lost: what came counts
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				err = nats.ErrTimeout
			}
			return nil, "", fmt.Errorf("fetch %s after %d: %w", p.unit, req.After, err)
		}
		if m.Subject != req.Inbox {
			continue // an earlier request's, late
		}
		if e := m.Header.Get(HeaderFetch); e != "" {
			if e == FetchEndInvalid {
				return []*nats.Msg{m}, e, nil
			}
			return msgs, e, nil
		}
		if s := m.Header.Get(hdrStatus); s != "" {
			if p.debug {
				p.log.Debug("protocol: fetch: the server's end", "unit", p.unit, "inbox", req.Inbox, "status", s, "description", m.Header.Get("Description"))
			}
			return msgs, "", nil // 204 end of batch, 404 none, 408 refused
		}
		msgs = append(msgs, m)
	}
}

// logAnswer logs the answer to req (debug).
func (p *CursorPull) logAnswer(req FetchRequest, msgs []*nats.Msg, end string, err error) {
	if err != nil {
		p.log.Debug("protocol: fetch: no answer", "unit", p.unit, "inbox", req.Inbox, "err", err)
		return
	}
	var first, last string
	if len(msgs) > 0 {
		first, last = msgs[0].Header.Get(hdrSequence), msgs[len(msgs)-1].Header.Get(hdrSequence)
	}
	p.log.Debug("protocol: fetch: answered", "unit", p.unit, "inbox", req.Inbox, "end", end, "messages", len(msgs), "first", first, "last", last)
}

// lost ends the wait for the current answer when the connection is down
// (its request, or the answer, went with it): the loop sends the request
// again once connected.
func (p *CursorPull) lost() {
	p.mu.Lock()
	p.rejoined = true
	c := p.cancelAsk
	p.mu.Unlock()
	if p.nc.IsConnected() {
		return
	}
	if c != nil {
		c()
	}
}

// hand gives the messages of an answer to Next, then waits until they are
// all finished, and tells the new floor. It returns false once stopped.
func (p *CursorPull) hand(msgs []*nats.Msg, retry uint64) bool {
	var todo []*cursorMsg
	p.mu.Lock()
	for _, m := range msgs {
		seq, err := strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64)
		if err != nil || m.Header.Get(hdrSubject) != DeliverSubject(p.unit) {
			continue // not a message of the unit's
		}
		if om := p.open[seq]; om != nil && seq == retry {
			om.retryAt, om.attempts, om.raw, om.settled = time.Time{}, om.attempts+1, m, false
			todo = append(todo, om)
			continue
		}
		if seq <= p.after {
			continue // had it
		}
		cm := &cursorMsg{p: p, seq: seq, raw: m, attempts: 1}
		p.open[seq] = cm
		p.after = seq
		todo = append(todo, cm)
	}
	if retry != 0 && (len(todo) == 0 || todo[0].seq != retry) {
		delete(p.open, retry) // gone from the stream: nothing to retry
	}
	p.left = len(todo)
	p.mu.Unlock()
	for _, m := range todo {
		select {
		case p.out <- m:
		case <-p.stop:
			return false
		}
	}
	for {
		p.mu.Lock()
		left := p.left
		p.mu.Unlock()
		if left <= 0 {
			break
		}
		select {
		case <-p.finished:
		case <-p.stop:
			return false
		}
	}
	p.mu.Lock()
	f := p.floorLocked()
	tell := f > p.floor
	if tell {
		p.floor = f
	}
	p.mu.Unlock()
	if tell && p.onFloor != nil {
		p.onFloor(f)
	}
	return true
}

// reset starts again from the stream's start: the cursor was kept on
// another stream (the hub's was made anew).
func (p *CursorPull) reset() {
	p.mu.Lock()
	p.after, p.floor = 0, 0
	clear(p.open)
	p.mu.Unlock()
	if p.onFloor != nil {
		p.onFloor(0)
	}
}

func (p *CursorPull) pause(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-p.stop:
		return false
	}
}

// finish ends the handling of m: done (acknowledged), or to be fetched
// again at retryAt.
func (p *CursorPull) finish(m *cursorMsg, done bool, delay time.Duration) {
	p.mu.Lock()
	if m.settled {
		p.mu.Unlock()
		return
	}
	m.settled = true
	if done {
		delete(p.open, m.seq)
	} else {
		m.retryAt = time.Now().Add(max(delay, time.Millisecond))
	}
	p.left--
	p.mu.Unlock()
	select {
	case p.finished <- struct{}{}:
	default:
	}
}

// cursorMsg is a message of a CursorPull.
type cursorMsg struct {
	p        *CursorPull
	seq      uint64
	raw      *nats.Msg
	attempts uint64
	retryAt  time.Time // to fetch again then (after a Nak)
	settled  bool      // finished in this delivery
}

func (m *cursorMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md := &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumDelivered: m.attempts, Stream: StreamDeliver}
	if t, err := time.Parse(time.RFC3339Nano, m.raw.Header.Get(hdrTimeStamp)); err == nil {
		md.Timestamp = t
	}
	return md, nil
}
func (m *cursorMsg) Data() []byte                       { return m.raw.Data }
func (m *cursorMsg) Headers() nats.Header               { return m.raw.Header }
func (m *cursorMsg) Subject() string                    { return m.raw.Header.Get(hdrSubject) }
func (m *cursorMsg) Reply() string                      { return "" }
func (m *cursorMsg) Ack() error                         { m.p.finish(m, true, 0); return nil }
func (m *cursorMsg) DoubleAck(context.Context) error    { return m.Ack() }
func (m *cursorMsg) Nak() error                         { m.p.finish(m, false, 0); return nil }
func (m *cursorMsg) NakWithDelay(d time.Duration) error { m.p.finish(m, false, d); return nil }
func (m *cursorMsg) InProgress() error                  { return nil }
func (m *cursorMsg) Term() error                        { return m.Ack() }
func (m *cursorMsg) TermWithReason(string) error        { return m.Ack() }
