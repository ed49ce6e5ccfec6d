// Package index is the hub's searchable index of the archive: document
// metadata, recipients and their delivery state, status history, rejected
// submissions and registered units, in SQLite (modernc.org/sqlite, pure Go)
// with an FTS5 table over folded Vietnamese text.
//
// The index is a projection: everything in it except the unit register can be
// rebuilt from the archive alone, so every write is an idempotent upsert and
// Reset empties it for a reindex.
//
// One connection writes (WAL mode, BEGIN IMMEDIATE); a pool of query-only
// connections reads, so searches never wait for writes.
//
// # Search
//
// Every filter of a Query except the date range becomes part of one FTS5
// expression, so that FTS5 alone intersects the doclists and SQLite never
// has to choose which side drives:
//
//   - text terms, folded (see Fold), each a prefix expanded through the
//     terms table into the few vocabulary terms it stands for, since FTS5
//     answers a prefix query by merging every matching doclist whole before
//     it can skip anything;
//   - sender, recipient, either, type, number, the recipients' latest
//     status codes and the signer's words as tag tokens starting with '_',
//     which no text can produce (see tagFrom);
//   - the acceptance date range as a rowid range: a document's rowid is its
//     seq (acceptance time in microseconds times 1000) negated, so FTS5
//     seeks to the range and streams hits newest first walking forward, and
//     a page stops after Limit+1 hits.
//
// The table keeps neither positions nor columns (detail=none): relevance
// ranks the newest matches itself from search_text (see rank.go). Total
// counts the hits of the same expression, up to MaxTotal. At 10,000,000
// documents (bench_test.go, README) the cost of a search is FTS5 walking
// the doclists of its terms within the date range.
//
// Times are stored as Unix microseconds and come back in UTC, truncated to
// the microsecond.
package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/edxhub/edx/pkg/document"
)

var (
	// ErrNotFound: no such document or unit.
	ErrNotFound = errors.New("index: not found")
	// ErrNotRecipient: a status from a unit that is not a recipient of the
	// document. The hub rejects such statuses.
	ErrNotRecipient = errors.New("index: unit is not a recipient of the document")
	// ErrInvalid: an argument the index cannot store or a malformed cursor.
	ErrInvalid = errors.New("index: invalid")
)

// Config configures the index.
type Config struct {
	// Path of the database file, e.g. DATA/index.db. Its directory is created
	// if missing.
	Path string `yaml:"path"`
	// Readers is the size of the read connection pool; 0 means
	// max(4, 2*GOMAXPROCS).
	Readers int `yaml:"readers"`
}

// Validate reports whether c can be opened.
func (c Config) Validate() error {
	if c.Path == "" {
		return fmt.Errorf("index: path is required")
	}
	if c.Readers < 0 {
		return fmt.Errorf("index: readers must not be negative")
	}
	return nil
}

// Index is the open index. Its methods are safe for concurrent use.
type Index struct {
	dir string // the database's directory
	log *slog.Logger
	w   *sql.DB // one connection: every write goes through it
	r   *sql.DB // query-only pool for searches, the database mapped in memory
	// g is the query-only pool for reading one document (Get): without
	// the memory map, which a reader unmaps and maps again at every
	// transaction that begins after a write (SQLite does so whenever the
	// WAL changed), as on a busy hub nearly every one does. For a
	// document read while documents are stored (the pipeline reads one
	// for each status) that cost a third of the read: BenchmarkGetWhileWriting
	// 157-176 us mapped, 100-117 us not. Searches, which read many pages,
	// keep the map.
	g   *sql.DB
	now func() time.Time
	// wstmts and rstmts: the busiest statements, prepared once on each
	// connection of w and g (stmtCache).
	wstmts, rstmts *stmtCache

	putUnitMu sync.Mutex
	unitsMu   sync.RWMutex
	units     map[document.UnitID]bool // registered units → disabled

	termsMu  sync.Mutex
	known    map[string]struct{} // terms committed to the terms table
	termsGen int                 // bumped by Reset, which empties the table

	idfs                            idfCache // see rank.go
	maxTotal, maxRanked, maxScanned int      // MaxTotal, MaxRanked and MaxScanned, but in tests
}

