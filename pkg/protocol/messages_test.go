package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

func TestSubmitRoundTrip(t *testing.T) {
	data := []byte("PK container bytes")
	sum := sha256.Sum256(data)
	id := document.NewID(time.Now())
	c := &Container{DocumentID: id, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data}
	m := SubmitMsg("000.01.00.H29", c)
	if m.Subject != "edx.submit.000.01.00.H29" || m.Header.Get(HeaderMsgID) == "" {
		t.Fatalf("msg %s %v", m.Subject, m.Header)
	}
	unit, got, err := ParseSubmit(m)
	if err != nil || unit != "000.01.00.H29" || got.DocumentID != id || !bytes.Equal(got.Data, data) {
		t.Fatalf("ParseSubmit: %v %v %+v", err, unit, got)
	}
	m.Data = append(m.Data, 'x')
	if _, _, err := ParseSubmit(m); err == nil {
		t.Error("size mismatch accepted")
	}
	m.Header.Set(HeaderDocID, "nope")
	if _, _, err := ParseSubmit(m); err == nil {
		t.Error("bad id accepted")
	}
}

func TestDeliveryRoundTrip(t *testing.T) {
	id := document.NewID(time.Now())
	d := &Delivery{Recipient: "000.02.00.H29", Sender: "000.01.00.H29", Receipt: []byte{1, 2, 3},
		Container: Container{DocumentID: id, SHA256: string(bytes.Repeat([]byte("a"), 64)), Size: 10,
			Staged: DeliverStageName(), StageKey: bytes.Repeat([]byte{7}, StageKeySize)}}
	got, err := ParseDelivery(DeliverMsg(d))
	if err != nil || got.Recipient != d.Recipient || got.Sender != d.Sender || got.Staged != d.Staged ||
		!bytes.Equal(got.StageKey, d.StageKey) || !bytes.Equal(got.Receipt, d.Receipt) {
		t.Fatalf("%v %+v", err, got)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	s := &document.Status{DocumentID: document.NewID(time.Now()), Unit: "000.02.00.H29", Time: time.Now().UTC(), Code: document.StatusAccepted}
	m, err := StatusMsg(s)
	if err != nil {
		t.Fatal(err)
	}
	u, got, err := ParseStatus(m)
	if err != nil || u != s.Unit || got.Code != s.Code {
		t.Fatalf("%v %v %+v", err, u, got)
	}
	if UnitFromSubject("edx.status.000.02.00.H29") != "000.02.00.H29" {
		t.Error("UnitFromSubject")
	}
}

func TestNoticeTo(t *testing.T) {
	const unit = document.UnitID("000.01.00.H29")
	own := InboxPrefix(string(unit)) + ".abc123"
	for to, want := range map[string]string{
		own:                                   own,
		own + ".x":                            own + ".x",
		"":                                    "",
		InboxPrefix(string(unit)):             "", // the prefix alone
		InboxPrefix(string(unit)) + ".":       "",
		InboxPrefix("000.02.00.H29") + ".a":   "", // another unit's inbox
		InboxPrefix(string(unit)) + "X.a":     "", // a longer unit id
		InboxPrefix(string(unit)) + ".*":      "",
		InboxPrefix(string(unit)) + ".>":      "",
		InboxPrefix(string(unit)) + ".a..b":   "",
		InboxPrefix(string(unit)) + ".a b":    "",
		"edx.notice." + string(unit):          "",
		own + "." + string(make([]byte, 300)): "",
	} {
		m := SubmitMsg(unit, &Container{DocumentID: document.NewID(time.Now()), SHA256: string(bytes.Repeat([]byte("a"), 64)), Size: 1, Data: []byte{1}})
		m.Header.Set(HeaderNoticeTo, to)
		if got := NoticeTo(m, unit); got != want {
			t.Errorf("NoticeTo(%q) = %q, want %q", to, got, want)
		}
	}
}

// TestGatewayDelivery: a delivery to the gateway names the outside
// recipients it carries; a gateway relays an outside unit's status on its
// own subject.
func TestGatewayDelivery(t *testing.T) {
	id := document.NewID(time.Now())
	d := &Delivery{Recipient: "000.99.00.H29", Sender: "000.01.00.H29", Receipt: []byte{1}, For: []document.UnitID{"000.00.00.G22", "000.00.00.H30"},
		Container: Container{DocumentID: id, SHA256: string(bytes.Repeat([]byte("a"), 64)), Size: 1, Data: []byte("x")}}
	m := DeliverMsg(d)
	got, err := ParseDelivery(m)
	if err != nil || len(got.For) != 2 || got.For[0] != "000.00.00.G22" || got.For[1] != "000.00.00.H30" {
		t.Fatalf("%v %+v", err, got)
	}
	m.Header.Set(HeaderFor, "000.00.00.G22,bad")
	if _, err := ParseDelivery(m); err == nil {
		t.Error("a bad unit in Edx-For accepted")
	}
	s := &document.Status{DocumentID: id, Unit: "000.00.00.G22", Time: time.Now().UTC(), Code: document.StatusAccepted}
	rm, err := RelayStatusMsg("000.99.00.H29", s)
	if err != nil {
		t.Fatal(err)
	}
	u, st, err := ParseStatus(rm)
	if err != nil || u != "000.99.00.H29" || st.Unit != "000.00.00.G22" {
		t.Fatalf("%v %s %+v", err, u, st)
	}
}
