package packets

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
)

const (
	me    = document.UnitID("000.00.00.H29")
	other = document.UnitID("000.01.00.H29")
)

type fixture struct {
	pki   *agenttest.PKI
	x     *Exchange
	spool *spool.Spool
	inbox *inbox.Store
	dir   string
}

func newFixture(t *testing.T, maxSize int64) *fixture {
	t.Helper()
	f := &fixture{pki: agenttest.NewPKI(t), dir: t.TempDir()}
	var err error
	if f.spool, err = spool.Open(t.Context(), filepath.Join(f.dir, "spool"), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.spool.Close() })
	if f.inbox, err = inbox.Open(t.Context(), inbox.Config{Dir: f.dir + "/inbox", DB: f.dir + "/state/inbox.db", Quarantine: f.dir + "/q"}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.inbox.Close() })
	ob, err := outbox.New(me, f.pki.Unit(t, me), f.pki.Trust, f.spool, maxSize)
	if err != nil {
		t.Fatal(err)
	}
	if f.x, err = New(Config{TempDir: filepath.Join(f.dir, "tmp"), UnitName: "UBND TP.HCM"}, ob, f.spool, f.inbox); err != nil {
		t.Fatal(err)
	}
	return f
}

// packet writes a document packet the way a document system would, from
// a document edited by change.
func packet(t *testing.T, change func(d *document.Document)) []byte {
	t.Helper()
	d := document.Template(time.Now())
	d.ID = ""
	d.To = []document.UnitID{other}
	if change != nil {
		change(d)
	}
	var buf bytes.Buffer
	pdf := []byte("%PDF-1.7 quyết định")
	files := []edxml.File{{Name: "quyet-dinh.pdf", Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(pdf)), nil }}}
	if err := edxml.Write(&buf, d, files); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func statusPacket(t *testing.T, from document.UnitID, about string, code document.StatusCode) []byte {
	t.Helper()
	var buf bytes.Buffer
	st := document.Status{Unit: from, Code: code, Time: time.Now(), Description: "Văn thư", Officer: &document.Officer{Name: "Lê Văn C", Contact: "c@example.vn"}}
	if err := edxml.WriteStatus(&buf, edxml.NewStatusPacket(st, edxml.ResponseFor{DocumentID: about})); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func spooled(t *testing.T, f *fixture, id document.ID) *container.Container {
	t.Helper()
	raw, err := f.spool.Container(id)
	if err != nil {
		t.Fatal(err)
	}
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
	if !rep.Valid {
		t.Fatal(rep.Reasons)
	}
	return c
}

// TestSubmitDocument: a packet becomes a signed, spooled document with a
// new id, its fields mapped, its attachment a file, and the packet itself
// kept byte for byte as files/original.edxml.
func TestSubmitDocument(t *testing.T) {
	f := newFixture(t, 0)
	in := packet(t, nil)
	rec, created, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(in), Submission{Source: "api"})
	if err != nil || !created {
		t.Fatalf("submit: %v", err)
	}
	c := spooled(t, f, rec.ID)
	if c.Meta.ID != rec.ID || c.Meta.From != me || c.Meta.Number != "1234" || c.Meta.EdXMLID == "" || rec.EdXMLID != c.Meta.EdXMLID {
		t.Fatalf("document %+v, record %+v", c.Meta, rec)
	}
	orig := c.Entry("files/" + edxml.OriginalFile)
	pdf := c.Entry("files/quyet-dinh.pdf")
	if orig == nil || pdf == nil || pdf.MediaType != "application/pdf" {
		t.Fatalf("files %v", c.Files())
	}
	if b, _ := orig.Bytes(); !bytes.Equal(b, in) {
		t.Fatal("the original packet was not kept byte for byte")
	}
	// The same packet with the same key: the first document.
	rec2, created, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(in), Submission{IdempotencyKey: "k"})
	if err != nil || !created {
		t.Fatal(err)
	}
	if again, created, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(in), Submission{IdempotencyKey: "k"}); err != nil || created || again.ID != rec2.ID {
		t.Fatalf("repeat: %v %v", created, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.dir, "tmp")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestSubmitDocumentRefuses(t *testing.T) {
	f := newFixture(t, 64<<10)
	big := packet(t, func(d *document.Document) { d.Content = strings.Repeat("nội dung ", 10000) })
	tests := []struct {
		name  string
		in    []byte
		kind  outbox.Kind
		field string
		code  reason.Code
	}{
		{"another unit's", packet(t, func(d *document.Document) { d.From = other; d.To = []document.UnitID{me} }), outbox.Unprocessable, "From/OrganId", ""},
		{"not XML", []byte("%PDF-1.7"), outbox.Invalid, "", reason.EdXMLMalformed},
		{"a DOCTYPE", []byte(`<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><edXML/>`), outbox.Invalid, "", reason.EdXMLDTD},
		{"empty", nil, outbox.Invalid, "packet", ""},
		{"too large", big, outbox.TooLarge, "", ""},
		{"no recipient", packet(t, func(d *document.Document) { d.To = nil }), outbox.Invalid, "to", ""},
		{"an update of nothing", packet(t, func(d *document.Document) { d.BusinessType = document.BusinessUpdate }), outbox.Invalid, "Bussiness/DocumentId", ""},
		{"an update of a stranger", packet(t, func(d *document.Document) {
			d.BusinessType = document.BusinessUpdate
			d.EdXMLExtra = []document.EdXMLExtra{{Path: "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness", XML: "<DocumentId>000.00.00.H29,2020/01/01,1/X</DocumentId>"}}
		}), outbox.Invalid, "Bussiness/DocumentId", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(tt.in), Submission{})
			var e *outbox.Error
			if !errors.As(err, &e) || e.Kind != tt.kind {
				t.Fatalf("err %v, want kind %d", err, tt.kind)
			}
			if tt.field != "" && (len(e.Problems) == 0 || !strings.HasPrefix(e.Problems[0].Field, tt.field)) {
				t.Fatalf("problems %v, want %s", e.Problems, tt.field)
			}
			if tt.code != "" && !e.Reasons.Has(tt.code) {
				t.Fatalf("reasons %v, want %s", e.Reasons, tt.code)
			}
		})
	}
	if n, _ := f.spool.Depth(t.Context()); n != 0 {
		t.Fatalf("%d spooled", n)
	}
	// A status packet is not a document; Submit takes either.
	_, _, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(statusPacket(t, me, "x", "03")), Submission{})
	if !errors.Is(err, ErrStatusPacket) {
		t.Fatalf("status packet as a document: %v", err)
	}
}

