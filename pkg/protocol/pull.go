package protocol

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// UnitPull reads a unit's consumer as jetstream.Consumer.Messages does
// (UnitPullOptions), and starts its pull again, on a new inbox, whenever the
// connection comes back or a heartbeat is missed.
//
// Messages alone does not survive a reconnect under load: the pull requests
// it sent before are still waiting on the server, which delivers to them
// again once the inbox is subscribed again, while Messages, which counts
// them as lost, sends a full new request to the same inbox. Up to twice
// UnitPullMessages messages then arrive for a buffer of UnitPullMessages;
// nats.go drops what does not fit ("slow consumer, messages dropped") and
// keeps counting the dropped messages as still to come, so it stops
// pulling. The server holds the dropped messages as delivered until the
// ack wait, and redelivers them only to a pull that waits: a busy unit saw
// its deliveries stop for 30 s to minutes (TestUnitPullSurvivesReconnect;
// a 3-node cluster run of edx bench at 1,500 units lost one delivery for
// the bench's minute).
//
// UnitPull drains the old iterator instead (its buffered messages come
// first, in order) and pulls on a new inbox: the server drops the old
// requests when it finds no interest in their inbox, so each buffer only
// receives what its own requests asked for.
type UnitPull struct {
	nc       *nats.Conn
	cons     jetstream.Consumer
	opts     []jetstream.PullMessagesOpt
	statuses chan nats.Status

	mu      sync.Mutex
	cur     jetstream.MessagesContext
	old     []jetstream.MessagesContext
	renew   bool // the connection came back: pull on a new inbox
	wake    context.CancelFunc
	stopped bool
	renewed int
}

// PullUnit starts reading cons, a unit's consumer, over nc, the connection
// cons was looked up on, pulling at most maxBytes at once (UnitPullOptions).
func PullUnit(nc *nats.Conn, cons jetstream.Consumer, maxBytes int) (*UnitPull, error) {
	p := &UnitPull{nc: nc, cons: cons, opts: UnitPullOptions(maxBytes)}
	it, err := cons.Messages(p.opts...)
	if err != nil {
		return nil, err
	}
	p.cur = it
	// Registered after the first pull: a reconnect before it is seen by
	// Messages' own pull, sent once the connection is back.
	p.statuses = nc.StatusChanged(nats.CONNECTED)
	go func() {
		for range p.statuses {
			p.mu.Lock()
			p.renew = true
			if p.wake != nil {
				p.wake()
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// Next returns the next message, blocking until there is one. It returns
// jetstream.ErrMsgIteratorClosed once Stop was called or the connection
// is closed, and other errors (a missing heartbeat, a consumer deleted) as
// jetstream's iterator does, after which it goes on pulling.
func (p *UnitPull) Next() (jetstream.Msg, error) {
	for {
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return nil, jetstream.ErrMsgIteratorClosed
		}
		if len(p.old) > 0 {
			old := p.old[0]
			p.mu.Unlock()
			// Drained: what it holds, then closed.
			if m, err := old.Next(); err == nil {
				return m, nil
			}
			p.mu.Lock()
			if len(p.old) > 0 && p.old[0] == old {
				p.old = p.old[1:]
			}
			p.mu.Unlock()
			continue
		}
		if p.renew {
			p.renew = false
			if err := p.restart(); err != nil {
				p.mu.Unlock()
				return nil, err
			}
		}
		cur := p.cur
		ctx, wake := context.WithCancel(context.Background())
		p.wake = wake
		p.mu.Unlock()

		m, err := cur.Next(jetstream.NextContext(ctx))
		wake()
		if err == nil {
			return m, nil
		}
		if errors.Is(err, context.Canceled) {
			continue // renew, or Stop
		}
		if errors.Is(err, jetstream.ErrNoHeartbeat) {
			// The server's requests may still be there, or not: a new
			// inbox either way.
			p.mu.Lock()
			p.renew = true
			p.mu.Unlock()
		}
		return nil, err
	}
}

// restart drains the current iterator and pulls on a new one; p.mu is held.
func (p *UnitPull) restart() error {
	p.cur.Drain()
	p.old = append(p.old, p.cur)
	it, err := p.cons.Messages(p.opts...)
	if err != nil {
		// Tried again at the next call.
		p.renew = true
		p.cur = p.old[len(p.old)-1]
		p.old = p.old[:len(p.old)-1]
		return err
	}
	p.cur = it
	p.renewed++
	return nil
}

// Renewed is how many times the pull was started again.
func (p *UnitPull) Renewed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.renewed
}

// Stop ends the pull: Next returns jetstream.ErrMsgIteratorClosed.
func (p *UnitPull) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	if p.wake != nil {
		p.wake()
	}
	its := append([]jetstream.MessagesContext{p.cur}, p.old...)
	p.mu.Unlock()
	p.nc.RemoveStatusListener(p.statuses)
	for _, it := range its {
		it.Stop()
	}
}
