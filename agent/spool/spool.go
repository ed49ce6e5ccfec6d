// Package spool is the agent's durable outbox: the truth, across restarts,
// about every document the agent accepted for sending.
//
// A document is in the spool once Add returns: its signed container is a
// file written with durable.WriteFile (temporary file, fsync, rename, fsync
// of the directory) and its state record is committed to SQLite
// (journal_mode WAL, synchronous FULL, so a commit is on disk when it
// returns). The container is written first and the record second, so a crash
// in between leaves a container without a record, which Open removes: the
// document was never acknowledged. A half-written temporary file is ignored
// and swept.
//
// Why SQLite for the records and files for the containers: the records need
// transactions (a notice updates a document, its recipients and its status
// history at once), an order (documents are sent in the order they were
// accepted) and lookups by id and idempotency key, which is what SQLite
// gives, with a single fsync per commit; containers are large, written once
// and read whole, which is what files are good at, and an operator can pick
// one up with standard tools.
//
// A document's state moves spooled → submitted → accepted | rejected;
// accepted and rejected are final. Deliveries per recipient and the status
// history come from the hub's notices. Each document also keeps its edXML
// DocumentId, so that a document system speaking edXML can name it (a
// status, an update), and each status the document system's
// acknowledgement (HandOver), so that it is listed to it until taken.
package spool

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
)

// State is where a document is on its way to the hub.
type State string

const (
	Spooled   State = "spooled"   // durably accepted by the agent, not yet published
	Submitted State = "submitted" // published; the stream acknowledged it
	Accepted  State = "accepted"  // the hub accepted and archived it (receipt)
	Rejected  State = "rejected"  // the hub refused it (reasons)
)

// Final reports whether no further state follows.
func (s State) Final() bool { return s == Accepted || s == Rejected }

// Errors.
var (
	ErrNotFound = errors.New("spool: no such document")
	ErrConflict = errors.New("spool: document id already spooled with other content")
)

// Entry is what Add stores.
type Entry struct {
	ID             document.ID
	Container      []byte // the signed container
	SHA256         string // hex SHA-256 of Container
	ManifestSHA256 string // hex SHA-256 of the signed manifest: same files and metadata, same value
	To             []document.UnitID
	Subject        string
	Source         string // "api" or "folder:<name>"
	IdempotencyKey string // optional; a second Add with the same key returns the first document
	EdXMLID        string // the document's edXML DocumentId (edxml_id, or as edXML forms it)
}

// Delivery is one recipient's progress.
type Delivery struct {
	Unit        document.UnitID     `json:"unit"`
	DeliveredAt *time.Time          `json:"delivered_at,omitempty"`
	LastStatus  document.StatusCode `json:"last_status,omitempty"`
}

// Record is the state of a spooled document.
type Record struct {
	Seq             int64       `json:"-"`
	ID              document.ID `json:"id"`
	State           State       `json:"state"`
	SHA256          string      `json:"container_sha256"`
	ManifestSHA256  string      `json:"-"`
	Size            int64       `json:"size"`
	Subject         string      `json:"subject"`
	Source          string      `json:"source"`
	IdempotencyKey  string      `json:"-"`
	CreatedAt       time.Time   `json:"created_at"`
	SubmittedAt     *time.Time  `json:"submitted_at,omitempty"`
	DecidedAt       *time.Time  `json:"decided_at,omitempty"`
	Attempts        int         `json:"attempts"`
	LastError       string      `json:"last_error,omitempty"`
	ArchiveKey      string      `json:"archive_key,omitempty"`
	Receipt         []byte      `json:"receipt,omitempty"` // DER CMS, base64 in JSON
	ReceiptProblems reason.List `json:"receipt_problems,omitempty"`
	Reasons         reason.List `json:"reasons,omitempty"`
	EdXMLID         string      `json:"edxml_id,omitempty"`
	Recipients      []Delivery  `json:"recipients"`
	History         []Status    `json:"history"`
}

