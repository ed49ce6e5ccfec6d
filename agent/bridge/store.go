package bridge

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
)

// store is the bridge's durable state (DATA/state/bridge.db): what it
// carries up and where each is, what it took from the upstream (by the
// upstream's ids), and the statuses it relays each way.
type store struct {
	db  *sql.DB
	now func() time.Time
}

// migrations are the schema versions (pkg/sqldb): never edit one, append.
var migrations = []sqldb.Migration{{SQL: schema}}

const schema = `
CREATE TABLE carried (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT NOT NULL UNIQUE,
	sender      TEXT NOT NULL,
	recipients  TEXT NOT NULL,
	edxml_id    TEXT NOT NULL,
	about       TEXT NOT NULL,
	notation    TEXT NOT NULL,
	subject     TEXT NOT NULL,
	state       TEXT NOT NULL,
	uncertain   INTEGER NOT NULL DEFAULT 0,
	upstream_id TEXT NOT NULL DEFAULT '',
	attempts    INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT NOT NULL DEFAULT '',
	tried_at    INTEGER,
	created_at  INTEGER NOT NULL,
	sent_at     INTEGER
);
CREATE INDEX carried_state ON carried(state, seq);
CREATE INDEX carried_edxml ON carried(edxml_id);
CREATE TABLE fetched (
	kind        TEXT NOT NULL,
	upstream_id TEXT NOT NULL,
	state       TEXT NOT NULL,
	doc_id      TEXT NOT NULL DEFAULT '',
	edxml_id    TEXT NOT NULL DEFAULT '',
	sender      TEXT NOT NULL DEFAULT '',
	about       TEXT NOT NULL DEFAULT '',
	error       TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	acked_at    INTEGER,
	PRIMARY KEY (kind, upstream_id)
);
CREATE INDEX fetched_edxml ON fetched(edxml_id) WHERE edxml_id != '';
CREATE INDEX fetched_doc ON fetched(doc_id) WHERE doc_id != '';
CREATE TABLE up_statuses (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	key         TEXT NOT NULL UNIQUE,
	doc_id      TEXT NOT NULL,
	status      TEXT NOT NULL,
	about       TEXT NOT NULL,
	recipients  TEXT NOT NULL,
	state       TEXT NOT NULL,
	uncertain   INTEGER NOT NULL DEFAULT 0,
	upstream_id TEXT NOT NULL DEFAULT '',
	attempts    INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	sent_at     INTEGER
);
CREATE INDEX up_statuses_state ON up_statuses(state, seq);
CREATE TABLE down_statuses (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	key         TEXT NOT NULL UNIQUE,
	doc_id      TEXT NOT NULL,
	unit        TEXT NOT NULL,
	code        TEXT NOT NULL,
	time        INTEGER NOT NULL,
	status      TEXT NOT NULL,
	state       TEXT NOT NULL,
	reasons     TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	sent_at     INTEGER
);
CREATE INDEX down_statuses_state ON down_statuses(state, seq);
CREATE INDEX down_statuses_status ON down_statuses(doc_id, unit, code, time);
`

// States.
const (
	stateQueued   = "queued"   // waiting to be sent
	stateSent     = "sent"     // the upstream took it (carried, up_statuses) or the hub's stream did (down_statuses)
	stateRefused  = "refused"  // the upstream refused it, or it could not be taken
	stateRejected = "rejected" // the hub refused a status relayed into the city
	stateTaken    = "taken"    // fetched and brought into the city, not yet acknowledged upstream
	stateAcked    = "acked"    // acknowledged upstream (updateStatus)
)

