// Package inbox keeps the documents the agent received, verified, for the
// document system, and the statuses the unit reports on them.
//
// Each document is a folder <dir>/<id>/ written atomically (temporary
// folder, fsync, rename, fsync):
//
//	<id>/document.json     the metadata, exactly as signed
//	<id>/files/<name>      the payload files
//	<id>/container.asice   the signed container, byte for byte
//	<id>/receipt.p7s       the hub's signed receipt
//	<id>/document.edxml    the document as an edXML packet (Config.EdXML)
//
// A SQLite database beside it (not inside the folder the document system
// reads) holds the seen-set: a document id is stored once and handed to the
// document system once, even when the hub delivers it again, and even after
// the document system removed its folder. Each document gets a sequence
// number that only grows, the cursor of List. The database also holds the
// statuses the unit reports, until they are sent; the statuses a sender
// reports on a document it sent the unit (13, taking it back); each
// document's edXML DocumentId; and what the document system did with each
// document and sender's status (HandOver), for a document system that takes
// them one by one and acknowledges them (the axis protocol).
//
// Deliveries that fail verification never reach the folder: Quarantine
// keeps them apart with their reasons, and Refuse queues the unit's refusal
// (status 02) so that the hub and the sender learn of it. So do deliveries
// the folder can never hold (Put returns an *UnwritableError): file names
// that are not portable (reserved on Windows, trailing dots or spaces,
// characters some file systems refuse, a file that is also a folder, names
// equal but for case) or that this system refuses. Any other failure to
// write (a full disk, a folder unavailable) is worth retrying.
package inbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
)

// Names inside a document's folder.
const (
	MetadataFile  = "document.json"
	FilesDir      = "files"
	ContainerFile = "container.asice"
	ReceiptFile   = "receipt.p7s"
	PacketFile    = "document.edxml"
)

// Errors.
var (
	ErrNotFound = errors.New("inbox: no such document")
	ErrGone     = errors.New("inbox: the document's folder was removed")
)

// Config says where the inbox lives.
type Config struct {
	Dir        string // the documents' folders, read by the document system
	DB         string // the database file
	Quarantine string // deliveries that failed verification
	// EdXML writes each document's edXML packet (PacketFile) into its
	// folder too, for a document system that reads edXML.
	EdXML bool
}

