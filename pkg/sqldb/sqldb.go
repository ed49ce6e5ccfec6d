// Package sqldb opens the SQLite databases that hold what cannot be rebuilt
// (the agent's spool and inbox, the hub's accounts) and keeps their schema
// versioned: one Open for every such store, with the pragmas they share and
// numbered migrations.
//
// The schema version is SQLite's user_version (PRAGMA user_version): the
// number of migrations applied. Open applies the missing ones in order, each
// in one transaction together with the new version number, so a failing
// migration leaves the database as it was. A database whose version is
// higher than the program knows is refused (ErrTooNew): an older program
// must not write a newer schema.
//
// A database from before versioning (user_version 0 with tables in it) is
// adopted: when it holds every table, column and index that migration 1
// creates, it is marked as version 1 without running migration 1 again;
// otherwise Open refuses it rather than guess.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// Migration is one step of a schema: Migrations[i] takes a database from
// version i to version i+1. Never edit a released migration: append one.
type Migration struct {
	// SQL is run first; it may hold several statements.
	SQL string
	// Func, when set, runs after SQL in the same transaction (to move
	// data). Migration 1 must be SQL only: it is what an unversioned
	// database is compared with.
	Func func(ctx context.Context, tx *sql.Tx) error
}

// Options are a store's migrations and connection settings. The zero value
// of each setting is the default every store uses.
type Options struct {
	Migrations []Migration
	// ForeignKeys turns on foreign key enforcement (off by default, as in
	// SQLite).
	ForeignKeys bool
	// Synchronous is "FULL" (the default: a commit is on disk when it
	// returns, in WAL mode) or "NORMAL".
	Synchronous string
	// BusyTimeout is how long a writer waits for another (default 10s).
	BusyTimeout time.Duration
	// MaxOpenConns bounds the pool (default 1: one writer, no lock
	// contention inside the process).
	MaxOpenConns int
}

// ErrTooNew is returned (wrapped) by Open for a database whose schema
// version is higher than the migrations it was given.
var ErrTooNew = errors.New("the database was written by a newer version of this program")

// Open opens (creating if needed) the SQLite database at path in WAL mode,
// with immediate transactions (BEGIN IMMEDIATE: a writer takes the lock
// before it reads, so two writers never deadlock), and brings its schema to
// len(o.Migrations).
func Open(ctx context.Context, path string, o Options) (*sql.DB, error) {
	if len(o.Migrations) == 0 {
		return nil, errors.New("sqldb: no migrations")
	}
	if o.Migrations[0].Func != nil {
		return nil, errors.New("sqldb: migration 1 must be SQL only")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqldb: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(abs, o))
	if err != nil {
		return nil, fmt.Errorf("sqldb: open %s: %w", abs, err)
	}
	n := o.MaxOpenConns
	if n <= 0 {
		n = 1
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	if err := walMode(ctx, db, busyTimeout(o)); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqldb: %s: %w", abs, err)
	}
	if err := migrate(ctx, db, o.Migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqldb: %s: %w", abs, err)
	}
	return db, nil
}

func dsn(path string, o Options) string {
	sync := o.Synchronous
	if sync == "" {
		sync = "FULL"
	}
	busy := busyTimeout(o)
	fk := "OFF"
	if o.ForeignKeys {
		fk = "ON"
	}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	for _, p := range []string{
		fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()),
		"synchronous(" + sync + ")",
		"foreign_keys(" + fk + ")",
	} {
		q.Add("_pragma", p)
	}
	u := url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: q.Encode()}
	return u.String()
}

func busyTimeout(o Options) time.Duration {
	if o.BusyTimeout <= 0 {
		return 10 * time.Second
	}
	return o.BusyTimeout
}