func openStore(ctx context.Context, path string) (*store, error) {
	db, err := sqldb.Open(ctx, path, sqldb.Options{Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	return &store{db: db, now: time.Now}, nil
}

func (s *store) close() error { return s.db.Close() }

func ns(t time.Time) int64 { return t.UnixNano() }

func optTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.Unix(0, v.Int64).UTC()
	return &t
}

// Carried is a document of the city the gateway carries up.
type Carried struct {
	ID         document.ID       `json:"id"`
	Sender     document.UnitID   `json:"sender"`
	Recipients []document.UnitID `json:"recipients"` // outside the city
	EdXMLID    string            `json:"edxml_id"`
	About      edxml.ResponseFor `json:"-"` // the document as the upstream knows it
	Notation   string            `json:"notation"`
	Subject    string            `json:"subject"`
	State      string            `json:"state"`
	// Uncertain: an attempt may have reached the upstream; the upstream's
	// list of what was sent is read before sending again.
	Uncertain  bool       `json:"uncertain,omitempty"`
	UpstreamID string     `json:"upstream_id,omitempty"`
	Attempts   int        `json:"attempts"`
	LastError  string     `json:"last_error,omitempty"`
	TriedAt    *time.Time `json:"tried_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	SentAt     *time.Time `json:"sent_at,omitempty"`
}

const carriedCols = `id, sender, recipients, edxml_id, about, notation, subject, state, uncertain, upstream_id, attempts, last_error, tried_at, created_at, sent_at`

func scanCarried(row interface{ Scan(...any) error }) (*Carried, error) {
	var c Carried
	var rcp, about string
	var tried, sent sql.NullInt64
	var created int64
	if err := row.Scan(&c.ID, &c.Sender, &rcp, &c.EdXMLID, &about, &c.Notation, &c.Subject, &c.State, &c.Uncertain,
		&c.UpstreamID, &c.Attempts, &c.LastError, &tried, &created, &sent); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(rcp), &c.Recipients); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(about), &c.About); err != nil {
		return nil, err
	}
	c.TriedAt, c.SentAt, c.CreatedAt = optTime(tried), optTime(sent), time.Unix(0, created).UTC()
	return &c, nil
}

// ErrNotFound: nothing of that id.
var ErrNotFound = errors.New("bridge: not found")

// addCarried records a document to carry up, once: false when it was there.
func (s *store) addCarried(ctx context.Context, c *Carried) (bool, error) {
	rcp, _ := json.Marshal(c.Recipients)
	about, _ := json.Marshal(c.About)
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO carried (id, sender, recipients, edxml_id, about, notation, subject, state, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.ID, c.Sender, string(rcp), c.EdXMLID, string(about), c.Notation, c.Subject, stateQueued, ns(s.now()))
	if err != nil {
		return false, fmt.Errorf("bridge: carry %s: %w", c.ID, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (s *store) carried(ctx context.Context, id document.ID) (*Carried, error) {
	c, err := scanCarried(s.db.QueryRowContext(ctx, `SELECT `+carriedCols+` FROM carried WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: carried document %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: carried %s: %w", id, err)
	}
	return c, nil
}

// carriedByEdXML is the document carried last under an edXML DocumentId.
func (s *store) carriedByEdXML(ctx context.Context, edxmlID string) (*Carried, error) {
	c, err := scanCarried(s.db.QueryRowContext(ctx, `SELECT `+carriedCols+` FROM carried WHERE edxml_id = ? ORDER BY seq DESC LIMIT 1`, edxmlID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: carried document %q", ErrNotFound, edxmlID)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: carried %q: %w", edxmlID, err)
	}
	return c, nil
}

// nextCarried is the first document waiting to be sent up.
func (s *store) nextCarried(ctx context.Context) (*Carried, error) {
	c, err := scanCarried(s.db.QueryRowContext(ctx, `SELECT `+carriedCols+` FROM carried WHERE state = ? ORDER BY seq LIMIT 1`, stateQueued))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: carried: %w", err)
	}
	return c, nil
}

// trying records, before a document is sent, that the attempt may reach
// the upstream.
func (s *store) trying(ctx context.Context, id document.ID) error {
	_, err := s.db.ExecContext(ctx, `UPDATE carried SET uncertain = 1, attempts = attempts + 1, tried_at = ? WHERE id = ?`, ns(s.now()), id)
	return wrap("trying", err)
}