// File describes a payload file.
type File struct {
	Name      string `json:"name"`
	MediaType string `json:"media_type"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
}

// Item is a received document.
type Item struct {
	Cursor     int64           `json:"cursor"`
	ID         document.ID     `json:"id"`
	From       document.UnitID `json:"from"`
	Subject    string          `json:"subject"`
	ReceivedAt time.Time       `json:"received_at"`
	AcceptedAt time.Time       `json:"accepted_at"` // by the hub, from the receipt
	ArchiveKey string          `json:"archive_key"`
	SHA256     string          `json:"container_sha256"`
	Size       int64           `json:"size"`
	Files      []File          `json:"files"`
	Document   json.RawMessage `json:"document"`
	Statuses   []*Status       `json:"statuses,omitempty"`
	// EdXMLID is the document's edXML DocumentId (its edxml_id, or as
	// edXML forms it from its sender, date, number and notation).
	EdXMLID string `json:"edxml_id,omitempty"`
	// SenderStatuses are what the sender reported on the document (13: it
	// takes the document back).
	SenderStatuses []*SenderStatus `json:"sender_statuses,omitempty"`
	// HandedOverAt is when the document system acknowledged taking the
	// document (HandOver done); Transport its last acknowledgement.
	HandedOverAt *time.Time        `json:"handed_over_at,omitempty"`
	Transport    string            `json:"transport,omitempty"`
	Meta         document.Document `json:"-"`
}

// Received is a delivery that passed verification.
type Received struct {
	Container *container.Container
	SHA256    string
	Receipt   []byte             // DER CMS
	Body      *container.Receipt // the receipt's verified content
}

// StatusState is where an outgoing status is.
type StatusState string

const (
	StatusPending  StatusState = "pending"  // recorded, not yet published
	StatusSent     StatusState = "sent"     // published; the stream acknowledged it
	StatusRejected StatusState = "rejected" // the hub refused it
)

// Status is a status the unit reports on a received document.
type Status struct {
	Seq int64 `json:"-"`
	document.Status
	State      StatusState `json:"state"`
	OutOfOrder bool        `json:"out_of_order,omitempty"`
	Reasons    reason.List `json:"reasons,omitempty"`
	// ContainerSHA256 is the digest of the container the status is about
	// (for a document taken back, the sent one's: the agent fills it in).
	ContainerSHA256 string `json:"container_sha256,omitempty"`
	// Signed: the unit's signature over the status and the container
	// (container.SignStatus) is made; Signature holds it.
	Signed    bool   `json:"signed"`
	Signature []byte `json:"-"`
}

// Store is the inbox.
type Store struct {
	cfg Config
	db  *sql.DB
	log *slog.Logger
	now func() time.Time
	mu  sync.Mutex // serializes Put
}

// migrations are the inbox database's schema versions (sqldb): never edit
// one, append. An inbox from before versioning holds version 1 and is
// adopted.
var migrations = []sqldb.Migration{
	{SQL: schema}, // 1
	{SQL: migration2, Func: backfillEdXMLIDs}, // 2: edXML ids, hand-over, senders' statuses
	{SQL: migration3},                         // 3: statuses signed by the unit
}

// migration3 keeps, with each status the unit reports, the digest of the
// container it is about and the unit's signature over both (made once,
// before the status is first sent, and sent again as it is).
const migration3 = `
ALTER TABLE statuses ADD COLUMN container_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE statuses ADD COLUMN signature BLOB;
`

// migration2 keeps each document's edXML DocumentId, the document system's
// acknowledgements, and the statuses senders report on their documents.
const migration2 = `
ALTER TABLE documents ADD COLUMN edxml_id TEXT NOT NULL DEFAULT '';
ALTER TABLE documents ADD COLUMN handed_over_at INTEGER;
ALTER TABLE documents ADD COLUMN transport TEXT NOT NULL DEFAULT '';
CREATE INDEX documents_edxml ON documents(edxml_id) WHERE edxml_id != '';
CREATE INDEX documents_pending ON documents(handed_over_at, seq);
CREATE TABLE sender_statuses (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	id             TEXT NOT NULL,
	unit           TEXT NOT NULL,
	code           TEXT NOT NULL,
	time           INTEGER NOT NULL,
	body           TEXT NOT NULL,
	received_at    INTEGER NOT NULL,
	handed_over_at INTEGER,
	transport      TEXT NOT NULL DEFAULT '',
	UNIQUE (id, unit, code, time)
);
CREATE INDEX sender_statuses_pending ON sender_statuses(handed_over_at, seq);
`

// backfillEdXMLIDs gives the documents received before migration 2 their
// edXML DocumentId, from their metadata.
func backfillEdXMLIDs(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT seq, meta FROM documents`)
	if err != nil {
		return err
	}
	type upd struct {
		seq int64
		id  string
	}
	var us []upd
	for rows.Next() {
		var u upd
		var meta string
		if err := rows.Scan(&u.seq, &meta); err != nil {
			rows.Close()
			return err
		}
		if d, err := document.Parse([]byte(meta)); err == nil {
			u.id = EdXMLID(d)
		}
		us = append(us, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, u := range us {
		if _, err := tx.ExecContext(ctx, `UPDATE documents SET edxml_id = ? WHERE seq = ?`, u.id, u.seq); err != nil {
			return err
		}
	}
	return nil
}

// schema is version 1.
const schema = `
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

// Open opens (or creates) the inbox and sweeps what a crash left half-written.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" || cfg.DB == "" || cfg.Quarantine == "" {
		return nil, errors.New("inbox: dir, db and quarantine are required")
	}
	for _, p := range []*string{&cfg.Dir, &cfg.DB, &cfg.Quarantine} {
		a, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("inbox: %w", err)
		}
		*p = a
	}
	for _, d := range []string{cfg.Dir, filepath.Dir(cfg.DB), cfg.Quarantine} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("inbox: %w", err)
		}
	}
	for _, d := range []string{cfg.Dir, cfg.Quarantine} {
		if err := durable.Sweep(d); err != nil {
			return nil, fmt.Errorf("inbox: %w", err)
		}
	}
	db, err := sqldb.Open(ctx, cfg.DB, sqldb.Options{Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("inbox: %w", err)
	}
	return &Store{cfg: cfg, db: db, log: log, now: time.Now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Dir is the folder of a document.
func (s *Store) Dir(id document.ID) string { return filepath.Join(s.cfg.Dir, string(id)) }

// Put stores a verified delivery, once: it reports false, with the item
// stored earlier, for an id seen before. A new document also gets its status
// 01 (delivered) queued, from unit, in the same transaction.
func (s *Store) Put(ctx context.Context, unit document.UnitID, r Received) (*Item, bool, error) {
	c := r.Container
	id := c.Meta.ID
	if err := id.Validate(); err != nil {
		return nil, false, fmt.Errorf("inbox: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, err := s.Get(ctx, id); err == nil {
		return it, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	var files []File
	for _, e := range c.Files() {
		name := strings.TrimPrefix(e.Name, container.FilesDir)
		files = append(files, File{Name: name, MediaType: e.MediaType, Size: e.Size, SHA256: hex.EncodeToString(e.SHA256[:])})
	}
	var names []string
	for _, e := range c.Files() {
		names = append(names, strings.TrimPrefix(e.Name, container.FilesDir))
	}
	if rs := CheckNames(names); len(rs) > 0 {
		return nil, false, &UnwritableError{ID: id, Reasons: rs}
	}
	if err := s.writeFolder(r); err != nil {
		var ue *UnwritableError
		if errors.As(err, &ue) {
			return nil, false, ue
		}
		return nil, false, fmt.Errorf("inbox: write %s: %w", id, err)
	}
	now := s.now().UTC()
	fb, _ := json.Marshal(files)
	st := document.Status{DocumentID: id, Unit: unit, Time: now, Code: document.StatusDelivered}
	sb, _ := json.Marshal(st)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, fmt.Errorf("inbox: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO documents (id, sender, subject, received_at, accepted_at, archive_key, sha256, size, files, meta, edxml_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, c.Meta.From, c.Meta.Subject, now.UnixNano(), r.Body.AcceptedAt.UnixNano(),
		r.Body.ArchiveKey, r.SHA256, len(c.Raw), string(fb), string(c.MetaRaw), EdXMLID(c.Meta)); err != nil {
		return nil, false, fmt.Errorf("inbox: put %s: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO statuses (id, code, time, body, state, container_sha256) VALUES (?, ?, ?, ?, ?, ?)`,
		id, st.Code, st.Time.UnixNano(), string(sb), StatusPending, r.SHA256); err != nil {
		return nil, false, fmt.Errorf("inbox: put %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, false, fmt.Errorf("inbox: put %s: %w", id, err)
	}
	it, err := s.Get(ctx, id)
	return it, true, err
}

