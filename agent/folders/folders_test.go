package folders

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
)

const (
	me    = document.UnitID("000.00.00.H29")
	other = document.UnitID("000.01.00.H29")
)

type fixture struct {
	dir   string
	spool *spool.Spool
	w     *Watcher
	pki   *agenttest.PKI
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), pki: agenttest.NewPKI(t)}
	var err error
	if f.spool, err = spool.Open(t.Context(), f.dir+"/spool", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.spool.Close() })
	ob, err := outbox.New(me, f.pki.Unit(t, me), f.pki.Trust, f.spool, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if f.w, err = New(Config{Outbox: f.dir + "/outbox", Sent: f.dir + "/sent", Failed: f.dir + "/failed"}, ob, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// drop writes a document folder the way the convention says: under a dot
// name, then renamed.
func (f *fixture) drop(t *testing.T, name string, files map[string][]byte) {
	t.Helper()
	tmp := filepath.Join(f.dir, "outbox", ".tmp-"+name)
	os.MkdirAll(tmp, 0o750)
	for n, b := range files {
		os.WriteFile(filepath.Join(tmp, n), b, 0o640)
	}
	if err := os.Rename(tmp, filepath.Join(f.dir, "outbox", name)); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func TestScan(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	_, good := agenttest.Meta(me, other)
	_, foreign := agenttest.Meta(other, me)
	f.drop(t, "cv-123", map[string][]byte{"document.json": good, "cong-van.pdf": []byte("%PDF")})
	f.drop(t, "no-metadata", map[string][]byte{"cong-van.pdf": []byte("%PDF")})
	f.drop(t, "bad-recipient", map[string][]byte{"document.json": []byte(`{"to":["x"]}`), "a.pdf": []byte("%PDF")})
	os.WriteFile(filepath.Join(f.dir, "outbox", "prebuilt.asice"), f.pki.Container(t, func() []byte { _, m := agenttest.Meta(me, other); return m }(), 10), 0o640)
	os.WriteFile(filepath.Join(f.dir, "outbox", "foreign.asice"), f.pki.Container(t, foreign, 10), 0o640)
	os.WriteFile(filepath.Join(f.dir, "outbox", "notes.txt"), []byte("x"), 0o640)
	os.MkdirAll(filepath.Join(f.dir, "outbox", ".tmp-half"), 0o750) // still being written

	if err := f.w.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cv-123", "cv-123.json", "prebuilt.asice", "prebuilt.asice.json"} {
		if !exists(filepath.Join(f.dir, "sent", n)) {
			t.Errorf("sent/%s missing", n)
		}
	}
	for _, n := range []string{"no-metadata", "bad-recipient", "foreign.asice", "notes.txt"} {
		if !exists(filepath.Join(f.dir, "failed", n)) || !exists(filepath.Join(f.dir, "failed", n+".reason.json")) {
			t.Errorf("failed/%s or its reason missing", n)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(f.dir, "outbox"))
	if len(ents) != 1 || ents[0].Name() != ".tmp-half" {
		t.Fatalf("outbox left: %v", ents)
	}
	var rf reasonFile
	b, _ := os.ReadFile(filepath.Join(f.dir, "failed", "bad-recipient.reason.json"))
	json.Unmarshal(b, &rf)
	if rf.Stage != "agent" || len(rf.Problems) == 0 {
		t.Fatalf("reason file %s", b)
	}
	if n, _ := f.spool.Depth(ctx); n != 2 {
		t.Fatalf("spooled %d", n)
	}

	// The hub rejects cv-123 later; accepts the prebuilt one.
	var res result
	b, _ = os.ReadFile(filepath.Join(f.dir, "sent", "cv-123.json"))
	json.Unmarshal(b, &res)
	if _, err := f.spool.Reject(ctx, res.DocumentID, time.Now(), reason.List{{Code: reason.RecipientUnknown, Message: "to[0]"}}); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.spool.Get(ctx, res.DocumentID)
	if err := f.w.Decided(rec); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(f.dir, "sent", "cv-123")) || !exists(filepath.Join(f.dir, "failed", "cv-123")) {
		t.Fatal("rejected document not moved to failed/")
	}
	b, _ = os.ReadFile(filepath.Join(f.dir, "failed", "cv-123.reason.json"))
	rf = reasonFile{}
	json.Unmarshal(b, &rf)
	if rf.Stage != "hub" || !rf.Reasons.Has(reason.RecipientUnknown) || rf.DocumentID != res.DocumentID {
		t.Fatalf("hub reason file %s", b)
	}
}

func TestSameNameAgainAndCrashBeforeMove(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	_, m := agenttest.Meta(me, other)
	files := map[string][]byte{"document.json": m, "a.pdf": []byte("%PDF")}
	f.drop(t, "doc", files)
	// Spooled, then the agent died before the move: the same folder is
	// still in outbox/ at the next scan and must not be sent twice.
	sub, err := f.w.read(filepath.Join(f.dir, "outbox", "doc"), "doc")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.w.sub.Submit(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if err := f.w.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.spool.Depth(ctx); n != 1 {
		t.Fatalf("spooled %d", n)
	}
	// Another document under a name already in sent/.
	_, m2 := agenttest.Meta(me, other)
	f.drop(t, "doc", map[string][]byte{"document.json": m2, "a.pdf": []byte("%PDF")})
	if err := f.w.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(f.dir, "sent"))
	if len(ents) != 4 {
		t.Fatalf("sent/ holds %d entries", len(ents))
	}
	if n, _ := f.spool.Depth(ctx); n != 2 {
		t.Fatalf("spooled %d", n)
	}
}

// TestPackets: an edXML packet dropped in the outbox is spooled like a
// document folder (to sent/ with its state), a status packet is queued
// (sent/ with the document it is about), and a packet the agent refuses goes
// to failed/ with its reasons.
func TestPackets(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	in, err := inbox.Open(ctx, inbox.Config{Dir: f.dir + "/inbox", DB: f.dir + "/state/inbox.db", Quarantine: f.dir + "/q"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	ob, _ := outbox.New(me, f.pki.Unit(t, me), f.pki.Trust, f.spool, 1<<20)
	if f.w.Packets, err = packets.New(packets.Config{TempDir: f.dir + "/tmp"}, ob, f.spool, in); err != nil {
		t.Fatal(err)
	}
	statuses := 0
	f.w.StatusAdded = func() { statuses++ }
	write := func(name string, d *document.Document) {
		var buf bytes.Buffer
		pdf := []byte("%PDF-1.7 " + name)
		if err := edxml.Write(&buf, d, []edxml.File{{Name: "van-ban.pdf", Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(pdf)), nil }}}); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(f.dir, "outbox", ".tmp"), buf.Bytes(), 0o640)
		os.Rename(filepath.Join(f.dir, "outbox", ".tmp"), filepath.Join(f.dir, "outbox", name))
	}
	d := document.Template(time.Now())
	d.ID, d.To = "", []document.UnitID{other}
	write("cv-1.edxml", d)
	foreign := document.Template(time.Now())
	foreign.From, foreign.To = other, []document.UnitID{me}
	write("foreign.edxml", foreign)
	if err := f.w.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	var res result
	b, _ := os.ReadFile(filepath.Join(f.dir, "sent", "cv-1.edxml.json"))
	if err := json.Unmarshal(b, &res); err != nil || res.State != spool.Spooled || !exists(filepath.Join(f.dir, "sent", "cv-1.edxml")) {
		t.Fatalf("sent: %s", b)
	}
	var rf reasonFile
	b, _ = os.ReadFile(filepath.Join(f.dir, "failed", "foreign.edxml.reason.json"))
	if err := json.Unmarshal(b, &rf); err != nil || len(rf.Problems) == 0 || rf.Problems[0].Field != "From/OrganId" {
		t.Fatalf("failed: %s", b)
	}
	// The sender takes its document back, by a status packet.
	rec, _ := f.spool.Get(ctx, res.DocumentID)
	var buf bytes.Buffer
	edxml.WriteStatus(&buf, edxml.NewStatusPacket(document.Status{Unit: me, Code: "13", Time: time.Now()}, edxml.ResponseFor{DocumentID: rec.EdXMLID}))
	os.WriteFile(filepath.Join(f.dir, "outbox", "lay-lai.edxml"), buf.Bytes(), 0o640)
	if err := f.w.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(f.dir, "sent", "lay-lai.edxml.json"))
	if err := json.Unmarshal(b, &res); err != nil || res.State != StatusQueued || res.StatusCode != "13" || res.DocumentID != rec.ID || statuses != 1 {
		t.Fatalf("status: %s", b)
	}
}