// TestBusinessTypes: an update or a revocation names the document it is
// about by its edXML DocumentId (in Bussiness, or ResponseFor), which
// becomes in_reply_to.
func TestBusinessTypes(t *testing.T) {
	f := newFixture(t, 0)
	first, _, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(packet(t, nil)), Submission{})
	if err != nil {
		t.Fatal(err)
	}
	update := packet(t, func(d *document.Document) {
		d.BusinessType = document.BusinessUpdate
		d.Number = "1235"
		d.EdXMLExtra = []document.EdXMLExtra{{Path: "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness", XML: "<DocumentId>" + first.EdXMLID + "</DocumentId>"}}
	})
	rec, _, err := f.x.SubmitDocument(t.Context(), bytes.NewReader(update), Submission{})
	if err != nil {
		t.Fatal(err)
	}
	if c := spooled(t, f, rec.ID); c.Meta.InReplyTo != first.ID || c.Meta.BusinessType != document.BusinessUpdate {
		t.Fatalf("update: %+v", c.Meta)
	}
	revoke := packet(t, func(d *document.Document) {
		d.BusinessType = document.BusinessRevoke
		d.Number = "1236"
		edxml.SetResponseFor(d, edxml.ResponseFor{DocumentID: string(first.ID)})
	})
	rec, _, err = f.x.SubmitDocument(t.Context(), bytes.NewReader(revoke), Submission{})
	if err != nil {
		t.Fatal(err)
	}
	if c := spooled(t, f, rec.ID); c.Meta.InReplyTo != first.ID {
		t.Fatalf("revocation: %+v", c.Meta)
	}
}