// writeFolder writes the document's folder, unless a crash after an earlier
// rename left the same container there already.
func (s *Store) writeFolder(r Received) error {
	c := r.Container
	target := s.Dir(c.Meta.ID)
	if b, err := os.ReadFile(filepath.Join(target, ContainerFile)); err == nil {
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) == r.SHA256 {
			return nil
		}
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	} else if _, err := os.Lstat(target); err == nil {
		if err := os.RemoveAll(target); err != nil {
			return err
		}
	}
	f, err := durable.NewFolder(target, 0o750)
	if err != nil {
		return err
	}
	write := func(rel string, data []byte) error { return f.Write(rel, data, 0o640) }
	err = write(MetadataFile, c.MetaRaw)
	for _, e := range c.Files() {
		if err == nil {
			// Inflated again in a stream, bounded by the size verified.
			name := strings.TrimPrefix(e.Name, container.FilesDir)
			if err = writeEntry(f, FilesDir+"/"+name, e); err != nil && unwritableName(err) {
				err = &UnwritableError{ID: c.Meta.ID, Reasons: reason.List{{Code: reason.ContainerBadPath,
					Message: fmt.Sprintf("files/%s: this system refuses the name: %v", name, err)}}}
			}
		}
	}
	if err == nil {
		err = write(ContainerFile, c.Raw)
	}
	if err == nil {
		err = write(ReceiptFile, r.Receipt)
	}
	if err == nil && s.cfg.EdXML {
		err = s.writePacket(f, r)
	}
	if err == nil {
		err = f.Commit()
	}
	if err != nil {
		f.Abort()
	}
	return err
}

func writeEntry(f *durable.Folder, rel string, e *container.Entry) error {
	rc, err := e.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return f.WriteFrom(rel, rc, 0o640)
}

