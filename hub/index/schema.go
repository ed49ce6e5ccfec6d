package index

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migration is one step of the schema: its SQL, then fill, if set, in the
// same transaction.
type migration struct {
	sql  string
	fill func(ctx context.Context, ix *Index, tx *sql.Tx) error
}

// migrations are applied in order, each in its own transaction; the number
// applied is the schema version. Never edit a released migration: append.
var migrations = []migration{
	// 1: the initial schema.
	{sql: `
-- documents.seq is the row's key everywhere inside the index and the rowid of
-- the FTS table: accepted_at (µs) * 1000 + a tie-break, so rowid order is
-- acceptance order and a date range on accepted_at is a rowid range FTS5 can
-- seek to. The document id is the key outside.
CREATE TABLE documents (
	seq               INTEGER PRIMARY KEY,
	id                TEXT NOT NULL UNIQUE,
	edxml_id          TEXT NOT NULL,
	business_type     INTEGER NOT NULL,
	from_unit         TEXT NOT NULL,
	from_name         TEXT NOT NULL,
	type              TEXT NOT NULL,
	type_name         TEXT NOT NULL,
	number            TEXT NOT NULL,
	notation          TEXT NOT NULL,
	subject           TEXT NOT NULL,
	promulgated_at    TEXT NOT NULL, -- YYYY-MM-DD
	promulgated_place TEXT NOT NULL,
	due_date          TEXT NOT NULL, -- YYYY-MM-DD or ''
	urgency           INTEGER NOT NULL,
	in_reply_to       TEXT NOT NULL,
	signer_name       TEXT NOT NULL,
	signer_position   TEXT NOT NULL,
	signer_competence TEXT NOT NULL,
	cert_subject_cn   TEXT NOT NULL,
	cert_serial       TEXT NOT NULL,
	cert_unit         TEXT NOT NULL,
	signed_at         INTEGER,       -- signing-time attribute, µs
	container_sha256  TEXT NOT NULL,
	size              INTEGER NOT NULL,
	archive_key       TEXT NOT NULL,
	receipt_key       TEXT NOT NULL,
	accepted_at       INTEGER NOT NULL, -- hub time, µs
	files             TEXT NOT NULL,    -- JSON [{name, media_type, size, sha256}]
	codes             TEXT NOT NULL DEFAULT '', -- the recipients' latest status codes, as tagged in search
	meta              BLOB NOT NULL     -- document.json as archived
);
CREATE INDEX documents_from ON documents(from_unit);
CREATE INDEX documents_accepted ON documents(accepted_at); -- counts over a date range alone
CREATE INDEX documents_promulgated ON documents(promulgated_at);
-- seq → promulgated_at without reading the (large) rows, to sort search hits
-- by promulgation date.
CREATE INDEX documents_seq_promulgated ON documents(seq, promulgated_at);
CREATE INDEX documents_in_reply_to ON documents(in_reply_to) WHERE in_reply_to <> '';

-- One row per recipient of a document. last_code is the status with the
-- latest time; done is set once a final code (02, 06, 13) is recorded;
-- due_date is copied from the document for the overdue index.
CREATE TABLE recipients (
	doc          INTEGER NOT NULL,
	unit         TEXT NOT NULL,
	state        TEXT NOT NULL,  -- routed | delivered
	routed_at    INTEGER NOT NULL,
	delivered_at INTEGER,
	due_date     TEXT NOT NULL,
	last_code    TEXT NOT NULL,
	last_at      INTEGER,
	done         INTEGER NOT NULL,
	PRIMARY KEY (doc, unit)
) WITHOUT ROWID;
CREATE INDEX recipients_unit ON recipients(unit, done, due_date);
CREATE INDEX recipients_routed ON recipients(unit) WHERE state = 'routed';

-- Status history: one row per (document, unit, code, time); a replay of the
-- same status is a no-op.
CREATE TABLE statuses (
	doc         INTEGER NOT NULL,
	unit        TEXT NOT NULL,
	code        TEXT NOT NULL,
	at          INTEGER NOT NULL,
	description TEXT NOT NULL,
	officer     TEXT,            -- JSON or NULL
	flagged     INTEGER NOT NULL, -- out of order per document.InOrder
	received_at INTEGER NOT NULL, -- hub time
	PRIMARY KEY (doc, unit, code, at)
) WITHOUT ROWID;

CREATE TABLE rejected (
	ref         TEXT PRIMARY KEY,
	sender      TEXT NOT NULL,
	at          INTEGER NOT NULL,
	reasons     TEXT NOT NULL, -- JSON reason.List
	archive_key TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX rejected_sender ON rejected(sender, at);
CREATE INDEX rejected_at ON rejected(at);

CREATE TABLE units (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	cert_serial TEXT NOT NULL,
	disabled    INTEGER NOT NULL
) WITHOUT ROWID;

-- Folded text (see Fold) and filter tags, keyed by documents.seq. Contentless
-- with contentless_delete: the folded text is not stored twice, and rows can
-- still be replaced by rowid. detail=full (positions) because bm25 on a
-- contentless table gets no term instances from detail=column.
CREATE VIRTUAL TABLE search USING fts5(
	subject, number, notation, signer, from_name, files, tags,
	content = '', contentless_delete = 1,
	tokenize = 'unicode61 remove_diacritics 0 tokenchars ''_''' -- text is folded already; '_' starts tags
);
-- The vocabulary of the text columns (not tags), to turn a query's prefix
-- into the few terms it stands for: FTS5 answers "dat"* by merging the whole
-- doclists of every matching term before it can intersect anything, while
-- ("dat" OR "datt") lets it seek. Terms are never removed; a stale one
-- expands to nothing.
CREATE TABLE terms (term TEXT PRIMARY KEY) WITHOUT ROWID;

-- Relevance: subject first; tags never count.
INSERT INTO search(search, rank) VALUES('rank', 'bm25(10.0, 4.0, 4.0, 2.0, 1.0, 1.0, 0.0)');
`},
	// 2: a unit's certificate (chain) and end of validity, the public keys
	// of its NATS users in force (revoked when replaced) and their expiry.
	{sql: `
ALTER TABLE units ADD COLUMN cert_not_after INTEGER NOT NULL DEFAULT 0; -- µs, 0 unknown
ALTER TABLE units ADD COLUMN cert_pem TEXT NOT NULL DEFAULT '';
ALTER TABLE units ADD COLUMN nats_users TEXT NOT NULL DEFAULT '[]'; -- JSON array of user public keys
ALTER TABLE units ADD COLUMN creds_expire_at INTEGER NOT NULL DEFAULT 0; -- µs, 0 none or unknown
`},
	// 3: where the index stands in the stream of decision events (see
	// EventsState): one row, absent until the hub first follows the stream.
	{sql: `
CREATE TABLE events_state (
	one      INTEGER PRIMARY KEY CHECK (one = 1),
	consumer TEXT NOT NULL,    -- the hub's durable consumer of the events stream
	seq      INTEGER NOT NULL, -- every event up to this stream sequence is applied
	complete INTEGER NOT NULL  -- 0 while the index is rebuilt from the archive
) WITHOUT ROWID;
`},
	// 4: the SHA-256 of the reporting unit's signature over a status
	// (archived beside it), '' for an unsigned status.
	{sql: `
ALTER TABLE statuses ADD COLUMN signature_sha256 TEXT NOT NULL DEFAULT '';
`},
	// 5 (issue #13, search at 10,000,000 documents): the search table
	// rebuilt from the documents and recipients tables, so that FTS5 walks
	// newest first forward and does less per document (see fillSearch):
	//  - its rowid is ftsKey(seq), seq negated;
	//  - detail=none: no positions or columns, a third smaller and faster
	//    to walk; the signer's words become tags, and relevance (rank.go)
	//    reads the text from search_text instead of FTS5's bm25(), which
	//    scored every match;
	//  - search_text: the folded text of every document, a few hundred
	//    bytes, for relevance (the documents rows hold document.json: a
	//    page read per candidate);
	//  - accepted_days: documents per day, for the scan window (MaxScanned).
	{sql: `
DROP TABLE search;
CREATE VIRTUAL TABLE search USING fts5(
	text, tags,
	content = '', contentless_delete = 1, detail = none,
	tokenize = 'unicode61 remove_diacritics 0 tokenchars ''_''' -- text is folded already; '_' starts tags
);
-- The text FTS5 indexes (ftsRow.text): each text column's tokens, folded,
-- joined by ' ', the columns (subject, number, notation, signer, sender
-- name, file names) joined by a line break.
CREATE TABLE search_text (
	seq  INTEGER PRIMARY KEY, -- documents.seq
	text TEXT NOT NULL
);
-- Documents accepted per UTC day (accepted_at / 86400000000), so that a
-- search knows where the newest MaxScanned documents of its date range
-- begin (see scanFrom) without counting them.
CREATE TABLE accepted_days (
	day  INTEGER PRIMARY KEY,
	docs INTEGER NOT NULL
);
INSERT INTO accepted_days(day, docs) SELECT accepted_at / 86400000000, count(*) FROM documents GROUP BY 1;
`, fill: func(ctx context.Context, ix *Index, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM documents").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		ix.log.Info("index: rebuilding the search table (a few minutes per million documents; 10,000,000 took 79 minutes on a busy 2-core machine)", "documents", n)
		start := time.Now()
		for _, q := range []string{
			// Larger segments while filling, merged into one at the end.
			"INSERT INTO search(search, rank) VALUES('hashsize', 67108864)",
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		last := start
		if _, err := fillSearch(ctx, tx, func(done int) {
			if time.Since(last) > time.Minute {
				last = time.Now()
				ix.log.Info("index: rebuilding the search table", "done", done, "documents", n)
			}
		}); err != nil {
			return err
		}
		for _, q := range []string{
			"INSERT INTO search(search) VALUES('optimize')",
			"INSERT INTO search(search, rank) VALUES('hashsize', 1048576)", // FTS5's default
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		ix.log.Info("index: search table rebuilt", "documents", n, "took", time.Since(start).Round(time.Second))
		return nil
	}},
}

func (ix *Index) migrate(ctx context.Context) error {
	if _, err := ix.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("index: migrate: %w", err)
	}
	var v int
	if err := ix.w.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v); err != nil {
		return fmt.Errorf("index: migrate: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("index: schema version %d is newer than this program's %d", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		err := ix.write(ctx, "migrate", func(tx *sql.Tx) error {
			m := migrations[i]
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("to version %d: %w", i+1, err)
			}
			if m.fill != nil {
				if err := m.fill(ctx, ix, tx); err != nil {
					return fmt.Errorf("to version %d: %w", i+1, err)
				}
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_version(version, applied_at) VALUES(?, ?)", i+1, us(ix.now()))
			return err
		})
		if err != nil {
			return err
		}
		ix.log.Info("index schema migrated", "version", i+1)
	}
	return nil
}
