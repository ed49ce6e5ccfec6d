package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const v1 = `
CREATE TABLE notes (
	id   INTEGER PRIMARY KEY AUTOINCREMENT,
	body TEXT NOT NULL
);
CREATE INDEX notes_body ON notes(body);
`

var two = []Migration{
	{SQL: v1},
	{SQL: `ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT ''`},
}

func open(t *testing.T, path string, o Options) *sql.DB {
	t.Helper()
	db, err := Open(t.Context(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func version(t *testing.T, db *sql.DB) int {
	t.Helper()
	v, err := Version(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// rawOpen opens a file with no migrations at all, as the stores did before
// versioning.
func rawOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func TestFreshDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	db := open(t, path, Options{Migrations: two})
	if v := version(t, db); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	if _, err := db.Exec(`INSERT INTO notes(body, author) VALUES('x', 'y')`); err != nil {
		t.Fatal(err)
	}
	var mode, sync, fk string
	db.QueryRow("PRAGMA journal_mode").Scan(&mode)
	db.QueryRow("PRAGMA synchronous").Scan(&sync)
	db.QueryRow("PRAGMA foreign_keys").Scan(&fk)
	if mode != "wal" || sync != "2" || fk != "0" { // 2: FULL
		t.Fatalf("journal_mode %s, synchronous %s, foreign_keys %s", mode, sync, fk)
	}
	db.Close()
	// Opening again changes nothing; foreign keys as asked.
	db = open(t, path, Options{Migrations: two, ForeignKeys: true})
	var n int
	if err := db.QueryRow("SELECT count(*) FROM notes").Scan(&n); err != nil || n != 1 || version(t, db) != 2 {
		t.Fatalf("reopened: %d rows, %v", n, err)
	}
	db.QueryRow("PRAGMA foreign_keys").Scan(&fk)
	if fk != "1" {
		t.Fatalf("foreign_keys %s", fk)
	}
}

func TestUpgradeAppliesOnlyWhatIsMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	db := open(t, path, Options{Migrations: two[:1]})
	db.Exec(`INSERT INTO notes(body) VALUES('kept')`)
	db.Close()
	db = open(t, path, Options{Migrations: two})
	var body, author string
	if err := db.QueryRow("SELECT body, author FROM notes").Scan(&body, &author); err != nil || body != "kept" {
		t.Fatalf("%q %q %v", body, author, err)
	}
	if v := version(t, db); v != 2 {
		t.Fatalf("version %d", v)
	}
}

func TestAdoptUnversioned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	old := rawOpen(t, path)
	if _, err := old.Exec(v1); err != nil {
		t.Fatal(err)
	}
	old.Exec(`INSERT INTO notes(body) VALUES('from before versioning')`)
	old.Close()
	// Migration 1 is not run again (it would fail: CREATE TABLE without
	// IF NOT EXISTS); migration 2 is.
	db := open(t, path, Options{Migrations: two})
	if v := version(t, db); v != 2 {
		t.Fatalf("version %d", v)
	}
	var body, author string
	if err := db.QueryRow("SELECT body, author FROM notes").Scan(&body, &author); err != nil || body != "from before versioning" {
		t.Fatalf("%q %q %v", body, author, err)
	}
}

func TestRefuseUnversionedStranger(t *testing.T) {
	for name, old := range map[string]string{
		"other tables":   `CREATE TABLE users (id INTEGER PRIMARY KEY)`,
		"missing column": `CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT); CREATE INDEX notes_body ON notes(id)`,
		"missing index":  `CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			raw := rawOpen(t, path)
			if _, err := raw.Exec(old); err != nil {
				t.Fatal(err)
			}
			raw.Close()
			_, err := Open(t.Context(), path, Options{Migrations: two})
			if err == nil || !strings.Contains(err.Error(), "not adopted") {
				t.Fatalf("err %v", err)
			}
			raw = rawOpen(t, path)
			defer raw.Close()
			var v int
			raw.QueryRow("PRAGMA user_version").Scan(&v)
			if v != 0 {
				t.Fatalf("version %d after a refusal", v)
			}
		})
	}
}

func TestRefuseNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "future.db")
	db := open(t, path, Options{Migrations: two})
	db.Exec(`INSERT INTO notes(body) VALUES('x')`)
	db.Close()
	_, err := Open(t.Context(), path, Options{Migrations: two[:1]})
	if !errors.Is(err, ErrTooNew) || !strings.Contains(err.Error(), "schema version 2, this program knows up to 1") {
		t.Fatalf("err %v", err)
	}
	// Untouched: the newer program still opens it.
	db = open(t, path, Options{Migrations: two})
	if v := version(t, db); v != 2 {
		t.Fatalf("version %d", v)
	}
}

func TestFailingMigrationRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	db := open(t, path, Options{Migrations: two})
	db.Exec(`INSERT INTO notes(body) VALUES('x')`)
	db.Close()
	bad := append(two[:2:2],
		Migration{SQL: `CREATE TABLE tags (name TEXT); ALTER TABLE notes ADD COLUMN x TEXT`},
		Migration{SQL: `ALTER TABLE notes ADD COLUMN y TEXT`, Func: func(ctx context.Context, tx *sql.Tx) error {
			return errors.New("data does not fit")
		}},
	)
	_, err := Open(t.Context(), path, Options{Migrations: bad})
	if err == nil || !strings.Contains(err.Error(), "migration 4: data does not fit") {
		t.Fatalf("err %v", err)
	}
	// Migration 3 committed; migration 4 left nothing behind, its version
	// included.
	db = open(t, path, Options{Migrations: bad[:3]})
	if v := version(t, db); v != 3 {
		t.Fatalf("version %d, want 3", v)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM pragma_table_info('notes') WHERE name = 'y'`).Scan(&n)
	if n != 0 {
		t.Fatal("the failed migration's column is there")
	}
	// A failing SQL statement rolls back the statements before it.
	broken := append(bad[:3:3], Migration{SQL: `CREATE TABLE more (a TEXT); INSERT INTO nowhere VALUES(1)`})
	if _, err := Open(t.Context(), path, Options{Migrations: broken}); err == nil {
		t.Fatal("a broken migration was applied")
	}
	db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'more'`).Scan(&n)
	if n != 0 || version(t, db) != 3 {
		t.Fatalf("table more: %d, version %d", n, version(t, db))
	}
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	var runs int
	var mu sync.Mutex
	ms := []Migration{{SQL: v1}, {Func: func(ctx context.Context, tx *sql.Tx) error {
		mu.Lock()
		runs++
		mu.Unlock()
		_, err := tx.ExecContext(ctx, `INSERT INTO notes(body) VALUES('once')`)
		return err
	}}}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			db, err := Open(t.Context(), path, Options{Migrations: ms})
			if err == nil {
				db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	db := open(t, path, Options{Migrations: ms})
	var n int
	db.QueryRow(`SELECT count(*) FROM notes`).Scan(&n)
	if runs != 1 || n != 1 {
		t.Fatalf("migration 2 ran %d times, %d rows", runs, n)
	}
}

func TestOptionsChecked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	if _, err := Open(t.Context(), path, Options{}); err == nil {
		t.Fatal("no migrations accepted")
	}
	if _, err := Open(t.Context(), path, Options{Migrations: []Migration{{Func: func(context.Context, *sql.Tx) error { return nil }}}}); err == nil {
		t.Fatal("a Func as migration 1 accepted")
	}
}
