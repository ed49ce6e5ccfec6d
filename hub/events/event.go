// Package events is the hubs' shared record of decisions: the pipeline of
// any hub publishes what it decided (a document accepted, with its index
// record; a status recorded, with its flag; a submission or status
// rejected; a unit changed) to the EDX_EVENTS stream, and every hub applies
// every event to its own index through a durable consumer of its own
// (Follower), so that each hub's index is complete whichever hub decided.
//
// The index stays a projection of the archive (hub/projection): every
// event is published after what it reports is archived, so a hub that
// joins, or that lost events, rebuilds its index from the archive and
// follows the events from the sequence it noted before.
//
// Events are idempotent: each carries a Nats-Msg-Id derived from what it
// reports (the stream drops a retry's copy), applying one twice changes
// nothing, and kinds may arrive out of order (a status before its
// document: the follower waits for the document, then reads it from the
// archive).
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// Version is the events' schema version. A follower applies events of its
// version or older; a newer one waits (naked) until the hub is upgraded.
const Version = 1

// Kind is what an event reports.
type Kind string

// Kinds of events. A recipient's delivery state changes with the statuses
// it reports (01 delivered, 02 refused): the status event carries it; the
// routed state is part of the accepted document's record.
const (
	Accepted Kind = "accepted" // a document accepted: its index record
	Status   Kind = "status"   // a status recorded: the entry as indexed, with its flag
	Rejected Kind = "rejected" // a submission or status refused: the rejected record
	Unit     Kind = "unit"     // a unit registered or changed: its record
)

// Subject is the subject of a kind's events.
func Subject(k Kind) string { return protocol.SubjectEventPrefix + string(k) }

// Event is one decision, as published.
type Event struct {
	V    int    `json:"v"`
	Kind Kind   `json:"kind"`
	Hub  string `json:"hub,omitempty"` // the deciding hub's id, for diagnostics
	// At is when the hub published it.
	At time.Time `json:"at"`

	Document *Document          `json:"document,omitempty"`
	Status   *index.StatusEntry `json:"status,omitempty"`
	Rejected *index.Rejected    `json:"rejected,omitempty"`
	Unit     *index.Unit        `json:"unit,omitempty"`
}

// Document is an accepted document's index record, with its document.json
// as archived (byte for byte: the index keeps it so).
type Document struct {
	ID              document.ID      `json:"id"`
	Meta            []byte           `json:"meta"`
	Files           []index.File     `json:"files"`
	Signer          index.SignerInfo `json:"signer"`
	ContainerSHA256 string           `json:"container_sha256"`
	Size            int64            `json:"size"`
	ArchiveKey      string           `json:"archive_key"`
	ReceiptKey      string           `json:"receipt_key"`
	AcceptedAt      time.Time        `json:"accepted_at"`
}

func documentOf(rec index.Record) (*Document, error) {
	meta := rec.RawMeta
	if meta == nil {
		b, err := rec.Doc.Marshal()
		if err != nil {
			return nil, err
		}
		meta = b
	}
	return &Document{ID: rec.Doc.ID, Meta: meta, Files: rec.Files, Signer: rec.Signer, ContainerSHA256: rec.ContainerSHA256, Size: rec.Size,
		ArchiveKey: rec.ArchiveKey, ReceiptKey: rec.ReceiptKey, AcceptedAt: rec.AcceptedAt}, nil
}

// Record is the index record the event carries.
func (d *Document) Record() (index.Record, error) {
	rec := index.Record{RawMeta: d.Meta, Files: d.Files, Signer: d.Signer, ContainerSHA256: d.ContainerSHA256, Size: d.Size,
		ArchiveKey: d.ArchiveKey, ReceiptKey: d.ReceiptKey, AcceptedAt: d.AcceptedAt}
	// The archived document.json is the truth; the index reads it so too.
	if err := json.Unmarshal(d.Meta, &rec.Doc); err != nil {
		return rec, fmt.Errorf("events: document %s: document.json: %w", d.ID, err)
	}
	if rec.Doc.ID != d.ID {
		return rec, fmt.Errorf("events: document %s: its document.json names %s", d.ID, rec.Doc.ID)
	}
	return rec, nil
}

// MsgID is an event's Nats-Msg-Id: the same decision published again (a
// retry, a redelivered submission) has the same id.
func (e *Event) MsgID() string {
	switch {
	case e.Kind == Accepted && e.Document != nil:
		return "accepted." + string(e.Document.ID) + "." + e.Document.ContainerSHA256
	case e.Kind == Status && e.Status != nil:
		return "status." + protocol.StatusMsgID(&e.Status.Status)
	case e.Kind == Rejected && e.Rejected != nil:
		return "rejected." + e.Rejected.Ref
	case e.Kind == Unit && e.Unit != nil:
		return "unit." + string(e.Unit.ID) + "." + strconv.FormatInt(e.Unit.At.UnixNano(), 10)
	}
	return ""
}

// errNewer: an event of a schema version this hub does not know.
var errNewer = errors.New("events: event of a newer schema version")

// Decode reads an event and checks that it carries what its kind needs.
func Decode(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if e.V > Version {
		return nil, fmt.Errorf("%w: %d, this hub knows %d", errNewer, e.V, Version)
	}
	ok := false
	switch e.Kind {
	case Accepted:
		ok = e.Document != nil
	case Status:
		ok = e.Status != nil
	case Rejected:
		ok = e.Rejected != nil
	case Unit:
		ok = e.Unit != nil
	}
	if !ok {
		return nil, fmt.Errorf("events: event of kind %q without its record", e.Kind)
	}
	return &e, nil
}
