package index

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// TestMigrateSearch: an index made before the search table was rebuilt for
// national scale (its migration) gets the same search table, search_text
// and answers as one made by PutDocuments and AddStatuses since.
func TestMigrateSearch(t *testing.T) {
	ctx := t.Context()
	version := slices.IndexFunc(migrations, func(m migration) bool { return strings.Contains(m.sql, "CREATE TABLE search_text") }) + 1
	if version == 0 {
		t.Fatal("no migration creates search_text")
	}
	dir := t.TempDir()
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	fresh, old := filepath.Join(dir, "fresh.db"), filepath.Join(dir, "old.db")
	ix, err := Open(ctx, Config{Path: fresh}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ix.now = func() time.Time { return now }
	load(t, ix, newGen(3, 3000), 0, 3000, 700, true)
	// A re-put moves a document and drops a recipient; a status changes
	// another's tags.
	var ids []document.ID
	for _, s := range dumpRows(t, ix, "SELECT id FROM documents ORDER BY seq LIMIT 10") {
		ids = append(ids, document.ID(strings.Trim(s, "[]")))
	}
	d, err := ix.Get(ctx, ids[3])
	if err != nil {
		t.Fatal(err)
	}
	d.AcceptedAt = d.AcceptedAt.Add(time.Second)
	d.Doc.To = d.Doc.To[:1]
	d.RawMeta = nil
	if err := ix.PutDocuments(ctx, []Record{d.Record}); err != nil {
		t.Fatal(err)
	}
	if d, err = ix.Get(ctx, ids[5]); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.AddStatus(ctx, document.Status{DocumentID: ids[5], Unit: d.Recipients[0].Unit, Code: "02", Description: "sai thẩm quyền", Time: now}); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	raw, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	// old.db as the schema before: the search table of migration 1, empty
	// (the migration drops it), and no search_text.
	db, err := openDB(old, "immediate", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"DROP TABLE search",
		"DROP TABLE search_text",
		"DROP TABLE accepted_days",
		`CREATE VIRTUAL TABLE search USING fts5(subject, number, notation, signer, from_name, files, tags,
			content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 0 tokenchars ''_''')`,
		fmt.Sprintf("DELETE FROM schema_version WHERE version >= %d", version),
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(q, err)
		}
	}
	db.Close()

	a, err := Open(ctx, Config{Path: fresh}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, Config{Path: old}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, ix := range []*Index{a, b} {
		if _, err := ix.w.ExecContext(ctx, "CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, search, row)"); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"SELECT seq, text FROM search_text ORDER BY seq",
		"SELECT day, docs FROM accepted_days WHERE docs > 0 ORDER BY day",
		"SELECT term, doc, cnt FROM temp.v ORDER BY term",
		"SELECT rowid FROM search ORDER BY rowid",
		"SELECT count(*) FROM schema_version",
	} {
		ra, rb := dumpRows(t, a, q), dumpRows(t, b, q)
		if len(ra) == 0 {
			t.Errorf("%s: no rows", q)
		}
		if !slices.Equal(ra, rb) {
			t.Errorf("%s: %d rows fresh, %d migrated, or they differ", q, len(ra), len(rb))
		}
	}
	g := newGen(3, 3000)
	r := newGen(4, 3000).rng
	for i := range 40 {
		q := benchQuery(r, g)
		switch i % 5 {
		case 1:
			q.Sort = SortRelevance
		case 2:
			q = Query{Signer: pick(r, vGiven), Text: q.Text}
		case 3:
			q = Query{Unit: q.Unit, Status: "02"}
		case 4:
			q = Query{Text: q.Text, Limit: 3}
		}
		pa, err := a.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := b.Search(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(pa, pb) {
			t.Errorf("Search(%+v): fresh %d items of %d, migrated %d of %d", q, len(pa.Items), pa.Total, len(pb.Items), pb.Total)
		}
	}
}

func dumpRows(t *testing.T, ix *Index, q string) []string {
	t.Helper()
	rows, err := ix.w.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatal(q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%v", vals))
	}
	return out
}