// Status is a status in a document's history: a recipient's report (or the
// sender's own 13 as the hub recorded it), with its number in the spool and
// what the document system did with it.
type Status struct {
	Seq int64 `json:"seq"`
	document.Status
	ReceivedAt   time.Time  `json:"received_at"`
	HandedOverAt *time.Time `json:"handed_over_at,omitempty"`
	// Transport is the document system's last acknowledgement of the
	// status (the axis protocol's updateStatus: done, fail, processing).
	Transport string `json:"transport,omitempty"`
	// Signed: the reporting unit signed the status (its signature is at
	// GET /v1/documents/{id}/statuses/{seq}/signature); SignatureProblems
	// say why the agent found the signature wanting, when it did.
	Signed            bool   `json:"signed"`
	SignatureProblems string `json:"signature_problems,omitempty"`
}

// Spool is the durable outbox.
type Spool struct {
	mu  sync.Mutex // serializes Add: one container file per id
	dir string
	db  *sql.DB
	log *slog.Logger
	now func() time.Time
}

// migrations are the spool's schema versions (sqldb): never edit one,
// append. A spool from before versioning holds version 1 and is adopted.
var migrations = []sqldb.Migration{
	{SQL: schema},     // 1
	{SQL: migration2}, // 2: edXML ids, statuses handed over to the document system
	{SQL: migration3}, // 3: recipients' signatures over their statuses
}

// migration3 keeps a recipient's signature over its status
// (container.SignStatus), as the hub passed it on, and what the agent
// found when it checked it (” valid, else the problems).
const migration3 = `
ALTER TABLE statuses ADD COLUMN signature BLOB;
ALTER TABLE statuses ADD COLUMN signature_problems TEXT NOT NULL DEFAULT '';
`

// migration2 keeps each document's edXML DocumentId (documents spooled
// before it have none: they are found by their edx id only) and what the
// document system did with each status.
const migration2 = `
ALTER TABLE documents ADD COLUMN edxml_id TEXT NOT NULL DEFAULT '';
CREATE INDEX documents_edxml ON documents(edxml_id) WHERE edxml_id != '';
ALTER TABLE statuses ADD COLUMN handed_over_at INTEGER;
ALTER TABLE statuses ADD COLUMN transport TEXT NOT NULL DEFAULT '';
CREATE INDEX statuses_pending ON statuses(handed_over_at, received_at);
`

// backfillEdXMLIDs gives the documents spooled before migration 2 their
// edXML DocumentId (as the outbox forms it: the metadata's edxml_id, or the
// one edXML derives), from the document.json of their container in cdir. A
// document whose container cannot be read keeps none: it is found by its
// edx id only.
func backfillEdXMLIDs(ctx context.Context, tx *sql.Tx, cdir string) error {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM documents WHERE edxml_id = ''`)
	if err != nil {
		return err
	}
	var ids []document.ID
	for rows.Next() {
		var id document.ID
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		x := edxmlIDOf(filepath.Join(cdir, string(id)+".asice"))
		if x == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE documents SET edxml_id = ? WHERE id = ?`, x, id); err != nil {
			return err
		}
	}
	return nil
}

// edxmlIDOf is the edXML DocumentId of the container at path, "" when it
// cannot be read.
func edxmlIDOf(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	e, err := container.OpenFile(data, container.DefaultLimits, container.MetadataPath)
	if err != nil {
		return ""
	}
	meta, err := e.Bytes()
	if err != nil {
		return ""
	}
	d, err := document.Parse(meta)
	if err != nil {
		return ""
	}
	if d.EdXMLID != "" {
		return d.EdXMLID
	}
	return edxml.DocumentID(d)
}