func (s *store) carriedFailed(ctx context.Context, id document.ID, cause error) error {
	_, err := s.db.ExecContext(ctx, `UPDATE carried SET last_error = ? WHERE id = ?`, clip(cause.Error()), id)
	return wrap("carried failed", err)
}

func (s *store) carriedSent(ctx context.Context, id document.ID, upstreamID string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE carried SET state = ?, upstream_id = ?, uncertain = 0, last_error = '', sent_at = ? WHERE id = ? AND state = ?`,
		stateSent, upstreamID, ns(s.now()), id, stateQueued)
	return wrap("carried sent", err)
}

func (s *store) carriedRefused(ctx context.Context, id document.ID, why string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE carried SET state = ?, uncertain = 0, last_error = ? WHERE id = ? AND state = ?`, stateRefused, clip(why), id, stateQueued)
	return wrap("carried refused", err)
}

// claimed are the upstream ids the bridge knows as its own sent documents.
func (s *store) claimed(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT upstream_id FROM carried WHERE upstream_id != ''`)
	if err != nil {
		return nil, wrap("claimed", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("claimed", err)
		}
		out[id] = true
	}
	return out, wrap("claimed", rows.Err())
}

// Fetched is an item taken from the upstream's lists.
type Fetched struct {
	Kind       string          `json:"kind"` // axis.MessageEdoc or axis.MessageStatus
	UpstreamID string          `json:"upstream_id"`
	State      string          `json:"state"` // taken, acked, refused
	DocID      document.ID     `json:"doc_id,omitempty"`
	EdXMLID    string          `json:"edxml_id,omitempty"`
	Sender     document.UnitID `json:"sender,omitempty"` // of a document: its sender outside the city
	About      *edxml.ResponseFor
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	AckedAt    *time.Time `json:"acked_at,omitempty"`
}

const fetchedCols = `kind, upstream_id, state, doc_id, edxml_id, sender, about, error, created_at, acked_at`

func scanFetched(row interface{ Scan(...any) error }) (*Fetched, error) {
	var f Fetched
	var about string
	var created int64
	var acked sql.NullInt64
	if err := row.Scan(&f.Kind, &f.UpstreamID, &f.State, &f.DocID, &f.EdXMLID, &f.Sender, &about, &f.Error, &created, &acked); err != nil {
		return nil, err
	}
	if about != "" {
		f.About = &edxml.ResponseFor{}
		if err := json.Unmarshal([]byte(about), f.About); err != nil {
			return nil, err
		}
	}
	f.CreatedAt, f.AckedAt = time.Unix(0, created).UTC(), optTime(acked)
	return &f, nil
}

func (s *store) fetched(ctx context.Context, kind, upstreamID string) (*Fetched, error) {
	f, err := scanFetched(s.db.QueryRowContext(ctx, `SELECT `+fetchedCols+` FROM fetched WHERE kind = ? AND upstream_id = ?`, kind, upstreamID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, kind, upstreamID)
	}
	if err != nil {
		return nil, wrap("fetched", err)
	}
	return f, nil
}

// injected is the document brought in last under an edXML DocumentId, or
// of an edx id.
func (s *store) injected(ctx context.Context, edxmlID string, id document.ID) (*Fetched, error) {
	q, arg := `edxml_id = ?`, any(edxmlID)
	if id != "" {
		q, arg = `doc_id = ?`, any(id)
	}
	f, err := scanFetched(s.db.QueryRowContext(ctx, `SELECT `+fetchedCols+` FROM fetched WHERE kind = 'edoc' AND state != ? AND `+q+`
		ORDER BY created_at DESC LIMIT 1`, stateRefused, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: document brought in %s%s", ErrNotFound, edxmlID, id)
	}
	if err != nil {
		return nil, wrap("injected", err)
	}
	return f, nil
}

// putFetched records an item taken (state taken) or refused, once; for a
// status, the status it became is queued for the city in the same
// transaction.
func (s *store) putFetched(ctx context.Context, f *Fetched, down *document.Status) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return wrap("fetched", err)
	}
	defer tx.Rollback()
	about := ""
	if f.About != nil {
		b, _ := json.Marshal(f.About)
		about = string(b)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO fetched (kind, upstream_id, state, doc_id, edxml_id, sender, about, error, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, f.Kind, f.UpstreamID, f.State, f.DocID, f.EdXMLID, f.Sender, about, clip(f.Error), ns(s.now())); err != nil {
		return wrap("fetched", err)
	}
	if down != nil {
		if err := addDown(ctx, tx, "upstream:"+f.Kind+":"+f.UpstreamID, down, s.now()); err != nil {
			return err
		}
	}
	return wrap("fetched", tx.Commit())
}

func (s *store) acked(ctx context.Context, kind, upstreamID string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE fetched SET state = CASE state WHEN ? THEN ? ELSE state END, acked_at = ? WHERE kind = ? AND upstream_id = ?`,
		stateTaken, stateAcked, ns(s.now()), kind, upstreamID)
	return wrap("acked", err)
}

