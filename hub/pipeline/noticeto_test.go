package pipeline

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// TestDecisionToTheSendersInbox: a submission that names an inbox of its
// unit (protocol.HeaderNoticeTo) gets its decision there, accepted or
// rejected, while the unit's notice stream still gets every notice; an
// inbox of another unit is ignored.
func TestDecisionToTheSendersInbox(t *testing.T) {
	const a, b = document.UnitID("000.01.00.H29"), document.UnitID("000.02.00.H29")
	e := newEnv(t, a, b)
	e.run(e.deps)
	ua, ub := e.units[a], e.units[b]

	inbox := ua.nc.NewInbox()
	sub, err := ua.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	// unitB listens on its whole inbox prefix: nothing may arrive there.
	other, err := ub.nc.SubscribeSync(protocol.InboxPrefix(string(b)) + ".>")
	if err != nil {
		t.Fatal(err)
	}
	ua.nc.Flush()
	ub.nc.Flush()

	send := func(to string, recipients ...document.UnitID) document.ID {
		id, meta := doc(a, recipients...)
		m := ua.submitMsg(t, id, ua.build(t, meta, 1000))
		m.Header.Set(protocol.HeaderNoticeTo, to)
		if _, err := ua.js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		return id
	}
	decision := func() *protocol.Notice {
		t.Helper()
		m, err := sub.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("no decision on the inbox: %v", err)
		}
		n, err := protocol.ParseNotice(m)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	id := send(inbox, b)
	if n := decision(); n.Type != protocol.NoticeAccepted || n.DocumentID != id || len(n.Receipt) == 0 {
		t.Fatalf("decision %+v", n)
	}
	if n := ua.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("stream notice %+v", n)
	}

	id = send(inbox, "000.09.00.H29")
	if n := decision(); n.Type != protocol.NoticeRejected || n.DocumentID != id || n.Reasons[0].Code != reason.RecipientUnknown {
		t.Fatalf("decision %+v", n)
	}
	if n := ua.notice(t); n.Type != protocol.NoticeRejected || n.DocumentID != id {
		t.Fatalf("stream notice %+v", n)
	}

	// Naming unitB's inbox: the hub does not send there; the stream notice
	// still comes.
	id = send(protocol.InboxPrefix(string(b))+".stolen", b)
	if n := ua.notice(t); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("stream notice %+v", n)
	}
	for {
		m, err := other.NextMsg(500 * time.Millisecond)
		if err == nats.ErrTimeout {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == protocol.InboxPrefix(string(b))+".stolen" {
			t.Fatalf("unitA's decision reached unitB: %s", m.Data)
		}
	}
}