const itemCols = `seq, id, sender, subject, received_at, accepted_at, archive_key, sha256, size, files, meta, edxml_id, handed_over_at, transport`

func scanItem(row interface{ Scan(...any) error }) (*Item, error) {
	var it Item
	var recv, acc int64
	var files, meta string
	var handed sql.NullInt64
	if err := row.Scan(&it.Cursor, &it.ID, &it.From, &it.Subject, &recv, &acc, &it.ArchiveKey, &it.SHA256, &it.Size, &files, &meta,
		&it.EdXMLID, &handed, &it.Transport); err != nil {
		return nil, err
	}
	it.ReceivedAt, it.AcceptedAt = time.Unix(0, recv).UTC(), time.Unix(0, acc).UTC()
	if handed.Valid {
		t := time.Unix(0, handed.Int64).UTC()
		it.HandedOverAt = &t
	}
	if err := json.Unmarshal([]byte(files), &it.Files); err != nil {
		return nil, err
	}
	if it.Files == nil {
		it.Files = []File{}
	}
	it.Document = json.RawMessage(meta)
	if d, err := document.Parse([]byte(meta)); err == nil {
		it.Meta = *d
	}
	return &it, nil
}

// Get returns a received document with its statuses.
func (s *Store) Get(ctx context.Context, id document.ID) (*Item, error) {
	it, err := scanItem(s.db.QueryRowContext(ctx, `SELECT `+itemCols+` FROM documents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("inbox: get %s: %w", id, err)
	}
	if it.Statuses, err = s.statuses(ctx, `WHERE id = ? ORDER BY seq`, id); err != nil {
		return nil, err
	}
	if it.SenderStatuses, err = s.senderStatuses(ctx, `WHERE id = ? ORDER BY seq`, id); err != nil {
		return nil, err
	}
	return it, nil
}

// MaxList bounds one page of List.
const MaxList = 1000

// List returns up to limit documents received after cursor since, oldest
// first. The next page starts after the last item's Cursor.
func (s *Store) List(ctx context.Context, since int64, limit int) ([]*Item, error) {
	if limit <= 0 || limit > MaxList {
		limit = MaxList
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+itemCols+` FROM documents WHERE seq > ? ORDER BY seq LIMIT ?`, since, limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: list: %w", err)
	}
	defer rows.Close()
	out := []*Item{}
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("inbox: list: %w", err)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// Count returns how many documents the inbox has received.
func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM documents`).Scan(&n); err != nil {
		return 0, fmt.Errorf("inbox: count: %w", err)
	}
	return n, nil
}

// FilePath returns the path of a payload file of a received document.
func (s *Store) FilePath(ctx context.Context, id document.ID, name string) (string, File, error) {
	it, err := s.Get(ctx, id)
	if err != nil {
		return "", File{}, err
	}
	for _, f := range it.Files {
		if f.Name == name {
			p := filepath.Join(s.Dir(id), FilesDir, filepath.FromSlash(name))
			if _, err := os.Stat(p); err != nil {
				return "", f, fmt.Errorf("%w: %s", ErrGone, id)
			}
			return p, f, nil
		}
	}
	return "", File{}, fmt.Errorf("%w: %s has no file %q", ErrNotFound, id, name)
}

// ContainerPath returns the path of a received document's container.
func (s *Store) ContainerPath(ctx context.Context, id document.ID) (string, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return "", err
	}
	p := filepath.Join(s.Dir(id), ContainerFile)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s", ErrGone, id)
	}
	return p, nil
}

