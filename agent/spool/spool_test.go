package spool

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
)

func entry(t *testing.T, body string) Entry {
	t.Helper()
	data := []byte("container " + body)
	sum := sha256.Sum256(data)
	ms := sha256.Sum256([]byte("manifest " + body))
	return Entry{
		ID:             document.NewID(time.Now()),
		Container:      data,
		SHA256:         hex.EncodeToString(sum[:]),
		ManifestSHA256: hex.EncodeToString(ms[:]),
		To:             []document.UnitID{"000.01.00.H29", "000.02.00.H29"},
		Subject:        "Về việc " + body,
		Source:         "api",
	}
}

func open(t *testing.T, dir string) *Spool {
	t.Helper()
	s, err := Open(t.Context(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAddGetAndTransitions(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	e := entry(t, "a")
	r, created, err := s.Add(ctx, e)
	if err != nil || !created {
		t.Fatalf("add: %v %v", created, err)
	}
	if r.State != Spooled || r.Size != int64(len(e.Container)) || len(r.Recipients) != 2 || r.Recipients[1].Unit != "000.02.00.H29" {
		t.Fatalf("record %+v", r)
	}
	b, err := s.Container(e.ID)
	if err != nil || string(b) != string(e.Container) {
		t.Fatalf("container %q %v", b, err)
	}
	if n, _ := s.Depth(ctx); n != 1 {
		t.Fatalf("depth %d", n)
	}
	if err := s.MarkSubmitted(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get(ctx, e.ID); r.State != Submitted || r.SubmittedAt == nil || r.Attempts != 1 {
		t.Fatalf("after submit %+v", r)
	}
	at := time.Now().UTC()
	changed, err := s.Accept(ctx, e.ID, Acceptance{At: at, ArchiveKey: "2027/01/01/x/container.asice", Receipt: []byte{1, 2}})
	if err != nil || !changed {
		t.Fatalf("accept %v %v", changed, err)
	}
	// Final states are sticky.
	if changed, err := s.Reject(ctx, e.ID, at, reason.List{{Code: reason.DocumentConflict, Message: "x"}}); err != nil || changed {
		t.Fatalf("reject after accept: %v %v", changed, err)
	}
	if err := s.MarkSubmitted(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Get(ctx, e.ID)
	if r.State != Accepted || r.ArchiveKey == "" || len(r.Receipt) != 2 || r.DecidedAt == nil {
		t.Fatalf("accepted %+v", r)
	}
	if n, _ := s.Depth(ctx); n != 0 {
		t.Fatalf("depth %d", n)
	}
	if _, err := s.Get(ctx, document.NewID(time.Now())); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	if _, err := s.Accept(ctx, document.NewID(time.Now()), Acceptance{At: at}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("accept unknown: %v", err)
	}
}

func TestAddIdempotence(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	e := entry(t, "a")
	first, _, err := s.Add(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		change  func(*Entry)
		created bool
		err     error
	}{
		{"same id, same manifest, new signature", func(x *Entry) { x.Container = []byte("re-signed"); x.SHA256 = "ff" }, false, nil},
		{"same id, other content", func(x *Entry) { x.ManifestSHA256 = "00"; x.SHA256 = "ee" }, false, ErrConflict},
		{"same idempotency key, new id", func(x *Entry) { x.ID = document.NewID(time.Now()); x.IdempotencyKey = "k1" }, true, nil},
		{"repeated idempotency key", func(x *Entry) { x.ID = document.NewID(time.Now()); x.IdempotencyKey = "k1" }, false, nil},
		{"new id", func(x *Entry) { x.ID = document.NewID(time.Now()) }, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := e
			tt.change(&x)
			r, created, err := s.Add(ctx, x)
			if !errors.Is(err, tt.err) || created != tt.created {
				t.Fatalf("created %v err %v; want %v %v", created, err, tt.created, tt.err)
			}
			if err == nil && !created && tt.name == "same id, same manifest, new signature" && r.SHA256 != first.SHA256 {
				t.Fatalf("repeat returned %s", r.SHA256)
			}
		})
	}
	b, _ := s.Container(e.ID)
	if string(b) != string(e.Container) {
		t.Fatalf("the first container was overwritten: %q", b)
	}
}

func TestPendingInOrderAndUnanswered(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	var ids []document.ID
	for _, b := range []string{"1", "2", "3", "4"} {
		e := entry(t, b)
		if _, _, err := s.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	if err := s.MarkSubmitted(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	p, err := s.Pending(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 3 || p[0].ID != ids[0] || p[1].ID != ids[2] || p[2].ID != ids[3] {
		t.Fatalf("pending %v", p)
	}
	if u, _ := s.Unanswered(ctx, time.Now().Add(-time.Hour), 10); len(u) != 0 {
		t.Fatalf("unanswered too early: %d", len(u))
	}
	if u, _ := s.Unanswered(ctx, time.Now().Add(time.Second), 10); len(u) != 1 || u[0].ID != ids[1] {
		t.Fatalf("unanswered %v", u)
	}
}

func TestStatuses(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	e := entry(t, "a")
	if _, _, err := s.Add(ctx, e); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	sts := []document.Status{
		{DocumentID: e.ID, Unit: "000.01.00.H29", Time: t0, Code: document.StatusDelivered},
		{DocumentID: e.ID, Unit: "000.01.00.H29", Time: t0.Add(time.Minute), Code: document.StatusAccepted, Officer: &document.Officer{Name: "Trần Thị B"}},
		{DocumentID: e.ID, Unit: "000.02.00.H29", Time: t0.Add(2 * time.Second), Code: document.StatusDelivered},
	}
	for _, st := range sts {
		if ok, err := s.AddStatus(ctx, st); err != nil || !ok {
			t.Fatalf("status %v %v", ok, err)
		}
	}
	if ok, err := s.AddStatus(ctx, sts[1]); err != nil || ok {
		t.Fatalf("repeated status %v %v", ok, err)
	}
	if _, err := s.AddStatus(ctx, document.Status{DocumentID: document.NewID(t0), Unit: "000.01.00.H29", Time: t0, Code: "01"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("status for unknown document: %v", err)
	}
	r, _ := s.Get(ctx, e.ID)
	if len(r.History) != 3 || r.History[2].Code != document.StatusAccepted || r.History[2].Officer.Name != "Trần Thị B" {
		t.Fatalf("history %+v", r.History)
	}
	if r.Recipients[0].LastStatus != "03" || r.Recipients[0].DeliveredAt == nil || r.Recipients[1].LastStatus != "01" {
		t.Fatalf("recipients %+v", r.Recipients)
	}
}

// TestCrash copies the spool's files while it is open, as a power cut
// would leave them, with a half-written temporary container and a container
// whose record was never committed, and opens the copy.
func TestCrash(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s := open(t, dir)
	var ids []document.ID
	for _, b := range []string{"1", "2"} {
		e := entry(t, b)
		if _, _, err := s.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	if err := s.MarkSubmitted(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reject(ctx, ids[1], time.Now(), reason.List{{Code: reason.RecipientUnknown, Message: "to[0]"}}); err != nil {
		t.Fatal(err)
	}

	crashed := t.TempDir()
	copyTree(t, dir, crashed)
	half := filepath.Join(crashed, "containers", ".tmp-0123-"+string(document.NewID(time.Now()))+".asice")
	if err := os.WriteFile(half, []byte("PK\x03\x04 half"), 0o640); err != nil {
		t.Fatal(err)
	}
	orphan := document.NewID(time.Now())
	if err := os.WriteFile(filepath.Join(crashed, "containers", string(orphan)+".asice"), []byte("never acknowledged"), 0o640); err != nil {
		t.Fatal(err)
	}

	c := open(t, crashed)
	r0, err := c.Get(ctx, ids[0])
	if err != nil || r0.State != Submitted {
		t.Fatalf("after crash: %+v %v", r0, err)
	}
	r1, err := c.Get(ctx, ids[1])
	if err != nil || r1.State != Rejected || !r1.Reasons.Has(reason.RecipientUnknown) {
		t.Fatalf("after crash: %+v %v", r1, err)
	}
	if b, err := c.Container(ids[0]); err != nil || string(b) != "container 1" {
		t.Fatalf("container after crash %q %v", b, err)
	}
	for _, p := range []string{half, filepath.Join(crashed, "containers", string(orphan)+".asice")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived recovery: %v", filepath.Base(p), err)
		}
	}
	if _, err := c.Get(ctx, orphan); !errors.Is(err, ErrNotFound) {
		t.Fatalf("orphan: %v", err)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// oldSpoolSchema is the spool's schema before it was versioned, as the
// agent created it (journal_mode WAL, user_version 0), frozen here.
const oldSpoolSchema = `
CREATE TABLE IF NOT EXISTS documents (
	seq             INTEGER PRIMARY KEY AUTOINCREMENT,
	id              TEXT NOT NULL UNIQUE,
	state           TEXT NOT NULL,
	sha256          TEXT NOT NULL,
	manifest_sha256 TEXT NOT NULL,
	size            INTEGER NOT NULL,
	subject         TEXT NOT NULL,
	source          TEXT NOT NULL,
	idem_key        TEXT UNIQUE,
	created_at      INTEGER NOT NULL,
	submitted_at    INTEGER,
	decided_at      INTEGER,
	attempts        INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT NOT NULL DEFAULT '',
	archive_key     TEXT NOT NULL DEFAULT '',
	receipt         BLOB,
	receipt_problems TEXT NOT NULL DEFAULT '',
	reasons         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_state ON documents(state, seq);
CREATE TABLE IF NOT EXISTS recipients (
	id           TEXT NOT NULL,
	unit         TEXT NOT NULL,
	pos          INTEGER NOT NULL,
	delivered_at INTEGER,
	last_status  TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (id, unit)
);
CREATE TABLE IF NOT EXISTS statuses (
	id          TEXT NOT NULL,
	unit        TEXT NOT NULL,
	code        TEXT NOT NULL,
	time        INTEGER NOT NULL,
	body        TEXT NOT NULL,
	received_at INTEGER NOT NULL,
	PRIMARY KEY (id, unit, code, time)
);
`

// TestOpensUnversionedSpool: a spool written before schema versions opens,
// keeps its documents (still sent in order) and is marked version 1.
func TestOpensUnversionedSpool(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "containers"), 0o750)
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "spool.db")+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(oldSpoolSchema); err != nil {
		t.Fatal(err)
	}
	e := entry(t, "cũ")
	os.WriteFile(filepath.Join(dir, "containers", string(e.ID)+".asice"), e.Container, 0o640)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO documents (id, state, sha256, manifest_sha256, size, subject, source, idem_key, created_at) VALUES (?, 'spooled', ?, ?, ?, ?, 'api', NULL, ?)`,
			[]any{e.ID, e.SHA256, e.ManifestSHA256, len(e.Container), e.Subject, time.Now().UnixNano()}},
		{`INSERT INTO recipients (id, unit, pos) VALUES (?, ?, 0)`, []any{e.ID, e.To[0]}},
	} {
		if _, err := raw.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	s := open(t, dir)
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d, %v", v, err)
	}
	pending, err := s.Pending(t.Context(), 10)
	if err != nil || len(pending) != 1 || pending[0].ID != e.ID || pending[0].Subject != e.Subject {
		t.Fatalf("pending %+v %v", pending, err)
	}
	if r, err := s.Get(t.Context(), e.ID); err != nil || len(r.Recipients) != 1 || r.Recipients[0].Unit != e.To[0] {
		t.Fatalf("get %+v %v", r, err)
	}
	if b, err := s.Container(e.ID); err != nil || string(b) != string(e.Container) {
		t.Fatalf("container %v", err)
	}
	// And it goes on working: a new document after the old one.
	if _, _, err := s.Add(t.Context(), entry(t, "mới")); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Depth(t.Context()); n != 2 {
		t.Fatalf("depth %d", n)
	}
}

// TestRefusesNewerSpool: a spool from a newer agent is not touched.
func TestRefusesNewerSpool(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1))
	s.Close()
	if _, err := Open(t.Context(), dir, nil); !errors.Is(err, sqldb.ErrTooNew) {
		t.Fatalf("err %v", err)
	}
}

// TestEdXMLAndHandOver: a document is found by its edXML DocumentId (the
// last spooled when two share one); the statuses of other units wait for
// the document system until it takes them (done), fail or processing leave
// them listed; the sender's own 13 is kept in the history without making
// it a recipient.
func TestEdXMLAndHandOver(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	const xid = "000.00.00.H29,2026/11/30,12/UBND-VP"
	a, b := entry(t, "a"), entry(t, "b")
	a.EdXMLID, b.EdXMLID = xid, xid
	for _, e := range []Entry{a, b, entry(t, "c")} {
		if _, _, err := s.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := s.FindEdXML(ctx, xid); err != nil || r.ID != b.ID || r.EdXMLID != xid {
		t.Fatalf("find: %+v %v", r, err)
	}
	for _, v := range []string{"", "000.00.00.H29,2026/11/30,13/UBND-VP"} {
		if _, err := s.FindEdXML(ctx, v); !errors.Is(err, ErrNotFound) {
			t.Fatalf("find %q: %v", v, err)
		}
	}
	t0 := time.Now().UTC()
	const me = document.UnitID("000.00.00.H29")
	for _, st := range []document.Status{
		{DocumentID: a.ID, Unit: "000.01.00.H29", Time: t0, Code: document.StatusDelivered},
		{DocumentID: a.ID, Unit: me, Time: t0.Add(time.Second), Code: document.StatusCancelled},
		{DocumentID: a.ID, Unit: "000.01.00.H29", Time: t0.Add(2 * time.Second), Code: document.StatusChangeAccept},
	} {
		if _, err := s.AddStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := s.Get(ctx, a.ID)
	if len(r.Recipients) != 2 || len(r.History) != 3 || r.History[1].Code != "13" || r.History[0].Seq == 0 {
		t.Fatalf("record %+v", r)
	}
	pending, err := s.NotHandedOver(ctx, me, 10)
	if err != nil || len(pending) != 2 || pending[0].Code != "01" || pending[1].Code != "15" {
		t.Fatalf("pending %+v %v", pending, err)
	}
	if st, err := s.Status(ctx, a.ID, pending[1].Seq); err != nil || st.Code != "15" {
		t.Fatalf("status %+v %v", st, err)
	}
	if _, err := s.Status(ctx, b.ID, pending[1].Seq); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another document's status: %v", err)
	}
	if err := s.HandOver(ctx, a.ID, pending[0].Seq, "done"); err != nil {
		t.Fatal(err)
	}
	if err := s.HandOver(ctx, a.ID, pending[1].Seq, "fail"); err != nil {
		t.Fatal(err)
	}
	if err := s.HandOver(ctx, b.ID, 999, "done"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown status: %v", err)
	}
	pending, _ = s.NotHandedOver(ctx, me, 10)
	if len(pending) != 1 || pending[0].Code != "15" || pending[0].Transport != "fail" {
		t.Fatalf("after hand-over %+v", pending)
	}
	if us, _ := s.Units(ctx); len(us) != 2 {
		t.Fatalf("units %v", us)
	}
	if rs, _ := s.Recent(ctx, 2); len(rs) != 2 || len(rs[1].Recipients) != 2 {
		t.Fatalf("recent %+v", rs)
	}
}

// TestUpgradesVersion1Spool: a spool at schema version 1 (what the agent
// wrote before edXML) upgrades to the current version: its documents are
// still sent in order, keep their recipients' statuses, and are found by
// their edXML DocumentId, read from their containers (a document whose
// container is gone keeps none); the statuses received before wait for the
// document system like new ones.
func TestUpgradesVersion1Spool(t *testing.T) {
	ctx := t.Context()
	p := agenttest.NewPKI(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "containers"), 0o750)
	db, err := sqldb.Open(ctx, filepath.Join(dir, "spool.db"), sqldb.Options{Migrations: migrations[:1]})
	if err != nil {
		t.Fatal(err)
	}
	const me, them = document.UnitID("000.00.00.H29"), document.UnitID("000.01.00.H29")
	id, meta := agenttest.Meta(me, them)
	d, _ := document.Parse(meta)
	xid := edxml.DocumentID(d)
	if xid == "" {
		t.Fatal("the test document has no edXML DocumentId")
	}
	raw := p.Container(t, meta, 100)
	os.WriteFile(filepath.Join(dir, "containers", string(id)+".asice"), raw, 0o640)
	lost := document.NewID(time.Now()) // its container is gone
	now := time.Now().UTC()
	st := document.Status{DocumentID: id, Unit: them, Time: now, Code: document.StatusDelivered}
	body, _ := json.Marshal(st)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO documents (id, state, sha256, manifest_sha256, size, subject, source, idem_key, created_at) VALUES (?, 'spooled', ?, ?, ?, ?, 'api', NULL, ?)`,
			[]any{id, agenttest.SHA256(raw), agenttest.SHA256(meta), len(raw), d.Subject, now.UnixNano()}},
		{`INSERT INTO documents (id, state, sha256, manifest_sha256, size, subject, source, idem_key, created_at) VALUES (?, 'accepted', 'x', 'y', 1, 'cũ', 'api', NULL, ?)`,
			[]any{lost, now.UnixNano()}},
		{`INSERT INTO recipients (id, unit, pos) VALUES (?, ?, 0)`, []any{id, them}},
		{`INSERT INTO statuses (id, unit, code, time, body, received_at) VALUES (?, ?, ?, ?, ?, ?)`,
			[]any{id, them, st.Code, now.UnixNano(), string(body), now.UnixNano()}},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s := open(t, dir)
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) || v < 2 {
		t.Fatalf("schema version %d, %v", v, err)
	}
	if r, err := s.FindEdXML(ctx, xid); err != nil || r.ID != id || r.EdXMLID != xid {
		t.Fatalf("find %q after the upgrade: %+v %v", xid, r, err)
	}
	if r, err := s.Get(ctx, lost); err != nil || r.EdXMLID != "" {
		t.Fatalf("the document without its container: %+v %v", r, err)
	}
	pending, err := s.Pending(ctx, 10)
	if err != nil || len(pending) != 1 || pending[0].ID != id {
		t.Fatalf("pending %+v %v", pending, err)
	}
	r, err := s.Get(ctx, id)
	if err != nil || len(r.Recipients) != 1 || len(r.History) != 1 || r.History[0].Code != document.StatusDelivered {
		t.Fatalf("record %+v %v", r, err)
	}
	waiting, err := s.NotHandedOver(ctx, me, 10)
	if err != nil || len(waiting) != 1 || waiting[0].Code != document.StatusDelivered {
		t.Fatalf("statuses for the document system: %+v %v", waiting, err)
	}
	if err := s.HandOver(ctx, id, waiting[0].Seq, "axis"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Add(ctx, entry(t, "mới")); err != nil {
		t.Fatal(err)
	}
}
