package inbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

// fromPacket is a delivery of a document its sender's document system
// wrote in edXML (pkg/edxml's national sample, from sender to me): the
// mapped document.json, the attachments and the packet itself as
// files/original.edxml, signed by the sender.
func fromPacket(t *testing.T, p *agenttest.PKI) (Received, []byte) {
	t.Helper()
	orig, err := os.ReadFile("../../pkg/edxml/testdata/national.edxml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pk, err := edxml.ParseToDir(bytes.NewReader(orig), dir, edxml.Options{ID: document.NewID(time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := os.ReadFile(filepath.Join(dir, edxml.MetadataFile))
	files := []container.File{{Name: edxml.OriginalFile, MediaType: "application/xml", Data: orig}}
	for _, a := range pk.Attachments {
		b, _ := os.ReadFile(filepath.Join(dir, "files", a.File))
		files = append(files, container.File{Name: a.File, MediaType: a.Detected, Data: b})
	}
	raw, err := container.Build(meta, files, p.Unit(t, sender))
	if err != nil {
		t.Fatal(err)
	}
	rc := p.Receipt(t, raw)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: p.Trust})
	if !rep.Valid {
		t.Fatal(rep.Reasons)
	}
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: p.Trust})
	return Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt}, orig
}

// TestPacketOut: with EdXML set, a received document's folder holds its
// packet, written from the signed document.json and files: the same
// document (its DocumentId, recipients, every kept element) with a
// TraceHeader for the hop through edx, the attachments without the
// original packet; WritePacketOf gives the same bytes, and refuses a
// container changed in the folder.
func TestPacketOut(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	s, err := Open(ctx, Config{Dir: dir + "/inbox", DB: dir + "/state/inbox.db", Quarantine: dir + "/q", EdXML: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, orig := fromPacket(t, p)
	id := r.Container.Meta.ID
	it, _, err := s.Put(ctx, me, r)
	if err != nil {
		t.Fatal(err)
	}
	if it.EdXMLID != "000.00.00.H29,2026/11/25,1234/QĐ-UBND" {
		t.Fatalf("edXML id %q", it.EdXMLID)
	}
	inFolder, err := os.ReadFile(filepath.Join(s.Dir(id), PacketFile))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.WritePacketOf(ctx, &buf, id); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), inFolder) {
		t.Fatal("the folder's packet and WritePacketOf differ")
	}
	out, err := edxml.Parse(bytes.NewReader(inFolder), edxml.Options{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := edxml.Parse(bytes.NewReader(orig), edxml.Options{ID: id})
	if len(out.Attachments) != 2 || out.Attachments[0].SHA256 != in.Attachments[0].SHA256 || out.Attachments[1].SHA256 != in.Attachments[1].SHA256 {
		t.Fatalf("attachments %+v", out.Attachments)
	}
	got, want := out.Document, in.Document
	var hop []document.EdXMLExtra
	for _, x := range got.EdXMLExtra {
		if strings.HasPrefix(x.Path, "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader[3]") {
			hop = append(hop, x)
		}
	}
	if len(hop) != 2 || hop[0].XML != "<OrganId>000.00.00.H29</OrganId>" ||
		hop[1].XML != "<Timestamp>"+r.Body.AcceptedAt.In(time.FixedZone("", 7*3600)).Format("2006/01/02 15:04:05")+"</Timestamp>" {
		t.Fatalf("the hop's trace header: %+v", hop)
	}
	edxml.AddTrace(want, sender, r.Body.AcceptedAt)
	a, _ := want.Marshal()
	b, _ := got.Marshal()
	if !bytes.Equal(a, b) {
		t.Fatalf("the packet out is not the packet in plus a hop:\n%s\n%s", a, b)
	}
	// The folder belongs to the document system: a changed container is not
	// written out as the signed document.
	os.WriteFile(filepath.Join(s.Dir(id), ContainerFile), []byte("PK changed"), 0o640)
	if err := s.WritePacketOf(ctx, &buf, id); !errors.Is(err, ErrGone) {
		t.Fatalf("changed container: %v", err)
	}
}

// TestHandOverAndSenderStatuses: documents wait for the document system
// until it takes them; a sender's 13 is recorded once, from the sender
// only; the unit's own take-back is queued with its statuses.
func TestHandOverAndSenderStatuses(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	s := openStore(t, t.TempDir())
	r1, r2 := received(t, p), received(t, p)
	for _, r := range []Received{r1, r2} {
		if _, _, err := s.Put(ctx, me, r); err != nil {
			t.Fatal(err)
		}
	}
	id1, id2 := r1.Container.Meta.ID, r2.Container.Meta.ID
	if it, err := s.FindEdXML(ctx, EdXMLID(r1.Container.Meta)); err != nil || it.ID != id2 {
		t.Fatalf("the last of two documents with one edXML id: %+v %v", it, err) // same template: same number, date, notation
	}
	if err := s.HandOver(ctx, id1, "done"); err != nil {
		t.Fatal(err)
	}
	if err := s.HandOver(ctx, id2, "processing"); err != nil {
		t.Fatal(err)
	}
	if err := s.HandOver(ctx, id2, "lost"); err == nil {
		t.Fatal("a transport status out of the protocol accepted")
	}
	if err := s.HandOver(ctx, document.NewID(time.Now()), "done"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown document: %v", err)
	}
	its, err := s.NotHandedOver(ctx, 10)
	if err != nil || len(its) != 1 || its[0].ID != id2 || its[0].Transport != "processing" {
		t.Fatalf("not handed over: %+v %v", its, err)
	}

	now := time.Now().UTC()
	take := document.Status{DocumentID: id1, Unit: sender, Time: now, Code: document.StatusCancelled, Description: "Lấy lại để sửa"}
	st, isNew, err := s.AddSenderStatus(ctx, take)
	if err != nil || !isNew || st.Seq == 0 {
		t.Fatalf("sender's status: %+v %v %v", st, isNew, err)
	}
	if _, isNew, _ := s.AddSenderStatus(ctx, take); isNew {
		t.Fatal("recorded twice")
	}
	other := take
	other.Unit = "000.05.00.H29"
	if _, _, err := s.AddSenderStatus(ctx, other); !errors.Is(err, ErrNotSender) {
		t.Fatalf("from another unit: %v", err)
	}
	it, _ := s.Get(ctx, id1)
	if len(it.SenderStatuses) != 1 || it.SenderStatuses[0].Code != "13" {
		t.Fatalf("item %+v", it.SenderStatuses)
	}
	pend, _ := s.SenderStatusesNotHandedOver(ctx, 10)
	if len(pend) != 1 {
		t.Fatalf("pending %+v", pend)
	}
	if err := s.HandOverSenderStatus(ctx, id1, st.Seq, "done"); err != nil {
		t.Fatal(err)
	}
	if pend, _ := s.SenderStatusesNotHandedOver(ctx, 10); len(pend) != 0 {
		t.Fatalf("pending after done %+v", pend)
	}

	sent := document.NewID(now)
	q, err := s.QueueTakeBack(ctx, document.Status{DocumentID: sent, Unit: me, Time: now, Code: "13"})
	if err != nil || q.State != StatusPending {
		t.Fatalf("take back: %+v %v", q, err)
	}
	if _, err := s.QueueTakeBack(ctx, document.Status{DocumentID: sent, Unit: me, Time: now, Code: "03"}); err == nil {
		t.Fatal("a 03 queued as a take-back")
	}
	if got, err := s.QueuedStatus(ctx, q.Seq); err != nil || got.DocumentID != sent {
		t.Fatalf("queued %+v %v", got, err)
	}
	if sts, _ := s.PendingStatuses(ctx, 10); sts[len(sts)-1].Code != "13" {
		t.Fatalf("pending statuses %+v", sts)
	}
	if ss, _ := s.Senders(ctx); len(ss) != 1 || ss[sender] == "" {
		t.Fatalf("senders %v", ss)
	}
}