// Refuse queues the unit's refusal (status 02, with the reasons as its
// description) of a delivery it could not take: one that failed
// verification or that the folder can never hold; sha256 is the digest of
// what it received. A document is refused once: it reports false when a
// refusal was queued before, or when the document is in the inbox already
// (a later copy that fails changes nothing about the one received).
func (s *Store) Refuse(ctx context.Context, unit document.UnitID, id document.ID, sha256 string, rs reason.List) (bool, error) {
	if err := id.Validate(); err != nil {
		return false, fmt.Errorf("inbox: refuse: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM documents WHERE id = ?1) + (SELECT count(*) FROM statuses WHERE id = ?1 AND code = ?2)`,
		id, document.StatusRefused).Scan(&n); err != nil {
		return false, fmt.Errorf("inbox: refuse %s: %w", id, err)
	}
	if n > 0 {
		return false, nil
	}
	st := document.Status{DocumentID: id, Unit: unit, Time: s.now().UTC(), Code: document.StatusRefused,
		Description: refusal(rs)}
	body, _ := json.Marshal(st)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO statuses (id, code, time, body, state, container_sha256) VALUES (?, ?, ?, ?, ?, ?)`,
		id, st.Code, st.Time.UnixNano(), string(body), StatusPending, sha256); err != nil {
		return false, fmt.Errorf("inbox: refuse %s: %w", id, err)
	}
	return true, nil
}

// refusal is the description of a refusal: the reasons, within the 4000
// bytes a status description may hold.
func refusal(rs reason.List) string {
	d := "refused on receipt by the recipient's agent: " + rs.Error()
	if len(d) <= maxDescription {
		return d
	}
	d = d[:maxDescription-len("…")]
	for !utf8.ValidString(d) {
		d = d[:len(d)-1]
	}
	return d + "…"
}

const maxDescription = 4000

// Quarantine keeps a delivery that failed verification, with its reasons,
// apart from the inbox, and returns its folder. The same delivery
// quarantined twice is kept once.
func (s *Store) Quarantine(id document.ID, raw, receipt []byte, rs reason.List) (string, error) {
	sum := sha256.Sum256(raw)
	name := "unknown"
	if id.Validate() == nil {
		name = string(id)
	}
	target := filepath.Join(s.cfg.Quarantine, name+"-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Lstat(target); err == nil {
		return target, nil
	}
	f, err := durable.NewFolder(target, 0o750)
	if err != nil {
		return "", fmt.Errorf("inbox: quarantine: %w", err)
	}
	body, _ := json.MarshalIndent(struct {
		DocumentID document.ID `json:"document_id,omitempty"`
		SHA256     string      `json:"container_sha256"`
		At         time.Time   `json:"quarantined_at"`
		Reasons    reason.List `json:"reasons"`
	}{id, hex.EncodeToString(sum[:]), s.now().UTC(), rs}, "", "  ")
	err = f.Write("reasons.json", body, 0o640)
	if err == nil && len(raw) > 0 {
		err = f.Write(ContainerFile, raw, 0o640)
	}
	if err == nil && len(receipt) > 0 {
		err = f.Write(ReceiptFile, receipt, 0o640)
	}
	if err == nil {
		err = f.Commit()
	}
	if err != nil {
		f.Abort()
		return "", fmt.Errorf("inbox: quarantine: %w", err)
	}
	return target, nil
}

// ReportCodes are the codes a document system may report on a received
// document: 01 is the agent's own, 13 is the sender's.
var ReportCodes = []document.StatusCode{
	document.StatusRefused, document.StatusAccepted, document.StatusAssigned, document.StatusInProgress,
	document.StatusFinished, document.StatusChangeAccept, document.StatusChangeRefused,
}

// AddStatus queues a status on a received document. Problems with the
// status come back as document.Problems; a status out of the edXML order is
// queued and flagged (the hub records it and flags it too).
func (s *Store) AddStatus(ctx context.Context, st document.Status) (*Status, error) {
	var p document.Problems
	if err := st.Code.Validate(); err != nil {
		p.Add("code", err.Error())
	} else {
		ok := false
		for _, c := range ReportCodes {
			ok = ok || c == st.Code
		}
		switch {
		case st.Code == document.StatusDelivered:
			p.Add("code", "01 (delivered) is reported by the agent itself when the document arrives")
		case !ok:
			p.Add("code", fmt.Sprintf("%s is the sender's code, not a recipient's", st.Code))
		}
	}
	if err := st.Validate(); err != nil {
		var ps document.Problems
		if errors.As(err, &ps) {
			for _, q := range ps {
				if q.Field != "code" {
					p = append(p, q)
				}
			}
		}
	}
	if len(p) > 0 {
		return nil, p
	}
	it, err := s.Get(ctx, st.DocumentID)
	if err != nil {
		return nil, err
	}
	prev, err := s.lastProgress(ctx, st.DocumentID)
	if err != nil {
		return nil, err
	}
	out := !document.InOrder(prev, st.Code)
	body, _ := json.Marshal(st)
	res, err := s.db.ExecContext(ctx, `INSERT INTO statuses (id, code, time, body, state, out_of_order, container_sha256) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		st.DocumentID, st.Code, st.Time.UnixNano(), string(body), StatusPending, out, it.SHA256)
	if err != nil {
		return nil, fmt.Errorf("inbox: status %s: %w", st.DocumentID, err)
	}
	seq, _ := res.LastInsertId()
	return &Status{Seq: seq, Status: st, State: StatusPending, OutOfOrder: out, ContainerSHA256: it.SHA256}, nil
}

