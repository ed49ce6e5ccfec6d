package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/protocol"
)

// Publisher publishes a hub's decisions to the events stream. Each publish
// waits for the stream to store the event and returns its sequence (the
// first copy's, for a duplicate), which Follower.WaitApplied takes.
type Publisher struct {
	js  jetstream.JetStream
	hub string
	now func() time.Time
}

// NewPublisher publishes on js (the hub's connection to the EDX account) as
// the hub named hubID.
func NewPublisher(js jetstream.JetStream, hubID string) *Publisher {
	return &Publisher{js: js, hub: hubID, now: time.Now}
}

// publishTimeout bounds one publish; the caller retries (the pipeline naks).
const publishTimeout = 30 * time.Second

// Accepted publishes a document's acceptance with its index record.
func (p *Publisher) Accepted(ctx context.Context, rec index.Record) (uint64, error) {
	d, err := documentOf(rec)
	if err != nil {
		return 0, fmt.Errorf("events: accepted %s: %w", rec.Doc.ID, err)
	}
	return p.publish(ctx, &Event{Kind: Accepted, Document: d})
}

// Status publishes a recorded status: the entry every index records, with
// its flag and reception time.
func (p *Publisher) Status(ctx context.Context, e index.StatusEntry) (uint64, error) {
	if e.ReceivedAt.IsZero() {
		return 0, errors.New("events: status without its reception time")
	}
	return p.publish(ctx, &Event{Kind: Status, Status: &e})
}

// Rejected publishes a rejected submission or refused status.
func (p *Publisher) Rejected(ctx context.Context, r index.Rejected) (uint64, error) {
	return p.publish(ctx, &Event{Kind: Rejected, Rejected: &r})
}

// UnitChanged publishes a unit's record after a change (u.At set: the
// followers keep the latest of a unit's records).
func (p *Publisher) UnitChanged(ctx context.Context, u index.Unit) (uint64, error) {
	if u.At.IsZero() {
		return 0, fmt.Errorf("events: unit %s: a changed unit's record needs its time", u.ID)
	}
	return p.publish(ctx, &Event{Kind: Unit, Unit: &u})
}

func (p *Publisher) publish(ctx context.Context, e *Event) (uint64, error) {
	e.V, e.Hub, e.At = Version, p.hub, p.now().UTC()
	id := e.MsgID()
	body, err := json.Marshal(e)
	if err != nil {
		return 0, fmt.Errorf("events: %s %s: %w", e.Kind, id, err)
	}
	m := nats.NewMsg(Subject(e.Kind))
	m.Data = body
	m.Header.Set(protocol.HeaderMsgID, id)
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	ack, err := p.js.PublishMsg(pctx, m)
	if err != nil {
		return 0, fmt.Errorf("events: publish %s %s: %w", e.Kind, id, err)
	}
	return ack.Sequence, nil
}
