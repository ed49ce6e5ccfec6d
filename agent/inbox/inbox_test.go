package inbox

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
)

const (
	sender = document.UnitID("000.00.00.H29")
	me     = document.UnitID("000.01.00.H29")
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{Dir: dir + "/inbox", DB: dir + "/state/inbox.db", Quarantine: dir + "/quarantine"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func received(t *testing.T, p *agenttest.PKI) Received {
	t.Helper()
	_, meta := agenttest.Meta(sender, me)
	raw := p.Container(t, meta, 1000)
	rc := p.Receipt(t, raw)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: p.Trust})
	if !rep.Valid {
		t.Fatal(rep.Reasons)
	}
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: p.Trust})
	if !rr.Valid {
		t.Fatal(rr.Reasons)
	}
	return Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt}
}

func TestPutOnceAndFolder(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	r := received(t, p)
	it, isNew, err := s.Put(ctx, me, r)
	if err != nil || !isNew {
		t.Fatalf("put: %v %v", isNew, err)
	}
	id := r.Container.Meta.ID
	if it.ID != id || it.From != sender || len(it.Files) != 2 || it.Files[0].Name != "van-ban.pdf" || it.Cursor != 1 {
		t.Fatalf("item %+v", it)
	}
	if len(it.Statuses) != 1 || it.Statuses[0].Code != document.StatusDelivered || it.Statuses[0].State != StatusPending || it.Statuses[0].Unit != me {
		t.Fatalf("statuses %+v", it.Statuses)
	}
	for _, f := range []string{MetadataFile, ContainerFile, ReceiptFile, "files/van-ban.pdf", "files/phu-luc.txt"} {
		if _, err := os.Stat(filepath.Join(dir, "inbox", string(id), f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "inbox", string(id), ContainerFile))
	if agenttest.SHA256(b) != r.SHA256 {
		t.Fatal("container changed on disk")
	}
	// Delivered again, even after the document system removed the folder:
	// not handed over a second time.
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir) // a restart
	if _, isNew, err := s2.Put(ctx, me, r); err != nil || isNew {
		t.Fatalf("second put: %v %v", isNew, err)
	}
	if _, err := os.Stat(s.Dir(id)); !os.IsNotExist(err) {
		t.Fatal("the folder came back")
	}
	if _, _, err := s2.FilePath(ctx, id, "van-ban.pdf"); !errors.Is(err, ErrGone) {
		t.Fatalf("file of a removed folder: %v", err)
	}
	if n, _ := s2.Count(ctx); n != 1 {
		t.Fatalf("count %d", n)
	}
}

func TestRecoverFolderWrittenBeforeCrash(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	r := received(t, p)
	// The folder was renamed into place, then the agent died before the
	// database commit; a temporary folder of another delivery was left too.
	if err := s.writeFolder(r); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "inbox", ".tmp-abc-X"), 0o750)
	s2 := openStore(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "inbox", ".tmp-abc-X")); !os.IsNotExist(err) {
		t.Fatal("temporary folder not swept")
	}
	if _, isNew, err := s2.Put(ctx, me, r); err != nil || !isNew {
		t.Fatalf("put after crash: %v %v", isNew, err)
	}
	if p, _, err := s2.FilePath(ctx, r.Container.Meta.ID, "phu-luc.txt"); err != nil {
		t.Fatal(err)
	} else if b, _ := os.ReadFile(p); string(b) != "Phụ lục" {
		t.Fatalf("file %q", b)
	}
}

func TestListCursor(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	s := openStore(t, t.TempDir())
	var ids []document.ID
	for range 5 {
		r := received(t, p)
		if _, _, err := s.Put(ctx, me, r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Container.Meta.ID)
	}
	var got []document.ID
	var since int64
	for {
		page, err := s.List(ctx, since, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, it := range page {
			got = append(got, it.ID)
		}
		since = page[len(page)-1].Cursor
	}
	if len(got) != 5 {
		t.Fatalf("got %v", got)
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("order %v, want %v", got, ids)
		}
	}
}

