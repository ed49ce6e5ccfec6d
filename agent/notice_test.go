package agent

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/protocol"
)

// noticeMsg is a notice as the consumer hands it over (only what
// handleNotice reads).
type noticeMsg struct {
	jetstream.Msg
	m *nats.Msg
}

func (n noticeMsg) Data() []byte         { return n.m.Data }
func (n noticeMsg) Headers() nats.Header { return n.m.Header }

// TestSenderStatusNotice: the status notice of a received document's
// sender (13, passed on by the hub) is recorded once on the document, for
// the document system as a status packet; one from another unit is not.
func TestSenderStatusNotice(t *testing.T) {
	p := agenttest.NewPKI(t)
	dir := writeUnitFiles(t, p)
	const me, sender = document.UnitID("000.00.00.H29"), document.UnitID("000.01.00.H29")
	cfg := Config{
		Unit:    me,
		Data:    t.TempDir(),
		API:     APIConfig{Listen: "127.0.0.1:0", TokenFile: filepath.Join(dir, "api.token")},
		Signing: SigningConfig{KeyFile: filepath.Join(dir, "unit.key.pem"), CertFile: filepath.Join(dir, "unit.cert.pem")},
		Trust:   TrustConfig{Roots: filepath.Join(dir, "roots.pem")},
		NATS:    NATSConfig{URL: "nats://127.0.0.1:4222", CredsFile: filepath.Join(dir, "unit.creds")},
	}
	ctx := t.Context()
	a, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, meta := agenttest.Meta(sender, me)
	raw := p.Container(t, meta, 100)
	rc := p.Receipt(t, raw)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: p.Trust})
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: p.Trust})
	it, _, err := a.inbox.Put(ctx, me, inbox.Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt})
	if err != nil {
		t.Fatal(err)
	}
	notice := func(unit document.UnitID, seq int) jetstream.Msg {
		st := &document.Status{DocumentID: it.ID, Unit: unit, Time: time.Now().UTC().Truncate(time.Second), Code: document.StatusCancelled, Description: "Lấy lại"}
		m, err := protocol.NoticeMsg(me, &protocol.Notice{Type: protocol.NoticeStatus, DocumentID: it.ID, Time: st.Time, Status: st}, "status.test."+string(rune('a'+seq)))
		if err != nil {
			t.Fatal(err)
		}
		return noticeMsg{m: m}
	}
	n := notice(sender, 0)
	for range 2 { // delivered twice: recorded once
		if err := a.handleNotice(ctx, nil, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.handleNotice(ctx, nil, notice("000.05.00.H29", 1)); err != nil {
		t.Fatal(err)
	}
	got, _ := a.inbox.Get(ctx, it.ID)
	if len(got.SenderStatuses) != 1 || got.SenderStatuses[0].Unit != sender || got.SenderStatuses[0].Code != "13" {
		t.Fatalf("senders' statuses %+v", got.SenderStatuses)
	}
	items, err := a.packets.Pending(ctx, packets.KindStatus, 10)
	if err != nil || len(items) != 1 || items[0].Code != "13" || items[0].From != sender {
		t.Fatalf("items %+v %v", items, err)
	}
	var buf bytes.Buffer
	if _, err := a.packets.WriteItem(ctx, &buf, items[0].ID); err != nil {
		t.Fatal(err)
	}
	if sp, err := edxml.ParseStatus(&buf, edxml.Limits{}); err != nil || sp.Code != "13" || sp.From.ID != string(sender) || sp.ResponseFor.DocumentID != it.EdXMLID {
		t.Fatalf("packet %+v %v", sp, err)
	}
}