// ackedUnlisted marks acknowledged the items of a kind taken and not
// acknowledged that the upstream no longer lists.
func (s *store) ackedUnlisted(ctx context.Context, kind string, listed []string) error {
	rows, err := s.db.QueryContext(ctx, `SELECT upstream_id FROM fetched WHERE kind = ? AND state = ?`, kind, stateTaken)
	if err != nil {
		return wrap("acked", err)
	}
	var gone []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return wrap("acked", err)
		}
		if !slices.Contains(listed, id) {
			gone = append(gone, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return wrap("acked", err)
	}
	for _, id := range gone {
		if err := s.acked(ctx, kind, id); err != nil {
			return err
		}
	}
	return nil
}

// UpStatus is a status of the city relayed up.
type UpStatus struct {
	Seq        int64
	Status     document.Status
	About      edxml.ResponseFor
	Recipients []document.UnitID
	State      string
	Uncertain  bool
	UpstreamID string
	Attempts   int
	LastError  string
}

func upKey(st *document.Status) string {
	return fmt.Sprintf("%s.%s.%s.%d", st.DocumentID, st.Unit, st.Code, st.Time.UnixNano())
}

// addUp queues a status to relay up, once.
func (s *store) addUp(ctx context.Context, u *UpStatus) (bool, error) {
	st, _ := json.Marshal(u.Status)
	about, _ := json.Marshal(u.About)
	rcp, _ := json.Marshal(u.Recipients)
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO up_statuses (key, doc_id, status, about, recipients, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		upKey(&u.Status), u.Status.DocumentID, string(st), string(about), string(rcp), stateQueued, ns(s.now()))
	if err != nil {
		return false, wrap("status up", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func (s *store) nextUp(ctx context.Context) (*UpStatus, error) {
	var u UpStatus
	var st, about, rcp string
	err := s.db.QueryRowContext(ctx, `SELECT seq, status, about, recipients, state, uncertain, upstream_id, attempts, last_error
		FROM up_statuses WHERE state = ? ORDER BY seq LIMIT 1`, stateQueued).Scan(&u.Seq, &st, &about, &rcp, &u.State, &u.Uncertain, &u.UpstreamID, &u.Attempts, &u.LastError)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("status up", err)
	}
	if err := errors.Join(json.Unmarshal([]byte(st), &u.Status), json.Unmarshal([]byte(about), &u.About), json.Unmarshal([]byte(rcp), &u.Recipients)); err != nil {
		return nil, wrap("status up", err)
	}
	return &u, nil
}

func (s *store) upTrying(ctx context.Context, seq int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE up_statuses SET uncertain = 1, attempts = attempts + 1 WHERE seq = ?`, seq)
	return wrap("status up", err)
}

func (s *store) upFailed(ctx context.Context, seq int64, cause error) error {
	_, err := s.db.ExecContext(ctx, `UPDATE up_statuses SET last_error = ? WHERE seq = ?`, clip(cause.Error()), seq)
	return wrap("status up", err)
}

func (s *store) upDone(ctx context.Context, seq int64, state, upstreamID, why string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE up_statuses SET state = ?, upstream_id = ?, last_error = ?, uncertain = 0, sent_at = ? WHERE seq = ?`,
		state, upstreamID, clip(why), ns(s.now()), seq)
	return wrap("status up", err)
}

// DownStatus is a status relayed into the city.
type DownStatus struct {
	Seq     int64
	Status  document.Status
	State   string
	Reasons reason.List
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func addDown(ctx context.Context, db execer, key string, st *document.Status, now time.Time) error {
	b, _ := json.Marshal(st)
	_, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO down_statuses (key, doc_id, unit, code, time, status, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		key, st.DocumentID, st.Unit, st.Code, st.Time.UnixNano(), string(b), stateQueued, ns(now))
	return wrap("status down", err)
}

// addDown queues a status for the city, once per key.
func (s *store) addDown(ctx context.Context, key string, st *document.Status) error {
	return addDown(ctx, s.db, key, st, s.now())
}

func (s *store) nextDown(ctx context.Context, limit int) ([]*DownStatus, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, status, state FROM down_statuses WHERE state = ? ORDER BY seq LIMIT ?`, stateQueued, limit)
	if err != nil {
		return nil, wrap("status down", err)
	}
	defer rows.Close()
	var out []*DownStatus
	for rows.Next() {
		var d DownStatus
		var st string
		if err := rows.Scan(&d.Seq, &st, &d.State); err != nil {
			return nil, wrap("status down", err)
		}
		if err := json.Unmarshal([]byte(st), &d.Status); err != nil {
			return nil, wrap("status down", err)
		}
		out = append(out, &d)
	}
	return out, wrap("status down", rows.Err())
}

func (s *store) downSent(ctx context.Context, seq int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE down_statuses SET state = ?, sent_at = ? WHERE seq = ? AND state = ?`, stateSent, ns(s.now()), seq, stateQueued)
	return wrap("status down", err)
}

// downRejected records the hub's refusal of a status relayed into the
// city; false when the bridge did not relay it.
func (s *store) downRejected(ctx context.Context, st *document.Status, rs reason.List) (bool, error) {
	b, _ := json.Marshal(rs)
	res, err := s.db.ExecContext(ctx, `UPDATE down_statuses SET state = ?, reasons = ? WHERE doc_id = ? AND unit = ? AND code = ? AND time = ?`,
		stateRejected, string(b), st.DocumentID, st.Unit, st.Code, st.Time.UnixNano())
	if err != nil {
		return false, wrap("status down", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// counts are how many items are in each state, for /readyz and metrics.
func (s *store) counts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for _, q := range []struct{ name, sql string }{
		{"carried_queued", `SELECT count(*) FROM carried WHERE state = 'queued'`},
		{"carried_refused", `SELECT count(*) FROM carried WHERE state = 'refused'`},
		{"statuses_up_queued", `SELECT count(*) FROM up_statuses WHERE state = 'queued'`},
		{"statuses_down_queued", `SELECT count(*) FROM down_statuses WHERE state = 'queued'`},
		{"fetched_unacked", `SELECT count(*) FROM fetched WHERE state = 'taken'`},
	} {
		var n int
		if err := s.db.QueryRowContext(ctx, q.sql).Scan(&n); err != nil {
			return nil, wrap("counts", err)
		}
		out[q.name] = n
	}
	return out, nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("bridge: %s: %w", what, err)
}
