package index

import (
	"database/sql"
	"testing"
)

// TestStmtCache: a cached statement serves one transaction after another
// on the writer's one connection (closing it in a transaction leaves it
// cached), and a statement outside the cache is prepared in the
// transaction.
func TestStmtCache(t *testing.T) {
	ix, _ := openTest(t)
	ctx := t.Context()
	var p statusStmts
	q := p.specs()[0].q
	if ix.wstmts.m[q] == nil || ix.rstmts.m[(&detailStmts{}).specs()[0].q] == nil {
		t.Fatal("the busiest statements are not prepared at Open")
	}
	for i := range 3 {
		err := ix.write(ctx, "test", func(tx *sql.Tx) error {
			st, err := ix.wstmts.stmt(ctx, tx, q)
			if err != nil {
				return err
			}
			defer st.Close()
			var seq int64
			var from string
			if err := st.QueryRowContext(ctx, "no such document").Scan(&seq, &from); err != sql.ErrNoRows {
				t.Errorf("round %d: %v, want sql.ErrNoRows", i, err)
			}
			other, err := ix.wstmts.stmt(ctx, tx, "SELECT count(*) FROM documents")
			if err != nil {
				return err
			}
			defer other.Close()
			var n int
			return other.QueryRowContext(ctx).Scan(&n)
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	var none *stmtCache
	err := ix.write(ctx, "test", func(tx *sql.Tx) error {
		st, err := none.stmt(ctx, tx, q)
		if err != nil {
			return err
		}
		defer st.Close()
		var seq int64
		var from string
		if err := st.QueryRowContext(ctx, "x").Scan(&seq, &from); err != sql.ErrNoRows {
			t.Errorf("without a cache: %v, want sql.ErrNoRows", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
