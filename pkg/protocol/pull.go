package protocol

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// UnitPull reads a unit's consumer: the agent's, and edx bench's simulated
// units'. It is a loop of single pull requests (jetstream.Consumer.Fetch),
// each for at most UnitPullMessages messages and maxBytes bytes, lasting
// UnitPullExpiry with a heartbeat every UnitPullHeartbeat (or the unit's
// keepalive), each on a new inbox, and a new one as soon as the last has
// ended. A reconnect ends the current request at once; the few messages on
// their way to it then (and acks lost with the connection) come again after
// the consumer's ack wait, and the agent takes each delivery once.
//
// Ending it at once matters. A unit's request reaches its consumer through
// the UNITS account's service import, which maps the reply back to the
// unit's inbox; the server drops that mapping when the old connection
// closes, but keeps the request waiting on the consumer for as long as the
// inbox has a subscriber, and nats.go subscribes it again on the new
// connection. Left open, the request would take every other message to the
// unit into nothing until its expiry (10 minutes), each found lost only at
// the ack wait (tried: TestConnectCountsReconnects in hub/bench). Ended,
// its inbox unsubscribed, the server drops it. One window remains: a
// request still on its way to the consumer when the connection breaks
// reaches it after the mapping is gone, and is then kept until its expiry
// whatever the unit does (the server counts the exporting account's own
// interest in the reply). It needs a reconnect within the moment between a
// request's sending and the consumer taking it, and an idle unit sends one
// request every ten minutes. A pull sends no request while its connection
// is down (TestUnitPullWaitsForTheConnection): nats.go would keep it and
// send it on the new connection, just before the reconnect ended it, and
// the server would keep it so.
//
// Why not jetstream's Messages, which keeps pulls going by itself:
//
//   - It does not survive a reconnect under load. The requests it sent
//     before are still waiting on the server, which delivers to them again
//     once the inbox is subscribed again, while Messages, which counts them
//     as lost, sends a full new request to the same inbox. Up to twice
//     UnitPullMessages messages then arrive for a buffer of
//     UnitPullMessages; nats.go drops what does not fit ("slow consumer,
//     messages dropped") and counts the dropped messages as still to come,
//     so it stops pulling. The server holds them as delivered until the ack
//     wait and redelivers them only to a pull that waits: a busy unit's
//     deliveries stopped for 30 s to minutes (TestUnitPullSurvivesReconnect;
//     a 3-node cluster run of edx bench at 1,500 units lost one delivery
//     for the bench's minute).
//   - Its heartbeat is at most 30 s, which is most of an idle unit's cost
//     (UnitPullHeartbeat).
//
// Each request has a buffer of its own, of twice what it asks for, so no
// message is dropped. The count is given with the bytes: with a byte limit
// alone, nats.go asks for up to a million messages and makes its buffer
// that long, 8 MB per pull that the garbage collector walks (edx bench,
// which pulls for every unit it simulates, ran 24 GiB out at 5,383 units:
// TestUnitPullMemory). maxBytes must not be less than the largest message
// the unit can be sent.
type UnitPull struct {
	cons      jetstream.Consumer
	maxBytes  int
	heartbeat time.Duration
	nc        *nats.Conn
	statuses  chan nats.Status

	mu      sync.Mutex
	batch   jetstream.MessageBatch // the request being read, or nil
	end     context.CancelFunc     // ends it
	got     int                    // messages it brought
	failed  int                    // requests in a row that failed with none
	stopped bool
	stop    chan struct{}
	pulls   int
	conn    uint64 // the connection the request went out on: nc's reconnects then
}

