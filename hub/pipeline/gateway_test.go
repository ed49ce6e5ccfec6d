package pipeline

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

const (
	uGW   = document.UnitID("000.99.00.H29") // the city's gateway to the national axis
	uG22  = document.UnitID("000.00.00.G22") // a ministry
	uH30  = document.UnitID("000.00.00.H30") // another province
	uCity = document.UnitID("000.05.00.H29") // a city code nobody registered
)

func TestGatewayConfig(t *testing.T) {
	for _, c := range []struct {
		g  Gateway
		ok bool
	}{
		{Gateway{}, true},
		{Gateway{Unit: uGW, Outside: []string{"G", "H", "!H29"}}, true},
		{Gateway{Unit: uGW, Outside: []string{"000.00.00.G22", "H30"}}, true},
		{Gateway{Outside: []string{"G"}}, false},                       // no unit
		{Gateway{Unit: uGW}, false},                                    // nothing outside
		{Gateway{Unit: uGW, Outside: []string{"!H29"}}, false},         // only exclusions
		{Gateway{Unit: uGW, Outside: []string{"H"}}, false},            // covers the gateway itself
		{Gateway{Unit: uGW, Outside: []string{"g"}}, false},            // not a code
		{Gateway{Unit: uGW, Outside: []string{"000.00.G22"}}, false},   // not a unit id
		{Gateway{Unit: "000.99.H29", Outside: []string{"G"}}, false},   // bad unit
		{Gateway{Unit: uGW, Outside: []string{"G", "H30", "K"}}, true}, // several kinds
		{Gateway{Unit: uGW, Outside: []string{"G", "!000.00.00.G22"}}, true},
	} {
		if err := c.g.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok %v", c.g, err, c.ok)
		}
	}
	g := &Gateway{Unit: uGW, Outside: []string{"G", "H", "!H29", "!000.00.00.G01"}}
	for u, want := range map[document.UnitID]bool{
		uG22: true, uH30: true, "000.12.03.H30": true, uCity: false, uGW: false,
		"000.00.00.G01": false, "000.00.00.K29": false, "not a unit": false,
	} {
		if got := g.matches(u); got != want {
			t.Errorf("matches(%s) = %v, want %v", u, got, want)
		}
	}
}