func TestStatuses(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	s := openStore(t, t.TempDir())
	r := received(t, p)
	if _, _, err := s.Put(ctx, me, r); err != nil {
		t.Fatal(err)
	}
	id := r.Container.Meta.ID
	now := time.Now().UTC()
	tests := []struct {
		name    string
		st      document.Status
		field   string // a problem expected at this field
		err     error
		flagged bool
	}{
		{"01 is the agent's", document.Status{DocumentID: id, Unit: me, Time: now, Code: "01"}, "code", nil, false},
		{"13 is the sender's", document.Status{DocumentID: id, Unit: me, Time: now, Code: "13"}, "code", nil, false},
		{"unknown code", document.Status{DocumentID: id, Unit: me, Time: now, Code: "99"}, "code", nil, false},
		{"refusal without reason", document.Status{DocumentID: id, Unit: me, Time: now, Code: "02"}, "description", nil, false},
		{"unknown document", document.Status{DocumentID: document.NewID(now), Unit: me, Time: now, Code: "03"}, "", ErrNotFound, false},
		{"accepted", document.Status{DocumentID: id, Unit: me, Time: now, Code: "03", Officer: &document.Officer{Name: "Lê Văn C"}}, "", nil, false},
		{"finished", document.Status{DocumentID: id, Unit: me, Time: now.Add(time.Second), Code: "06"}, "", nil, false},
		{"in progress after finished", document.Status{DocumentID: id, Unit: me, Time: now.Add(2 * time.Second), Code: "05"}, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := s.AddStatus(ctx, tt.st)
			if tt.field != "" {
				var ps document.Problems
				if !errors.As(err, &ps) || ps[0].Field != tt.field {
					t.Fatalf("want a problem at %s, got %v", tt.field, err)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err == nil && st.OutOfOrder != tt.flagged {
				t.Fatalf("flagged %v", st.OutOfOrder)
			}
		})
	}
	pend, _ := s.PendingStatuses(ctx, 10)
	if len(pend) != 4 || pend[0].Code != "01" || pend[1].Code != "03" {
		t.Fatalf("pending %+v", pend)
	}
	if err := s.MarkStatusSent(ctx, pend[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.RejectStatus(ctx, pend[3].Status, reason.List{{Code: reason.RecipientUnknown, Message: "x"}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.PendingCount(ctx); n != 2 {
		t.Fatalf("pending %d", n)
	}
	it, _ := s.Get(ctx, id)
	if it.Statuses[0].State != StatusSent || it.Statuses[3].State != StatusRejected || !it.Statuses[3].Reasons.Has(reason.RecipientUnknown) {
		t.Fatalf("statuses %+v", it.Statuses)
	}
}

func TestQuarantine(t *testing.T) {
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	s := openStore(t, dir)
	r := received(t, p)
	rs := reason.List{{Code: reason.ReceiptInvalid, Message: "forged"}}
	q, err := s.Quarantine(r.Container.Meta.ID, r.Container.Raw, r.Receipt, rs)
	if err != nil {
		t.Fatal(err)
	}
	if q2, err := s.Quarantine(r.Container.Meta.ID, r.Container.Raw, r.Receipt, rs); err != nil || q2 != q {
		t.Fatalf("again: %s %v", q2, err)
	}
	for _, f := range []string{"reasons.json", ContainerFile, ReceiptFile} {
		if _, err := os.Stat(filepath.Join(q, f)); err != nil {
			t.Error(err)
		}
	}
	if filepath.Dir(q) != filepath.Join(dir, "quarantine") {
		t.Fatalf("quarantined in %s", q)
	}
	if _, err := s.Get(t.Context(), r.Container.Meta.ID); !errors.Is(err, ErrNotFound) {
		t.Fatal("a quarantined document is in the inbox")
	}
}

// oldInboxSchema is the inbox database's schema before it was versioned,
// as the agent created it (user_version 0), frozen here.
const oldInboxSchema = `
CREATE TABLE IF NOT EXISTS documents (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT NOT NULL UNIQUE,
	sender      TEXT NOT NULL,
	subject     TEXT NOT NULL,
	received_at INTEGER NOT NULL,
	accepted_at INTEGER NOT NULL,
	archive_key TEXT NOT NULL,
	sha256      TEXT NOT NULL,
	size        INTEGER NOT NULL,
	files       TEXT NOT NULL,
	meta        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS statuses (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT,
	id           TEXT NOT NULL,
	code         TEXT NOT NULL,
	time         INTEGER NOT NULL,
	body         TEXT NOT NULL,
	state        TEXT NOT NULL,
	out_of_order INTEGER NOT NULL DEFAULT 0,
	reasons      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS statuses_id ON statuses(id, seq);
CREATE INDEX IF NOT EXISTS statuses_state ON statuses(state, seq);
`

// TestOpensUnversionedInbox: an inbox written before schema versions opens
// and keeps its seen-set and queued statuses; it is marked version 1.
func TestOpensUnversionedInbox(t *testing.T) {
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	r := received(t, p)
	id := r.Container.Meta.ID
	os.MkdirAll(filepath.Join(dir, "state"), 0o750)
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "state", "inbox.db")+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(oldInboxSchema); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	st := document.Status{DocumentID: id, Unit: me, Time: now, Code: document.StatusDelivered}
	sb, _ := json.Marshal(st)
	if _, err := raw.Exec(`INSERT INTO documents (id, sender, subject, received_at, accepted_at, archive_key, sha256, size, files, meta)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)`, id, sender, r.Container.Meta.Subject, now.UnixNano(), r.Body.AcceptedAt.UnixNano(),
		r.Body.ArchiveKey, r.SHA256, len(r.Container.Raw), string(r.Container.MetaRaw)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO statuses (id, code, time, body, state) VALUES (?, ?, ?, ?, 'pending')`, id, st.Code, now.UnixNano(), string(sb)); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	s := openStore(t, dir)
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d, %v", v, err)
	}
	// Seen before: not handed over again.
	if it, isNew, err := s.Put(t.Context(), me, r); err != nil || isNew || it.Cursor != 1 {
		t.Fatalf("put of a document the old inbox holds: new %v, %+v, %v", isNew, it, err)
	}
	if sts, err := s.PendingStatuses(t.Context(), 10); err != nil || len(sts) != 1 || sts[0].Code != document.StatusDelivered {
		t.Fatalf("pending statuses %+v %v", sts, err)
	}
	// Migration 2 gave the old document its edXML DocumentId.
	if it, err := s.FindEdXML(t.Context(), EdXMLID(r.Container.Meta)); err != nil || it.ID != id {
		t.Fatalf("find by edXML id: %+v %v", it, err)
	}
}

// TestRefusesNewerInbox: an inbox from a newer agent is not touched.
func TestRefusesNewerInbox(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	s.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1))
	s.Close()
	if _, err := Open(t.Context(), Config{Dir: dir + "/inbox", DB: dir + "/state/inbox.db", Quarantine: dir + "/quarantine"}, nil); !errors.Is(err, sqldb.ErrTooNew) {
		t.Fatalf("err %v", err)
	}
}

// TestUpgradesVersion1Inbox: an inbox at schema version 1 (what the agent
// wrote before edXML) upgrades to the current version: a document it holds
// is still seen (not handed over twice), its queued status still waits, it
// is found by its edXML DocumentId, and its sender's take-back (13) is
// recorded on it.
func TestUpgradesVersion1Inbox(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	r := received(t, p)
	id := r.Container.Meta.ID
	os.MkdirAll(filepath.Join(dir, "state"), 0o750)
	db, err := sqldb.Open(ctx, filepath.Join(dir, "state", "inbox.db"), sqldb.Options{Migrations: migrations[:1]})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	st := document.Status{DocumentID: id, Unit: me, Time: now, Code: document.StatusDelivered}
	sb, _ := json.Marshal(st)
	if _, err := db.Exec(`INSERT INTO documents (id, sender, subject, received_at, accepted_at, archive_key, sha256, size, files, meta)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)`, id, sender, r.Container.Meta.Subject, now.UnixNano(), r.Body.AcceptedAt.UnixNano(),
		r.Body.ArchiveKey, r.SHA256, len(r.Container.Raw), string(r.Container.MetaRaw)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO statuses (id, code, time, body, state) VALUES (?, ?, ?, ?, 'pending')`, id, st.Code, now.UnixNano(), string(sb)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openStore(t, dir)
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) || v < 2 {
		t.Fatalf("schema version %d, %v", v, err)
	}
	if it, isNew, err := s.Put(ctx, me, r); err != nil || isNew {
		t.Fatalf("put of a document the old inbox holds: new %v, %+v, %v", isNew, it, err)
	}
	if sts, err := s.PendingStatuses(ctx, 10); err != nil || len(sts) != 1 || sts[0].Code != document.StatusDelivered {
		t.Fatalf("pending statuses %+v %v", sts, err)
	}
	if it, err := s.FindEdXML(ctx, EdXMLID(r.Container.Meta)); err != nil || it.ID != id {
		t.Fatalf("find by edXML id: %+v %v", it, err)
	}
	take := document.Status{DocumentID: id, Unit: sender, Time: now.Add(time.Second), Code: document.StatusCancelled}
	if ss, isNew, err := s.AddSenderStatus(ctx, take); err != nil || !isNew || ss == nil {
		t.Fatalf("the sender's 13 on the old document: %+v %v %v", ss, isNew, err)
	}
}