// schema is version 1.
const schema = `
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

// Open opens (or creates) the spool in dir, removes what a crash left
// half-done and returns it.
func Open(ctx context.Context, dir string, log *slog.Logger) (*Spool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "containers"), 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Migration 2 gives the documents spooled before it their edXML
	// DocumentId, read from their containers.
	ms := slices.Clone(migrations)
	ms[1].Func = func(ctx context.Context, tx *sql.Tx) error {
		return backfillEdXMLIDs(ctx, tx, filepath.Join(dir, "containers"))
	}
	db, err := sqldb.Open(ctx, filepath.Join(dir, "spool.db"), sqldb.Options{Migrations: ms})
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: dir, db: db, log: log, now: time.Now}
	if err := s.recover(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// recover sweeps temporary files and containers that have no record.
func (s *Spool) recover(ctx context.Context) error {
	cdir := filepath.Join(s.dir, "containers")
	if err := durable.Sweep(cdir); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	ents, err := os.ReadDir(cdir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".asice")
		if !ok {
			continue
		}
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM documents WHERE id = ?`, id).Scan(&n); err != nil {
			return fmt.Errorf("spool: recover: %w", err)
		}
		if n == 0 {
			s.log.Warn("spool: removing a container that was never acknowledged", "doc_id", id)
			if err := os.Remove(filepath.Join(cdir, e.Name())); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
		}
	}
	return nil
}

// Close closes the database.
func (s *Spool) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Spool) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *Spool) containerPath(id document.ID) string {
	return filepath.Join(s.dir, "containers", string(id)+".asice")
}