// receive puts a document from other to me in the inbox.
func receive(t *testing.T, f *fixture) *inbox.Item {
	t.Helper()
	_, meta := agenttest.Meta(other, me)
	raw := f.pki.Container(t, meta, 100)
	rc := f.pki.Receipt(t, raw)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: f.pki.Trust})
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: f.pki.Trust})
	it, _, err := f.inbox.Put(t.Context(), me, inbox.Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt})
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// TestStatuses: a status packet about a received document (named by its
// edXML DocumentId) is the unit's report; 13 about a sent one is its
// take-back; each is queued for the hub. A status from another unit, about
// nothing known, or 13 on a received document is refused.
func TestStatuses(t *testing.T) {
	f := newFixture(t, 0)
	ctx := t.Context()
	it := receive(t, f)
	st, err := f.x.SubmitStatus(ctx, bytes.NewReader(statusPacket(t, me, it.EdXMLID, "03")), "")
	if err != nil || st.DocumentID != it.ID || st.Code != "03" || st.Unit != me || st.Officer == nil || st.Officer.Contact != "c@example.vn" {
		t.Fatalf("03: %+v %v", st, err)
	}
	sent, _, err := f.x.SubmitDocument(ctx, bytes.NewReader(packet(t, nil)), Submission{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.x.Submit(ctx, bytes.NewReader(statusPacket(t, me, sent.EdXMLID, "13")), Submission{})
	if err != nil || res.Status == nil || res.Status.DocumentID != sent.ID || res.Status.Code != "13" {
		t.Fatalf("13: %+v %v", res, err)
	}
	// The API's path names the document: the packet must agree.
	if _, err := f.x.SubmitStatus(ctx, bytes.NewReader(statusPacket(t, me, string(it.ID), "05")), it.ID); err != nil {
		t.Fatal(err)
	}
	pend, _ := f.inbox.PendingStatuses(ctx, 10)
	if len(pend) != 4 { // 01 (on arrival), 03, 13, 05
		t.Fatalf("queued %+v", pend)
	}
	for name, tc := range map[string]struct {
		in    []byte
		about document.ID
		check func(error) bool
	}{
		"from another unit": {statusPacket(t, other, it.EdXMLID, "03"), "", isKind(outbox.Unprocessable)},
		"about nothing":     {statusPacket(t, me, "", "03"), "", isKind(outbox.Invalid)},
		"about a stranger":  {statusPacket(t, me, "000.09.00.H29,2020/01/01,1/X", "03"), "", func(err error) bool { return errors.Is(err, inbox.ErrNotFound) }},
		"13 on a received":  {statusPacket(t, me, string(it.ID), "13"), it.ID, isKind(outbox.Unprocessable)},
		"03 on a sent":      {statusPacket(t, me, sent.EdXMLID, "03"), "", func(err error) bool { return errors.Is(err, inbox.ErrNotFound) }},
		"another document":  {statusPacket(t, me, sent.EdXMLID, "03"), it.ID, isKind(outbox.Invalid)},
		"a document":        {packet(t, nil), "", isKind(outbox.Invalid)},
		"unknown code":      {statusPacket(t, me, it.EdXMLID, "99"), "", func(err error) bool { var p document.Problems; return errors.As(err, &p) }},
	} {
		if _, err := f.x.SubmitStatus(ctx, bytes.NewReader(tc.in), tc.about); !tc.check(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func isKind(k outbox.Kind) func(error) bool {
	return func(err error) bool {
		var e *outbox.Error
		return errors.As(err, &e) && e.Kind == k
	}
}

// TestItems: received documents and statuses wait for the document system
// as items, each written as a packet, until it acknowledges them done.
func TestItems(t *testing.T) {
	f := newFixture(t, 0)
	ctx := t.Context()
	it := receive(t, f)
	sent, _, err := f.x.SubmitDocument(ctx, bytes.NewReader(packet(t, nil)), Submission{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	f.spool.AddStatus(ctx, document.Status{DocumentID: sent.ID, Unit: other, Time: now, Code: "03", Description: "Vào sổ"})
	f.spool.AddStatus(ctx, document.Status{DocumentID: sent.ID, Unit: me, Time: now, Code: "13"}) // the hub's echo of our own: not an item
	f.inbox.AddSenderStatus(ctx, document.Status{DocumentID: it.ID, Unit: other, Time: now, Code: "13", Description: "Lấy lại"})

	docs, err := f.x.Pending(ctx, KindDocument, 10)
	if err != nil || len(docs) != 1 || docs[0].ID != string(it.ID) || docs[0].From != other {
		t.Fatalf("documents %+v %v", docs, err)
	}
	var buf bytes.Buffer
	if kind, err := f.x.WriteItem(ctx, &buf, docs[0].ID); err != nil || kind != KindDocument {
		t.Fatalf("write document: %v", err)
	}
	if p, err := edxml.Parse(&buf, edxml.Options{}); err != nil || p.Document.Subject != it.Subject || len(p.Attachments) != 2 {
		t.Fatalf("document packet: %v", err)
	}
	sts, err := f.x.Pending(ctx, KindStatus, 10)
	if err != nil || len(sts) != 2 {
		t.Fatalf("statuses %+v %v", sts, err)
	}
	for _, item := range sts {
		buf.Reset()
		if _, err := f.x.WriteItem(ctx, &buf, item.ID); err != nil {
			t.Fatal(err)
		}
		sp, err := edxml.ParseStatus(&buf, edxml.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		switch item.Code {
		case "03": // on our document: named as our document system knows it
			if !strings.HasSuffix(item.ID, "-s1") || sp.From.ID != string(other) || sp.ResponseFor.DocumentID != sent.EdXMLID || sp.ResponseFor.OrganID != string(me) || sp.Description != "Vào sổ" {
				t.Errorf("03 %s: %+v", item.ID, sp)
			}
		case "13": // the sender takes back what we received
			if !strings.Contains(item.ID, "-r") || sp.From.ID != string(other) || sp.ResponseFor.DocumentID != it.EdXMLID {
				t.Errorf("13 %s: %+v", item.ID, sp)
			}
		default:
			t.Errorf("item %+v", item)
		}
	}
	for _, id := range []string{docs[0].ID, sts[0].ID} {
		if err := f.x.HandOver(ctx, id, "done"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.x.HandOver(ctx, sts[1].ID, "processing"); err != nil {
		t.Fatal(err)
	}
	if docs, _ := f.x.Pending(ctx, KindDocument, 10); len(docs) != 0 {
		t.Fatalf("documents after done: %+v", docs)
	}
	if sts, _ := f.x.Pending(ctx, KindStatus, 10); len(sts) != 1 || sts[0].Transport != "processing" {
		t.Fatalf("statuses after done: %+v", sts)
	}
	for _, bad := range []string{"", "x", string(it.ID) + "-s", string(it.ID) + "-x1", string(it.ID) + "-s0", string(document.NewID(now))} {
		if _, err := f.x.WriteItem(ctx, io.Discard, bad); err == nil {
			t.Errorf("item %q written", bad)
		}
	}
	if err := f.x.HandOver(ctx, docs[0].ID, "lost"); !isKind(outbox.Invalid)(err) {
		t.Fatalf("bad acknowledgement: %v", err)
	}
	us, err := f.x.Units(ctx)
	if err != nil || len(us) != 2 || us[0].ID != me || us[0].Name != "UBND TP.HCM" || us[1].ID != other || us[1].Name == "" {
		t.Fatalf("units %+v %v", us, err)
	}
}