// Open opens (creating if needed) and migrates the index at cfg.Path.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Index, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	common := []string{
		"busy_timeout(10000)",
		"synchronous(NORMAL)",
		"temp_store(MEMORY)",
		"cache_size(-65536)", // 64 MiB per connection
	}
	const mapped = "mmap_size(1073741824)"
	w, err := openDB(path, "immediate", append(common, mapped, "journal_mode(WAL)", "foreign_keys(OFF)"))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	ix := &Index{dir: filepath.Dir(path), log: log, w: w, now: time.Now, known: make(map[string]struct{}),
		maxTotal: MaxTotal, maxRanked: MaxRanked, maxScanned: MaxScanned}
	if err := ix.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	n := cfg.Readers
	if n == 0 {
		n = max(4, 2*runtime.GOMAXPROCS(0))
	}
	// readers opens a query-only pool of n connections, mapping the
	// database or not (mmap).
	readers := func(mmap string) (*sql.DB, error) {
		db, err := openDB(path, "deferred", append(common, mmap, "query_only(1)"))
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
		db.SetConnMaxLifetime(0)
		return db, nil
	}
	if ix.r, err = readers(mapped); err != nil {
		ix.Close()
		return nil, err
	}
	if ix.g, err = readers("mmap_size(0)"); err != nil {
		ix.Close()
		return nil, err
	}
	if ix.wstmts, err = prepareCache(ctx, w, (&putStmts{}).specs(), (&statusStmts{}).specs(), (&codeStmts{}).specs()); err != nil {
		ix.Close()
		return nil, fmt.Errorf("index: prepare: %w", err)
	}
	if ix.rstmts, err = prepareCache(ctx, ix.g, (&detailStmts{}).specs()); err != nil {
		ix.Close()
		return nil, fmt.Errorf("index: prepare: %w", err)
	}
	if err := ix.loadUnits(ctx); err != nil {
		ix.Close()
		return nil, err
	}
	log.Info("index open", "path", path, "schema", len(migrations), "readers", n)
	return ix, nil
}

func openDB(path, txlock string, pragmas []string) (*sql.DB, error) {
	q := url.Values{}
	q.Set("_txlock", txlock)
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	u := url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("index: open %s: %w", path, err)
	}
	return db, nil
}

// Close closes the index. It runs PRAGMA optimize first, as SQLite advises
// for long-lived connections.
func (ix *Index) Close() error {
	errs := []error{ix.wstmts.close(), ix.rstmts.close()}
	for _, db := range []*sql.DB{ix.g, ix.r} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if _, err := ix.w.Exec("PRAGMA optimize"); err != nil {
		ix.log.Warn("index optimize on close", "err", err)
	}
	errs = append(errs, ix.w.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("index: close: %w", err)
	}
	return nil
}

// Ping checks that both the writer and a reader answer.
func (ix *Index) Ping(ctx context.Context) error {
	var n int
	if err := ix.r.QueryRowContext(ctx, "SELECT count(*) FROM schema_version").Scan(&n); err != nil {
		return fmt.Errorf("index: ping: %w", err)
	}
	if err := ix.w.PingContext(ctx); err != nil {
		return fmt.Errorf("index: ping: %w", err)
	}
	return nil
}

// CheckWrite checks that the index can write now: that its disk has room
// (1 MiB written beside the database, synced and removed: SQLite fails
// every write on a full disk, while a small transaction may still fit in
// its log) and that a write transaction commits (one row of the schema
// version table rewritten, unchanged).
func (ix *Index) CheckWrite(ctx context.Context) error {
	f, err := os.CreateTemp(ix.dir, ".edx-space-check-")
	if err != nil {
		return fmt.Errorf("index: check write: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 1<<20))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("index: check write: %w", err)
	}
	return ix.write(ctx, "check write", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE schema_version SET applied_at = applied_at WHERE version = (SELECT max(version) FROM schema_version)")
		return err
	})
}

// Optimize merges the full-text index into one segment and refreshes the
// planner's statistics. Run it after a bulk load or a reindex; it takes a
// while on a large index and blocks other writes meanwhile.
func (ix *Index) Optimize(ctx context.Context) error {
	for _, q := range []string{
		"INSERT INTO search(search) VALUES('optimize')",
		// Statistics from a sample of each index: a full ANALYZE reads
		// the whole file, most of an hour at 10,000,000 documents on a
		// disk that reads 13 MB/s at random.
		"PRAGMA analysis_limit=1000",
		"PRAGMA optimize=0x10002",
		"PRAGMA wal_checkpoint(TRUNCATE)",
	} {
		if _, err := ix.w.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("index: optimize: %w", err)
		}
	}
	return nil
}

// Reset deletes every row derived from the archive (documents, recipients,
// statuses, rejected submissions), for a reindex. The unit register is kept:
// it is not in the archive.
func (ix *Index) Reset(ctx context.Context) error {
	return ix.write(ctx, "reset", func(tx *sql.Tx) error {
		for _, q := range []string{
			"INSERT INTO search(search) VALUES('delete-all')",
			"DELETE FROM search_text",
			"DELETE FROM accepted_days",
			"DELETE FROM terms",
			"DELETE FROM statuses",
			"DELETE FROM recipients",
			"DELETE FROM documents",
			"DELETE FROM rejected",
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		// Forget the vocabulary now, while this transaction holds the only
		// writer connection, so that no put can trust a term being deleted.
		ix.termsMu.Lock()
		clear(ix.known)
		ix.termsGen++
		ix.termsMu.Unlock()
		return nil
	})
}

// write runs fn in a write transaction and wraps its error as "index: op: ...".
func (ix *Index) write(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := ix.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("index: %s: %w", op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		if isKind(err) {
			return err
		}
		return fmt.Errorf("index: %s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("index: %s: %w", op, err)
	}
	return nil
}

// isKind reports whether err already carries one of the package's kinds and
// its own "index: " prefix.
func isKind(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotRecipient) || errors.Is(err, ErrInvalid)
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
}

// Time helpers: the index keeps Unix microseconds.

func us(t time.Time) int64 { return t.UnixMicro() }

func usOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullUS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromUS(v.Int64)
}