// Add stores a document durably in state spooled. When a document with the
// same id and the same manifest digest (same metadata and files), or with the
// same idempotency key, is already spooled, Add returns that one and false;
// the same id with other content is ErrConflict.
func (s *Spool) Add(ctx context.Context, e Entry) (*Record, bool, error) {
	if err := e.ID.Validate(); err != nil {
		return nil, false, fmt.Errorf("spool: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, err := s.existing(ctx, e); prev != nil || err != nil {
		return prev, false, err
	}
	if err := durable.WriteFile(s.containerPath(e.ID), e.Container, 0o640); err != nil {
		return nil, false, fmt.Errorf("spool: write container %s: %w", e.ID, err)
	}
	now := s.now().UTC()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, fmt.Errorf("spool: %w", err)
	}
	defer tx.Rollback()
	var idem any
	if e.IdempotencyKey != "" {
		idem = e.IdempotencyKey
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO documents (id, state, sha256, manifest_sha256, size, subject, source, idem_key, created_at, edxml_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, Spooled, e.SHA256, e.ManifestSHA256, len(e.Container), e.Subject, e.Source, idem, now.UnixNano(), e.EdXMLID); err != nil {
		return nil, false, fmt.Errorf("spool: add %s: %w", e.ID, err)
	}
	for i, u := range e.To {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO recipients (id, unit, pos) VALUES (?, ?, ?)`, e.ID, u, i); err != nil {
			return nil, false, fmt.Errorf("spool: add %s: %w", e.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, false, fmt.Errorf("spool: add %s: %w", e.ID, err)
	}
	r, err := s.Get(ctx, e.ID)
	return r, true, err
}

// existing returns the document an Add repeats, or ErrConflict.
func (s *Spool) existing(ctx context.Context, e Entry) (*Record, error) {
	if e.IdempotencyKey != "" {
		var id document.ID
		err := s.db.QueryRowContext(ctx, `SELECT id FROM documents WHERE idem_key = ?`, e.IdempotencyKey).Scan(&id)
		switch {
		case err == nil:
			return s.Get(ctx, id)
		case !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	r, err := s.Get(ctx, e.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case r.ManifestSHA256 == e.ManifestSHA256 || r.SHA256 == e.SHA256:
		return r, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrConflict, e.ID)
}

// Container returns a spooled document's container bytes.
func (s *Spool) Container(id document.ID) ([]byte, error) {
	if id.Validate() != nil {
		return nil, ErrNotFound
	}
	b, err := os.ReadFile(s.containerPath(id))
	if os.IsNotExist(err) {
		return nil, ErrNotFound
	}
	return b, err
}

const recordCols = `seq, id, state, sha256, manifest_sha256, size, subject, source, coalesce(idem_key, ''), created_at,
	submitted_at, decided_at, attempts, last_error, archive_key, receipt, receipt_problems, reasons, edxml_id`

func scanRecord(row interface{ Scan(...any) error }) (*Record, error) {
	var r Record
	var created int64
	var submitted, decided sql.NullInt64
	var rp, rs string
	if err := row.Scan(&r.Seq, &r.ID, &r.State, &r.SHA256, &r.ManifestSHA256, &r.Size, &r.Subject, &r.Source, &r.IdempotencyKey,
		&created, &submitted, &decided, &r.Attempts, &r.LastError, &r.ArchiveKey, &r.Receipt, &rp, &rs, &r.EdXMLID); err != nil {
		return nil, err
	}
	r.CreatedAt = time.Unix(0, created).UTC()
	r.SubmittedAt = optTime(submitted)
	r.DecidedAt = optTime(decided)
	if rp != "" {
		if err := json.Unmarshal([]byte(rp), &r.ReceiptProblems); err != nil {
			return nil, err
		}
	}
	if rs != "" {
		if err := json.Unmarshal([]byte(rs), &r.Reasons); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

func optTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.Unix(0, v.Int64).UTC()
	return &t
}

// Get returns a document's record with its recipients and status history.
func (s *Spool) Get(ctx context.Context, id document.ID) (*Record, error) {
	r, err := scanRecord(s.db.QueryRowContext(ctx, `SELECT `+recordCols+` FROM documents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: get %s: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT unit, delivered_at, last_status FROM recipients WHERE id = ? ORDER BY pos`, id)
	if err != nil {
		return nil, fmt.Errorf("spool: get %s: %w", id, err)
	}
	defer rows.Close()
	r.Recipients = []Delivery{}
	for rows.Next() {
		var d Delivery
		var at sql.NullInt64
		if err := rows.Scan(&d.Unit, &at, &d.LastStatus); err != nil {
			return nil, fmt.Errorf("spool: get %s: %w", id, err)
		}
		d.DeliveredAt = optTime(at)
		r.Recipients = append(r.Recipients, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("spool: get %s: %w", id, err)
	}
	rows.Close()
	if r.History, err = s.statuses(ctx, `WHERE id = ? ORDER BY time, received_at`, id); err != nil {
		return nil, fmt.Errorf("spool: get %s: %w", id, err)
	}
	return r, nil
}

const statusCols = `rowid, body, received_at, handed_over_at, transport, signature IS NOT NULL, signature_problems`

func (s *Spool) statuses(ctx context.Context, where string, args ...any) ([]Status, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+statusCols+` FROM statuses `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Status{}
	for rows.Next() {
		var st Status
		var body string
		var recv int64
		var handed sql.NullInt64
		if err := rows.Scan(&st.Seq, &body, &recv, &handed, &st.Transport, &st.Signed, &st.SignatureProblems); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(body), &st.Status); err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		st.ReceivedAt = time.Unix(0, recv).UTC()
		st.HandedOverAt = optTime(handed)
		out = append(out, st)
	}
	return out, rows.Err()
}

// FindEdXML returns the document spooled last whose edXML DocumentId is
// edxmlID, or ErrNotFound.
func (s *Spool) FindEdXML(ctx context.Context, edxmlID string) (*Record, error) {
	var id document.ID
	err := s.db.QueryRowContext(ctx, `SELECT id FROM documents WHERE edxml_id = ? AND edxml_id != '' ORDER BY seq DESC LIMIT 1`, edxmlID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: edXML DocumentId %q", ErrNotFound, edxmlID)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: find %q: %w", edxmlID, err)
	}
	return s.Get(ctx, id)
}

// Status returns one status of a document's history by its number, or
// ErrNotFound.
func (s *Spool) Status(ctx context.Context, id document.ID, seq int64) (*Status, error) {
	sts, err := s.statuses(ctx, `WHERE id = ? AND rowid = ?`, id, seq)
	if err != nil {
		return nil, fmt.Errorf("spool: status %s/%d: %w", id, seq, err)
	}
	if len(sts) == 0 {
		return nil, fmt.Errorf("%w: %s has no status %d", ErrNotFound, id, seq)
	}
	return &sts[0], nil
}

// NotHandedOver returns up to limit statuses from units other than except
// (the agent's own) that the document system has not taken yet (HandOver
// done), oldest first.
func (s *Spool) NotHandedOver(ctx context.Context, except document.UnitID, limit int) ([]Status, error) {
	sts, err := s.statuses(ctx, `WHERE handed_over_at IS NULL AND unit != ? ORDER BY received_at, rowid LIMIT ?`, except, limit)
	if err != nil {
		return nil, fmt.Errorf("spool: statuses: %w", err)
	}
	return sts, nil
}

// HandOver records the document system's last acknowledgement of a
// status: done (taken: it is not listed again), or fail or processing
// (listed again).
func (s *Spool) HandOver(ctx context.Context, id document.ID, seq int64, transport string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE statuses SET transport = ?1,
		handed_over_at = CASE WHEN ?1 = 'done' THEN coalesce(handed_over_at, ?2) ELSE NULL END WHERE id = ?3 AND rowid = ?4`,
		transport, s.now().UnixNano(), id, seq)
	if err != nil {
		return fmt.Errorf("spool: hand over %s/%d: %w", id, seq, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: %s has no status %d", ErrNotFound, id, seq)
	}
	return nil
}

// Recent returns up to limit documents, the most recently spooled first,
// with their recipients and history.
func (s *Spool) Recent(ctx context.Context, limit int) ([]*Record, error) {
	recs, err := s.list(ctx, `ORDER BY seq DESC LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	for i, r := range recs {
		if recs[i], err = s.Get(ctx, r.ID); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// Units returns the units the documents were sent to, sorted.
func (s *Spool) Units(ctx context.Context) ([]document.UnitID, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT unit FROM recipients ORDER BY unit`)
	if err != nil {
		return nil, fmt.Errorf("spool: units: %w", err)
	}
	defer rows.Close()
	var out []document.UnitID
	for rows.Next() {
		var u document.UnitID
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("spool: units: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// Pending returns up to limit documents not yet published, oldest first.
func (s *Spool) Pending(ctx context.Context, limit int) ([]*Record, error) {
	return s.list(ctx, `WHERE state = 'spooled' ORDER BY seq LIMIT ?`, limit)
}

// Unanswered returns documents published before cutoff whose notice never
// came, oldest first: candidates to publish again.
func (s *Spool) Unanswered(ctx context.Context, cutoff time.Time, limit int) ([]*Record, error) {
	return s.list(ctx, `WHERE state = 'submitted' AND submitted_at < ? ORDER BY seq LIMIT ?`, cutoff.UnixNano(), limit)
}

func (s *Spool) list(ctx context.Context, where string, args ...any) ([]*Record, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+recordCols+` FROM documents `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("spool: list: %w", err)
	}
	defer rows.Close()
	var out []*Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("spool: list: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Depth counts the documents that are not final (spooled or submitted).
func (s *Spool) Depth(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM documents WHERE state IN ('spooled', 'submitted')`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("spool: depth: %w", err)
	}
	return n, nil
}

// Attempt records a failed attempt to publish.
func (s *Spool) Attempt(ctx context.Context, id document.ID, cause error) error {
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	_, err := s.db.ExecContext(ctx, `UPDATE documents SET attempts = attempts + 1, last_error = ? WHERE id = ?`, msg, id)
	if err != nil {
		return fmt.Errorf("spool: attempt %s: %w", id, err)
	}
	return nil
}

// MarkSubmitted records that the stream acknowledged the document. It does
// nothing to a final document.
func (s *Spool) MarkSubmitted(ctx context.Context, id document.ID) error {
	_, err := s.db.ExecContext(ctx, `UPDATE documents SET state = 'submitted', submitted_at = ?, attempts = attempts + 1, last_error = ''
		WHERE id = ? AND state IN ('spooled', 'submitted')`, s.now().UnixNano(), id)
	if err != nil {
		return fmt.Errorf("spool: submitted %s: %w", id, err)
	}
	return nil
}

// Acceptance is what the hub's accepted notice says.
type Acceptance struct {
	At              time.Time
	ArchiveKey      string
	Receipt         []byte
	ReceiptProblems reason.List // what the agent found wrong with the receipt, if anything
}

// Accept moves a document to accepted. It reports whether the state changed:
// a final document stays as it is.
func (s *Spool) Accept(ctx context.Context, id document.ID, a Acceptance) (bool, error) {
	var rp string
	if len(a.ReceiptProblems) > 0 {
		b, _ := json.Marshal(a.ReceiptProblems)
		rp = string(b)
	}
	return s.decide(ctx, id, `UPDATE documents SET state = 'accepted', decided_at = ?, archive_key = ?, receipt = ?, receipt_problems = ?, last_error = ''
		WHERE id = ? AND state IN ('spooled', 'submitted')`, a.At.UnixNano(), a.ArchiveKey, a.Receipt, rp, id)
}

// Reject moves a document to rejected with the hub's reasons. It reports
// whether the state changed.
func (s *Spool) Reject(ctx context.Context, id document.ID, at time.Time, rs reason.List) (bool, error) {
	b, _ := json.Marshal(rs)
	return s.decide(ctx, id, `UPDATE documents SET state = 'rejected', decided_at = ?, reasons = ?, last_error = ''
		WHERE id = ? AND state IN ('spooled', 'submitted')`, at.UnixNano(), string(b), id)
}

func (s *Spool) decide(ctx context.Context, id document.ID, q string, args ...any) (bool, error) {
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("spool: %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	if n == 0 {
		if _, err := s.Get(ctx, id); err != nil {
			return false, err
		}
	}
	return n > 0, nil
}

// AddStatus records a recipient's status from a notice. A status already
// recorded is ignored (it reports false); 01 marks the recipient delivered.
// 13, the sender's own code (the hub may tell the sender of the take-back
// it recorded), is kept in the history without making its unit a
// recipient.
func (s *Spool) AddStatus(ctx context.Context, st document.Status) (bool, error) {
	return s.AddSignedStatus(ctx, st, nil, "")
}

// StatusSignature returns the signature over a status of a document's
// history, by its number: ErrNotFound when there is no such status or it
// is unsigned.
func (s *Spool) StatusSignature(ctx context.Context, id document.ID, seq int64) ([]byte, error) {
	var sig []byte
	err := s.db.QueryRowContext(ctx, `SELECT signature FROM statuses WHERE id = ? AND rowid = ?`, id, seq).Scan(&sig)
	if errors.Is(err, sql.ErrNoRows) || err == nil && sig == nil {
		return nil, fmt.Errorf("%w: %s has no signed status %d", ErrNotFound, id, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: status signature: %w", err)
	}
	return sig, nil
}

// AddSignedStatus is AddStatus for a status with its unit's signature
// (nil: unsigned) and the problems the agent found with it ("": none).
func (s *Spool) AddSignedStatus(ctx context.Context, st document.Status, sig []byte, problems string) (bool, error) {
	body, err := json.Marshal(st)
	if err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM documents WHERE id = ?`, st.DocumentID).Scan(&n); err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	if n == 0 {
		return false, fmt.Errorf("%w: %s", ErrNotFound, st.DocumentID)
	}
	if len(sig) == 0 {
		sig, problems = nil, ""
	}
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO statuses (id, unit, code, time, body, received_at, signature, signature_problems)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		st.DocumentID, st.Unit, st.Code, st.Time.UnixNano(), string(body), s.now().UnixNano(), sig, problems)
	if err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return false, nil
	}
	if st.Code == document.StatusCancelled {
		return true, tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO recipients (id, unit, pos) VALUES (?, ?, 1000000)`, st.DocumentID, st.Unit); err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	if st.Code == document.StatusDelivered {
		if _, err := tx.ExecContext(ctx, `UPDATE recipients SET delivered_at = coalesce(delivered_at, ?) WHERE id = ? AND unit = ?`,
			st.Time.UnixNano(), st.DocumentID, st.Unit); err != nil {
			return false, fmt.Errorf("spool: status: %w", err)
		}
	}
	// The last status is the latest by the recipient's own clock.
	if _, err := tx.ExecContext(ctx, `UPDATE recipients SET last_status = (
			SELECT code FROM statuses WHERE id = ?1 AND unit = ?2 ORDER BY time DESC, received_at DESC LIMIT 1)
		WHERE id = ?1 AND unit = ?2`, st.DocumentID, st.Unit); err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("spool: status: %w", err)
	}
	return true, nil
}
