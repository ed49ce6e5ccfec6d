package index

import (
	"os"
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
	u := tagUnit(newGen(1, 1).units[0])
	qs := []string{
		`SELECT count(*) FROM search WHERE search MATCH 'tags : "` + u + `"'`,
		`SELECT count(*) FROM search WHERE search MATCH '"` + u + `"'`,
		`SELECT count(*) FROM search WHERE search MATCH '{subject number notation signer from_name files} : ("dat" AND "dai") AND tags : "` + u + `"'`,
		`SELECT count(*) FROM search WHERE search MATCH '"dat" AND "dai" AND "` + u + `"'`,
		`SELECT count(*) FROM search WHERE search MATCH '"ke" AND ("hoach") AND "` + u + `"'`,
		`SELECT count(*) FROM search WHERE search MATCH '{subject number notation signer from_name files} : ("ke" AND ("hoach")) AND tags : "` + u + `"'`,
		`SELECT count(*) FROM documents`,
		`SELECT count(*) FROM documents WHERE accepted_at >= 0 AND accepted_at < 1000000000000000000`,
		`SELECT count(*) FROM search WHERE search MATCH '"kkd"'`,
	}
	for _, q := range qs {
		for range 2 {
			start := time.Now()
			var n int
			if err := ix.r.QueryRow(q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			t.Logf("%8v %6d %s", time.Since(start).Round(time.Microsecond), n, q)
		}
	}
}