// PullUnit starts reading cons, a unit's consumer, over nc, the connection
// cons was looked up on, at most maxBytes at once, with a heartbeat every
// heartbeat while there is nothing to send (0: UnitPullHeartbeat; at most
// MaxUnitKeepalive).
func PullUnit(nc *nats.Conn, cons jetstream.Consumer, maxBytes int, heartbeat time.Duration) (*UnitPull, error) {
	switch {
	case heartbeat == 0:
		heartbeat = UnitPullHeartbeat
	case heartbeat < MinUnitKeepalive || heartbeat > MaxUnitKeepalive:
		return nil, fmt.Errorf("protocol: pull heartbeat %s: want %s to %s", heartbeat, MinUnitKeepalive, MaxUnitKeepalive)
	}
	p := &UnitPull{cons: cons, maxBytes: maxBytes, heartbeat: heartbeat, nc: nc, statuses: nc.StatusChanged(nats.CONNECTED), stop: make(chan struct{})}
	if nc.IsConnected() {
		p.mu.Lock()
		err := p.pull()
		p.mu.Unlock()
		if err != nil {
			nc.RemoveStatusListener(p.statuses)
			return nil, err
		}
	}
	go func() {
		// Back from a reconnect: a request sent before it may have been
		// lost with the server it waited on, or not. Either way a new one,
		// on a new inbox; what the old one holds is read first. A request
		// Next sent on the new connection before this event came is kept:
		// ending it would leave it waiting on the server with no one
		// listening (TestUnitPullWaitsForTheConnection saw two waiting),
		// taking the unit's next message until the ack wait.
		for range p.statuses {
			now := p.nc.Stats().Reconnects
			p.mu.Lock()
			if p.end != nil && p.conn < now {
				p.end()
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// pull sends a new request; p.mu is held.
func (p *UnitPull) pull() error {
	conn := p.nc.Stats().Reconnects
	ctx, end := context.WithTimeout(context.Background(), UnitPullExpiry)
	b, err := p.cons.Fetch(UnitPullMessages, jetstream.FetchMaxBytes(p.maxBytes),
		jetstream.FetchHeartbeat(p.heartbeat), jetstream.FetchContext(ctx))
	if err != nil {
		end()
		return err
	}
	p.batch, p.end, p.got, p.conn = b, end, 0, conn
	p.pulls++
	return nil
}

// Next returns the next message, blocking until there is one. It returns
// jetstream.ErrMsgIteratorClosed once Stop was called or the connection is
// closed, and wrapped with the reason when the consumer is gone (deleted,
// not found): the caller looks it up again. Other errors (a heartbeat
// missed, a request the server refused) end one request: the next call
// pulls again, after a pause that grows while requests keep failing.
func (p *UnitPull) Next() (jetstream.Msg, error) {
	for {
		p.mu.Lock()
		if p.stopped || p.nc.IsClosed() {
			p.mu.Unlock()
			return nil, jetstream.ErrMsgIteratorClosed
		}
		if p.batch == nil {
			if !p.nc.IsConnected() {
				// A request sent now would wait in nats.go's reconnect
				// buffer and go out on the new connection, where the
				// reconnect would end it at once: the server would then
				// keep it deaf until its expiry (see UnitPull). One request
				// ending while the connection is down (its heartbeats
				// missed: a hub down for 4 minutes) would do that.
				p.mu.Unlock()
				select {
				case <-time.After(unitPullConnectedPoll):
				case <-p.stop:
				}
				continue
			}
			if p.failed > 0 {
				pause := min(time.Duration(p.failed)*time.Second, UnitPullRetryMax)
				p.mu.Unlock()
				select {
				case <-time.After(pause):
				case <-p.stop:
				}
				p.mu.Lock()
				if p.stopped {
					p.mu.Unlock()
					continue
				}
			}
			if err := p.pull(); err != nil {
				p.failed++
				p.mu.Unlock()
				return nil, err
			}
		}
		b := p.batch
		p.mu.Unlock()

		if m, ok := <-b.Messages(); ok {
			p.mu.Lock()
			if p.batch == b {
				p.got++
				p.failed = 0
			}
			p.mu.Unlock()
			return m, nil
		}
		// The request ended: all it asked for came, it expired, it was
		// ended (a reconnect, Stop), or it failed.
		err := b.Error()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = nil
		}
		p.mu.Lock()
		if p.batch == b {
			p.end()
			if err != nil && p.got == 0 {
				p.failed++
			}
			p.batch, p.end = nil, nil
		}
		p.mu.Unlock()
		switch {
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrBadRequest):
			p.Stop()
			return nil, fmt.Errorf("%w: %w", jetstream.ErrMsgIteratorClosed, err)
		case err != nil:
			return nil, err
		}
	}
}

// unitPullConnectedPoll is how often a pull waiting for its connection
// looks again.
const unitPullConnectedPoll = 250 * time.Millisecond

// UnitPullRetryMax is the longest pause between requests that keep
// failing (one second more for each failure in a row, up to this).
const UnitPullRetryMax = 30 * time.Second

// Pulls is how many requests were sent.
func (p *UnitPull) Pulls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pulls
}

// Stop ends the pull: Next returns jetstream.ErrMsgIteratorClosed. The
// messages the current request brought and Next did not return come again
// after the consumer's ack wait.
func (p *UnitPull) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	close(p.stop)
	if p.end != nil {
		p.end()
	}
	p.mu.Unlock()
	p.nc.RemoveStatusListener(p.statuses)
}
