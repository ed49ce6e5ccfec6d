package index

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order, each in its own transaction; the number
// applied is the schema version. Never edit a released migration: append.
var migrations = []string{
	// 1: the initial schema.
	`
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
`,
	// 2 (search, issue #13): the searchable text of every document, by
	// seq, for the relevance order (rank.go), which reads it for up to
	// MaxRanked documents a query: from the table that is a page read per
	// document, out of tens of gigabytes at national scale (the rows hold
	// document.json); this index is a tenth of that and stays in memory.
	// Idempotent, so that it may be renumbered when migrations from other
	// work are merged before it.
	`
CREATE INDEX IF NOT EXISTS documents_rank ON documents(seq, subject, number, notation, signer_name, from_name, files);
`,
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
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("to version %d: %w", i+1, err)
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