// walMode puts the database in WAL mode, which the file remembers. SQLite
// answers SQLITE_BUSY at once, without waiting, when another connection
// holds a lock during the switch (two processes creating the same file):
// retry for as long as a writer would wait.
func walMode(ctx context.Context, db *sql.DB, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("journal mode %s, want wal", mode)
			}
			return nil
		}
		if !busy(err) || time.Now().After(deadline) {
			return fmt.Errorf("journal mode: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// busy reports whether err is SQLITE_BUSY or SQLITE_LOCKED.
func busy(err error) bool {
	var ce interface{ Code() int }
	if !errors.As(err, &ce) {
		return false
	}
	c := ce.Code() & 0xff
	return c == 5 || c == 6
}

// Version returns a database's schema version.
func Version(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("sqldb: version: %w", err)
	}
	return v, nil
}

// migrate applies the missing migrations, one transaction each. The version
// is read inside each transaction, which holds the write lock: two
// processes opening the same file at once apply each migration once.
func migrate(ctx context.Context, db *sql.DB, ms []Migration) error {
	for {
		done, err := step(ctx, db, ms)
		if err != nil || done {
			return err
		}
	}
}

// step applies one migration (or adopts an unversioned database) and
// reports whether the schema is current.
func step(ctx context.Context, db *sql.DB, ms []Migration) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("migrate: version: %w", err)
	}
	switch {
	case v > len(ms):
		return false, fmt.Errorf("%w: schema version %d, this program knows up to %d: run a newer program (or restore a backup made for this version)", ErrTooNew, v, len(ms))
	case v == len(ms):
		return true, nil
	case v < 0:
		return false, fmt.Errorf("migrate: invalid schema version %d", v)
	}
	next := v + 1
	adopted := false
	if v == 0 {
		if adopted, err = adopt(ctx, tx, ms[0].SQL); err != nil {
			return false, err
		}
	}
	if !adopted {
		m := ms[v]
		if m.SQL != "" {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return false, fmt.Errorf("migration %d: %w", next, err)
			}
		}
		if m.Func != nil {
			if err := m.Func(ctx, tx); err != nil {
				return false, fmt.Errorf("migration %d: %w", next, err)
			}
		}
	}
	// PRAGMA takes no parameters; next is an int.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", next)); err != nil {
		return false, fmt.Errorf("migration %d: set version: %w", next, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migration %d: commit: %w", next, err)
	}
	return next == len(ms), nil
}

// schemaShape is what an adoption compares: tables with their columns, and
// index names.
type schemaShape struct {
	tables  map[string][]string
	indexes []string
}

// adopt reports whether an unversioned database already holds migration 1:
// false for an empty database (migration 1 is to run), true when every
// table, column and index migration 1 creates is there, an error otherwise.
func adopt(ctx context.Context, tx *sql.Tx, first string) (bool, error) {
	have, err := shapeOf(ctx, tx)
	if err != nil {
		return false, err
	}
	if len(have.tables) == 0 {
		return false, nil
	}
	want, err := expectedShape(ctx, first)
	if err != nil {
		return false, err
	}
	var missing []string
	for t, cols := range want.tables {
		got, ok := have.tables[t]
		if !ok {
			missing = append(missing, "table "+t)
			continue
		}
		for _, c := range cols {
			if !slices.Contains(got, c) {
				missing = append(missing, "column "+t+"."+c)
			}
		}
	}
	for _, ix := range want.indexes {
		if !slices.Contains(have.indexes, ix) {
			missing = append(missing, "index "+ix)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return false, fmt.Errorf("an unversioned database that does not hold this program's first schema (missing %s): not adopted", strings.Join(missing, ", "))
	}
	return true, nil
}

// expectedShape runs migration 1 on an empty in-memory database.
func expectedShape(ctx context.Context, first string) (*schemaShape, error) {
	mem, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	defer mem.Close()
	mem.SetMaxOpenConns(1)
	tx, err := mem.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, first); err != nil {
		return nil, fmt.Errorf("adopt: migration 1: %w", err)
	}
	return shapeOf(ctx, tx)
}

// shapeOf reads the tables (with their columns) and the named indexes of a
// database, leaving out SQLite's own.
func shapeOf(ctx context.Context, tx *sql.Tx) (*schemaShape, error) {
	s := &schemaShape{tables: map[string][]string{}}
	rows, err := tx.QueryContext(ctx, `SELECT type, name FROM sqlite_schema
		WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	var tables []string
	for rows.Next() {
		var typ, name string
		if err := rows.Scan(&typ, &name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("schema: %w", err)
		}
		if typ == "table" {
			tables = append(tables, name)
		} else {
			s.indexes = append(s.indexes, name)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	for _, t := range tables {
		rows, err := tx.QueryContext(ctx, "SELECT name FROM pragma_table_info(?)", t)
		if err != nil {
			return nil, fmt.Errorf("schema: %s: %w", t, err)
		}
		var cols []string
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return nil, fmt.Errorf("schema: %s: %w", t, err)
			}
			cols = append(cols, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("schema: %s: %w", t, err)
		}
		s.tables[t] = cols
	}
	return s, nil
}
