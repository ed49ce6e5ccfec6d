package index

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestDbg(t *testing.T) {
	path := os.Getenv("DBG_DB")
	if path == "" {
		t.Skip()
	}
	ix, err := Open(t.Context(), Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if _, err := ix.w.Exec("CREATE VIRTUAL TABLE IF NOT EXISTS search_vocab USING fts5vocab(search, 'row')"); err != nil {
		t.Fatal(err)
	}
	u := tagUnit(newGen(1, 1).units[3])
	for _, p := range []string{"ho", "ke", "so", "dat", "quyet", "d", "t", "ng", "nguy"} {
		start := time.Now()
		rows, err := ix.r.Query("SELECT term, doc FROM search_vocab WHERE term >= ? AND term < ? LIMIT 100", p, p+"\xff")
		if err != nil {
			t.Fatal(err)
		}
		var ts []string
		for rows.Next() {
			var s string
			var n int
			rows.Scan(&s, &n)
			ts = append(ts, s)
		}
		rows.Close()
		el := time.Since(start)
		or := make([]string, len(ts))
		for i, s := range ts {
			or[i] = `"` + s + `"`
		}
		for _, q := range []string{
			`SELECT count(*) FROM search WHERE search MATCH '"` + p + `"* AND tags : "` + u + `"'`,
			`SELECT count(*) FROM search WHERE search MATCH '(` + strings.Join(or, " OR ") + `) AND tags : "` + u + `"'`,
		} {
			start := time.Now()
			var n int
			if err := ix.r.QueryRow(q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: vocab %v (%d terms) %8v %6d %.80s", p, el, len(ts), time.Since(start).Round(time.Microsecond), n, q)
		}
	}
}
