package index

import (
	"context"
	"database/sql"
	"errors"
)

// stmtSpec names a statement of a set and where the set keeps it.
type stmtSpec struct {
	dst **sql.Stmt
	q   string
}

// stmtCache holds the statements of the index's busiest transactions
// (storing a document, a status, a document's codes; reading a document),
// prepared once on each connection of a pool rather than once per
// transaction: with a transaction per event applied (a document and a few
// statuses), preparing them was 5% of the hub's CPU (SQLite compiling the
// same SQL again). The set is fixed at Open (m is read-only afterwards), as
// a statement cannot be prepared on the writer's one connection while a
// transaction holds it.
//
// A statement from the cache must not be run again while rows of it are
// open (SQLite resets it): the sets here run each statement to its end
// before the next use.
type stmtCache struct {
	m map[string]*sql.Stmt
}

// prepareCache prepares the statements of specs on db.
func prepareCache(ctx context.Context, db *sql.DB, specs ...[]stmtSpec) (*stmtCache, error) {
	c := &stmtCache{m: make(map[string]*sql.Stmt)}
	for _, set := range specs {
		for _, s := range set {
			if c.m[s.q] != nil {
				continue
			}
			st, err := db.PrepareContext(ctx, s.q)
			if err != nil {
				return nil, errors.Join(err, c.close())
			}
			c.m[s.q] = st
		}
	}
	return c, nil
}

// prepare sets each spec's statement for tx: the cached one, bound to tx,
// or (a statement not in the cache, or no cache) one prepared in tx. The
// caller closes them (or the end of tx does).
func (c *stmtCache) prepare(ctx context.Context, tx *sql.Tx, specs []stmtSpec) error {
	for _, s := range specs {
		st, err := c.stmt(ctx, tx, s.q)
		if err != nil {
			return err
		}
		*s.dst = st
	}
	return nil
}

func (c *stmtCache) stmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	if c != nil {
		if st := c.m[q]; st != nil {
			return tx.StmtContext(ctx, st), nil
		}
	}
	return tx.PrepareContext(ctx, q)
}

func (c *stmtCache) close() error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, st := range c.m {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}