// lastProgress is the last progress code reported on a document (not
// counting 13, 15, 16 or refused reports).
func (s *Store) lastProgress(ctx context.Context, id document.ID) (document.StatusCode, error) {
	var c document.StatusCode
	err := s.db.QueryRowContext(ctx, `SELECT code FROM statuses WHERE id = ? AND state != 'rejected' AND code NOT IN ('13', '15', '16')
		ORDER BY seq DESC LIMIT 1`, id).Scan(&c)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inbox: status %s: %w", id, err)
	}
	return c, nil
}

func (s *Store) statuses(ctx context.Context, where string, args ...any) ([]*Status, error) {
	// A status queued before statuses were signed takes its document's
	// digest (the documents table's, for a document received).
	rows, err := s.db.QueryContext(ctx, `SELECT seq, body, state, out_of_order, reasons,
		CASE WHEN container_sha256 != '' THEN container_sha256 ELSE coalesce((SELECT sha256 FROM documents d WHERE d.id = statuses.id), '') END,
		signature FROM statuses `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("inbox: statuses: %w", err)
	}
	defer rows.Close()
	out := []*Status{}
	for rows.Next() {
		var st Status
		var body, rs string
		if err := rows.Scan(&st.Seq, &body, &st.State, &st.OutOfOrder, &rs, &st.ContainerSHA256, &st.Signature); err != nil {
			return nil, fmt.Errorf("inbox: statuses: %w", err)
		}
		st.Signed = len(st.Signature) > 0
		if err := json.Unmarshal([]byte(body), &st.Status); err != nil {
			return nil, fmt.Errorf("inbox: statuses: %w", err)
		}
		if rs != "" {
			json.Unmarshal([]byte(rs), &st.Reasons)
		}
		out = append(out, &st)
	}
	return out, rows.Err()
}

// PendingStatuses returns up to limit statuses not yet sent, oldest first.
func (s *Store) PendingStatuses(ctx context.Context, limit int) ([]*Status, error) {
	return s.statuses(ctx, `WHERE state = 'pending' ORDER BY seq LIMIT ?`, limit)
}

// PendingCount counts the statuses not yet sent.
func (s *Store) PendingCount(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM statuses WHERE state = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("inbox: statuses: %w", err)
	}
	return n, nil
}

// SetStatusSignature keeps the unit's signature over a queued status and
// the container digest it names, unless it has one already; it returns
// the one kept, which is sent every time the status is.
func (s *Store) SetStatusSignature(ctx context.Context, seq int64, containerSHA256 string, sig []byte) ([]byte, error) {
	if _, err := s.db.ExecContext(ctx, `UPDATE statuses SET signature = ?, container_sha256 = ? WHERE seq = ? AND signature IS NULL`,
		sig, containerSHA256, seq); err != nil {
		return nil, fmt.Errorf("inbox: status signature: %w", err)
	}
	var kept []byte
	if err := s.db.QueryRowContext(ctx, `SELECT signature FROM statuses WHERE seq = ?`, seq).Scan(&kept); err != nil {
		return nil, fmt.Errorf("inbox: status signature: %w", err)
	}
	return kept, nil
}

// MarkStatusSent records that a status was published.
func (s *Store) MarkStatusSent(ctx context.Context, seq int64) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE statuses SET state = 'sent' WHERE seq = ? AND state = 'pending'`, seq); err != nil {
		return fmt.Errorf("inbox: status sent: %w", err)
	}
	return nil
}

// RejectStatus records the hub's refusal of a status the unit sent.
func (s *Store) RejectStatus(ctx context.Context, st document.Status, rs reason.List) error {
	b, _ := json.Marshal(rs)
	_, err := s.db.ExecContext(ctx, `UPDATE statuses SET state = 'rejected', reasons = ? WHERE id = ? AND code = ? AND time = ?`,
		string(b), st.DocumentID, st.Code, st.Time.UnixNano())
	if err != nil {
		return fmt.Errorf("inbox: status rejected: %w", err)
	}
	return nil
}