// TestGatewayRouting: through real NATS, S3 and the registry, recipients
// outside the city that the gateway's patterns cover go to the gateway
// unit (one delivery naming them all), others not registered are
// recipient.unknown; the gateway relays their statuses, which the sender
// sees as theirs, and hears of the sender's 13 once; a document the
// gateway brought in from the upstream is delivered in the city only, and
// no other unit may claim to have brought one in.
func TestGatewayRouting(t *testing.T) {
	e := newEnv(t, uA, uB, uGW)
	e.cfg.Gateway = Gateway{Unit: uGW, Outside: []string{"G", "H", "!H29"}}
	e.run(e.deps)
	a, b, gw := e.units[uA], e.units[uB], e.units[uGW]

	id, meta := doc(uA, uB, uG22, uH30)
	a.submit(t, id, a.build(t, meta, 4<<10))
	if n := a.notice(t); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	delivery := func(u *unit) *protocol.Delivery {
		t.Helper()
		m := u.delivery(t)
		d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := delivery(b); d.DocumentID != id || len(d.For) != 0 {
		t.Fatalf("B's delivery %+v", d.For)
	}
	if d := delivery(gw); d.DocumentID != id || !slices.Equal(d.For, []document.UnitID{uG22, uH30}) {
		t.Fatalf("the gateway's delivery carries %v", d.For)
	}
	// EDX_DELIVER keeps what units acknowledged until the hub trims it:
	// the gateway's one delivery, and none for the outside units.
	if n := e.deliveries(uGW); n != 1 {
		t.Fatalf("%d deliveries to the gateway, want 1", n)
	}
	if n := e.deliveries(uG22) + e.deliveries(uH30); n != 0 {
		t.Fatalf("%d deliveries to outside units", n)
	}

	t.Run("city code nobody registered", func(t *testing.T) {
		id, meta := doc(uA, uCity)
		a.submit(t, id, a.build(t, meta, 1<<10))
		if n := a.notice(t); n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.RecipientUnknown) {
			t.Fatalf("notice %s %v", n.Type, n.Reasons)
		}
	})

	now := time.Now().UTC()
	t.Run("the gateway relays outside recipients' statuses", func(t *testing.T) {
		for i, code := range []document.StatusCode{document.StatusDelivered, document.StatusAccepted} {
			st := &document.Status{DocumentID: id, Unit: uG22, Time: now.Add(time.Duration(i) * time.Millisecond), Code: code, Description: "Bộ Nội vụ"}
			gw.relay(t, st)
			if n := a.notice(t); n.Type != protocol.NoticeStatus || n.Status.Unit != uG22 || n.Status.Code != code {
				t.Fatalf("A's notice %+v", n)
			}
		}
		// Not for a unit of the city, not a 13, not from another unit.
		gw.relay(t, &document.Status{DocumentID: id, Unit: uB, Time: now.Add(5 * time.Millisecond), Code: document.StatusAccepted})
		gw.refused(t, reason.SenderMismatch)
		gw.relay(t, &document.Status{DocumentID: id, Unit: uH30, Time: now.Add(6 * time.Millisecond), Code: document.StatusCancelled})
		gw.refused(t, reason.SenderMismatch)
		b.relay(t, &document.Status{DocumentID: id, Unit: uG22, Time: now.Add(7 * time.Millisecond), Code: document.StatusInProgress})
		b.refused(t, reason.SenderMismatch)
		det, err := e.ix.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range det.Recipients {
			if r.Unit == uG22 && (r.State != "delivered" || r.LastCode != document.StatusAccepted) {
				t.Fatalf("G22 in the index: %+v", r)
			}
		}
	})

	t.Run("the sender's 13 reaches the gateway once", func(t *testing.T) {
		a.status(t, &document.Status{DocumentID: id, Unit: uA, Time: now.Add(10 * time.Millisecond), Code: document.StatusCancelled})
		for _, u := range []*unit{b, gw} {
			if n := u.notice(t); n.Type != protocol.NoticeStatus || n.Status.Code != document.StatusCancelled {
				t.Fatalf("%s: notice %+v", u.id, n)
			}
		}
		if m := gw.next(t, true, time.Second); m != nil {
			t.Fatalf("another notice for the gateway: %s", m.Data())
		}
	})

	t.Run("a document the gateway brought in", func(t *testing.T) {
		d := document.Template(time.Now())
		d.From, d.To = uGW, []document.UnitID{uA, uH30}
		d.Upstream = &document.Upstream{From: uG22, FromName: "Bộ Nội vụ", Axis: "vdxp.example", DocID: "a8f0c1"}
		meta, _ := d.Marshal()
		before := e.deliveries(uGW)
		gw.submit(t, d.ID, gw.build(t, meta, 1<<10))
		if n := gw.notice(t); n.Type != protocol.NoticeAccepted {
			t.Fatalf("notice %+v", n)
		}
		if dl := delivery(a); dl.DocumentID != d.ID {
			t.Fatalf("A's delivery %+v", dl)
		}
		if n := e.deliveries(uGW) - before; n != 0 {
			t.Fatalf("%d deliveries to the gateway of its own document", n)
		}
		// A unit other than the gateway cannot bring one in.
		d2 := document.Template(time.Now())
		d2.From, d2.To, d2.Upstream = uA, []document.UnitID{uB}, d.Upstream
		meta, _ = d2.Marshal()
		a.submit(t, d2.ID, a.build(t, meta, 1<<10))
		if n := a.notice(t); n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.UpstreamNotGateway) {
			t.Fatalf("notice %s %v", n.Type, n.Reasons)
		}
	})
}

// relay publishes a status on the unit's subject, whatever unit it names.
func (u *unit) relay(t *testing.T, st *document.Status) {
	t.Helper()
	m, err := protocol.RelayStatusMsg(u.id, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.js.PublishMsg(t.Context(), m); err != nil {
		t.Fatalf("%s: relay status %s: %v", u.id, st.Code, err)
	}
}
